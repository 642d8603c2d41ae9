"""Contract 2 of a bundle built from a spec (docs/model-spec.md, "Contract 2"), driven directly in
mini-racer: meta and schema, the column buffers, error rows, the JSON path, features, self-test."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.js_bundle import JsBundle
from tests.support.spec_projects import (
    LABELS,
    SAMPLE_RECORDS,
    SELF_TEST_RECORDS,
    TYPED_NAMES,
    typed_features,
    typed_layers,
)
from tests.support.tfjs_models import numpy_forward


def test_meta_and_schema(typed: JsBundle) -> None:
    meta = typed.meta
    assert meta["contract"] == 2 and meta["name"] == "typed" and meta["version"] == "1"
    assert meta["inputs"] == [
        "island",
        "bill_length_mm",
        "sex",
        "year",
        "observed",
        "tagged",
        "body_mass_g",
    ]
    assert meta["outputs"] == LABELS and meta["labels"] == LABELS and meta["maxBatch"] == 4096
    schema = meta["schema"]
    assert schema["inputs"][:3] == [
        {"name": "island", "type": "string", "nullable": False},
        {"name": "bill_length_mm", "type": "float", "nullable": True},
        {"name": "sex", "type": "string", "nullable": True},  # a default makes it nullable
    ]
    assert schema["derived"] == [] and schema["extras"] == []
    assert schema["features"] == TYPED_NAMES
    assert schema["output"]["kind"] == "multiclass" and schema["output"]["labels"] == LABELS
    assert typed.call("ml.kernel") == "dense-unrolled" and typed.call("ml.kernelReason") == ""
    # a timestamp input: no contract-1 float32 rows
    assert typed.call("typeof ml.buffers") == "undefined"
    st = typed.call("ml.selfTest")
    assert st["records"] == SELF_TEST_RECORDS and "inputs" not in st
    assert typed.call("ml.samples")["names"] == TYPED_NAMES


def test_column_buffers_have_the_documented_layout(typed: JsBundle) -> None:
    rows = 10
    views = typed.columns(rows)
    n_num, n_raw, n_str = 5, 7, 2
    assert len(views) == 6 + n_str
    assert views[0].nbytes == n_num * rows * 8  # float64 per numeric input
    assert views[1].nbytes == n_raw * rows  # uint8 valid per raw input
    assert views[2].nbytes == n_str * (rows + 1) * 4  # int32 offsets per string input
    assert views[3].nbytes == rows  # status
    assert views[4].nbytes == rows * 3 * 4  # float32 scores, row-major
    assert views[5].nbytes == 8  # no float extras: never an empty buffer (mini-racer)
    # the same buffers on a second call
    assert typed.eval("ml.columns(10)[0] === ml.columns(10)[0]") is True


def test_columns_path_matches_the_reference_and_the_json_path(typed: JsBundle) -> None:
    scores, errors = typed.run_records(SAMPLE_RECORDS)
    assert errors == {}
    want = numpy_forward(typed_layers(), typed_features(SAMPLE_RECORDS))
    assert np.abs(scores - want).max() <= 1e-6
    results = typed.call("ml.predict(a[0])", SAMPLE_RECORDS)
    assert np.abs(np.asarray([r["scores"] for r in results]) - scores).max() <= 1e-6
    first = results[0]
    assert set(first) == {"scores", "label", "score", "probabilities", "top_k"}
    assert first["label"] == LABELS[int(np.argmax(first["scores"]))]
    assert list(first["probabilities"]) == LABELS and len(first["top_k"]) == 2
    assert first["top_k"][0] == [first["label"], first["score"]]


BAD = [
    ({"year": 3.5}, "input 'year' is 3.5, not an integer"),
    ({"island": "Mars", "sex": "other"}, "input 'sex' value 'other' is not in the vocabulary"),
    ({"island": None}, "input 'island' is null and not nullable"),
    ({"tagged": 2}, "input 'tagged' is 2, not a boolean"),
    ({"bill_length_mm": float("inf")}, "input 'bill_length_mm' is Infinity, not a finite number"),
    ({"observed": float("-inf")}, "input 'observed' is -Infinity, not a finite timestamp"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m.split("'")[1] for _, m in BAD])
def test_error_rows_name_the_input_and_the_rest_is_predicted(
    typed: JsBundle, change: dict[str, object], message: str
) -> None:
    records = [dict(r) for r in SAMPLE_RECORDS]
    records[2].update(change)
    scores, errors = typed.run_records(records)
    assert errors == {2: message}
    assert (scores[2] == 0).all()
    good = [0, 1, 3, 4, 5]
    want = numpy_forward(typed_layers(), typed_features([SAMPLE_RECORDS[i] for i in good]))
    assert np.abs(scores[good] - want).max() <= 1e-6
    status = np.frombuffer(typed.columns(typed._rows)[3], dtype=np.uint8)[: len(records)]
    assert status.tolist() == [0, 0, 2, 0, 0, 0]


def test_rows_the_host_refused_are_skipped(typed: JsBundle) -> None:
    typed.columns(4)
    typed.encode_columns(typed.records_to_columns([*SAMPLE_RECORDS[:3], {}]), 4)
    status = np.frombuffer(typed.columns(4)[3], dtype=np.uint8)
    status[1] = status[3] = 1  # row 3 is all nulls: the bundle would refuse it, but is not asked
    scores, errors = typed.predict_columns(4)
    assert errors == {} and status[:4].tolist() == [0, 1, 0, 1]
    assert (scores[1] == 0).all() and (scores[3] == 0).all()
    assert scores[0].sum() == pytest.approx(1, abs=1e-6)


def test_reserve_grows_a_string_buffer_and_keeps_the_old_one(typed: JsBundle) -> None:
    views = typed.columns(8)
    size = views[6].nbytes
    grown = typed.eval(f"ml.reserve(0, {size + 1})")
    assert grown.nbytes >= size + 1
    assert typed.eval(f"ml.reserve(0, {size}).byteLength") == grown.nbytes  # big enough already
    long_island = "Biscoe" + " " * 5000  # not in the vocabulary: the OOV bucket
    records = [dict(SAMPLE_RECORDS[0], island=long_island)] * 8
    scores, errors = typed.run_records(records)
    assert errors == {}
    want = numpy_forward(typed_layers(), typed_features(records))
    assert np.abs(scores - want).max() <= 1e-6
    with pytest.raises(Exception, match=r"k must be an integer in 0\.\.1"):
        typed.eval("ml.reserve(2, 10)")


def test_json_path_errors_are_per_record(typed: JsBundle) -> None:
    records = [SAMPLE_RECORDS[0], {**SAMPLE_RECORDS[0], "year": "2008"}, {"island": "Dream"}]
    results = typed.call("ml.predict(a[0])", records)
    assert "error" not in results[0]
    assert results[1] == {"scores": [0, 0, 0], "error": "input 'year' is \"2008\", not a number"}
    assert results[2]["error"] == "input 'year' is null and not nullable"


def test_timestamps_in_json_records(typed: JsBundle) -> None:
    base = SAMPLE_RECORDS[0]
    forms = [
        "2023-06-15T10:30:00",
        "2023-06-15T10:30:00Z",
        "2023-06-15 10:30:00",
        "2023-06-15T12:30:00+02:00",
        "2023-06-15T05:30:00-0500",
        1686825000000,
    ]
    got = typed.call("ml.features(a[0])", [{**base, "observed": f} for f in forms])
    assert got["errors"] == []
    assert all(row == got["rows"][0] for row in got["rows"])
    bad = typed.call("ml.features(a[0])", [{**base, "observed": "June 15"}])
    assert bad["errors"] == [
        [0, "input 'observed' is \"June 15\", not a timestamp (ISO-8601 text or ms)"]
    ]
    assert bad["rows"] == [None]


def test_features_of_records(typed: JsBundle) -> None:
    got = typed.call("ml.features(a[0])", SAMPLE_RECORDS)
    assert got["names"] == TYPED_NAMES and got["errors"] == []
    np.testing.assert_array_equal(
        np.asarray(got["rows"], dtype=np.float32), typed_features(SAMPLE_RECORDS)
    )
