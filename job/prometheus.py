"""Flink's Prometheus reporter for the job, and the alert rules for the model metrics.

PyFlink ships the reporter as `pyflink/plugins/metrics-prometheus`. A cluster started from
`pyflink/bin` loads it from there; a local mini-cluster (PyFlink's gateway JVM) only sees its own
class path, which PyFlink's launcher extends with `$HADOOP_CLASSPATH`, so the jar is added there
before the gateway starts. Then `metrics.reporter.prom.*` turns the reporter on: every model
metric (`model.version_number`, `model.reload_failures`, `model.predictions`, ...) is served at
`http://HOST:PORT/metrics` as `flink_taskmanager_job_task_operator_model_<name>`.

`ALERTS` (alerts.yml next to this module) are the alert rules on those metrics, checked by
`promtool` in the tests; docs/job.md explains each.
"""

from __future__ import annotations

import os
from pathlib import Path

ALERTS = Path(__file__).resolve().with_name("alerts.yml")
METRIC_PREFIX = "flink_taskmanager_job_task_operator_model_"
REPORTER = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def reporter_jar() -> Path:
    """The Prometheus reporter jar PyFlink ships."""
    import pyflink

    plugin = Path(pyflink.__file__).resolve().parent / "plugins" / "metrics-prometheus"
    jars = sorted(plugin.glob("flink-metrics-prometheus-*.jar"))
    if not jars:
        raise FileNotFoundError(f"no Prometheus reporter jar in {plugin} (PyFlink installed?)")
    return jars[0]


def reporter_configuration(port: str) -> dict[str, str]:
    """Flink settings that serve the metrics on `port` (a port, or a range like 9250-9260: one
    port per TaskManager process)."""
    return {
        "metrics.reporter.prom.factory.class": REPORTER,
        "metrics.reporter.prom.port": port,
    }


def add_reporter_to_local_classpath() -> None:
    """Puts the reporter jar on the class path of the local gateway JVM (call before it starts;
    a cluster started from pyflink/bin loads it as a plugin instead)."""
    jar = str(reporter_jar())
    current = os.environ.get("HADOOP_CLASSPATH", "")
    if jar not in current.split(os.pathsep):
        os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(p for p in (current, jar) if p)
