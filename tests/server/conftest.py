"""Fixtures of the server tests: `python -m server` as a real process on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.http_store import ModelStoreServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ModelStoreServer]:
    s = ModelStoreServer(tmp_path / "store")
    yield s
    s.stop()
