"""Chaos on the typed path: the model as the SQL function over typed columns (`job.table`) in a
streaming Table job, with records streaming all along, through a model swap, versions the job
refuses and a task failure; at the end nothing is lost and nothing is doubled.

The job: Flink's filesystem connector follows a directory of JSON files (typed columns: `id` and
the WINE features), the registered model function predicts, the job's typed JSON sink
(`job.pipeline.sink`) commits part files on checkpoints (exactly-once). One record in 25 lacks a
feature. In turn: a new version is published and adopted while records flow; a version whose
declared inputs the job's columns lack is refused by the schema gate (`reloader.compat`); versions
that return NaN or fail their self-test are refused; while the store still offers the last of
them, a record fails its task once and Flink restarts the job from its last checkpoint: the
restarted task serves the last good version again; a good version is adopted after that. After each
refusal the old version keeps serving and the log names why. At the end every input id is in the
committed output exactly once, names a version that served and carries that version's
prediction, and every record lacking a feature is a typed error row.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from logging.handlers import BufferingHandler
from pathlib import Path
from typing import Any

import pytest

from job.pipeline import JobOptions
from job.table import SQL_INPUT, register_model
from reloader.sources import open_source
from tests.support.faults import RENAMED_INPUT, bad_bundle
from tests.support.flink import (
    Feeder,
    RunningJob,
    check_predictions,
    ids_out,
    read_outputs,
    running_job,
)
from tests.support.stores import Versions, publish
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

POISON_ID = 10**9 + 1  # never fed: the task-failure fault writes it
BAD_EVERY = 25  # one record in 25 lacks 'ash'


def lacks_ash(i: int) -> bool:
    return i % BAD_EVERY == 0 and i != POISON_ID


class TypedFeeder(Feeder):
    def record(self, i: int) -> dict[str, Any]:
        rec = super().record(i)
        if lacks_ash(i):
            del rec["ash"]  # a null in its DOUBLE column
        return rec


class Model:
    """The store the job follows, the versions published to it, and what the job shows of them."""

    def __init__(self, root: Path, versions: Versions) -> None:
        self.store = open_source(str(root))
        self.versions = versions
        self.good: dict[str, str] = {}  # label -> base ("v1"/"v2") of every good version
        self.label = -1
        self.log = BufferingHandler(capacity=1 << 20)  # the reloader's log lines, kept
        self.job: RunningJob | None = None

    def publish_good(self, base: str) -> str:
        self.label += 1
        publish(self.store, self.versions.make(str(self.label), base))
        self.good[str(self.label)] = base
        return str(self.label)

    def metric(self, name: str) -> float:
        assert self.job is not None
        values = list(self.job.metric(name).values())
        return values[0] if values else -1.0

    def wait_serving(self, label: str, what: str, timeout: float = 60.0) -> None:
        assert self.job is not None
        self.job.wait_metric("version_number", lambda vs: vs == [int(label)], what, timeout)

    def refused(self, data: bytes, needle: str) -> None:
        """Publishes the bundle `data`; waits until it is refused and two more polls have
        passed; checks the old version still serves and one log line says why."""
        assert self.job is not None
        serving = self.metric("version_number")
        failures = self.metric("reload_failures")
        logged = len(self.log.buffer)
        self.label += 1
        label = str(self.label)
        publish(self.store, self.versions.make(label, data=data))
        self.job.wait_metric(
            "reload_failures", lambda vs: vs[0] > failures, f"version {label} refused"
        )
        checks = self.metric("checks")
        self.job.wait_metric("checks", lambda vs: vs[0] >= checks + 2, "two more polls")
        assert self.metric("version_number") == serving, f"{needle}: the old version stopped"
        lines = [r.getMessage() for r in self.log.buffer[logged:] if r.levelno >= logging.WARNING]
        assert len(lines) == 1 and needle in lines[0], (needle, lines)


def test_the_typed_job_loses_nothing_through_swaps_refusals_and_a_task_failure(
    tmp_path: Path, versions: Versions, wine: Any
) -> None:
    from poison import PoisonedId

    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    model = Model(tmp_path / "store", versions)
    reloader_log = logging.getLogger("reloader")
    # On the logger itself: the Python worker (in this process) replaces the root's handlers.
    reloader_log.addHandler(model.log)
    level = reloader_log.level
    reloader_log.setLevel(logging.INFO)
    opts = JobOptions(
        model=str(tmp_path / "store"),
        source=f"json:{in_dir}",  # typed: the sink below is the job's typed JSON sink
        sink=f"json:{out_dir}",
        execution_mode="process",  # the Python workers run (and log) in this process
        checkpoint_interval_ms=500,
        roll_interval="1 s",
        poll_interval=0.2,
        cache_dir=str(tmp_path / "cache"),
    )

    def typed_job(env: Any, t_env: Any) -> Any:
        from pyflink.table import DataTypes
        from pyflink.table.udf import udf

        sig = register_model(t_env, "predict", opts.model_settings())
        poisoned = PoisonedId(poison_id=POISON_ID, marker=str(tmp_path / "poisoned"))
        t_env.create_temporary_system_function(
            "poisoned_id", udf(poisoned, result_type=DataTypes.BIGINT())
        )
        columns = ", ".join(["`id` BIGINT", *(f"`{n}` {SQL_INPUT[k]}" for n, k in sig.inputs)])
        t_env.execute_sql(
            f"CREATE TEMPORARY TABLE records ({columns}) WITH ('connector' = 'filesystem', "
            f"'path' = '{in_dir.as_uri()}', 'format' = 'json', "
            "'source.monitor-interval' = '100 ms')"
        )
        fields = ", ".join(f"p.`{f}` AS `{f}`" for f, _ in sig.fields)
        return t_env.sql_query(
            f"SELECT poisoned_id(id) AS id, {fields} "
            f"FROM (SELECT id, {sig.call('predict')} AS p FROM records)"
        )

    feeder = TypedFeeder(in_dir, wine)
    try:
        model.publish_good("v2")  # version 0
        feeder.write_chunk()
        with running_job(opts, tmp_path, table=typed_job) as job:
            model.job = job
            model.wait_serving("0", "serving version 0", timeout=120)
            feeder.start()
            good = model.publish_good("v1")
            model.wait_serving(good, "a new version adopted mid-stream")
            v2 = versions.bundles["v2"]
            model.refused(v2 + RENAMED_INPUT.encode(), "needs input 'ash_ppm', which the job")
            model.refused(bad_bundle(v2, "nan_output"), "non-finite output")
            model.refused(bad_bundle(v2, "selftest_mismatch"), "SelfTestError")

            # A task failure while the store offers a refused version: the restarted task
            # serves the last good version again (reloader.follower.first_load), not a failure.
            # The source reads files in the order it finds them: with a backlog (a loaded
            # machine) the poison would wait behind it. Let the job catch up first.
            feeder.paused.set()
            fed = feeder.next_id
            wait_until(lambda: ids_out(out_dir, fed) >= fed, timeout=180, what="caught up")
            restarts, loaded = job.restarts(), model.metric("loaded_at_ms")
            poison = json.dumps(feeder.record(POISON_ID))
            (in_dir / "poison.jsonl").write_text(poison + "\n")
            wait_until(lambda: job.restarts() > restarts, timeout=60, what="the task restarted")
            feeder.paused.clear()
            wait_until(lambda: job.state() == "RUNNING", timeout=60, what="running again")
            job.wait_metric("loaded_at_ms", lambda vs: vs[0] > loaded, "the model loaded anew")
            model.wait_serving(good, "the last good version serving after the restart")
            last = model.publish_good("v2")
            model.wait_serving(last, "the next good version adopted")

            feeder.stopped.set()
            feeder.join()
            total = feeder.next_id
            wait_until(
                lambda: ids_out(out_dir, POISON_ID + 1) >= total + 1,
                timeout=180,
                what=f"all {total + 1} records committed",
            )
            job.result.get_job_client().cancel().result()
    finally:
        feeder.stopped.set()
        if feeder.is_alive():
            feeder.join()
        reloader_log.removeHandler(model.log)
        reloader_log.setLevel(level)
        model.store.close()

    rows = [r for recs in read_outputs(out_dir).values() for r in recs]
    ids = Counter(r["id"] for r in rows)
    fed = {*range(total), POISON_ID}
    assert not fed - set(ids), f"lost: {sorted(fed - set(ids))[:20]}"
    assert set(ids) == fed and max(ids.values()) == 1, "duplicates or ids never fed"
    errors = [r for r in rows if r["error"] is not None]
    assert sorted(r["id"] for r in errors) == [i for i in range(total) if lacks_ash(i)]
    for r in errors:
        assert "'ash'" in r["error"] and r["label"] is None and r["probabilities"] is None, r
    assert {r["model_version"] for r in rows} <= set(model.good)
    assert {"0", "1", last} <= {r["model_version"] for r in rows}
    check_predictions([r for r in rows if r["error"] is None], model.good, wine)
