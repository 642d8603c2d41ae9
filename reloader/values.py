"""Values the agent hands out (`LoadedModel`, `Versioned`, `ModelInfo`) and its `Clock`."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from reloader.manifest import Manifest
from reloader.runtime import ModelRuntime

T = TypeVar("T")


class Clock(Protocol):
    """Time for the poll thread; tests inject one that they advance by hand."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (for time stamps)."""
        ...

    def monotonic(self) -> float:
        """Seconds for intervals."""
        ...

    def sleep(self, seconds: float, wake: threading.Event) -> bool:
        """Waits `seconds` or until `wake` is set; True if woken."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, wake: threading.Event) -> bool:
        return wake.wait(max(0.0, seconds))


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedModel:
    """A built, self-tested runtime and the manifest it came from."""

    runtime: ModelRuntime
    manifest: Manifest
    loaded_at: float
    build_seconds: float

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def sha256(self) -> str:
        return self.manifest.sha256


@dataclasses.dataclass(frozen=True)
class Versioned(Generic[T]):
    """A result and the model version that produced it."""

    value: T
    version: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A snapshot of a `HotModel`'s state (times are wall-clock seconds, durations seconds)."""

    url: str
    model: str | None
    version: str | None
    sha256: str | None
    loaded_at: float | None
    last_check: float | None
    last_error: str | None
    last_error_at: float | None
    checks: int
    unchanged: int
    reloads: int
    rebuilds: int
    failures: int
    not_ready: int
    last_build_seconds: float | None
    last_swap_stall_seconds: float | None
    max_swap_stall_seconds: float | None
    pending_version: str | None
    quarantined: Mapping[str, str]
    watching: bool
    # The event-time segments and which version scores each (`reloader.timeline`): one, from
    # the beginning, unless versions were published with an effective time.
    segments: Sequence[Mapping[str, Any]] = ()
    watermark_ms: int | None = None
    late_loads: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["quarantined"] = dict(self.quarantined)
        out["segments"] = [dict(s) for s in self.segments]
        return out
