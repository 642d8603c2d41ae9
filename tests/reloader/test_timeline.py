"""Event-time cutover in `HotModel`: a version published with an effective time T scores the
records of event time >= T, the one before it the others, in any order; after a restart the
store's publish history gives the same answer; models of passed segments are closed, and loaded
again for a late record."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import reloader.publish
from reloader import runtime as runtime_module
from reloader.agent import HotModel
from reloader.manifest import Manifest
from reloader.sources import Source
from reloader.timeline import Segment, Timeline, apply
from tests.support.stores import Version, Versions, put_manifest, reference_of
from tests.support.waiting import wait_until

T = 1_800_000_000_000  # the cutover's event time, ms (2027-01-15T08:00:00Z)
STAMP = "2027-01-15T08:00:00Z"


def _at(manifest: Manifest, stamp: str | None) -> Manifest:
    return dataclasses.replace(manifest, effective_at=stamp)


def test_publishes_cut_event_time_into_segments(versions: Versions) -> None:
    a, b, c = (versions.make(x).manifest for x in "abc")
    segs = apply(
        apply(apply([], a), _at(b, "2027-01-15T08:00:00Z")), _at(c, "2027-01-15T09:00:00Z")
    )
    assert [(s.start, s.manifest.version) for s in segs] == [
        (None, "a"), (T, "b"), (T + 3_600_000, "c"),
    ]  # fmt: skip
    # A publish from an earlier time replaces every later segment; one without a time, all.
    assert [s.manifest.version for s in apply(segs, _at(a, "2027-01-15T07:00:00Z"))] == ["a", "a"]
    assert [s.manifest.version for s in apply(segs, c)] == ["c"]

    timeline = Timeline(segs)
    times = [T + 3_600_000, T - 1, T, T + 1, 0, T + 3_599_999]  # out of order
    assert [timeline.index(t) for t in times] == [2, 0, 1, 1, 0, 1]
    assert [(i, rows.tolist()) for i, rows in timeline.split(times)] == [
        (0, [1, 4]), (1, [2, 3, 5]), (2, [0]),
    ]  # fmt: skip
    with pytest.raises(ValueError):
        Timeline([Segment(T, a)])


def _publish(store: Path, v: Version, at: str | int | None = None) -> None:
    reloader.publish.publish(str(store), v.data, v.manifest, effective_at=at)


def _score(hm: HotModel, wine: Any, times: np.ndarray) -> dict[int, tuple[str, np.ndarray]]:
    """Row -> (version, outputs) for the WINE rows at these event times."""
    x = np.resize(wine.x, (len(times), wine.x.shape[1])).astype(np.float32)
    out: dict[int, tuple[str, np.ndarray]] = {}
    for rows, got in hm.run_at(times, lambda rt, rows: rt.predict(x[rows])):
        for k, r in enumerate(rows.tolist()):
            out[r] = (got.version, got.value[k])
    return out


def _adopt(hm: HotModel) -> bool:
    """A call for the latest event time: adopts what the poll thread offered (a pruned
    timeline), needs only the newest model."""
    hm.split(np.array([2**62]))
    return True


def _check(scored: dict[int, tuple[str, np.ndarray]], times: np.ndarray, wine: Any) -> None:
    refs = {"old": reference_of(wine, "v1"), "new": reference_of(wine, "v2")}
    n = len(wine.x)
    for r, t in enumerate(times.tolist()):
        version, value = scored[r]
        assert version == ("new" if t >= T else "old"), (r, t, version)
        np.testing.assert_allclose(value, refs[version][r % n], atol=1e-5)


def _times(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    times = T + rng.integers(-5_000, 5_000, size=n)
    times[:3] = [T - 1, T, T + 1]  # both sides of the edge
    return times


def test_a_cutover_scores_by_event_time_and_a_restart_agrees(
    store_dir: Path, tmp_path: Path, versions: Versions, wine: Any
) -> None:
    old, new = versions.make("old", "v1"), versions.make("new", "v2")
    _publish(store_dir, old)
    times = _times(500, seed=1)
    with HotModel(str(store_dir), poll_interval=0.2, cache_dir=tmp_path / "c1") as hm:
        assert {v for v, _ in _score(hm, wine, times).values()} == {"old"}
        _publish(store_dir, new, at=STAMP)
        wait_until(lambda: _adopt(hm) and len(hm.info.segments) == 2, what="the cutover")
        assert [(s["start_ms"], s["version"]) for s in hm.info.segments] == [
            (None, "old"), (T, "new"),
        ]  # fmt: skip
        before = _score(hm, wine, times)
        _check(before, times, wine)

    # Another process (a restored task, another machine: its own cache) reads the history.
    with HotModel(str(store_dir), poll_interval=60, cache_dir=tmp_path / "c2") as again:
        assert [s["loaded"] for s in again.info.segments] == [True, True]
        after = _score(again, wine, times)
    assert {r: v for r, (v, _) in after.items()} == {r: v for r, (v, _) in before.items()}
    for r in before:
        np.testing.assert_array_equal(after[r][1], before[r][1])


def test_passed_segments_close_and_a_late_record_loads_its_model_again(
    store_dir: Path, tmp_path: Path, versions: Versions, wine: Any
) -> None:
    contexts = len(runtime_module._LIVE)
    _publish(store_dir, versions.make("old", "v1"))
    _publish(store_dir, versions.make("new", "v2"), at=STAMP)
    with HotModel(str(store_dir), poll_interval=0.2, cache_dir=tmp_path / "cache") as hm:
        assert len(runtime_module._LIVE) == contexts + 2
        hm.advance(T - 1)  # not passed yet: "old" still has records to come
        hm.advance(T)
        wait_until(lambda: _adopt(hm) and [s["loaded"] for s in hm.info.segments] == [False, True],
                   what="the passed segment's model dropped")  # fmt: skip
        wait_until(lambda: len(runtime_module._LIVE) == contexts + 1, what="its context closed")
        late = np.array([T - 10, T + 10])
        _check(_score(hm, wine, late), late, wine)
        assert hm.info.late_loads == 1
        assert hm.info.watermark_ms == T


def test_many_cutovers_keep_two_models_alive(
    store_dir: Path, tmp_path: Path, versions: Versions, wine: Any
) -> None:
    contexts = len(runtime_module._LIVE)
    _publish(store_dir, versions.make("0", "v1"))
    with HotModel(str(store_dir), poll_interval=0.2, cache_dir=tmp_path / "cache") as hm:
        for i in range(1, 16):
            at = T + i * 1000
            _publish(store_dir, versions.make(str(i), "v2" if i % 2 else "v1"), at=at)
            wait_until(lambda i=i: _adopt(hm) and hm.info.version == str(i), what=f"version {i}")
            got = _score(hm, wine, np.array([at - 1, at]))
            assert [got[0][0], got[1][0]] == [str(i - 1), str(i)]
            hm.advance(at)
            wait_until(lambda: _adopt(hm) and len(runtime_module._LIVE) == contexts + 1,
                       what="the passed model closed")  # fmt: skip
        assert len(hm.info.segments) == 16
        assert sum(s["loaded"] for s in hm.info.segments) == 1
        assert hm.info.late_loads == 0


def test_a_plain_publish_serves_every_record_and_a_copy_without_history_still_cuts_over(
    store_dir: Path, local: Source, tmp_path: Path, versions: Versions, wine: Any
) -> None:
    _publish(store_dir, versions.make("old", "v1"))
    with HotModel(str(store_dir), poll_interval=0.2, cache_dir=tmp_path / "cache") as hm:
        # A manifest copied in by hand (no history line): applied to what this process serves.
        new = versions.make("new", "v2")
        local.put(new.manifest.bundle, new.data, content_type="application/javascript")
        put_manifest(local, _at(new.manifest, STAMP))
        wait_until(lambda: _adopt(hm) and len(hm.info.segments) == 2, what="the cutover")
        times = _times(50, seed=2)
        _check(_score(hm, wine, times), times, wine)
        # A publish without a time: every record, whatever its time, from the next call.
        _publish(store_dir, versions.make("plain", "v1"))
        wait_until(lambda: _adopt(hm) and hm.info.version == "plain", what="the plain publish")
        assert {v for v, _ in _score(hm, wine, times).values()} == {"plain"}
        assert len(hm.info.segments) == 1
