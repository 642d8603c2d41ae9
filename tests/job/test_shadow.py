"""`job.shadow`: a candidate scores the same batches as the serving version and is compared with
it; a candidate that is not there yet is waited for; one with the serving bundle is not scored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import reloader.publish
from job.scoring import Batch, Scorer
from job.shadow import Shadow, describe, metric_values
from reloader.agent import HotModel
from tests.support.stores import Versions, reference_of
from tests.support.waiting import wait_until


def _batch(wine: Any) -> Batch:
    return Batch(records=[{"id": i, **r} for i, r in enumerate(wine.records)])


def test_a_candidate_is_compared_with_the_serving_version(
    tmp_path: Path, versions: Versions, wine: Any
) -> None:
    serving_store, candidate_store = tmp_path / "serving", tmp_path / "candidate"
    v1, v2 = versions.make("1", "v1"), versions.make("2", "v2")
    reloader.publish.publish(str(serving_store), v1.data, v1.manifest)
    scorer = Scorer()
    with HotModel(str(serving_store), cache_dir=tmp_path / "c1", poll_interval=60) as serving:
        shadow = Shadow(
            lambda: HotModel(str(candidate_store), cache_dir=tmp_path / "c2", poll_interval=0.1),
            retry_seconds=0.05,
        )
        shadow.start()
        try:
            batch = _batch(wine)
            result = scorer.predict(serving.run, batch)
            shadow.compare(batch, result, scorer)  # no candidate yet: nothing happens
            assert shadow.stats.batches == 0

            reloader.publish.publish(str(candidate_store), v2.data, v2.manifest)
            wait_until(lambda: shadow.model is not None, what="the candidate started")
            for _ in range(2):
                shadowed = shadow.compare(batch, result, scorer)
            # Outputs that carry the candidate's prediction: the serving one, then "shadow".
            batch.shadow = shadowed
            lines = [json.loads(line) for line in scorer.format(batch, result)]
        finally:
            shadow.stop()
    stats = shadow.stats
    a, b = reference_of(wine, "v1"), reference_of(wine, "v2")
    n = len(a)
    assert (stats.version, stats.sha256) == ("2", v2.manifest.sha256)
    assert stats.batches == 2 and stats.rows == 2 * n and stats.errors == 0
    assert stats.agreed == 2 * int((a.argmax(axis=1) == b.argmax(axis=1)).sum())
    np.testing.assert_allclose(
        np.array(stats.delta_micro) / 1e6, 2 * np.abs(a - b).sum(axis=0), rtol=1e-4
    )
    assert 0 < describe(stats)["agreement"] <= 1 and stats.micros > 0
    for i, line in enumerate(lines):
        assert line["model_version"] == "1" and line["shadow"]["model_version"] == "2"
        np.testing.assert_allclose(list(line["probabilities"].values()), a[i], atol=1e-5)
        np.testing.assert_allclose(list(line["shadow"]["probabilities"].values()), b[i], atol=1e-5)
        assert line["shadow"]["label"] == line["label"] or a[i].argmax() != b[i].argmax()
    values = metric_values(stats)
    assert values["rows"] == 2 * n and values["version_number"] == 2
    assert [k for k in values if k.startswith("abs_delta_micro_")] == [
        f"abs_delta_micro_{i}" for i in range(a.shape[1])
    ]


def test_a_candidate_with_the_serving_bundle_is_not_scored(
    tmp_path: Path, versions: Versions, wine: Any
) -> None:
    v1 = versions.make("1", "v1")
    for store in ("serving", "candidate"):
        reloader.publish.publish(str(tmp_path / store), v1.data, v1.manifest)
    scorer = Scorer()
    with HotModel(str(tmp_path / "serving"), cache_dir=tmp_path / "c1", poll_interval=60) as hm:
        shadow = Shadow(
            lambda: HotModel(str(tmp_path / "candidate"), cache_dir=tmp_path / "c2"),
            retry_seconds=0.05,
        )
        shadow.start()
        try:
            wait_until(lambda: shadow.model is not None, what="the candidate started")
            batch = _batch(wine)
            shadow.compare(batch, scorer.predict(hm.run, batch), scorer)
        finally:
            shadow.stop()
    assert shadow.stats.batches == 0


def test_the_job_reports_a_shadow_channel_and_keeps_serving_its_version(
    tmp_path: Path, versions: Versions, wine: Any
) -> None:
    """`--shadow shadow --shadow-output` in a p=2 job: the channel's candidate, published while
    the job runs, scores beside the serving version on both subtasks (the metrics
    `model.shadow.*`); every output is the serving version's and, while the candidate scores,
    carries its prediction too; pointing the channel at main ends the scoring."""
    from job.pipeline import JobOptions
    from tests.support.flink import Feeder, ids_out, read_outputs, running_job

    store, in_dir, out_dir = tmp_path / "store", tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    v1, v2 = versions.make("1", "v1"), versions.make("2", "v2")
    reloader.publish.publish(str(store), v1.data, v1.manifest)
    opts = JobOptions(
        model=str(store),
        source=f"dir:{in_dir}",
        sink=f"dir:{out_dir}",
        parallelism=2,
        execution_mode="process",
        shadow="shadow",
        shadow_output=True,
        checkpoint_interval_ms=300,
        roll_interval="1 s",
        poll_interval=0.2,
        cache_dir=str(tmp_path / "cache"),
        max_delay_ms=20,
    )
    feeder = Feeder(in_dir, wine)
    feeder.write_chunk()
    try:
        with running_job(opts, tmp_path) as job:
            job.wait_metric("version_number", lambda vs: vs == [1, 1], "serving 1", timeout=120)
            feeder.start()
            reloader.publish.publish(str(store), v2.data, v2.manifest, channel="shadow")
            job.wait_metric(
                "shadow.rows", lambda vs: len(vs) == 2 and min(vs) > 0, "both subtasks shadowed"
            )
            agreed = sum(job.metric("shadow.agreed_rows").values())
            rows = sum(job.metric("shadow.rows").values())
            assert 0 < agreed <= rows
            assert sum(job.metric("shadow.abs_delta_micro_0").values()) > 0
            assert set(job.metric("shadow.version_number").values()) == {2.0}

            feeder.stopped.set()
            feeder.join()
            reloader.publish.point_channel(str(store), "shadow", "main")  # abort

            def settled() -> bool:
                """One more chunk through the job (all of it committed) added no shadow rows:
                the subtasks adopted the channel's move."""
                before = sum(job.metric("shadow.rows").values())
                feeder.write_chunk()
                total = feeder.next_id
                wait_until(lambda: ids_out(out_dir, total) >= total, timeout=60, what="a chunk")
                return sum(job.metric("shadow.rows").values()) == before

            wait_until(settled, timeout=120, what="the shadow ended")
            job.result.get_job_client().cancel().result()
    finally:
        feeder.stopped.set()
    records = [r for recs in read_outputs(out_dir).values() for r in recs]
    assert {r["model_version"] for r in records} == {"1"}, "outputs keep the serving version"
    # --shadow-output: records scored while the candidate was there carry its prediction.
    shadowed = [r for r in records if "shadow" in r]
    assert 0 < len(shadowed) < len(records)
    ref = reference_of(wine, "v2")
    for r in shadowed:
        assert r["shadow"]["model_version"] == "2"
        got = list(r["shadow"]["probabilities"].values())
        np.testing.assert_allclose(got, ref[r["id"] % len(ref)], atol=1e-5)
