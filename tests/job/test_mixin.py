"""ReloaderMixin inside a real PyFlink mini-cluster (process mode)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from storekit import Versions, publish, reference_of

from reloader.sources import open_source


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
