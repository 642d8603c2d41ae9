"""Bundles built by the previous builder still load, serve and take a rollback: stores hold them.

The previous builder is the one on main before the spec (issue 14), taken from the repository's
history and run against today's node_modules (the same locked TF.js and esbuild)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.bundle import EXAMPLES, MODEL_DIR, build_bundle, bundle_path
from reloader.agent import HotModel
from reloader.manifest import Manifest
from reloader.runtime import ModelRuntime
from reloader.sources import open_source
from tests.support.stores import Version, publish
from tests.support.waiting import checked

PREVIOUS = "66846a1f10d123a34dd9c81428f81fcc6ada1540"  # main at the end of issue 13
REPO = MODEL_DIR.parent


@pytest.fixture(scope="module")
def old_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("needs the repository's git history (not a git checkout)")
    known = subprocess.run([git, "cat-file", "-e", f"{PREVIOUS}^{{commit}}"], cwd=REPO)
    if known.returncode != 0:
        pytest.skip(f"the previous builder's commit {PREVIOUS[:7]} is not in this (shallow?) clone")
    tmp = tmp_path_factory.mktemp("old-builder")
    archive = subprocess.run(
        [git, "archive", PREVIOUS, "model/build.mjs", "model/src", "model/package.json"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
    (tmp / "model" / "node_modules").symlink_to(MODEL_DIR / "node_modules")
    build_bundle(EXAMPLES / "v2", tmp / "ensure-node-modules")  # npm ci if needed, once
    store = tmp / "store"
    subprocess.run(
        ["node", str(tmp / "model" / "build.mjs"), str(EXAMPLES / "v2"), str(store)],
        check=True,
        capture_output=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": "0"},
    )
    return store


def test_an_old_bundle_loads_and_predicts(old_store: Path, wine: Any) -> None:
    old = bundle_path(old_store).read_bytes()
    assert b"predictColumns" not in old  # really the previous builder's output
    with ModelRuntime(old) as rt:
        assert rt.meta.contract == 1 and rt.columns is None
        got = rt.predict(wine.x)
    np.testing.assert_allclose(got, wine.reference("v2")["outputs"], atol=1e-5)


def test_rollback_from_a_new_bundle_to_an_old_one(
    old_store: Path, built_stores: dict[str, Path], tmp_path: Path, wine: Any
) -> None:
    old = bundle_path(old_store).read_bytes()
    new = bundle_path(built_stores["v1"]).read_bytes()
    store = tmp_path / "store"
    with open_source(str(store)) as source:
        publish(source, Version(Manifest.for_bundle(old, model="wine", version="old"), old, "v2"))
        hm = HotModel(str(store), cache_dir=str(tmp_path / "cache"), poll_interval=3600)
        hm.start()
        try:
            assert hm.predict_versioned(wine.x[:1]).version == "old"
            publish(
                source, Version(Manifest.for_bundle(new, model="wine", version="new"), new, "v1")
            )
            checked(hm)  # built off the hot path; adopted at the next call
            assert hm.predict_versioned(wine.x[:1]).version == "new"
            # Rollback: point the manifest at the old bundle again.
            publish(
                source,
                Version(Manifest.for_bundle(old, model="wine", version="old-again"), old, "v2"),
            )
            checked(hm)
            got = hm.predict_versioned(wine.x)
        finally:
            hm.stop()
    assert got.version == "old-again"
    np.testing.assert_allclose(got.value, wine.reference("v2")["outputs"], atol=1e-5)
    assert json.loads((old_store / "version.json").read_text())["format"] == 1
