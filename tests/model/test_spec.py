"""model/spec.py: the spec's validation, fit, transform numerics, typing rules and output kinds
(docs/model-spec.md). numpy/pandas only: runs in the project venv, without TensorFlow."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.spec import Features, OutputSpec, Spec, SpecError
from model.spec_steps import datepart
from tests.support.spec_projects import PENGUIN_INPUTS


def penguins() -> dict[str, Any]:
    """The doc's example spec, unfitted."""
    return {
        "name": "penguins",
        "version": "1",
        "inputs": [
            *copy.deepcopy(PENGUIN_INPUTS),
            {"name": "bill_ratio", "type": "float", "derived": True},
        ],
        "features": [
            {"input": "island", "steps": [{"vocabulary": {"oov": "bucket"}}, {"onehot": {}}]},
            {
                "input": "bill_length_mm",
                "steps": [{"impute": {"strategy": "mean"}}, {"standardize": {}}],
            },
            {"input": "sex", "steps": [{"vocabulary": {"oov": "error"}}, {"onehot": {}}]},
            {"input": "year", "steps": [{"bucketize": {"boundaries": [2008, 2009]}}]},
            {
                "input": "observed",
                "name": "observed.month",
                "steps": [{"impute": {"value": 0}}, {"datepart": {"part": "month"}}],
            },
            {"input": "bill_ratio", "steps": [{"clip": {"min": 0, "max": 10}}, {"log1p": {}}]},
        ],
        "output": {"kind": "multiclass", "labels": ["Adelie", "Chinstrap", "Gentoo"], "top_k": 2},
        "extras": [{"name": "confidence_band", "type": "string"}],
    }


def derive_ratio(cols: dict[str, Any]) -> dict[str, Any]:
    return {"bill_ratio": cols["bill_length_mm"] / 10.0}


def derive_filled(cols: dict[str, Any]) -> dict[str, Any]:
    return {"bill_ratio": np.nan_to_num(cols["bill_length_mm"] / 10.0, nan=4.0)}


TRAIN = [
    {"island": "Dream", "bill_length_mm": 40.0, "sex": "m", "year": 2007, "observed": None},
    {"island": "Biscoe", "bill_length_mm": None, "sex": "f", "year": 2008, "observed": None},
    {"island": "Dream", "bill_length_mm": 50.0, "sex": "f", "year": 2009, "observed": None},
    {"island": "Torgersen", "bill_length_mm": 45.0, "sex": None, "year": 2009, "observed": None},
]


def fitted() -> Spec:
    return Spec.from_dict(penguins()).fit(
        TRAIN, derive=lambda c: {"bill_ratio": np.ones(len(c["year"]))}
    )


def spec_of(inputs: list[dict[str, Any]], features: list[dict[str, Any]], **kw: Any) -> Spec:
    return Spec.from_dict(
        {"inputs": inputs, "features": features, "output": {"kind": "regression"}, **kw}
    )


def one(type_: str, steps: list[dict[str, Any]], **inp: Any) -> Spec:
    return spec_of([{"name": "x", "type": type_, **inp}], [{"input": "x", "steps": steps}])


# -- validation ------------------------------------------------------------------------------


