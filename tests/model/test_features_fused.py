"""The generated row loops of `model/src/features.js` where the typed fixture does not reach: a spec
wide enough that its loop is split in several, vocabularies large enough for the hash table, date
parts over the days the civil table holds and around them, and the finish hook's view of inputs the
fused loop kept in locals. Each against the Python side (`model.spec`) or Python's datetime, on the
JSON path and on the columns path."""

from __future__ import annotations

import calendar
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.spec import Spec
from tests.support.js_bundle import JsBundle
from tests.support.spec_projects import BuildSpec, built_bundle, write_project

PARTS = ["year", "month", "day", "weekday", "hour", "minute", "dayofyear", "epoch_days"]
SMALL = ["Biscoe", "Dream", "Torgersen", "Ísland", "☃"]
# 400 values, ~2.4 KB of UTF-8: past what features.js inlines as code, so a hash table.
LARGE = [f"w{i:04d}" for i in range(390)] + [
    "",
    "a",
    "ab",
    "日本",
    "naïve",
    "🐧",
    "x" * 40,
    "y y",
    "z\n",
    "Q",
]
DAY_MS = 86_400_000


def _wide_spec() -> dict[str, Any]:
    """~200 inputs of every type: the generated code is far past one loop's size limit."""
    inputs: list[dict[str, Any]] = []
    features: list[dict[str, Any]] = []

    def add(
        inp: dict[str, Any], *blocks: list[dict[str, Any]], names: list[str] | None = None
    ) -> None:
        inputs.append(inp)
        for k, steps in enumerate(blocks):
            block: dict[str, Any] = {"input": inp["name"], "steps": steps}
            if names:
                block["name"] = names[k]
            features.append(block)

    for i in range(80):
        kind = i % 4
        name = f"f{i}"
        if kind == 0:
            add(
                {"name": name, "type": "float", "nullable": True},
                [{"impute": {"value": 0.5 * i}}, {"standardize": {"mean": 1.0 + i, "std": 0.3}}],
            )
        elif kind == 1:
            add(
                {"name": name, "type": "float", "default": -2.25},
                [{"clip": {"min": -3, "max": 3}}, {"minmax": {"min": -3, "max": 3}}],
            )
        elif kind == 2:
            add(
                {"name": name, "type": "float", "nullable": True},
                [
                    {"impute": {"value": 1}},
                    {"log1p": {}},
                    {"standardize": {"mean": 0.7, "std": 1.3}},
                ],
            )
        elif i != 3:
            add(
                {"name": name, "type": "float"},
                [{"bucketize": {"boundaries": [-1.0, 0.0, 0.5, 2.0]}}, {"onehot": {}}],
            )
        else:  # a one-hot too wide to unroll, and a binary search
            add(
                {"name": name, "type": "float"},
                [{"bucketize": {"boundaries": [k / 8 - 2.5 for k in range(40)]}}, {"onehot": {}}],
            )
    for i in range(30):
        add(
            {"name": f"n{i}", "type": "int", **({"default": 7} if i % 3 == 0 else {})},
            [{"minmax": {"min": -10, "max": 10 + i}}],
        )
    for i in range(20):
        add(
            {"name": f"b{i}", "type": "bool", **({"nullable": True} if i % 2 else {})},
            [{"impute": {"value": True}}] if i % 2 else [],
        )
    for i in range(24):
        a, b = PARTS[i % 8], PARTS[(i + 3) % 8]
        add(
            {"name": f"t{i}", "type": "timestamp", "nullable": True},
            [{"impute": {"value": 1.6e12}}, {"datepart": {"part": a}}],
            [{"impute": {"value": "1969-12-31T23:59:59Z"}}, {"datepart": {"part": b}}],
            names=[f"t{i}.{a}", f"t{i}.{b}"],
        )
    for i in range(12):
        kind = i % 4
        name = f"s{i}"
        if kind == 0:
            add(
                {"name": name, "type": "string"},
                [{"vocabulary": {"values": SMALL, "oov": "bucket"}}, {"onehot": {}}],
            )
        elif kind == 1:
            add(
                {"name": name, "type": "string", "default": "Dream"},
                [{"vocabulary": {"values": SMALL, "oov": "error"}}],
            )
        elif kind == 2:
            add(
                {"name": name, "type": "string", "nullable": True},
                [
                    {"impute": {"value": "w0007"}},
                    {"vocabulary": {"values": LARGE, "oov": "bucket"}},
                ],
            )
        else:
            add(
                {"name": name, "type": "string", "nullable": True},
                [{"vocabulary": {"values": LARGE, "oov": "error"}}, {"impute": {"value": 3}}],
            )
    width = Spec.from_dict(_with_tail({"inputs": inputs, "features": features}, 1)).width()
    return _with_tail({"inputs": inputs, "features": features}, width)


