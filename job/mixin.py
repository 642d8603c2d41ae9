"""`ReloaderMixin`: a `HotModel` inside a PyFlink function, with its state as Flink metrics.

Any PyFlink function with `open(context)` / `close()` can mix it in: DataStream functions
(`ProcessFunction`, `MapFunction`, ...) and Table API UDFs (including pandas UDFs). The model's
URL and options come from job parameters (`model.url`, `model.poll-interval`, ...), falling back
to what the function was constructed with, so one job graph can be pointed at another store
without rebuilding it.

Metrics (in the function's metric group, under `model`):
    version_number                  the version label when it is an integer, else -1
    version_sha256_prefix           first 12 hex digits of the serving bundle's sha256, as an int
    loaded_at_ms                    when the serving version was built
    last_swap_stall_us, last_build_ms
    checks, reloads, reload_failures, not_ready, rebuilds   (counts from the agent)
    predictions (meter)             records predicted
    batch_latency_us (distribution) microseconds per batch predicted

Every value is pushed from the processing thread with the batches it predicts (at most every
100 ms, and at once when the serving version changes); none is a Python gauge. In thread mode
Flink reads a Python gauge from its metrics thread through the task thread's interpreter state,
concurrently with that thread: that crashed the JVM here (SIGSEGV in take_gil and
_PyEval_EvalFrameDefault). So the gauge-like values are counters set to the current value (`inc`
by the difference), which reporters and the REST API show like gauges. A subtask that predicts
nothing does not refresh them.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from reloader.agent import HotModel
from reloader.compat import Fixed
from reloader.layout import DEFAULT_MAX_BUNDLE_BYTES
from reloader.runtime import ModelRuntime
from reloader.values import LoadedModel, ModelInfo, Versioned

log = logging.getLogger("job")

T = TypeVar("T")
PARAM_PREFIX = "model."


@dataclass(frozen=True)
class ModelSettings:
    """Where the model comes from and how it is followed. Every field has a job parameter
    `model.<name with '-'>` (e.g. `model.poll-interval`) that overrides it."""

    url: str = ""
    poll_interval: float = 1.0
    jitter: float = 0.1
    max_backoff: float = 60.0
    cache_dir: str = ""
    public_key: str = ""
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    heap_limit_mb: int = 256
    call_timeout: float = 5.0
    # A new bundle's first build runs in a limited child process (reloader.sandbox), with this
    # much memory (0: 4 x the heap limit).
    trial: bool = True
    trial_memory_mb: int = 0
    # Functions that see event times but no watermark (the SQL function): how far behind the
    # latest event time records may still come; models of earlier versions close after that.
    lateness_ms: int = 60_000
    # The name this job's readers give the store's fleet view (default: the operator's name).
    job_name: str = ""
    # A channel of the store whose version scores the same batches beside the serving one, for
    # comparison only (job.shadow); "" for none.
    shadow: str = ""
    # Each output record also carries the shadow's prediction (`"shadow"`; JSON outputs).
    shadow_output: bool = False
    # A channel whose version serves `canary_fraction` of the keys (the field `canary_key`),
    # rolled back when its error rate passes the serving one's by `canary_max_error_rate`.
    canary: str = ""
    canary_fraction: float = 0.1
    canary_key: str = "id"
    canary_max_error_rate: float = 0.05
    source_options: dict[str, Any] = field(default_factory=dict)
    # The typed columns the job fixed when it started (reloader.compat): a version that does not
    # fit them is refused before it serves. Set by the functions of job.table.
    fixed: Fixed | None = None

    def with_parameters(self, get: Any) -> ModelSettings:
        """A copy with any `model.*` job parameter applied (`get(key, default) -> str`)."""
        changes: dict[str, Any] = {}
        for name, key in _parameters().items():
            raw = get(key, None)
            if raw is None or raw == "":
                continue
            try:
                changes[name] = parameter_value(raw, _field_types()[name])
            except ValueError as e:
                raise ValueError(f"job parameter {key}={raw!r}: {e}") from None
        return replace(self, **changes) if changes else self

    def hot_model(self, client: Mapping[str, str] | None = None) -> HotModel:
        """A `HotModel` following `url` with these settings (not started); `client` names the
        reader for the store's fleet view (job, subtask)."""
        return HotModel(
            self.url,
            poll_interval=self.poll_interval,
            jitter=self.jitter,
            max_backoff=self.max_backoff,
            cache_dir=self.cache_dir or None,
            public_key=self.public_key or None,
            max_bundle_bytes=self.max_bundle_bytes,
            heap_limit=self.heap_limit_mb << 20,
            call_timeout=self.call_timeout,
            trial=self.trial,
            trial_memory=(self.trial_memory_mb << 20) or None,
            source_options=self.source_options,
            fixed=self.fixed,
            client=client,
        )

    def as_parameters(self) -> dict[str, str]:
        """Job parameters carrying these settings (`set_global_job_parameters`)."""
        out = {}
        for name, key in _parameters().items():
            value = getattr(self, name)
            if value not in ("", None):
                out[key] = str(value)
        return out


