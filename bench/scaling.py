"""Records/s at parallelism 1 and 2 on a standalone cluster (`pyflink/bin/start-cluster.sh`), per
path and cluster layout: which configuration scales on this machine.

    python bench/scaling.py [--quick] [--records N] [--json OUT]

Each layout is a real standalone cluster (JobManager and TaskManager processes) on this machine;
the job is `python -m job --source wine --rate 0 --sink blackhole` submitted with `flink run`,
once at p=1 and once at p=2, each on a fresh cluster (a thread-mode TaskManager cannot host a
second Python job: docs/deploy.md). The figure is the steady
pace of the source (its numRecordsOut between 20% and 90% of the input, from the REST API), as in
`bench/job_throughput.py`.

Layouts:
    1 TaskManager x 2 slots      one JVM: thread mode runs every subtask's Python in the one
                                 interpreter of that JVM (one GIL)
    2 TaskManagers x 1 slot      one JVM, and so one interpreter, per subtask
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (name, TaskManagers, slots each)
LAYOUTS = [("1 TM x 2 slots", 1, 2), ("2 TMs x 1 slot", 2, 1)]
# (name, job arguments)
PATHS = [
    ("process path, thread mode", ["--api", "process", "--execution-mode", "thread"]),
    ("process path, process mode", ["--api", "process", "--execution-mode", "process"]),
    ("vectorized (process mode)", ["--api", "vectorized"]),
    ("vectorized, --batching throughput", ["--api", "vectorized", "--batching", "throughput"]),
]
# Records per job are this many times --records for a path, so that each spends about as long
# in the steady window.
RECORDS_FACTOR = {"vectorized, --batching throughput": 4}


def measure(
    cluster: Any, store: str, cache: str, args: list[str], p: int, records: int
) -> tuple[float, float]:
    """(records/s, cores busy) in the steady window of one job."""
    from bench.job_throughput import steady_rate
    from tests.support.flink import rest_get

    job_id = cluster.submit_python(
        ROOT / "job" / "__main__.py",
        ["--model", store, "--cache-dir", cache, "--source", "wine", "--rate", "0",
         "--records", str(records), "--sink", "blackhole", "--parallelism", str(p),
         "--poll-interval", "60", *args],
    )  # fmt: skip

    def cpu_seconds() -> float:
        """CPU time of the cluster's processes and their children (the Python workers)."""
        total = 0.0
        for proc in cluster.processes():
            for p in (proc, *proc.children(recursive=True)):
                try:
                    t = p.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                total += t.user + t.system
        return total

    try:
        out: dict[str, float] = {}
        rate = steady_rate(cluster.rest, job_id, records, probe=cpu_seconds, out=out)
        return rate, out["probe_per_s"]
    except RuntimeError:
        failure = rest_get(cluster.rest, f"/jobs/{job_id}/exceptions").get("root-exception")
        print(f"job {job_id}: {cluster.job_state(job_id)}\n{failure}\n{cluster.log_tail()}")
        raise


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer records, the 2-TM layout")
    parser.add_argument("--records", type=int, default=0, help="records per job")
    parser.add_argument("--paths", help="comma-separated path numbers (1-based) to run")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    from model.bundle import EXAMPLES, build_bundle
    from tests.support.flink import StandaloneFlink

    records = args.records or (150_000 if args.quick else 300_000)
    layouts = LAYOUTS[1:] if args.quick else LAYOUTS
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        store = str(Path(tmp) / "store")
        build_bundle(EXAMPLES / "v2", store)
        for name, tms, slots in layouts:
            chosen = (
                [int(i) - 1 for i in args.paths.split(",")] if args.paths else range(len(PATHS))
            )
            for path, job_args in [PATHS[i] for i in chosen]:
                rates, cores = {}, {}
                for p in (1, 2):
                    root = Path(tmp) / f"flink-{tms}x{slots}-{len(results)}-{p}"
                    with StandaloneFlink(root, slots=slots, taskmanagers=tms) as cluster:
                        cache = str(Path(tmp) / "cache")
                        n = records * RECORDS_FACTOR.get(path, 1)
                        rates[p], cores[p] = measure(cluster, store, cache, job_args, p, n)
                results.append(
                    {"layout": name, "path": path, "p1": rates[1], "p2": rates[2],
                     "cores_p1": cores[1], "cores_p2": cores[2]}
                )  # fmt: skip
                print(
                    f"  {name:<16} {path:<28} p=1 {rates[1]:>9,.0f}  p=2 {rates[2]:>9,.0f}"
                    f"  x{rates[2] / rates[1]:.2f}  cores busy {cores[1]:.2f} / {cores[2]:.2f}",
                    flush=True,
                )
    print(f"\nScaling on a standalone cluster ({os.cpu_count()} cores; records/s, steady pace)")
    print("| layout | path | p=1 | p=2 | p=2 / p=1 | cores busy p=1 / p=2 |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['layout']} | {r['path']} | {r['p1']:,.0f} | {r['p2']:,.0f} "
            f"| {r['p2'] / r['p1']:.2f} | {r['cores_p1']:.2f} / {r['cores_p2']:.2f} |"
        )
    best = max(results, key=lambda r: r["p2"] / r["p1"])
    summary = {
        "results": results,
        "best": {**best, "ratio": best["p2"] / best["p1"]},
    }
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
