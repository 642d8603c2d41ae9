"""Time in tests: waiting on a condition or on a `HotModel`'s check, and a hand-moved clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from reloader.agent import HotModel


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "") -> Any:
    """Polls `predicate` until it returns a truthy value; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what or predicate}")
        pause.wait(0.005)


def checked(hm: HotModel, timeout: float = 20.0) -> None:
    """Asks `hm` for a check now and waits until it has finished."""
    before = hm.info.checks
    hm.request_check()
    wait_until(lambda: hm.info.checks > before, timeout=timeout, what="a finished check")


class FakeClock:
    """A clock for the poll thread that only moves when the test says so.

    Each `sleep` is recorded, then blocks until `release()` lets it elapse (time jumps by the
    requested amount) or the agent's wake event is set (no time passes).
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._cv = threading.Condition()
        self._released = 0

    def time(self) -> float:
        return 1.8e9 + self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float, wake: threading.Event) -> bool:
        with self._cv:
            self.sleeps.append(seconds)
            self._cv.notify_all()
            while not self._released:
                if wake.is_set():
                    return True
                self._cv.wait(0.02)  # re-check the wake event, which the agent sets
            self._released -= 1
            self.now += seconds
            return False

    def release(self) -> None:
        """Lets one pending (or the next) sleep run to its end."""
        with self._cv:
            self._released += 1
            self._cv.notify_all()

    def wait_sleeps(self, n: int, timeout: float = 20.0) -> list[float]:
        """Waits until the agent has asked for `n` sleeps in all; returns them."""
        with self._cv:
            if not self._cv.wait_for(lambda: len(self.sleeps) >= n, timeout):
                raise AssertionError(f"only {len(self.sleeps)} of {n} sleeps: {self.sleeps}")
            return list(self.sleeps)
