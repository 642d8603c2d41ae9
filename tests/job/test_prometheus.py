"""Prometheus: the alert rules pass `promtool`, fire when they should, and a real Prometheus server
(Debian's) scrapes the model metrics of a running job through Flink's reporter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from job.metrics import free_port
from job.prometheus import ALERTS, METRIC_PREFIX
from reloader.sources import open_source
from tests.support import processes
from tests.support.stores import Versions, publish
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} missing: .ci/run installs Debian's prometheus package")
        pytest.skip(f"{name} not installed (apt-get install prometheus)")
    return path


def test_alert_rules_are_valid() -> None:
    done = subprocess.run(
        [_tool("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 rules found" in done.stdout


UNIT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: '{p}reload_failures{{job_id="j", job_name="wine", subtask_index="0"}}'
        values: '0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: '{p}version_number{{job_id="j", subtask_index="0"}}'
        values: '3x30'
      - series: '{p}version_number{{job_id="j", subtask_index="1"}}'
        values: '3x5 4x25'
      - series: '{p}rebuilds{{job_id="j", job_name="wine", subtask_index="1"}}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 2m
        alertname: ModelReloadFailing
        exp_alerts: []
      - eval_time: 5m
        alertname: ModelReloadFailing
        exp_alerts:
          - exp_labels: {{severity: warning, job_id: j, job_name: wine, subtask_index: "0"}}
            exp_annotations:
              summary: "Model reloads failing in job wine"
              description: "{reload_description}"
      - eval_time: 14m
        alertname: ModelVersionsDiverge
        exp_alerts: []
      - eval_time: 16m
        alertname: ModelVersionsDiverge
        exp_alerts:
          - exp_labels: {{severity: warning, job_id: j}}
            exp_annotations:
              summary: "Subtasks of job j serve different model versions"
              description: "The rollout has not completed on every subtask for 10 minutes."
      - eval_time: 20m
        alertname: ModelRuntimeRebuilt
        exp_alerts: []
"""


def test_alert_rules_fire_when_they_should(tmp_path: Path) -> None:
    tests = tmp_path / "alerts_test.yml"
    reload_description = (
        "1 reload failures in 10 minutes (subtask 0). The previous version keeps serving; run "
        "`python -m reloader check` on the store to see why the new one is refused."
    )
    tests.write_text(
        UNIT_TESTS.format(
            rules=json.dumps(str(ALERTS)), p=METRIC_PREFIX, reload_description=reload_description
        )
    )
    done = subprocess.run(
        [_tool("promtool"), "test", "rules", str(tests)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


class _Prometheus:
    def __init__(self, tmp: Path, target: int) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{json.dumps(str(ALERTS))}]\n"
            "scrape_configs:\n"
            "  - job_name: flink\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
        )
        self.proc = processes.start_group(
            [
                _tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            log=tmp / "prometheus.log",
        )

    def query(self, expr: str) -> dict[str, float]:
        """Instant query: the value per subtask_index label."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.load(r)
        except OSError:
            return {}
        return {
            str(s["metric"].get("subtask_index")): float(s["value"][1])
            for s in body["data"]["result"]
        }

    def stop(self) -> None:
        processes.stop_group(self.proc, timeout=20)


@pytest.fixture
def job_with_reporter(tmp_path: Path, versions: Versions) -> Iterator[tuple[int, Path]]:
    store = tmp_path / "store"
    with open_source(str(store)) as source:
        publish(source, versions.make("1", "v1"))
    port = free_port()
    with processes.process_group(
        [
            sys.executable,
            "-m",
            "job",
            "--model",
            str(store),
            "--records",
            "60000",
            "--rate",
            "500",
            "--poll-interval",
            "0.5",
            "--sink",
            f"dir:{tmp_path / 'out'}",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--prometheus-port",
            str(port),
        ],
        log=tmp_path / "job.log",
        stop_timeout=20,
        cwd=ROOT,
        env={**os.environ, "FLINK_LOG_DIR": str(tmp_path / "flink-logs")},
    ):
        yield port, store


@pytest.mark.slow
def test_prometheus_scrapes_the_model_metrics(
    job_with_reporter: tuple[int, Path], tmp_path: Path, versions: Versions
) -> None:
    port, store = job_with_reporter
    prometheus = _Prometheus(tmp_path, port)
    try:
        version = METRIC_PREFIX + "version_number"
        wait_until(
            lambda: (
                prometheus.query(version).get("0") == 1.0
                and prometheus.query(f"{METRIC_PREFIX}predictions").get("0", 0) > 0
            ),  # records/s
            timeout=120,
            what="Prometheus scraping version 1 and its predictions from the job",
        )
        with open_source(str(store)) as source:
            publish(source, versions.make("2", "v2"))
        wait_until(
            lambda: (
                prometheus.query(version).get("0") == 2.0
                and prometheus.query(f"{METRIC_PREFIX}reloads").get("0", 0) >= 1
            ),
            timeout=120,
            what="Prometheus seeing the job adopt version 2",
        )
        assert prometheus.query(f"{METRIC_PREFIX}reload_failures") == {"0": 0.0}
    finally:
        prometheus.stop()
