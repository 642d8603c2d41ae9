"""`HotModel`: a model that follows its store while the process keeps predicting.

Threads and what they own:
- the *processing thread* (whoever calls `predict`; one at a time) owns the serving runtime. At
  each call it checks one attribute; when a new model is ready it swaps the pointer under a lock
  and hands the old runtime to the poll thread. Nothing on this thread waits for the network, a
  compiler, or a `close()`.
- the *poll thread* (`reloader-poll`, daemon) reads the manifest (interval + jitter, exponential
  back-off after errors, woken early by file-system events), downloads and verifies the bundle,
  builds and self-tests the new runtime, warms it up, offers it, and closes retired runtimes.
- the watcher thread of a local store (watchdog) only sets an event.

Failures never touch the serving model: each is counted, shown in `info`, logged once, and
retried (transport errors, "not ready") or quarantined by bundle hash (integrity, signature,
build and self-test failures) until the manifest points elsewhere.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from reloader.codec import Matrix, Prediction
from reloader.errors import (
    BundleMemoryError,
    BundleTimeout,
    CacheError,
    ManifestError,
    MissingObject,
    NotReady,
    ReloaderError,
    RuntimeClosed,
    SignatureError,
    SourceError,
)
from reloader.fetch import default_cache_dir, download_bundle
from reloader.manifest import Manifest, load_public_key, parse
from reloader.runtime import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_HEAP_LIMIT,
    DEFAULT_INIT_TIMEOUT,
    ModelRuntime,
)
from reloader.sources import Source, Validator, open_source
from reloader.values import Clock, LoadedModel, ModelInfo, SystemClock, Versioned

log = logging.getLogger("reloader")

DEFAULT_MAX_BUNDLE_BYTES = 64 << 20
_BREAKING = (BundleTimeout, BundleMemoryError, RuntimeClosed)
T = TypeVar("T")
RETIRE_POLL = 0.05  # seconds between looks for a retired runtime while a swap is pending


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
        watch: use file-system events for local stores.
        clock: time source of the poll thread (tests inject one).
        source: an already opened `Source` (default: `open_source(url, **source_options)`).
        source_options: keyword arguments for the source (e.g. `endpoint`, `timeout`, `token`).
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
        watch: bool = True,
        clock: Clock | None = None,
        source: Source | None = None,
        source_options: Mapping[str, Any] | None = None,
    ) -> None:
        if poll_interval <= 0 or not 0 <= jitter < 1 or max_bundle_bytes <= 0:
            raise ValueError("poll_interval > 0, 0 <= jitter < 1 and max_bundle_bytes > 0")
        self.url = url
        self.poll_interval = poll_interval
        self.jitter = jitter
        self.max_backoff = max(max_backoff, poll_interval)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.max_bundle_bytes = max_bundle_bytes
        self.public_key = (
            load_public_key(public_key)
            if public_key is not None and not isinstance(public_key, Ed25519PublicKey)
            else public_key
        )
        self.heap_limit = heap_limit
        self.call_timeout = call_timeout
        self.init_timeout = init_timeout
        self.warmup_rows = warmup_rows
        self.warmup_calls = warmup_calls
        self._watch_enabled = watch
        self._clock: Clock = clock or SystemClock()
        self._source = source
        self._source_options = dict(source_options or {})
        self._random = random.Random()

        # Pointer state: `_pending` is written by the poll thread and taken by the processing
        # thread; the lock guards only that exchange.
        self._lock = threading.Lock()
        self._current: LoadedModel | None = None
        self._pending: LoadedModel | None = None
        self._retired: collections.deque[LoadedModel] = collections.deque()

        self._validator: Validator | None = None
        self._quarantine: dict[str, str] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._check_requested = False
        self._thread: threading.Thread | None = None
        self._unwatch: Callable[[], None] | None = None
        self._failures_in_row = 0
        self._last_logged: str | None = None
        self._rebuild: LoadedModel | None = None
        self._rebuilds = 0

        self._checks = self._unchanged = self._reloads = self._failures = self._not_ready = 0
        self._last_check: float | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_build: float | None = None
        self._last_stall: float | None = None
        self._max_stall: float | None = None

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> HotModel:
        """Loads the current version synchronously, then follows the store in the background.

        Raises the first load's error (`NotReady`, `SourceError`, `ManifestError`,
        `IntegrityError`, `BundleError`, `CacheError`): a process must not serve without a model.
        """
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError("HotModel.start() may be called once")
        if self._source is None:
            self._source = open_source(self.url, **self._source_options)
        try:
            if self._watch_enabled:
                # Before the first read, so a publish during the first load is not missed.
                self._unwatch = self._source.watch(self._on_change)
            self._check(first=True)
        except BaseException:
            self.stop()
            raise
        self._adopt()
        self._thread = threading.Thread(
            target=self._poll_loop, name=f"reloader-poll {self.url}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stops polling and closes every runtime. Call it once the processing thread is done."""
        self._stop.set()
        self._wake.set()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            models = [self._pending, self._current]
            self._pending = self._current = None
        self._close_retired()
        for m in models:
            if m is not None:
                m.runtime.close()
        if self._source is not None:
            self._source.close()

    def __enter__(self) -> HotModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- hot path (processing thread) -------------------------------------------------------------

    def current(self) -> LoadedModel:
        """The model to use for the next call, adopting a newly ready one first.

        Raises `NotReady` before `start()` or after `stop()`.
        """
        if self._pending is not None:
            self._adopt()
        current = self._current
        if current is None:
            raise NotReady(f"no model is loaded from {self.url} (start() not called, or stopped)")
        return current

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

    def predict_records(self, records: Sequence[Any]) -> Versioned[list[dict[str, Any]]]:
        """The bundle's JSON path (`ml.predict`), with the model version."""
        return self.run(lambda runtime: runtime.predict_records(records))

    def run(self, call: Callable[[ModelRuntime], T]) -> Versioned[T]:
        """`call(runtime)` on the current model, with the version and hash of that model.

        For custom calls (e.g. predictions plus `runtime.meta`); a call that breaks the runtime
        (timeout, heap) has the poll thread rebuild it, as with `predict`.
        """
        m = self.current()
        try:
            return Versioned(call(m.runtime), m.version, m.sha256)
        except _BREAKING as e:
            self._broke(m, e)
            raise

    def _broke(self, m: LoadedModel, error: Exception) -> None:
        """The serving runtime was terminated (timeout, heap): have the poll thread rebuild it.

        The call that broke it raises; calls until the rebuild is adopted raise `RuntimeClosed`.
        """
        if self._rebuild is m or m is not self._current:
            return
        self._failures += 1
        self._record(error)
        self._rebuild = m
        self._wake.set()  # an error path, not the swap: waking the poll thread is fine here

    def _adopt(self) -> None:
        t0 = time.perf_counter()
        with self._lock:
            new, self._pending = self._pending, None
            if new is None:
                return
            old, self._current = self._current, new
        if old is not None:
            # Closing costs milliseconds; the poll thread does it. The processing thread is
            # between calls here, so the old runtime has seen its last one.
            # No wake-up call: waking the poll thread here hands it the GIL mid-swap (measured:
            # 45 µs instead of 4). It looks for retired runtimes on its own, see _poll_loop.
            self._retired.append(old)
        stall = time.perf_counter() - t0
        self._last_stall = stall
        if self._max_stall is None or stall > self._max_stall:
            self._max_stall = stall

    # -- observability ----------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        current, pending = self._current, self._pending
        manifest = current.manifest if current else None
        return ModelInfo(
            url=self.url,
            model=manifest.model if manifest else None,
            version=manifest.version if manifest else None,
            sha256=manifest.sha256 if manifest else None,
            loaded_at=current.loaded_at if current else None,
            last_check=self._last_check,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            checks=self._checks,
            unchanged=self._unchanged,
            reloads=self._reloads,
            rebuilds=self._rebuilds,
            failures=self._failures,
            not_ready=self._not_ready,
            last_build_seconds=self._last_build,
            last_swap_stall_seconds=self._last_stall,
            max_swap_stall_seconds=self._max_stall,
            pending_version=pending.version if pending else None,
            quarantined=dict(self._quarantine),
            watching=self._unwatch is not None,
        )

    def request_check(self) -> None:
        """Asks the poll thread to check the store now (what a file-system event does)."""
        self._on_change()

    # -- poll thread ------------------------------------------------------------------------------

    def _on_change(self) -> None:
        self._check_requested = True
        self._wake.set()

    def _poll_loop(self) -> None:
        clock = self._clock
        due = clock.monotonic() + self._delay()
        while not self._stop.is_set():
            self._wake.clear()
            self._close_retired()
            if self._rebuild is not None:
                self._rebuild_broken()
            if not self._check_requested and clock.monotonic() < due:
                wait = due - clock.monotonic()
                if self._pending is not None and self._current is not None:
                    # A swap is coming: look back soon to close the runtime it retires.
                    wait = min(wait, RETIRE_POLL)
                clock.sleep(wait, self._wake)
                continue
            self._check_requested = False
            try:
                self._check(first=False)
            except Exception:  # the loop must survive anything; _check records what it can
                log.exception("reloader: unexpected error while checking %s", self.url)
            due = clock.monotonic() + self._delay()
        self._close_retired()

    def _rebuild_broken(self) -> None:
        broken = self._rebuild
        if broken is None:
            return
        if self._pending is not None or broken is not self._current:
            self._rebuild = None  # a newer version is on its way anyway
            return
        assert self._source is not None
        try:
            data = download_bundle(
                self._source,
                broken.manifest,
                cache_dir=self.cache_dir,
                max_bytes=self.max_bundle_bytes,
            )
            loaded = self._build(broken.manifest, data)
        except Exception as e:
            self._failures += 1
            self._record(e)
            return  # tried again at the next wake-up or poll
        self._rebuild = None
        self._rebuilds += 1
        self._offer(loaded, reason="rebuilt after its runtime broke")

    def _delay(self) -> float:
        base = self.poll_interval
        if self._failures_in_row:
            base = min(self.max_backoff, self.poll_interval * 2.0 ** (self._failures_in_row - 1))
        return base * self._random.uniform(1 - self.jitter, 1 + self.jitter)

    def _close_retired(self) -> None:
        while self._retired:
            old = self._retired.popleft()
            old.runtime.close()
            log.info(
                "reloader: %s: retired %s (%s); swap stall %.1f µs",
                self.url,
                old.version,
                old.sha256[:12],
                (self._last_stall or 0) * 1e6,
            )

    def _check(self, *, first: bool) -> None:
        """One manifest check; offers a new model when there is one. Raises only on `first`."""
        self._last_check = self._clock.time()
        try:
            self._check_once()
        except NotReady as e:
            self._not_ready += 1
            self._failures_in_row = 0
            self._record(e)
            if first:
                raise
        except Exception as e:
            self._failures += 1
            transient = isinstance(e, SourceError | CacheError) or not isinstance(e, ReloaderError)
            # Transport trouble backs off; a refused version costs a 304 per poll from now on.
            self._failures_in_row = self._failures_in_row + 1 if transient else 0
            if not isinstance(e, ReloaderError):
                log.exception("reloader: %s: unexpected error while checking", self.url)
            self._record(e)
            if first:
                raise
        else:
            if self._failures_in_row:
                log.info("reloader: %s: store reachable again", self.url)
                self._last_logged = None
            self._failures_in_row = 0
        finally:
            self._checks += 1  # counted when done, so `info.checks` tells a check has finished

    def _check_once(self) -> None:
        assert self._source is not None
        try:
            fetched = self._source.read_manifest(self._validator)
        except MissingObject as e:
            raise NotReady(f"no manifest in the store yet ({e})") from e
        if fetched is None:
            self._unchanged += 1
            return
        try:
            manifest = parse(fetched.data)
        except ManifestError:
            self._validator = fetched.validator  # the same garbage is not re-parsed every poll
            raise
        target = self._pending or self._current
        if target is not None and (target.sha256, target.version) == (
            manifest.sha256,
            manifest.version,
        ):
            self._validator = fetched.validator
            return
        if manifest.sha256 in self._quarantine or _sig_key(manifest) in self._quarantine:
            self._validator = fetched.validator
            return  # logged when it was quarantined; nothing new to say
        try:
            if self.public_key is not None:
                manifest.verify(self.public_key)
            data = self._download(manifest)
            loaded = self._build(manifest, data)
        except SignatureError as e:
            self._quarantine[_sig_key(manifest)] = str(e)
            self._validator = fetched.validator
            raise
        except NotReady:
            raise  # the bundle may still be on its way: re-read the manifest next time
        except (SourceError, CacheError):
            raise
        except ReloaderError as e:
            self._quarantine[manifest.sha256] = str(e)
            self._validator = fetched.validator
            raise
        self._validator = fetched.validator
        self._offer(loaded)

    def _download(self, m: Manifest) -> bytes:
        assert self._source is not None
        return download_bundle(
            self._source, m, cache_dir=self.cache_dir, max_bytes=self.max_bundle_bytes
        )

    def _build(self, m: Manifest, data: bytes) -> LoadedModel:
        t0 = time.perf_counter()
        runtime = ModelRuntime(
            data,
            heap_limit=self.heap_limit,
            call_timeout=self.call_timeout,
            init_timeout=self.init_timeout,
            self_test=m.self_test if m.self_test is not None else True,
        )
        try:
            self._warm_up(runtime)
        except BaseException:
            runtime.close()
            raise
        build = time.perf_counter() - t0
        self._last_build = build
        return LoadedModel(runtime, m, self._clock.time(), build)

    def _warm_up(self, runtime: ModelRuntime) -> None:
        """Runs the new runtime's code paths once off the hot path, so V8 has compiled them."""
        seed = runtime.self_test_inputs
        if seed is None or self.warmup_rows <= 0:
            return
        rows = min(self.warmup_rows, runtime.max_batch)
        batch = np.resize(seed, (rows, seed.shape[1]))
        # V8 optimizes a function only after it has run hot for a while: one call would leave
        # the first real batches to the interpreter.
        for i in range(self.warmup_calls):
            runtime.predict(batch[: 1 + (i * 37) % rows])

    def _offer(self, loaded: LoadedModel, *, reason: str = "") -> None:
        with self._lock:
            stopped = self._stop.is_set()
            if not stopped:
                replaced, self._pending = self._pending, loaded
        if stopped:  # stop() gave up waiting for this build; nobody will adopt it
            loaded.runtime.close()
            return
        if replaced is not None:
            # Never served: the processing thread did not call in between.
            replaced.runtime.close()
        if not reason:
            self._reloads += 1
        self._last_logged = None
        log.info(
            "reloader: %s: %s (%s) %sready in %.0f ms; serving from the next call",
            self.url,
            loaded.version,
            loaded.sha256[:12],
            f"{reason}, " if reason else "",
            loaded.build_seconds * 1e3,
        )

    def _record(self, error: Exception) -> None:
        text = f"{type(error).__name__}: {error}"
        self._last_error = text
        self._last_error_at = self._clock.time()
        if text != self._last_logged:
            # One line per distinct failure; a repeat (server still down) is not re-logged.
            serving = self._current.version if self._current else "nothing"
            log.warning("reloader: %s: %s (still serving %s)", self.url, text, serving)
            self._last_logged = text


def _sig_key(m: Manifest) -> str:
    return f"{m.sha256}/signature/{m.signature}/{m.key_id}"
