"""The spec's JavaScript hooks (docs/model-spec.md, "Hooks"): a derived input and a replaced raw
one from `prepare`, rows it fails, extras from `finish`, on both paths; and every way a hook can
be wrong, refused at build time with the hook and the column named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.bundle import BuildError, build_bundle
from tests.support.js_bundle import JsBundle
from tests.support.spec_projects import (
    SAMPLE_RECORDS,
    SELF_TEST_RECORDS,
    BuildSpec,
    built_bundle,
    typed_features,
    typed_layers,
    typed_spec,
    write_project,
)
from tests.support.tfjs_models import numpy_forward

HOOKS = """
export function prepare(batch) {
  const mass = batch.get('body_mass_g');
  const island = batch.get('island');
  const kg = new Float64Array(batch.n);
  for (let i = 0; i < batch.n; i++) {
    kg[i] = mass[i] / 1000; // NaN (null) stays null
    if (island[i] === 'Nowhere') batch.fail(i, 'no such island');
  }
  return { mass_kg: kg, island: island.map((s) => (s === null ? null : s.trim())) };
}

export function finish(batch, result) {
  const band = new Array(batch.n);
  const top = new Float64Array(batch.n);
  for (let i = 0; i < batch.n; i++) {
    top[i] = Math.max(...result.scores.subarray(i * result.width, (i + 1) * result.width));
    band[i] = top[i] > 0.9 ? 'high' : 'low';
  }
  return { band, top };
}
"""


def _hooked_features(records: list[dict[str, Any]]) -> np.ndarray:
    trimmed = [{**r, "island": r["island"].strip()} for r in records]
    x = typed_features(trimmed)
    for i, r in enumerate(records):
        kg = 4.05 if r["body_mass_g"] is None else r["body_mass_g"] / 1000
        x[i, -1] = np.float32((min(max(kg, 2.0), 7.0) - 4) / 1)
    return x


def hooked_spec(records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec = typed_spec()
    spec["inputs"].append({"name": "mass_kg", "type": "float", "derived": True, "nullable": True})
    spec["features"][-1] = {
        "input": "mass_kg",
        "steps": [
            {"impute": {"value": 4.05}},
            {"clip": {"min": 2, "max": 7}},
            {"standardize": {"mean": 4, "std": 1}},
        ],
    }
    spec["samples"]["names"][-1] = "mass_kg"
    spec["extras"] = [{"name": "band", "type": "string"}, {"name": "top", "type": "float"}]
    spec["hooks"] = "hooks.js"
    records = records or [
        {**r, "island": f"  {r['island']} "} if i % 2 else r
        for i, r in enumerate(SELF_TEST_RECORDS)
    ]
    spec["selfTest"]["records"] = records
    expected = numpy_forward(typed_layers(), _hooked_features(records))
    spec["selfTest"]["expected"] = expected.astype(np.float64).tolist()
    spec["samples"]["features"] = _hooked_features(SAMPLE_RECORDS).astype(np.float64).tolist()
    return spec


@pytest.fixture(scope="module")
def hooked_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("hooked")
    project = write_project(root / "p", hooked_spec(), typed_layers(), hooks=HOOKS)
    return built_bundle(project, root / "store")


def test_meta_declares_derived_inputs_and_extras(hooked_bundle: bytes) -> None:
    with JsBundle(hooked_bundle) as b:
        schema = b.meta["schema"]
        assert "mass_kg" not in b.meta["inputs"] and schema["derived"] == ["mass_kg"]
        assert schema["extras"] == [
            {"name": "band", "type": "string"},
            {"name": "top", "type": "float"},
        ]


def test_hooks_on_the_columns_path(hooked_bundle: bytes) -> None:
    records = [dict(r) for r in SAMPLE_RECORDS]
    records[1]["island"] = " Torgersen"
    records[4]["island"] = "Nowhere"
    with JsBundle(hooked_bundle) as b:
        scores, errors = b.run_records(records)
        extras = b.float_extras(len(records))
        strings = b.call("ml.extraStrings()")
    assert errors == {4: "prepare: no such island"}
    good = [0, 1, 2, 3, 5]
    want = numpy_forward(typed_layers(), _hooked_features([records[i] for i in good]))
    assert np.abs(scores[good] - want).max() <= 1e-6
    top = scores.max(axis=1)
    np.testing.assert_array_equal(extras["top"][good], top[good].astype(np.float64))
    bands = ["high" if t > 0.9 else "low" for t in top.tolist()]
    assert [strings["band"][i] for i in good] == [bands[i] for i in good]


def test_hooks_on_the_json_path(hooked_bundle: bytes) -> None:
    records = [dict(r) for r in SAMPLE_RECORDS[:3]]
    records[2]["island"] = "Nowhere"
    with JsBundle(hooked_bundle) as b:
        results = b.call("ml.predict(a[0])", records)
        features = b.call("ml.features(a[0])", records)
    assert results[2] == {"scores": [0, 0, 0], "error": "prepare: no such island"}
    for r in results[:2]:
        assert r["top"] == max(r["scores"]) and r["band"] == ("high" if r["top"] > 0.9 else "low")
    assert features["errors"] == [[2, "prepare: no such island"]]
    assert features["rows"][2] is None


def _broken(tmp_path: Path, hooks: str | None, message: str, spec: Any = None) -> None:
    project = write_project(tmp_path / "p", spec or hooked_spec(), typed_layers(), hooks=hooks)
    with pytest.raises(BuildError, match=message) as info:
        build_bundle(project, tmp_path / "store")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "store").exists()


FINISH = HOOKS[HOOKS.index("export function finish") :]
BROKEN = [
    (
        "throws",
        "export function prepare(batch) { throw new Error('boom'); }\n" + FINISH,
        r"ml\.features\(samples\.records\): hook prepare threw: boom",
    ),
    (
        "misses a derived input",
        "export function prepare(batch) { return {}; }\n" + FINISH,
        r"hook prepare did not return derived input 'mass_kg'",
    ),
    (
        "wrong length",
        "export function prepare(batch) { return { mass_kg: [1, 2, 3] }; }\n" + FINISH,
        r"hook prepare returned 'mass_kg' with 3 values for 6 rows",
    ),
    (
        "unknown column",
        "export function prepare(b) { return { mass_kg: new Float64Array(b.n), foo: [] }; }\n"
        + FINISH,
        r"hook prepare returned 'foo', which is not an input",
    ),
    (
        "returns nothing",
        "export function prepare(batch) {}\n" + FINISH,
        r"hook prepare returned undefined, expected \{name: column\} with the derived inputs "
        r"\(mass_kg\)",
    ),
    (
        "a timer",
        "export function prepare(b) { setTimeout(() => 0, 1); }\n" + FINISH,
        r"hook prepare threw: setTimeout is not defined",
    ),
    (
        "no finish",
        HOOKS[: HOOKS.index("export function finish")],
        r"hooks: the extras 'band', 'top' need a finish hook, and the hooks module "
        "exports none",
    ),
    (
        "finish misses an extra",
        HOOKS.replace("return { band, top };", "return { top };"),
        r"ml\.predict\(selfTest\.records\): hook finish did not return extra 'band'",
    ),
    (
        "finish wrong length",
        HOOKS.replace("return { band, top };", "return { band, top: [1] };"),
        r"hook finish returned extra 'top' with 1 values for 4 rows",
    ),
    (
        "bad batch.fail row",
        HOOKS.replace("batch.fail(i, 'no such island')", "batch.fail(-1, 'x')").replace(
            "if (island[i] === 'Nowhere')", "if (true)"
        ),
        r"hook prepare: batch\.fail\(-1, \.\.\.\): row must be an integer in 0\.\.5",
    ),
    (
        "get of an unknown input",
        HOOKS.replace("batch.get('island')", "batch.get('islands')"),
        r"hook prepare: batch\.get\(\"islands\"\): no such input",
    ),
    (
        "unresolved import",
        "import { x } from 'no-such-package';\n" + HOOKS,
        r"bundling failed: .*hooks\.js:1:\d+: Could not resolve \"no-such-package\"",
    ),
]


@pytest.mark.parametrize("hooks, message", [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_hooks_fail_the_build(tmp_path: Path, hooks: str, message: str) -> None:
    _broken(tmp_path, hooks, message)


def test_a_missing_hooks_file(tmp_path: Path) -> None:
    _broken(tmp_path, None, r"hooks module hooks\.js named in the spec not found: \S+hooks\.js")


def test_hooks_import_npm_packages_of_the_project(tmp_path: Path, build_spec: BuildSpec) -> None:
    project = write_project(tmp_path / "p", hooked_spec(), typed_layers())
    pkg = project / "node_modules" / "island-names"
    pkg.mkdir(parents=True)
    (pkg / "package.json").write_text(json.dumps({"name": "island-names", "main": "index.js"}))
    (pkg / "index.js").write_text("module.exports.clean = (s) => s === null ? null : s.trim();\n")
    hooks = "import { clean } from 'island-names';\n" + HOOKS.replace(
        "island.map((s) => (s === null ? null : s.trim()))", "island.map(clean)"
    )
    (project / "hooks.js").write_text(hooks)
    bundle = build_spec(project)
    assert b"island-names" not in bundle or b"clean" in bundle
    with JsBundle(bundle) as b:
        result = b.call("ml.predict(a[0])", [{**SAMPLE_RECORDS[0], "island": " Dream "}])
        assert "error" not in result[0]


def test_hooks_match_the_python_derive(hooked_bundle: bytes) -> None:
    spec_mod = pytest.importorskip("model.spec", reason="model/spec.py (the Python side) missing")
    from tests.model.test_features_js import messy_records

    def derive(cols: dict[str, Any]) -> dict[str, Any]:
        island = [None if s is None else s.strip() for s in cols["island"]]
        return {"mass_kg": cols["body_mass_g"] / 1000, "island": island}

    records = messy_records(300, seed=4)
    for i, r in enumerate(records[::3]):
        if isinstance(r["island"], str):
            r["island"] = f" {r['island']}  " if i % 2 else r["island"]
    py = spec_mod.Spec.from_dict(hooked_spec()).transform(records, derive=derive)
    with JsBundle(hooked_bundle) as b:
        js = b.call("ml.features(a[0])", records)
    errors = dict(js["errors"])
    assert set(errors) == set(py.errors)
    good = [r for r in range(len(records)) if r not in errors]
    got = np.asarray([js["rows"][r] for r in good], dtype=np.float32)
    np.testing.assert_array_equal(got, py.matrix[good])
