"""`job.canary`: a candidate serves a stable fraction of the keys; it is rolled back when it errs
more than the serving version, or fails batches; its failed rows are served by the serving one."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import reloader.publish
from job.canary import BUCKETS, Canary, buckets
from job.functions import PredictVectorized
from job.mixin import ModelSettings
from job.scoring import Batch
from tests.support.faults import POISON_LOOP
from tests.support.stores import Versions, reference_of
from tests.support.waiting import wait_until


def test_buckets_are_stable_and_spread() -> None:
    ids = np.arange(20_000)
    b = buckets(ids)
    assert b.min() >= 0 and b.max() < BUCKETS
    assert np.array_equal(b, buckets(ids.copy())), "the same key, the same bucket"
    assert abs((b < BUCKETS // 10).mean() - 0.1) < 0.01, "a fraction of 0.1 gets ~10% of keys"
    words = [f"user-{i}" for i in range(5000)]
    assert np.array_equal(buckets(words), buckets(list(words)))
    assert abs((buckets(words) < BUCKETS // 2).mean() - 0.5) < 0.03


def test_rows_by_a_chosen_key_field_and_rows_without_it() -> None:
    canary = Canary(lambda: None, 1.0, fraction=0.5, key="customer")  # type: ignore[arg-type, return-value]
    keys = [f"c{i % 40}" for i in range(400)]
    picked = canary.rows(keys, len(keys))
    assert 0 < picked.sum() < len(keys)
    by_key = {k: bool(p) for k, p in zip(keys, picked, strict=True)}
    assert all(by_key[k] == bool(p) for k, p in zip(keys, picked, strict=True)), "key -> version"
    with_gaps = canary.rows([None, *keys[:9]], 10)
    assert not with_gaps[0] and list(with_gaps[1:]) == list(picked[:9]), "no key: serving"
    ints = np.arange(1000)
    assert np.array_equal(canary.rows(ints, 1000), buckets(ints) < canary.cut)
    assert not canary.rows(None, 3).any()


def test_the_error_rate_against_the_serving_version_rolls_back() -> None:
    canary = Canary(lambda: None, 1.0, fraction=0.1, max_error_rate=0.05, min_rows=100)  # type: ignore[arg-type, return-value]
    canary.stats.sha256 = "a" * 64
    canary.record(rows=50, errors=10, serving_rows=500, serving_errors=5)
    assert not canary.stats.rolled_back, "too few rows to judge"
    canary.record(rows=50, errors=0, serving_rows=500, serving_errors=5)
    assert canary.stats.rolled_back and canary.total_rollbacks == 1  # 10% against 1%


@pytest.fixture
def predictor(tmp_path: Path, versions: Versions) -> Iterator[tuple[PredictVectorized, Any]]:
    """A vectorized predict function outside Flink: serving "1" (v1), the channel `canary` on
    "2" (v2), 30% of the ids, a short call timeout."""
    store = tmp_path / "store"
    v1, v2 = versions.make("1", "v1"), versions.make("2", "v2")
    reloader.publish.publish(str(store), v1.data, v1.manifest)
    reloader.publish.publish(str(store), v2.data, v2.manifest, channel="canary")
    settings = ModelSettings(
        url=str(store),
        cache_dir=str(tmp_path / "cache"),
        poll_interval=0.1,
        call_timeout=0.5,
        canary="canary",
        canary_fraction=0.3,
    )
    fn = PredictVectorized(["id", *FEATURES], settings)
    fn._setup(object())  # no metrics, subtask 0
    gc.unfreeze()  # what the worker freezes is this test process here
    try:
        yield fn, store
    finally:
        fn.close_model()


FEATURES = [
    "alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols",
    "flavanoids", "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue",
    "od280_od315_of_diluted_wines", "proline",
]  # fmt: skip


def _columns(wine: Any, ids: np.ndarray) -> dict[str, Any]:
    rows = [wine.records[i % len(wine.records)] for i in ids]
    return {"id": ids, **{f: np.array([r[f] for r in rows], dtype=np.float64) for f in FEATURES}}


def test_a_stable_fraction_of_the_keys_gets_the_candidate(
    predictor: tuple[PredictVectorized, Any], wine: Any
) -> None:
    fn, _ = predictor
    assert fn.canary is not None
    wait_until(lambda: fn.canary is not None and fn.canary.channel.model is not None,
               what="the candidate started")  # fmt: skip
    ids = np.arange(600)
    lines = [json.loads(x) for x in fn.predict_batch(Batch(columns=_columns(wine, ids)))]
    by_id = {r["id"]: r for r in lines}
    assert sorted(by_id) == ids.tolist()
    want = buckets(ids) < 0.3 * BUCKETS
    refs = {"1": reference_of(wine, "v1"), "2": reference_of(wine, "v2")}
    for i in ids.tolist():
        r = by_id[i]
        assert r["model_version"] == ("2" if want[i] else "1"), r
        got = list(r["probabilities"].values())
        np.testing.assert_allclose(got, refs[r["model_version"]][i % len(refs["1"])], atol=1e-5)
    assert fn.canary.stats.rows == int(want.sum()) and fn.canary.stats.error_rows == 0


def test_a_candidate_that_fails_batches_is_rolled_back_and_loses_nothing(
    predictor: tuple[PredictVectorized, Any], versions: Versions, wine: Any
) -> None:
    fn, store = predictor
    bad = versions.make("3", "v2", data=versions.bundles["v2"] + POISON_LOOP.encode())
    reloader.publish.publish(str(store), bad.data, bad.manifest, channel="canary")
    canary = fn.canary
    assert canary is not None

    def on_three() -> bool:
        model = canary.channel.model
        return model is not None and model.info.version == "3"

    wait_until(lambda: fn.predict_batch(Batch(columns=_columns(wine, np.arange(10)))) and
               on_three(), what="the canary on 3")  # fmt: skip
    ids = np.arange(200)
    columns = _columns(wine, ids)
    columns["alcohol"] = np.full(len(ids), 999.0)  # the candidate loops forever on these
    for _ in range(3):
        lines = [json.loads(x) for x in fn.predict_batch(Batch(columns=columns))]
        assert sorted(r["id"] for r in lines) == ids.tolist()
        assert {r["model_version"] for r in lines} == {"1"}, "served by the serving version"
        assert all(r.get("error") is None for r in lines)
    assert canary.stats.rolled_back and canary.total_rollbacks == 1
    assert canary.stats.failed_batches == 3
    # Rolled back: no more rows go to it, nothing waits for its timeout.
    lines = [json.loads(x) for x in fn.predict_batch(Batch(columns=columns))]
    assert {r["model_version"] for r in lines} == {"1"}
    assert canary.stats.failed_batches == 3


@pytest.mark.slow
def test_a_failing_canary_in_a_running_job_is_rolled_back_with_nothing_lost(
    tmp_path: Path, versions: Versions, wine: Any
) -> None:
    """The job with `--canary canary`: a candidate that hangs on the records (a timeout) is
    published to the channel while records flow; every subtask rolls it back, and every id comes
    out exactly once, none of them an error."""
    from collections import Counter

    from job.pipeline import JobOptions
    from tests.support.flink import Feeder, ids_out, read_outputs, running_job

    class Poisoned(Feeder):  # the candidate loops on these (the serving version does not)
        def record(self, i: int) -> dict[str, Any]:
            return {**super().record(i), "alcohol": 999.0}

    store, in_dir, out_dir = tmp_path / "store", tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    v1 = versions.make("1", "v1")
    bad = versions.make("2", "v2", data=versions.bundles["v2"] + POISON_LOOP.encode())
    reloader.publish.publish(str(store), v1.data, v1.manifest)
    opts = JobOptions(
        model=str(store),
        source=f"dir:{in_dir}",
        sink=f"dir:{out_dir}",
        parallelism=2,
        execution_mode="process",
        canary="canary",
        canary_fraction=0.5,
        checkpoint_interval_ms=300,
        roll_interval="1 s",
        poll_interval=0.2,
        cache_dir=str(tmp_path / "cache"),
        max_delay_ms=20,
        call_timeout=0.5,
    )
    feeder = Poisoned(in_dir, wine)
    feeder.write_chunk()
    try:
        with running_job(opts, tmp_path) as job:
            job.wait_metric("version_number", lambda vs: vs == [1, 1], "serving 1", timeout=120)
            feeder.start()
            reloader.publish.publish(str(store), bad.data, bad.manifest, channel="canary")
            job.wait_metric(
                "canary.rollbacks",
                lambda vs: len(vs) == 2 and min(vs) >= 1,
                "both subtasks rolled the canary back",
                timeout=120,
            )
            feeder.stopped.set()
            feeder.join()
            total = feeder.next_id
            wait_until(lambda: ids_out(out_dir, total) >= total, timeout=180, what="all out")
            job.result.get_job_client().cancel().result()
    finally:
        feeder.stopped.set()
    records = [r for recs in read_outputs(out_dir).values() for r in recs]
    counts = Counter(r["id"] for r in records)
    assert set(counts) == set(range(total)) and max(counts.values()) == 1, "each id once"
    assert all(r.get("error") is None for r in records)
    assert {r["model_version"] for r in records} <= {"1", "2"}
