"""Fixtures of the reloader tests: versions, stores (local, HTTP process, SeaweedFS S3)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reloader.sources import Source, open_source
from tests.support.http_store import HttpStore


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def local(store_dir: Path) -> Iterator[Source]:
    with open_source(str(store_dir)) as source:
        yield source


@pytest.fixture
def http_store(tmp_path: Path) -> Iterator[HttpStore]:
    root = tmp_path / "http-root"
    root.mkdir()
    server = HttpStore(root, token="s3cret")
    yield server
    server.stop()


@pytest.fixture
def s3(s3_session: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's SeaweedFS, its AWS variables set for this test."""
    for k, v in s3_session.env().items():
        monkeypatch.setenv(k, v)
    return s3_session


_prefixes = iter(range(1_000_000))


@pytest.fixture
def s3_url(s3: Any) -> str:
    """A fresh store root in the `models` bucket."""
    return f"s3://models/t{next(_prefixes)}-{time.monotonic_ns()}/wine"
