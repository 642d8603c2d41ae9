"""Flink in tests and benchmarks: its REST API and ports, the job in a mini-cluster, a standalone
cluster.

- REST and ports: `free_port`, `rest_get`, `model_metrics` (a running job's model metrics per
  subtask) and `local_rest` (the settings that give a mini-cluster a REST API on a free port).
- The real job in a PyFlink mini-cluster in this process: `running_job` starts it (sink
  included) and yields a `RunningJob`; a `Feeder` streams WINE records into its input directory;
  `read_outputs` reads what its `dir:` (or `json:`) sink committed, `ids_out` counts the ids
  there, and `check_predictions` checks each record against its version's reference outputs.
- `StandaloneFlink`: a real standalone cluster (JobManager + TaskManager processes) from the
  `pyflink` package's `bin/start-cluster.sh`, isolated in a temp dir. Its own conf dir (free
  ports, loopback only, 2 slots, this venv's Python), log and pid dirs under the temp dir; `env`
  reaches the TaskManager and so its Python workers (they inherit the environment
  `start-cluster.sh` runs in). Ready when the REST API shows the TaskManager's slots. `stop()`
  runs `stop-cluster.sh`, then kills whatever the pid files still name. Keyword options make it
  a user's cluster (no checkout on its path, another Python, more settings or TaskManagers);
  `submit` and `stop_with_savepoint` run `flink run` and `flink stop`, `taskmanager_processes`
  are its TaskManager JVMs.
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
import sysconfig
import threading
from collections.abc import Callable, Iterator
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

    def state(self) -> str:
        """The job's state as the REST API shows it (RUNNING, RESTARTING, ...)."""
        return str(rest_get(self.rest, f"/jobs/{self.job_id}")["state"])

    def restarts(self) -> int:
        """How often Flink has restarted the job (after a task failure)."""
        got = rest_get(self.rest, f"/jobs/{self.job_id}/metrics?get=numRestarts")
        return int(float(got[0]["value"])) if got else 0

    def wait_metric(self, name: str, predicate: Any, what: str, timeout: float = 60.0) -> None:
        def ok() -> bool:
            values = self.metric(name)
            return bool(values) and predicate(list(values.values()))

        wait_until(ok, timeout=timeout, what=what)


@contextmanager
def running_job(
    opts: JobOptions,
    tmp: Path,
    predictor: Any = None,
    *,
    table: Callable[[Any, Any], Any] | None = None,
) -> Iterator[RunningJob]:
    """Starts the job (sink included) in a local mini-cluster; cancels it if the test fails.

    `table(env, t_env)`, when given, makes the table that goes into the sink instead of the
    job's own graph (`job.pipeline.build`): a Table API job of the test's own.
    """
    from job.pipeline import build, environments, sink

    os.environ.setdefault("FLINK_LOG_DIR", str(tmp / "flink-logs"))
    # Loopback workers copy the JVM's environment into this process's; a JVM started with this
    # variable set would turn every later job here into process mode (tests/job's modules, such
    # as `poison`, do not import there). This harness runs its jobs in loopback mode.
    os.environ.pop("_python_worker_execution_mode", None)
    rest, rest_conf = local_rest()
    opts = replace(opts, extra_config={**rest_conf, **opts.extra_config})
    env, t_env = environments(opts)
    graph = table(env, t_env) if table else build(opts, env, t_env, predictor=predictor)
    result = sink(opts, t_env, graph)
    job = RunningJob(result, rest, str(result.get_job_client().get_job_id()))
    try:
        yield job
    except BaseException:
        with suppress(Exception):
            result.get_job_client().cancel().result()
        raise


class Feeder(threading.Thread):
    """Writes WINE records as JSON-lines files into a job's input directory, `chunk` records
    every `period` seconds, so batches (and with them the metrics) keep flowing through whatever
    the test does meanwhile. Ids count up from 0; `record(i)` makes record `i` (override it to
    feed others)."""

    def __init__(self, in_dir: Path, wine: Any, *, chunk: int = 40, period: float = 0.1) -> None:
        super().__init__(name="feeder", daemon=True)
        self.in_dir = in_dir
        self.wine = wine
        self.chunk = chunk
        self.period = period
        self.next_id = 0
        self.stopped = threading.Event()
        self.paused = threading.Event()  # set: no chunks until cleared
        self.files = 0

    def record(self, i: int) -> dict[str, Any]:
        return {"id": i, **self.wine.records[i % len(self.wine.records)]}

    def write_chunk(self) -> None:
        ids = range(self.next_id, self.next_id + self.chunk)
        lines = [json.dumps(self.record(i)) for i in ids]
        self.next_id += self.chunk
        tmp = self.in_dir / f".part-{self.files:05d}.jsonl"  # hidden: not read until renamed
        tmp.write_text("\n".join(lines) + "\n")
        tmp.rename(self.in_dir / f"part-{self.files:05d}.jsonl")
        self.files += 1

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            if not self.paused.is_set():
                self.write_chunk()


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


def ids_out(out_dir: Path, below: int) -> int:
    """Distinct ids (< `below`) in the committed output of a dir: (or json:) sink."""
    if not out_dir.exists():
        return 0
    return len(
        {r["id"] for recs in read_outputs(out_dir).values() for r in recs if r["id"] < below}
    )


