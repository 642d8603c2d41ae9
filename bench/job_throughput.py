"""Records/s of the prediction job's paths, side by side in one run, at parallelism 1 and 2.

    python bench/job_throughput.py [--quick] [--records N] [--cases A,B] [--json OUT]

Cases (each in a fresh mini-cluster, the WINE source unthrottled, a blackhole sink):
    identity-process      ProcessFunction that passes each record on (the baseline of the
                          process path), in the process path's execution mode
    identity-keyed        the process path's shape (key_by, KeyedProcessFunction) passing records on
    process               the process path: PredictBatched, batched V8 predict, JSON out
    identity-vectorized   a pandas UDF over the same columns returning a string per row (the id)
    identity-vectorized-json  the same returning a line as long as a prediction's (~260 bytes):
                          what moving the output through Arrow and Flink costs, model aside
    vectorized            the vectorized path: PredictVectorized
    identity-typed        a pandas UDF over the same columns returning a typed ROW (label, score,
                          model_version) of constants: the typed path's baseline
    typed                 the typed path: the model as the SQL function (job.table) asked for
                          the ROW's label, score and model_version (`fields`), into the sink,
                          through the Table API
    typed-full-row        the same function with its whole ROW (probabilities MAP, sha256,
                          error), the sink taking the same three: what the fields not read cost
    typed-sql             the same function registered with `register_model` and called from a
                          SQL INSERT ... SELECT (the same plan expected: the same pace)
    peer-numpy            a peer a user might pick instead: a pandas UDF running the same
                          network in numpy (bench/peers.py), the same ROW out via job.table.frame
    peer-onnx             the same with ONNX Runtime (a graph built from the same weights, one
                          intra-op thread); neither peer hot-swaps
    record                one V8 call per record (PredictRecord, the seed's design)

A case named `<case>@throughput` runs with `--batching throughput` (batches of 10,000 rows;
every other case with the default, latency).

Each figure is the steady pace: the source's output count (sampled from Flink's REST API; with
backpressure the source runs at the pipeline's pace) between 20% and 90% of the input, so job
start-up (JVM, Python workers, model load) is not in it.
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

CASES = [
    "identity-process",
    "identity-keyed",
    "process",
    "identity-vectorized",
    "identity-vectorized-json",
    "vectorized",
    "identity-typed",
    "typed",
    "typed-full-row",
    "typed-sql",
    "peer-numpy",
    "peer-onnx",
    "identity-typed@throughput",
    "typed@throughput",
    "record",
]
# What the typed cases' query reads: the function is asked for just these (`fields`).
READ = ("label", "score", "model_version")


def run_one(case: str, parallelism: int, records: int, store: str, cache: str) -> float:
    """Runs one job to completion in this process; returns its steady records/s."""
    import pandas as pd
    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction, ProcessFunction
    from pyflink.table import DataTypes
    from pyflink.table.expressions import col
    from pyflink.table.udf import udf

    from job.functions import RouteBySubtask
    from job.pipeline import MAX_PARALLELISM, JobOptions, build, environments, wine_source
    from job.planning import planned
    from tests.support.flink import local_rest

    case, _, batching = case.partition("@")
    api = {
        "process": "process",
        "vectorized": "vectorized",
        "record": "record",
        "identity-process": "process",
        "identity-keyed": "process",
        "identity-vectorized": "vectorized",
        "identity-vectorized-json": "vectorized",
        "identity-typed": "vectorized",
        "typed": "vectorized",
        "typed-full-row": "vectorized",
        "typed-sql": "vectorized",
        "peer-numpy": "vectorized",
        "peer-onnx": "vectorized",
    }[case]
    rest, rest_conf = local_rest()
    opts = JobOptions(
        extra_config=rest_conf,
        model=store,
        cache_dir=cache,
        api=api,
        parallelism=parallelism,
        rate=0,
        records=records,
        poll_interval=60,
        batching=batching or "latency",
    )
    env, t_env = environments(opts)
    t_env.execute_sql("CREATE TEMPORARY TABLE sink (record STRING) WITH ('connector'='blackhole')")
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE typed_sink (label STRING, score DOUBLE, model_version STRING) "
        "WITH ('connector'='blackhole')"
    )
    row = DataTypes.ROW(
        [
            DataTypes.FIELD("label", DataTypes.STRING()),
            DataTypes.FIELD("score", DataTypes.DOUBLE()),
            DataTypes.FIELD("model_version", DataTypes.STRING()),
        ]
    )

    @udf(result_type=row, func_type="pandas")  # type: ignore[misc]
    def identity_typed(ids: pd.Series, *rest: pd.Series) -> pd.DataFrame:
        n = len(ids)
        constant = {"label": ["class_0"] * n, "model_version": ["1"] * n}
        return pd.DataFrame({**constant, "score": rest[0]})[["label", "score", "model_version"]]

    class Identity(ProcessFunction):  # type: ignore[misc]
        def process_element(self, value: Any, ctx: Any) -> Any:
            yield str(value[0])

    class KeyedIdentity(KeyedProcessFunction):  # type: ignore[misc]
        def process_element(self, value: Any, ctx: Any) -> Any:
            yield str(value[0])

    @udf(result_type=DataTypes.STRING(), func_type="pandas")  # type: ignore[misc]
    def identity(ids: pd.Series, *rest: pd.Series) -> pd.Series:
        return ids.astype(str)

    line = '{"id":%d,"label":"class_0","probabilities":{"class_0":0.449163109,"class_1":' + (
        '0.204650864,"class_2":0.346186012},"model_version":"1","model_sha256":"' + "a" * 64
        + '","subtask":0,"created_ms":1795503770172}'
    )  # fmt: skip

    @udf(result_type=DataTypes.STRING(), func_type="pandas")  # type: ignore[misc]
    def identity_json(ids: pd.Series, *rest: pd.Series) -> pd.Series:
        return pd.Series([line % i for i in ids.tolist()], dtype=object)

    if case == "typed-sql":
        from job.table import register_model

        t_env.create_temporary_view("wine", wine_source(env, t_env, 0, records))
        sig = register_model(t_env, "predict", opts.model_settings(), fields=READ)
        insert = (
            "INSERT INTO typed_sink SELECT p.label, p.score, p.model_version "
            f"FROM (SELECT {sig.call('predict')} AS p FROM wine)"
        )
        table_result = planned(t_env, lambda: t_env.execute_sql(insert))
        job_id = str(table_result.get_job_client().get_job_id())
        return steady_rate(rest, job_id, records, table_result)
    if case in ("typed", "typed-full-row", "identity-typed", "peer-numpy", "peer-onnx"):
        table = wine_source(env, t_env, 0, records)
        cols = table.get_schema().get_field_names()
        if case.startswith("typed"):
            from job.table import model_function

            fields = None if case == "typed-full-row" else READ
            fn, sig = model_function(opts.model_settings(), fields=fields)
            args = [col(name) for name, _ in sig.inputs]
        elif case.startswith("peer-"):
            from bench.peers import peer_function

            fn, sig = peer_function(case.removeprefix("peer-"), store, fields=READ)
            args = [col(name) for name, _ in sig.inputs]
        else:
            fn, args = identity_typed, [col(c) for c in cols]
        p = fn(*args)
        typed = table.select(p.get("label"), p.get("score"), p.get("model_version"))
        table_result = planned(t_env, lambda: typed.execute_insert("typed_sink"))
        job_id = str(table_result.get_job_client().get_job_id())
        return steady_rate(rest, job_id, records, table_result)
    if case.startswith("identity-"):
        table = wine_source(env, t_env, 0, records)
        if case.startswith("identity-vectorized"):
            cols = table.get_schema().get_field_names()
            fn = identity if case == "identity-vectorized" else identity_json
            result = table.select(fn(*[col(c) for c in cols]))
        else:
            stream = planned(t_env, lambda: t_env.to_data_stream(table))
            if case == "identity-keyed":
                stream = stream.key_by(
                    RouteBySubtask(parallelism, MAX_PARALLELISM), key_type=Types.INT()
                ).process(KeyedIdentity(), output_type=Types.STRING())
            else:
                stream = stream.process(Identity(), output_type=Types.STRING())
            result = t_env.from_data_stream(stream)
    else:
        result = build(opts, env, t_env)
    table_result = planned(t_env, lambda: result.execute_insert("sink"))
    job_id = str(table_result.get_job_client().get_job_id())
    return steady_rate(rest, job_id, records, table_result)


def steady_rate(
    rest: str,
    job_id: str,
    records: int,
    table_result: Any = None,
    *,
    probe: Any = None,
    out: dict[str, float] | None = None,
) -> float:
    """Records/s through the job between 20% and 90% of the input, from the source's
    numRecordsOut (backpressure makes it the pipeline's pace), sampled from the REST API.

    `probe()`, when given, is sampled with each count (e.g. CPU seconds used so far); its rate
    over the same window goes to `out["probe_per_s"]`.
    """
    from tests.support.flink import rest_get

    samples: list[tuple[float, float]] = []
    probed: dict[float, float] = {}
    ids: list[str] = []
    subtasks = 1
    vertex = ""
    while True:
        try:
            status = rest_get(rest, f"/jobs/{job_id}")
        except OSError:  # the mini-cluster shuts down with its last job
            break
        if status["state"] in ("FINISHED", "FAILED", "CANCELED"):
            break
        if len(ids) < subtasks:  # each subtask's metrics appear once it runs
            for v in status["vertices"]:
                if v["name"].startswith("Source: wine ids"):
                    subtasks = int(v["parallelism"])
                    vertex = v["id"]
                    listing = rest_get(rest, f"/jobs/{job_id}/vertices/{vertex}/metrics")
                    ids = [
                        m["id"]
                        for m in listing
                        if m["id"].endswith(".numRecordsOut") and "Source" in m["id"]
                    ]
        if len(ids) == subtasks:
            try:
                path = f"/jobs/{job_id}/vertices/{vertex}/metrics?get={','.join(ids)}"
                got = rest_get(rest, path)
            except OSError:
                break
            now = time.perf_counter()
            samples.append((now, sum(float(m["value"]) for m in got)))
            if probe is not None:
                probed[now] = probe()
        time.sleep(0.05)  # sampling period of a benchmark, not a wait for an event
    if table_result is not None:
        table_result.wait()
    window = [(t, c) for t, c in samples if 0.2 * records <= c <= 0.9 * records]
    if len(window) < 2 or window[-1][1] == window[0][1]:
        raise RuntimeError(f"too few samples in the steady window: {samples}")
    (t0, c0), (t1, c1) = window[0], window[-1]
    if probe is not None and out is not None:
        out["probe_per_s"] = (probed[t1] - probed[t0]) / (t1 - t0)
    return (c1 - c0) / (t1 - t0)


def measure(case: str, parallelism: int, n: int, store: str, cache: str) -> dict[str, Any]:
    """One case in a fresh process (a fresh mini-cluster)."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", case, str(parallelism), str(n), store, cache],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    line = [x for x in out.stdout.splitlines() if x.startswith("RATE ")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"{case} p={parallelism} n={n} failed:\n{out.stderr[-3000:]}")
    rate = float(line[0].split()[1])
    return {"case": case, "parallelism": parallelism, "records": n, "records_per_s": rate}


