"""`HotModel`: a model that follows its store while the process keeps predicting.

Three roles, three objects (in the style of watchdog's emitter/observer split):
- `ServingSlot` (reloader/serving.py): the serving pointer and the swap, on the processing
  thread (whoever calls `predict`; one at a time). Nothing there waits for the network, a
  compiler, or a `close()`.
- `StoreFollower` (reloader/follower.py): the poll thread (`reloader-poll`, daemon): reads the
  manifest, loads new versions, offers them, closes retired runtimes, applies the failure policy.
- `Loader` (reloader/load.py): the one fetch → verify → trial → build → self-test → warm-up path.
`HotModel` owns the three and the life cycle: `start()` loads synchronously, then follows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from reloader.buffers import ColumnScores
from reloader.codec import Matrix, Prediction
from reloader.compat import Fixed
from reloader.errors import (
    BundleMemoryError,
    BundleTimeout,
    MissingObject,
    NotReady,
    RuntimeClosed,
)
from reloader.fetch import default_cache_dir
from reloader.follower import StoreFollower
from reloader.layout import DEFAULT_MAX_BUNDLE_BYTES
from reloader.load import Loader, LoadSettings, public_key_of
from reloader.runtime import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_HEAP_LIMIT,
    DEFAULT_INIT_TIMEOUT,
    ModelRuntime,
)
from reloader.serving import ServingSlot
from reloader.sources import Source, open_source
from reloader.values import Clock, LoadedModel, ModelInfo, SystemClock, Versioned

_BREAKING = (BundleTimeout, BundleMemoryError, RuntimeClosed)
T = TypeVar("T")


class HotModel:
    """A model served from a store URL and swapped, without a pause, when the store changes.

    Args:
        url: the store root: a path, `file://…`, `http(s)://…`, or `s3://bucket/prefix`.
        poll_interval: seconds between manifest checks (local stores are also watched).
        jitter: each wait is multiplied by a random factor in [1 - jitter, 1 + jitter], so many
            workers do not poll in lock-step.
        max_backoff: ceiling of the exponential back-off after transport errors.
        cache_dir: where verified bundles are kept (default `$RELOADER_CACHE_DIR`, else
            `~/.cache/tf-on-flink/bundles`, else the temp dir).
        max_bundle_bytes: bundles larger than this are refused before download.
        public_key: Ed25519 public key (object, PEM path, PEM bytes, base64); when set, only
            manifests signed by it are loaded.
        heap_limit, call_timeout, init_timeout: per-runtime V8 limits (see `ModelRuntime`).
        warmup_rows, warmup_calls: a new runtime predicts `warmup_calls` batches of up to
            `warmup_rows` rows before it is offered, so V8 has optimized its code.
        trial: build each new bundle first in a memory- and time-limited child process
            (`reloader.sandbox`), so one that allocates memory without bound is refused
            without touching this process.
        trial_memory, trial_timeout: that child's memory (bytes, default 4 x heap_limit) and
            wall-clock (seconds, default 2 x init_timeout + 10 x call_timeout) limits.
        fixed: the typed columns the caller fixed when it started (`reloader.compat.Fixed`): a
            version that does not fit them is refused (`IncompatibleBundle`) and quarantined,
            and the current one keeps serving. The first version must fit too.
        watch: use file-system events for local stores.
        clock: time source of the poll thread (tests inject one).
        source: an already opened `Source` (default: `open_source(url, **source_options)`).
        source_options: keyword arguments for the source (e.g. `endpoint`, `timeout`, `token`).
        client: who this reader is, for the store's fleet view (`Source.report`): `job` and
            `subtask` (or a `client` id); default: this host and process. `set_report` adds its
            role and a state.
    """

    def __init__(
        self,
        url: str,
        *,
        poll_interval: float = 10.0,
        jitter: float = 0.1,
        max_backoff: float = 300.0,
        cache_dir: str | Path | None = None,
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        public_key: Ed25519PublicKey | str | Path | bytes | None = None,
        heap_limit: int = DEFAULT_HEAP_LIMIT,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        init_timeout: float = DEFAULT_INIT_TIMEOUT,
        warmup_rows: int = 256,
        warmup_calls: int = 64,
        trial: bool = True,
        trial_memory: int | None = None,
        trial_timeout: float | None = None,
        fixed: Fixed | None = None,
        watch: bool = True,
        clock: Clock | None = None,
        source: Source | None = None,
        source_options: Mapping[str, Any] | None = None,
        client: Mapping[str, str] | None = None,
    ) -> None:
        if poll_interval <= 0 or not 0 <= jitter < 1 or max_bundle_bytes <= 0:
            raise ValueError("poll_interval > 0, 0 <= jitter < 1 and max_bundle_bytes > 0")
        self.url = url
        self.settings = LoadSettings(
            cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir(),
            max_bundle_bytes=max_bundle_bytes,
            public_key=public_key_of(public_key),
            heap_limit=heap_limit,
            call_timeout=call_timeout,
            init_timeout=init_timeout,
            warmup_rows=warmup_rows,
            warmup_calls=warmup_calls,
            trial=trial,
            trial_memory=trial_memory,
            trial_timeout=trial_timeout,
            fixed=fixed,
        )
        self.poll_interval = poll_interval
        self.jitter = jitter
        self.max_backoff = max_backoff
        self._watch_enabled = watch
        self._clock: Clock = clock or SystemClock()
        self._source = source
        self._source_options = dict(source_options or {})
        self._client = dict(client or {})
        self._role = "serving"
        self._state: tuple[str, str] | None = None
        self._slot = ServingSlot()
        self._follower: StoreFollower | None = None
        self._unwatch: Callable[[], None] | None = None
        self._started = False

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> HotModel:
        """Loads the current version synchronously, then follows the store in the background.

        Raises the first load's error (`NotReady`, `SourceError`, `ManifestError`,
        `IntegrityError`, `BundleError`, `CacheError`): a process must not serve without a model.
        """
        if self._started:
            raise RuntimeError("HotModel.start() may be called once")
        self._started = True
        if self._source is None:
            self._source = open_source(self.url, **self._source_options)
        follower = self._follower = StoreFollower(
            self.url,
            self._source,
            self._slot,
            Loader(self.settings, clock=self._clock),
            clock=self._clock,
            poll_interval=self.poll_interval,
            jitter=self.jitter,
            max_backoff=self.max_backoff,
            client=self._client,
        )
        follower.role, follower.state = self._role, self._state
        try:
            if self._watch_enabled:
                # Before the first read, so a publish during the first load is not missed.
                self._unwatch = self._source.watch(follower.request_check)
            follower.first_load()
        except BaseException:
            self.stop()
            raise
        self._slot.adopt()
        follower.start()
        return self

    def probe(self) -> bool:
        """Whether the store has a manifest for this model now: one read of it, nothing loaded,
        nothing logged. For a follower of a channel that may not exist yet: `start()` logs its
        failure, once per attempt. Raises the read's `SourceError` (the store unreachable, ...)
        but not `MissingObject`: that is False."""
        if self._source is not None:
            return self._has_manifest(self._source)
        with open_source(self.url, **self._source_options) as source:
            return self._has_manifest(source)

    @staticmethod
    def _has_manifest(source: Source) -> bool:
        try:
            return source.read_manifest() is not None
        except MissingObject:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """Stops polling and closes every runtime. Call it once the processing thread is done."""
        self._started = True  # a stopped model cannot be started again
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._follower is not None:
            self._follower.stop(timeout)
        self._slot.close_all()
        if self._source is not None:
            self._source.close()

    def __enter__(self) -> HotModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- hot path (processing thread) -------------------------------------------------------------

    def current(self) -> LoadedModel:
        """The model to use for the next call, adopting a newly ready one first. With a
        publish of an effective time (`reloader.timeline`), the one for a record of now.

        Raises `NotReady` before `start()` or after `stop()`.
        """
        timeline = self._slot.current()
        if timeline is None:
            raise NotReady(f"no model is loaded from {self.url} (start() not called, or stopped)")
        only = timeline.only
        if only is not None:
            return only
        return self._model(timeline, timeline.index(int(self._clock.time() * 1000)))

    def split(self, event_ms: npt.ArrayLike) -> list[tuple[LoadedModel, npt.NDArray[np.intp]]]:
        """The model for each group of rows, by the rows' event times (ms since the epoch): a
        version published with an effective time T scores the rows with event time >= T, the
        version before it the others. Usually one group: all rows, one model.

        A model whose segment the watermark had passed is loaded again here, on this thread
        (a late record; counted in `info.late_loads`).
        """
        timeline = self._slot.current()
        if timeline is None:
            raise NotReady(f"no model is loaded from {self.url} (start() not called, or stopped)")
        self._slot.timed = True
        only = timeline.only
        if only is not None:
            return [(only, np.arange(len(np.asarray(event_ms)), dtype=np.intp))]
        return [(self._model(timeline, i), rows) for i, rows in timeline.split(event_ms)]

    def run_at(
        self, event_ms: npt.ArrayLike, call: Callable[[ModelRuntime, npt.NDArray[np.intp]], T]
    ) -> list[tuple[npt.NDArray[np.intp], Versioned[T]]]:
        """`call(runtime, rows)` once per model that scores some of the rows (see `split`), with
        the rows it scores and the version that answered."""
        out: list[tuple[npt.NDArray[np.intp], Versioned[T]]] = []
        for m, rows in self.split(event_ms):

            def on_rows(rt: ModelRuntime, rows: npt.NDArray[np.intp] = rows) -> T:
                return call(rt, rows)

            out.append((rows, self.run_on(m, on_rows)))
        return out

    def advance(self, watermark_ms: int) -> None:
        """The event time below which no more records will come (Flink's watermark): models of
        segments that end at or before it are closed by the poll thread."""
        current = self._slot.watermark
        if current is None or watermark_ms > current:
            self._slot.watermark = int(watermark_ms)

    def _model(self, timeline: Any, index: int) -> LoadedModel:
        loaded = timeline.segments[index].loaded
        if loaded is None:
            if self._follower is None:
                raise NotReady(f"no model is loaded from {self.url}")
            loaded = self._follower.load_late(timeline, index).segments[index].loaded
        return loaded  # type: ignore[no-any-return]

    def predict(self, x: npt.ArrayLike) -> Matrix:
        """float32 matrix [n, inputs] -> float32 [n, outputs], by the current model."""
        return self.predict_versioned(x).value

    def predict_versioned(self, x: npt.ArrayLike) -> Versioned[Matrix]:
        """Like `predict`, with the version and bundle hash of the model that answered."""
        return self.run(lambda runtime: runtime.predict(x))

    def predict_rows(
        self, records: Sequence[Mapping[str, Any] | Sequence[Any]]
    ) -> Versioned[list[Prediction]]:
        """Records (dicts by feature name, or rows) -> predictions, with the model version."""
        return self.run(lambda runtime: runtime.predict_rows(records))

    def predict_columns(
        self, columns: Mapping[str, Any], n: int | None = None
    ) -> Versioned[ColumnScores]:
        """The typed path (`ModelRuntime.predict_columns`), with the model version."""
        return self.run(lambda runtime: runtime.predict_columns(columns, n))

    def predict_dicts(
        self, records: Sequence[Mapping[str, Any]]
    ) -> Versioned[list[dict[str, Any]]]:
        """Records -> output fields per the declared output kind (`ModelRuntime.predict_dicts`),
        with the model version."""
        return self.run(lambda runtime: runtime.predict_dicts(records))

    def predict_records(self, records: Sequence[Any]) -> Versioned[list[dict[str, Any]]]:
        """The bundle's JSON path (`ml.predict`), with the model version."""
        return self.run(lambda runtime: runtime.predict_records(records))

    def run(self, call: Callable[[ModelRuntime], T]) -> Versioned[T]:
        """`call(runtime)` on the current model, with the version and hash of that model.

        For custom calls (e.g. predictions plus `runtime.meta`); a call that breaks the runtime
        (timeout, heap) has the poll thread rebuild it, as with `predict`.
        """
        return self.run_on(self.current(), call)

    def run_on(self, m: LoadedModel, call: Callable[[ModelRuntime], T]) -> Versioned[T]:
        """`call(runtime)` on `m`, a model `split` returned (the same failure rules as `run`)."""
        try:
            return Versioned(call(m.runtime), m.version, m.sha256)
        except _BREAKING as e:
            if self._follower is not None:
                self._follower.report_broken(m, e)
            raise

    # -- observability ----------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        serving, pending_timeline = self._slot.serving, self._slot.pending
        current = serving.newest.loaded if serving is not None else None
        pending = pending_timeline.newest.loaded if pending_timeline is not None else None
        if pending is not None and current is not None and pending is current:
            pending = None  # the same newest version: a pruned or rebuilt timeline
        manifest = serving.newest.manifest if serving is not None else None
        f = self._follower
        return ModelInfo(
            url=self.url,
            model=manifest.model if manifest else None,
            version=manifest.version if manifest else None,
            sha256=manifest.sha256 if manifest else None,
            loaded_at=current.loaded_at if current else None,
            last_check=f.last_check if f else None,
            last_error=f.last_error if f else None,
            last_error_at=f.last_error_at if f else None,
            checks=f.checks if f else 0,
            unchanged=f.unchanged if f else 0,
            reloads=f.reloads if f else 0,
            rebuilds=f.rebuilds if f else 0,
            failures=f.failures if f else 0,
            not_ready=f.not_ready if f else 0,
            last_build_seconds=f.last_build if f else None,
            last_swap_stall_seconds=self._slot.last_stall,
            max_swap_stall_seconds=self._slot.max_stall,
            pending_version=pending.version if pending else None,
            quarantined=dict(f.quarantine) if f else {},
            watching=self._unwatch is not None,
            segments=serving.describe() if serving is not None else [],
            watermark_ms=self._slot.watermark,
            late_loads=f.late_loads if f else 0,
        )

    def set_report(
        self, *, role: str | None = None, state: str | None = None, sha256: str | None = None
    ) -> None:
        """Adds to what this reader tells its store with every later poll (`Source.report`, the
        fleet view of `python -m server`); any thread, before or after `start()`.

        Args:
            role: what this model is to its job: `serving` (the default), `shadow`, `canary`.
            state: a short text about one bundle, e.g. why the job rolled it back (begin it with
                `reloader.sources.STATE_ROLLED_BACK` then); `""` removes it. It is reported
                while that bundle is this model's newest, so a store pointing elsewhere drops it.
                A new state is sent at once (one conditional read of the manifest).
            sha256: the bundle `state` is about; default: the newest one this model serves.
        """
        if role is not None:
            self._role = role
        if state is not None:
            if sha256 is None:
                latest = self._slot.latest
                sha256 = latest.newest.manifest.sha256 if latest is not None else ""
            self._state = (state, sha256) if state else None
        follower = self._follower
        if follower is not None:
            follower.role, follower.state = self._role, self._state
            if state is not None:
                follower.request_check()

    def request_check(self) -> None:
        """Asks the poll thread to check the store now (what a file-system event does)."""
        if self._follower is not None:
            self._follower.request_check()
