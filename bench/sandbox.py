"""What a trial build in a child process adds to publish -> serve, for the WINE bundle.

    python bench/sandbox.py [--runs 10] [--json out.json]

Per run, on the agent's path for a bundle hash not tried before:
- in-process: `ModelRuntime(bundle)` (evaluation, init, self-test) + `warm_up` (256 rows x 64
  calls), what the agent does today;
- trial: `trial_build(bundle)`: child start-up, imports, the same build, self-test and warm-up,
  verdict, exit (reported apart: the child's own build time, and start-up + tear-down);
- with trial: trial + in-process, what publish -> serve costs once the trial is wired in.
Medians (and min/max) over `--runs`. For scale: a bare `python -c pass` and a child that imports
`reloader.runtime`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from v8_predict import cpu_model

from model.bundle import EXAMPLES, build_bundle, bundle_path
from reloader.runtime import ModelRuntime
from reloader.sandbox import trial_build


def _in_process(bundle: bytes) -> float:
    t0 = time.perf_counter()
    runtime = ModelRuntime(bundle)
    try:
        runtime.warm_up(rows=256, calls=64)
    finally:
        runtime.close()
    return time.perf_counter() - t0


def _child(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-s", "-c", code], check=True, cwd=ROOT)
    return time.perf_counter() - t0


def _stats(xs: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(xs) * 1e3,
        "min_ms": min(xs) * 1e3,
        "max_ms": max(xs) * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="runs per figure (default 10)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        build_bundle(EXAMPLES / "v2", Path(tmp) / "v2")
        bundle = bundle_path(Path(tmp) / "v2").read_bytes()
    _in_process(bundle)  # V8 initialized in this process, as it is in a serving job

    runs: dict[str, list[float]] = {
        k: [] for k in ("in_process", "trial", "trial_build_in_child", "trial_overhead", "peak_rss")
    }
    for _ in range(args.runs):
        runs["in_process"].append(_in_process(bundle))
        report = trial_build(bundle)
        runs["trial"].append(report.seconds)
        runs["trial_build_in_child"].append(report.build_seconds)
        runs["trial_overhead"].append(report.seconds - report.build_seconds)
        runs["peak_rss"].append(report.peak_rss)
    bare: Callable[[], float] = lambda: _child("pass")  # noqa: E731
    imports: Callable[[], float] = lambda: _child("import reloader.runtime")  # noqa: E731
    scale = {"python -c pass": [bare() for _ in range(args.runs)]}
    scale["python -c 'import reloader.runtime'"] = [imports() for _ in range(args.runs)]

    with_trial = [a + b for a, b in zip(runs["in_process"], runs["trial"], strict=True)]
    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {cpu_model()}",
        "bundle_bytes": len(bundle),
        "runs": args.runs,
        "in_process": _stats(runs["in_process"]),
        "trial": _stats(runs["trial"]),
        "trial_build_in_child": _stats(runs["trial_build_in_child"]),
        "trial_startup_and_teardown": _stats(runs["trial_overhead"]),
        "publish_to_serve_with_trial": _stats(with_trial),
        "trial_peak_rss_mb": statistics.median(runs["peak_rss"]) / 2**20,
        "scale": {k: _stats(v) for k, v in scale.items()},
    }
    print(f"machine: {result['machine']}; WINE v2 bundle, {len(bundle):,} bytes; {args.runs} runs")
    rows = [
        ("in-process build + self-test + warm-up", result["in_process"]),
        ("trial_build (whole child)", result["trial"]),
        ("  of which build + self-test + warm-up", result["trial_build_in_child"]),
        ("  of which start-up, imports, exit", result["trial_startup_and_teardown"]),
        ("publish -> serve work with the trial", result["publish_to_serve_with_trial"]),
    ] + [(f"scale: {k}", v) for k, v in result["scale"].items()]
    for name, s in rows:
        print(
            f"{name:44} median {s['median_ms']:7.1f} ms  "
            f"(min {s['min_ms']:.1f}, max {s['max_ms']:.1f})"
        )
    print(f"trial peak RSS (median): {result['trial_peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