def _mutate(path: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(penguins())
    target: Any = d
    keys = [int(k) if k.isdigit() else k for k in path.split("/")]
    for k in keys[:-1]:
        target = target[k]
    target[keys[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("inputs/0/type", "str", "input 'island': unknown type 'str'"),
        ("inputs/1/name", "island", "input 'island' is declared twice"),
        ("inputs/0/colour", 1, "inputs[0]: unknown field 'colour'"),
        ("inputs/3/default", 3.5, "input 'year': default is 3.5, not an integer"),
        ("inputs/2/nullable", False, "input 'sex': a default makes it nullable"),
        (
            "features/0/steps",
            [],
            "feature 'island': a string input must reach a number through voc",
        ),
        (
            "features/4/steps",
            [{"impute": {"value": 0}}],
            "a timestamp input must reach a number through datepart",
        ),
        (
            "features/1/steps/1",
            {"scale": {}},
            "feature 'bill_length_mm' step 2: unknown step 'scale'",
        ),
        (
            "features/1/steps/1",
            {"standardize": {"stdev": 1}},
            "step 2 (standardize): unknown parameter 'stdev'",
        ),
        (
            "features/0/steps/0",
            {"standardize": {}},
            "'island' step 1 (standardize) works on numbers, not on a string",
        ),
        (
            "features/3/steps/0",
            {"vocabulary": {}},
            "'year' step 1 (vocabulary) works on strings, not on a number",
        ),
        (
            "features/4/steps/1",
            {"datepart": {"part": "week"}},
            "step 2 (datepart): part must be one of",
        ),
        (
            "features/1/steps/1",
            {"standardize": {"mean": 1, "std": 0}},
            "step 2 (standardize): std must be > 0, not 0",
        ),
        ("features/1/steps/1", {"standardize": {"mean": 1}}, "give both mean and std"),
        (
            "features/1/steps/1",
            {"minmax": {"min": 3, "max": 3}},
            "step 2 (minmax): min must be below max, not 3..3",
        ),
        (
            "features/3/steps/0",
            {"bucketize": {"boundaries": [1, 3, 2]}},
            "(bucketize): boundaries must ascend strictly, not 3 then 2",
        ),
        ("features/3/steps/0", {"bucketize": {}}, "needs boundaries, or quantiles"),
        (
            "features/0/steps/0",
            {"vocabulary": {"values": ["a", "b", "a"]}},
            "value 'a' is listed twice",
        ),
        (
            "features/0/steps/0",
            {"vocabulary": {"values": ["a"], "oov": "drop"}},
            "oov must be 'bucket' or 'error'",
        ),
        (
            "features/0/steps",
            [{"vocabulary": {"values": ["a"], "oov": "bucket"}}, {"onehot": {"size": 3}}],
            "'island' step 2 (onehot): size 3 does not match the 2 indexes",
        ),
        ("features/0/steps/0", {"vocabulary": {"values": ["a"], "oov": "bucket"}}, None),
        ("features/1/steps/1", {"onehot": {}}, "step 2 (onehot) needs an index"),
        (
            "features/1/steps/0",
            {"impute": {"strategy": "median", "value": "x"}},
            "step 1 (impute): value must be a number, not 'x'",
        ),
        (
            "features/0/steps",
            [{"vocabulary": {}}, {"onehot": {}}, {"onehot": {}}],
            "'island' step 3 (onehot) comes after onehot",
        ),
        ("features/2/input", "nope", "feature 'nope': no input named 'nope'"),
        ("features/2/name", "island=Dream", None),
        ("features/3/name", "bill_length_mm", "column 'bill_length_mm' is also made by feature"),
        ("extras/0/name", "label", "extra 'label' clashes with a field the job writes itself"),
        ("extras/0/name", "model_sha256", "extra 'model_sha256' clashes"),
        ("extras/0/type", "int", "extra 'confidence_band': type must be float or string"),
        ("output/labels", ["Adelie"], "output (multiclass): labels must be at least two labels"),
        ("output/top_k", 4, "output (multiclass): top_k must be in 1..3, not 4"),
        ("output/kind", "ranking", "output: unknown kind 'ranking'"),
        (
            "output",
            {"kind": "binary", "labels": ["a", "b", "c"]},
            "labels must be [negative, positive]",
        ),
        (
            "output",
            {"kind": "binary", "labels": ["a", "b"], "threshold": 1},
            "threshold must be between 0 and 1",
        ),
        (
            "output",
            {"kind": "multi", "heads": [{"name": "a", "kind": "multi", "heads": []}]},
            "head 'a': unknown kind 'multi'",
        ),
        ("maxBatch", 0, "spec: maxBatch must be a positive integer"),
        ("colour", "blue", "spec: unknown field 'colour'"),
        ("name", "pen guins", "spec: name 'pen guins' must match"),
    ],
)
def test_validation_names_what_is_wrong(path: str, value: Any, message: str | None) -> None:
    d = _mutate(path, value)
    if message is None:
        Spec.from_dict(d)
        return
    with pytest.raises(SpecError) as e:
        Spec.from_dict(d)
    text = str(e.value)
    assert message in text
    assert "\n" not in text


def test_extras_may_not_take_a_head_name() -> None:
    d = penguins()
    d["output"] = {
        "kind": "multi",
        "heads": [
            {"name": "species", "kind": "multiclass", "labels": ["a", "b"]},
            {"name": "mass", "kind": "regression"},
        ],
    }
    d["extras"] = [{"name": "mass", "type": "float"}]
    with pytest.raises(SpecError, match="extra 'mass' clashes"):
        Spec.from_dict(d)


def test_transform_refuses_an_unfitted_spec_naming_the_step() -> None:
    spec = Spec.from_dict(penguins())
    assert spec.unfitted() == [
        "feature 'island' step 1 (vocabulary): values",
        "feature 'bill_length_mm' step 1 (impute): value (strategy mean)",
        "feature 'bill_length_mm' step 2 (standardize): mean/std",
        "feature 'sex' step 1 (vocabulary): values",
    ]
    with pytest.raises(SpecError) as e:
        spec.transform(TRAIN)
    assert str(e.value) == (
        "spec is not fitted: feature 'island' step 1 (vocabulary): values missing (and 3 more); "
        "call Spec.fit(records)"
    )


# -- fit ---------------------------------------------------------------------------------------


def test_fit_fills_every_parameter_sequentially() -> None:
    spec = fitted()
    assert spec.unfitted() == []
    steps = {f.column: f.to_dict()["steps"] for f in spec.features}
    # by frequency, then value; Dream twice
    assert steps["island"][0] == {
        "vocabulary": {"values": ["Dream", "Biscoe", "Torgersen"], "oov": "bucket"}
    }
    # impute mean ignores the null: (40 + 50 + 45) / 3 = 45
    assert steps["bill_length_mm"][0] == {"impute": {"strategy": "mean", "value": 45.0}}
    # standardize is fitted on the imputed values [40, 45, 50, 45]: population std
    imputed = np.array([40.0, 45.0, 50.0, 45.0])
    assert steps["bill_length_mm"][1] == {
        "standardize": {"mean": 45.0, "std": float(np.sqrt(((imputed - 45.0) ** 2).mean()))}
    }
    # the null sex is fitted as its default
    assert steps["sex"][0]["vocabulary"]["values"] == ["f", "m", "unknown"]


def test_fit_strategies_and_counts() -> None:
    rows = {"x": [1.0, 2.0, 2.0, 10.0, None, 3.0]}
    for strategy, value in (("mean", 3.6), ("median", 2.0), ("most_frequent", 2.0)):
        spec = one("float", [{"impute": {"strategy": strategy}}], nullable=True).fit(rows)
        assert spec.features[0].steps[0].value == pytest.approx(value)
    spec = one("float", [{"minmax": {}}], nullable=True).fit(rows)
    assert spec.to_dict()["features"][0]["steps"] == [{"minmax": {"min": 1.0, "max": 10.0}}]
    spec = one("float", [{"bucketize": {"quantiles": 3}}]).fit({"x": np.arange(1.0, 10.0)})
    # np.quantile's linear interpolation at 1/3 and 2/3 of [1..9]
    assert spec.features[0].steps[0].boundaries == pytest.approx((11 / 3, 19 / 3))
    words = ["b", "a", "c", "a", "b", "d", "a", "c", "e"]  # a:3 b:2 c:2 d:1 e:1
    vocab = one("string", [{"vocabulary": {"max_size": 3}}]).fit({"x": words})
    assert vocab.features[0].steps[0].values == ("a", "b", "c")
    vocab = one("string", [{"vocabulary": {"min_count": 2}}]).fit({"x": words})
    assert vocab.features[0].steps[0].values == ("a", "b", "c")
    flag = one("bool", [{"impute": {"strategy": "most_frequent"}}], nullable=True)
    assert flag.fit({"x": [True, None, True, False]}).to_dict()["features"][0]["steps"] == [
        {"impute": {"strategy": "most_frequent", "value": True}}
    ]


def test_fit_keeps_given_parameters_and_refuses_what_it_cannot_fit() -> None:
    spec = one("float", [{"standardize": {"mean": 1.0, "std": 2.0}}])
    assert spec.fit({"x": [5.0, 6.0]}) == spec
    with pytest.raises(
        SpecError,
        match=r"feature 'x' step 1 \(standardize\): the training values are all 3 \(std 0\)",
    ):
        one("float", [{"standardize": {}}]).fit({"x": [3.0, 3.0]})
    with pytest.raises(
        SpecError, match=r"feature 'x' step 1 \(minmax\): no non-null training values"
    ):
        one("float", [{"minmax": {}}], nullable=True).fit({"x": [None, math.nan]})
    with pytest.raises(SpecError, match=r"\(vocabulary\): no value is seen 3x"):
        one("string", [{"vocabulary": {"min_count": 3}}]).fit({"x": ["a", "a", "b"]})
    # a fitted onehot size that the vocabulary does not produce
    with pytest.raises(SpecError, match="size 2 does not match the 3 indexes"):
        one("string", [{"vocabulary": {}}, {"onehot": {"size": 2}}]).fit({"x": ["a", "b", "c"]})


def test_fit_leaves_error_records_out() -> None:
    spec = spec_of(
        [{"name": "x", "type": "float", "nullable": True}, {"name": "n", "type": "int"}],
        [
            {"input": "x", "steps": [{"impute": {"strategy": "mean"}}, {"standardize": {}}]},
            {"input": "x", "name": "lx", "steps": [{"log1p": {}}, {"standardize": {}}]},
            {"input": "n"},
        ],
    )
    rows = {"x": [1.0, 3.0, 1000.0, -5.0, 2.0], "n": [1, 2, 2.5, 4, 5]}  # row 2: n is no int
    fitted = spec.fit(rows).to_dict()["features"]
    # impute and standardize see 1, 3, -5, 2 (the error record's 1000 is left out)
    x = np.array([1.0, 3.0, -5.0, 2.0])
    assert fitted[0]["steps"][0]["impute"]["value"] == x.mean()
    assert fitted[0]["steps"][1]["standardize"] == {"mean": x.mean(), "std": x.std()}
    # -5 fails log1p: the standardize after it is fitted on the other three
    lx = np.log1p([1.0, 3.0, 2.0])
    assert fitted[1]["steps"][1]["standardize"] == {"mean": lx.mean(), "std": lx.std()}


# -- transform: numerics ------------------------------------------------------------------------


def f32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def test_standardize_divides_in_float64_then_rounds_once() -> None:
    mean, std = 43.92, 5.46
    x = np.array([39.1, 43.92, 59.6, 0.1, 1e6])
    spec = one("float", [{"standardize": {"mean": mean, "std": std}}])
    got = spec.transform({"x": x}).matrix[:, 0]
    assert got.tobytes() == f32((x - mean) / std).tobytes()
    # not a multiplication by the reciprocal, which rounds differently for some of these
    assert got.tobytes() == np.array([(v - mean) / std for v in x], dtype=np.float32).tobytes()


def test_step_numerics_by_hand() -> None:
    spec = spec_of(
        [
            {"name": "x", "type": "float"},
            {"name": "n", "type": "int"},
            {"name": "b", "type": "bool"},
        ],
        [
            {"input": "x", "name": "clip", "steps": [{"clip": {"min": -1, "max": 2}}]},
            {"input": "x", "name": "log", "steps": [{"clip": {"min": 0}}, {"log1p": {}}]},
            {"input": "x", "name": "mm", "steps": [{"minmax": {"min": -4, "max": 6}}]},
            {"input": "n", "name": "bucket", "steps": [{"bucketize": {"boundaries": [0, 10]}}]},
            {
                "input": "n",
                "name": "oh",
                "steps": [{"bucketize": {"boundaries": [0, 10]}}, {"onehot": {}}],
            },
            {"input": "b"},
        ],
    )
    x = [-3.0, 0.5, 5.0]
    got = spec.transform({"x": x, "n": [-1, 0, 10], "b": [True, False, True]})
    assert got.errors == {}
    assert got.names == ("clip", "log", "mm", "bucket", "oh#0", "oh#1", "oh#2", "b")
    expected = [
        [-1.0, math.log1p(0.0), (-3.0 + 4) / 10, 0, 1, 0, 0, 1],
        [0.5, math.log1p(0.5), (0.5 + 4) / 10, 1, 0, 1, 0, 0],
        [2.0, math.log1p(5.0), (5.0 + 4) / 10, 2, 0, 0, 1, 1],  # a boundary goes up
    ]
    assert got.matrix.tobytes() == f32(expected).tobytes()


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("2024-02-29T13:45:59.999Z", (2024, 2, 29, 3, 13, 45, 60)),
        ("1970-01-01T00:00:00Z", (1970, 1, 1, 3, 0, 0, 1)),
        ("1969-12-31T23:59:59.999Z", (1969, 12, 31, 2, 23, 59, 365)),
        ("2000-12-31T00:00:00Z", (2000, 12, 31, 6, 0, 0, 366)),
        ("1600-03-01T06:07:00Z", (1600, 3, 1, 2, 6, 7, 61)),
    ],
)
def test_dateparts(text: str, parts: tuple[int, ...]) -> None:
    names = ("year", "month", "day", "weekday", "hour", "minute", "dayofyear")
    spec = spec_of(
        [{"name": "t", "type": "timestamp"}],
        [
            {"input": "t", "name": p, "steps": [{"datepart": {"part": p}}]}
            for p in (*names, "epoch_days")
        ],
    )
    got = spec.transform([{"t": text}])
    assert got.errors == {}
    assert tuple(int(v) for v in got.matrix[0, :-1]) == parts
    ms = (
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    ) / dt.timedelta(milliseconds=1)
    assert got.matrix[0, -1] == np.float32(ms / 86_400_000)


