"""Shadow scoring: a candidate version scores the same batches as the serving one, and is
compared with it, while the outputs keep the serving version's predictions.

The candidate is whatever a channel of the store points at (`python -m reloader publish BUILD
URL --channel shadow`; `reloader.sources` follows `URL@channel:shadow`). The channel may not
exist yet: its model is started in the background, retried every poll interval, and the batches
go unshadowed until it serves. Pointing the channel back at the serving version (`python -m
reloader channel URL shadow --to main`) ends the shadow: a candidate with the serving version's
bundle is not scored twice.

What is compared, per batch (`ShadowStats`, cumulative counters; rates are ratios of them):
- rows both versions scored, and of those the rows where they agree (the same label: the
  largest output);
- the sum of |candidate - serving| per output over those rows (mean |Δ| = sum / rows);
- rows the serving version scored and the candidate did not (its error rows), and batches the
  candidate failed on as a whole;
- the candidate's time per batch.
Nothing here can fail the batch: a candidate that raises is counted and the batch goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from job.scoring import Batch, Scored, Scorer
from reloader.agent import HotModel
from reloader.errors import NotReady, ReloaderError
from reloader.values import Versioned

log = logging.getLogger("job")


@dataclasses.dataclass
class ShadowStats:
    """Cumulative counts since the function started (all integers, so they fit Flink counters)."""

    batches: int = 0
    rows: int = 0  # rows both versions scored
    agreed: int = 0  # of those, rows with the same label
    delta_micro: list[int] = dataclasses.field(default_factory=list)  # per output, sum |Δ| x 1e6
    errors: int = 0  # rows the serving version scored and the candidate did not
    failed_batches: int = 0  # batches the candidate could not score at all
    micros: int = 0  # the candidate's time, summed over its batches
    version: str = ""
    sha256: str = ""

    def agreement(self) -> float | None:
        return self.agreed / self.rows if self.rows else None

    def mean_abs_delta(self) -> list[float]:
        return [d / 1e6 / self.rows for d in self.delta_micro] if self.rows else []


class ChannelModel:
    """A `HotModel` of a store channel that may not exist yet: started in the background and
    retried every `retry_seconds` until it serves (`model` is None until then). It reports
    `role` (`shadow`, `canary`) to the store's fleet view (`HotModel.set_report`)."""

    def __init__(
        self, make_model: Callable[[], HotModel], retry_seconds: float, *, role: str
    ) -> None:
        self._make_model = make_model
        self._retry = retry_seconds
        self.role = role
        self.model: HotModel | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._start, name="channel-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        while not self._stop.is_set():
            model = self._make_model()
            model.set_report(role=self.role)
            try:
                # Until the channel exists, one quiet read per retry: a start that fails logs
                # a warning each time (every poll interval, for as long as there is none).
                if not model.probe():
                    raise NotReady("the channel does not exist yet")
                model.start()
            except ReloaderError as e:
                model.stop()
                why = f"{type(e).__name__}: {e}"
                if why != self._logged:
                    log.info("%s: no candidate yet (%s); retrying", model.url, why)
                    self._logged = why
                self._stop.wait(self._retry)
                continue
            if self._stop.is_set():
                model.stop()
                return
            self.model = model  # the processing thread picks it up at its next batch
            return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.model is not None:
            self.model.stop()
            self.model = None


