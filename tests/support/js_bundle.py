"""A built bundle in mini-racer, driven directly (no `ModelRuntime`): JSON calls into `ml`, and
contract 2's column buffers filled with numpy as a host would (`encode_columns`), for the model
tests and `bench/preprocess.py`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from py_mini_racer import JSPromise, MiniRacer

from reloader.v8 import PRELUDE, new_context
from tests.support.spec_projects import to_ms


class JsBundle:
    """One bundle in its own V8 context, initialised (`ml.init(options)` awaited)."""

    def __init__(self, code: bytes | str, *, init: Mapping[str, Any] | None = None) -> None:
        self.ctx: MiniRacer | None = new_context()
        self.ctx.eval(PRELUDE)
        self.ctx.eval(code.decode() if isinstance(code, bytes) else code)
        result = self.ctx.eval(f"ml.init({json.dumps(init)})")
        if isinstance(result, JSPromise):
            result.get(timeout=30)
        self.meta: dict[str, Any] = self.call("ml.meta")
        self.schema: dict[str, Any] = self.meta.get("schema") or {}
        self._views: list[memoryview] = []
        self._rows = 0

    def eval(self, code: str) -> Any:
        assert self.ctx is not None
        return self.ctx.eval(code)

    def call(self, expr: str, *args: Any) -> Any:
        """`expr` with `args[i]` bound to `a[i]` (JSON in), its result as JSON out."""
        payload = json.dumps(list(args))
        text = self.eval(f"(() => {{ const a = {payload}; return JSON.stringify({expr}); }})()")
        return None if text is None else json.loads(text)

    # -- contract 2 -------------------------------------------------------------------------------

    def columns(self, rows: int) -> list[memoryview]:
        bufs = self.eval(f"ml.columns({rows})")
        n_str = sum(1 for i in self.schema["inputs"] if i["type"] == "string")
        self._views = [bufs[i] for i in range(6 + n_str)]
        self._rows = rows
        return self._views

    def encode_columns(self, columns: Mapping[str, Any], n: int) -> None:
        """Columns by raw input name (numpy float64 with NaN = null, or lists of str/None for
        strings; bools and timestamps as numbers) into the buffers allocated by `columns`."""
        rows = self._rows
        views = self._views
        num = np.frombuffer(views[0], dtype=np.float64)
        valid = np.frombuffer(views[1], dtype=np.uint8)
        offsets = np.frombuffer(views[2], dtype=np.int32)
        np.frombuffer(views[3], dtype=np.uint8)[:n] = 0
        k = s = 0
        for j, field in enumerate(self.schema["inputs"]):
            col = columns.get(field["name"])
            if field["type"] == "string":
                values = [None] * n if col is None else list(col)
                parts = [b"" if v is None else str(v).encode() for v in values]
                lengths = np.fromiter((len(p) for p in parts), dtype=np.int32, count=n)
                off = offsets[s * (rows + 1) : s * (rows + 1) + n + 1]
                off[0] = 0
                np.cumsum(lengths, out=off[1:])
                data = b"".join(parts)
                view = views[6 + s]
                if view.nbytes < len(data):
                    self._views[6 + s] = view = self.eval(f"ml.reserve({s}, {len(data)})")
                np.frombuffer(view, dtype=np.uint8)[: len(data)] = np.frombuffer(data, np.uint8)
                valid[j * rows : j * rows + n] = [v is not None for v in values]
                s += 1
                continue
            x = np.full(n, np.nan) if col is None else np.asarray(col, dtype=np.float64)
            num[k * rows : k * rows + n] = x
            valid[j * rows : j * rows + n] = ~np.isnan(x)
            k += 1

    def predict_columns(self, n: int) -> tuple[npt.NDArray[np.float32], dict[int, str]]:
        """Runs `ml.predictColumns(n)`: the scores [n, outputs] and the error rows."""
        failed = self.eval(f"ml.predictColumns({n})")
        width = len(self.meta["outputs"])
        out = np.frombuffer(self._views[4], dtype=np.float32)[: n * width].reshape(n, width)
        errors = dict(self.call("ml.rowErrors()")) if failed else {}
        assert len(errors) == failed
        return out.copy(), {int(r): m for r, m in errors.items()}

    def float_extras(self, n: int) -> dict[str, npt.NDArray[np.float64]]:
        names = [e["name"] for e in self.schema.get("extras", []) if e["type"] == "float"]
        extra = np.frombuffer(self._views[5], dtype=np.float64)
        return {
            name: extra[i * self._rows : i * self._rows + n].copy() for i, name in enumerate(names)
        }

    def records_to_columns(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """JSON records -> columns for `encode_columns` (None = null)."""
        out: dict[str, Any] = {}
        for field in self.schema["inputs"]:
            name, kind = field["name"], field["type"]
            values = [r.get(name) for r in records]
            if kind == "string":
                out[name] = values
            elif kind == "timestamp":
                out[name] = [np.nan if v is None else to_ms(v) for v in values]
            else:
                out[name] = [np.nan if v is None else float(v) for v in values]
        return out

    def run_records(
        self, records: Sequence[Mapping[str, Any]]
    ) -> tuple[npt.NDArray[np.float32], dict[int, str]]:
        """Records through the columns path (allocating buffers for them)."""
        n = len(records)
        if self._rows < n:
            self.columns(max(n, 1))
        self.encode_columns(self.records_to_columns(records), n)
        return self.predict_columns(n)

    def close(self) -> None:
        self._views = []
        if self.ctx is not None:
            self.ctx.close()
            self.ctx = None

    def __enter__(self) -> JsBundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
