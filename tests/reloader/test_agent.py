"""HotModel on a local directory: first load, fs-event adoption, back-off schedule, clean stop."""

from __future__ import annotations

import dataclasses
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reloader import runtime as runtime_module
from reloader.agent import HotModel
from reloader.errors import ManifestError, NotReady, SourceError
from reloader.follower import poll_delay
from reloader.sources import Source
from tests.support.stores import Versions, publish, put_manifest, reference_of
from tests.support.waiting import FakeClock, checked, wait_until


def _hot(store: Path | str, tmp_path: Path, **kw: Any) -> HotModel:
    kw.setdefault("poll_interval", 3600)
    kw.setdefault("watch", False)
    return HotModel(str(store), cache_dir=tmp_path / "cache", **kw)


def test_start_needs_a_model(store_dir: Path, tmp_path: Path, local: Source) -> None:
    threads = threading.active_count()
    with pytest.raises(NotReady, match="no manifest"):
        _hot(store_dir, tmp_path).start()
    put_manifest(local, b"{garbage")
    with pytest.raises(ManifestError, match="not JSON"):
        _hot(store_dir, tmp_path).start()
    with pytest.raises(SourceError, match="no source for scheme 'ftp'"):
        _hot("ftp://example/models", tmp_path).start()
    assert threading.active_count() == threads


def test_serves_and_reports(
    store_dir: Path, tmp_path: Path, local: Source, versions: Versions, wine: Any
) -> None:
    v1 = versions.make("v1", "v1")
    publish(local, v1)
    with _hot(store_dir, tmp_path) as hm:
        got = hm.predict_versioned(wine.x)
        assert (got.version, got.sha256) == ("v1", v1.manifest.sha256)
        np.testing.assert_allclose(got.value, reference_of(wine, "v1"), atol=1e-5)
        rows = hm.predict_rows(wine.records[:5])
        assert [p.label for p in rows.value] == [p.label for p in hm.predict_rows(wine.x[:5]).value]
        assert hm.predict_records(wine.records[:2]).version == "v1"
        info = hm.info
        assert (info.model, info.version, info.sha256) == ("wine", "v1", v1.manifest.sha256)
        assert info.checks == 1 and info.reloads == 1 and info.failures == 0
        assert info.last_build_seconds and info.last_build_seconds > 0
        assert info.last_error is None and info.loaded_at and info.last_check
        assert (tmp_path / "cache" / f"{v1.manifest.sha256}.js").read_bytes() == v1.data
        checked(hm)
        assert hm.info.unchanged == 1 and hm.info.reloads == 1
    with pytest.raises(NotReady):
        hm.predict(wine.x)


def test_local_store_change_seen_through_fs_events(
    store_dir: Path, tmp_path: Path, local: Source, versions: Versions, wine: Any
) -> None:
    publish(local, versions.make("v1", "v1"))
    # The poll thread's clock only moves when the test releases a sleep, and it never does: no
    # poll comes, only a file-system event can make it notice the new version. (How fast that
    # is, is bench/swap.py's `publish_to_serve_dir_s`.)
    clock = FakeClock()
    with _hot(store_dir, tmp_path, watch=True, clock=clock) as hm:
        assert hm.info.watching
        assert hm.predict_versioned(wine.x[:1]).version == "v1"
        clock.wait_sleeps(1)  # waiting for a poll that never comes
        start, checks = clock.monotonic(), hm.info.checks
        publish(local, versions.make("v2", "v2"))
        # The version is offered before its check is counted as done: wait for both.
        wait_until(
            lambda: hm.info.pending_version == "v2" and hm.info.checks > checks,
            what="v2 seen through an fs event",
        )
        info = hm.info
        # Checked on the event's wake-up, with no wait run to its end: not a poll.
        assert info.last_check == clock.time()
        assert clock.monotonic() == start, f"a poll interval elapsed: {clock.sleeps}"
        got = hm.predict_versioned(wine.x)
        assert got.version == "v2"
        np.testing.assert_allclose(got.value, reference_of(wine, "v2"), atol=1e-5)


def test_backoff_schedule_with_fake_clock(
    http_store: Any, tmp_path: Path, versions: Versions
) -> None:
    from reloader.sources import open_source

    with open_source(http_store.url("wine"), token="s3cret") as source:
        publish(source, versions.make("v1", "v1"))
    clock = FakeClock()
    hm = _hot(
        http_store.url("wine"),
        tmp_path,
        poll_interval=2.0,
        jitter=0.0,
        max_backoff=10.0,
        clock=clock,
    ).start()
    try:
        assert clock.wait_sleeps(1) == [2.0]
        http_store.fault("version.json", status=500)
        for _ in range(5):
            clock.release()
        # Each failure doubles the wait from the poll interval up to max_backoff.
        assert clock.wait_sleeps(6) == [2.0, 2.0, 4.0, 8.0, 10.0, 10.0]
        assert hm.info.failures == 5
        http_store.clear()
        clock.release()
        assert clock.wait_sleeps(7)[-1] == 2.0  # back to the normal interval after a success
        assert hm.info.failures == 5 and hm.info.unchanged == 1
    finally:
        hm.stop()


