"""The failure catalogue: each fault leaves the old model serving, shows in `info` and in one log
line, and the agent recovers once a good version is published."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reloader.agent import HotModel
from reloader.errors import ManifestError
from reloader.manifest import Manifest, generate_key
from reloader.sources import Source, open_source
from tests.support.faults import PATCHES, bad_bundle
from tests.support.http_store import HttpStore
from tests.support.stores import Version, Versions, publish, put_manifest, reference_of
from tests.support.waiting import checked

KEY = generate_key()
OTHER_KEY = generate_key()


class Harness:
    """A HotModel serving v1, checked only when the test asks, and its log lines."""

    def __init__(
        self, url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, wine: Any, **kw: Any
    ) -> None:
        kw.setdefault("cache_dir", tmp_path / "cache")
        self.hm = HotModel(url, poll_interval=3600, watch=False, init_timeout=3, **kw)
        self.caplog = caplog
        self.wine = wine

    def warnings(self) -> list[str]:
        return [
            r.getMessage()
            for r in self.caplog.records
            if r.name == "reloader" and r.levelno >= logging.WARNING
        ]

    def serving(self) -> str:
        """Predicts every WINE row; checks the outputs against the version that answered."""
        got = self.hm.predict_versioned(self.wine.x)
        base = "v1" if got.version.startswith("v1") else "v2"
        np.testing.assert_allclose(got.value, reference_of(self.wine, base), atol=1e-5)
        return got.version

    def fails(self, inject: Callable[[], None], *, needle: str, counter: str = "failures") -> None:
        """Injects a fault; two checks later: still v1, counted, one log line naming it."""
        before = dataclasses.asdict(self.hm.info)
        logged = len(self.warnings())
        inject()
        checked(self.hm)
        checked(self.hm)  # the same fault again: counted or skipped, but not logged again
        info = self.hm.info
        assert self.serving() == "v1"
        assert info.version == "v1" and info.pending_version is None
        assert info.last_error is not None and needle in info.last_error, info.last_error
        assert getattr(info, counter) > before[counter]
        new = self.warnings()[logged:]
        assert len(new) == 1, new
        assert needle in new[0] and "still serving v1" in new[0]

    def recovers(self, publish_good: Callable[[], None], version: str = "v2") -> None:
        publish_good()
        checked(self.hm)
        assert self.serving() == version
        assert self.hm.info.version == version


@pytest.fixture
def harness(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, wine: Any
) -> Iterator[Callable[..., Harness]]:
    caplog.set_level(logging.INFO, logger="reloader")
    made: list[Harness] = []

    def make(
        url: str, first: Version, source: Source, *, manifest: Manifest | None = None, **kw: Any
    ) -> Harness:
        publish(source, first, manifest=manifest)
        h = Harness(url, tmp_path, caplog, wine, **kw)
        h.hm.start()
        made.append(h)
        assert h.serving() == "v1"
        return h

    yield make
    for h in made:
        h.hm.stop()


# -- a local store ---------------------------------------------------------------------------------


def _bad_manifest(versions: Versions, **change: Any) -> Manifest:
    return dataclasses.replace(versions.make("v9").manifest, **change)


CASES: dict[str, tuple[str, str]] = {
    # name: (text expected in last_error and the log line, info counter that rises)
    "manifest_garbage": ("ManifestError", "failures"),
    "manifest_unknown_format": ("format", "failures"),
    "missing_bundle": ("NotReady", "not_ready"),
    "sha256_mismatch": ("IntegrityError", "failures"),
    "size_mismatch": ("IntegrityError", "failures"),
    "oversize": ("cap", "failures"),
    "unsigned": ("not signed", "failures"),
    "signed_by_another_key": ("signed by key", "failures"),
    "signature_tampered": ("does not match", "failures"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_store_faults(
    case: str, harness: Any, store_dir: Path, local: Source, versions: Versions
) -> None:
    signing = case in ("unsigned", "signed_by_another_key", "signature_tampered")
    kw: dict[str, Any] = {"max_bundle_bytes": 1_000_000}
    if signing:
        kw["public_key"] = KEY.public_key()
    v1 = versions.make("v1", "v1")
    h = harness(str(store_dir), v1, local, manifest=v1.manifest.signed(KEY), **kw)
    bad = versions.make("v9")
    needle, counter = CASES[case]

    def inject() -> None:
        if case == "manifest_garbage":
            put_manifest(local, b'{"format": 1, "model": ')
        elif case == "manifest_unknown_format":
            put_manifest(local, bad.manifest.to_bytes().replace(b'"format": 1', b'"format": 7'))
        elif case == "missing_bundle":
            put_manifest(local, bad.manifest)
        elif case == "sha256_mismatch":
            local.put(bad.manifest.bundle, bad.data[:-3] + b"/x/", content_type="text/plain")
            put_manifest(local, bad.manifest)
        elif case == "size_mismatch":
            local.put(bad.manifest.bundle, bad.data + b"\n", content_type="text/plain")
            put_manifest(local, bad.manifest)
        elif case == "oversize":
            publish(local, versions.make("v9", data=bad.data + b"//" + b"x" * 500_000))
        elif case == "unsigned":
            publish(local, bad)
        elif case == "signed_by_another_key":
            publish(local, bad, manifest=bad.manifest.signed(OTHER_KEY))
        elif case == "signature_tampered":
            signed = bad.manifest.signed(KEY)
            publish(local, bad, manifest=dataclasses.replace(signed, version="v9-edited"))

    h.fails(inject, needle=needle, counter=counter)
    good = versions.make("v2", "v2")
    if case == "missing_bundle":
        # Not quarantined: once the bundle arrives, the same manifest is adopted.
        h.recovers(lambda: local.put(bad.manifest.bundle, bad.data, content_type="x"), "v9")
    elif signing:
        h.recovers(lambda: publish(local, good, manifest=good.manifest.signed(KEY)))
    else:
        h.recovers(lambda: publish(local, good))


@pytest.mark.parametrize("kind", sorted(PATCHES))
def test_bad_bundles_are_refused(
    kind: str, harness: Any, store_dir: Path, local: Source, versions: Versions
) -> None:
    h = harness(str(store_dir), versions.make("v1", "v1"), local, call_timeout=1.0)
    bad = versions.make("v9", data=bad_bundle(versions.bundles["v2"], kind))
    h.fails(lambda: publish(local, bad), needle="(stage: ")  # every BundleError names its stage
    assert bad.manifest.sha256 in h.hm.info.quarantined
    h.recovers(lambda: publish(local, versions.make("v2", "v2")))


def test_cache_dir_unwritable(
    harness: Any, store_dir: Path, local: Source, versions: Versions, tmp_path: Path
) -> None:
    # A regular file where the cache's parent directory should be: unwritable even for root.
    blocker = tmp_path / "blocker"
    h = harness(str(store_dir), versions.make("v1", "v1"), local, cache_dir=blocker / "cache")
    v2 = versions.make("v2", "v2")
    shutil.rmtree(blocker)
    blocker.write_text("not a directory")
    h.fails(lambda: publish(local, v2), needle="CacheError")
    assert v2.manifest.sha256 not in h.hm.info.quarantined  # a local problem, retried
    blocker.unlink()
    h.recovers(lambda: None)


# -- an HTTP store -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ({"status": 404}, "NotReady"),
        ({"status": 500}, "HTTP 500"),
        ({"status": 503}, "HTTP 503"),
        ({"status": 0, "delay": 1.5}, "no answer within"),
        ({"refused": True}, "connection refused"),
    ],
    ids=["404", "500", "503", "timeout", "refused"],
)
def test_http_faults(
    fault: dict[str, Any], needle: str, harness: Any, http_store: HttpStore, versions: Versions
) -> None:
    with open_source(http_store.url("wine"), token="s3cret") as source:
        h = harness(
            http_store.url("wine"),
            versions.make("v1", "v1"),
            source,
            source_options={"timeout": 0.5},
        )
        counter = "not_ready" if fault.get("status") == 404 else "failures"

        def inject() -> None:
            if fault.get("refused"):
                http_store.stop()
            else:
                http_store.fault(
                    "version.json", status=fault["status"], delay=fault.get("delay", 0)
                )

        h.fails(inject, needle=needle, counter=counter)

        def repair() -> None:
            if fault.get("refused"):
                http_store.start()  # same port
            else:
                http_store.clear()
            publish(source, versions.make("v2", "v2"))

        h.recovers(repair)
        gets = [r for r in http_store.requests() if r[0] == "GET"]
        assert ("GET", "/wine/version.json", 200) in gets


# -- a restart while the store offers a bad version ----------------------------------------------


@pytest.mark.parametrize("fault", ["selftest_mismatch", "garbage_manifest", "store_down"])
def test_a_restart_serves_the_last_good_version(
    fault: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    wine: Any,
    http_store: HttpStore,
    versions: Versions,
) -> None:
    """What a task Flink restarts does: a new HotModel on the same cache directory starts while
    the store offers a refused version, or none: it serves the version this store last served,
    and adopts the next good one."""
    caplog.set_level(logging.INFO, logger="reloader")
    url = http_store.url("wine")
    with open_source(url, token="s3cret") as source:
        publish(source, versions.make("v1", "v1"))
        first = Harness(url, tmp_path, caplog, wine, source_options={"timeout": 0.5})
        first.hm.start()
        first.hm.stop()  # the task fails
        if fault == "selftest_mismatch":
            bad = bad_bundle(versions.bundles["v2"], "selftest_mismatch")
            publish(source, versions.make("v9", data=bad))
        elif fault == "garbage_manifest":
            put_manifest(source, b"{not json")
        else:
            http_store.stop()
        again = Harness(url, tmp_path, caplog, wine, source_options={"timeout": 0.5})
        again.hm.start()  # the restarted task
        try:
            assert again.serving() == "v1"
            assert any("last good version" in m for m in _infos(caplog))
            if fault == "store_down":
                http_store.start()  # same port
            publish(source, versions.make("v2", "v2"))
            checked(again.hm)
            assert again.serving() == "v2"
        finally:
            again.hm.stop()

    # No record of a last good version (another cache directory): the start fails as before.
    with open_source(url, token="s3cret") as source:
        put_manifest(source, b"{not json")
        fresh = HotModel(url, poll_interval=3600, watch=False, cache_dir=tmp_path / "other",
                         source_options={"timeout": 0.5})  # fmt: skip
        with pytest.raises(ManifestError):
            fresh.start()


def _infos(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "reloader"]