class Shadow:
    """The candidate of one channel, beside the serving model of a function."""

    def __init__(self, make_model: Callable[[], HotModel], retry_seconds: float) -> None:
        self.channel = ChannelModel(make_model, retry_seconds, role="shadow")
        self.stats = ShadowStats()
        self._logged: str | None = None

    @property
    def model(self) -> HotModel | None:
        return self.channel.model

    def start(self) -> None:
        self.channel.start()

    def stop(self) -> None:
        self.channel.stop()

    def compare(
        self, batch: Batch, serving: Versioned[Scored], scorer: Scorer
    ) -> Versioned[Scored] | None:
        """Scores `batch` on the candidate and counts how it compares with `serving`; returns
        the candidate's results (None: no candidate, or it failed on the batch)."""
        model = self.model
        if model is None:
            return None
        try:
            candidate = model.current()
        except ReloaderError:
            return None
        if candidate.sha256 == serving.sha256:
            return None  # the channel points at the serving bundle: nothing to compare
        stats = self.stats
        if candidate.sha256 != stats.sha256:
            log.info(
                "shadow: candidate %s (%s) scores beside %s",
                candidate.version,
                candidate.sha256[:12],
                serving.version,
            )
            self.stats = stats = ShadowStats(version=candidate.version, sha256=candidate.sha256)
        t0 = time.perf_counter()
        try:
            shadow = scorer.predict(lambda call: model.run_on(candidate, call), batch)
        except Exception as e:  # the candidate's failure is a figure, never the job's
            stats.failed_batches += 1
            stats.batches += 1
            if str(e) != self._logged:
                log.warning("shadow: candidate %s failed on a batch: %s", candidate.version, e)
                self._logged = str(e)
            return None
        stats.micros += int((time.perf_counter() - t0) * 1e6)
        stats.batches += 1
        compare_into(stats, serving.value, shadow.value)
        return shadow


def compare_into(stats: ShadowStats, serving: Scored, candidate: Scored) -> None:
    """Adds one batch's comparison to `stats` (see the module docstring)."""
    if serving.ok.all() and candidate.ok.all():  # the usual batch: no error rows
        a, b = serving.probabilities, candidate.probabilities
    else:
        both = serving.ok & candidate.ok
        stats.errors += int((serving.ok & ~candidate.ok).sum())
        if not both.any():
            return
        a, b = _full(serving)[both], _full(candidate)[both]
    if a.ndim != 2 or a.shape != b.shape:
        return  # other outputs: rows and errors only
    stats.rows += len(a)
    stats.agreed += int(np.count_nonzero(a.argmax(axis=1) == b.argmax(axis=1)))
    sums = np.abs(a - b).sum(axis=0) * 1e6  # float32: a batch's sum, then whole micros
    if len(stats.delta_micro) != len(sums):
        stats.delta_micro = [0] * len(sums)
    stats.delta_micro = [d + int(s) for d, s in zip(stats.delta_micro, sums, strict=True)]


def _full(s: Scored) -> npt.NDArray[np.float32]:
    """The scores of a batch by row (rows it did not score: NaN)."""
    k = s.probabilities.shape[1] if s.probabilities.ndim == 2 and len(s.probabilities) else 0
    out = np.full((len(s.ok), k), np.nan, dtype=np.float32)
    if k:
        out[s.ok] = s.probabilities
    return out


def metric_values(stats: ShadowStats) -> Mapping[str, int]:
    """The shadow's Flink counters (group `model.shadow`)."""
    values = {
        "batches": stats.batches,
        "rows": stats.rows,
        "agreed_rows": stats.agreed,
        "error_rows": stats.errors,
        "failed_batches": stats.failed_batches,
        "batch_micros": stats.micros,
        "version_number": int(stats.version)
        if stats.version.isascii() and stats.version.isdigit() and len(stats.version) < 19
        else -1,
    }
    values.update({f"abs_delta_micro_{i}": d for i, d in enumerate(stats.delta_micro)})
    return values


def channel_url(url: str, channel: str) -> str:
    """The store URL that follows `channel` (`reloader.sources`)."""
    return f"{url}@channel:{channel}"


def describe(stats: ShadowStats) -> dict[str, Any]:
    """The stats as a plain dict (logs, tests)."""
    return {
        **dataclasses.asdict(stats),
        "agreement": stats.agreement(),
        "mean_abs_delta": stats.mean_abs_delta(),
        "micros_per_batch": stats.micros / stats.batches if stats.batches else None,
    }
