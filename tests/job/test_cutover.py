"""Event-time cutover in the job: replay-stable versions across subtasks and a task failure.

A p=2 job on the process path reads JSON lines whose event times come out of order (up to the
watermark's lag). Version 1 serves; version 2 is published mid-run with an effective time T
(`reloader.publish.publish(effective_at=...)`), ahead of the stream. Every record with event time
< T must be scored by version 1 and every one >= T by version 2, on both subtasks, whatever
order they arrive in. The same run is made twice: once as is, once with a task that fails at one
record after the cutover (Flink restarts it from its last checkpoint and replays the records
after it, each of them scored again). Both runs must commit every id exactly once, with the same
version and the same prediction for every id. Then the same cutover on a standalone cluster of
two TaskManager processes, the model on S3: the subtasks share no process and still agree.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import reloader.publish
from job.pipeline import JobOptions
from tests.support.flink import (
    REPO,
    StandaloneFlink,
    check_predictions,
    ids_out,
    model_metrics,
    read_outputs,
    rest_get,
    running_job,
)
from tests.support.stores import Versions
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

T = 1_800_000_000_000  # the cutover, ms since the epoch
STEP_MS = 10  # event time between consecutive ids
RECORDS = 1600
DISORDER_MS = 400  # how far out of order the records come (the job allows 1000 ms)
FIRST = 300  # ids written before the cutover is published (all well before T)
POISON_ID = 1250  # after the cutover: its task fails once there (the second run)


def event_time(i: int) -> int:
    return T + (i - RECORDS // 2) * STEP_MS


def write(in_dir: Path, ids: list[int], wine: Any, part: int) -> None:
    lines = [
        json.dumps({"id": i, "ts": event_time(i), **wine.records[i % len(wine.records)]})
        for i in ids
    ]
    tmp = in_dir / f".part-{part:03d}.jsonl"  # hidden until renamed: read whole
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(in_dir / f"part-{part:03d}.jsonl")


def out_of_order(ids: list[int], seed: int) -> list[int]:
    """`ids` shuffled, each at most DISORDER_MS of event time from its place in order."""
    rng = random.Random(seed)
    return sorted(ids, key=lambda i: event_time(i) + rng.uniform(0, DISORDER_MS))


def feed_across_cutover(
    in_dir: Path,
    wine: Any,
    ids: list[int],
    serving: Callable[[], list[float]],
    publish_v2: Callable[[], object],
    out_dir: Path,
    *,
    timeout: float,
) -> None:
    """Feeds a running job the ids after the first part: waits until every subtask serves 1,
    publishes version 2 effective at T, keeps records well before T coming until every subtask
    knows version 2, then writes the rest and waits until every id is committed.

    `serving()` is every subtask's `version_number` (a list, in any order)."""
    wait_until(lambda: sorted(serving()) == [1, 1], timeout=timeout, what="both subtasks serving 1")
    publish_v2()
    # Records well before T keep the batches going (a few every 0.1 s), so each subtask adopts the
    # new timeline and reports it.
    rest, part, last = ids[FIRST:], 1, 0.0

    def adopted() -> bool:
        nonlocal rest, part, last
        if sorted(serving()) == [2, 2]:
            return True
        if time.monotonic() - last > 0.1 and event_time(rest[0]) < T - 3000:
            write(in_dir, rest[:5], wine, part)
            rest, part, last = rest[5:], part + 1, time.monotonic()
        return False

    wait_until(adopted, timeout=60, what="both subtasks know version 2")
    for k in range(0, len(rest), 200):
        write(in_dir, rest[k : k + 200], wine, part)
        part += 1
    wait_until(
        lambda: ids_out(out_dir, RECORDS) >= RECORDS,
        timeout=180,
        what=f"all {RECORDS} records committed",
    )


def committed(out_dir: Path, wine: Any) -> dict[int, dict[str, Any]]:
    """Every id's committed record; each id exactly once, with its version's own prediction."""
    records = [r for recs in read_outputs(out_dir).values() for r in recs]
    counts = Counter(r["id"] for r in records)
    assert set(counts) == set(range(RECORDS)) and max(counts.values()) == 1, "each id once"
    check_predictions(records, {"1": "v1", "2": "v2"}, wine)
    return {r["id"]: r for r in records}


def on_the_wrong_side(records: dict[int, dict[str, Any]]) -> list[int]:
    return [i for i, r in records.items() if r["model_version"] != ("2" if r["ts"] >= T else "1")]


