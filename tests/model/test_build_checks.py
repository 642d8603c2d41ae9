"""The build's checks (docs/model-spec.md, "Checks at build time"): each failure is one line naming
what is wrong, exit status 2, and no store written."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.bundle import MODEL_DIR, BuildError, build_bundle
from tests.support.spec_projects import TYPED_FIXTURE, typed_layers, typed_spec, write_project
from tests.support.tfjs_models import dense_model

Spec = dict[str, Any]


def _set(path: str, value: Any) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(last) if isinstance(node, list) else last] = value

    return change


def _del(path: str) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        del node[int(last) if isinstance(node, list) else last]

    return change


SPEC_CASES: list[tuple[str, Callable[[Spec], None], str]] = [
    (
        "unknown type",
        _set("inputs.3.type", "integer"),
        r"spec\.json: input 'year': unknown type \"integer\" \(known: float, int, bool",
    ),
    (
        "unknown step",
        _set("features.3.steps", [{"normalize": {}}]),
        r"features\[3\] \(year\) step 1: unknown step 'normalize'",
    ),
    (
        "step on the wrong type",
        _set("features.0.steps", [{"standardize": {"mean": 0, "std": 1}}]),
        r"features\[0\] \(island\) step 1 \(standardize\) works on numbers, but the value here "
        r"is a string \(a string needs vocabulary first\)",
    ),
    (
        "missing fitted parameter",
        _set("features.1.steps.1", {"standardize": {"mean": 43.9}}),
        r"features\[1\] \(bill_length_mm\) step 2 \(standardize\): missing fitted parameter 'std'",
    ),
    (
        "impute strategy not fitted",
        _set("features.1.steps.0", {"impute": {"strategy": "mean"}}),
        r"step 1 \(impute\): missing fitted parameter 'value' \(strategy 'mean'\)",
    ),
    (
        "string without vocabulary",
        _set("features.0.steps", []),
        r"features\[0\] \(island\): a string input must reach a number through vocabulary",
    ),
    (
        "timestamp without datepart",
        _set("features.4.steps", [{"impute": {"value": 0}}]),
        r"features\[4\] \(observed\.month\): a timestamp input must reach a number through "
        "datepart",
    ),
    ("duplicate input", _set("inputs.1.name", "island"), r"duplicate input name 'island'"),
    (
        "duplicate column",
        _set("features.5.name", "observed.month"),
        r"features\[5\]: column 'observed\.month' is also made by features\[4\]",
    ),
    ("extra clashes", _set("extras", [{"name": "label", "type": "string"}]), "'label' is a field"),
    ("std 0", _set("features.1.steps.1.standardize.std", 0), r"std must be > 0, not 0"),
    (
        "onehot size",
        _set("features.0.steps.1", {"onehot": {"size": 3}}),
        r"size 3 does not match the 4 indices",
    ),
    (
        "derived without hooks",
        lambda s: s["inputs"].append({"name": "d", "type": "float", "derived": True}),
        r"input 'd' is derived, but the spec names no hooks file",
    ),
    (
        "expected width",
        _set("selfTest.expected.0", [0.5, 0.5]),
        r"selfTest\.expected\[0\] has 2 values, the output has 3 \(Adelie, Chinstrap, Gentoo\)",
    ),
]


@pytest.mark.parametrize(
    "change, message", [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES]
)
def test_spec_problems_are_refused(
    tmp_path: Path, change: Callable[[Spec], None], message: str
) -> None:
    spec = typed_spec()
    change(spec)
    _refused(tmp_path, spec, message)


def _refused(
    tmp_path: Path,
    spec: Spec,
    message: str,
    layers: Any = None,
    hooks: str | None = None,
) -> str:
    project = write_project(tmp_path / "p", spec, typed_layers() if layers is None else layers)
    if hooks is not None:
        (project / "hooks.js").write_text(hooks)
    with pytest.raises(BuildError, match=message) as info:
        build_bundle(project, tmp_path / "store")
    text = str(info.value)
    assert re.search(r"\(2\): build: ", text) and "\n" not in text, text
    assert not (tmp_path / "store").exists()
    return text


def test_feature_width_against_the_model(tmp_path: Path) -> None:
    layers = typed_layers()
    k, b, act = layers[0]
    short = [(np.asarray(k)[:17], b, act), layers[1]]
    _refused(
        tmp_path,
        typed_spec(),
        r"the features make 18 columns \(island: 4, bill_length_mm: 1, sex: 3, year: 1, "
        r"observed\.month: 1, observed\.weekday: 1, observed\.days: 1, tagged: 1, "
        r"bill_bucket: 4, body_mass_g: 1\), but the model takes 17",
        layers=short,
    )


OUTPUT_CASES = [
    (
        {"kind": "multiclass", "labels": ["a", "b"]},
        r"the model's output has 3 columns, but output multiclass has 2 labels \(a, b\)",
    ),
    (
        {"kind": "binary", "labels": ["no", "yes"]},
        r"the model's output has 3 columns, but output binary takes one",
    ),
    (
        {"kind": "regression", "names": ["y"]},
        r"the model's output has 3 columns, but output regression names 1 \(y\)",
    ),
    (
        {"kind": "multi", "heads": [{"name": "a", "kind": "regression"}] * 2},
        r"output\.heads\[1\]: duplicate head name 'a'",
    ),
    (
        {
            "kind": "multi",
            "heads": [{"name": "a", "kind": "regression"}, {"name": "b", "kind": "regression"}],
        },
        r"the model has 1 output\(s\), output multi declares 2 heads \(a, b\)",
    ),
]


@pytest.mark.parametrize("output, message", OUTPUT_CASES)
def test_output_kind_against_the_model(tmp_path: Path, output: Spec, message: str) -> None:
    spec = typed_spec()
    spec["output"] = output
    width = {"multiclass": 2, "binary": 1, "regression": 1, "multi": 2}[output["kind"]]
    spec["selfTest"]["expected"] = [[0.0] * width for _ in spec["selfTest"]["records"]]
    _refused(tmp_path, spec, message)


def test_a_record_missing_an_input_is_named(tmp_path: Path) -> None:
    spec = typed_spec()
    del spec["samples"]["records"][4]["observed"]
    _refused(tmp_path, spec, r"samples\.records\[4\] has no field 'observed'")
    spec = typed_spec()
    del spec["selfTest"]["records"][1]["island"]
    _refused(tmp_path, spec, r"selfTest\.records\[1\] has no field 'island'")


def test_a_self_test_record_that_is_an_error_record(tmp_path: Path) -> None:
    spec = typed_spec()
    spec["selfTest"]["records"][2]["sex"] = "other"
    _refused(
        tmp_path,
        spec,
        r"selfTest\.records\[2\]: input 'sex' value 'other' is not in the vocabulary",
    )


def test_skew_names_feature_record_and_values(tmp_path: Path) -> None:
    spec = typed_spec()
    spec["samples"]["features"][3][11] += 0.001  # observed.days of record 3
    got = spec["samples"]["features"][3][11]
    text = _refused(
        tmp_path,
        spec,
        r"skew: feature 'observed\.days' of samples\.records\[3\]: the bundle computes "
        r"-1\.356167, training computed -1\.355167",
    )
    assert f"{got:.6f}" in text
    spec = typed_spec()
    spec["samples"]["names"][0] = "island=biscoe"
    _refused(
        tmp_path,
        spec,
        r"skew: samples\.names differ from the spec's features at column 0: training "
        r"'island=biscoe', the bundle 'island=Biscoe'",
    )


def test_skew_within_the_tolerance_passes(tmp_path: Path) -> None:
    spec = typed_spec()
    for row in spec["samples"]["features"]:
        row[11] *= 1 + 5e-6  # |a - b| <= 1e-5 * max(1, |b|)
    project = write_project(tmp_path / "p", spec, typed_layers())
    build_bundle(project, tmp_path / "store")


def test_self_test_mismatch_names_the_path(tmp_path: Path) -> None:
    spec = typed_spec()
    spec["selfTest"]["expected"][1][2] += 0.01
    _refused(
        tmp_path,
        spec,
        r"self-test: the JSON path \(TF\.js\) gives 0\.\d+ for selfTest\.records\[1\] output "
        r"'Gentoo', Keras gave 0\.\d+ \(\|delta\| 0\.01\d* > tolerance 0\.00001\)",
    )


def test_self_test_of_the_fast_path_is_checked_too(tmp_path: Path) -> None:
    # A kernel that computes something else than TF.js: the columns path is compared on its own.
    spec = typed_spec()
    project = write_project(tmp_path / "p", spec, typed_layers())
    app = (MODEL_DIR / "src" / "app.js").read_text()
    patched = tmp_path / "model"
    shutil.copytree(MODEL_DIR / "src", patched / "src")
    off_by_half = (
        "if (unrolled) return (x, y, n) => { unrolled(x, y, n); "
        "for (let i = 0; i < n * nOut; i++) y[i] += 0.5; };"
    )
    (patched / "src" / "app.js").write_text(
        app.replace("if (unrolled) return unrolled;", off_by_half)
    )
    assert (patched / "src" / "app.js").read_text() != app
    shutil.copy(MODEL_DIR / "build.mjs", patched / "build.mjs")
    (patched / "package.json").write_text((MODEL_DIR / "package.json").read_text())
    (patched / "node_modules").symlink_to(MODEL_DIR / "node_modules")
    proc = subprocess.run(
        ["node", str(patched / "build.mjs"), str(project), str(tmp_path / "store")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert re.fullmatch(
        r"build: self-test: the columns path \(dense-unrolled\) gives \S+ for selfTest\.records"
        r"\[0\] output 'Adelie', Keras gave \S+ \(\|delta\| 0\.5\d* > tolerance 0\.00001\)\n",
        proc.stderr,
    ), proc.stderr
    assert not (tmp_path / "store").exists()


def test_a_working_build_prints_its_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["node", str(MODEL_DIR / "build.mjs"), str(TYPED_FIXTURE), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert lines[1] == "kernel: dense-unrolled"
    assert lines[2].startswith("features: 18 (island: 4, bill_length_mm, sex: 3, year, ")
    assert re.fullmatch(r"self-test max \|delta\|: json \S+, columns \S+", lines[3])
    assert lines[4] == "skew max |delta|: 0 over 6 sample records"


def test_spec_json_is_preferred_and_legacy_fields_stay(tmp_path: Path) -> None:
    spec = copy.deepcopy(typed_spec())
    project = write_project(tmp_path / "p", spec, typed_layers())
    (project / "app.json").write_text(json.dumps({"name": "ignored"}))
    manifest = build_bundle(project, tmp_path / "store", version="7", kernel="dense-js")
    assert manifest["model"] == "typed" and manifest["version"] == "7"


def test_an_unknown_pinned_kernel_builds_with_a_warning(tmp_path: Path) -> None:
    # docs/bundle-contract.md: a pinned kernel that does not apply is refused when the bundle is
    # loaded; the build checks everything else and says so.
    project = write_project(tmp_path / "p", typed_spec(), typed_layers())
    proc = subprocess.run(
        [
            "node",
            str(MODEL_DIR / "build.mjs"),
            str(project),
            str(tmp_path / "s"),
            "--kernel",
            "gpu",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert 'warning: the bundle will be refused when loaded: unknown kernel "gpu"' in proc.stdout


def test_model_json_without_weights_is_refused(tmp_path: Path) -> None:
    project = dense_model(tmp_path / "p", typed_layers())
    (project / "spec.json").write_text(json.dumps(typed_spec()))
    (project / "model.json").write_text(json.dumps({"format": "graph-model"}))
    with pytest.raises(BuildError, match=r"is not a TF\.js graph model \(needs modelTopology"):
        build_bundle(project, tmp_path / "store")
