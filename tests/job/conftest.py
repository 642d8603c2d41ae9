"""Fixtures for the job tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reloader.agent import HotModel
from reloader.sources import open_source
from tests.support.stores import Versions, publish


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, versions: Versions) -> Iterator[HotModel]:
    """A started `HotModel` serving version "7" (the v2 weights) from a local store."""
    root = tmp_path_factory.mktemp("scoring")
    with open_source(str(root / "store")) as source:
        publish(source, versions.make("7", "v2"))
    hm = HotModel(str(root / "store"), cache_dir=str(root / "cache"), poll_interval=3600)
    hm.start()
    yield hm
    hm.stop()