def check_predictions(records: list[dict[str, Any]], base_of: dict[str, str], wine: Any) -> None:
    """Every record names a known version and carries exactly that version's reference output.

    Records are JSON lines of the job or rows of a typed sink (whose `error` is null)."""
    refs = {base: np.asarray(wine.reference(base)["outputs"]) for base in set(base_of.values())}
    for rec in records:
        assert rec.get("error") is None, rec
        base = base_of[rec["model_version"]]
        expected = refs[base][rec["id"] % len(refs[base])]
        # By label: a typed sink's MAP keeps no order; the WINE labels (class_0, ...) sort in
        # the model's order.
        got = [rec["probabilities"][label] for label in sorted(rec["probabilities"])]
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=str(rec))


# -- a standalone cluster -----------------------------------------------------------------------


def pyflink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


class StandaloneFlink:
    """A standalone cluster in `root`. The keyword options make it a user's cluster rather than
    this checkout's: `repo_on_path=False` gives its processes no `PYTHONPATH`, no `VIRTUAL_ENV`
    and no venv `bin/` on `PATH`; `python_executable` is the Python its configuration names for
    workers and clients (default: this venv's); `config` adds or overrides settings of its
    `config.yaml`; `taskmanagers` > 1 starts more TaskManager processes (their RPC and data ports
    are then picked by each process: 0 on 127.0.0.1)."""

    def __init__(
        self,
        root: Path,
        *,
        slots: int = 2,
        env: dict[str, str] | None = None,
        repo_on_path: bool = True,
        python_executable: str | None = None,
        config: dict[str, str | int] | None = None,
        taskmanagers: int = 1,
    ) -> None:
        self.root = root
        self.slots = slots
        self.taskmanagers = taskmanagers
        self.python_executable = python_executable or sys.executable
        self.config = dict(config or {})
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
        )
        if repo_on_path:
            self.env["PYTHONPATH"] = os.pathsep.join(
                [str(REPO), self.env.get("PYTHONPATH", "")]
            ).rstrip(os.pathsep)
        else:
            for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
                self.env.pop(name, None)
            venv_bin = str(Path(sys.prefix) / "bin")
            path = self.env.get("PATH", "").split(os.pathsep)
            self.env["PATH"] = os.pathsep.join(p for p in path if p and p != venv_bin)
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
            # One TaskManager: ports chosen here. More: each process picks its own (0).
            "taskmanager.rpc.port": free_port() if self.taskmanagers == 1 else 0,
            "taskmanager.data.port": free_port() if self.taskmanagers == 1 else 0,
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.memory.process.size": "1728m",
            "blob.server.port": free_port(),
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest_port,
            "parallelism.default": 1,
            "metrics.fetcher.update-interval": "100 ms",
            "python.executable": self.python_executable,
            "python.client.executable": self.python_executable,
        }
        if self.python_executable == sys.executable:
            # This venv's packages, named: thread mode embeds the base interpreter, which does
            # not read the venv's pyvenv.cfg, so `python.executable` alone does not bring them.
            site = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
            settings["python.pythonpath"] = os.pathsep.join(sorted(site))
        settings.update(self.config)
        lines = [f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in settings.items()]
        # Flink's YAML parser takes flat dotted keys; quote strings (the JVM options contain ':').
        lines = [re.sub(r"^(\S+): '(.*)'$", r'\1: "\2"', line) for line in lines]
        (self.conf_dir / "config.yaml").write_text("\n".join(lines) + "\n")
        (self.conf_dir / "masters").write_text(f"127.0.0.1:{self.rest_port}\n")
        (self.conf_dir / "workers").write_text("localhost\n" * self.taskmanagers)

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
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Waits until the REST API shows every TaskManager and its slots (after `start`, or
        after the cluster was restarted by its scripts)."""

        def ready() -> bool:
            try:
                overview = rest_get(self.rest, "/overview", timeout=2)
            except OSError:
                return False
            tms, slots = self.taskmanagers, self.taskmanagers * self.slots
            return bool(overview["taskmanagers"] == tms and overview["slots-total"] == slots)

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
        return self.submit("--python", str(script), *args)

    def submit(self, *args: str) -> str:
        """`flink run -d -m <this cluster> args` (Flink's options, then the job's); returns the
        job id."""
        return self._run_cli("run", r"JobID ([0-9a-f]{32})", "-d", *args)

    def stop_with_savepoint(self, job_id: str, directory: Path) -> str:
        """`flink stop --savepointPath directory job_id`: the job ends after a savepoint; returns
        the savepoint's path (what `flink run -s` takes)."""
        return self._run_cli(
            "stop", r"Savepoint completed\. Path: (\S+)", "--savepointPath", str(directory), job_id
        )

    def _run_cli(self, action: str, answer: str, *args: str) -> str:
        """`flink <action> -m <this cluster> args`; the first group of `answer` in its output."""
        proc = self.flink(action, "-m", f"127.0.0.1:{self.rest_port}", *args)
        found = re.search(answer, proc.stdout + proc.stderr)
        if proc.returncode != 0 or not found:
            raise RuntimeError(
                f"flink {action} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
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

    def processes(self) -> list[psutil.Process]:
        """The cluster's JVMs that are running (JobManager and TaskManagers)."""
        return [psutil.Process(pid) for pid in self._pids() if psutil.pid_exists(pid)]

    def taskmanager_processes(self) -> list[psutil.Process]:
        """The TaskManager JVMs that are running (from their pid file)."""
        return [
            psutil.Process(pid) for pid in self._pids("*taskexecutor*") if psutil.pid_exists(pid)
        ]

    def _pids(self, pattern: str = "*.pid") -> list[int]:
        pids = []
        for f in self.pid_dir.glob(pattern):
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
