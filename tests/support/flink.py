"""Flink in tests and benchmarks: its REST API and ports, the job in a mini-cluster, a standalone
cluster.

- REST and ports: `free_port`, `rest_get`, `model_metrics` (a running job's model metrics per
  subtask) and `local_rest` (the settings that give a mini-cluster a REST API on a free port).
- The real job in a PyFlink mini-cluster in this process: `running_job` starts it (sink
  included) and yields a `RunningJob`; `read_outputs` reads what its `dir:` sink committed and
  `check_predictions` checks each record against its version's reference outputs.
- `StandaloneFlink`: a real standalone cluster (JobManager + TaskManager processes) from the
  `pyflink` package's `bin/start-cluster.sh`, isolated in a temp dir. Its own conf dir (free
  ports, loopback only, 2 slots, this venv's Python), log and pid dirs under the temp dir; `env`
  reaches the TaskManager and so its Python workers (they inherit the environment
  `start-cluster.sh` runs in). Ready when the REST API shows the TaskManager's slots. `stop()`
  runs `stop-cluster.sh`, then kills whatever the pid files still name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

# The job's REST harness, re-exported: tests import their harness from one place.
from job.metrics import free_port as free_port
from job.metrics import local_rest as local_rest
from job.metrics import model_metrics as model_metrics
from job.metrics import rest_get as rest_get
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from job.pipeline import JobOptions

REPO = Path(__file__).resolve().parents[2]


# -- REST API and ports ------------------------------------------------------------------------


# -- the job in a mini-cluster ------------------------------------------------------------------


@dataclass
class RunningJob:
    result: Any
    rest: str
    job_id: str

    def metric(self, name: str) -> dict[str, float]:
        """The model metric `name` per subtask (empty until reported)."""
        try:
            return model_metrics(self.rest, self.job_id, name)
        except OSError:
            return {}

    def wait_metric(self, name: str, predicate: Any, what: str, timeout: float = 60.0) -> None:
        def ok() -> bool:
            values = self.metric(name)
            return bool(values) and predicate(list(values.values()))

        wait_until(ok, timeout=timeout, what=what)


@contextmanager
def running_job(opts: JobOptions, tmp: Path, predictor: Any = None) -> Iterator[RunningJob]:
    """Starts the job (sink included) in a local mini-cluster; cancels it if the test fails."""
    from job.pipeline import build, environments, sink

    os.environ.setdefault("FLINK_LOG_DIR", str(tmp / "flink-logs"))
    rest, rest_conf = local_rest()
    opts = replace(opts, extra_config={**rest_conf, **opts.extra_config})
    env, t_env = environments(opts)
    result = sink(opts, t_env, build(opts, env, t_env, predictor=predictor))
    job = RunningJob(result, rest, str(result.get_job_client().get_job_id()))
    try:
        yield job
    except BaseException:
        with suppress(Exception):
            result.get_job_client().cancel().result()
        raise


def read_outputs(out_dir: Path) -> dict[int, list[dict[str, Any]]]:
    """Committed part files of a dir: sink, by writing subtask, each in the order written."""
    by_subtask: dict[int, list[dict[str, Any]]] = {}
    files = [p for p in out_dir.rglob("part-*") if not p.name.startswith(".")]

    def order(p: Path) -> tuple[int, int]:
        parts = p.name.split("-")
        return int(parts[-2]), int(parts[-1].split(".")[0])  # (subtask, part counter)

    for path in sorted(files, key=order):
        subtask, _ = order(path)
        lines = path.read_text().splitlines()
        by_subtask.setdefault(subtask, []).extend(json.loads(line) for line in lines if line)
    return by_subtask


def check_predictions(records: list[dict[str, Any]], base_of: dict[str, str], wine: Any) -> None:
    """Every record names a known version and carries exactly that version's reference output."""
    refs = {base: np.asarray(wine.reference(base)["outputs"]) for base in set(base_of.values())}
    for rec in records:
        assert "error" not in rec, rec
        base = base_of[rec["model_version"]]
        expected = refs[base][rec["id"] % len(refs[base])]
        got = list(rec["probabilities"].values())
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=str(rec))


# -- a standalone cluster -----------------------------------------------------------------------


def pyflink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


