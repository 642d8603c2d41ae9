"""What a model costs before it serves: build time, bundle size and `check`'s time, per model.

    python bench/models.py [--rounds 3] [--json out.json]

Models: the committed example projects (WINE v2 from a legacy app.json, the penguins from a spec
with a hook) and the typed test fixture (every input type). Per model, best of `--rounds`:

- build: `model/build.mjs` end to end (esbuild, then the checks in a bare `node:vm`: self-test
  on both paths, train/serve skew, hooks), as `make bundle` runs it;
- bundle: the bundle's bytes (TF.js runtime + model + weights + pre-processing);
- check: `reloader.load.check` on the built directory, as `python -m reloader check` runs it:
  manifest, download, the trial build in a child process, build, self-test, warm-up, skew. The
  first call per bundle (a process runs a bundle's trial once); `check_cli_s` is the whole
  command's wall time, Python's start-up included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.bundle import MODEL_DIR, build_bundle
from reloader.load import check

MODELS = {
    "wine": MODEL_DIR / "examples" / "wine" / "v2",
    "penguins": MODEL_DIR / "examples" / "penguins",
    "typed": ROOT / "tests" / "model" / "fixtures" / "typed",
}


def measure(name: str, project: Path, tmp: Path, rounds: int) -> dict[str, Any]:
    builds, checks, cli = [], [], []
    manifest: dict[str, Any] = {}
    report = None
    for r in range(rounds):
        store = tmp / f"{name}-{r}"
        t0 = time.perf_counter()
        manifest = build_bundle(project, store)
        builds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        report = check(str(store))
        checks.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "reloader", "check", str(store)],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        cli.append(time.perf_counter() - t0)
    assert report is not None
    return {
        "model": name,
        "build_s": min(builds),
        "bundle_bytes": int(manifest["size"]),
        "check_s": checks[0],
        "check_cli_s": min(cli),
        "kernel": report.meta.kernel,
        "contract": report.meta.contract,
        "features": len((report.meta.schema or {}).get("features") or report.meta.inputs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="best of this many (3)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    rows = []
    head = ("model", "contract", "kernel", "bundle KB", "build s", "check s", "command s")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (9, 8, 15, 10, 8, 8, 10), strict=True)))
    with tempfile.TemporaryDirectory() as tmp:
        for name, project in MODELS.items():
            row = measure(name, project, Path(tmp), args.rounds)
            rows.append(row)
            print(
                f"{name:>9} {row['contract']:>8} {row['kernel']:>15} "
                f"{row['bundle_bytes'] / 1024:>10.0f} {row['build_s']:>8.2f} "
                f"{row['check_s']:>8.2f} {row['check_cli_s']:>10.2f}"
            )
    if args.json:
        args.json.write_text(json.dumps({"models": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
