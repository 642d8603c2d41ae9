"""A model bundle running in its own V8 isolate (mini-racer).

`ModelRuntime(bundle_bytes)` creates a context with a hard heap limit, evaluates the bundle, checks
the `ml` contract, awaits `ml.init()`, allocates the zero-copy buffers and runs the bundle's
self-test; only then does the constructor return. Any failure closes the context and raises a typed
`BundleError`.

Length: one role (a bundle in V8, both contracts) whose bulk is the checks of the contract's
every step; the V8 plumbing lives in `reloader.v8`, the meta validation in `reloader.codec`, the
typed columns in `reloader.columns` and `reloader.buffers`, the self-test's arithmetic in
`reloader.selftest`.

Threading: a runtime belongs to one thread at a time (the one that predicts); close it on that
thread. Context creation is serialized process-wide, because two contexts created at the same
moment crash the process.
"""

from __future__ import annotations

import atexit
import json
import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
from py_mini_racer import (
    JSEvalException,
    JSOOMException,
    JSPromise,
    JSPromiseError,
    JSTimeoutException,
    MiniRacer,
)

from reloader import selftest
from reloader.buffers import ColumnBuffers, ColumnScores
from reloader.codec import Matrix, Prediction, RecordCodec, meta_from_contract, meta_problem
from reloader.columns import check_records, columns_from_records, fields_from_schema
from reloader.errors import (
    BundleError,
    BundleMemoryError,
    BundleOutputError,
    BundleTimeout,
    InputError,
    RuntimeClosed,
)
from reloader.outputs import output_kind
from reloader.v8 import PRELUDE, Wedged, eval_js, new_context

DEFAULT_HEAP_LIMIT = 256 << 20
DEFAULT_CALL_TIMEOUT = 5.0
DEFAULT_INIT_TIMEOUT = 30.0

# The bundle contract: ml.predict throws an Error named InputError for records it cannot use.
_JS_INPUT_ERROR = re.compile(r"^InputError: (.{1,500})$", re.MULTILINE)
_JS_RECORD = re.compile(r"\brecord (\d+)\b")

_LIVE: weakref.WeakSet[ModelRuntime] = weakref.WeakSet()

_CONTRACT_PROBE = """(() => {
  const ml = globalThis.ml;
  if (typeof ml !== 'object' || ml === null) {
    return JSON.stringify({missing: 'the global `ml` object'});
  }
  const has = [];
  for (const f of ['init', 'buffers', 'predictBuffer', 'predict', 'columns', 'reserve',
    'predictColumns', 'rowErrors', 'extraStrings', 'features']) {
    if (typeof ml[f] === 'function') has.push(f);
  }
  return JSON.stringify({meta: ml.meta === undefined ? null : ml.meta, has});
})()"""
# The functions each contract requires (docs/bundle-contract.md, docs/model-spec.md).
_REQUIRED = {
    1: ("init", "buffers", "predictBuffer", "predict"),
    2: ("init", "columns", "reserve", "predictColumns", "rowErrors", "predict"),
}