@functools.cache
def _parameters() -> dict[str, str]:
    """ModelSettings field -> its job parameter `model.<name with '-'>`: every field but the
    source options (keyword arguments of a store backend, not one value) and the fixed columns
    (the job's own schema, not a setting)."""
    return {
        f.name: PARAM_PREFIX + f.name.replace("_", "-")
        for f in fields(ModelSettings)
        if f.name not in ("source_options", "fixed")
    }


@functools.cache
def _field_types() -> dict[str, Any]:
    # The declared types (annotations are strings here: `from __future__ import annotations`),
    # not the current values' types: `poll_interval=1` is still a float field.
    return typing.get_type_hints(ModelSettings)


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parameter_value(raw: str, kind: Any) -> Any:
    """`raw` (a job parameter's text) as a value of the type `kind`: str, int, float or bool,
    or one of them `| None`."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if args and typing.get_origin(kind) in (typing.Union, types.UnionType):
        if len(args) != 1:
            raise TypeError(f"cannot convert a job parameter to {kind}")
        kind = args[0]
    if kind is bool:
        text = raw.strip().lower()
        if text not in _TRUE | _FALSE:
            raise ValueError(f"expected true or false, got {raw!r}")
        return text in _TRUE
    if kind in (str, int, float):
        try:
            return kind(raw.strip() if kind is not str else raw)
        except ValueError:
            raise ValueError(f"expected {kind.__name__}, got {raw!r}") from None
    raise TypeError(f"cannot convert a job parameter to {kind}")


def job_name(ctx: Any) -> str:
    """The name of the job a function runs in (PyFlink's contexts know the task's name only,
    `<operator> (i/n)`; the job parameter `pipeline.name` is not passed): the task's name
    without its subtask suffix, else the operator's."""
    for getter in ("get_task_name", "get_task_name_with_subtasks"):
        get = getattr(ctx, getter, None)
        if get is not None:
            try:
                return re.sub(r"\s*\(\d+/\d+\)(#\d+)?$", "", str(get()))
            except Exception:  # a context that cannot tell
                continue
    return ""


def subtask_index(ctx: Any) -> int:
    """The subtask index from any PyFlink context (process mode, thread mode, Table UDFs).

    Thread mode's wrapper calls a Java method Flink 2 no longer has, so it goes through the task
    info there.
    """
    inner = getattr(ctx, "_runtime_context", None)
    if inner is not None:
        try:
            return int(inner.getTaskInfo().getIndexOfThisSubtask())
        except Exception:
            pass
    for attr in ("get_index_of_this_subtask",):
        try:
            return int(getattr(ctx, attr)())
        except Exception:
            pass
    value = getattr(ctx, "_index_of_this_subtask", None)
    return int(value) if value is not None else 0


