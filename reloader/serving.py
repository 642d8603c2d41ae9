"""The serving pointer: which timeline of loaded models answers the next call, and the swap.

Threads: the *processing thread* (whoever predicts; one at a time) calls `current()`, which
adopts a pending timeline first: one attribute check when nothing is pending, a lock only for the
exchange. The *poll thread* calls `offer()` with a ready timeline and `take_retired()` to close
the models a swap left out. Nothing here waits for the network, a compiler or a `close()`.

A timeline (`reloader.timeline`) is usually one model; with an effective-time publish it holds
the models of neighbouring event-time segments. A swap retires the models of the old timeline
that the new one does not hold, so a model shared by both keeps serving without a pause.
"""

from __future__ import annotations

import collections
import threading
import time

from reloader.timeline import Timeline
from reloader.values import LoadedModel


class ServingSlot:
    """Holds the serving timeline, the one waiting to be adopted, and the retired models."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the exchange of `_pending`, nothing else
        self._current: Timeline | None = None
        self._pending: Timeline | None = None
        self._retired: collections.deque[LoadedModel] = collections.deque()
        self._closed = False
        self.last_stall: float | None = None
        self.max_stall: float | None = None
        # Written by the processing thread (`HotModel.advance`), read by the poll thread: the
        # event time (ms) below which no more records are expected.
        self.watermark: int | None = None
        # Set once a call passed event times (`HotModel.split`); until then the records are
        # taken to be of now, and segments end by the wall clock.
        self.timed = False

    # -- processing thread ------------------------------------------------------------------------

    def current(self) -> Timeline | None:
        """The timeline for the next call (adopting a pending one first), or None if none."""
        if self._pending is not None:
            self.adopt()
        return self._current

    def adopt(self) -> None:
        """Makes the pending timeline current; the models it no longer holds are retired
        (closed by the poll thread). The processing thread is between calls here, so it has
        seen its last call on them."""
        t0 = time.perf_counter()
        with self._lock:
            new, self._pending = self._pending, None
            if new is None:
                return
            old, self._current = self._current, new
        if old is not None:
            # Closing costs milliseconds; the poll thread does it. No wake-up call either:
            # waking the poll thread here hands it the GIL mid-swap (measured: 45 µs instead
            # of 4). It looks for retired models on its own (see `swap_pending`).
            self._retired.extend(_left_out(old, new))
        stall = time.perf_counter() - t0
        self.last_stall = stall
        if self.max_stall is None or stall > self.max_stall:
            self.max_stall = stall

    def install(self, timeline: Timeline) -> None:
        """Makes `timeline` current at once (a late record's model, loaded by the processing
        thread itself); it must hold every model of the current one."""
        with self._lock:
            self._current = timeline

    # -- poll thread ------------------------------------------------------------------------------

    def offer(self, timeline: Timeline) -> bool:
        """Makes `timeline` the one the next call adopts. False (and its new models closed)
        after `close_all`. The models of a pending timeline that was never adopted, and that
        neither the current nor the new one holds, are closed: they never served."""
        replaced: Timeline | None = timeline
        accepted = False
        with self._lock:
            if not self._closed:
                replaced, self._pending, accepted = self._pending, timeline, True
            keep = [] if self._current is None else self._current.models()
        if replaced is not None:
            for m in _left_out(replaced, *([timeline] if accepted else []), keep=keep):
                m.runtime.close()
        return accepted

    def take_retired(self) -> list[LoadedModel]:
        """The models swaps have replaced since the last call; the caller closes them."""
        out = []
        while self._retired:
            out.append(self._retired.popleft())
        return out

    @property
    def pending(self) -> Timeline | None:
        return self._pending

    @property
    def serving(self) -> Timeline | None:
        """The current timeline without adopting a pending one (for observers)."""
        return self._current

    @property
    def latest(self) -> Timeline | None:
        """The timeline the next call will use: the pending one, else the current one."""
        return self._pending or self._current

    @property
    def swap_pending(self) -> bool:
        """A model waits for adoption while another serves: a retired one will follow soon."""
        return self._pending is not None and self._current is not None

    # -- any thread, once the processing thread is done -------------------------------------------

    def close_all(self) -> None:
        """Closes every model (serving, pending, retired); later offers are refused."""
        with self._lock:
            self._closed = True
            timelines = [t for t in (self._pending, self._current) if t is not None]
            self._pending = self._current = None
        seen: set[int] = set()
        for m in [*self.take_retired(), *(m for t in timelines for m in t.models())]:
            if id(m) not in seen:
                seen.add(id(m))
                m.runtime.close()


def _left_out(
    old: Timeline, *new: Timeline, keep: list[LoadedModel] | None = None
) -> list[LoadedModel]:
    """The models of `old` that none of `new` (nor `keep`) holds."""
    held = {id(m) for t in new for m in t.models()} | {id(m) for m in keep or ()}
    return [m for m in old.models() if id(m) not in held]
