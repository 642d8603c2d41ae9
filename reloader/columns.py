"""Typed columns into a contract-2 bundle's buffers (docs/model-spec.md, "Contract 2").

The host hands V8 one batch per call in the Arrow layout: every non-string input as float64 values
plus a validity byte per row, every string input as UTF-8 bytes plus int32 offsets. This module
turns what a job has (numpy arrays, pandas Series, pyarrow arrays, lists of Python values) into
that layout, with the type rules of the spec. A value that does not fit its input's type makes
its row an error record (the host marks it, the bundle skips it); it never fails the batch.

Fast paths (measured in bench/preprocess.py): numeric numpy/pandas/arrow columns are converted
with whole-array numpy operations; arrow string arrays hand their offsets and bytes over as they
are; lists fall back to a per-value loop that also says what is wrong with each bad value.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reloader.errors import InputError

NUMERIC_TYPES = ("float", "int", "bool", "timestamp")
TYPES = (*NUMERIC_TYPES, "string")

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

# status byte per row (the contract): 0 use the row, 1 refused by the host, 2 refused by the bundle
OK, HOST_ERROR, BUNDLE_ERROR = 0, 1, 2


@dataclass(frozen=True)
class Field:
    """One raw input of a contract-2 bundle (`ml.meta.schema.inputs`)."""

    name: str
    type: str
    nullable: bool = False

    @property
    def is_string(self) -> bool:
        return self.type == "string"


def fields_from_schema(schema: Mapping[str, Any]) -> tuple[Field, ...]:
    """The raw (non-derived) inputs, in `meta.inputs` order."""
    derived = set(schema.get("derived") or ())
    return tuple(
        Field(str(f["name"]), str(f["type"]), bool(f.get("nullable", False)))
        for f in schema["inputs"]
        if f["name"] not in derived and not f.get("derived")
    )


@dataclass
class Encoded:
    """One column in the buffer layout: float64 values or UTF-8 bytes + offsets, and validity."""

    valid: U8
    values: F64 | None = None
    offsets: npt.NDArray[np.int32] | None = None
    data: bytes | memoryview | npt.NDArray[np.uint8] | None = None


Errors = dict[int, str]


def encode_column(field: Field, column: Any, n: int, errors: Errors) -> Encoded:
    """`column` (n values) in `field`'s layout; rows whose value does not fit go into `errors`
    (row -> message; the first error of a row wins)."""
    if column is None:
        valid = np.zeros(n, dtype=np.uint8)
        if field.is_string:
            return Encoded(valid, offsets=np.zeros(n + 1, dtype=np.int32), data=b"")
        return Encoded(valid, values=np.zeros(n, dtype=np.float64))
    if _length(column) != n:
        raise ValueError(f"column {field.name!r} has {_length(column)} values, expected {n}")
    if field.is_string:
        return _strings(field, column, n, errors)
    return _numbers(field, column, n, errors)


def _length(column: Any) -> int:
    return len(column)


# -- numbers, booleans, timestamps ----------------------------------------------------------------


def _numbers(field: Field, column: Any, n: int, errors: Errors) -> Encoded:
    arr = _as_numpy(column)
    if arr is not None:
        fast = _numeric_array(field, arr, errors)
        if fast is not None:
            return fast
    values = np.zeros(n, dtype=np.float64)
    valid = np.zeros(n, dtype=np.uint8)
    convert = _CONVERT[field.type]
    for r, v in enumerate(column if arr is None or arr.dtype != object else arr):
        if _is_null(v):
            continue
        x = convert(v)
        if isinstance(x, str):
            errors.setdefault(r, f"input {field.name!r} {x}")
        else:
            values[r] = x
            valid[r] = 1
    return Encoded(valid, values=values)


def _as_numpy(column: Any) -> np.ndarray[Any, Any] | None:
    """A numpy view of pandas/arrow/numpy columns (nulls as NaN/NaT where the dtype has them)."""
    if isinstance(column, np.ndarray):
        return column
    mod = type(column).__module__
    if mod.startswith("pandas"):
        dtype = getattr(column, "dtype", None)
        kind = getattr(dtype, "kind", "O")
        if getattr(column, "hasnans", False) is False and kind in "fiub":
            return np.asarray(column.to_numpy())
        if kind in "fiu":  # a nullable extension dtype (Int64, Float64) or NaN in floats
            return np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan))
        if kind == "M":
            return np.asarray(column.to_numpy(dtype="datetime64[ns]"))
        return np.asarray(column.to_numpy(dtype=object))
    if mod.startswith("pyarrow"):
        import pyarrow as pa

        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
            if arr.null_count:
                return np.asarray(arr.cast(pa.float64()).fill_null(math.nan).to_numpy())
            return np.asarray(arr.to_numpy())
        if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
            return np.asarray(arr.cast(pa.timestamp("us")).to_numpy(zero_copy_only=False))
        return np.asarray(arr.to_numpy(zero_copy_only=False))
    return None


def _numeric_array(field: Field, arr: np.ndarray[Any, Any], errors: Errors) -> Encoded | None:
    """Whole-array conversion, or None when the column needs the per-value path."""
    kind = arr.dtype.kind
    if arr.ndim != 1:
        raise ValueError(f"column {field.name!r} must be one-dimensional, got shape {arr.shape}")
    if field.type == "timestamp":
        if kind == "M":
            # Microseconds kept as a fraction of a millisecond, as for `datetime` values.
            us = arr.astype("datetime64[us]")
            valid = ~np.isnat(us)
            values = np.where(valid, us.view(np.int64), 0) / 1000.0
            return Encoded(valid.astype(np.uint8), values=values)
        if kind not in "fiu":
            return None
    elif field.type == "bool":
        if kind == "b":
            return Encoded(np.ones(len(arr), dtype=np.uint8), values=arr.astype(np.float64))
        return None
    elif kind not in "fiu":
        return None
    values = arr.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.all():
        # NaN is a null; an infinity is an error. Either way the slot is invalid and the bundle
        # never reads its value.
        for r in np.flatnonzero(np.isinf(values)):
            errors.setdefault(int(r), f"input {field.name!r} is {values[r]}")
    if field.type == "int" and kind == "f":
        for r in np.flatnonzero(finite & (values != np.floor(values))):
            errors.setdefault(int(r), f"input {field.name!r} is {values[r]!r}, not an integer")
    return Encoded(finite.view(np.uint8), values=values)


def _is_null(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    if isinstance(v, np.floating) and np.isnan(v):
        return True
    if isinstance(v, np.datetime64) and np.isnat(v):
        return True
    # pandas' NA and NaT, without importing pandas
    return type(v).__name__ in ("NAType", "NaTType")


def _float(v: Any) -> float | str:
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
        return f"is {type(v).__name__}, not a number"
    try:
        x = float(v)
    except OverflowError:
        return "is out of range"
    return x if math.isfinite(x) else f"is {x}"


def _int(v: Any) -> float | str:
    x = _float(v)
    if isinstance(x, float) and x != math.floor(x):
        return f"is {x!r}, not an integer"
    if isinstance(x, str) and "not a number" in x:
        return f"is {type(v).__name__}, not an integer"
    return x


def _bool(v: Any) -> float | str:
    if isinstance(v, bool | np.bool_):
        return 1.0 if v else 0.0
    return f"is {type(v).__name__}, not a boolean"


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _timestamp(v: Any) -> float | str:
    if isinstance(v, _dt.datetime):
        t = v if v.tzinfo is not None else v.replace(tzinfo=_dt.timezone.utc)
        return (t - _EPOCH) // _dt.timedelta(microseconds=1) / 1000.0
    if isinstance(v, _dt.date):
        return float((v - _EPOCH.date()).days * 86_400_000)
    if isinstance(v, np.datetime64):
        return float(v.astype("datetime64[us]").astype(np.int64)) / 1000.0
    if isinstance(v, str):
        text = v.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = _dt.datetime.fromisoformat(text)
        except ValueError:
            return f"is {v[:40]!r}, not an ISO-8601 time stamp"
        return _timestamp(parsed)
    x = _float(v)
    return x if isinstance(x, float) else f"is {type(v).__name__}, not a time stamp"


_CONVERT: dict[str, Callable[[Any], float | str]] = {
    "float": _float,
    "int": _int,
    "bool": _bool,
    "timestamp": _timestamp,
}


# -- strings --------------------------------------------------------------------------------------


def _strings(field: Field, column: Any, n: int, errors: Errors) -> Encoded:
    arrow = _arrow_strings(column)
    if arrow is not None:
        return arrow
    if type(column).__module__.startswith("pandas"):
        column = column.to_numpy(dtype=object)
    converted = _strings_by_arrow(column)
    if converted is not None:
        return converted
    # Mixed values: one at a time, naming what is wrong with each.
    valid = np.ones(n, dtype=np.uint8)
    parts: list[bytes] = []
    lengths = np.zeros(n + 1, dtype=np.int64)
    for r, v in enumerate(column):
        if isinstance(v, str):
            b = v.encode("utf-8", "surrogatepass")
            parts.append(b)
            lengths[r + 1] = len(b)
            continue
        valid[r] = 0
        if not _is_null(v):
            errors.setdefault(r, f"input {field.name!r} is {type(v).__name__}, not a string")
    offsets = np.cumsum(lengths)
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"column {field.name!r} holds more than 2 GiB of text in one batch")
    return Encoded(valid, offsets=offsets.astype(np.int32), data=b"".join(parts))


def _strings_by_arrow(column: Any) -> Encoded | None:
    """Python strings (None/NaN as nulls) converted by arrow in C: 3-4x faster than encoding
    them one by one (bench/preprocess.py). None when a value is not a string."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - PyFlink depends on pyarrow
        return None
    try:
        # Inferred, not cast: a cast to string would take bytes (and numbers) too.
        arr = pa.array(column, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    if pa.types.is_null(arr.type):
        arr = arr.cast(pa.string())
    return _arrow_strings(arr) if pa.types.is_string(arr.type) else None


def _arrow_strings(column: Any) -> Encoded | None:
    """An arrow string array's own offsets and bytes (no Python string is made)."""
    if not type(column).__module__.startswith("pyarrow"):
        return None
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    if not pa.types.is_string(arr.type):
        return None
    n = len(arr)
    bufs = arr.buffers()
    raw = np.frombuffer(bufs[1], dtype=np.int32, count=arr.offset + n + 1)[arr.offset :]
    start = int(raw[0])
    offsets = raw - start
    data: Any = b""
    if bufs[2] is not None:
        data = np.frombuffer(bufs[2], dtype=np.uint8)[start : start + int(offsets[-1])]
    if arr.null_count:
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=np.uint8)
    else:
        valid = np.ones(n, dtype=np.uint8)
    return Encoded(valid, offsets=offsets, data=data)


def columns_from_records(
    records: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> dict[str, list[Any]]:
    """Records (dicts by input name) as columns; a missing key is a null."""
    return {name: [rec.get(name) for rec in records] for name in names}


def records_problem(records: Sequence[Any]) -> str | None:
    """Why `records` cannot be turned into columns, or None."""
    for r, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            kind = type(rec).__name__
            return f"record {r}: expected a mapping of input name to value, got {kind}"
    return None


def check_records(records: Sequence[Any]) -> None:
    """Raises `InputError` unless `records` are mappings (the typed path's records)."""
    problem = records_problem(records)
    if problem:
        raise InputError(problem)
