"""The job deployed as a user deploys it (docs/deploy.md): packed by `python -m job pack`,
shipped with `flink run -pyfs`, on a standalone cluster whose processes have no PYTHONPATH and
whose Python (`-pyexec`) is a bare venv with nothing installed, the model on S3 (SeaweedFS),
checkpoints in a shared directory, an exponential-delay restart strategy.

The cluster commands of docs/deploy.md (the blocks it marks as run here) are run as written, with
the variables the page names (`FLINK_HOME`, `CLUSTER_PYTHON`, `SHARED`, `JOB_ID`, `SAVEPOINT`)
pointing at this test's cluster. The job then loses a TaskManager (SIGKILL) and restarts from its
checkpoint, is stopped with a savepoint, a new model version is published while it is down, the
cluster restarts (new TaskManagers, as the page says why) and the job is resumed from the
savepoint with other options: the resumed job serves the new version from its first record, and
every input id comes out exactly once across the failure and the upgrade, each predicted as its
version's reference says.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil
import pytest

from reloader.sources import open_source
from tests.support.flink import (
    REPO,
    StandaloneFlink,
    check_predictions,
    model_metrics,
    pyflink_home,
    read_outputs,
    rest_get,
)
from tests.support.stores import Versions, publish
from tests.support.waiting import wait_until
from tests.test_docs import Block, parse_page

pytestmark = pytest.mark.slow

DEPLOY = REPO / "docs" / "deploy.md"
RUN_HERE = "tests/job/test_deploy.py runs it"  # in a block's `not run` reason
ARCHIVE = "build/tf-on-flink.zip"  # where the page packs to, relative to its working directory
URL = "s3://models/wine"  # the page's store
RECORDS = 20_000  # the page's --records


class DeployBlocks:
    """The blocks of docs/deploy.md that this module runs (their `not run` reason names it),
    each run as written by `bash -euo pipefail`; `ran` records which."""

    def __init__(self) -> None:
        self.blocks = [b for b in parse_page(DEPLOY) if RUN_HERE in b.markers.get("not run", "")]
        self.ran: set[int] = set()

    def find(self, containing: str) -> Block:
        found = [b for b in self.blocks if containing in b.script]
        assert len(found) == 1, f"{len(found)} blocks of {DEPLOY.name} contain {containing!r}"
        return found[0]

    def run(self, containing: str, *, cwd: Path, env: dict[str, str]) -> str:
        """Runs the one block containing `containing`; returns what it printed (both streams)."""
        block = self.find(containing)
        t0 = time.monotonic()
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.script],
            cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
            timeout=600,
        )  # fmt: skip
        self.ran.add(block.line)
        out = proc.stdout + proc.stderr
        print(f"{time.monotonic() - t0:6.1f} s  {block.where}: {block.script.splitlines()[0]}")
        if proc.returncode != 0:
            pytest.fail(f"{block.where} exited {proc.returncode}:\n{block.script}\n{out[-4000:]}")
        return out


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's working directory, with the archive `python -m job pack` wrote into it (the
    page's command, run by test_docs too)."""
    work = tmp_path_factory.mktemp("deploy-work")
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "job", "pack", ARCHIVE],
        cwd=work, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    print(f"pack: {time.monotonic() - t0:.1f} s: {proc.stdout.strip()}")
    return work