class ReloaderMixin:
    """Gives a PyFlink function `self.model` (a started `HotModel`) and its metrics.

    Call `open_model(ctx)` from `open` and `close_model()` from `close`. The hot path calls
    `self.run_model(call)` once per batch (or record): the result carries the version that
    predicted.
    """

    settings: ModelSettings
    model: HotModel | None = None
    job: str = ""  # the job's name for the store's fleet view (set by open_model)

    def __init__(self, settings: ModelSettings | None = None, **kw: Any) -> None:
        self.settings = settings or ModelSettings(**kw)
        self.model = None
        self._predictions: Any = None
        self._latency: Any = None
        self._values: dict[str, Any] = {}
        self._reported: dict[str, int] = {}
        self._reported_sha256: str | None = None
        self._next_sync = 0.0
        self._model_group: Any = None

    # -- life cycle -----------------------------------------------------------------------------

    def open_model(self, ctx: Any) -> None:
        get = getattr(ctx, "get_job_parameter", None)
        settings = self.settings.with_parameters(get) if get else self.settings
        if not settings.url:
            raise ValueError("no model URL: pass url=... or set the job parameter model.url")
        self.subtask = subtask_index(ctx)
        self.active_settings = settings
        self.log_prefix = f"[{type(self).__name__} subtask {self.subtask}]"
        self.job = settings.job_name or job_name(ctx)  # as the store's fleet view names it
        client = {"job": self.job, "subtask": str(self.subtask)}
        self.model = settings.hot_model(client=client)
        self.model.start()
        info = self.model.info
        log.info(
            "%s serving %s %s (%s) from %s",
            self.log_prefix,
            info.model,
            info.version,
            (info.sha256 or "")[:12],
            settings.url,
        )
        self._register_metrics(ctx)

    def close_model(self) -> None:
        if self.model is not None:
            self.model.stop()
            self.model = None

    # -- hot path -------------------------------------------------------------------------------

    def run_model(
        self, call: Callable[[ModelRuntime], T], on: LoadedModel | None = None
    ) -> Versioned[T]:
        """`call(runtime)` on the current model (see `HotModel.run`), or on `on` (a model
        `HotModel.split` chose for some rows by their event times), timed into the metrics."""
        assert self.model is not None, "open_model() was not called"
        t0 = time.perf_counter()
        result = self.model.run(call) if on is None else self.model.run_on(on, call)
        if self._latency is not None:
            self._latency.update(int((time.perf_counter() - t0) * 1e6))
        # A new version is reported with the batch it first predicted.
        self._sync_metrics(force=result.sha256 != self._reported_sha256)
        return result

    def count_predictions(self, rows: int) -> None:
        if self._predictions is not None:
            self._predictions.mark_event(rows)

    # -- metrics --------------------------------------------------------------------------------

    def _register_metrics(self, ctx: Any) -> None:
        group_of = getattr(ctx, "get_metrics_group", None) or getattr(ctx, "get_metric_group", None)
        try:
            base = group_of() if group_of else None
        except Exception:  # metrics disabled (python.metric.enabled=false)
            base = None
        if base is None:
            return
        group = self._model_group = base.add_group("model")
        self._values = {name: group.counter(name) for name in _VALUES}
        self._reported = dict.fromkeys(_VALUES, 0)
        self._predictions = group.meter("predictions", time_span_in_seconds=10)
        self._latency = group.distribution("batch_latency_us")
        # Not set here: in process mode a metric changed in open() is outside any bundle and
        # never reported (Beam's metric container of open() is not the bundles'), so the first
        # batch sets everything (its sha256 differs from None).

    def _sync_metrics(self, *, force: bool = False) -> None:
        """Sets the metrics to the agent's state, at most every 100 ms unless `force`."""
        if not self._values:
            return
        now = time.monotonic()
        if not force and now < self._next_sync:
            return
        self._next_sync = now + 0.1
        assert self.model is not None
        info = self.model.info
        first = self._reported_sha256 is None
        self._reported_sha256 = info.sha256
        for name, value in metric_values(info).items():
            delta = value - self._reported[name]
            # The first sync touches every counter, so a value of 0 is reported too (process
            # mode reports only the counters a bundle touched).
            if delta or first:
                self._values[name].inc(delta)
                self._reported[name] = value


_VALUES = (
    "version_number",
    "version_sha256_prefix",
    "loaded_at_ms",
    "last_swap_stall_us",
    "last_build_ms",
    "checks",
    "reloads",
    "reload_failures",
    "not_ready",
    "rebuilds",
    "late_loads",
    "versions_loaded",
)


def metric_values(info: ModelInfo) -> dict[str, int]:
    """The integer metrics `ReloaderMixin` reports for an agent's state."""
    version = info.version or ""
    number = int(version) if version.isascii() and version.isdigit() else -1
    return {
        "version_number": number if number < 1 << 62 else -1,
        "version_sha256_prefix": int((info.sha256 or "0")[:12], 16),
        "loaded_at_ms": int((info.loaded_at or 0) * 1000),
        "last_swap_stall_us": int((info.last_swap_stall_seconds or 0) * 1e6),
        "last_build_ms": int((info.last_build_seconds or 0) * 1e3),
        "checks": info.checks,
        "reloads": info.reloads,
        "reload_failures": info.failures,
        "not_ready": info.not_ready,
        "rebuilds": info.rebuilds,
        "late_loads": info.late_loads,
        "versions_loaded": sum(bool(s["loaded"]) for s in info.segments) or 1,
    }
