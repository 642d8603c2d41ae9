"""Fuzzing the record codec (no Flink): arbitrary lines, arbitrary column values, NaN/inf and
out-of-range features, missing features, huge batches. Every input row gives exactly one strict
JSON line: a prediction equal to the reference for a good row, an error naming the reason for a
bad one. Nothing raises."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from job.scoring import Batch, Scorer, parse_record
from tests.support.stores import reference_of


def _score(model: Any, batch: Batch) -> list[dict[str, Any]]:
    _, lines = Scorer().score(model.run, batch)
    assert len(lines) == batch.size
    return [json.loads(line, parse_constant=_no_constant) for line in lines]


def _no_constant(name: str) -> Any:
    raise AssertionError(f"not strict JSON: {name}")


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(st.one_of(st.text(max_size=60), st.binary(max_size=60).map(bytes)), max_size=20))
def test_arbitrary_lines_are_error_records(model: Any, lines: list[Any]) -> None:
    out = _score(model, Batch(records=[parse_record(line) for line in lines]))
    assert all("error" in rec and "label" not in rec for rec in out)


# Feature values a column may hold: numbers at and beyond float32's range, NaN, inf, and
# things that are not numbers at all.
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([3.4e38, 3.5e38, -3.5e38, 1e-45, 2**63, -(2**70)]),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.none(),
    st.booleans(),
    st.text(max_size=3),
)


@FUZZ
@given(st.data())
def test_arbitrary_columns_give_a_prediction_or_a_reason_per_row(
    model: Any, wine: Any, data: st.DataObject
) -> None:
    n = data.draw(st.integers(min_value=0, max_value=40))
    rows = np.arange(n) % len(wine.x)
    columns: dict[str, Any] = {"id": np.arange(n)}
    bad_rows: set[int] = set()
    for j, name in enumerate(wine.features):
        if data.draw(st.integers(0, 20)) == 0:
            bad_rows |= set(range(n))  # the column is missing: every row names it
            continue
        col: list[Any] = [float(wine.x[r, j]) for r in rows]
        for r in data.draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=3)) if n else ():
            v = data.draw(VALUES)
            col[r] = v
            finite32 = (
                isinstance(v, int | float)
                and not isinstance(v, bool)
                and math.isfinite(float(v))
                and abs(float(v)) <= 3.4028234663852886e38
            )
            if not finite32:
                bad_rows.add(r)
        columns[name] = data.draw(st.sampled_from([col, np.array(col, dtype=object)]))
    out = _score(model, Batch(columns=columns))
    reference = reference_of(wine, "v2")
    for r, rec in enumerate(out):
        assert rec["id"] == r
        untouched = all(
            name in columns and columns[name][r] == float(wine.x[rows[r], j])
            for j, name in enumerate(wine.features)
        )
        if r in bad_rows:
            assert "error" in rec and rec["error"].startswith("feature "), rec
        elif untouched:
            got = list(rec["probabilities"].values())
            np.testing.assert_allclose(got, reference[rows[r]], atol=1e-5)
        else:  # finite replacements: a prediction, or (overflowing the model) a reason
            assert ("label" in rec) != ("error" in rec), rec


def test_a_huge_batch_with_scattered_bad_rows(model: Any, wine: Any) -> None:
    """50,000 rows (12 calls into V8 at the bundle's 4,096-row maximum), 1% of them bad in
    some way: the good rows equal the reference, the bad ones are error records."""
    rng = np.random.default_rng(7)
    n = 50_000
    rows = np.arange(n) % len(wine.x)
    columns: dict[str, Any] = {"id": np.arange(n)}
    for j, name in enumerate(wine.features):
        columns[name] = wine.x[rows, j].astype(np.float64)
    bad = rng.choice(n, size=n // 100, replace=False)
    poison = [math.nan, math.inf, -math.inf, 1e39]
    for k, r in enumerate(bad):
        columns[wine.features[k % len(wine.features)]][r] = poison[k % len(poison)]
    out = _score(model, Batch(columns=columns))
    reference = reference_of(wine, "v2")
    bad_set = set(bad.tolist())
    for r, rec in enumerate(out):
        if r in bad_set:
            assert "error" in rec and "feature" in rec["error"], rec
        else:
            got = list(rec["probabilities"].values())
            np.testing.assert_allclose(got, reference[rows[r]], atol=1e-5)


def test_a_row_that_overflows_the_model_is_an_error_and_the_rest_is_predicted(
    model: Any, wine: Any
) -> None:
    """3e38 is a valid float32, but standardized and multiplied it overflows the network to
    NaN/inf; before, that failed the whole batch (BundleOutputError), now that row only."""
    columns: dict[str, Any] = {"id": np.arange(4)}
    for j, name in enumerate(wine.features):
        columns[name] = wine.x[:4, j].astype(np.float64)
    columns[wine.features[0]][2] = 3e38
    out = _score(model, Batch(columns=columns))
    assert "not finite" in out[2]["error"]
    reference = reference_of(wine, "v2")
    for r in (0, 1, 3):
        np.testing.assert_allclose(list(out[r]["probabilities"].values()), reference[r], atol=1e-5)
