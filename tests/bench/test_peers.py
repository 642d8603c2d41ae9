"""The job throughput benchmark's peers (bench/peers.py) compute our bundle's function: on every
WINE row their probabilities are the bundle's (`ModelRuntime` on wine v2) within 1e-5, in the
model function's ROW, with its version and sha256; and they run inside a Flink job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from bench import peers
from job.table import signature
from model.data import load_wine_csv
from reloader.load import check
from reloader.runtime import ModelRuntime

TOLERANCE = 1e-5
Floats = npt.NDArray[Any]
NAMES = [
    "numpy",
    pytest.param(
        "onnx",
        marks=pytest.mark.skipif(
            peers.onnx_missing() is not None, reason=f"{peers.onnx_missing()}"
        ),
    ),
]


@pytest.fixture(scope="module")
def x() -> Floats:
    """The WINE rows' raw features, float64 as the job's DOUBLE columns carry them."""
    return load_wine_csv()[2]


@pytest.fixture(scope="module")
def expected(bundle_v2: bytes, x: Floats) -> Floats:
    with ModelRuntime(bundle_v2) as runtime:
        return runtime.predict(x)


def columns(x: Floats) -> list[pd.Series]:
    return [pd.Series(x[:, j]) for j in range(x.shape[1])]


def run(peer: peers.Peer, x: Floats) -> pd.DataFrame:
    peer.open(None)
    try:
        return peer.eval(*columns(x))
    finally:
        peer.close()


def probabilities(frame: pd.DataFrame, labels: tuple[str, ...]) -> Floats:
    return np.array([[p[label] for label in labels] for p in frame["probabilities"]])


@pytest.mark.parametrize("name", NAMES)
def test_peer_answers_as_the_bundle_on_every_wine_row(
    name: str, built_stores: dict[str, Path], x: Floats, expected: Floats
) -> None:
    store = str(built_stores["v2"])
    report = check(store)
    peer = peers.peer(name, store)
    assert peer.sig == signature(report.meta)

    out = run(peer, x)

    labels = report.meta.labels
    assert list(out.columns) == [f for f, _ in peer.sig.fields]
    np.testing.assert_allclose(probabilities(out, labels), expected, atol=TOLERANCE, rtol=0)
    assert out["label"].tolist() == [labels[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(out["score"], expected.max(axis=1), atol=TOLERANCE, rtol=0)
    assert set(out["model_version"]) == {report.manifest.version}
    assert set(out["model_sha256"]) == {report.manifest.sha256}
    assert out["error"].isna().all()


@pytest.mark.parametrize("name", NAMES)
def test_a_row_with_a_missing_feature_is_an_error_row(
    name: str, built_stores: dict[str, Path], x: Floats, expected: Floats
) -> None:
    x = x[:5].copy()
    x[2, 4] = np.nan  # a null DOUBLE reaches a pandas UDF as NaN
    peer = peers.peer(name, str(built_stores["v2"]))

    out = run(peer, x)

    assert out["error"][2] == peers.NOT_FINITE
    assert out["label"][2] is None and np.isnan(out["score"][2])
    assert out["probabilities"][2] is None
    good = [0, 1, 3, 4]
    got = probabilities(out.iloc[good], peer.meta.labels)
    np.testing.assert_allclose(got, expected[good], atol=TOLERANCE, rtol=0)
    assert out["error"].iloc[good].isna().all()


def test_a_store_of_another_model_is_refused(tmp_path: Path) -> None:
    from model.bundle import EXAMPLES, build_bundle

    build_bundle(EXAMPLES.parent / "penguins", tmp_path / "penguins")
    with pytest.raises(ValueError, match="build the store from the same model directory"):
        peers.peer("numpy", str(tmp_path / "penguins"))


@pytest.mark.slow
def test_peers_run_in_a_flink_job(
    built_stores: dict[str, Path],
    tmp_path: Path,
    expected: Floats,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both UDFs in one mini-cluster job over 2,000 WINE rows, their rows the bundle's. The Python
    workers run as processes of their own, as on a TaskManager, not in this process (PyFlink's
    loopback mode, the benchmark's): there bench/ does not import, so this is the harder case."""
    from pyflink.java_gateway import get_gateway
    from pyflink.table.expressions import col

    from job.pipeline import JobOptions, environments, wine_source

    # PyFlink reads this variable when a job starts. Its JVM must not inherit it: the JVM hands its
    # environment to every Python worker, and a loopback worker (this process, later tests' jobs)
    # copies it into `os.environ`, which would put every later job in this process into process
    # mode (where tests/job's modules do not import). So the JVM starts first.
    get_gateway()
    monkeypatch.setenv("_python_worker_execution_mode", "process")
    store, records = str(built_stores["v2"]), 2_000
    opts = JobOptions(
        model=store, cache_dir=str(tmp_path / "cache"), api="vectorized", rate=0, records=records
    )
    env, t_env = environments(opts)
    table = wine_source(env, t_env, 0, records)
    calls = []
    for name in ("numpy", "onnx") if peers.onnx_missing() is None else ("numpy",):
        fn, sig = peers.peer_function(name, store)
        calls.append(fn(*[col(n) for n, _ in sig.inputs]))
    fields = [c.get(f) for c in calls for f in ("probabilities", "model_version", "error")]

    with table.select(col("id"), *fields).execute().collect() as results:
        rows = [list(r) for r in results]

    assert sorted(r[0] for r in rows) == list(range(records))
    labels = check(store).meta.labels
    for row in rows:
        want = expected[row[0] % len(expected)]
        for k in range(len(calls)):
            probs, version, error = row[1 + 3 * k : 4 + 3 * k]
            assert error is None and version == "v2"
            got = [probs[label] for label in labels]
            np.testing.assert_allclose(got, want, atol=TOLERANCE, rtol=0)