def test_dateparts_agree_with_the_calendar() -> None:
    rng = np.random.default_rng(7)
    ms = np.floor(rng.uniform(-5e12, 5e12, 2000))  # about 1811..2128
    ms = np.concatenate([ms, [0.0, -1.0, 951782400000.0, 951868799999.0]])
    epoch = dt.datetime(1970, 1, 1)
    dates = [epoch + dt.timedelta(milliseconds=float(v)) for v in ms]
    for part, want in (
        ("year", [d.year for d in dates]),
        ("month", [d.month for d in dates]),
        ("day", [d.day for d in dates]),
        ("weekday", [d.weekday() for d in dates]),
        ("hour", [d.hour for d in dates]),
        ("minute", [d.minute for d in dates]),
        ("dayofyear", [d.timetuple().tm_yday for d in dates]),
    ):
        assert datepart(ms, part).tolist() == [float(w) for w in want], part


# -- typing, nulls, defaults, errors ---------------------------------------------------------------


def test_error_records_name_the_input_and_the_first_error_wins() -> None:
    spec = fitted()
    records = [
        {"island": "Dream", "bill_length_mm": 1e300, "sex": "m", "year": 2007},
        {"island": "Dream", "bill_length_mm": 40.0, "sex": "m", "year": 3.5},
        {"island": "Dream", "bill_length_mm": 40.0, "sex": "m"},
        {"island": "Dream", "bill_length_mm": 40.0, "sex": "x", "year": 2007},
        {"island": "Dream", "bill_length_mm": float("inf"), "sex": "m", "year": "2007"},
        {"island": 7, "bill_length_mm": "long", "sex": "m", "year": 2007},
        {"island": "Dream", "bill_length_mm": 40.0, "sex": "m", "year": 2007, "observed": "soon"},
    ]
    got = spec.transform(records, derive=derive_ratio)
    assert got.errors == {
        0: "input 'bill_length_mm' makes feature 'bill_length_mm' overflow float32",
        1: "input 'year' is 3.5, not an integer",
        2: "input 'year' is null and not nullable",
        3: "input 'sex' value 'x' is not in the vocabulary",
        4: "input 'bill_length_mm' is inf",
        5: "input 'island' is int, not a string",
        6: "input 'observed' is 'soon', not an ISO-8601 time stamp",
    }
    assert not got.matrix.any()  # error rows are zeros
    assert got.ok.tolist() == [False] * 7
    log = one("float", [{"log1p": {}}]).transform({"x": [-2.0, -1.0, -0.5]})
    assert log.errors == {
        0: "input 'x' is -2: log1p needs x > -1",
        1: "input 'x' is -1: log1p needs x > -1",
    }
    assert log.matrix[2, 0] == np.float32(math.log1p(-0.5))


