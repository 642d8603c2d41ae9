"""The serving pointer: which loaded model answers the next call, and the swap to a new one.

Threads: the *processing thread* (whoever predicts; one at a time) calls `current()`, which
adopts a pending model first: one attribute check when nothing is pending, a lock only for the
exchange. The *poll thread* calls `offer()` with a ready model and `take_retired()` to close the
models a swap replaced. Nothing here waits for the network, a compiler or a `close()`.
"""

from __future__ import annotations

import collections
import threading
import time

from reloader.values import LoadedModel


class ServingSlot:
    """Holds the serving model, the one waiting to be adopted, and the retired ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the exchange of `_pending`, nothing else
        self._current: LoadedModel | None = None
        self._pending: LoadedModel | None = None
        self._retired: collections.deque[LoadedModel] = collections.deque()
        self._closed = False
        self.last_stall: float | None = None
        self.max_stall: float | None = None

    # -- processing thread ------------------------------------------------------------------------

    def current(self) -> LoadedModel | None:
        """The model for the next call (adopting a pending one first), or None if none is loaded."""
        if self._pending is not None:
            self.adopt()
        return self._current

    def adopt(self) -> None:
        """Makes the pending model current; the replaced one is retired (closed by the poll
        thread). The processing thread is between calls here, so it has seen its last call."""
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
            self._retired.append(old)
        stall = time.perf_counter() - t0
        self.last_stall = stall
        if self.max_stall is None or stall > self.max_stall:
            self.max_stall = stall

    # -- poll thread ------------------------------------------------------------------------------

    def offer(self, loaded: LoadedModel) -> bool:
        """Makes `loaded` the model the next call adopts. False (and `loaded` closed) after
        `close_all`. A pending model that was never adopted is closed: it never served."""
        replaced: LoadedModel | None = loaded
        accepted = False
        with self._lock:
            if not self._closed:
                replaced, self._pending, accepted = self._pending, loaded, True
        if replaced is not None:
            replaced.runtime.close()
        return accepted

    def take_retired(self) -> list[LoadedModel]:
        """The models swaps have replaced since the last call; the caller closes them."""
        out = []
        while self._retired:
            out.append(self._retired.popleft())
        return out

    @property
    def pending(self) -> LoadedModel | None:
        return self._pending

    @property
    def serving(self) -> LoadedModel | None:
        """The current model without adopting a pending one (for observers)."""
        return self._current

    @property
    def swap_pending(self) -> bool:
        """A model waits for adoption while another serves: a retired one will follow soon."""
        return self._pending is not None and self._current is not None

    # -- any thread, once the processing thread is done -------------------------------------------

    def close_all(self) -> None:
        """Closes every model (serving, pending, retired); later offers are refused."""
        with self._lock:
            self._closed = True
            models = [self._pending, self._current]
            self._pending = self._current = None
        for m in [*self.take_retired(), *models]:
            if m is not None:
                m.runtime.close()
