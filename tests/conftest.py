"""Shared fixtures: real bundles built from the committed example models (once per session), a
real S3 server, and the train venv's interpreter."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.bundle import EXAMPLES, build_bundle, bundle_path
from model.data import load_wine_csv
from tests.support.stores import Versions

ROOT = Path(__file__).resolve().parents[1]


class WineData:
    def __init__(self) -> None:
        self.features, self.ids, x, self.y = load_wine_csv()
        self.x = x.astype(np.float32)
        self.records = [dict(zip(self.features, map(float, row), strict=False)) for row in x]

    def reference(self, version: str) -> dict[str, Any]:
        return json.loads((EXAMPLES / version / "reference.json").read_text())


@pytest.fixture(scope="session")
def wine() -> WineData:
    return WineData()


@pytest.fixture(scope="session")
def built_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stores")
    return {v: _build(root, v) for v in ("v1", "v2")}


def _build(root: Path, version: str) -> Path:
    build_bundle(EXAMPLES / version, root / version)
    return root / version


@pytest.fixture(scope="session")
def bundle_v1(built_stores: dict[str, Path]) -> bytes:
    return bundle_path(built_stores["v1"]).read_bytes()


@pytest.fixture(scope="session")
def bundle_v2(built_stores: dict[str, Path]) -> bytes:
    return bundle_path(built_stores["v2"]).read_bytes()


@pytest.fixture(scope="session")
def versions(bundle_v1: bytes, bundle_v2: bytes) -> Versions:
    """Cheap distinct versions to publish: the real v1/v2 bundles plus a unique comment."""
    return Versions({"v1": bundle_v1, "v2": bundle_v2})


@pytest.fixture(scope="session")
def train_python() -> Path:
    """The train venv's interpreter (TensorFlow, tensorflowjs): $TRAIN_PYTHON, else
    .venv-train/bin/python. Missing, the test is skipped; in CI, which must run the train path,
    it fails."""
    path = Path(os.environ.get("TRAIN_PYTHON", ROOT / ".venv-train" / "bin" / "python"))
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(
                f"TRAIN_PYTHON={path} missing: CI must run the train path (make setup-train)"
            )
        pytest.skip("train extra not installed: run `make setup-train`")
    return path


@pytest.fixture(scope="session")
def s3_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real SeaweedFS S3 server for the session (bucket `models`)."""
    from tests.support.seaweed import start_seaweed

    server = start_seaweed(tmp_path_factory.mktemp("seaweed"), buckets=("models",))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_worker_environment_leaks() -> Iterator[None]:
    """A job run in this process in PyFlink's local process mode runs its Python workers here,
    and they write their environment into this process's (PYFLINK_GATEWAY_DISABLED, JAVA_HOME,
    ...): a later test's `python -m job` subprocess inherited it and could not start its own
    gateway. Each test gets the environment back as it found it."""
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)