def test_nulls_defaults_impute_and_oov() -> None:
    spec = fitted()
    derive = derive_ratio
    got = spec.transform(
        [
            {"island": "Mars", "bill_length_mm": None, "sex": None, "year": 2009.0},
            {"island": "Dream", "bill_length_mm": 45.0, "sex": "f", "year": 2008, "observed": 0},
        ],
        derive=derive,
    )
    assert got.errors == {0: "input 'bill_ratio' is null and not nullable"}
    row = dict(zip(got.names, got.matrix[1].tolist(), strict=True))
    assert row["island=Dream"] == 1 and row["island=<oov>"] == 0
    assert row["bill_length_mm"] == 0.0 and row["sex=f"] == 1
    assert row["year"] == 1 and row["observed.month"] == 1
    # with the derived input nullable and imputed, the first row goes through: imputes everywhere
    d = fitted().to_dict()
    d["inputs"][5]["nullable"] = True
    d["features"][5]["steps"].insert(0, {"impute": {"value": 1.5}})
    got = Spec.from_dict(d).transform(
        [{"island": "Mars", "bill_length_mm": None, "sex": None, "year": 2009.0}], derive=derive
    )
    assert got.errors == {}
    row = dict(zip(got.names, got.matrix[0].tolist(), strict=True))
    assert row["island=<oov>"] == 1
    assert row["bill_length_mm"] == 0.0  # imputed with the mean, then standardized
    assert row["sex=unknown"] == 1  # the default
    assert row["observed.month"] == 1  # imputed with 0 ms: January 1970
    assert row["bill_ratio"] == np.float32(math.log1p(1.5))
    # a nullable input without impute: the null reaches the end of its block
    spec = one("float", [{"clip": {"min": 0}}], nullable=True)
    assert spec.transform([{"x": None}]).errors == {
        0: "input 'x' is null and has no default or impute"
    }


