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
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reloader.errors import BundleError, BundleOutputError, InputError

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


# -- the bundle's buffers -------------------------------------------------------------------------

NONFINITE = "the model's output for this row is not finite (inputs far outside the training range?)"
_INITIAL_TEXT_BYTES = 32  # per row and string input, before the first `ml.reserve`


@dataclass(frozen=True)
class ColumnScores:
    """One batch's results: scores for every row (rows in `errors` hold zeros), which rows were
    predicted, why the others were not, and the declared extras."""

    scores: npt.NDArray[np.float32]  # [n, outputs]
    ok: npt.NDArray[np.bool_]  # [n]
    errors: dict[int, str]
    extras: dict[str, Any]  # name -> float64 array or list of str | None, n values


class ColumnBuffers:
    """A contract-2 bundle's buffers (`ml.columns(rows)`), as numpy views, and the batch calls.

    `call(code, stage)` runs JavaScript in the bundle's context with the runtime's limits. The
    views point into V8 memory; `release()` drops them before the context closes.
    """

    def __init__(
        self,
        fields: tuple[Field, ...],
        meta: Any,
        rows: int,
        call: Callable[[str, str], Any],
    ) -> None:
        self.fields = fields
        self.rows = rows
        self._call = call
        self._names = tuple(f.name for f in fields)
        schema = meta.schema or {}
        self._n_out = len(meta.outputs)
        extras = [(str(e["name"]), str(e["type"])) for e in schema.get("extras") or ()]
        self._float_extras = [name for name, kind in extras if kind == "float"]
        self._string_extras = [name for name, kind in extras if kind == "string"]
        self._numeric = [f for f in fields if not f.is_string]
        self._strings = [f for f in fields if f.is_string]
        self._views: list[memoryview] = []
        bufs = call(f"ml.columns({rows})", "buffers")
        n_str = len(self._strings)
        try:
            views = [bufs[i] for i in range(6 + n_str)]
        except (TypeError, IndexError, KeyError):
            views = []
        if len(views) != 6 + n_str or not all(isinstance(v, memoryview) for v in views):
            raise BundleError(
                f"ml.columns(rows) must return {6 + n_str} ArrayBuffers "
                "[num, valid, offsets, status, out, extra, bytes_0, ...]",
                stage="buffers",
            )
        self._views.extend(views)
        R = rows
        need = {
            "num": (0, np.float64, len(self._numeric) * R),
            "valid": (1, np.uint8, len(fields) * R),
            "offsets": (2, np.int32, n_str * (R + 1)),
            "status": (3, np.uint8, R),
            "out": (4, np.float32, R * self._n_out),
            "extra": (5, np.float64, len(self._float_extras) * R),
        }
        arrays: dict[str, Any] = {}
        for name, (i, dtype, count) in need.items():
            size = count * np.dtype(dtype).itemsize
            if views[i].nbytes < size:
                raise BundleError(
                    f"ml.columns({rows}) returned a {views[i].nbytes}-byte {name} buffer; "
                    f"{size} bytes needed",
                    stage="buffers",
                )
            arrays[name] = np.frombuffer(views[i], dtype=dtype, count=count)
        # Typed Any: `release` sets them to None, and nothing may touch them after.
        self._num: Any = arrays["num"].reshape(len(self._numeric), R)
        self._valid: Any = arrays["valid"].reshape(len(fields), R)
        self._offsets: Any = arrays["offsets"].reshape(n_str, R + 1)
        self._status: Any = arrays["status"]
        self._out: Any = arrays["out"].reshape(R, self._n_out)
        self._extra: Any = arrays["extra"].reshape(len(self._float_extras), R)
        self._bytes = [np.frombuffer(v, dtype=np.uint8) for v in views[6:]]

    def predict(self, columns: Mapping[str, Any], n: int) -> ColumnScores:
        """Scores `n` rows given as columns by input name (a missing column is all nulls)."""
        errors: Errors = {}
        encoded = [encode_column(f, columns.get(f.name), n, errors) for f in self.fields]
        scores = np.zeros((n, self._n_out), dtype=np.float32)
        ok = np.ones(n, dtype=bool)
        extras: dict[str, Any] = {name: np.zeros(n) for name in self._float_extras}
        for name in self._string_extras:
            extras[name] = [None] * n
        for start in range(0, n, self.rows):
            rows = min(self.rows, n - start)
            self._fill(encoded, start, rows, errors)
            refused = int(self._call(f"ml.predictColumns({rows})", "predict"))
            scores[start : start + rows] = self._out[:rows]
            if refused:
                self._bundle_errors(start, rows, errors)
            for j, name in enumerate(self._float_extras):
                extras[name][start : start + rows] = self._extra[j, :rows]
            if self._string_extras:
                self._strings_out(start, rows, extras)
        if errors:
            rows_bad = np.fromiter(errors, dtype=np.int64, count=len(errors))
            ok[rows_bad] = False
            scores[rows_bad] = 0.0
        finite = np.isfinite(scores).all(axis=1)
        if not finite.all():
            for r in np.flatnonzero(~finite):
                errors.setdefault(int(r), NONFINITE)
            ok &= finite
            scores[~finite] = 0.0
        return ColumnScores(scores, ok, errors, extras)

    def _fill(self, encoded: list[Encoded], start: int, rows: int, errors: Errors) -> None:
        stop = start + rows
        status = self._status[:rows]
        status[:] = OK
        for r in errors:
            if start <= r < stop:
                status[r - start] = HOST_ERROR
        num = 0
        text = 0
        for i, (f, enc) in enumerate(zip(self.fields, encoded, strict=True)):
            self._valid[i, :rows] = enc.valid[start:stop]
            if not f.is_string:
                assert enc.values is not None
                self._num[num, :rows] = enc.values[start:stop]
                num += 1
                continue
            assert enc.offsets is not None and enc.data is not None
            off = enc.offsets[start : stop + 1]
            first, last = int(off[0]), int(off[-1])
            size = last - first
            if size > self._bytes[text].nbytes:
                self._reserve(text, size)
            self._offsets[text, : rows + 1] = off - first
            if size:
                self._bytes[text][:size] = np.frombuffer(enc.data, dtype=np.uint8)[first:last]
            text += 1

    def _reserve(self, k: int, size: int) -> None:
        want = max(size, 2 * self._bytes[k].nbytes)
        buf = self._call(f"ml.reserve({k}, {want})", "buffers")
        if not isinstance(buf, memoryview) or buf.nbytes < size:
            raise BundleError(
                f"ml.reserve({k}, {want}) must return an ArrayBuffer of at least {size} bytes",
                stage="buffers",
            )
        self._views.append(buf)  # the old view stays valid: the bundle keeps its buffer
        self._bytes[k] = np.frombuffer(buf, dtype=np.uint8)

    def _bundle_errors(self, start: int, rows: int, errors: Errors) -> None:
        text = self._call("JSON.stringify(ml.rowErrors())", "predict")
        try:
            pairs = json.loads(text) if isinstance(text, str) else None
            found = [(int(r), str(m)) for r, m in pairs or ()]
        except (ValueError, TypeError):
            found = None
        if found is None:
            raise BundleOutputError(
                "ml.rowErrors() must return [[row, message], ...]", stage="predict"
            )
        status = self._status[:rows]
        for r, message in found:
            if 0 <= r < rows and status[r] == BUNDLE_ERROR:
                errors.setdefault(start + r, message[:500])
        for r in np.flatnonzero(status == BUNDLE_ERROR):
            errors.setdefault(start + int(r), "refused by the model's pre-processing")

    def _strings_out(self, start: int, rows: int, extras: dict[str, Any]) -> None:
        text = self._call("JSON.stringify(ml.extraStrings())", "predict")
        try:
            got = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            got = None
        for name in self._string_extras:
            values = got.get(name) if isinstance(got, dict) else None
            if not isinstance(values, list) or len(values) < rows:
                raise BundleOutputError(
                    f"ml.extraStrings() must return {rows} values for {name!r}", stage="predict"
                )
            extras[name][start : start + rows] = [
                v if v is None or isinstance(v, str) else str(v) for v in values[:rows]
            ]

    def release(self) -> None:
        """Drops every view into V8 memory (call before the context closes)."""
        self._num = self._valid = self._offsets = self._status = self._out = self._extra = None
        self._bytes = []
        views, self._views = self._views, []
        for mv in views:
            mv.release()


def check_records(records: Sequence[Any]) -> None:
    """Raises `InputError` unless `records` are mappings (the typed path's records)."""
    problem = records_problem(records)
    if problem:
        raise InputError(problem)