def measure_twice(case: str, parallelism: int, n: int, store: str, cache: str) -> dict[str, Any]:
    """`measure`, and once more if the run gave no figure: a short case (a fast identity runs
    40,000 records in under half a second) can end with too few samples in its steady window."""
    try:
        return measure(case, parallelism, n, store, cache)
    except RuntimeError as e:
        why = str(e).strip().splitlines()[-1][:300]
        print(f"  {case} p={parallelism}: no figure ({why}); measuring it again", flush=True)
        return measure(case, parallelism, n, store, cache)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs, parallelism 1 only")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument(
        "--records",
        type=int,
        default=0,
        help="records per case (record path: a tenth; @throughput cases: 10x)",
    )
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        case, p, n, store, cache = args.one
        print(f"RATE {run_one(case, int(p), int(n), store, cache):.1f}", flush=True)
        return 0

    from model.bundle import EXAMPLES, build_bundle

    fast = args.records or (100_000 if args.quick else 300_000)
    slow = fast // 10
    parallelisms = [1] if args.quick else [1, 2]
    with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp:
        os.environ.setdefault("FLINK_LOG_DIR", str(Path(tmp) / "logs"))
        store = str(Path(tmp) / "store")
        build_bundle(EXAMPLES / "v2", store)
        cache = str(Path(tmp) / "cache")
        results = []
        for p in parallelisms:
            for case in args.cases.split(","):
                # ~10x the records/s: the same seconds in the steady window
                n = slow if case == "record" else fast * 10 if "@" in case else fast
                r = measure_twice(case, p, n, store, cache)
                results.append(r)
                print(f"  {case:<20} p={p}  {r['records_per_s']:>10,.0f} records/s", flush=True)

    rate = {(r["case"], r["parallelism"]): r["records_per_s"] for r in results}
    cpu = os.cpu_count()
    print(f"\nJob throughput (records/s, WINE rows, {cpu} cores; steady pace, 20-90% of the input)")
    print(f"| case | {' | '.join(f'p={p}' for p in parallelisms)} |")
    print(f"|---|{'---|' * len(parallelisms)}")
    for case in [c for c in CASES if (c, parallelisms[0]) in rate]:
        print(f"| {case} | {' | '.join(f'{rate[(case, p)]:,.0f}' for p in parallelisms)} |")
    ratios: dict[str, float] = {}
    pairs = {
        "vectorized_vs_identity": ("vectorized", "identity-vectorized"),
        "vectorized_vs_identity_json": ("vectorized", "identity-vectorized-json"),
        "process_vs_identity": ("process", "identity-process"),
        "process_vs_keyed_identity": ("process", "identity-keyed"),
        "vectorized_vs_record": ("vectorized", "record"),
        "typed_vs_identity": ("typed", "identity-typed"),
        "typed_vs_identity_throughput": ("typed@throughput", "identity-typed@throughput"),
        "typed_full_row_vs_typed": ("typed-full-row", "typed"),
        "typed_sql_vs_table": ("typed-sql", "typed"),
        "typed_vs_numpy_peer": ("typed", "peer-numpy"),
        "typed_vs_onnx_peer": ("typed", "peer-onnx"),
    }
    for p in parallelisms:
        for name, (a, b) in pairs.items():
            if (a, p) in rate and (b, p) in rate:
                ratios[f"{name}_p{p}"] = rate[(a, p)] / rate[(b, p)]
    print("\nratios (goals: vectorized/identity >= 0.8, process/identity >= 0.7)")
    for key, value in ratios.items():
        print(f"  {key:<32} {value:6.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
