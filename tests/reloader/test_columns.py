"""The host's typed path (contract 2) against a hand-written bundle: every input type, nulls,
bad values, long strings, several chunks, extras, and the same results from lists, numpy, pandas
and arrow columns."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from reloader.cli import describe_interface
from reloader.errors import InputError
from reloader.runtime import ModelRuntime

TOY = Path(__file__).resolve().parents[1] / "support" / "typed_toy.js"
MARCH = dt.datetime(2024, 3, 5, 10, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def toy():
    with ModelRuntime(TOY.read_bytes()) as rt:
        yield rt


def expected(x, n, flag, word, when_month):
    return x + n + 10 * flag + len(word or "") + when_month


def test_meta_and_self_test(toy: ModelRuntime) -> None:
    assert toy.meta.contract == 2 and toy.meta.inputs == ("x", "n", "flag", "word", "when")
    assert toy.outputs.kind == "regression" and toy.outputs.names == ("score",)
    assert set(toy.self_test_deltas) == {"fast", "json"}
    lines = describe_interface(toy.meta)
    assert lines[0].startswith("inputs     x: float, nullable; n: int; flag: bool;")
    assert "len: int, derived by the prepare hook" in lines[0]
    assert lines[1] == "features   5: x, n, flag, len, when.month"
    assert lines[2].startswith("output     regression")
    assert lines[3] == "extras     double: float, upper: string"
    with pytest.raises(InputError, match=r"takes typed inputs .*use predict_columns"):
        toy.predict(np.zeros((1, 5)))


def test_bad_values_become_error_rows_naming_the_input(toy: ModelRuntime) -> None:
    columns = {
        "x": [1.0, "2", 3.0, None, 5.0, float("inf"), 7.0, 8.0],
        "n": [1, 1, 3.5, 1, 1, 1, True, 2],
        "flag": [True, False, False, False, "yes", False, False, np.bool_(True)],
        "word": ["a", "b", "c", "d", "e", "f", "bad", 7],
        "when": [MARCH, None, None, None, None, None, None, None],
    }
    result = toy.predict_columns(columns)
    assert result.ok.tolist() == [True] + [False] * 7
    assert result.errors == {
        1: "input 'x' is str, not a number",
        2: "input 'n' is 3.5, not an integer",
        3: "input 'x' is null and has no default or impute",
        4: "input 'flag' is str, not a boolean",
        5: "input 'x' is inf",
        6: "input 'n' is bool, not an integer",
        7: "input 'word' is int, not a string",
    }
    assert result.scores[0, 0] == pytest.approx(expected(1, 1, 1, "a", 3))
    assert (result.scores[1:] == 0).all()
    assert result.extras["double"][0] == pytest.approx(2 * expected(1, 1, 1, "a", 3))
    assert result.extras["upper"][0] == "A"


def test_every_column_kind_gives_the_same_results(toy: ModelRuntime) -> None:
    rng = np.random.default_rng(7)
    n = 300  # several chunks of maxBatch 64
    x = rng.normal(size=n)
    x[::11] = np.nan
    counts = rng.integers(-5, 5, size=n)
    flags = rng.random(n) < 0.5
    words = [None if i % 7 == 0 else "w" * (i % 40) + "é" for i in range(n)]  # > 8 bytes: reserve
    when = np.array("2024-01-01", dtype="datetime64[ms]") + rng.integers(0, 365, size=n).astype(
        "timedelta64[D]"
    )
    when[::5] = np.datetime64("NaT")
    as_lists = {
        "x": [None if np.isnan(v) else float(v) for v in x],
        "n": counts.tolist(),
        "flag": flags.tolist(),
        "word": words,
        "when": [None if np.isnat(t) else t.astype(dt.datetime).isoformat() + "Z" for t in when],
    }
    as_numpy = {
        "x": x,
        "n": counts,
        "flag": flags,
        "word": np.array(words, dtype=object),
        "when": when,
    }
    frame = pd.DataFrame(
        {
            "x": pd.array([None if np.isnan(v) else v for v in x], dtype="Float64"),
            "n": pd.array(counts, dtype="Int64"),
            "flag": flags,
            "word": words,
            "when": pd.to_datetime(when),
        }
    )
    table = pa.table(
        {
            "x": pa.array(x, from_pandas=True),
            "n": pa.array(counts),
            "flag": pa.array(flags),
            "word": pa.array(["pad", *words], type=pa.string()).slice(1),  # an offset array
            "when": pa.array(when),
        }
    )
    results = [
        toy.predict_columns(as_lists),
        toy.predict_columns(as_numpy),
        toy.predict_columns({c: frame[c] for c in frame.columns}),
        toy.predict_columns({c: table.column(c) for c in table.column_names}),
    ]
    months = [0 if np.isnat(t) else t.astype(dt.datetime).month for t in when]
    want = np.array(
        [
            0.0 if np.isnan(x[i]) else expected(x[i], counts[i], flags[i], words[i], months[i])
            for i in range(n)
        ],
        dtype=np.float32,
    )
    for result in results:
        assert set(result.errors) == set(np.flatnonzero(np.isnan(x)).tolist())
        np.testing.assert_array_equal(result.scores[:, 0], want)
        assert result.extras["upper"] == [
            None if (np.isnan(x[i]) or words[i] is None) else words[i].upper() for i in range(n)
        ]


def test_predict_dicts(toy: ModelRuntime) -> None:
    out = toy.predict_dicts(
        [{"x": 1.0, "n": 2, "flag": False, "word": "abc", "when": "2024-12-01T00:00:00"}, {"n": 1}]
    )
    assert out[0] == {"value": 1 + 2 + 3 + 12, "double": 36.0, "upper": "ABC"}
    assert out[1] == {"error": "input 'x' is null and has no default or impute"}
    with pytest.raises(InputError, match="record 0: expected a mapping"):
        toy.predict_dicts([[1, 2]])  # type: ignore[list-item]
