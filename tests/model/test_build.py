"""The bundle build: store layout, manifest fields, reproducibility, clear errors."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from model.bundle import EXAMPLES, BuildError, build_bundle


def test_build_writes_the_store_layout(built_stores: dict[str, Path]) -> None:
    store = built_stores["v2"]
    manifest = json.loads((store / "version.json").read_text())
    assert set(manifest) == {"format", "model", "version", "bundle", "sha256", "size", "created"}
    assert manifest["format"] == 1 and manifest["model"] == "wine" and manifest["version"] == "v2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["created"])
    data = (store / manifest["bundle"]).read_bytes()
    assert manifest["bundle"] == f"bundles/{manifest['sha256']}.js"
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"] and len(data) == manifest["size"]
    assert sorted(p.name for p in store.iterdir()) == ["bundles", "version.json"]
    # Third-party licence notices travel with the library code; no Node-only modules are bundled.
    text = data.decode()
    assert "@license" in text and 'require("util")' not in text


def test_build_is_reproducible(tmp_path: Path, built_stores: dict[str, Path], monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a = build_bundle(EXAMPLES / "v2", tmp_path / "a")
    b = build_bundle(EXAMPLES / "v2", tmp_path / "b")
    assert a == b and a["created"] == "2023-11-14T22:13:20Z"
    assert a["sha256"] == json.loads((built_stores["v2"] / "version.json").read_text())["sha256"]


def test_version_label_override(tmp_path: Path) -> None:
    m = build_bundle(EXAMPLES / "v1", tmp_path, version="2026-11-23.1", name="wine-canary")
    assert m["version"] == "2026-11-23.1" and m["model"] == "wine-canary"


def test_build_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"spec\.json not found in \S+ \(nor a legacy app\.json\)"):
        src = tmp_path / "noapp"
        shutil.copytree(EXAMPLES / "v2", src)
        (src / "app.json").unlink()
        build_bundle(src, tmp_path / "out")
    with pytest.raises(BuildError, match=r"not a TF\.js graph model \(needs modelTopology"):
        src = tmp_path / "notlayers"
        src.mkdir()
        (src / "model.json").write_text('{"format": "graph-model"}')
        shutil.copy(EXAMPLES / "v2" / "app.json", src)
        build_bundle(src, tmp_path / "out2")
    with pytest.raises(BuildError, match="selfTest needs"):
        src = tmp_path / "nost"
        shutil.copytree(EXAMPLES / "v2", src)
        app = json.loads((src / "app.json").read_text())
        app["selfTest"]["expected"] = []
        (src / "app.json").write_text(json.dumps(app))
        build_bundle(src, tmp_path / "out3")
    with pytest.raises(
        BuildError, match=r"\(2\): build: weight shard \S+\.bin named in .+ not found"
    ) as e:
        src = tmp_path / "noshard"
        shutil.copytree(EXAMPLES / "v2", src)
        for shard in src.glob("*.bin"):
            shard.unlink()
        build_bundle(src, tmp_path / "out4")
    assert "\n    at " not in str(e.value)  # one line, not a Node stack trace
    assert not (tmp_path / "out").exists()


def test_the_penguins_example_builds_with_its_checks(tmp_path: Path) -> None:
    # a project exported from Keras (model/train_penguins.py): hooks, a derived input, extras,
    # samples whose features training computed
    project = EXAMPLES.parent / "penguins"
    if not (project / "spec.json").exists():
        pytest.skip("model/examples/penguins is not there (make train writes it)")
    proc = subprocess.run(
        ["node", str(EXAMPLES.parent.parent / "build.mjs"), str(project), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "skew max |delta|: 0 over" in proc.stdout, proc.stdout
