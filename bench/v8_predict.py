"""Rows/s of the V8 fast path (each kernel), the JSON path and numpy on the same weights.

    python bench/v8_predict.py [--seconds 1.0] [--batches 1,16,256,4096] [--json out.json]

numpy runs the same network (standardization, Dense layers, softmax) from the same TF.js weight
files; it is the ceiling for a small dense model on this machine. Ratios: V8 rows/s / numpy rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROUNDS = 7
KERNELS = ("auto", "dense-js", "tfjs-cpu")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.bundle import EXAMPLES, build_bundle, bundle_path
from model.data import load_wine_csv
from reloader.runtime import ModelRuntime


class NumpyWine:
    """The example network in numpy, from the TF.js model files (float32 throughout)."""

    def __init__(self, model_dir: Path) -> None:
        topo = json.loads((model_dir / "model.json").read_text())
        app = json.loads((model_dir / "app.json").read_text())
        raw = np.concatenate(
            [
                np.fromfile(model_dir / p, dtype=np.float32)
                for g in topo["weightsManifest"]
                for p in g["paths"]
            ]
        )
        weights, offset = {}, 0
        for g in topo["weightsManifest"]:
            for spec in g["weights"]:
                size = int(np.prod(spec["shape"]))
                weights[spec["name"]] = raw[offset : offset + size].reshape(spec["shape"])
                offset += size
        layers = topo["modelTopology"]["model_config"]["config"]["layers"]
        self.dense = [
            (
                weights[f"{c['config']['name']}/kernel"],
                weights[f"{c['config']['name']}/bias"],
                c["config"]["activation"],
            )
            for c in layers
            if c["class_name"] == "Dense"
        ]
        std = app["preprocess"]["standardize"]
        self.mean = np.asarray(std["mean"], np.float32)
        self.std = np.asarray(std["std"], np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = (x - self.mean) / self.std
        for w, b, act in self.dense:
            h = h @ w + b
            if act == "relu":
                np.maximum(h, 0, out=h)
            elif act == "softmax":
                h = np.exp(h - h.max(axis=1, keepdims=True))
                h /= h.sum(axis=1, keepdims=True)
        return h


def rates(fns: dict[str, Callable[[], object]], rows: int, seconds: float) -> dict[str, float]:
    """Rows/s of each function, measured side by side: rounds alternate between them and each keeps
    its best round, so a slow moment of the machine hits all of them alike."""
    reps = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        reps[name] = max(2, int(seconds / ROUNDS / once))
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / reps[name])
    return {name: rows / t for name, t in best.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="seconds per path and batch size (default 1.0)"
    )
    parser.add_argument("--batches", default="1,16,256,4096")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]

    _, _, x_all, _ = load_wine_csv()
    reference = NumpyWine(EXAMPLES / "v2")
    bundles = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kernel in KERNELS:
            build_bundle(EXAMPLES / "v2", Path(tmp) / kernel, kernel=kernel)
            bundles[kernel] = bundle_path(Path(tmp) / kernel).read_bytes()
    from importlib.metadata import version

    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}; python {platform.python_version()}, "
        f"numpy {np.__version__}, mini-racer {version('mini-racer')}"
    )
    print(
        f"bundle: wine v2, {len(bundles['auto']):,} bytes; fast path = kernel auto (dense-unrolled)"
    )
    names = ["fast", "dense-js", "tfjs-cpu", "json", "numpy"]
    print(
        f"{'batch':>6} "
        + " ".join(f"{n + ' rows/s':>16}" for n in names)
        + " "
        + " ".join(f"{n + '/numpy':>15}" for n in names[:-1])
    )
    results = []
    runtimes = {k: ModelRuntime(b) for k, b in bundles.items()}
    try:
        assert runtimes["auto"].meta.kernel == "dense-unrolled", runtimes["auto"].meta.kernel
        for b in batches:
            x = np.ascontiguousarray(np.resize(x_all.astype(np.float32), (b, x_all.shape[1])))
            records = x.tolist()
            for rt in runtimes.values():
                np.testing.assert_allclose(rt.predict(x), reference(x), atol=1e-5)
            fns: dict[str, Callable[[], object]] = {
                "fast": lambda x=x: runtimes["auto"].predict(x),
                "dense-js": lambda x=x: runtimes["dense-js"].predict(x),
                "tfjs-cpu": lambda x=x: runtimes["tfjs-cpu"].predict(x),
                "json": lambda r=records: runtimes["auto"].predict_records(r),
                "numpy": lambda x=x: reference(x),
            }
            r = rates(fns, b, args.seconds)
            row = {"batch": b, **{f"{n}_rows_s": r[n] for n in names}}
            row.update({f"{n}_vs_numpy": r[n] / r["numpy"] for n in names[:-1]})
            results.append(row)
            print(
                f"{b:>6} "
                + " ".join(f"{r[n]:>16,.0f}" for n in names)
                + " "
                + " ".join(f"{r[n] / r['numpy']:>15.3f}" for n in names[:-1])
            )
    finally:
        for rt in runtimes.values():
            rt.close()
    if args.json:
        args.json.write_text(
            json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), "rows": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