def run(tmp: Path, versions: Versions, wine: Any, *, poison: bool) -> dict[int, dict[str, Any]]:
    from poison import PoisonedPredict

    store, in_dir, out_dir = tmp / "store", tmp / "in", tmp / "out"
    in_dir.mkdir(parents=True)
    v1, v2 = versions.make("1", "v1"), versions.make("2", "v2")
    reloader.publish.publish(str(store), v1.data, v1.manifest)
    opts = JobOptions(
        model=str(store),
        source=f"dir:{in_dir}",
        sink=f"dir:{out_dir}",
        api="process",
        execution_mode="process",
        parallelism=2,
        event_time="ts",
        out_of_orderness_ms=1000,
        checkpoint_interval_ms=300,
        roll_interval="1 s",
        poll_interval=0.2,
        cache_dir=str(tmp / "cache"),
        batch_size=32,
        max_delay_ms=20,
    )
    predictor = PoisonedPredict(
        opts.model_settings(),
        poison_id=POISON_ID if poison else -1,
        marker=str(tmp / "poisoned"),
        batch_size=opts.batch_size,
        max_delay_ms=opts.max_delay_ms,
    )
    ids = out_of_order(list(range(RECORDS)), seed=7)
    write(in_dir, ids[:FIRST], wine, 0)
    with running_job(opts, tmp, predictor=predictor) as job:
        feed_across_cutover(
            in_dir,
            wine,
            ids,
            lambda: list(job.metric("version_number").values()),
            lambda: reloader.publish.publish(str(store), v2.data, v2.manifest, effective_at=T),
            out_dir,
            timeout=180,
        )
        job.result.get_job_client().cancel().result()
        # Its slots are free once it is cancelled (the next run needs them), or once its
        # mini-cluster has shut down (its REST API is gone).

        def cancelled() -> bool:
            try:
                return job.state() == "CANCELED"
            except OSError:
                return True

        wait_until(cancelled, timeout=120, what="the job cancelled")
    if poison:
        assert (tmp / "poisoned").exists(), "the task failed once"
    return committed(out_dir, wine)


def test_a_cutover_is_exact_across_subtasks_and_stable_through_a_task_failure(
    tmp_path: Path, versions: Versions, wine: Any
) -> None:
    clean = run(tmp_path / "clean", versions, wine, poison=False)
    wrong = on_the_wrong_side(clean)
    assert not wrong, f"{len(wrong)} records on the wrong side of the cutover: {wrong[:10]}"
    assert {r["model_version"] for r in clean.values()} == {"1", "2"}

    failed = run(tmp_path / "failed", versions, wine, poison=True)
    assert failed == clean, "a replay scores every record as the run without the failure"


def test_a_cutover_is_exact_across_taskmanagers_of_a_standalone_cluster(
    tmp_path: Path, versions: Versions, wine: Any, s3_session: Any
) -> None:
    """The same cutover on a standalone cluster of two TaskManager processes with one slot each:
    the two subtasks run in different JVMs and Python workers, follow the model on S3 each on its
    own, and still score every record on its side of T."""
    url = "s3://models/cutover/wine"
    options = {"endpoint": s3_session.endpoint, "access_key": s3_session.access_key,
               "secret_key": s3_session.secret_key, "region": s3_session.region}  # fmt: skip
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    v1, v2 = versions.make("1", "v1"), versions.make("2", "v2")
    reloader.publish.publish(url, v1.data, v1.manifest, source_options=options)
    ids = out_of_order(list(range(RECORDS)), seed=11)
    write(in_dir, ids[:FIRST], wine, 0)
    with StandaloneFlink(
        tmp_path / "flink", slots=1, taskmanagers=2, env=s3_session.env()
    ) as cluster:
        job_id = cluster.submit_python(
            REPO / "job" / "__main__.py",
            ["--model", url, "--api", "process", "--execution-mode", "process",
             "--parallelism", "2", "--source", f"dir:{in_dir}", "--sink", f"dir:{out_dir}",
             "--event-time", "ts", "--out-of-orderness-ms", "1000",
             "--checkpoint-interval-ms", "300", "--checkpoint-dir", str(tmp_path / "checkpoints"),
             "--roll-interval", "1 s", "--poll-interval", "0.2", "--batch-size", "32",
             "--max-delay-ms", "20", "--cache-dir", str(tmp_path / "cache")],
        )  # fmt: skip

        def serving() -> list[float]:
            try:
                return list(model_metrics(cluster.rest, job_id, "version_number").values())
            except OSError:
                return []

        try:
            feed_across_cutover(
                in_dir,
                wine,
                ids,
                serving,
                lambda: reloader.publish.publish(
                    url, v2.data, v2.manifest, effective_at=T, source_options=options
                ),
                out_dir,
                timeout=120,
            )
            overview = rest_get(cluster.rest, "/overview")
            assert overview["taskmanagers"] == 2 and overview["slots-available"] == 0, (
                "the two subtasks run on the two TaskManagers"
            )
            assert cluster.job_state(job_id) == "RUNNING"
        except BaseException:
            print(cluster.log_tail())
            raise
        finally:
            cluster.cancel(job_id)
    records = committed(out_dir, wine)
    wrong = on_the_wrong_side(records)
    assert not wrong, f"{len(wrong)} records on the wrong side of the cutover: {wrong[:10]}"
    assert {r["model_version"] for r in records.values()} == {"1", "2"}
