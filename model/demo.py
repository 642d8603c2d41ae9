"""The model demo (`make run` until the streaming job lands).

Builds bundles from the committed examples v1 (weak) and v2 (good), replays the WINE rows as a
steady stream of micro-batches through v1 in V8, builds v2 off the serving thread midway, swaps it
in between two batches, and prints accuracy and throughput per version plus the swap's stall.

    python -m model.demo [--batch 16] [--rounds 40] [--rate 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from model.bundle import EXAMPLES, build_bundle, bundle_path
from model.train import load_wine_csv
from reloader.runtime import ModelRuntime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--batch", type=int, default=16, help="records per micro-batch (default 16)"
    )
    parser.add_argument(
        "--rounds", type=int, default=40, help="passes over the 178 WINE rows (default 40)"
    )
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="records per second replayed (default 2000)"
    )
    args = parser.parse_args(argv)

    _, ids, x, y = load_wine_csv()
    with tempfile.TemporaryDirectory(prefix="tf-on-flink-demo-") as tmp:
        stores = {}
        for version in ("v1", "v2"):
            t0 = time.perf_counter()
            manifest = build_bundle(EXAMPLES / version, Path(tmp) / version)
            stores[version] = bundle_path(Path(tmp) / version)
            print(
                f"built {version}: {manifest['size']:,} bytes sha256={manifest['sha256'][:12]}… "
                f"in {time.perf_counter() - t0:.2f} s"
            )

        current = ModelRuntime(stores["v1"].read_bytes())
        print(f"serving {current.meta.version} (kernel {current.meta.kernel})")
        ready: list[ModelRuntime] = []
        builder: threading.Thread | None = None
        order = np.tile(np.arange(len(y)), args.rounds)
        batches = [order[i : i + args.batch] for i in range(0, len(order), args.batch)]
        swap_at = len(batches) // 2
        correct: dict[str, int] = defaultdict(int)
        seen: dict[str, int] = defaultdict(int)
        busy: dict[str, float] = defaultdict(float)
        stall = None
        start = time.perf_counter()
        for i, idx in enumerate(batches):
            # A steady stream: wait for this batch's slot.
            delay = start + i * args.batch / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if i == swap_at and builder is None:
                # Build the new version on another thread, as the reloader does; serving goes
                # on meanwhile.
                def build() -> None:
                    ready.append(ModelRuntime(stores["v2"].read_bytes()))

                builder = threading.Thread(target=build, name="demo-builder")
                builder.start()
            if ready:
                t0 = time.perf_counter()
                old, current = current, ready.pop()
                old.close()
                stall = time.perf_counter() - t0
                print(
                    f"batch {i}: swapped to {current.meta.version} "
                    f"(stall {stall * 1e3:.2f} ms incl. close)"
                )
            t0 = time.perf_counter()
            probs = current.predict(x[idx])
            busy[current.meta.version] += time.perf_counter() - t0
            version = current.meta.version
            correct[version] += int((probs.argmax(axis=1) == y[idx]).sum())
            seen[version] += len(idx)
            if i % max(1, len(batches) // 8) == 0:
                print(
                    f"batch {i}: id {int(ids[idx[0]])} -> class_{int(probs[0].argmax())} "
                    f"(truth class_{int(y[idx[0]])}) by {version}"
                )
        if builder is not None:
            builder.join()
        current.close()

    print("\nversion  records  accuracy  predict rows/s")
    for version in sorted(seen):
        print(
            f"{version:7}  {seen[version]:7}  {correct[version] / seen[version]:8.4f}  "
            f"{seen[version] / busy[version]:14,.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