class ModelRuntime:
    """One loaded bundle: `predict(matrix)` (fast, zero-copy), `predict_records(records)` (JSON).

    Args:
        bundle: the bundle's bytes (UTF-8 JavaScript) or text.
        heap_limit: V8 hard heap limit in bytes; a bundle that exceeds it is stopped
            (`BundleMemoryError`).
        call_timeout: seconds a single predict call may run before it is terminated
            (`BundleTimeout`).
        init_timeout: seconds for evaluating the bundle and for `ml.init()` to resolve.
        max_batch: rows per call into V8 (default and ceiling: the bundle's `meta.maxBatch`);
            larger inputs are split into chunks.
        self_test: run the bundle's `selfTest` before returning (on by default; a failure raises).
        check_outputs: reject non-finite outputs with `BundleOutputError` (on by default).
    """

    def __init__(
        self,
        bundle: bytes | str,
        *,
        heap_limit: int = DEFAULT_HEAP_LIMIT,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        init_timeout: float = DEFAULT_INIT_TIMEOUT,
        max_batch: int | None = None,
        self_test: bool | Mapping[str, Any] = True,
        check_outputs: bool = True,
    ) -> None:
        self.heap_limit = heap_limit
        self.call_timeout = call_timeout
        self.init_timeout = init_timeout
        self.check_outputs = check_outputs
        self._closed_reason: str | None = None
        self._views: Any = None
        self._in: Matrix | None = None
        self._out: Matrix | None = None
        if isinstance(bundle, bytes):
            try:
                source = bundle.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BundleError(
                    f"bundle is not UTF-8 text ({e.reason} at byte {e.start})", stage="decode"
                ) from None
        else:
            source = bundle
        self._ctx: MiniRacer | None = new_context()
        _LIVE.add(self)
        try:
            self._ctx.set_hard_memory_limit(heap_limit)
            self._run(PRELUDE, stage="eval", timeout=init_timeout)
            self._run(source, stage="eval", timeout=init_timeout)
            declared, has = self._check_contract()
            kernel, reason = self._init()
            self.meta = meta_from_contract(declared, kernel=kernel, kernel_reason=reason)
            rows = self.meta.max_batch if max_batch is None else min(max_batch, self.meta.max_batch)
            if rows < 1:
                raise ValueError(f"max_batch must be >= 1, got {max_batch}")
            self.max_batch = rows
            try:
                self.outputs = output_kind(self.meta)
            except ValueError as e:
                raise BundleError(f"ml.meta is invalid: {e}", stage="contract") from None
            self.columns: ColumnBuffers | None = None
            if self.meta.contract >= 2:
                assert self.meta.schema is not None
                self.columns = ColumnBuffers(
                    fields_from_schema(self.meta.schema),
                    self.meta,
                    rows,
                    lambda code, stage: self._run(code, stage=stage, timeout=self.call_timeout),
                )
            if "buffers" in has and "predictBuffer" in has:
                self._allocate(rows)
            self.codec = RecordCodec(self.meta)
            self.self_test_inputs: Matrix | None = None
            self.self_test_records: list[dict[str, Any]] | None = None
            self.self_test_deltas: dict[str, float] = {}
            self.self_test_delta: float | None = None
            if self_test is not False:
                spec = None if self_test is True else self_test
                self.self_test_delta = self.run_self_test(spec)
        except BaseException:
            self.close()
            raise

    # -- hot path ---------------------------------------------------------------------------------

    def predict(self, x: npt.ArrayLike, *, allow_nonfinite: bool = False) -> Matrix:
        """float32 matrix [n, len(meta.inputs)] of raw features -> float32 [n, len(meta.outputs)].

        Rows go through the bundle's pre-processing, model and post-processing in V8, `max_batch`
        rows per call.
        The result is a fresh array (no view into V8 memory escapes). Non-finite outputs raise
        `BundleOutputError` (with `check_outputs`) unless `allow_nonfinite`: then the caller
        deals with them row by row (extreme but finite features can overflow a model).
        """
        if self._in is None or self._out is None:
            if self._ctx is not None and self.columns is not None:
                raise InputError(
                    f"{self.meta.name} takes typed inputs ({_typed(self.meta)}), not a float "
                    "matrix: use predict_columns or predict_dicts"
                )
            self._raise_closed()
        x = np.asarray(x, dtype=np.float32)
        n_in = len(self.meta.inputs)
        if x.ndim != 2 or x.shape[1] != n_in:
            raise InputError(
                f"expected a matrix [n, {n_in}] ({', '.join(self.meta.inputs)}), got shape "
                f"{x.shape}"
            )
        if not np.isfinite(x).all():
            bad = ~np.isfinite(x).all(axis=1)
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"row {row} has non-finite features ({int(bad.sum())} such rows)", row=row
            )
        n = x.shape[0]
        n_out = len(self.meta.outputs)
        out = np.empty((n, n_out), dtype=np.float32)
        step = self.max_batch
        for start in range(0, n, step):
            rows = min(step, n - start)
            self._in[:rows] = x[start : start + rows]
            written = self._run(
                f"ml.predictBuffer({rows})", stage="predict", timeout=self.call_timeout
            )
            if written != rows * n_out:
                raise BundleOutputError(
                    f"ml.predictBuffer({rows}) reported {written!r} values written, expected "
                    f"{rows * n_out} ({rows} rows x {n_out} outputs)",
                    stage="predict",
                )
            out[start : start + rows] = self._out[:rows]
        if self.check_outputs and not allow_nonfinite and n and not np.isfinite(out).all():
            row = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            raise BundleOutputError(f"non-finite output for row {row}", stage="predict")
        return out

    def predict_rows(
        self, records: Sequence[Mapping[str, Any] | Sequence[Any]]
    ) -> list[Prediction]:
        """Records (dicts by feature name, or rows in `meta.inputs` order) -> predictions."""
        return self.codec.decode(self.predict(self.codec.encode(records)))

    def predict_columns(self, columns: Mapping[str, Any], n: int | None = None) -> ColumnScores:
        """The typed path (contract 2): columns by input name -> scores, error rows, extras.

        A column is a numpy array, pandas Series, pyarrow array or list of Python values; a
        missing column is all nulls. Rows whose values do not fit their input (a string in a
        number, a null without a default, a word outside a closed vocabulary, ...) come back in
        `errors` naming the input; the rest of the batch is predicted, `max_batch` rows per
        call into V8, with no JSON on the way.
        """
        buffers = self.columns
        if buffers is None:
            if self._ctx is None:
                self._raise_closed()
            raise InputError(
                f"{self.meta.name} is a contract-1 bundle (a float matrix of "
                f"{', '.join(self.meta.inputs)}): use predict or predict_rows"
            )
        if n is None:
            lengths = {len(c) for c in columns.values() if c is not None}
            if len(lengths) > 1:
                raise InputError(f"columns of different lengths: {sorted(lengths)}")
            n = lengths.pop() if lengths else 0
        try:
            return buffers.predict(columns, n)
        except ValueError as e:
            raise InputError(str(e)) from None

    def predict_dicts(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Records (dicts by input name) -> one dict of output fields per record, as the job
        writes them (`label`/`probabilities`, `probability`, `value`, … per the declared output
        kind, plus extras), or `{"error": why}` for a record that does not fit."""
        if self.columns is None:
            return [self.outputs.fields(list(p.scores)) for p in self.predict_rows(list(records))]
        check_records(records)
        result = self.predict_columns(columns_from_records(records, self.meta.inputs), len(records))
        out: list[dict[str, Any]] = []
        rows = result.scores.tolist()
        for r in range(len(records)):
            if not result.ok[r]:
                out.append({"error": result.errors[r]})
                continue
            fields = self.outputs.fields(rows[r])
            for name, values in result.extras.items():
                v = values[r]
                fields[name] = float(v) if isinstance(v, np.floating) else v
            out.append(fields)
        return out

    def predict_records(self, records: Sequence[Any]) -> list[dict[str, Any]]:
        """The flexible JSON path: JSON-able records in, the bundle's `ml.predict` results out."""
        if self._ctx is None:
            self._raise_closed()
        try:
            payload = json.dumps(list(records), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InputError(f"records are not JSON-serialisable: {e}") from None
        text = self._run(
            f"JSON.stringify(ml.predict({payload}))", stage="predict", timeout=self.call_timeout
        )
        results = _parse_json(text, stage="predict", what="ml.predict's results")
        if not isinstance(results, list) or len(results) != len(records):
            raise BundleOutputError(
                f"ml.predict returned {type(results).__name__} for {len(records)} records, "
                "expected a list of the same length",
                stage="predict",
            )
        return results

    def warm_up(self, *, rows: int = 256, calls: int = 64) -> None:
        """Predicts `calls` batches of up to `rows` self-test rows, so V8 has compiled the hot
        code before real traffic arrives (the agent and the trial child do this off the hot
        path). A no-op without self-test inputs."""
        records = self.self_test_records
        if records and self.columns is not None and rows > 0:
            rows = min(rows, self.max_batch)
            repeated = [records[i % len(records)] for i in range(rows)]
            columns = columns_from_records(repeated, self.meta.inputs)
            for i in range(calls):
                k = 1 + (i * 37) % rows
                self.predict_columns({name: col[:k] for name, col in columns.items()}, k)
            return
        seed = self.self_test_inputs
        if seed is None or rows <= 0:
            return
        rows = min(rows, self.max_batch)
        batch = np.resize(seed, (rows, seed.shape[1]))
        # V8 optimizes a function only after it has run hot for a while: one call would leave
        # the first real batches to the interpreter.
        for i in range(calls):
            self.predict(batch[: 1 + (i * 37) % rows])

    # -- life cycle -------------------------------------------------------------------------------

    def run_self_test(self, spec: Mapping[str, Any] | None = None) -> float:
        """Runs a self-test through both paths; returns the largest difference seen or raises.

        Args:
            spec: `{inputs, expected, tolerance}` to use instead of the bundle's `ml.selfTest`
                (a manifest's `self_test` override).
        """
        if spec is None:
            st = self._run(
                "JSON.stringify(ml.selfTest === undefined ? null : ml.selfTest)",
                stage="selftest",
                timeout=self.call_timeout,
            )
            spec = _parse_json(st, stage="selftest", what="ml.selfTest")
        if self.columns is not None:
            records, expected, tolerance = selftest.records_spec(spec, len(self.meta.outputs))
            self.self_test_records = records
            typed = self.predict_columns(
                columns_from_records(records, self.meta.inputs), len(records)
            )
            if typed.errors:
                row, why = min(typed.errors.items())
                raise BundleError(f"self-test record {row} was refused: {why}", stage="selftest")
            paths = {
                "fast": typed.scores,
                "json": selftest.json_scores(self.predict_records(records)),
            }
        else:
            inputs, expected, tolerance = selftest.matrix_spec(
                spec, len(self.meta.inputs), len(self.meta.outputs)
            )
            self.self_test_inputs = inputs.astype(np.float32)
            paths = {
                "fast": self.predict(inputs),
                "json": selftest.json_scores(self.predict_records(inputs.tolist())),
            }
        self.self_test_deltas = selftest.compare(paths, expected, tolerance)
        return max(self.self_test_deltas.values())

    def feature_skew(self) -> dict[str, Any] | None:
        """Train/serve skew on the bundle's sample records (`ml.samples`: the features the
        training pipeline computed for them) against the bundle's own `ml.features`: records,
        features, the largest difference and the feature it is in. None for bundles without
        samples."""
        if self.columns is None:
            return None
        text = self._run(
            "JSON.stringify(ml.samples == null ? null : "
            "{samples: ml.samples, got: ml.features(ml.samples.records)})",
            stage="selftest",
            timeout=self.call_timeout,
        )
        found = _parse_json(text, stage="selftest", what="ml.samples")
        return None if found is None else selftest.skew(found)

    def close(self) -> None:
        """Frees the V8 context. Safe to call twice; call it on the thread that predicts."""
        if self._closed_reason is None:
            self._closed_reason = "closed"
        ctx, self._ctx = self._ctx, None
        # Views into V8-owned memory must be gone before the isolate is: a live view would point
        # into freed memory and crash the interpreter on the next access.
        self._in = self._out = None
        buffers = getattr(self, "columns", None)
        if buffers is not None:
            buffers.release()
        views, self._views = self._views, None
        if views is not None:
            for mv in views:
                mv.release()
        if ctx is not None:
            ctx.close()
        _LIVE.discard(self)

    @property
    def closed(self) -> bool:
        return self._ctx is None

    def __enter__(self) -> ModelRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self._closed_reason or "open"
        meta = getattr(self, "meta", None)
        what = f"{meta.name} {meta.version}" if meta else "loading"
        return f"<ModelRuntime {what} {state}>"

    # -- internals --------------------------------------------------------------------------------

    def _run(self, code: str, *, stage: str, timeout: float) -> Any:
        """Evaluates `code`, awaiting a promise result, and maps mini-racer's errors to ours."""
        ctx = self._ctx
        if ctx is None:
            self._raise_closed()
        try:
            result = eval_js(ctx, code, timeout)
            if isinstance(result, JSPromise):
                result = result.get(timeout=timeout)
            return result
        except Wedged:
            self._break(f"{stage} could not start: JavaScript kept running after a call returned")
            raise BundleTimeout(
                f"{_describe(code, stage)} could not start: the context was still running "
                "JavaScript left over from an earlier call (a promise callback that never ends?); "
                "the context was discarded",
                stage=stage,
                timeout=timeout,
            ) from None
        except JSTimeoutException:
            self._break(f"{stage} timed out")
            raise BundleTimeout(
                f"{_describe(code, stage)} was terminated", stage=stage, timeout=timeout
            ) from None
        except JSOOMException:
            self._break(f"{stage} exhausted the heap")
            raise BundleMemoryError(
                f"{_describe(code, stage)} was stopped", stage=stage, heap_limit=self.heap_limit
            ) from None
        except (JSEvalException, JSPromiseError) as e:
            bad_input = _JS_INPUT_ERROR.search(str(e))
            if bad_input and stage == "predict":
                row = _JS_RECORD.search(bad_input.group(1))
                raise InputError(
                    bad_input.group(1), row=int(row.group(1)) if row else None
                ) from None
            raise BundleError(
                f"{_describe(code, stage)} threw", stage=stage, js_message=str(e)
            ) from None

    def _break(self, reason: str) -> None:
        # After a termination V8 state is suspect (a half-run predict, a half-built heap): stop
        # serving from it.
        self._closed_reason = f"broken: {reason}"
        self.close()

    def _raise_closed(self) -> NoReturn:
        raise RuntimeClosed(f"this model runtime is {self._closed_reason or 'closed'}")

    def _check_contract(self) -> tuple[dict[str, Any], set[str]]:
        probe = _parse_json(
            self._run(_CONTRACT_PROBE, stage="contract", timeout=self.call_timeout),
            stage="contract",
            what="the contract probe (is JSON.stringify replaced?)",
        )
        if not isinstance(probe, dict):
            raise BundleError("the contract probe did not return an object", stage="contract")
        if "missing" in probe:
            raise BundleError(f"the bundle does not define {probe['missing']}", stage="contract")
        meta = probe.get("meta")
        problem = meta_problem(meta)
        if problem:
            raise BundleError(f"ml.meta is invalid: {problem}", stage="contract")
        assert isinstance(meta, dict)  # _meta_problem checked it
        has = probe.get("has")
        has = {str(f) for f in has} if isinstance(has, list) else set()
        contract = int(meta.get("contract", 1))
        for f in _REQUIRED[contract]:
            if f not in has:
                raise BundleError(
                    f"the bundle does not define ml.{f}() (contract {contract})", stage="contract"
                )
        return meta, has

    def _init(self) -> tuple[str, str]:
        self._run("ml.init()", stage="init", timeout=self.init_timeout)
        text = self._run(
            "JSON.stringify([String(ml.kernel === undefined ? '' : ml.kernel), "
            "String(ml.kernelReason === undefined ? '' : ml.kernelReason)])",
            stage="init",
            timeout=self.call_timeout,
        )
        pair = _parse_json(text, stage="init", what="ml.kernel")
        if not (isinstance(pair, list) and len(pair) == 2):
            raise BundleError("ml.kernel could not be read", stage="init")
        return str(pair[0]), str(pair[1])[:500]

    def _allocate(self, rows: int) -> None:
        bufs = self._run(f"ml.buffers({rows})", stage="buffers", timeout=self.call_timeout)
        try:
            views = (bufs[0], bufs[1])
        except (TypeError, IndexError, KeyError):
            views = None
        if views is None or not all(isinstance(v, memoryview) for v in views):
            raise BundleError(
                "ml.buffers(rows) must return [inputArrayBuffer, outputArrayBuffer]",
                stage="buffers",
            )
        self._views = views
        need = (rows * len(self.meta.inputs) * 4, rows * len(self.meta.outputs) * 4)
        for mv, size, name in zip(views, need, ("input", "output"), strict=False):
            if mv.nbytes < size:
                raise BundleError(
                    f"ml.buffers({rows}) returned a {mv.nbytes}-byte {name} buffer; "
                    f"{size} bytes needed",
                    stage="buffers",
                )
        self._in = np.frombuffer(views[0], dtype=np.float32, count=need[0] // 4).reshape(rows, -1)
        self._out = np.frombuffer(views[1], dtype=np.float32, count=need[1] // 4).reshape(rows, -1)


def _typed(meta: Any) -> str:
    schema = meta.schema or {}
    return ", ".join(f"{f['name']}: {f['type']}" for f in schema.get("inputs", ()))


def _parse_json(text: Any, *, stage: str, what: str) -> Any:
    """JSON text the bundle returned, parsed. The bundle controls that text (it can replace
    `JSON.stringify`), so anything else is the bundle's fault: a `BundleError`, never a plain
    ValueError that a caller would take for a transient failure."""
    if not isinstance(text, str):
        raise BundleError(
            f"{what}: expected JSON text, got {type(text).__name__} (not JSON)", stage=stage
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise BundleError(f"{what} is not JSON ({str(e)[:80]})", stage=stage) from None


def _describe(code: str, stage: str) -> str:
    # For error messages only: the bundle's source is never quoted.
    if stage == "eval":
        return "the bundle"
    return code if len(code) < 60 else code[:40] + "…"


@atexit.register
def _close_all() -> None:
    # An open isolate keeps the interpreter from exiting; close whatever the program forgot.
    for rt in list(_LIVE):
        rt.close()
