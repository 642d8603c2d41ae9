"""A contract-2 bundle's buffers, as numpy views, and one batch through them.

`ColumnBuffers` holds the views into the bundle's `ml.columns(rows)` buffers
(docs/model-spec.md, "Contract 2"), copies a batch encoded by `reloader.columns` into them chunk by
chunk, makes the one call per chunk, and reads back scores, the bundle's error rows and the
extras. `reloader.runtime` owns it; the views die with the context (`release`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reloader.columns import (
    BUNDLE_ERROR,
    HOST_ERROR,
    OK,
    Encoded,
    Errors,
    Field,
    encode_column,
)
from reloader.errors import BundleError, BundleOutputError

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
