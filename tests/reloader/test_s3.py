"""S3 on a real SeaweedFS server: credentials, conditional GET, `aws s3 cp`, a server restart."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reloader.agent import HotModel
from reloader.errors import SourceError
from reloader.sources import open_source
from tests.support.stores import Versions, publish, reference_of
from tests.support.waiting import checked, wait_until


def _hot(url: str, tmp_path: Path, **kw: Any) -> HotModel:
    kw.setdefault("poll_interval", 3600)
    return HotModel(url, cache_dir=tmp_path / "cache", watch=False, **kw)


def test_follows_an_s3_store(
    s3: Any, s3_url: str, tmp_path: Path, versions: Versions, wine: Any
) -> None:
    with open_source(s3_url) as source:
        publish(source, versions.make("v1", "v1"))
    with _hot(s3_url, tmp_path) as hm:
        assert hm.predict_versioned(wine.x[:1]).version == "v1"
        for _ in range(3):
            checked(hm)
        # An unchanged manifest is a 304: counted as unchanged, nothing downloaded or built.
        assert hm.info.unchanged == 3 and hm.info.reloads == 1
        with open_source(s3_url) as source:
            publish(source, versions.make("v2", "v2"))
        checked(hm)
        got = hm.predict_versioned(wine.x)
        assert got.version == "v2"
        assert abs(got.value - reference_of(wine, "v2")).max() < 1e-5


def test_aws_cli_upload_is_picked_up(
    s3: Any,
    s3_url: str,
    tmp_path: Path,
    built_stores: dict[str, Path],
    versions: Versions,
    wine: Any,
) -> None:
    with open_source(s3_url) as source:
        publish(source, versions.make("v1", "v1"))
    with _hot(s3_url, tmp_path) as hm:
        assert hm.predict_versioned(wine.x[:1]).version == "v1"
        # What a data engineer does: copy the build directory as it is.
        aws = Path(sys.executable).with_name("aws")
        out = subprocess.run(
            [
                str(aws),
                "s3",
                "cp",
                "--recursive",
                "--only-show-errors",
                str(built_stores["v2"]),
                s3_url + "/",
            ],
            env={**os.environ, **s3.env()},
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert out.returncode == 0, out.stderr
        checked(hm)
        assert hm.predict_versioned(wine.x[:1]).version == "v2"


def test_wrong_credentials_are_a_clear_error(
    s3: Any, s3_url: str, tmp_path: Path, versions: Versions
) -> None:
    with open_source(s3_url) as source:
        publish(source, versions.make("v1", "v1"))
    bad = {"access_key": s3.access_key, "secret_key": "not-the-secret"}
    with pytest.raises(SourceError, match="refused the credentials") as info:
        _hot(s3_url, tmp_path, source_options=bad).start()
    assert info.value.status in ("SignatureDoesNotMatch", "AccessDenied")
    with pytest.raises(SourceError, match="refused the credentials"):
        _hot(s3_url, tmp_path, source_options={"access_key": "nobody", "secret_key": "x"}).start()
    with pytest.raises(SourceError, match="does not exist"):
        _hot("s3://no-such-bucket/wine", tmp_path).start()


def test_server_stopped_mid_poll_and_restarted(
    tmp_path: Path,
    versions: Versions,
    wine: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.support.seaweed import start_seaweed

    caplog.set_level(logging.INFO, logger="reloader")
    server = start_seaweed(tmp_path / "weed", buckets=("models",))
    try:
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        url = "s3://models/restart/wine"
        with open_source(url) as source:
            publish(source, versions.make("v1", "v1"))
        hm = _hot(url, tmp_path, poll_interval=0.1, max_backoff=0.4, source_options={"timeout": 2})
        with hm:
            assert hm.predict_versioned(wine.x[:1]).version == "v1"
            server.stop()
            wait_until(lambda: hm.info.failures >= 3, what="failed polls while S3 is down")
            assert "cannot reach the S3 endpoint" in (hm.info.last_error or "")
            assert hm.predict_versioned(wine.x[:1]).version == "v1"  # still serving
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            # One line from us, none from urllib3's retries (the agent does its own).
            assert len(warnings) == 1, [r.getMessage() for r in warnings]
            server.start()
            with open_source(url) as source:
                publish(source, versions.make("v2", "v2"))
            wait_until(lambda: hm.info.pending_version == "v2" or hm.info.version == "v2")
            assert hm.predict_versioned(wine.x[:1]).version == "v2"
            assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        server.stop()
