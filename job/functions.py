"""The PyFlink functions that predict, built on `ReloaderMixin` and `Scorer`.

Input rows carry an `id`, the model's features by name, and any other columns (passed through to
the output). Outputs are JSON lines (see `job.scoring`).

- `PredictBatched`: the process path. A `KeyedProcessFunction` sees every record (override
  `accept` for per-record logic), buffers it in keyed state, and predicts when `batch_size` records
  are pending or the oldest has waited `max_delay_ms`. The buffer is Flink state: a checkpoint
  holds it, so a failure loses nothing. Use `route_by_subtask` as the key so each subtask keeps
  one buffer (one batch) rather than one per key.
- `PredictVectorized`: the vectorized path. A pandas UDF: the framework hands it Arrow batches
  (`python.fn-execution.arrow.batch.size`), so it keeps nothing between calls.
- `PredictRecord`: one V8 call per record, the row-at-a-time baseline that batching is measured
  against.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from pyflink.common import Row, Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedProcessFunction, ProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor
from pyflink.table.udf import FunctionContext, ScalarFunction

from job.canary import Canary
from job.canary import metric_values as canary_metric_values
from job.mixin import ModelSettings, ReloaderMixin
from job.scoring import EVENT_TIME, INVALID, Batch, Scored, Scorer, parse_record
from job.shadow import Shadow, ShadowStats, channel_url
from job.shadow import metric_values as shadow_metric_values
from reloader.agent import HotModel
from reloader.errors import BundleError, RuntimeClosed
from reloader.values import Versioned

log = logging.getLogger("job")

JSON_LINES = "line"  # the column name of JSON-lines input

END_OF_INPUT = (1 << 63) - 2  # an event time only the final watermark (Long.MAX_VALUE) reaches
NO_WATERMARK = -(1 << 63)  # Long.MIN_VALUE: no watermark yet

# How long a batch waits for a runtime broken mid-call (timeout, heap) to be rebuilt before its
# records go out as error records instead.
REBUILD_WAIT_SECONDS = 10.0


class _Predicting(ReloaderMixin):
    """Scoring with the model's failure rules, shared by the functions below."""

    scorer: Scorer

    shadow: Shadow | None = None
    canary: Canary | None = None

    def _setup(self, ctx: Any) -> None:
        self.scorer = Scorer()
        self.open_model(ctx)
        self.scorer.subtask = self.subtask
        settings = self.active_settings
        if settings.shadow:
            self.shadow = Shadow(
                self._channel_model(settings.shadow), retry_seconds=settings.poll_interval
            )
            self.shadow.start()
        if settings.canary:
            self.canary = Canary(
                self._channel_model(settings.canary),
                retry_seconds=settings.poll_interval,
                fraction=settings.canary_fraction,
                key=settings.canary_key,
                max_error_rate=settings.canary_max_error_rate,
            )
            self.canary.start()
        self._groups: dict[str, tuple[Any, dict[str, Any], dict[str, int]]] = {}
        self._groups_next: dict[str, float] = {}
        # Registered here, in open(): counters first made inside a bundle were not always
        # reported in process mode (measured: a rollback counted in Python, absent in Flink).
        if self.shadow is not None and self.model is not None:
            outputs = len(self.model.current().runtime.meta.outputs)
            blank = ShadowStats(delta_micro=[0] * outputs)
            self._register_group("shadow", shadow_metric_values(blank))
        if self.canary is not None:
            self._register_group("canary", canary_metric_values(self.canary))
        # What exists now (PyFlink, pandas, the model) lives as long as the worker: out of the
        # collector's sight, a full collection costs ~0.2 ms instead of 70-640 ms (measured in the
        # Python worker and in a thread-mode TaskManager), a stall of every record in flight.
        gc.freeze()

    def _channel_model(self, channel: str) -> Callable[[], HotModel]:
        """Makes the `HotModel` of a channel of this function's store (shadow, canary)."""
        settings = self.active_settings
        client = {"job": self.job, "subtask": f"{self.subtask} {channel}"}
        candidate = replace(settings, url=channel_url(settings.url, channel))
        return lambda: candidate.hot_model(client=client)

    def predict_batch(self, batch: Batch) -> list[str]:
        """JSON lines for `batch`; a model that fails on it yields error records, never a crash
        (see `score_batch`). Rows with event times go to the version each time falls under."""
        if batch.size == 0:
            return []
        out: list[str] = []
        for part in self.by_route(batch):
            result, why = self.score_batch(part)
            out += self._failed(part, why) if result is None else self.scorer.format(part, result)
        return out

    def by_version(self, batch: Batch) -> list[Batch]:
        """`batch` as the parts each model version scores, by the rows' event times
        (`batch.event_ms`; see `HotModel.split`): usually `[batch]`. Each part's `model` is set,
        so `score_batch` scores it on that version."""
        if batch.event_ms is None or batch.size == 0 or batch.model is not None:
            return [batch]
        assert self.model is not None, "open_model() was not called"
        groups = self.model.split(batch.event_ms)
        if len(groups) == 1:
            batch.model = groups[0][0]
            return [batch]
        parts = []
        for model, rows in groups:
            part = batch.subset(rows)
            part.model, part.rows = model, rows
            parts.append(part)
        return parts

    def by_route(self, batch: Batch) -> list[Batch]:
        """`by_version`, then the rows of a canary's keys split off to its candidate (see
        `job.canary`). Each part's `rows` are its rows in `batch` when there is more than one."""
        parts = self.by_version(batch)
        canary = self.canary
        if canary is None or batch.size == 0:
            return parts
        assert self.model is not None
        out: list[Batch] = []
        for part in parts:
            serving = part.model or self.model.current()
            candidate = canary.candidate(serving.sha256)
            if candidate is None:
                out.append(part)
                continue
            mask = canary.rows(part.column(canary.key), part.size)
            base = part.rows if part.rows is not None else np.arange(part.size, dtype=np.intp)
            for model, rows, role in (
                (serving, np.flatnonzero(~mask), "serving"),
                (candidate, np.flatnonzero(mask), "canary"),
            ):
                if len(rows) == 0:
                    continue
                sub = part if len(rows) == part.size else part.subset(rows)
                sub.model, sub.rows, sub.role, sub.fallback = model, base[rows], role, serving
                out.append(sub)
        return out

    def score_batch(self, batch: Batch) -> tuple[Versioned[Scored] | None, str]:
        """The model's results for `batch`, or None and why the model could not score it.

        A runtime broken by this batch (timeout, heap) is rebuilt by the reloader; the batch is
        retried once on the rebuilt runtime. A batch that breaks it again, or that the bundle
        rejects, is not scored; the caller writes error records naming the cause.
        """
        if batch.role == "canary":
            return self._score_canary(batch)
        deadline = time.monotonic() + REBUILD_WAIT_SECONDS
        attempts = 0
        while True:
            try:
                result = self.scorer.predict(lambda call: self.run_model(call, batch.model), batch)
            except RuntimeClosed as e:
                if time.monotonic() < deadline:
                    time.sleep(0.01)  # the poll thread is rebuilding the runtime
                    continue
                return None, f"model unavailable: {e}"
            except BundleError as e:
                attempts += 1
                if attempts == 1 and time.monotonic() < deadline:
                    continue  # a broken runtime is rebuilt: RuntimeClosed until then
                return None, f"model failed on this batch: {e}"
            self.count_predictions(int(result.value.ok.sum()))
            if self.shadow is not None:
                shadowed = self.shadow.compare(batch, result, self.scorer)
                if self.active_settings.shadow_output:
                    batch.shadow = shadowed
                self._sync_group("shadow", shadow_metric_values(self.shadow.stats))
            if self.canary is not None:
                if batch.role == "serving":
                    ok = int(result.value.ok.sum())
                    self.canary.record(
                        rows=0, errors=0, serving_rows=batch.size, serving_errors=batch.size - ok
                    )
                # Every batch, not only the canary's: a rollback ends them, not its report.
                self._sync_group("canary", canary_metric_values(self.canary))
            return result, ""

    def _score_canary(self, batch: Batch) -> tuple[Versioned[Scored] | None, str]:
        """A canary part on its candidate; one it fails goes to the serving version instead."""
        canary = self.canary
        assert canary is not None and canary.channel.model is not None
        hm = canary.channel.model
        try:
            result = self.scorer.predict(lambda call: hm.run_on(batch.model, call), batch)
        except Exception as e:  # the candidate's failure: counted, its rows served as usual
            canary.failed(f"{type(e).__name__}: {e}")
            batch.model, batch.role = batch.fallback, None
            self._sync_group("canary", canary_metric_values(canary), force=True)
            return self.score_batch(batch)
        ok = int(result.value.ok.sum())
        self.count_predictions(ok)
        canary.record(rows=batch.size, errors=batch.size - ok, serving_rows=0, serving_errors=0)
        self._sync_group("canary", canary_metric_values(canary), force=canary.stats.rolled_back)
        return result, ""

    def close_model(self) -> None:
        for extra in (self.shadow, self.canary):
            if extra is not None:
                extra.stop()
        self.shadow = self.canary = None
        super().close_model()

    def _register_group(self, group: str, values: Mapping[str, int]) -> None:
        if self._model_group is None:
            return
        metric_group = self._model_group.add_group(group)
        counters = {name: metric_group.counter(name) for name in values}
        self._groups[group] = (metric_group, counters, dict.fromkeys(values, 0))

    def _sync_group(self, group: str, values: Mapping[str, int], *, force: bool = False) -> None:
        """Counters of a subgroup of `model` (shadow, canary), at most every 100 ms each."""
        now = time.monotonic()
        if self._model_group is None or (not force and now < self._groups_next.get(group, 0)):
            return
        self._groups_next[group] = now + 0.1
        if group not in self._groups:
            self._groups[group] = (self._model_group.add_group(group), {}, {})
        metric_group, counters, reported = self._groups[group]
        for name, value in values.items():
            if name not in counters:
                counters[name] = metric_group.counter(name)
                reported[name] = 0
            delta = value - reported[name]
            if delta:
                counters[name].inc(delta)
                reported[name] = value

    def _failed(self, batch: Batch, why: str) -> list[str]:
        version, sha256 = self.failed_version(batch, why)
        return self.scorer.errors_only(batch, why, version, sha256)

    def failed_version(self, batch: Batch, why: str) -> tuple[str, str]:
        """Logs a batch the model could not score; the version and hash it was meant for."""
        assert self.model is not None
        log.warning("%s %d records not predicted: %s", self.log_prefix, batch.size, why)
        if batch.model is not None:
            return batch.model.version, batch.model.sha256
        info = self.model.info
        return info.version or "", info.sha256 or ""


