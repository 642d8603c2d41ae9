"""Rows/s of the fast path on every model of the zoo beside numpy running the same network.

    python bench/zoo.py [--seconds 0.15] [--batches 256,4096] [--only a,b] [--kernel K]
                        [--json out.json]

The zoo (`model/examples/zoo`, `model/zoo.py`) has one small Keras model per activation and layer
type the generated kernels cover, and two they do not. Per model: the bundle's size and build time,
its kernel, and at each batch size the fast path's rows/s (`ModelRuntime.predict`; the bundle's own
kernel, or the one --kernel pins, which skips the models it does not apply to) and numpy's on the
same weights, side by side (rounds alternate, each keeps its best).

numpy (on one core, as V8) reads the weights from the TF.js shard and model.json and computes layer
by layer in float32, BatchNormalization as Keras does (x * inv + shift), GELU's erf by
Abramowitz-Stegun 7.1.26 (1.5e-7).
Before timing, the fast path and numpy must both reproduce Keras' outputs (reference.json) within
1e-5. The two models the kernels do not cover (a Conv1D, two branches) run TF.js' CPU backend; they
have no numpy twin here and are listed without a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# numpy on one core, as the fast path runs on one: OpenBLAS' threads on a shared 2-core machine made
# numpy's rows/s at batch 4,096 swing by 20x between runs.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from v8_predict import cpu_model, rates

from model.bundle import MODEL_DIR, build_bundle, bundle_path
from reloader.errors import BundleError
from reloader.runtime import ModelRuntime

ZOO = MODEL_DIR / "examples" / "zoo"
TOLERANCE = 1e-5
Array = npt.NDArray[Any]
Op = Callable[[Array], Array]


def _erf(x: Array) -> Array:
    # Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7: what TF.js' CPU backend uses too.
    s = np.sign(x)
    a = np.abs(x)
    t = np.float32(1) / (np.float32(1) + np.float32(0.3275911) * a)
    p = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return (s * (1 - p * np.exp(-a * a))).astype(np.float32)


def _sigmoid(x: Array) -> Array:
    return np.float32(1) / (np.float32(1) + np.exp(-x))


def _softplus(x: Array) -> Array:
    return np.logaddexp(np.float32(0), x)


def _softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


SELU_ALPHA, SELU_SCALE = np.float32(1.6732632423543772), np.float32(1.0507009873554805)
ACTIVATIONS: dict[str, Op] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0, out=x),
    "relu6": lambda x: np.clip(x, 0, 6, out=x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
    "sigmoid": _sigmoid,
    "hard_sigmoid": lambda x: np.clip(np.float32(0.2) * x + np.float32(0.5), 0, 1),
    "tanh": np.tanh,
    "softplus": _softplus,
    "softsign": lambda x: x / (1 + np.abs(x)),
    "swish": lambda x: x * _sigmoid(x),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "gelu": lambda x: np.float32(0.5) * x * (1 + _erf(x * np.float32(0.7071067811865476))),
    "softmax": _softmax,
    "log_softmax": lambda x: (
        x
        - x.max(axis=1, keepdims=True)
        - np.log(np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True))
    ),
}
IDENTITY = {"InputLayer", "Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout"}


class NumpyNet:
    """The zoo model in `model_dir` as numpy float32 ops, from the TF.js files; raises
    NotImplementedError for a layer it does not know (the kernels' fallbacks)."""

    def __init__(self, model_dir: Path) -> None:
        topo = json.loads((model_dir / "model.json").read_text())
        app = json.loads((model_dir / "app.json").read_text())
        raw = np.concatenate(
            [
                np.fromfile(model_dir / p, dtype=np.uint8)
                for g in topo["weightsManifest"]
                for p in g["paths"]
            ]
        )
        weights: dict[str, Array] = {}
        offset = 0
        for g in topo["weightsManifest"]:
            for spec in g["weights"]:
                size = int(np.prod(spec["shape"])) * 4
                weights[spec["name"]] = (
                    raw[offset : offset + size].view(np.float32).reshape(spec["shape"])
                )
                offset += size
        layers = topo["modelTopology"]["model_config"]["config"]["layers"]
        self.ops = [op for c in layers for op in self._ops(c["class_name"], c["config"], weights)]
        std = app.get("preprocess", {}).get("standardize")
        self.standardize: tuple[Array, Array] | None = (
            (np.asarray(std["mean"], np.float32), np.asarray(std["std"], np.float32))
            if std
            else None
        )

    @staticmethod
    def _ops(cls: str, config: dict[str, Any], weights: dict[str, Array]) -> list[Op]:
        name = config["name"]
        w = {k.split("/", 1)[1]: v for k, v in weights.items() if k.startswith(name + "/")}
        if cls in IDENTITY:
            return []
        if cls == "Dense":
            kernel, bias = w["kernel"], w.get("bias", np.float32(0))
            return [lambda x: x @ kernel + bias, ACTIVATIONS[config["activation"]]]
        if cls == "Activation":
            return [ACTIVATIONS[config["activation"]]]
        if cls == "ReLU":
            top = config.get("max_value")
            return [lambda x: np.clip(x, 0, top) if top is not None else np.maximum(x, 0)]
        if cls == "LeakyReLU":
            alpha = np.float32(config["alpha"])
            return [lambda x: np.where(x > 0, x, alpha * x)]
        if cls == "PReLU":
            a = w["alpha"]
            return [lambda x: np.where(x > 0, x, a * x)]
        if cls == "ELU":
            return [ACTIVATIONS["elu"]]
        if cls == "ThresholdedReLU":
            theta = np.float32(config["theta"])
            return [lambda x: np.where(x > theta, x, np.float32(0))]
        if cls == "Softmax":
            return [_softmax]
        if cls == "BatchNormalization":
            eps = np.float32(config["epsilon"])
            inv = np.float32(1) / np.sqrt(w["moving_variance"] + eps)
            if "gamma" in w:
                inv = inv * w["gamma"]
            shift = w.get("beta", np.float32(0)) - w["moving_mean"] * inv
            return [lambda x: x * inv + shift]
        raise NotImplementedError(f'layer "{name}" ({cls})')

    def __call__(self, x: Array) -> Array:
        h = x
        if self.standardize is not None:
            mean, std = self.standardize
            h = (x - mean) / std
        for op in self.ops:
            h = op(h)
        return h


class DoesNotApply(Exception):
    """The pinned kernel does not apply to this model."""


def bench_one(
    model_dir: Path, store: Path, batches: list[int], seconds: float, kernel: str | None = None
) -> dict[str, Any]:
    ref = json.loads((model_dir / "reference.json").read_text())
    x_ref = np.asarray(ref["inputs"], np.float32)
    keras = np.asarray(ref["outputs"], np.float32)
    t0 = time.perf_counter()
    manifest = build_bundle(model_dir, store, kernel=kernel)
    build_s = time.perf_counter() - t0
    try:
        net: NumpyNet | None = NumpyNet(model_dir)
    except NotImplementedError:
        net = None
    row: dict[str, Any] = {"model": model_dir.name, "bundle_bytes": manifest["size"],
                           "build_s": build_s, "batches": {}}  # fmt: skip
    try:
        rt = ModelRuntime(bundle_path(store).read_bytes())
    except BundleError as e:
        if "does not apply" in str(e):
            raise DoesNotApply(str(e)) from e
        raise
    with rt:
        row["kernel"] = rt.meta.kernel
        row["fast_vs_keras"] = float(np.abs(rt.predict(x_ref) - keras).max())
        assert row["fast_vs_keras"] <= TOLERANCE, (model_dir.name, row["fast_vs_keras"])
        if net is not None:
            row["numpy_vs_keras"] = float(np.abs(net(x_ref) - keras).max())
            assert row["numpy_vs_keras"] <= TOLERANCE, (model_dir.name, row["numpy_vs_keras"])
        for b in batches:
            x = np.ascontiguousarray(np.resize(x_ref, (b, x_ref.shape[1])))
            fns: dict[str, Callable[[], object]] = {"fast": lambda x=x: rt.predict(x)}
            if net is not None:
                fns["numpy"] = lambda x=x: net(x)
            r = rates(fns, b, seconds)
            row["batches"][str(b)] = {
                "fast_rows_s": r["fast"],
                "numpy_rows_s": r.get("numpy"),
                "fast_vs_numpy": r["fast"] / r["numpy"] if "numpy" in r else None,
            }
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=0.15,
                        help="seconds per path, model and batch size (default 0.15)")  # fmt: skip
    parser.add_argument("--batches", default="256,4096")
    parser.add_argument("--only", default="", help="comma-separated zoo models (default: all)")
    parser.add_argument(
        "--kernel", choices=["dense-unrolled", "dense-js"], help="pin the fast path's kernel"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    names = [n for n in args.only.split(",") if n] or sorted(
        p.parent.name for p in ZOO.glob("*/reference.json")
    )
    print(f"machine: {cpu_model()}; zoo: {len(names)} models from {ZOO}")
    head = " ".join(f"{'b' + str(b) + ' fast/s':>14} {'numpy/s':>12} {'ratio':>6}" for b in batches)
    print(f"{'model':24} {'kernel':15} {'bytes':>9} {'build s':>7} {head}")
    rows = []
    failed: dict[str, str] = {}
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        for name in names:
            try:
                row = bench_one(ZOO / name, Path(tmp) / name, batches, args.seconds, args.kernel)
            except DoesNotApply:
                skipped.append(name)
                print(f"{name:24} skipped: {args.kernel} does not apply", flush=True)
                continue
            except Exception as e:  # one broken model must not hide the others' figures
                failed[name] = str(e).splitlines()[0][:300]
                print(f"{name:24} FAILED: {failed[name]}", flush=True)
                continue
            rows.append(row)
            cells = []
            for b in batches:
                r = row["batches"][str(b)]
                ratio = f"{r['fast_vs_numpy']:6.3f}" if r["fast_vs_numpy"] is not None else "     -"
                numpy = f"{r['numpy_rows_s']:12,.0f}" if r["numpy_rows_s"] else f"{'-':>12}"
                cells.append(f"{r['fast_rows_s']:14,.0f} {numpy} {ratio}")
            print(f"{name:24} {row['kernel']:15} {row['bundle_bytes']:9,} {row['build_s']:7.2f} "
                  + " ".join(cells), flush=True)  # fmt: skip
    covered = [r for r in rows if r["kernel"] != "tfjs-cpu"]
    summary: dict[str, Any] = {"cpu": cpu_model(), "batches": batches, "models": rows}
    summary["failed"] = failed
    summary["skipped"] = skipped
    for b in batches:
        ratios = {r["model"]: r["batches"][str(b)]["fast_vs_numpy"] for r in covered}
        if ratios:
            worst = min(ratios, key=lambda k: ratios[k])
            summary[f"min_vs_numpy_b{b}"] = ratios[worst]
            summary[f"min_vs_numpy_b{b}_model"] = worst
            summary[f"median_vs_numpy_b{b}"] = float(np.median(list(ratios.values())))
            print(f"batch {b}: lowest fast/numpy {ratios[worst]:.3f} ({worst})")
    if rows:
        summary["max_fast_vs_keras"] = max(r["fast_vs_keras"] for r in rows)
        print(f"max |fast - Keras| over the zoo: {summary['max_fast_vs_keras']:.3g}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
