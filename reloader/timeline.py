"""Which version scores a record: a function of the record's event time and the store's publishes.

A publish with an effective event time T says "from event time T on, this version"; one without
says "this version, for every record from now on" (the store's behaviour before effective times
existed). Applied in publish order, the publishes cut event time into segments, each served by
one version:

    A (no T), B (T=1000), C (T=2000)   ->   A for t < 1000, B for 1000 <= t < 2000, C from 2000
    A (no T), B (T=2000), C (T=1000)   ->   A for t < 1000, C from 1000 (B never serves)

The newest publish is always the last segment. A segment's model is loaded while records may
still need it: the follower closes the models of segments that end at or before the job's
watermark, and loads one again if a late record needs it (`HotModel.split`).

A `Timeline` is immutable; the follower (poll thread) builds a new one for every change and offers
it through the `ServingSlot`, the processing thread adopts it between calls.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from reloader.manifest import Manifest
from reloader.values import LoadedModel


@dataclasses.dataclass(frozen=True, eq=False)
class Segment:
    """Event times from `start` (ms since the epoch, inclusive; None: from the beginning) to the
    next segment's start are scored by `manifest`'s version; `loaded` is its model, or None
    while it is not loaded."""

    start: int | None
    manifest: Manifest
    loaded: LoadedModel | None = None

    def with_model(self, loaded: LoadedModel | None) -> Segment:
        return Segment(self.start, self.manifest, loaded)


def same_version(a: Manifest, b: Manifest) -> bool:
    """The same publish of the same bundle (a relabelled or re-timed manifest is another)."""
    return a.to_dict() == b.to_dict()


def effective_start(manifest: Manifest) -> int | None:
    """The event time (ms) from which a publish serves; None for a publish without one."""
    return manifest.effective_at_ms


def apply(segments: Sequence[Segment], manifest: Manifest) -> list[Segment]:
    """`segments` after one more publish of `manifest` (see the module docstring)."""
    start = effective_start(manifest)
    if start is None:
        return [Segment(None, manifest)]
    kept = [s for s in segments if s.start is None or s.start < start]
    return [*kept, Segment(start, manifest)]


class Timeline:
    """The segments in order of start; the first starts at None (the beginning of time)."""

    __slots__ = ("_starts", "only", "segments")

    def __init__(self, segments: Iterable[Segment]) -> None:
        self.segments: tuple[Segment, ...] = tuple(segments)
        if not self.segments or self.segments[0].start is not None:
            raise ValueError("a timeline starts with a segment that has no start")
        starts = [s.start for s in self.segments[1:]]
        if any(s is None for s in starts) or starts != sorted(starts):  # type: ignore[type-var]
            raise ValueError("segment starts must increase")
        self._starts: list[int] = starts  # type: ignore[assignment]
        # The hot path's one check: a single loaded segment serves every record.
        self.only: LoadedModel | None = self.segments[0].loaded if len(self.segments) == 1 else None

    @classmethod
    def single(cls, loaded: LoadedModel) -> Timeline:
        return cls([Segment(None, loaded.manifest, loaded)])

    @property
    def newest(self) -> Segment:
        """The last publish (the segment that serves the latest event times)."""
        return self.segments[-1]

    def models(self) -> list[LoadedModel]:
        return [s.loaded for s in self.segments if s.loaded is not None]

    def index(self, event_ms: int) -> int:
        """The segment that scores a record with this event time."""
        return bisect.bisect_right(self._starts, event_ms)

    def split(self, event_ms: npt.ArrayLike) -> list[tuple[int, npt.NDArray[np.intp]]]:
        """(segment index, row indices) for each segment that scores some of the rows."""
        times = np.asarray(event_ms, dtype=np.int64)
        if len(times) == 0:
            return []
        lo, hi = self.index(int(times.min())), self.index(int(times.max()))
        if lo == hi:  # the usual case, even while a cutover is under way: no per-row work
            return [(lo, np.arange(len(times), dtype=np.intp))]
        which = np.searchsorted(np.asarray(self._starts, dtype=np.int64), times, side="right")
        out = []
        for i in range(lo, hi + 1):
            rows = np.flatnonzero(which == i)
            if len(rows):
                out.append((i, rows))
        return out

    def replaced(self, index: int, loaded: LoadedModel | None) -> Timeline:
        """This timeline with segment `index`'s model replaced."""
        segments = list(self.segments)
        segments[index] = segments[index].with_model(loaded)
        return Timeline(segments)

    def end(self, index: int) -> int | None:
        """Where segment `index` ends (the next one's start); None for the last."""
        return self._starts[index] if index < len(self._starts) else None

    def describe(self) -> list[dict[str, object]]:
        return [
            {
                "start_ms": s.start,
                "version": s.manifest.version,
                "sha256": s.manifest.sha256,
                "loaded": s.loaded is not None,
            }
            for s in self.segments
        ]