TS_MS = 1_709_214_300_000.0  # 2024-02-29T13:45:00Z


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 2, 29, 13, 45),
        dt.datetime(2024, 2, 29, 15, 45, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        np.datetime64("2024-02-29T13:45:00", "s"),
        np.datetime64("2024-02-29T13:45:00.000000000", "ns"),
        pd.Timestamp("2024-02-29T13:45"),
        pd.Timestamp("2024-02-29T08:45", tz="America/New_York"),
        "2024-02-29T13:45:00Z",
        "2024-02-29T13:45:00.000+00:00",
        "2024-02-29T14:45+01:00",
        "2024-02-29 13:45",
        int(TS_MS),
        TS_MS,
        np.int64(int(TS_MS)),
    ],
    ids=repr,
)
def test_timestamp_forms(value: Any) -> None:
    spec = one("timestamp", [{"datepart": {"part": "minute"}}])
    got = spec.transform([{"x": value}])
    assert got.errors == {}
    assert got.matrix[0, 0] == 45
    assert spec.records_as_json([{"x": value}]) == [{"x": "2024-02-29T13:45:00.000Z"}]


def test_timestamp_nulls_and_columns() -> None:
    spec = one(
        "timestamp",
        [{"impute": {"value": "2024-02-29T13:45Z"}}, {"datepart": {"part": "day"}}],
        nullable=True,
    )
    col = pd.Series(pd.to_datetime(["2024-01-05", None]))
    for column in (col, col.to_numpy(), [None, pd.NaT, np.datetime64("NaT"), math.nan]):
        got = spec.transform({"x": column})
        assert got.errors == {}
        assert got.matrix[-1, 0] == 29
    assert spec.transform({"x": col}).matrix[0, 0] == 5
    with pytest.raises(SpecError, match="input 'x': default is 'yesterday', not an ISO-8601"):
        spec_of([{"name": "x", "type": "timestamp", "default": "yesterday"}], [])