@pytest.fixture(scope="module")
def cluster_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CPython 3.11 with nothing installed: a venv without pip, made from the interpreter
    this venv was made from (what a TaskManager image has: a plain Python)."""
    venv = tmp_path_factory.mktemp("cluster-python") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    probe = subprocess.run(
        [str(python), "-c", "import numpy"], capture_output=True, cwd=venv, timeout=60
    )
    assert probe.returncode != 0, "the cluster's Python must not have the job's packages"
    return python


def test_the_archive_holds_what_the_workers_load_and_no_jars(packed: Path) -> None:
    archive = packed / ARCHIVE
    with zipfile.ZipFile(archive) as z:
        infos = {i.filename: i for i in z.infolist()}
    names = set(infos)
    for needed in (
        "job/functions.py",
        "reloader/runtime.py",
        "model/data/wine.csv",  # the wine source's rows
        "py_mini_racer/libmini_racer.so",
        "pyflink/fn_execution/beam/beam_boot.py",
        "pemja/__init__.py",  # thread mode
        "apache_beam/__init__.py",  # process mode
        "pyarrow/__init__.py",
        "minio/__init__.py",
    ):
        assert needed in names, needed
    runner = infos["pyflink/bin/pyflink-udf-runner.sh"]
    assert (runner.external_attr >> 16) & 0o111, "the worker's start script must stay executable"
    assert not [n for n in names if n.endswith(".jar")], "PyFlink's jars are the cluster's"
    assert not [n for n in names if n.startswith(("fastapi/", "uvicorn/", "server/"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert archive.stat().st_size < 200e6


def test_pack_fails_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "job", "pack", str(blocker / "out.zip")],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot pack") and proc.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("api", "source", "uids"),
    [
        ("process", "wine", {"source-wine", "predict-batched"}),
        ("record", "files:.", {"source-files", "predict-record"}),
    ],
)
def test_the_stateful_operators_keep_their_uids(
    api: str, source: str, uids: set[str], tmp_path: Path
) -> None:
    """A savepoint's state is found by operator uid: the sources and the predict operators
    have fixed ones (the rest of the graph is hashed from its shape)."""
    from job.pipeline import JobOptions, build, environments

    os.environ.setdefault("FLINK_LOG_DIR", str(tmp_path / "flink-logs"))
    opts = JobOptions(model="unused", api=api, source=source)
    env, t_env = environments(opts)
    build(opts, env, t_env)
    graph = env._generate_stream_graph(clear_transformations=True)
    found = {n.getTransformationUID() for n in graph.getStreamNodes().toArray()}
    assert uids <= found, found


def test_the_packed_job_survives_a_lost_taskmanager_and_an_upgrade_from_a_savepoint(
    tmp_path: Path,
    packed: Path,
    cluster_python: Path,
    versions: Versions,
    wine: Any,
    s3_session: Any,
) -> None:
    blocks = DeployBlocks()
    shared = tmp_path / "shared"
    io_tmp = tmp_path / "io"
    io_tmp.mkdir()
    _empty(s3_session, URL)  # test_docs publishes to the page's URL too
    options = {"endpoint": s3_session.endpoint, **_keys(s3_session)}
    with open_source(URL, **options) as store:
        publish(store, versions.make("1", "v1"))
        cluster = StandaloneFlink(
            tmp_path / "flink",
            slots=2,
            taskmanagers=2,
            repo_on_path=False,
            python_executable=str(cluster_python),
            env={**s3_session.env(), "HOME": str(tmp_path / "home")},
            config={
                "io.tmp.dirs": str(io_tmp),  # the extracted archive, the blobs
                # A killed TaskManager is noticed when 2 heartbeats to it fail: 1 s apart.
                "heartbeat.interval": 1000,
            },
        )
        with cluster:
            env = {
                **cluster.env,
                "FLINK_HOME": str(pyflink_home()),
                "CLUSTER_PYTHON": str(cluster_python),
                "SHARED": str(shared),
                "JVM_ARGS": f"-Djava.io.tmpdir={tmp_path / 'client-tmp'}",  # its -pyfs copy
            }
            (tmp_path / "client-tmp").mkdir()
            try:
                _failure_and_upgrade(cluster, blocks, packed, env, store, versions, wine)
            except BaseException:
                print(cluster.log_tail(80))
                raise
    assert blocks.ran == {b.line for b in blocks.blocks if "docker" not in b.script}, (
        "a block of docs/deploy.md marked as run here was not run"
    )


def _failure_and_upgrade(
    cluster: StandaloneFlink,
    blocks: DeployBlocks,
    work: Path,
    env: dict[str, str],
    store: Any,
    versions: Versions,
    wine: Any,
) -> None:
    shared = Path(env["SHARED"])
    out_dir = shared / "predictions"

    # Submitted as the page does; the workers run the archive with the cluster's bare Python.
    job_id = _job_id(blocks.run("flink run -d -pyfs", cwd=work, env=env))
    _wait_serving(cluster, job_id, 1)
    _assert_runs_from_the_archive(cluster, job_id, Path(env["CLUSTER_PYTHON"]))
    assert job_id in blocks.run("flink list", cwd=work, env={**env, "JOB_ID": job_id})
    wait_until(
        lambda: _checkpoints(cluster, job_id)["counts"]["completed"] >= 1,
        timeout=60,
        what="a completed checkpoint",
    )
    assert "chk-" in blocks.run("ls ", cwd=work, env={**env, "JOB_ID": job_id})

    # A TaskManager running a predict subtask dies: the job restarts from its checkpoint on
    # the slots left (the exponential-delay strategy of the page's command).
    victim = next(tm for tm in cluster.taskmanager_processes() if _loaded(tm, "libmini_racer.so"))
    victim.send_signal(signal.SIGKILL)
    wait_until(lambda: _restarted(cluster, job_id), timeout=120, what="a restart")

    def checkpointed_since_restored() -> dict[str, Any] | None:
        latest = _checkpoints(cluster, job_id)["latest"]
        restored, completed = latest["restored"], latest["completed"]
        return restored if restored and completed and completed["id"] > restored["id"] else None

    # A checkpoint after the restore: every task runs again.
    restored = wait_until(checkpointed_since_restored, timeout=120, what="a checkpoint again")
    assert str(shared / "checkpoints") in restored["external_path"], restored

    # The upgrade: stop with a savepoint, a new model version meanwhile, resume from it.
    stopped = blocks.run("flink stop", cwd=work, env={**env, "JOB_ID": job_id})
    found = re.search(r"Savepoint completed\. Path: (\S+)", stopped)
    assert found, stopped
    savepoint = found.group(1)
    assert cluster.job_state(job_id) == "FINISHED"
    before = read_outputs(out_dir)
    assert all(r["model_version"] == "1" for recs in before.values() for r in recs)
    publish(store, versions.make("2", "v2"))
    # New TaskManagers: thread mode keeps one CPython per TaskManager JVM (docs/deploy.md).
    blocks.run("stop-cluster.sh", cwd=work, env=env)
    cluster.wait_ready()
    resumed = _job_id(blocks.run("flink run -d -s", cwd=work, env={**env, "SAVEPOINT": savepoint}))
    _wait_serving(cluster, resumed, 2)
    _assert_runs_from_the_archive(cluster, resumed, Path(env["CLUSTER_PYTHON"]))
    wait_until(
        lambda: cluster.job_state(resumed) == "FINISHED", timeout=180, what="the input's end"
    )

    after = read_outputs(out_dir)
    records = [r for recs in after.values() for r in recs]
    counts = Counter(r["id"] for r in records)
    missing = set(range(RECORDS)) - set(counts)
    duplicated = {i: n for i, n in counts.items() if n > 1}
    assert not missing and not duplicated, (len(missing), sorted(duplicated)[:10])
    check_predictions(records, {"1": "v1", "2": "v2"}, wine)
    for subtask, recs in after.items():
        committed = before.get(subtask, [])
        assert recs[: len(committed)] == committed, "a committed file changed in the upgrade"
        labels = [r["model_version"] for r in recs]
        # Version 1 until the savepoint, version 2 from the resumed job's first record on.
        assert labels == sorted(labels) and labels[-1] == "2", Counter(labels)
    print(f"{len(records)} records: {Counter(r['model_version'] for r in records)}")


def _job_id(output: str) -> str:
    found = re.search(r"JobID ([0-9a-f]{32})", output)
    assert found, output
    return found.group(1)


def _wait_serving(cluster: StandaloneFlink, job_id: str, version: int) -> None:
    def serving() -> bool:
        try:
            values = model_metrics(cluster.rest, job_id, "version_number")
        except OSError:
            return False
        return len(values) == 2 and all(v == version for v in values.values())

    wait_until(serving, timeout=180, what=f"both subtasks serving {version}")


def _assert_runs_from_the_archive(cluster: StandaloneFlink, job_id: str, python: Path) -> None:
    """Nothing of this checkout or its venv reaches the TaskManagers: they have no PYTHONPATH,
    run the job's functions with the cluster's Python, with only the extracted archive on the
    path, and map V8 and numpy from there. The job's restart strategy is the page's."""
    config = rest_get(cluster.rest, f"/jobs/{job_id}/config")["execution-config"]
    assert "exponential delay" in config["restart-strategy"], config
    mine = (str(REPO), sys.prefix)
    logs = "\n".join(p.read_text() for p in cluster.log_dir.glob("*taskexecutor*.log"))
    interpreters = set(re.findall(r"Python interpreter path: (\S+)", logs))
    paths = set(re.findall(r"PYTHONPATH of python worker: (\S+)", logs))
    assert interpreters == {str(python)}, interpreters
    assert paths and all(p.endswith("/tf-on-flink") and "/python-files/" in p for p in paths)
    loaded = []
    for tm in cluster.taskmanager_processes():
        assert "PYTHONPATH" not in tm.environ(), tm.environ().get("PYTHONPATH")
        loaded += _loaded(tm, "libmini_racer.so") + _loaded(tm, "_multiarray_umath")
    assert loaded, "no TaskManager has loaded V8"
    for path in loaded:
        assert any(path.startswith(p) for p in paths) and not path.startswith(mine), path


def _loaded(process: psutil.Process, name: str) -> list[str]:
    """Files whose name contains `name` mapped by `process` or its children (the Python
    workers of process mode)."""
    paths = set()
    for p in [process, *process.children(recursive=True)]:
        with suppress(psutil.Error):
            paths |= {m.path for m in p.memory_maps() if name in Path(m.path).name}
    return sorted(paths)


def _checkpoints(cluster: StandaloneFlink, job_id: str) -> dict[str, Any]:
    return dict(rest_get(cluster.rest, f"/jobs/{job_id}/checkpoints"))


def _restarted(cluster: StandaloneFlink, job_id: str) -> bool:
    """Whether the job has been through RESTARTING (REST: when it last entered each state)."""
    try:
        timestamps = rest_get(cluster.rest, f"/jobs/{job_id}")["timestamps"]
    except OSError:
        return False
    return bool(timestamps.get("RESTARTING", 0) > 0)


def _empty(s3: Any, url: str) -> None:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    client = s3.client()
    for obj in client.list_objects(bucket, prefix=prefix + "/", recursive=True):
        client.remove_object(bucket, obj.object_name)


def _keys(s3: Any) -> dict[str, str]:
    return {"access_key": s3.access_key, "secret_key": s3.secret_key, "region": s3.region}


def test_the_docker_image_builds_and_runs_the_archive(packed: Path, tmp_path: Path) -> None:
    """docs/deploy/Dockerfile: built, and its Python imports the job from the archive (the
    page's Docker blocks, as written). Only where a Docker daemon answers."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed here")
    if subprocess.run([docker, "info"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("no Docker daemon answers here (`docker info` fails)")
    blocks = DeployBlocks()
    work = tmp_path / "work"
    (work / "build").mkdir(parents=True)
    (work / "docs").symlink_to(REPO / "docs")
    shutil.copyfile(packed / ARCHIVE, work / ARCHIVE)
    env = dict(os.environ)
    blocks.run("docker build", cwd=work, env=env)
    assert "ok" in blocks.run("docker run", cwd=work, env=env)
