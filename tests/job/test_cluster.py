"""The job on a real standalone Flink cluster (`bin/start-cluster.sh`: JobManager and TaskManager
processes, 2 slots), submitted with `flink run --python`, parallelism 2, the model on S3
(SeaweedFS): both subtasks adopt a version published while the job runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reloader.sources import open_source
from tests.support.flink import REPO, StandaloneFlink, model_metrics
from tests.support.stores import Versions, publish
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("api", ["process", "vectorized"])
def test_standalone_cluster_adopts_a_new_version_on_both_subtasks(
    api: str, tmp_path: Path, versions: Versions, s3_session: Any
) -> None:
    url = f"s3://models/cluster-{api}/wine"
    options = {"endpoint": s3_session.endpoint, **_keys(s3_session)}
    with open_source(url, **options) as store:
        publish(store, versions.make("1", "v1"))
        with StandaloneFlink(tmp_path / "flink", slots=2, env=s3_session.env()) as cluster:
            job_id = cluster.submit_python(
                REPO / "job" / "__main__.py",
                ["--model", url, "--api", api, "--parallelism", "2", "--source", "wine",
                 "--rate", "200", "--records", "1000000", "--sink", "print",
                 "--poll-interval", "0.2", "--cache-dir", str(tmp_path / "cache")],
            )  # fmt: skip

            def serving(version: float) -> bool:
                try:
                    values = model_metrics(cluster.rest, job_id, "version_number")
                except OSError:
                    return False
                return len(values) == 2 and all(v == version for v in values.values())

            try:
                wait_until(lambda: serving(1), timeout=120, what="both subtasks serving 1")
                publish(store, versions.make("2", "v2"))
                wait_until(lambda: serving(2), timeout=60, what="both subtasks serving 2")
                assert cluster.job_state(job_id) == "RUNNING"
                reloads = model_metrics(cluster.rest, job_id, "reloads")
                assert len(reloads) == 2 and all(v >= 1 for v in reloads.values())
            except BaseException:
                print(cluster.log_tail())
                raise
            finally:
                cluster.cancel(job_id)


def _keys(s3: Any) -> dict[str, str]:
    return {"access_key": s3.access_key, "secret_key": s3.secret_key, "region": s3.region}
