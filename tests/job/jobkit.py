"""Running the real job in a PyFlink mini-cluster from a test, and reading what it wrote."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from storekit import wait_until

from job.metrics import local_rest, model_metrics
from job.pipeline import JobOptions, build, environments, sink


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
