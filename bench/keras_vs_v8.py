"""Rows/s of the V8 fast path beside Keras calling the same WINE v2 model, in one run.

    python bench/keras_vs_v8.py [--seconds 1.0 | --quick] [--batches 1,256] [--rounds 5]
                                [--json out.json]

(a) V8: `ModelRuntime(bundle).predict(x)`, x float32 [batch, 13] of raw features; the bundle
    (default kernel, built from model/examples/wine/v2) standardizes inside V8.
(b) Keras: `model(x, training=False).numpy()`, an eager call as a Python UDF would make, on the
    model loaded from the same committed TF.js files (model.json + weight shard) with tf_keras, fed
    the same rows standardized in numpy first (outside the timing), as Keras was trained.

TensorFlow is not in the project's venv, so Keras runs in ONE persistent worker: this same file
with `--worker`, under the train venv's python ($TRAIN_PYTHON, default .venv-train/bin/python),
speaking JSON lines over stdin/stdout. Rounds alternate (V8 in this process, then Keras in the
worker; only one side runs at a time) and each keeps its best round, so a slow moment of the machine
hits both alike. Before timing, both outputs on all 178 WINE rows must agree within 1e-5. Without a
usable train venv the run is skipped with the reason printed (and written with --json).

What bounds each figure:
- V8, batch 1: one Python -> V8 round trip (mini-racer `eval`), 35-85 us on a 2-core EPYC
  depending on the run; the kernel is noise.
- V8, batch 256: the generated straight-line JavaScript kernel (dense-unrolled) itself.
- Keras, batch 1: eager dispatch, ~370 us a call there: numpy -> tensor conversion, Keras'
  `__call__` machinery and one TF op launch per op, for a model of 275 weights.
- Keras, batch 256: still mostly that fixed per-call cost (~490 us a call); the matmuls are tiny.
  TF uses its own intra-op thread pool (all cores), V8 one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL_DIR = ROOT / "model" / "examples" / "wine" / "v2"
DEFAULT_TRAIN_PYTHON = ROOT / ".venv-train" / "bin" / "python"
TOLERANCE = 1e-5
WORKER_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "CUDA_VISIBLE_DEVICES": "",
    # tensorflowjs' Keras loader builds Keras 2 (tf_keras) models; TF 2.19 defaults to Keras 3.
    "TF_USE_LEGACY_KERAS": "1",
    "PYTHONUNBUFFERED": "1",
}
READY_TIMEOUT = 180.0  # TensorFlow import + model load in the worker


def timed(fn: Callable[[], Any], seconds: float) -> tuple[int, float, Any]:
    """Calls `fn` until `seconds` have passed; returns (calls, elapsed, last result)."""
    n = 0
    t0 = time.perf_counter()
    while True:
        out = fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n, elapsed, out


# -- the worker (train venv: TensorFlow, tf_keras, tensorflowjs; no mini-racer) -------------------


def _load_keras(model_dir: Path) -> tuple[Any, str]:
    """The TF.js layers model as a tf_keras model, by tensorflowjs' own loader (the train extra
    pins it; without it the worker fails to start and the benchmark says so)."""
    import tensorflowjs as tfjs

    model = tfjs.converters.load_keras_model(str(model_dir / "model.json"))
    return model, f"tensorflowjs {tfjs.__version__} converters.load_keras_model"


def worker(model_dir: Path) -> int:
    """JSON lines on stdin -> JSON lines on stdout; exits when stdin closes."""
    # Anything TensorFlow or its plugins print (C++ or Python) goes to stderr; the protocol gets a
    # private copy of the original stdout.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(msg: dict[str, Any]) -> None:
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    for k, v in WORKER_ENV.items():
        os.environ.setdefault(k, v)
    try:
        t0 = time.perf_counter()
        import tensorflow as tf
        import tf_keras

        t1 = time.perf_counter()
        model, how = _load_keras(model_dir)
        t2 = time.perf_counter()
    except Exception as e:
        send({"ok": False, "error": f"{type(e).__name__}: {e}"})
        return 1
    send(
        {
            "ok": True,
            "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__,
            "loaded_with": how,
            "import_s": t1 - t0,
            "load_s": t2 - t1,
        }
    )

    def call(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = model(x, training=False).numpy()
        return out

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            x = np.asarray(req["x"], dtype=np.float32)
            if req["op"] == "predict":
                send({"y": call(x).tolist()})
            elif req["op"] == "time":
                n, elapsed, y = timed(lambda x=x: call(x), float(req["seconds"]))
                send(
                    {
                        "rows_per_s": n * len(x) / elapsed,
                        "calls": n,
                        "elapsed": elapsed,
                        "checksum": float(np.sum(y, dtype=np.float64)),
                    }
                )
            else:
                send({"error": f"unknown op {req['op']!r}"})
        except Exception as e:
            send({"error": f"{type(e).__name__}: {e}"})
    return 0


# -- the main side (project venv: mini-racer, numpy) ----------------------------------------------


class WorkerError(RuntimeError):
    pass


class Worker:
    """The Keras worker process; `close()` always stops it."""

    def __init__(self, python: Path, model_dir: Path) -> None:
        # The worker's stderr (TensorFlow's start-up noise), kept for error messages; closed by
        # close().
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [python, Path(__file__).resolve(), "--worker", "--model-dir", model_dir],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.log,
                text=True,
                env={**os.environ, **WORKER_ENV},
                cwd=ROOT,
            )
        except BaseException:
            self.log.close()
            raise
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def log_tail(self, n: int = 6) -> str:
        self.log.flush()
        self.log.seek(0)
        lines = [ln.rstrip() for ln in self.log.read().splitlines() if ln.strip()]
        return "\n".join(lines[-n:]) or "(nothing)"

    def recv(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise WorkerError(f"no answer from the Keras worker within {timeout:.0f} s") from None
        if line is None:
            self.proc.wait(timeout=5)
            raise WorkerError(
                f"the Keras worker exited ({self.proc.returncode}); its stderr ends:\n"
                + self.log_tail()
            )
        msg: dict[str, Any] = json.loads(line)
        if "error" in msg:
            raise WorkerError(f"Keras worker: {msg['error']}")
        return msg

    def ask(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # recv() reports the exit and the worker's stderr
        return self.recv(timeout)

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=1) + "\n")


def run(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    from v8_predict import cpu_model

    from model.bundle import build_bundle, bundle_path
    from model.data import load_wine_csv
    from reloader.runtime import ModelRuntime

    t_start = time.perf_counter()
    batches = [int(b) for b in args.batches.split(",") if b]
    seconds = 0.3 if args.quick else args.seconds
    warm = min(0.25, seconds)
    machine = {"cores": os.cpu_count(), "cpu": cpu_model()}
    train_python = Path(os.environ.get("TRAIN_PYTHON", str(DEFAULT_TRAIN_PYTHON)))

    def skip(reason: str) -> int:
        print(f"skipped: {reason}")
        write_json(args.json, {"skipped": reason, "machine": machine})
        return 0

    if not train_python.exists():
        return skip(
            f"no train venv python at {train_python} (set TRAIN_PYTHON or `make setup-train`)"
        )

    # The worker imports TensorFlow while this process builds the bundle.
    try:
        wk = Worker(train_python, MODEL_DIR)
    except OSError as e:
        return skip(f"cannot start {train_python}: {e}")
    rt = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            build_bundle(MODEL_DIR, Path(tmp) / "v2")
            bundle = bundle_path(Path(tmp) / "v2").read_bytes()
        rt = ModelRuntime(bundle)
        try:
            ready = wk.recv(READY_TIMEOUT)
        except WorkerError as e:
            return skip(f"TensorFlow/Keras not usable under {train_python}: {e}")
        if not ready.get("ok"):
            return skip(f"TensorFlow/Keras not usable under {train_python}: {ready.get('error')}")

        app = json.loads((MODEL_DIR / "app.json").read_text())
        mean = np.asarray(app["preprocess"]["standardize"]["mean"], np.float64)
        std = np.asarray(app["preprocess"]["standardize"]["std"], np.float64)

        def standardized(x32: np.ndarray) -> np.ndarray:
            # What the bundle does in JavaScript: double precision from the float32 inputs, then
            # float32 (the same formula as model/train.py's standardize()).
            out: np.ndarray = ((x32.astype(np.float64) - mean) / std).astype(np.float32)
            return out

        _, _, x_all, _ = load_wine_csv()
        x_raw = x_all.astype(np.float32)
        y_v8 = rt.predict(x_raw)
        y_keras = np.asarray(
            wk.ask({"op": "predict", "x": standardized(x_raw).tolist()}, 60)["y"], np.float32
        )
        max_abs_diff = float(np.max(np.abs(y_v8 - y_keras)))
        if not max_abs_diff <= TOLERANCE:
            raise SystemExit(
                f"V8 and Keras disagree on the WINE rows: max |diff| {max_abs_diff:.3g} > "
                f"{TOLERANCE}"
            )

        from importlib.metadata import version

        print(
            f"machine: {machine['cores']} cores, {machine['cpu']}; python "
            f"{platform.python_version()}, mini-racer {version('mini-racer')}, kernel "
            f"{rt.meta.kernel}; TensorFlow {ready['tensorflow']}, tf_keras {ready['tf_keras']} "
            f"(import {ready['import_s']:.1f} s)"
        )
        print(f"keras model: {ready['loaded_with']}")
        print(f"outputs on {len(x_raw)} WINE rows: max |V8 - Keras| = {max_abs_diff:.2e}")

        xs = {b: np.ascontiguousarray(np.resize(x_raw, (b, x_raw.shape[1]))) for b in batches}
        xs_std = {b: standardized(x).tolist() for b, x in xs.items()}
        timeout = seconds + 60

        def v8_round(b: int, secs: float) -> tuple[float, float]:
            n, elapsed, y = timed(lambda x=xs[b]: rt.predict(x), secs)
            return n * b / elapsed, float(np.sum(y, dtype=np.float64))

        def keras_round(b: int, secs: float) -> tuple[float, float]:
            r = wk.ask({"op": "time", "x": xs_std[b], "seconds": secs}, timeout)
            return float(r["rows_per_s"]), float(r["checksum"])

        for b in batches:  # warm-up, not counted
            v8_round(b, warm)
            keras_round(b, warm)
        v8_best = dict.fromkeys(batches, 0.0)
        keras_best = dict.fromkeys(batches, 0.0)
        checks: dict[int, tuple[float, float]] = {}
        for _ in range(args.rounds):
            for b in batches:
                r_v8, c_v8 = v8_round(b, seconds)
                r_k, c_k = keras_round(b, seconds)
                v8_best[b] = max(v8_best[b], r_v8)
                keras_best[b] = max(keras_best[b], r_k)
                checks[b] = (c_v8, c_k)
        for b, (c_v8, c_k) in checks.items():
            if abs(c_v8 - c_k) > TOLERANCE * 3 * b:
                raise SystemExit(f"batch {b}: output checksums differ: V8 {c_v8} vs Keras {c_k}")

        print(f"{'batch':>6} {'V8 rows/s':>14} {'Keras rows/s':>14} {'V8/Keras':>9}")
        for b in batches:
            print(
                f"{b:>6} {v8_best[b]:>14,.0f} {keras_best[b]:>14,.0f} "
                f"{v8_best[b] / keras_best[b]:>9.2f}"
            )
        wall = time.perf_counter() - t_start
        print(
            f"{args.rounds} rounds x {seconds} s per side and batch, best round each; {wall:.1f} s"
        )
        write_json(
            args.json,
            {
                **{f"v8_vs_keras_b{b}": v8_best[b] / keras_best[b] for b in batches},
                "v8_rows_per_s": {str(b): v8_best[b] for b in batches},
                "keras_rows_per_s": {str(b): keras_best[b] for b in batches},
                "max_abs_diff": max_abs_diff,
                "tensorflow": ready["tensorflow"],
                "tf_keras": ready["tf_keras"],
                "keras_loaded_with": ready["loaded_with"],
                "v8_kernel": rt.meta.kernel,
                "mini_racer": version("mini-racer"),
                "rounds": args.rounds,
                "seconds_per_round": seconds,
                "wall_s": wall,
                "machine": machine,
            },
        )
        return 0
    finally:
        if rt is not None:
            rt.close()
        wk.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="seconds per round, side and batch (default 1)"
    )
    parser.add_argument("--quick", action="store_true", help="0.3 s per round")
    parser.add_argument("--batches", default="1,256", help="comma-separated (default 1,256)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.model_dir)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
