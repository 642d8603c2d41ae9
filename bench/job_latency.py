"""End-to-end latency of the prediction job at 1,000 records/s, per path and setting.

    python bench/job_latency.py [--quick] [--seconds 15] [--json OUT]

Each case runs `python -m job --source wine --rate 1000 --sink print ...` in its own process
(a local mini-cluster). The WINE source stamps every record with `created_ms` when it is
generated; this script stamps each output line when it reads it from the job's stdout (the print
sink). Latency = read time - created_ms: source, Python predict, sink, through Flink's network
buffers. The first 2 s of records (JIT and V8 warm-up) are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATE = 1000
FLINK_DEFAULTS = [
    "--bundle-time-ms", "1000", "--bundle-size", "100000",
    "--arrow-batch-size", "10000", "--buffer-timeout-ms", "100",
]  # fmt: skip
CASES: list[tuple[str, list[str]]] = [
    ("process (defaults: thread mode)", ["--api", "process"]),
    ("vectorized (defaults)", ["--api", "vectorized"]),
    ("record, row-at-a-time (defaults)", ["--api", "record"]),
    ("process, process mode", ["--api", "process", "--execution-mode", "process"]),
    ("vectorized, Flink's defaults", ["--api", "vectorized", *FLINK_DEFAULTS]),
]


def run_case(args: list[str], store: str, cache: str, records: int) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "job", "--model", store, "--cache-dir", cache, "--sink", "print",
        "--source", "wine", "--rate", str(RATE), "--records", str(records), *args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
    )
    assert proc.stdout is not None
    latencies: list[float] = []
    seen = 0
    for line in proc.stdout:
        now = time.time() * 1000
        start, end = line.find("{"), line.rfind("}")
        if start < 0:
            continue
        try:
            rec = json.loads(line[start : end + 1])
        except ValueError:
            continue
        seen += 1
        if rec.get("id", 0) >= 2 * RATE and "created_ms" in rec:
            latencies.append(now - rec["created_ms"])
    if proc.wait() != 0 or seen != records:
        raise RuntimeError(f"{' '.join(args)}: exit {proc.returncode}, {seen}/{records} outputs")
    latencies.sort()
    n = len(latencies)
    return {
        "p50_ms": latencies[n // 2],
        "p99_ms": latencies[min(n - 1, int(n * 0.99))],
        "max_ms": latencies[-1],
        "records": n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="6 s per case, default paths only")
    parser.add_argument("--seconds", type=float, help="seconds per case (default 15, quick 6)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    from model.bundle import EXAMPLES, build_bundle

    cases = CASES[:2] if args.quick else CASES
    records = int((args.seconds or (6 if args.quick else 15)) * RATE)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        os.environ.setdefault("FLINK_LOG_DIR", str(Path(tmp) / "logs"))
        store = str(Path(tmp) / "store")
        build_bundle(EXAMPLES / "v2", store)
        for name, case_args in cases:
            results[name] = run_case(case_args, store, str(Path(tmp) / "cache"), records)
            r = results[name]
            print(f"  {name:<36} p50 {r['p50_ms']:6.1f}  p99 {r['p99_ms']:6.1f}  "
                  f"max {r['max_ms']:6.1f} ms", flush=True)  # fmt: skip
    print(f"\nJob latency at {RATE} records/s, source to sink ({os.cpu_count()} cores)")
    print("| path / settings | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |")
    best = min(results[n]["p99_ms"] for n, _ in CASES[:2])
    print(f"\nbest default path p99: {best:.1f} ms (goal <= 50 ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
