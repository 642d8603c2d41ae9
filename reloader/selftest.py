"""The self-test's and the skew check's arithmetic, for both contracts (no V8 here).

`ModelRuntime` runs the bundle's paths; this module checks what a self-test spec must hold and
compares each path's outputs with the training framework's (`compare`), and the bundle's features
of its sample records with the training pipeline's (`skew`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from reloader.errors import BundleError, BundleOutputError, SelfTestError

F64 = npt.NDArray[np.float64]
_Cases = TypeVar("_Cases", bound=Sized)


def matrix_spec(spec: Any, n_in: int, n_out: int) -> tuple[F64, F64, float]:
    """Contract 1's `{inputs, expected, tolerance}` as arrays, or a BundleError."""

    def rows(value: Any) -> F64:
        inputs = np.asarray(value, dtype=np.float64)
        if inputs.ndim != 2 or inputs.shape[1] != n_in:
            raise ValueError("shapes")
        return inputs

    return _cases(
        spec,
        "inputs",
        rows,
        n_out,
        "{inputs: [[...]], expected: [[...]], tolerance > 0} with one row per case, matching "
        "meta.inputs and meta.outputs",
    )


def records_spec(spec: Any, n_out: int) -> tuple[list[dict[str, Any]], F64, float]:
    """Contract 2's `{records, expected, tolerance}`: (records, expected, tolerance)."""

    def records(value: Any) -> list[Mapping[str, Any]]:
        given = list(value)
        if not all(isinstance(r, Mapping) for r in given):
            raise ValueError("shapes")
        return given

    given, expected, tolerance = _cases(
        spec,
        "records",
        records,
        n_out,
        "{records: [{input: value}], expected: [[...]], tolerance > 0} with one row of "
        "meta.outputs per record",
    )
    return [dict(r) for r in given], expected, tolerance


def _cases(
    spec: Any, key: str, parse: Callable[[Any], _Cases], n_out: int, shape: str
) -> tuple[_Cases, F64, float]:
    """`parse(spec[key])` (ValueError or TypeError when it is not cases), with `expected` one row
    of `n_out` per case and `tolerance` > 0; else a BundleError: `ml.selfTest must be {shape}`."""
    try:
        if not isinstance(spec, Mapping):
            raise TypeError("no self-test")
        cases = parse(spec[key])
        expected = np.asarray(spec["expected"], dtype=np.float64)
        tolerance = float(spec["tolerance"])
        if len(cases) == 0 or expected.shape != (len(cases), n_out) or not tolerance > 0:
            raise ValueError("shapes")
    except (TypeError, KeyError, ValueError):
        raise BundleError(f"ml.selfTest must be {shape}", stage="selftest") from None
    return cases, expected, tolerance


def json_scores(results: Sequence[Any]) -> F64:
    """The `scores` of `ml.predict`'s results; an error record in a self-test is the bundle's."""
    try:
        for r in results:
            if isinstance(r, Mapping) and r.get("error"):
                raise ValueError(r["error"])
        return np.asarray([r["scores"] for r in results], dtype=np.float64)
    except (TypeError, KeyError, ValueError) as e:
        raise BundleOutputError(
            f"ml.predict results must be objects with a `scores` array ({e})", stage="selftest"
        ) from None


def compare(paths: Mapping[str, Any], expected: F64, tolerance: float) -> dict[str, float]:
    """Each path's largest difference from `expected`; `SelfTestError` naming the path and row
    of the first one past `tolerance` (a non-finite output is infinitely far)."""
    deltas: dict[str, float] = {}
    for path, got in paths.items():
        got = np.asarray(got, dtype=np.float64)
        if got.shape != expected.shape:
            raise SelfTestError(path=path, row=0, max_delta=float("inf"), tolerance=tolerance)
        delta = np.abs(got - expected)
        delta[~np.isfinite(delta)] = np.inf
        per_row = delta.max(axis=1)
        if not (per_row <= tolerance).all():
            row = int(np.argmax(per_row))
            raise SelfTestError(
                path=path, row=row, max_delta=float(per_row[row]), tolerance=tolerance
            )
        deltas[path] = float(per_row.max())
    return deltas


def skew(found: Mapping[str, Any]) -> dict[str, Any]:
    """Train/serve skew from `{samples: {names, features}, got: ml.features(...)}`: records,
    features, the largest relative difference (|a - b| / max(1, |b|), as the build checks it) and
    the feature it is in."""
    try:
        names = [str(v) for v in found["samples"]["names"]]
        want = np.asarray(found["samples"]["features"], dtype=np.float64)
        got = np.asarray(found["got"]["rows"], dtype=np.float64)
        if want.shape != got.shape or want.ndim != 2 or want.shape[1] != len(names):
            raise ValueError("shapes")
    except (TypeError, KeyError, ValueError):
        raise BundleError(
            "ml.samples / ml.features do not match: expected {names, features} and rows of "
            "the same shape",
            stage="selftest",
        ) from None
    delta = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    per_feature = delta.max(axis=0) if len(delta) else np.zeros(len(names))
    worst = int(np.argmax(per_feature)) if len(names) else 0
    return {
        "records": int(want.shape[0]),
        "features": len(names),
        "max_delta": float(per_feature.max()) if len(names) else 0.0,
        "worst_feature": names[worst] if names else None,
        "errors": len(found["got"].get("errors") or ()),
    }
