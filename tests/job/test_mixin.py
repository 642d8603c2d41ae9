"""ReloaderMixin inside a real PyFlink mini-cluster (process mode), and the metrics it reports."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reloader.sources import open_source
from tests.support.stores import Versions, publish, reference_of
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def flink_env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    os.environ.setdefault("FLINK_LOG_DIR", str(tmp_path_factory.mktemp("flink-logs")))
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    conf = Configuration()
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("python.fn-execution.bundle.time", "10")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    return env


def test_process_function_predicts_with_the_store_model(
    flink_env: Any, tmp_path: Path, versions: Versions, wine: Any
) -> None:
    from pyflink.common import Types

    from job.functions import PredictRecord

    store = tmp_path / "store"
    with open_source(str(store)) as source:
        v2 = versions.make("v2", "v2")
        publish(source, v2)
    records = [json.dumps({"id": int(i), **r}) for i, r in zip(wine.ids, wine.records, strict=True)]
    stream = flink_env.from_collection(records, type_info=Types.STRING())
    # The URL comes from a job parameter, overriding the constructor's.
    flink_env.get_config().set_global_job_parameters({"model.url": str(store)})
    out = stream.process(
        PredictRecord(url="/nonexistent", cache_dir=str(tmp_path / "cache")),
        output_type=Types.STRING(),
    )
    results = [json.loads(r) for r in out.execute_and_collect()]
    assert sorted(r["id"] for r in results) == sorted(int(i) for i in wine.ids)
    assert {(r["model_version"], r["model_sha256"]) for r in results} == {
        ("v2", v2.manifest.sha256)
    }
    by_id = {r["id"]: r for r in results}
    reference = reference_of(wine, "v2")
    got = np.array([list(by_id[int(i)]["probabilities"].values()) for i in wine.ids])
    np.testing.assert_allclose(got, reference, atol=1e-5)


class _Recorder:
    """A metric group that records what a function registers and sets (no Flink needed)."""

    def __init__(self) -> None:
        self.counters: dict[str, Any] = {}
        self.gauges: list[str] = []

    def add_group(self, name: str) -> _Recorder:
        return self

    def counter(self, name: str) -> Any:
        class Counter:
            count = 0

            def inc(self, n: int = 1) -> None:
                self.count += n

        self.counters[name] = Counter()
        return self.counters[name]

    def gauge(self, name: str, obj: Any) -> None:
        self.gauges.append(name)

    def meter(self, name: str, time_span_in_seconds: int = 60) -> Any:
        return type("Meter", (), {"mark_event": lambda self, n=1: None})()

    def distribution(self, name: str) -> Any:
        return type("Distribution", (), {"update": lambda self, v: None})()


def test_metrics_are_pushed_from_the_processing_thread_never_python_gauges(
    tmp_path: Path, versions: Versions
) -> None:
    """Thread mode reads a Python gauge from Flink's metrics thread with the task thread's
    interpreter state, which crashed the JVM: the mixin registers none and sets counters to the
    current values instead, a new version with the batch it first predicts."""
    from job.mixin import ReloaderMixin, metric_values

    store = tmp_path / "store"
    source = open_source(str(store))
    publish(source, versions.make("7", "v2"))
    group = _Recorder()
    ctx = type("Ctx", (), {"get_metrics_group": lambda self: group})()
    mixin = ReloaderMixin(url=str(store), cache_dir=str(tmp_path / "cache"), poll_interval=0.05)
    mixin.open_model(ctx)
    try:
        assert group.gauges == []

        def reported() -> dict[str, int]:
            return {name: c.count for name, c in group.counters.items()}

        assert set(reported().values()) == {0}  # set from the first batch on, see the mixin
        mixin.run_model(lambda rt: rt.meta)
        assert reported()["version_number"] == 7
        v8 = versions.make("8", "v1")
        publish(source, v8)
        wait_until(lambda: mixin.model.info.pending_version == "8", what="v8 built")
        out = mixin.run_model(lambda rt: rt.meta)
        assert out.version == "8"
        values = reported()  # at once, not after the 100 ms refresh
        assert values["version_number"] == 8
        assert values["version_sha256_prefix"] == int(v8.manifest.sha256[:12], 16)
        assert values == metric_values(mixin.model.info)
    finally:
        mixin.close_model()
        source.close()


def test_metric_values_fit_a_java_long() -> None:
    from dataclasses import replace

    from job.mixin import metric_values
    from reloader.values import ModelInfo

    base = ModelInfo(
        url="", model="m", version="12", sha256="ab" * 32, loaded_at=1.5, last_check=None,
        last_error=None, last_error_at=None, checks=3, unchanged=0, reloads=1, rebuilds=0,
        failures=2, not_ready=0, last_build_seconds=0.25, last_swap_stall_seconds=4e-6,
        max_swap_stall_seconds=None, pending_version=None, quarantined={}, watching=False,
    )  # fmt: skip
    values = metric_values(base)
    assert values["version_number"] == 12 and values["reload_failures"] == 2
    assert values["last_swap_stall_us"] == 4 and values["last_build_ms"] == 250
    for label in ("v12", "", "9" * 40, "١٢"):  # not a number, huge, Arabic-Indic digits
        assert metric_values(replace(base, version=label))["version_number"] == -1
    assert all(-(1 << 63) <= v < 1 << 63 for v in values.values())


def test_job_parameters_convert_by_the_declared_field_type() -> None:
    """`model.poll-interval=0.5` on settings built with `poll_interval=1` (an int) is 0.5, not
    `int("0.5")` failing in open()."""
    from job.mixin import ModelSettings

    params = {
        "model.poll-interval": "0.5",
        "model.max-bundle-bytes": "1024",
        "model.cache-dir": "/tmp/c",
        "model.call-timeout": "2",
    }
    got = ModelSettings(poll_interval=1, call_timeout=5).with_parameters(params.get)
    assert got.poll_interval == 0.5 and type(got.poll_interval) is float
    assert got.max_bundle_bytes == 1024 and got.cache_dir == "/tmp/c"
    assert got.call_timeout == 2.0 and type(got.call_timeout) is float
    with pytest.raises(ValueError, match=r"model\.heap-limit-mb.*'lots'.*int"):
        ModelSettings().with_parameters({"model.heap-limit-mb": "lots"}.get)


def test_parameter_conversion_handles_optional_and_bool_types() -> None:
    from job.mixin import parameter_value

    assert parameter_value("0.5", float | None) == 0.5
    assert parameter_value("3", int | None) == 3
    assert parameter_value("x", str | None) == "x"
    assert parameter_value("true", bool) is True and parameter_value("0", bool) is False
    assert parameter_value("No", bool | None) is False
    with pytest.raises(ValueError, match="true or false"):
        parameter_value("maybe", bool)
