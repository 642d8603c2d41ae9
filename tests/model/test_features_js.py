"""The bundle's pre-processing (`model/src/features.js`) against the Python side of the same spec
(`model/spec.py`), against plain-Python references, and its two string paths (UTF-8 bytes from
the host, JS strings from JSON) against each other."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.js_bundle import JsBundle
from tests.support.spec_projects import (
    ISLANDS,
    SEXES,
    TYPED_FIXTURE,
    BuildSpec,
    typed_features,
    typed_spec,
    write_project,
)
from tests.support.tfjs_models import numpy_forward

EST = timezone(timedelta(hours=-5))


def messy_records(n: int, seed: int = 7, *, encodable: bool = False) -> list[dict[str, Any]]:
    """Records with nulls, unknown and non-ASCII words, bad types, odd timestamps. With
    `encodable`, every value has its input's JSON type (what a host can put into columns)."""
    rng = random.Random(seed)

    def pick(*options: tuple[float, Any]) -> Any:
        r = rng.random() * sum(w for w, _ in options)
        for w, v in options:
            r -= w
            if r <= 0:
                return v() if callable(v) else v
        return options[-1][1]

    start = datetime(1950, 1, 1, tzinfo=UTC)
    out = []
    for _ in range(n):
        t = start + timedelta(seconds=rng.uniform(0, 120 * 365 * 86400))
        rec = {
            "island": pick(
                (8, lambda: rng.choice(ISLANDS)),
                (1, "Mars"),
                (1, "Ísland ☃"),
                (0.5, ""),
                (0.3, None),
            ),
            "bill_length_mm": pick(
                (8, lambda: round(rng.gauss(44, 6), rng.randint(0, 6))),
                (1, lambda: rng.randint(30, 60)),
                (1, None),
            ),
            "sex": pick((8, lambda: rng.choice(SEXES)), (1, None), (0.3, "other")),
            "year": pick((8, lambda: rng.randint(2007, 2009)), (1, 2008.0), (0.3, 2008.5)),
            "observed": pick(
                (3, lambda t=t: t.replace(tzinfo=None).isoformat(timespec="seconds")),
                (2, lambda t=t: t.isoformat(timespec="milliseconds").replace("+00:00", "Z")),
                (2, lambda t=t: t.astimezone(EST).isoformat(timespec="seconds")),
                (2, lambda t=t: int(t.timestamp() * 1000)),
                (1, None),
            ),
            "tagged": pick((5, True), (5, False), (0.3, None)),
            "body_mass_g": pick(
                (8, lambda: rng.uniform(1000, 8000)), (1, lambda: -rng.uniform(0, 50)), (1, None)
            ),
        }
        if not encodable and rng.random() < 0.05:
            rec[rng.choice(list(rec))] = rng.choice(["7", [1], {"a": 1}, True, 3])
        out.append(rec)
    return out


def test_js_features_are_bit_identical_to_the_python_spec(typed: JsBundle) -> None:
    spec_mod = pytest.importorskip("model.spec", reason="model/spec.py (the Python side) missing")
    records = messy_records(600)
    py = spec_mod.Spec.from_dict(typed_spec()).transform(records)
    js = typed.call("ml.features(a[0])", records)
    assert tuple(js["names"]) == tuple(py.names)
    js_errors = dict(js["errors"])
    assert set(js_errors) == set(py.errors), {
        r: (js_errors.get(r), py.errors.get(r)) for r in set(js_errors) ^ set(py.errors)
    }
    # The same input named (the wording of a type error may differ between the runtimes).
    for r, message in js_errors.items():
        assert message.split("'")[1] == py.errors[r].split("'")[1], (message, py.errors[r])
    good = [r for r in range(len(records)) if r not in js_errors]
    assert len(good) > 400
    got = np.asarray([js["rows"][r] for r in good], dtype=np.float32)
    np.testing.assert_array_equal(got, py.matrix[good])


def test_js_features_equal_an_independent_reference(typed: JsBundle) -> None:
    records = [r for r in messy_records(400, seed=3, encodable=True) if _valid(r)]
    js = typed.call("ml.features(a[0])", records)
    assert js["errors"] == []
    np.testing.assert_array_equal(np.asarray(js["rows"], np.float32), typed_features(records))


def _valid(rec: dict[str, Any]) -> bool:
    return (
        rec["island"] is not None
        and rec["sex"] != "other"
        and rec["tagged"] is not None
        and float(rec["year"]).is_integer()
    )


def test_the_columns_path_computes_what_the_json_path_does(typed: JsBundle) -> None:
    records = messy_records(500, seed=11, encodable=True)
    js = typed.call("ml.features(a[0])", records)
    scores, errors = typed.run_records(records)
    assert errors == dict(js["errors"])
    good = [r for r in range(len(records)) if r not in errors]
    want = numpy_forward(
        [(k, b, a) for k, b, a in _layers()], np.asarray([js["rows"][r] for r in good])
    )
    assert np.abs(scores[good] - want).max() <= 1e-6
    assert (scores[list(errors)] == 0).all()


def _layers() -> Any:
    from tests.support.spec_projects import typed_layers

    return typed_layers()


DATEPARTS = ["year", "month", "day", "weekday", "hour", "minute", "dayofyear", "epoch_days"]


def _parts_spec() -> dict[str, Any]:
    return {
        "name": "parts",
        "version": "1",
        "inputs": [{"name": "t", "type": "timestamp"}],
        "features": [
            {"input": "t", "name": p, "steps": [{"datepart": {"part": p}}]} for p in DATEPARTS
        ],
        "output": {"kind": "regression", "names": ["y"]},
        "selfTest": {"records": [{"t": 0}], "expected": [[0.0]], "tolerance": 1e-6},
    }