def test_typing_rules() -> None:
    spec = spec_of(
        [
            {"name": "f", "type": "float"},
            {"name": "i", "type": "int"},
            {"name": "b", "type": "bool"},
            {"name": "s", "type": "string"},
        ],
        [
            {"input": "f"},
            {"input": "i"},
            {"input": "b"},
            {"input": "s", "steps": [{"vocabulary": {"values": ["a"], "oov": "bucket"}}]},
        ],
    )
    good = {"f": 1, "i": 2.0, "b": np.bool_(True), "s": "zz"}
    assert spec.transform([good]).matrix.tolist() == [[1.0, 2.0, 1.0, 1.0]]
    bad = [
        ({"f": True}, "input 'f' is bool, not a number"),
        ({"f": "1.5"}, "input 'f' is str, not a number"),
        ({"f": -math.inf}, "input 'f' is -inf"),
        ({"i": 2.5}, "input 'i' is 2.5, not an integer"),
        ({"b": 1}, "input 'b' is int, not a boolean"),
        ({"s": b"a"}, "input 's' is bytes, not a string"),
        ({"s": None}, "input 's' is null and not nullable"),
    ]
    for change, message in bad:
        assert spec.transform([{**good, **change}]).errors == {0: message}


def test_records_forms_agree() -> None:
    spec = fitted()
    records = [
        {
            "island": "Dream",
            "bill_length_mm": 40.0,
            "sex": "m",
            "year": 2007,
            "observed": "2024-01-01T00:00:00Z",
        },
        {"island": "Biscoe", "bill_length_mm": None, "sex": None, "year": 2008, "observed": None},
    ]
    df = pd.DataFrame(records)
    forms = [
        records,
        {k: [r[k] for r in records] for k in records[0]},
        df,
        pa.Table.from_pandas(df),
        df.assign(observed=pd.to_datetime(df["observed"], utc=True)),
    ]
    results = [spec.transform(f, derive=derive_filled) for f in forms]
    for r in results:
        assert r.errors == results[0].errors == {}
        assert r.matrix.tobytes() == results[0].matrix.tobytes()
    as_json = [
        {"island": "Biscoe", "bill_length_mm": None, "sex": None, "year": 2008, "observed": None},
        {
            "island": "Dream",
            "bill_length_mm": 40.0,
            "sex": "m",
            "year": 2007,
            "observed": "2024-01-01T00:00:00.000Z",
        },
    ]
    for f in forms:
        assert spec.records_as_json(f, [1, 0]) == as_json