def test_jitter_spreads_the_waits() -> None:
    rng = random.Random(7)
    delays = [poll_delay(10.0, 0.2, 300.0, 0, rng) for _ in range(200)]
    assert 8.0 <= min(delays) < 9.0 and 11.0 < max(delays) <= 12.0
    backoff = [poll_delay(10.0, 0.0, 300.0, n, rng) for n in range(1, 8)]
    assert backoff == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]


def test_stop_leaves_no_threads_or_contexts(
    store_dir: Path, tmp_path: Path, local: Source, versions: Versions, wine: Any
) -> None:
    threads = {t.ident for t in threading.enumerate()}
    contexts = len(runtime_module._LIVE)
    publish(local, versions.make("v1", "v1"))
    hm = _hot(store_dir, tmp_path, watch=True, poll_interval=0.05).start()
    for i in range(3):
        publish(local, versions.make(f"v{i + 2}", "v2" if i % 2 == 0 else "v1"))
        wait_until(lambda i=i: hm.predict_versioned(wine.x[:1]).version == f"v{i + 2}")
    publish(local, versions.make("pending", "v2"))
    wait_until(lambda: hm.info.pending_version == "pending")  # never adopted: closed by stop()
    hm.stop()
    wait_until(lambda: {t.ident for t in threading.enumerate()} <= threads, what="threads gone")
    assert len(runtime_module._LIVE) == contexts


def test_http_store_unchanged_manifest_costs_a_304(
    http_store: Any, tmp_path: Path, versions: Versions, wine: Any
) -> None:
    from reloader.sources import open_source

    url = http_store.url("models/wine")
    with open_source(url, token="s3cret") as source:
        v1 = versions.make("v1", "v1")
        publish(source, v1)
        with _hot(url, tmp_path) as hm:
            for _ in range(3):
                checked(hm)
            v2 = versions.make("v2", "v2")
            publish(source, v2)
            checked(hm)
            assert hm.predict_versioned(wine.x[:1]).version == "v2"
            checked(hm)
    gets = [
        (path.rsplit("/", 1)[-1], status)
        for method, path, status in http_store.requests()
        if method == "GET"
    ]
    assert gets == [
        ("version.json", 200),  # start()
        (f"{v1.manifest.sha256}.js", 200),
        ("version.json", 304),
        ("version.json", 304),
        ("version.json", 304),
        ("version.json", 200),  # v2 published
        (f"{v2.manifest.sha256}.js", 200),
        ("version.json", 304),
    ]
    assert hm.info.unchanged == 4


def test_runtime_broken_while_serving_is_rebuilt(
    store_dir: Path, tmp_path: Path, local: Source, versions: Versions, wine: Any
) -> None:
    from reloader.errors import BundleTimeout, RuntimeClosed
    from tests.support.faults import POISON_LOOP

    poisoned = versions.make("v2p", data=versions.bundles["v2"] + POISON_LOOP.encode())
    publish(local, poisoned)
    with _hot(store_dir, tmp_path, call_timeout=0.5) as hm:
        assert hm.predict_versioned(wine.x).version == "v2p"
        poison = wine.x[:2].copy()
        poison[0, 0] = 999
        with pytest.raises(BundleTimeout):
            hm.predict(poison)  # terminated after call_timeout: that runtime is gone

        # The poll thread rebuilds the same version from the cache; until then calls fail fast.
        def healthy() -> bool:
            try:
                return hm.predict_versioned(wine.x).version == "v2p"
            except RuntimeClosed:
                return False

        wait_until(healthy, what="the rebuilt runtime")
        np.testing.assert_allclose(hm.predict(wine.x), reference_of(wine, "v2"), atol=1e-5)
        info = hm.info
        assert info.rebuilds == 1 and info.reloads == 1 and info.failures == 1
        assert "BundleTimeout" in (info.last_error or "")


def test_rollback_and_relabel(
    store_dir: Path, tmp_path: Path, local: Source, versions: Versions, wine: Any
) -> None:
    v1, v2 = versions.make("v1", "v1"), versions.make("v2", "v2")
    publish(local, v1)
    with _hot(store_dir, tmp_path) as hm:
        publish(local, v2)
        checked(hm)
        assert hm.predict_versioned(wine.x[:1]).version == "v2"
        # Rollback: the manifest points at the older bundle again; it comes from the cache.
        (tmp_path / "store" / v1.manifest.bundle).unlink()
        put_manifest(local, v1.manifest)
        checked(hm)
        got = hm.predict_versioned(wine.x)
        assert got.version == "v1"
        np.testing.assert_allclose(got.value, reference_of(wine, "v1"), atol=1e-5)
        # Same bundle, new label: outputs carry the label the manifest gives now.
        put_manifest(local, dataclasses.replace(v1.manifest, version="v1-promoted"))
        checked(hm)
        assert hm.predict_versioned(wine.x[:1]).version == "v1-promoted"
        assert hm.info.failures == 0 and hm.info.reloads == 4
