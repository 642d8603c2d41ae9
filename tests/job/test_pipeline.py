"""The whole job (`job.pipeline`) in a PyFlink mini-cluster: both prediction paths under hot swaps,
a task failure with checkpointing on, and a bad bundle published while the job runs."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from job.pipeline import JobOptions
from reloader.manifest import Manifest
from reloader.sources import open_source
from tests.support.faults import bad_bundle
from tests.support.flink import check_predictions, read_outputs, running_job
from tests.support.stores import Versions, publish

pytestmark = pytest.mark.slow


def _options(tmp: Path, **kw: Any) -> JobOptions:
    base: dict[str, Any] = {
        "model": str(tmp / "store"),
        "sink": f"dir:{tmp / 'out'}",
        "cache_dir": str(tmp / "cache"),
        "poll_interval": 0.2,
        "checkpoint_interval_ms": 500,
        "roll_interval": "1 s",
    }
    base.update(kw)
    return JobOptions(**base)


@pytest.mark.parametrize("api", ["process", "vectorized"])
def test_ten_versions_while_50k_records_stream(
    api: str, tmp_path: Path, versions: Versions, wine: Any
) -> None:
    """50k records while 10 versions are published: every id exactly once, each prediction the
    reference of the version it names, and no subtask ever goes back to an older version.

    25 s of stream at 2k/s leaves room for 10 swaps of ~1 s each (a version's trial build in a
    child process included)."""
    store = tmp_path / "store"
    source = open_source(str(store))
    chain = [versions.make(str(i), "v1" if i % 2 else "v2") for i in range(11)]
    publish(source, chain[0])
    opts = _options(tmp_path, api=api, parallelism=2, records=50_000, rate=2000)
    with running_job(opts, tmp_path) as job:
        # Event-driven: publish the next version once every subtask serves the previous one.
        for k in range(1, 11):
            publish(source, chain[k])
            job.wait_metric(
                "version_number",
                lambda vs, k=k: len(vs) == 2 and all(v == k for v in vs),
                f"both subtasks serving version {k}",
            )
        job.result.wait()
    source.close()

    outputs = read_outputs(tmp_path / "out")
    records = [r for recs in outputs.values() for r in recs]
    ids = Counter(r["id"] for r in records)
    assert len(ids) == 50_000 and set(ids) == set(range(50_000))
    assert max(ids.values()) == 1, "duplicates"
    check_predictions(records, {v.label: v.base for v in chain}, wine)
    seen_versions = set()
    for subtask, recs in outputs.items():
        order = [int(r["model_version"]) for r in recs]
        assert order == sorted(order), f"subtask {subtask} went back to an older version"
        assert {r["subtask"] for r in recs} == {subtask}
        seen_versions |= set(order)
    # Each version was served before the next was published (the waits above), so all of them
    # predicted something; version 0 may have been replaced before the first record arrived.
    assert seen_versions >= set(range(1, 11)), seen_versions
    assert len(outputs) == 2


def test_task_failure_with_checkpoints_loses_nothing(
    tmp_path: Path, versions: Versions, wine: Any
) -> None:
    """A record that makes the task fail once midway: Flink restarts from the last checkpoint
    (the process path's pending batches are in it) and every id is in the output exactly once
    (the file sink commits on checkpoints, so output written after the checkpoint is discarded
    with the failed attempt)."""
    from poison import PoisonedPredict

    v = versions.make("1", "v2")
    with open_source(str(tmp_path / "store")) as source:
        publish(source, v)
    marker = tmp_path / "poisoned"
    opts = _options(tmp_path, api="process", parallelism=2, records=8000, rate=2000)
    predictor = PoisonedPredict(
        opts.model_settings(), poison_id=4000, marker=str(marker), batch_size=opts.batch_size
    )
    with running_job(opts, tmp_path, predictor=predictor) as job:
        job.result.wait()
    assert marker.exists(), "the poison record never reached the function"
    records = [r for recs in read_outputs(tmp_path / "out").values() for r in recs]
    ids = Counter(r["id"] for r in records)
    assert set(ids) == set(range(8000)), f"lost: {sorted(set(range(8000)) - set(ids))[:10]}"
    assert max(ids.values()) == 1, f"duplicates: {[i for i, c in ids.items() if c > 1][:10]}"
    check_predictions(records, {"1": "v2"}, wine)


@pytest.mark.parametrize("kind", ["selftest_mismatch", "arraybuffer_blowup"])
def test_bad_bundle_is_refused_and_counted(
    kind: str, tmp_path: Path, versions: Versions, bundle_v2: bytes, wine: Any
) -> None:
    """A bad bundle published mid-stream: refused, the job keeps serving the previous version,
    `model.reload_failures` rises in Flink's metrics; the next good version is adopted.

    `arraybuffer_blowup` allocates 4 GiB outside the V8 heap: its trial child is stopped at
    1 GiB, and the job's own processes (JVM, Python workers) do not grow by that much."""
    store = tmp_path / "store"
    source = open_source(str(store))
    good1, good2 = versions.make("1", "v1"), versions.make("2", "v2")
    bad_data = bad_bundle(bundle_v2, kind)
    bad = Manifest.for_bundle(bad_data, model="wine", version="66")
    publish(source, good1)
    opts = _options(tmp_path, api="vectorized", parallelism=1, records=12_000, rate=2000)
    with running_job(opts, tmp_path) as job, _PeakRss() as rss:
        job.wait_metric("version_number", lambda vs: vs == [1], "serving version 1")
        before = rss.reset()
        source.put(bad.bundle, bad_data, content_type="application/javascript")
        source.put("version.json", bad.to_bytes(), content_type="application/json")
        job.wait_metric("reload_failures", lambda vs: vs[0] >= 1, "the failure counted")
        assert list(job.metric("version_number").values()) == [1]
        growth = rss.peak - before
        assert growth < 1 << 30, f"the job's processes grew by {growth >> 20} MiB"
        publish(source, good2)
        job.wait_metric("version_number", lambda vs: vs == [2], "serving version 2")
        job.result.wait()
    source.close()
    records = [r for recs in read_outputs(tmp_path / "out").values() for r in recs]
    assert {r["model_version"] for r in records} <= {"1", "2"}
    assert "2" in {r["model_version"] for r in records}
    assert len({r["id"] for r in records}) == 12_000
    check_predictions(records, {"1": "v1", "2": "v2"}, wine)


class _PeakRss:
    """Samples the summed RSS of this process and its descendants (the mini-cluster's JVM and
    Python workers), trial children excluded, every 20 ms on a thread until closed."""

    def __init__(self) -> None:
        self.peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> int:
        """The summed RSS now, which becomes the peak to beat."""
        with self._lock:
            self.peak = 0
            return self.sample()

    def sample(self) -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                if "reloader.trial_child" not in p.cmdline():
                    total += p.memory_info().rss
            except psutil.Error:
                continue  # ended meanwhile
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with self._lock:
                self.sample()