def as_record(value: Any) -> dict[str, Any]:
    """An input element as a record by column name: a JSON line, a named `Row`, or a mapping."""
    if isinstance(value, str | bytes):
        return parse_record(value)
    if isinstance(value, Row):
        if len(value) == 1 and isinstance(value[0], str | bytes):
            return parse_record(value[0])  # a JSON line in a one-column row
        return dict(value.as_dict())
    if isinstance(value, dict):
        return value
    return {INVALID: f"not a record but {type(value).__name__}"}


class PredictBatched(_Predicting, KeyedProcessFunction):  # type: ignore[misc]
    """The process path: per-record logic, batched prediction, the buffer in keyed state.

    Input elements are JSON lines, named `Row`s or dicts. Subclasses may override `accept` to
    filter or transform a record before it is buffered.

    When the stream has event times (a watermark strategy with a timestamp assigner), each
    record is scored by the version its event time falls under (a version published with an
    effective time: `reloader.timeline`), and the watermark tells the model which earlier
    versions it can close. The buffered record keeps its time under `_event_ms`.
    """

    def __init__(
        self,
        settings: ModelSettings | None = None,
        *,
        batch_size: int = 256,
        max_delay_ms: int = 5,
        **kw: Any,
    ) -> None:
        ReloaderMixin.__init__(self, settings, **kw)
        if batch_size < 1 or max_delay_ms < 0:
            raise ValueError("batch_size must be >= 1 and max_delay_ms >= 0")
        self.batch_size = batch_size
        self.max_delay_ms = max_delay_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self._setup(runtime_context)
        self.pending = runtime_context.get_list_state(
            ListStateDescriptor("pending", Types.PICKLED_BYTE_ARRAY())
        )
        # Records added per key since its last flush. Only a hint for flushing by count: after
        # a restore it starts at 0 and the restored timers flush what the state holds.
        self.counts: dict[Any, int] = {}

    def close(self) -> None:
        self.close_model()

    def accept(self, value: Any) -> dict[str, Any] | None:
        """Per-record hook: the record to predict (by column name), or None to drop it."""
        return as_record(value)

    def emit(self, batch: Batch) -> Iterable[Any]:
        """Batch hook: what one batch of accepted records becomes downstream. JSON lines here;
        override it to emit your own types, using `score_batch(batch)` (the model's results and
        the version that made them, or why the model could not score the batch)."""
        return self.predict_batch(batch)

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        row = self.accept(value)
        if row is None:
            return
        event_ms = ctx.timestamp()
        if event_ms is not None and event_ms != NO_WATERMARK:  # Long.MIN_VALUE: no time
            row[EVENT_TIME] = event_ms
        key = ctx.get_current_key()
        n = self.counts.get(key, 0) + 1
        if n == 1 and self.max_delay_ms:
            ts = ctx.timer_service()
            ts.register_processing_time_timer(ts.current_processing_time() + self.max_delay_ms)
            # Processing-time timers are dropped when a bounded input ends; the final
            # watermark fires event-time timers, so this one flushes the last batch.
            ts.register_event_time_timer(END_OF_INPUT)
        if n >= self.batch_size or not self.max_delay_ms:
            buffered = list(self.pending.get() or ())
            buffered.append(row)
            self.pending.clear()
            self.counts[key] = 0
            yield from self._flush(buffered, ctx)
        else:
            self.pending.add(row)
            self.counts[key] = n

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        buffered = list(self.pending.get() or ())
        self.counts[ctx.get_current_key()] = 0
        if buffered:
            self.pending.clear()
            yield from self._flush(buffered, ctx)

    def _flush(self, buffered: list[dict[str, Any]], ctx: Any) -> Iterator[Any]:
        """Emits the buffered records, a batch per model version their event times need."""
        if EVENT_TIME not in buffered[-1] and EVENT_TIME not in buffered[0]:
            yield from self.emit(Batch(records=buffered))
            return
        assert self.model is not None
        # A record buffered without a time (restored from before times were kept): now.
        now = int(time.time() * 1000)
        times = np.fromiter((r.get(EVENT_TIME, now) for r in buffered), np.int64, len(buffered))
        watermark = ctx.timer_service().current_watermark()
        for part in self.by_version(Batch(records=buffered, event_ms=times)):
            yield from self.emit(part)
        if watermark is not None and watermark > NO_WATERMARK:
            self.model.advance(watermark)