def test_derive() -> None:
    spec = fitted()
    rec = [{"island": "Dream", "bill_length_mm": 40.0, "year": 2007}]
    seen: dict[str, Any] = {}

    def derive(cols: dict[str, Any]) -> dict[str, Any]:
        seen.update(cols)
        return {"bill_ratio": [4.0]}

    got = spec.transform(rec, derive=derive)
    assert got.errors == {}
    assert got.matrix[0, -1] == np.float32(math.log1p(4.0))
    assert seen["bill_length_mm"].dtype == np.float64
    assert np.isnan(seen["observed"][0]) and seen["sex"][0] is None  # nulls, before defaults
    # without derive=, a column of that name will do
    assert spec.transform([{**rec[0], "bill_ratio": 4.0}]).matrix.tobytes() == got.matrix.tobytes()
    with pytest.raises(SpecError, match="derived input 'bill_ratio' needs derive="):
        spec.transform(rec)
    with pytest.raises(
        SpecError, match="derive= returned no column for derived input 'bill_ratio'"
    ):
        spec.transform(rec, derive=lambda c: {})
    with pytest.raises(SpecError, match="derive= returned 'ratio', which is not an input"):
        spec.transform(rec, derive=lambda c: {"bill_ratio": [1.0], "ratio": [1.0]})
    with pytest.raises(SpecError, match="input 'bill_ratio': column 'bill_ratio' has 2 values"):
        spec.transform(rec, derive=lambda c: {"bill_ratio": [1.0, 2.0]})
    # a derivation may replace a raw input (text normalisation)
    got = spec.transform(
        [{**rec[0], "island": " dream "}],
        derive=lambda c: {"bill_ratio": [4.0], "island": [s.strip().title() for s in c["island"]]},
    )
    assert dict(zip(got.names, got.matrix[0].tolist(), strict=True))["island=Dream"] == 1


def test_records_refused_as_a_whole() -> None:
    spec = fitted()
    with pytest.raises(SpecError, match=r"for one record, pass \[record\]"):
        spec.transform({"island": "Dream"})
    with pytest.raises(SpecError, match="record 1: expected a mapping"):
        spec.transform([{"island": "Dream"}, ["Dream"]])
    with pytest.raises(SpecError, match="records must be a list of dicts"):
        spec.transform(42)


# -- names, round trip -------------------------------------------------------------------------


def test_feature_names_and_columns() -> None:
    spec = fitted()
    assert spec.feature_names() == [
        "island=Dream",
        "island=Biscoe",
        "island=Torgersen",
        "island=<oov>",
        "bill_length_mm",
        "sex=f",
        "sex=m",
        "sex=unknown",
        "year",
        "observed.month",
        "bill_ratio",
    ]
    assert spec.width() == 11
    assert spec.columns()[0] == (
        "island",
        ("island=Dream", "island=Biscoe", "island=Torgersen", "island=<oov>"),
    )
    assert [i.name for i in spec.raw_inputs] == [
        "island",
        "bill_length_mm",
        "sex",
        "year",
        "observed",
    ]
    assert spec.transform([], derive=derive_ratio).matrix.shape == (0, 11)


def test_round_trip(tmp_path: Path) -> None:
    spec = fitted()
    d = spec.to_dict()
    assert Spec.from_dict(json.loads(json.dumps(d))) == spec
    assert Spec.from_dict(d).to_dict() == d
    unfitted = penguins()
    assert Spec.from_dict(unfitted).to_dict() == unfitted
    assert Spec.load(spec.save(tmp_path / "spec.json")) == spec
    with pytest.raises(SpecError, match="cannot read the spec"):
        Spec.load(tmp_path / "missing.json")
    pinned = dict(unfitted, kernel="dense-js")  # what the build's --kernel sets
    assert Spec.from_dict(pinned).to_dict() == pinned
    with pytest.raises(SpecError, match="kernel must be one of auto, dense-unrolled"):
        Spec.from_dict(dict(unfitted, kernel="gpu"))


