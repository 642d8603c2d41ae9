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
import os
import random
import socket
import threading
from collections.abc import Mapping
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
from reloader.sources.pinned import RefSource
from reloader.timeline import Segment, Timeline, apply, effective_start, same_version
from reloader.values import Clock, LoadedModel

log = logging.getLogger("reloader")

RETIRE_POLL = 0.05  # seconds between looks for a retired model while a swap is pending
PRUNE_POLL = 0.2  # seconds between looks at the watermark while earlier segments are loaded


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
        client: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.client = dict(client or {})
        # Set by `HotModel.set_report` (any thread, whole assignments), read by `_report`: the
        # model's role to its job, and a state text with the bundle (sha256) it is about.
        self.role = "serving"
        self.state: tuple[str, str] | None = None
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
        # Loads run on the poll thread, and on the processing thread for a late record whose
        # segment's model was closed: one at a time (the source and the cache are shared).
        self._load_lock = threading.Lock()

        self.quarantine: dict[str, str] = {}
        self.checks = self.unchanged = self.reloads = self.rebuilds = 0
        self.failures = self.not_ready = self.late_loads = 0
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
        serving = self.slot.serving
        if self._rebuild is m or serving is None or m not in serving.models():
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
            self._prune()
            if not self._check_requested and clock.monotonic() < due:
                wait = due - clock.monotonic()
                if self.slot.swap_pending:
                    # A swap is coming: look back soon to close the model it retires.
                    wait = min(wait, RETIRE_POLL)
                latest = self.slot.latest
                if latest is not None and len(latest.models()) > 1:
                    wait = min(wait, PRUNE_POLL)  # close an earlier segment's model once passed
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
        serving = self.slot.serving
        if self.slot.pending is not None or serving is None or broken not in serving.models():
            self._rebuild = None  # a newer version is on its way anyway
            return
        try:
            loaded = self._load(broken.manifest)
        except Exception as e:
            self.failures += 1
            self._record(e)
            return  # tried again at the next wake-up or poll
        self._rebuild = None
        self.rebuilds += 1
        index = next(i for i, seg in enumerate(serving.segments) if seg.loaded is broken)
        self._offer(
            serving.replaced(index, loaded), loaded, reason="rebuilt after its runtime broke"
        )

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
        self.source.report(self._report())
        fetched = self.loader.read_manifest(self.source, self._validator)
        if fetched is None:
            self.unchanged += 1
            return
        try:
            manifest = parse(fetched.data)
        except ManifestError:
            self._validator = fetched.validator  # the same garbage is not re-parsed every poll
            raise
        latest = self.slot.latest
        target = latest.newest.manifest if latest is not None else None
        if target is not None and (
            target.sha256,
            target.version,
            effective_start(target),
        ) == (manifest.sha256, manifest.version, effective_start(manifest)):
            self._validator = fetched.validator
            return
        if manifest.sha256 in self.quarantine or _sig_key(manifest) in self.quarantine:
            self._validator = fetched.validator
            return  # logged when it was quarantined; nothing new to say
        try:
            loaded = self._load(manifest)
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
        self._offer(self._timeline_with(loaded), loaded)

    def _serve_last_good(self, error: ReloaderError) -> bool:
        record = self._last_good_path()
        try:
            manifest = parse(record.read_bytes()) if record is not None else None
        except (OSError, ManifestError):
            manifest = None
        if manifest is None:
            return False
        try:
            loaded = self._load(manifest)
            timeline = self._timeline_with(loaded)
        except ReloaderError as e:
            log.warning("reloader: %s: the last good version cannot serve either: %s", self.url, e)
            return False
        self._last_logged = None
        self._offer(
            timeline, loaded, reason=f"the last good version, because {type(error).__name__}"
        )
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

    def _offer(self, timeline: Timeline, loaded: LoadedModel, *, reason: str = "") -> None:
        self.last_build = loaded.build_seconds
        # Counted before the version is offered: the first call that serves it may come at once,
        # and whoever sees the new version in `info` must see the reload counted with it.
        counted = not reason
        self.reloads += counted
        if not self.slot.offer(timeline):
            self.reloads -= counted
            return  # stopped while this was building; nobody will adopt it
        self._remember(loaded)
        self._last_logged = None
        start = effective_start(loaded.manifest)
        log.info(
            "reloader: %s: %s (%s) %sready in %.0f ms; serving %s",
            self.url,
            loaded.version,
            loaded.sha256[:12],
            f"{reason}, " if reason else "",
            loaded.build_seconds * 1e3,
            "from the next call" if start is None else f"records from event time {start} ms",
        )

    def _report(self) -> dict[str, str]:
        """What this reader tells the store about itself (`Source.report`: the fleet view)."""
        latest = self.slot.latest
        newest = latest.newest.manifest if latest is not None else None
        job, subtask = self.client.get("job", ""), self.client.get("subtask", "")
        sha256 = newest.sha256 if newest else ""
        report = {
            "client": self.client.get("client")
            or (f"{job}/{subtask}" if job and subtask else f"{socket.gethostname()}:{os.getpid()}"),
            "job": job,
            "subtask": subtask,
            "version": newest.version if newest else "",
            "sha256": sha256,
            "poll_interval": f"{self.poll_interval:g}",
            "channel": self.source.ref if isinstance(self.source, RefSource) else "",
            "role": self.role,
        }
        state = self.state
        if state is not None and state[1] == sha256:  # about another bundle: not this one's
            report["state"] = state[0]
        return report

    # -- timelines --------------------------------------------------------------------------------

    def _load(self, manifest: Manifest) -> LoadedModel:
        with self._load_lock:
            return self.loader.load(self.source, manifest)

    def _timeline_with(self, loaded: LoadedModel) -> Timeline:
        """The timeline once `loaded` (the store's new manifest, built) is published: from the
        store's history when it holds this publish (the same on every machine and after a
        restore), else the current timeline with this one publish applied. Models already
        loaded are kept; the segment before the new one is loaded now if a restart left it
        unloaded (replayed records may need it); earlier ones when a record needs them."""
        manifest = loaded.manifest
        current = self.slot.latest
        segments = self._history_segments(manifest)
        if segments is None:
            segments = apply(current.segments if current is not None else (), manifest)
        if segments[0].start is not None:  # nothing was published before: it serves all
            segments[0] = Segment(None, segments[0].manifest)
        have = current.models() if current is not None else []
        out = []
        for seg in segments[:-1]:
            model = next((m for m in have if same_version(m.manifest, seg.manifest)), None)
            out.append(seg.with_model(model))
        out.append(segments[-1].with_model(loaded))
        if len(out) > 1 and out[-2].loaded is None and not self._passed(out, len(out) - 2):
            out[-2] = out[-2].with_model(self._load(out[-2].manifest))
        return Timeline(out)

    def _history_segments(self, manifest: Manifest) -> list[Segment] | None:
        """The segments the store's publish history defines up to `manifest`, or None when the
        history does not hold it (a plain copy of a build, a store without history)."""
        if effective_start(manifest) is None:
            return [Segment(None, manifest)]  # no history needed: it serves everything
        from reloader.history import entry_for, read_history, segments

        try:
            entries = read_history(self.source)
        except ReloaderError as e:
            log.warning("reloader: %s: cannot read the publish history: %s", self.url, e)
            return None
        index = entry_for(entries, manifest)
        if index is None:
            return None
        return [Segment(start, m) for start, m in segments(entries[: index + 1])]

    def _passed(self, segments: list[Segment], index: int) -> bool:
        """True once the watermark has passed segment `index`'s end (its records are done)."""
        watermark = self.slot.watermark
        if watermark is None and not self.slot.timed:
            watermark = int(self._clock.time() * 1000)  # records of now: the wall clock
        end = segments[index + 1].start if index + 1 < len(segments) else None
        return watermark is not None and end is not None and end <= watermark

    def _prune(self) -> None:
        """Offers the timeline without the models of segments the watermark has passed."""
        serving = self.slot.serving
        if self.slot.pending is not None or serving is None or len(serving.models()) < 2:
            return
        segments = list(serving.segments)
        passed = [
            i
            for i, seg in enumerate(segments)
            if seg.loaded is not None and self._passed(segments, i)
        ]
        if not passed:
            return
        for i in passed:
            segments[i] = segments[i].with_model(None)
        self.slot.offer(Timeline(segments))

    def load_late(self, timeline: Timeline, index: int) -> Timeline:
        """On the processing thread: loads the model of segment `index` for a record that came
        after its model was closed (or before a restart loaded it), and installs it. Raises the
        load's `ReloaderError`."""
        loaded = self._load(timeline.segments[index].manifest)
        self.late_loads += 1
        log.info(
            "reloader: %s: loaded %s again for a record of event time before %s ms",
            self.url,
            loaded.version,
            timeline.end(index),
        )
        new = timeline.replaced(index, loaded)
        self.slot.install(new)
        return new

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
                serving.newest.manifest.version if serving else "nothing",
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