class PredictVectorized(_Predicting, ScalarFunction):  # type: ignore[misc]
    """The vectorized path: a pandas UDF over the columns named in `columns`, in that order.

    Register it with `udf(PredictVectorized(columns, ...), result_type=DataTypes.STRING(),
    func_type="pandas")` and call it with those columns; it returns one JSON line per row.
    With `columns=[JSON_LINES]` it takes one STRING column of JSON lines instead.
    """

    def __init__(
        self, columns: Sequence[str], settings: ModelSettings | None = None, **kw: Any
    ) -> None:
        ReloaderMixin.__init__(self, settings, **kw)
        self.columns = tuple(columns)

    def open(self, function_context: FunctionContext) -> None:
        self._setup(function_context)

    def close(self) -> None:
        self.close_model()

    def eval(self, *series: pd.Series) -> pd.Series:
        if self.columns == (JSON_LINES,):
            batch = Batch(records=[parse_record(line) for line in series[0]])
        else:
            batch = Batch(
                columns={name: s.to_numpy() for name, s in zip(self.columns, series, strict=True)}
            )
        return pd.Series(self.predict_batch(batch), dtype=object)


class PredictRecord(_Predicting, ProcessFunction):  # type: ignore[misc]
    """One Python -> V8 round trip per record: the row-at-a-time baseline."""

    def __init__(self, settings: ModelSettings | None = None, **kw: Any) -> None:
        ReloaderMixin.__init__(self, settings, **kw)

    def open(self, runtime_context: RuntimeContext) -> None:
        self._setup(runtime_context)

    def close(self) -> None:
        self.close_model()

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterable[str]:
        return self.predict_batch(Batch(records=[as_record(value)]))


