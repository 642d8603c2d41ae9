"""`job.planning.planned`: a query planned from a py4j Java thread other than the one that made
the TableEnvironment (FLINK-23020), as happens once a second Python thread uses py4j."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from job.planning import _binding, planned
from tests.support.waiting import wait_until


def test_a_query_plans_on_another_java_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyflink.java_gateway import get_gateway
    from pyflink.table import EnvironmentSettings, TableEnvironment

    monkeypatch.setenv("FLINK_LOG_DIR", str(tmp_path / "logs"))
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE src (id BIGINT, x DOUBLE) "
        "WITH ('connector' = 'datagen', 'number-of-rows' = '20')"
    )
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE snk (id BIGINT, y DOUBLE) WITH ('connector' = 'blackhole')"
    )
    table = t_env.sql_query("SELECT id, x + 1 AS y FROM src WHERE x > 0")
    local, _ = _binding(t_env)
    assert local.get() is not None, "bound on the Java thread that made the environment"

    # Another Python thread blocks inside a py4j call on the Java thread this one used, so this
    # thread's next calls go to a new Java thread: the planner's provider is not bound there.
    jvm = get_gateway().jvm
    gate = jvm.java.util.concurrent.Semaphore(0)
    holder = threading.Thread(target=gate.acquire, name="holds-a-py4j-thread")
    holder.start()
    try:
        wait_until(gate.hasQueuedThreads, what="the other thread blocked in Java")
        assert local.get() is None, "this call runs on another Java thread"
        planned(t_env, lambda: table.execute_insert("snk")).wait()
    finally:
        gate.release()
        holder.join(30)
    assert not holder.is_alive()
