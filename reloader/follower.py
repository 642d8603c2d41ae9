"""The poll/build worker of a `HotModel`: follows a store and offers each new version.

Thread: `reloader-poll <url>` (daemon), owned by this object between `start()` and `stop()`. It
reads the manifest (interval + jitter, exponential back-off after transport errors, woken early by
file-system events), loads a new version through `reloader.load.Loader` (fetch, verify, trial,
build, self-test, warm-up), offers it to the `ServingSlot`, closes the models swaps retired, and
rebuilds a serving runtime that broke (timeout, heap). The watcher thread of a local store only
sets an event. Counters are written by this thread only (and `report_broken`, an error path of
the processing thread); readers get a consistent-enough snapshot without a lock.

Failure policy: failures never touch the serving model. Each is counted, shown in `info`, logged
once, and retried (transport errors, "not ready") or quarantined by bundle hash (integrity,
signature, build and self-test failures) until the manifest points elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from pathlib import Path

from reloader.atomic import write_atomic
from reloader.errors import (
    CacheError,
    ManifestError,
    NotReady,
    ReloaderError,
    SandboxError,
    SignatureError,
    SourceError,
)
from reloader.load import Loader
from reloader.manifest import Manifest, parse
from reloader.serving import ServingSlot
from reloader.sources import Source, Validator
from reloader.values import Clock, LoadedModel

log = logging.getLogger("reloader")

RETIRE_POLL = 0.05  # seconds between looks for a retired model while a swap is pending


class StoreFollower:
    """Polls `source` and offers new versions to `slot`. See the module docstring."""

    def __init__(
        self,
        url: str,
        source: Source,
        slot: ServingSlot,
        loader: Loader,
        *,
        clock: Clock,
        poll_interval: float,
        jitter: float,
        max_backoff: float,
    ) -> None:
        self.url = url
        self.source = source
        self.slot = slot
        self.loader = loader
        self.poll_interval = poll_interval
        self.jitter = jitter
        self.max_backoff = max(max_backoff, poll_interval)
        self._clock = clock
        self._random = random.Random()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._check_requested = False
        self._thread: threading.Thread | None = None
        self._validator: Validator | None = None
        self._failures_in_row = 0
        self._last_logged: str | None = None
        self._rebuild: LoadedModel | None = None

        self.quarantine: dict[str, str] = {}
        self.checks = self.unchanged = self.reloads = self.rebuilds = 0
        self.failures = self.not_ready = 0
        self.last_check: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_build: float | None = None

    # -- life cycle -------------------------------------------------------------------------------

    def first_load(self) -> None:
        """The synchronous first check; raises its error (a process must not serve without a
        model) unless the last good version of this store can serve instead.

        A task Flink restarts after a failure starts its model again: if the store now offers a
        refused version (bad bundle, failed self-test, a schema the job cannot feed) or cannot
        be reached, the version this store last served from this cache directory is loaded
        again (verified, built and self-tested like any other), so a bad upload never fails a
        restart. The refused version stays quarantined; polling goes on.
        """
        try:
            self.check(first=True)
        except (NotReady, CacheError):
            raise
        except ReloaderError as e:
            if not self._serve_last_good(e):
                raise

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"reloader-poll {self.url}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.close_retired()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def request_check(self) -> None:
        """Check the store now (what a file-system event does); any thread."""
        self._check_requested = True
        self._wake.set()

    def report_broken(self, m: LoadedModel, error: Exception) -> None:
        """The serving runtime `m` was terminated (timeout, heap); called on the processing
        thread by the call that broke it. The poll thread rebuilds it; calls until then raise
        `RuntimeClosed`."""
        if self._rebuild is m or m is not self.slot.serving:
            return
        self.failures += 1
        self._record(error)
        self._rebuild = m
        self._wake.set()  # an error path, not the swap: waking the poll thread is fine here

    # -- poll thread ------------------------------------------------------------------------------

    def _loop(self) -> None:
        clock = self._clock
        due = clock.monotonic() + self._delay()
        while not self._stop.is_set():
            self._wake.clear()
            self.close_retired()
            if self._rebuild is not None:
                self._rebuild_broken()
            if not self._check_requested and clock.monotonic() < due:
                wait = due - clock.monotonic()
                if self.slot.swap_pending:
                    # A swap is coming: look back soon to close the model it retires.
                    wait = min(wait, RETIRE_POLL)
                clock.sleep(wait, self._wake)
                continue
            self._check_requested = False
            try:
                self.check(first=False)
            except Exception:  # the loop must survive anything; check() records what it can
                log.exception("reloader: unexpected error while checking %s", self.url)
            due = clock.monotonic() + self._delay()
        self.close_retired()

    def _delay(self) -> float:
        return poll_delay(
            self.poll_interval, self.jitter, self.max_backoff, self._failures_in_row, self._random
        )

    def close_retired(self) -> None:
        for old in self.slot.take_retired():
            old.runtime.close()
            log.info(
                "reloader: %s: retired %s (%s); swap stall %.1f µs",
                self.url,
                old.version,
                old.sha256[:12],
                (self.slot.last_stall or 0) * 1e6,
            )

    def _rebuild_broken(self) -> None:
        broken = self._rebuild
        if broken is None:
            return
        if self.slot.pending is not None or broken is not self.slot.serving:
            self._rebuild = None  # a newer version is on its way anyway
            return
        try:
            loaded = self.loader.load(self.source, broken.manifest)
        except Exception as e:
            self.failures += 1
            self._record(e)
            return  # tried again at the next wake-up or poll
        self._rebuild = None
        self.rebuilds += 1
        self._offer(loaded, reason="rebuilt after its runtime broke")

    def check(self, *, first: bool) -> None:
        """One manifest check; offers a new model when there is one. Raises only on `first`."""
        self.last_check = self._clock.time()
        try:
            self._check_once()
        except NotReady as e:
            self.not_ready += 1
            self._failures_in_row = 0
            self._record(e)
            if first:
                raise
        except Exception as e:
            self.failures += 1
            transient = isinstance(e, SourceError | CacheError | SandboxError) or not isinstance(
                e, ReloaderError
            )
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
            self.checks += 1  # counted when done, so `info.checks` tells a check has finished

    def _check_once(self) -> None:
        fetched = self.loader.read_manifest(self.source, self._validator)
        if fetched is None:
            self.unchanged += 1
            return
        try:
            manifest = parse(fetched.data)
        except ManifestError:
            self._validator = fetched.validator  # the same garbage is not re-parsed every poll
            raise
        target = self.slot.pending or self.slot.serving
        if target is not None and (target.sha256, target.version) == (
            manifest.sha256,
            manifest.version,
        ):
            self._validator = fetched.validator
            return
        if manifest.sha256 in self.quarantine or _sig_key(manifest) in self.quarantine:
            self._validator = fetched.validator
            return  # logged when it was quarantined; nothing new to say
        try:
            loaded = self.loader.load(self.source, manifest)
        except SignatureError as e:
            self.quarantine[_sig_key(manifest)] = str(e)
            self._validator = fetched.validator
            raise
        except (NotReady, SourceError, CacheError, SandboxError):
            raise  # transient (the bundle may still be on its way): re-read the manifest
        except ReloaderError as e:
            self.quarantine[manifest.sha256] = str(e)
            self._validator = fetched.validator
            raise
        self._validator = fetched.validator
        self._offer(loaded)

    def _serve_last_good(self, error: ReloaderError) -> bool:
        record = self._last_good_path()
        try:
            manifest = parse(record.read_bytes()) if record is not None else None
        except (OSError, ManifestError):
            manifest = None
        if manifest is None:
            return False
        try:
            loaded = self.loader.load(self.source, manifest)
        except ReloaderError as e:
            log.warning("reloader: %s: the last good version cannot serve either: %s", self.url, e)
            return False
        self._last_logged = None
        self._offer(loaded, reason=f"the last good version, because {type(error).__name__}")
        return True

    def _last_good_path(self) -> Path | None:
        """Where the manifest this store last served is kept (one file per store URL)."""
        cache = self.loader.settings.cache_dir
        if cache is None:
            return None
        return cache / "last-good" / f"{hashlib.sha256(self.url.encode()).hexdigest()[:32]}.json"

    def _remember(self, loaded: LoadedModel) -> None:
        path = self._last_good_path()
        if path is None:
            return
        try:
            # No directory fsync: a record lost in a crash only loses this fallback.
            write_atomic(path, loaded.manifest.to_bytes(), sync_dir=False)
        except OSError as e:
            log.warning("reloader: %s: cannot record the last good version: %s", self.url, e)

    def _offer(self, loaded: LoadedModel, *, reason: str = "") -> None:
        self.last_build = loaded.build_seconds
        # Counted before the version is offered: the first call that serves it may come at once,
        # and whoever sees the new version in `info` must see the reload counted with it.
        counted = not reason
        self.reloads += counted
        if not self.slot.offer(loaded):
            self.reloads -= counted
            return  # stopped while this was building; nobody will adopt it
        self._remember(loaded)
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
        self.last_error = text
        self.last_error_at = self._clock.time()
        if text != self._last_logged:
            # One line per distinct failure; a repeat (server still down) is not re-logged.
            serving = self.slot.serving
            log.warning(
                "reloader: %s: %s (still serving %s)",
                self.url,
                text,
                serving.version if serving else "nothing",
            )
            self._last_logged = text


def poll_delay(
    interval: float, jitter: float, max_backoff: float, failures_in_row: int, rng: random.Random
) -> float:
    """Seconds until the next check: the interval, doubled per transport failure in a row up to
    `max_backoff`, times a random factor in [1 - jitter, 1 + jitter] (workers drift apart)."""
    base = interval
    if failures_in_row:
        base = min(max(max_backoff, interval), interval * 2.0 ** (failures_in_row - 1))
    return base * rng.uniform(1 - jitter, 1 + jitter)


def _sig_key(m: Manifest) -> str:
    return f"{m.sha256}/signature/{m.signature}/{m.key_id}"
