"""The shared scoring core (no Flink): batches in, JSON lines out, bad rows as error records."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from job.scoring import INVALID, Batch, Scorer, as_floats, parse_record
from reloader.errors import BundleError


def _lines(model: Any, batch: Batch, subtask: int | None = 3) -> list[dict[str, Any]]:
    scorer = Scorer()
    scorer.subtask = subtask
    _result, lines = scorer.score(model.run, batch)
    assert len(lines) == batch.size
    return [json.loads(line) for line in lines]


def test_columns_match_the_reference_and_pass_other_columns_through(model: Any, wine: Any) -> None:
    n = len(wine.ids)
    columns = {"id": np.asarray(wine.ids), "created_ms": np.arange(n) + 10**12}
    columns |= {f: wine.x[:, j].astype(np.float64) for j, f in enumerate(wine.features)}
    out = _lines(model, Batch(columns=columns))
    reference = np.asarray(wine.reference("v2")["outputs"])
    got = np.array([list(o["probabilities"].values()) for o in out])
    np.testing.assert_allclose(got, reference, atol=1e-6)
    first = out[0]
    assert first["model_version"] == "7" and first["subtask"] == 3
    assert first["created_ms"] == 10**12 and first["id"] == int(wine.ids[0])
    assert first["label"] == max(first["probabilities"], key=first["probabilities"].get)
    assert set(first) == {
        "id", "label", "probabilities", "model_version", "model_sha256", "subtask", "created_ms"
    }  # fmt: skip


def test_bad_rows_become_error_records_and_the_rest_is_predicted(model: Any, wine: Any) -> None:
    good = dict(wine.records[0], id=1, note="kept")
    records = [
        good,
        {k: v for k, v in good.items() if k != "ash"} | {"id": 2},
        good | {"id": 3, "hue": "high"},
        good | {"id": 4, "hue": float("nan")},
        good | {"id": 5, "hue": True},
        good | {"id": 6, "proline": None},
        parse_record("not json"),
        parse_record("[1, 2]"),
        good | {"id": 9},
        good | {"id": 10, "hue": 1e39},
        good | {"id": 11, "hue": 10**400},
        good | {"id": 12, "hue": [1.0]},
    ]
    out = _lines(model, Batch(records=records))
    assert [o.get("error") for o in out] == [
        None,
        "feature 'ash' is missing",
        "feature 'hue' is str, not a number",
        "feature 'hue' is NaN (missing or not a number)",
        "feature 'hue' is bool, not a number",
        "feature 'proline' is missing",
        "not JSON: Expecting value: line 1 column 1 (char 0)",
        "not a JSON object but list",
        None,
        "feature 'hue' is out of the float32 range",
        "feature 'hue' is out of the float32 range",
        "feature 'hue' is list, not a number",
    ]
    assert out[0]["probabilities"] == out[8]["probabilities"]
    assert out[0]["note"] == "kept" and out[6]["line"] == "not json"
    assert all(o["model_version"] == "7" for o in out)


def test_a_model_without_the_column_errors_every_row(model: Any) -> None:
    out = _lines(model, Batch(columns={"id": np.arange(3)}))
    assert {o["error"] for o in out} == {"feature 'alcohol' is missing"}


def test_empty_batch(model: Any) -> None:
    assert Scorer().score(model.run, Batch(records=[]))[1] == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["id", "alcohol", "ash", "hue", "x"]),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(),
                st.floats(),
                st.text(max_size=5),
                st.lists(st.integers(), max_size=2),
            ),
        ),
        max_size=8,
    )
)
def test_any_records_give_one_valid_json_line_each(
    model: Any, records: list[dict[str, Any]]
) -> None:
    """Whatever the records hold, scoring never raises and every line is strict JSON."""
    out = _lines(model, Batch(records=records), subtask=None)
    for rec, line in zip(records, out, strict=True):
        assert ("error" in line) != ("label" in line)
        expected_id = rec.get("id")
        if isinstance(expected_id, float) and not math.isfinite(expected_id):
            expected_id = None
        assert line["id"] == expected_id


def test_as_floats() -> None:
    assert as_floats(np.array([1, 2])).dtype == np.float64
    got = as_floats([1, None, "x", True, 2.5])
    assert got[0] == 1 and math.isnan(got[1]) and math.isnan(got[2]) and math.isnan(got[3])
    assert got[4] == 2.5


def test_parse_record() -> None:
    assert parse_record('{"id": 1}') == {"id": 1}
    assert parse_record(b"\xff")[INVALID].startswith("not JSON")
    assert parse_record("3")[INVALID] == "not a JSON object but int"


class _BrokenModel:
    """A `HotModel` whose every call fails the way a broken runtime does."""

    def __init__(self, real: Any) -> None:
        self.info = real.info

    def run(self, call: Any) -> Any:
        raise BundleError("predictBuffer threw", stage="predict")


@pytest.mark.parametrize(
    "lines",
    [
        ['{"alcohol": 13.2}', '{"alcohol": 12.1}'],  # no ids at all
        ['{"id": 1, "alcohol": 13.2}', '{"alcohol": 12.1}'],  # some without
        ["not json", "[1, 2]"],
        ['{"id": [NaN], "alcohol": 1}', '{"id": {"a": Infinity}}'],  # json.loads takes these
    ],
)
def test_a_model_failure_gives_error_records_whatever_the_records_hold(
    model: Any, lines: list[str]
) -> None:
    """A model that fails on a batch never fails the job: its records come out as errors."""
    from job.functions import PredictBatched

    fn = PredictBatched(url="unused")
    fn.scorer, fn.model, fn.log_prefix = Scorer(), _BrokenModel(model), "[test]"
    out = fn.predict_batch(Batch(records=[parse_record(line) for line in lines]))
    assert len(out) == len(lines)
    for line in out:
        rec = json.loads(line, parse_constant=_no_constant)
        assert rec["error"].startswith("model failed on this batch: predictBuffer threw")
        assert rec["model_version"] == "7"


def test_nested_non_finite_values_pass_through_as_null(model: Any, wine: Any) -> None:
    good = dict(wine.records[0], id=1)
    records = [parse_record('{"id": [NaN], "note": {"x": -Infinity}}') | good | {"id": [1.5]}]
    records.append(parse_record('{"id": 2, "note": [NaN, 1]}') | {"alcohol": 1})
    out = [json.loads(line, parse_constant=_no_constant) for line in _raw(model, records)]
    assert out[0]["id"] == [1.5] and "label" in out[0]
    assert out[1]["note"] == [None, 1]


def _raw(model: Any, records: list[dict[str, Any]]) -> list[str]:
    return Scorer().score(model.run, Batch(records=records))[1]


def _no_constant(name: str) -> Any:
    raise AssertionError(f"not strict JSON: {name}")
