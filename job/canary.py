"""Canary: a candidate version serves a fraction of the keys, and is rolled back automatically
when it errs.

The candidate is whatever a channel of the store points at (`python -m reloader publish BUILD
URL --channel canary`), followed in the background like the shadow's (`job.shadow.ChannelModel`).
A row goes to it when a hash of its key field (default `id`) falls under `fraction`: the same key
always gets the same version, on every subtask and after a restart. Its outputs carry its own
`model_version`.

Rollback: the candidate's error rows are counted against the serving version's on the same
batches. Once it has scored `min_rows` rows and its error rate exceeds the serving one's by more
than `max_error_rate`, or it has failed `max_failed_batches` batches outright (a timeout, a
crash), this subtask stops sending it rows: the rollback is logged (once), counted
(`rollbacks`), reported to the store with the candidate's polls (its fleet view shows the
subtask's `state`: "rolled back <sha256> after <n> rows: <why>"), and holds for that bundle
until the channel points at another one. A batch the candidate fails is scored again by the
serving version, so its rows are never lost or errored because of the candidate.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from job.scoring import Column
from job.shadow import ChannelModel
from reloader.agent import HotModel
from reloader.errors import ReloaderError
from reloader.sources import STATE_ROLLED_BACK
from reloader.values import LoadedModel

log = logging.getLogger("job")

BUCKETS = 10_000
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclasses.dataclass
class CanaryStats:
    rows: int = 0  # rows the candidate scored
    error_rows: int = 0
    serving_rows: int = 0  # rows the serving version scored in the same batches
    serving_error_rows: int = 0
    failed_batches: int = 0
    rollbacks: int = 0
    version: str = ""
    sha256: str = ""
    rolled_back: bool = False


def buckets(values: Column) -> npt.NDArray[np.int64]:
    """Each key's bucket in [0, BUCKETS): integers by a multiplicative hash, anything else by the
    CRC-32 of its text. Stable across processes (no per-process hash seed)."""
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        mixed = array.astype(np.uint64) * _GOLDEN
        return ((mixed >> np.uint64(32)) % np.uint64(BUCKETS)).astype(np.int64)
    return np.fromiter(
        (zlib.crc32(str(v).encode()) % BUCKETS for v in values), np.int64, len(array)
    )


class Canary:
    def __init__(
        self,
        make_model: Callable[[], HotModel],
        retry_seconds: float,
        *,
        fraction: float,
        key: str = "id",
        max_error_rate: float = 0.05,
        min_rows: int = 200,
        max_failed_batches: int = 3,
    ) -> None:
        if not 0 < fraction <= 1:
            raise ValueError("the canary fraction must be in (0, 1]")
        self.channel = ChannelModel(make_model, retry_seconds, role="canary")
        self.cut = round(fraction * BUCKETS)
        self.key = key
        self.max_error_rate = max_error_rate
        self.min_rows = min_rows
        self.max_failed_batches = max_failed_batches
        self.stats = CanaryStats()
        self._rolled_back: set[str] = set()
        self.total_rollbacks = 0

    def start(self) -> None:
        self.channel.start()

    def stop(self) -> None:
        self.channel.stop()

    def candidate(self, serving_sha256: str) -> LoadedModel | None:
        """The model that gets the canary rows now, or None (none yet, the serving bundle,
        rolled back)."""
        hm = self.channel.model
        if hm is None:
            return None
        try:
            m = hm.current()
        except ReloaderError:
            return None
        if m.sha256 == serving_sha256 or m.sha256 in self._rolled_back:
            return None
        if m.sha256 != self.stats.sha256:
            log.info("canary: %s (%s) serves %d%% of the keys", m.version, m.sha256[:12],
                     self.cut * 100 // BUCKETS)  # fmt: skip
            self.stats = CanaryStats(version=m.version, sha256=m.sha256)
        return m

    def rows(self, column: Column | None, n: int) -> npt.NDArray[np.bool_]:
        """Which of the `n` rows go to the candidate (rows without the key never do)."""
        if column is None:
            return np.zeros(n, dtype=bool)
        if isinstance(column, np.ndarray) and column.dtype.kind in "iu":
            return buckets(column) < self.cut  # integers: every row has its key
        values = list(column) if not isinstance(column, np.ndarray) else column
        present = np.array([v is not None for v in values], dtype=bool)
        out = np.zeros(n, dtype=bool)
        if present.any():
            keys = np.asarray(values, dtype=object)[present] if not present.all() else values
            out[present] = buckets(keys) < self.cut
        return out

    def record(self, *, rows: int, errors: int, serving_rows: int, serving_errors: int) -> None:
        s = self.stats
        s.rows += rows
        s.error_rows += errors
        s.serving_rows += serving_rows
        s.serving_error_rows += serving_errors
        self._judge()

    def failed(self, why: str) -> None:
        self.stats.failed_batches += 1
        log.warning("canary: %s failed a batch (scored by the serving version): %s",
                    self.stats.version, why)  # fmt: skip
        self._judge()

    def _judge(self) -> None:
        s = self.stats
        if s.rolled_back:
            return
        why = ""
        if s.failed_batches >= self.max_failed_batches:
            why = f"{s.failed_batches} batches failed"
        elif s.rows >= self.min_rows:
            mine = s.error_rows / s.rows
            theirs = s.serving_error_rows / s.serving_rows if s.serving_rows else 0.0
            if mine > theirs + self.max_error_rate:
                why = f"error rate {mine:.1%} against the serving version's {theirs:.1%}"
        if why:
            s.rolled_back = True
            s.rollbacks += 1
            self.total_rollbacks += 1
            self._rolled_back.add(s.sha256)
            log.warning("canary: %s (%s) rolled back after %d rows: %s", s.version,
                        s.sha256[:12], s.rows, why)  # fmt: skip
            hm = self.channel.model
            if hm is not None:  # the store's fleet view shows it from the next poll on
                hm.set_report(
                    state=f"{STATE_ROLLED_BACK} {s.sha256[:12]} after {s.rows} rows: {why}",
                    sha256=s.sha256,
                )


def metric_values(canary: Canary) -> Mapping[str, int]:
    s = canary.stats
    return {
        "scored_rows": s.rows,
        "error_rows": s.error_rows,
        "failed_batches": s.failed_batches,
        "rollbacks": canary.total_rollbacks,
        "active": int(bool(s.sha256) and not s.rolled_back),
    }


def describe(canary: Canary) -> dict[str, Any]:
    return {**dataclasses.asdict(canary.stats), "rollbacks_total": canary.total_rollbacks}