def test_dateparts_match_python_datetime(tmp_path: Path, build_spec: BuildSpec) -> None:
    zero = [(np.zeros((8, 1)), np.zeros(1), "linear")]
    bundle = build_spec(write_project(tmp_path / "parts", _parts_spec(), zero))
    rng = random.Random(5)
    ms = [rng.uniform(-1e13, 1e13) for _ in range(300)]
    edges = ["1970-01-01", "1969-12-31T23:59:59.999Z", "2000-02-29T12:00:00Z", "1900-03-01"]
    edges += ["2100-12-31T23:59:59Z", "2024-12-31T23:59:00Z", "0001-01-01", "9999-12-31T23:59:59Z"]
    ms += [
        (datetime.fromisoformat(e.replace("Z", "")) - datetime(1970, 1, 1))
        / timedelta(milliseconds=1)
        for e in edges
    ]
    with JsBundle(bundle) as b:
        got = b.call("ml.features(a[0])", [{"t": v} for v in ms])
    assert got["errors"] == []
    for v, row in zip(ms, got["rows"], strict=True):
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=math.floor(v))
        want = [
            t.year,
            t.month,
            t.day,
            t.weekday(),
            t.hour,
            t.minute,
            t.timetuple().tm_yday,
            np.float32(v / 86400000),
        ]
        assert row == [float(np.float32(w)) for w in want], (v, t)


def _number_spec(steps: list[dict[str, Any]], name: str = "x") -> dict[str, Any]:
    return {
        "name": "numbers",
        "version": "1",
        "inputs": [{"name": "x", "type": "float", "nullable": True}],
        "features": [{"input": "x", "name": name, "steps": steps}],
        "output": {"kind": "regression"},
        "selfTest": {"records": [{"x": 1}], "expected": [[0.0]], "tolerance": 1e-6},
    }


def test_bucketize_counts_the_boundaries_at_or_below(tmp_path: Path, build_spec: BuildSpec) -> None:
    # More than 16 boundaries: the generated code searches instead of comparing each.
    boundaries = sorted({round(v, 2) for v in np.random.default_rng(1).normal(0, 10, 40)})
    spec = _number_spec([{"impute": {"value": 0}}, {"bucketize": {"boundaries": boundaries}}])
    width = 1
    project = write_project(tmp_path / "b", spec, [(np.zeros((width, 1)), np.zeros(1), "linear")])
    xs = [*boundaries, *np.random.default_rng(2).normal(0, 15, 200).tolist(), -1e9, 1e9, None]
    with JsBundle(build_spec(project)) as b:
        got = b.call("ml.features(a[0])", [{"x": v} for v in xs])
    want = np.searchsorted(boundaries, [0 if v is None else v for v in xs], side="right")
    assert [r[0] for r in got["rows"]] == want.tolist()


def test_log1p_below_minus_one_is_an_error_record(tmp_path: Path, build_spec: BuildSpec) -> None:
    spec = _number_spec([{"log1p": {}}, {"standardize": {"mean": 1, "std": 2}}])
    spec["selfTest"]["expected"] = [[0.0]]
    project = write_project(tmp_path / "l", spec, [(np.zeros((1, 1)), np.zeros(1), "linear")])
    with JsBundle(build_spec(project)) as b:
        got = b.call("ml.features(a[0])", [{"x": 0.5}, {"x": -1}, {"x": None}, {"x": -0.999}])
    assert got["errors"] == [
        [1, "input 'x' is -1: log1p needs x > -1"],
        [2, "input 'x' is null and has no default or impute"],
    ]
    assert got["rows"][0] == [float(np.float32((math.log1p(0.5) - 1) / 2))]
    assert got["rows"][3] == [float(np.float32((math.log1p(-0.999) - 1) / 2))]


def test_non_ascii_words_through_bytes_and_strings(tmp_path: Path, build_spec: BuildSpec) -> None:
    words = ["Ísland", "☃", "日本", "a", "ab", "", "naïve", "🐧"]
    spec = {
        "name": "words",
        "version": "1",
        "inputs": [{"name": "w", "type": "string", "nullable": True, "default": "a"}],
        "features": [{"input": "w", "steps": [{"vocabulary": {"values": words, "oov": "error"}}]}],
        "output": {"kind": "regression"},
        "selfTest": {"records": [{"w": "a"}], "expected": [[3.0]], "tolerance": 1e-6},
    }
    weight = [(np.ones((1, 1)), np.zeros(1), "linear")]
    project = write_project(tmp_path / "w", spec, weight)
    records = [{"w": w} for w in [*words, None, "🐧🐧", "b", "Island"]]
    with JsBundle(build_spec(project)) as b:
        js = b.call("ml.features(a[0])", records)
        scores, errors = b.run_records(records)
    assert [r[0] if r else None for r in js["rows"]] == [*range(8), 3, None, None, None]
    assert (
        errors
        == dict(js["errors"])
        == {
            9: "input 'w' value '🐧🐧' is not in the vocabulary",
            10: "input 'w' value 'b' is not in the vocabulary",
            11: "input 'w' value 'Island' is not in the vocabulary",
        }
    )
    assert scores[:9, 0].tolist() == [*range(8), 3]


def test_the_committed_fixture_is_what_spec_projects_writes() -> None:
    # tests/model/fixtures/typed is `python -m tests.support.spec_projects` output, kept in step
    written = json.loads((TYPED_FIXTURE / "spec.json").read_text())
    assert written == json.loads(json.dumps(typed_spec()))
