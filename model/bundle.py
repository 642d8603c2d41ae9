"""Python wrapper around `model/build.mjs`: build a bundle into the store layout (docs/store.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

MODEL_DIR = Path(__file__).resolve().parent
EXAMPLES = MODEL_DIR / "examples" / "wine"


class BuildError(RuntimeError):
    """The bundle build failed; the message carries the builder's own error text."""


def ensure_node_modules() -> None:
    """Installs the locked JavaScript dependencies (`npm ci`) when they are not there yet or older
    than model/package.json or package-lock.json (the Makefile's rule)."""
    marker = MODEL_DIR / "node_modules" / ".package-lock.json"
    sources = (MODEL_DIR / "package.json", MODEL_DIR / "package-lock.json")
    if marker.exists() and all(marker.stat().st_mtime >= p.stat().st_mtime for p in sources):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError("npm is not on PATH; install Node.js >= 18 to build bundles")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=MODEL_DIR, check=True)


def build_bundle(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    version: str | None = None,
    name: str | None = None,
    kernel: str | None = None,
) -> dict[str, Any]:
    """Builds `model_dir` (a TF.js model + spec.json, or a legacy app.json; docs/model-spec.md)
    into `out_dir`; returns the manifest. The build checks the bundle before it writes anything;
    a failure raises `BuildError` with the builder's one-line message."""
    ensure_node_modules()
    node = shutil.which("node")
    if node is None:
        raise BuildError("node is not on PATH; install Node.js >= 18 to build bundles")
    cmd = [node, str(MODEL_DIR / "build.mjs"), str(model_dir), str(out_dir)]
    if version:
        cmd += ["--version", version]
    if name:
        cmd += ["--name", name]
    if kernel:
        cmd += ["--kernel", kernel]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(
            f"bundle build failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
    manifest: dict[str, Any] = json.loads((Path(out_dir) / "version.json").read_text())
    return manifest


def bundle_path(store_dir: str | Path) -> Path:
    """The bundle file the store's version.json points at."""
    store = Path(store_dir)
    manifest = json.loads((store / "version.json").read_text())
    return store / str(manifest["bundle"])
