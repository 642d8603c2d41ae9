"""End-to-end latency of the prediction job at 1,000 and 10,000 records/s, per path and setting.

    python bench/job_latency.py [--quick] [--seconds 8] [--rates 1000,10000] [--json OUT]

Each case runs the job in its own process (a local mini-cluster) with the WINE source at a steady
rate and the print sink: `python -m job --source wine --rate R --sink print ...` for the JSON
paths; for the typed path (the model as the SQL function, typed ROW out), which `python -m job`
runs from csv:/json: files only, this script builds the same query over the WINE source
(`--one-typed`). The source stamps every record with `created_ms` when it is generated; this script
stamps each output line when it reads it from the job's stdout (the print sink). Latency = read
time - created_ms: source, Python predict, sink, through Flink's network buffers.

The first half of each run is warm-up and left out: the JVM's JIT, V8, and the start's backlog.
While the job starts, the source is held back; its rate limiter then lets up to a second's worth
of records through at once, so at 10,000/s the job catches up for seconds at more than its rate.
The figures are the steady state after that.

The default paths run at every rate; the other settings (a baseline, a non-default mode, Flink's
own defaults) at the first rate only. The reader does nothing per line but keep it: it reads
64 KiB at a time, stamps the read and parses after the job ends, so at 10,000 lines/s it waits in
`read` almost all the time (`reader_busy`, the share of the run it spent elsewhere, is in the
JSON; a writer printing stamped lines at 10,000/s measures p99 < 1 ms through it).
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

RATES = (1000, 10000)
FLINK_DEFAULTS = [
    "--bundle-time-ms", "1000", "--bundle-size", "100000",
    "--arrow-batch-size", "10000", "--buffer-timeout-ms", "100",
]  # fmt: skip
TYPED = "--one-typed"  # the typed path: this script's own job (see `typed_job`)
# (name, args) on default settings: measured at every rate.
DEFAULT_CASES: list[tuple[str, list[str]]] = [
    ("process (defaults: thread mode)", ["--api", "process"]),
    ("vectorized (defaults)", ["--api", "vectorized"]),
    ("typed, the SQL function (defaults)", [TYPED]),
]
# The others: at the first rate only (`--quick`: none of them).
OTHER_CASES: list[tuple[str, list[str]]] = [
    ("record, row-at-a-time (defaults)", ["--api", "record"]),
    ("process, process mode", ["--api", "process", "--execution-mode", "process"]),
    ("vectorized, Flink's defaults", ["--api", "vectorized", *FLINK_DEFAULTS]),
]


def case_name(name: str, rate: int) -> str:
    """The result's name: at 1,000 records/s the case's own (the keys `bench/run.py` has always
    read), at another rate with the rate appended."""
    return name if rate == 1000 else f"{name} at {rate:,}/s"


def read_stamped(fd: int) -> tuple[list[tuple[float, bytes]], float]:
    """Every line of `fd` until EOF with the time (ms) the read that completed it returned, and
    the share of the time spent outside `read` (the reader's own cost)."""
    lines: list[tuple[float, bytes]] = []
    rest = b""
    busy = 0.0
    t_first = time.time()
    while True:
        chunk = os.read(fd, 1 << 16)
        t0 = time.time()
        if not chunk:
            break
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        now = t0 * 1000
        lines.extend((now, p) for p in parts)
        busy += time.time() - t0
    return lines, busy / max(time.time() - t_first, 1e-9)


def created(line: bytes) -> tuple[int, float] | None:
    """(id, created_ms) of a print-sink line: `+I[{json}]` from the JSON paths, `+I[id,
    created_ms, ...]` from the typed one; None for any other output."""
    start, end = line.find(b"{"), line.rfind(b"}")
    if line.startswith(b"+I[{") and end > start:
        try:
            rec = json.loads(line[start : end + 1])
        except ValueError:
            return None
        return (rec["id"], rec["created_ms"]) if "created_ms" in rec else None
    if line.startswith(b"+I["):
        fields = line[3:].split(b", ", 2)
        try:
            return int(fields[0]), float(fields[1])
        except (IndexError, ValueError):
            return None
    return None


def run_case(args: list[str], rate: int, store: str, cache: str, records: int) -> dict[str, Any]:
    common = ["--rate", str(rate), "--records", str(records)]
    if args == [TYPED]:
        cmd = [sys.executable, __file__, TYPED, store, cache, str(rate), str(records)]
    else:
        cmd = [
            sys.executable, "-m", "job", "--model", store, "--cache-dir", cache, "--sink", "print",
            "--source", "wine", *common, *args,
        ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    lines, busy = read_stamped(proc.stdout.fileno())
    latencies: list[float] = []
    seen = 0
    for now, line in lines:
        got = created(line)
        if got is None:
            continue
        seen += 1
        if got[0] >= records // 2:  # the second half: see the module's docstring
            latencies.append(now - got[1])
    if proc.wait() != 0 or seen != records:
        raise RuntimeError(f"{' '.join(args)}: exit {proc.returncode}, {seen}/{records} outputs")
    latencies.sort()
    n = len(latencies)
    return {
        "p50_ms": latencies[n // 2],
        "p99_ms": latencies[min(n - 1, int(n * 0.99))],
        "max_ms": latencies[-1],
        "records": n,
        "rate": rate,
        "reader_busy": busy,
    }


def typed_job(store: str, cache: str, rate: float, records: int) -> int:
    """The typed path over the WINE source, into the print sink: what `python -m job --source
    json:PATH --sink print` runs (`job.pipeline.typed_table`), its id and created_ms passed
    through, on the job's default settings."""
    from job.pipeline import JobOptions, _typed_sink, environments, wine_source
    from job.planning import planned
    from job.table import register_model

    opts = JobOptions(model=store, cache_dir=cache, api="vectorized", rate=rate, records=records)
    env, t_env = environments(opts)
    # Through a DataStream and back, so created_ms is computed before the model function: the
    # planner would otherwise compute it in the Calc after it, and leave the model out.
    source = wine_source(env, t_env, rate, records)
    table = t_env.from_data_stream(planned(t_env, lambda: t_env.to_data_stream(source)))
    t_env.create_temporary_view("model_input", table)
    sig = register_model(t_env, "model_predict", opts.model_settings())
    fields = [f"p.`{f}` AS `{f}`" for f, _ in sig.fields]
    result = t_env.sql_query(
        f"SELECT id, created_ms, {', '.join(fields)} "
        f"FROM (SELECT *, {sig.call('model_predict')} AS p FROM model_input)"
    )
    _typed_sink(opts, t_env, result).wait()  # the job's typed print sink
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="the process and vectorized paths only, at each rate"
    )
    parser.add_argument("--seconds", type=float, default=8, help="seconds per case (default 8)")
    parser.add_argument(
        "--rates", default=",".join(map(str, RATES)), help="records/s, comma-separated"
    )
    parser.add_argument("--cases", help="a subset: comma-separated words the names start with")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument(TYPED, nargs=4, help=argparse.SUPPRESS)  # store cache rate records
    args = parser.parse_args()
    if args.one_typed:  # the typed path's job, in this child process
        store, cache, rate, n = args.one_typed
        return typed_job(store, cache, float(rate), int(n))
    from model.bundle import EXAMPLES, build_bundle

    rates = [int(r) for r in args.rates.split(",")]
    paths = DEFAULT_CASES[:2] if args.quick else DEFAULT_CASES
    plan = [(name, a, rate) for rate in rates for name, a in paths]
    if not args.quick:
        plan += [(name, a, rates[0]) for name, a in OTHER_CASES]
    if args.cases:
        plan = [p for p in plan if p[0].startswith(tuple(args.cases.split(",")))]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        os.environ.setdefault("FLINK_LOG_DIR", str(Path(tmp) / "logs"))
        store = str(Path(tmp) / "store")
        build_bundle(EXAMPLES / "v2", store)
        for name, case_args, rate in plan:
            key = case_name(name, rate)
            cache = str(Path(tmp) / "cache")
            results[key] = r = run_case(case_args, rate, store, cache, int(args.seconds * rate))
            print(f"  {key:<48} p50 {r['p50_ms']:6.1f}  p99 {r['p99_ms']:6.1f}  "
                  f"max {r['max_ms']:6.1f} ms", flush=True)  # fmt: skip
    print(f"\nJob latency, source to sink ({os.cpu_count()} cores)")
    print("| path / settings | records/s | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['rate']:,} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['max_ms']:.1f} |"
        )
    defaults = [r for n, r in results.items() if "(defaults" in n and not n.startswith("record")]
    if defaults:
        worst = max(r["p99_ms"] for r in defaults)
        print(f"\nworst default path p99: {worst:.1f} ms (goal <= 25 ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