def _with_tail(spec: dict[str, Any], width: int) -> dict[str, Any]:
    return {
        "name": "wide",
        "version": "1",
        **spec,
        # An identity model: its scores are the features to the bit (a sum of zeros and one x * 1).
        "output": {"kind": "regression", "names": [f"y{i}" for i in range(width)]},
        "maxBatch": 4096,
        "selfTest": {"records": [], "expected": [], "tolerance": 1e-6},
    }


def _wide_records(
    spec: dict[str, Any], n: int, *, seed: int, encodable: bool, clean: bool = False
) -> list[dict[str, Any]]:
    """Messy records (nulls, out-of-vocabulary words, values that overflow; with `encodable`
    false, values of the wrong JSON type), or `clean` ones."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        # a null in a nullable input is no error; an error record has one to three messy values
        messy = (
            set() if clean or rng.random() < 0.5 else set(rng.sample(range(len(spec["inputs"])), 3))
        )
        rec: dict[str, Any] = {}
        for j, inp in enumerate(spec["inputs"]):
            name, kind = inp["name"], inp["type"]
            nullable = inp.get("nullable") or "default" in inp
            r = rng.random() if j in messy else 0.5
            v: Any
            if (nullable and not clean and rng.random() < 0.1) or r < 0.1:
                v = None
            elif r < 0.2 and not encodable:
                v = rng.choice(["7", [1], {"a": 1}, True] if kind != "bool" else [1, "yes"])
            elif kind == "float":
                v = rng.choice([-1.0, 1e308, -2.0]) if r < 0.3 else rng.uniform(-0.5, 4)
            elif kind == "int":
                v = rng.choice([2.5, 1e300]) if r < 0.3 else rng.randint(-20, 40)
            elif kind == "bool":
                v = rng.random() < 0.5
            elif kind == "timestamp":
                days = rng.choice([rng.uniform(-800, 66000), rng.uniform(-1e6, 1e6)])
                v = days * DAY_MS + rng.choice([0, 0.5, rng.randrange(DAY_MS)])
            else:
                words = SMALL if int(name[1:]) % 4 < 2 else LARGE
                v = rng.choice(["Mars", "w9999", "Dream ", "日"]) if r < 0.3 else rng.choice(words)
            rec[name] = v
        out.append(rec)
    return out


def _identity_project(tmp_path: Path, spec: dict[str, Any]) -> Path:
    width = len(spec["output"]["names"])
    records = _wide_records(spec, 3, seed=1, encodable=True, clean=True)
    spec = {
        **spec,
        "selfTest": {
            "records": records,
            "expected": Spec.from_dict(spec).transform(records).matrix.astype(np.float64).tolist(),
            "tolerance": 1e-6,
        },
    }
    return write_project(
        tmp_path / spec["name"], spec, [(np.eye(width), np.zeros(width), "linear")]
    )


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], bytes]:
    spec = _wide_spec()
    root = tmp_path_factory.mktemp("wide")
    return spec, built_bundle(_identity_project(root, spec), root / "store")


def _same_errors(js: dict[int, str], py: dict[int, str]) -> None:
    assert set(js) == set(py), {r: (js.get(r), py.get(r)) for r in set(js) ^ set(py)}
    for r, message in js.items():  # the same input named (a type error's wording may differ)
        assert message.split("'")[1] == py[r].split("'")[1], (message, py[r])


def test_a_wide_spec_is_bit_identical_to_python(wide: tuple[dict[str, Any], bytes]) -> None:
    spec, code = wide
    records = _wide_records(spec, 300, seed=2, encodable=False)
    py = Spec.from_dict(spec).transform(records)
    with JsBundle(code) as b:
        js = b.call("ml.features(a[0])", records)
    errors = {int(r): m for r, m in js["errors"]}
    _same_errors(errors, py.errors)
    good = [r for r in range(len(records)) if r not in errors]
    assert len(good) > 20
    got = np.asarray([js["rows"][r] for r in good], dtype=np.float32)
    np.testing.assert_array_equal(got, py.matrix[good])


def test_a_wide_spec_on_the_columns_path(wide: tuple[dict[str, Any], bytes]) -> None:
    spec, code = wide
    with JsBundle(code) as b:
        # batches one after the other through the same buffers: a one-hot block clears its last 1
        for seed, n in ((3, 500), (4, 200), (5, 500)):
            records = _wide_records(spec, n, seed=seed, encodable=True)
            py = Spec.from_dict(spec).transform(records)
            js = b.call("ml.features(a[0])", records)
            scores, errors = b.run_records(records)
            assert errors == {int(r): m for r, m in js["errors"]}
            _same_errors(errors, py.errors)
            good = [r for r in range(n) if r not in errors]
            np.testing.assert_array_equal(scores[good], py.matrix[good])
            assert (scores[list(errors)] == 0).all()


def _parts_bundle(tmp_path: Path, build_spec: BuildSpec) -> bytes:
    spec = {
        "name": "parts",
        "version": "1",
        "inputs": [{"name": "t", "type": "timestamp"}],
        "features": [
            {"input": "t", "name": p, "steps": [{"datepart": {"part": p}}]} for p in PARTS
        ],
        "output": {"kind": "regression", "names": PARTS},
        "maxBatch": 16384,
        "selfTest": {
            "records": [{"t": 0}],
            "expected": [[1970, 1, 1, 3, 0, 0, 1, 0]],
            "tolerance": 1e-6,
        },
    }
    return build_spec(write_project(tmp_path / "parts", spec, [(np.eye(8), np.zeros(8), "linear")]))


def _want(ms: float) -> list[float]:
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=math.floor(ms))
    parts = [t.year, t.month, t.day, t.weekday(), t.hour, t.minute, t.timetuple().tm_yday]
    return [float(np.float32(v)) for v in [*parts, ms / DAY_MS]]


def test_dateparts_in_and_around_the_civil_table(tmp_path: Path, build_spec: BuildSpec) -> None:
    rng = random.Random(9)
    # every 7th day from 1967 to 2152 (the table holds 1970..2149) at a random time of day ...
    ms = [d * DAY_MS + rng.randrange(DAY_MS) for d in range(-1100, 66800, 7)]
    # ... and the first and last millisecond of the days around each year's end and February's
    for year in range(1967, 2153):
        for month, day in ((1, 1), (2, 28), (3, 1), (12, 31)):
            start = (datetime(year, month, day) - datetime(1970, 1, 1)) // timedelta(milliseconds=1)
            ms += [start, start + DAY_MS - 1, start - 1, start + 0.5]
        if calendar.isleap(year):
            ms.append((datetime(year, 2, 29) - datetime(1970, 1, 1)) // timedelta(milliseconds=1))
    with JsBundle(_parts_bundle(tmp_path, build_spec)) as b:
        got = b.call("ml.features(a[0])", [{"t": v} for v in ms])
        scores, errors = b.run_records([{"t": v} for v in ms])
    assert got["errors"] == [] and errors == {}
    want = [_want(v) for v in ms]
    bad = [(v, row, w) for v, row, w in zip(ms, got["rows"], want, strict=True) if row != w]
    assert not bad, bad[:5]
    np.testing.assert_array_equal(scores, np.asarray(want, dtype=np.float32))


FINISH = """
export function finish(batch, result) {
  const x = batch.get('x'), ok = batch.valid('x'), s = batch.get('s'), k = batch.get('k');
  const xs = new Float64Array(batch.n), valid = new Float64Array(batch.n);
  const words = new Array(batch.n);
  for (let i = 0; i < batch.n; i++) {
    xs[i] = x[i] + k[i];
    valid[i] = ok[i];
    words[i] = s[i] === null ? null : '<' + s[i] + '>';
  }
  return { xs, valid, words };
}
"""


def test_finish_sees_the_settled_inputs_of_the_fused_loop(
    tmp_path: Path, build_spec: BuildSpec
) -> None:
    spec = {
        "name": "finish",
        "version": "1",
        "inputs": [
            {"name": "x", "type": "float", "default": 7.5},
            {"name": "k", "type": "int", "nullable": True},
            {"name": "s", "type": "string", "default": "b"},
        ],
        "features": [
            {"input": "x"},
            {"input": "k", "steps": [{"impute": {"value": 0}}]},
            {"input": "s", "steps": [{"vocabulary": {"values": ["a", "b"], "oov": "bucket"}}]},
        ],
        "output": {"kind": "regression", "names": ["x", "k", "s"]},
        "extras": [
            {"name": "xs", "type": "float"},
            {"name": "valid", "type": "float"},
            {"name": "words", "type": "string"},
        ],
        "hooks": "hooks.js",
        "selfTest": {
            "records": [{"x": 1, "k": 2, "s": "a"}],
            "expected": [[1, 2, 0]],
            "tolerance": 1e-6,
        },
    }
    project = write_project(
        tmp_path / "f", spec, [(np.eye(3), np.zeros(3), "linear")], hooks=FINISH
    )
    # row 1: x's default (s is null to the hook: a string's default is its lookup's); row 2: k is
    # null (NaN); row 3: an error record, k is not an integer
    records = [
        {"x": 1.5, "k": 2, "s": "a"},
        {"x": None, "k": 3, "s": None},
        {"x": 2.0, "k": None, "s": "zz"},
        {"x": 4.0, "k": 2.5, "s": "b"},
    ]
    with JsBundle(build_spec(project)) as b:
        results = b.call("ml.predict(a[0])", records)
        _, errors = b.run_records(records)
        floats = b.float_extras(len(records))
        strings = b.call("ml.extraStrings()")
    assert errors == {3: "input 'k' is 2.5, not an integer"}
    assert results[3] == {"scores": [0, 0, 0], "error": errors[3]}
    want_xs = [3.5, 10.5, math.nan]
    assert [r["xs"] for r in results[:3]] == [3.5, 10.5, None]
    np.testing.assert_array_equal(floats["xs"][:3], want_xs)
    assert [r["valid"] for r in results[:3]] == floats["valid"][:3].tolist() == [1, 1, 1]
    assert [r["words"] for r in results[:3]] == strings["words"][:3] == ["<a>", None, "<zz>"]