# -- routing ------------------------------------------------------------------------------------


class JsonEventTime(TimestampAssigner):  # type: ignore[misc]
    """A JSON line's event time from one of its fields: milliseconds since the epoch, or an RFC
    3339 time with a zone. A line without a usable time gets the time it is read at: it is
    scored by the version of now (and a replay may score it by another)."""

    def __init__(self, field_name: str) -> None:
        self.field_name = field_name

    def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
        return event_time_of(value, self.field_name)


def event_time_of(line: str | bytes, field_name: str) -> int:
    """See `JsonEventTime`."""
    try:
        raw = json.loads(line).get(field_name)
    except (ValueError, AttributeError):
        raw = None
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        return int(raw)
    if isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None and when.tzinfo is not None:
            return int(when.timestamp() * 1000)
    return int(time.time() * 1000)


def keys_per_subtask(parallelism: int, max_parallelism: int) -> list[int]:
    """One INT key per downstream subtask: keying by `keys[i % parallelism]` gives every subtask
    exactly one key, so the process path keeps one buffer, and one batch, per subtask.

    PyFlink's `key_by` keys by a one-field `Row` holding the key; where such a key lands is
    asked of Flink itself (`KeyGroupRangeAssignment`, through the client's JVM), so the answer
    is exact for the Flink version that runs the job.
    """
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    jvm = gateway.jvm
    assign = jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignKeyToParallelOperator
    fields = gateway.new_array(jvm.java.lang.Object, 1)
    keys: dict[int, int] = {}
    candidate = 0
    while len(keys) < parallelism:
        fields[0] = jvm.java.lang.Integer(candidate)
        subtask = int(
            assign(jvm.org.apache.flink.types.Row.of(fields), max_parallelism, parallelism)
        )
        keys.setdefault(subtask, candidate)
        candidate += 1
    return [keys[i] for i in range(parallelism)]


class RouteBySubtask:
    """Key selector for `PredictBatched`: spreads records evenly, one key per subtask.

    Rows are spread by their integer `id` (field `id_index`), anything else (JSON lines) by a
    hash of the element: a spread, not a grouping, so no parsing is needed here.
    """

    def __init__(self, parallelism: int, max_parallelism: int, id_index: int | None = 0) -> None:
        self.id_index = id_index
        self.keys = keys_per_subtask(parallelism, max_parallelism)

    def __call__(self, value: Any) -> int:
        n = len(self.keys)
        if isinstance(value, Row):
            rid = value[self.id_index] if self.id_index is not None else None
            if isinstance(rid, int):
                return self.keys[rid % n]
            value = value[0] if len(value) == 1 else str(value)
        data = value if isinstance(value, bytes) else str(value).encode()
        return self.keys[zlib.crc32(data) % n]
