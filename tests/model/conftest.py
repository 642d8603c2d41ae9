"""Spec projects built into bundles: the committed typed fixture (once per session) and a
`build_spec` helper for projects written into a test's tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from model.bundle import build_bundle, bundle_path
from tests.support.js_bundle import JsBundle

FIXTURES = Path(__file__).resolve().parent / "fixtures"

BuildSpec = Callable[[Path], bytes]


@pytest.fixture(scope="session")
def typed_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("typed")
    build_bundle(FIXTURES / "typed", out)
    return bundle_path(out).read_bytes()


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
        store = tmp_path / f"store{count}"
        build_bundle(project, store)
        return bundle_path(store).read_bytes()

    return build
