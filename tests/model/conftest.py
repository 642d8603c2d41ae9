"""Spec projects built into bundles: the committed typed fixture (once per session) and a
`build_spec` fixture for projects written into a test's tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.js_bundle import JsBundle
from tests.support.spec_projects import TYPED_FIXTURE, BuildSpec, built_bundle


@pytest.fixture(scope="session")
def typed_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return built_bundle(TYPED_FIXTURE, tmp_path_factory.mktemp("typed"))


@pytest.fixture
def typed(typed_bundle: bytes) -> Iterator[JsBundle]:
    with JsBundle(typed_bundle) as b:
        yield b


@pytest.fixture
def build_spec(tmp_path: Path) -> BuildSpec:
    """Builds a project dir into a fresh store under tmp_path; returns the bundle's bytes."""
    count = 0

    def build(project: Path) -> bytes:
        nonlocal count
        count += 1
        return built_bundle(project, tmp_path / f"store{count}")

    return build