class StandaloneFlink:
    def __init__(self, root: Path, *, slots: int = 2, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.slots = slots
        self.home = pyflink_home()
        self.conf_dir = root / "conf"
        self.log_dir = root / "log"
        self.pid_dir = root / "pid"
        self.rest_port = free_port()
        self.rest = f"http://127.0.0.1:{self.rest_port}"
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.env.update(
            FLINK_CONF_DIR=str(self.conf_dir),
            FLINK_LOG_DIR=str(self.log_dir),
            FLINK_PID_DIR=str(self.pid_dir),
            PYTHONPATH=os.pathsep.join([str(REPO), self.env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
        )
        self.started = False

    def _write_conf(self) -> None:
        shutil.copytree(self.home / "conf", self.conf_dir, dirs_exist_ok=True)
        java_opts = ""
        for line in (self.home / "conf" / "config.yaml").read_text().splitlines():
            if line.strip().startswith("all: --add-exports"):
                java_opts = line.split("all:", 1)[1].strip()
        settings = {
            "env.java.opts.all": java_opts,
            "env.pid.dir": str(self.pid_dir),
            "env.log.dir": str(self.log_dir),
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": free_port(),
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.memory.process.size": "1024m",
            "taskmanager.host": "127.0.0.1",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.rpc.port": free_port(),
            "taskmanager.data.port": free_port(),
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.memory.process.size": "1728m",
            "blob.server.port": free_port(),
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest_port,
            "parallelism.default": 1,
            "metrics.fetcher.update-interval": "100 ms",
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
        }
        lines = [f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in settings.items()]
        # Flink's YAML parser takes flat dotted keys; quote strings (the JVM options contain ':').
        lines = [re.sub(r"^(\S+): '(.*)'$", r'\1: "\2"', line) for line in lines]
        (self.conf_dir / "config.yaml").write_text("\n".join(lines) + "\n")
        (self.conf_dir / "masters").write_text(f"127.0.0.1:{self.rest_port}\n")
        (self.conf_dir / "workers").write_text("localhost\n")

    def start(self, timeout: float = 120.0) -> None:
        for d in (self.log_dir, self.pid_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        self.started = True
        subprocess.run(
            [str(self.home / "bin" / "start-cluster.sh")],
            env=self.env,
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )

        def ready() -> bool:
            try:
                overview = rest_get(self.rest, "/overview", timeout=2)
            except OSError:
                return False
            return bool(overview["taskmanagers"] == 1 and overview["slots-total"] == self.slots)

        try:
            wait_until(ready, timeout=timeout, what="the standalone cluster's TaskManager slots")
        except BaseException:
            print(self.log_tail(), file=sys.stderr)
            raise

    def flink(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.home / "bin" / "flink"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            cwd=self.root,
        )

    def submit_python(self, script: Path, args: list[str]) -> str:
        """`flink run -d --python script args`; returns the job id."""
        proc = self.flink(
            "run", "-d", "-m", f"127.0.0.1:{self.rest_port}", "--python", str(script), *args
        )
        found = re.search(r"JobID ([0-9a-f]{32})", proc.stdout + proc.stderr)
        if proc.returncode != 0 or not found:
            raise RuntimeError(
                f"flink run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                f"{proc.stderr[-3000:]}\n{self.log_tail()}"
            )
        return found.group(1)

    def job_state(self, job_id: str) -> str:
        return str(rest_get(self.rest, f"/jobs/{job_id}")["state"])

    def cancel(self, job_id: str) -> None:
        self.flink("cancel", "-m", f"127.0.0.1:{self.rest_port}", job_id, timeout=60)

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.log_dir.glob("*.log")) + sorted(self.log_dir.glob("*.out")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def _pids(self) -> list[int]:
        pids = []
        for f in self.pid_dir.glob("*.pid"):
            pids += [int(x) for x in f.read_text().split() if x.isdigit()]
        return pids

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        pids = self._pids()
        subprocess.run(
            [str(self.home / "bin" / "stop-cluster.sh")],
            env=self.env,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
        procs = []
        for pid in pids:
            try:
                p = psutil.Process(pid)
                procs += [p, *p.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(procs, timeout=30)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(alive, timeout=10)

    def __enter__(self) -> StandaloneFlink:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