# -- output kinds ------------------------------------------------------------------------------


def test_output_multiclass() -> None:
    out = OutputSpec.from_dict({"kind": "multiclass", "labels": ["a", "b", "c"], "top_k": 2})
    assert (out.width(), out.names()) == (3, ["a", "b", "c"])
    scores = f32([[0.25, 0.5, 0.25]])
    assert out.postprocess(scores).tobytes() == scores.tobytes()
    assert out.decode(scores) == [
        {
            "label": "b",
            "score": 0.5,
            "probabilities": {"a": 0.25, "b": 0.5, "c": 0.25},
            "top_k": [["b", 0.5], ["a", 0.25]],
        }
    ]


def test_output_binary() -> None:
    out = OutputSpec.from_dict({"kind": "binary", "labels": ["no", "yes"], "threshold": 0.75})
    assert (out.width(), out.names()) == (1, ["yes"])
    assert out.decode(f32([[0.5], [0.75]])) == [
        {"label": "no", "probability": 0.5},
        {"label": "yes", "probability": 0.75},
    ]


def test_output_regression_scale() -> None:
    out = OutputSpec.from_dict(
        {
            "kind": "regression",
            "names": ["mass", "age"],
            "scale": {"mean": [4200, 5], "std": [800, 2]},
        }
    )
    assert (out.width(), out.names()) == (2, ["mass", "age"])
    raw = f32([[0.5, -1.0]])
    final = out.postprocess(raw)
    assert final.tolist() == [[4600.0, 3.0]]
    assert out.decode(final) == [{"values": {"mass": 4600.0, "age": 3.0}}]
    single = OutputSpec.from_dict({"kind": "regression", "scale": {"mean": 1.5, "std": 0.1}})
    assert single.names() == ["value"]
    # float64 arithmetic on the float32 output, then float32
    want = np.float32(np.float64(np.float32(0.3)) * 0.1 + 1.5)
    assert single.postprocess(f32([[0.3]]))[0, 0] == want
    assert single.decode(f32([[2.0]])) == [{"value": 2.0}]
    with pytest.raises(SpecError, match=r"needs \[n, 2\] \(mass, age\)"):
        out.postprocess(f32([[1.0]]))


def test_output_multi() -> None:
    out = OutputSpec.from_dict(
        {
            "kind": "multi",
            "heads": [
                {"name": "species", "kind": "multiclass", "labels": ["a", "b"]},
                {"name": "mass", "kind": "regression", "scale": {"mean": 10, "std": 2}},
                {"name": "male", "kind": "binary", "labels": ["f", "m"]},
            ],
        }
    )
    assert out.names() == ["species.a", "species.b", "mass.value", "male.m"]
    final = out.postprocess(f32([[0.25, 0.75, 1.0, 0.5]]))
    assert final.tolist() == [[0.25, 0.75, 12.0, 0.5]]
    assert out.decode(final) == [
        {
            "species": {"label": "b", "score": 0.75, "probabilities": {"a": 0.25, "b": 0.75}},
            "mass": {"value": 12.0},
            "male": {"label": "m", "probability": 0.5},
        }
    ]
    assert OutputSpec.from_dict(out.to_dict()) == out


# -- messy records never raise ------------------------------------------------------------------

MESSY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["Dream", "Biscoe", "2024-01-01", "2024-02-29T10:00:00Z", "nan", "", "\udcff"]),
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    st.just(np.datetime64("NaT")),
    st.just(pd.NaT),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
FIELDS = ["island", "bill_length_mm", "sex", "year", "observed", "bill_ratio"]
RECORD = st.dictionaries(st.sampled_from(FIELDS), MESSY, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RECORD, max_size=12))
def test_messy_records_become_error_rows(records: list[dict[str, Any]]) -> None:
    spec = fitted()

    def derive(cols: dict[str, Any]) -> dict[str, Any]:
        with np.errstate(all="ignore"):
            return {"bill_ratio": cols["bill_length_mm"] / (cols["year"] - 2008.0)}

    got = spec.transform(records, derive=derive)
    assert isinstance(got, Features)
    assert got.matrix.shape == (len(records), spec.width()) and got.matrix.dtype == np.float32
    assert np.isfinite(got.matrix).all()
    for r, message in got.errors.items():
        assert 0 <= r < len(records)
        assert message.startswith("input '") and "\n" not in message
        assert not got.matrix[r].any()
    json.dumps(spec.records_as_json(records))  # always JSON-able
