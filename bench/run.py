"""The whole system measured side by side: `make bench` (full, <= 15 min) / `make bench-quick`.

    python bench/run.py [--quick] [--out bench/results]

Runs each benchmark in its own process, one at a time (so none disturbs another's figures):
    v8_predict.py     fast-path rows/s vs numpy on the same weights, per batch size
    zoo.py            the same for every model of the zoo (model/examples/zoo), with bundle sizes
    preprocess.py     raw typed records through V8 pre-processing vs encoded features
    models.py         build time, bundle size and check's time per example model
    keras_vs_v8.py    fast path vs Keras `model(x)` (needs the train venv, else a skip reason)
    swap.py           swap stall under load, publish -> serve per store, RSS over many swaps
    job_throughput.py records/s of the job's paths beside identity jobs and peers (numpy, ONNX)
    scaling.py        p=2 over p=1 on standalone clusters, per layout and path, with cores busy
    job_latency.py    end-to-end latency at 1,000 and 10,000 records/s
    soak.py           the job for minutes under good and bad publishes: nothing lost

and writes `latest.json` (every key a float, or listed under `skipped` with the reason),
`latest.md` (the table: each figure, its goal, the baseline it is a ratio to, the machine) and
PNG plots (throughput vs batch size; per-call latency across swaps; RSS during the soak).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

from v8_predict import cpu_model

# key -> (goal text, what it is / its baseline)
KEYS: dict[str, tuple[str, str]] = {
    "v8_vs_numpy_b256": (">= 0.15", "V8 fast path rows/s ÷ numpy on the same weights, batch 256"),
    "v8_vs_numpy_b4096": (">= 0.15", "the same at batch 4,096"),
    "zoo_min_vs_numpy_b256": (">= 0.15", "the lowest fast path ÷ numpy over the model zoo, b256"),
    "zoo_median_vs_numpy_b256": ("", "the median of the same"),
    "zoo_min_vs_numpy_b4096": ("", "the lowest at batch 4,096"),
    "zoo_max_abs_vs_keras": ("<= 1e-5", "largest abs(fast path - Keras) over the zoo's rows"),
    "typed_raw_vs_encoded_b256": (
        ">= 0.5",
        "raw typed records (strings, nulls) through V8 pre-processing + model ÷ the same model "
        "fed encoded float32 features, batch 256",
    ),
    "typed_raw_vs_encoded_b4096": (">= 0.5", "the same at batch 4,096"),
    "typed_host_vs_matrix_b256": (
        "",
        "the same through the production host (ModelRuntime.predict_columns from numpy and str "
        "columns ÷ predict(features)), batch 256",
    ),
    "typed_host_vs_matrix_b4096": ("", "the same at batch 4,096"),
    "penguins_build_s": ("", "the penguins example: make bundle, checks in node:vm included"),
    "penguins_check_s": ("", "the penguins example: check (trial child, build, self-test, skew)"),
    "penguins_bundle_kb": ("", "the penguins example's bundle (TF.js + model + pre-processing)"),
    "v8_vs_keras_b1": ("> 1", "V8 fast path ÷ Keras `model(x)` in Python, batch 1"),
    "v8_vs_keras_b256": ("> 1", "the same at batch 256"),
    "job_vectorized_vs_identity": (">= 0.8", "vectorized predict ÷ identity pandas UDF, p=1"),
    "job_process_vs_identity": (">= 0.7", "process-path predict ÷ identity ProcessFunction, p=1"),
    "job_vectorized_vs_row_v8": ("> 1", "vectorized predict ÷ one V8 call per record, p=1"),
    "job_typed_vs_identity": (
        ">= 0.8",
        "the model as the SQL function (typed ROW) ÷ an identity pandas UDF returning the same ROW "
        "of constants, p=1",
    ),
    "job_typed_records_per_s": (
        "",
        "the typed path's records/s at p=1 (WINE, 13 DOUBLE columns in, label, score and "
        "model_version out), default batching (latency)",
    ),
    "job_typed_records_per_s_throughput": (
        ">= 300,000",
        "the same with --batching throughput (batches of 10,000 rows)",
    ),
    "job_typed_vs_identity_throughput": (
        ">= 0.8",
        "the typed path ÷ the identity ROW UDF, both with --batching throughput, p=1",
    ),
    "job_typed_full_row_vs_typed": (
        "",
        "the function's whole ROW (probabilities MAP, sha256, error) ÷ just the fields read",
    ),
    "job_typed_sql_vs_table": ("≈ 1", "the model function called from SQL ÷ from the Table API"),
    "job_typed_vs_best_peer": (
        ">= 0.8",
        "the typed path ÷ the faster peer (a numpy or ONNX Runtime pandas UDF on the same "
        "weights, the same ROW out, no hot swap), p=1",
    ),
    "job_process_vs_keyed_identity": (
        ">= 0.8",
        "process-path predict ÷ an identity KeyedProcessFunction behind the same key_by, p=1",
    ),
    "scaling_p2_vs_p1": (
        ">= 1.7",
        "records/s at p=2 ÷ p=1 on a standalone cluster, the best layout and path "
        "(bench/scaling.py)",
    ),
    "scaling_cores_busy_p1": ("", "cores the same job keeps busy at p=1 (of this machine's)"),
    "swap_stall_max_ms": ("<= 1", "pointer swap on the predicting thread, max over the swaps"),
    "swap_stall_p99_ms": ("<= 1", "the same, p99"),
    "publish_to_serve_dir_s": ("", "publish -> first prediction, local dir (inotify)"),
    "publish_to_serve_http_s": ("", "the same, HTTP store, polled"),
    "publish_to_serve_s3_s": ("", "the same, S3 (SeaweedFS), polled"),
    "job_latency_p99_ms": (
        "<= 25",
        "source -> sink at 1,000 rec/s, default settings, best path (steady state: the second half "
        "of the run)",
    ),
    "job_latency_p50_ms": ("", "the same, p50"),
    "job_latency_p99_ms_10k": ("<= 25", "the same at 10,000 rec/s"),
    "job_latency_p50_ms_10k": ("", "the same, p50"),
    "job_latency_worst_p99_ms": (
        "<= 25",
        "the highest p99 of the default paths at 1,000 rec/s (process, vectorized, typed; the "
        "quick run has no typed path)",
    ),
    "job_latency_worst_p99_ms_10k": ("<= 25", "the same at 10,000 rec/s"),
    "rss_growth_1000_swaps_mb": ("<= 30", "RSS growth per 1,000 swaps under continuous predict"),
    "cutover_one_version_vs_plain": (
        ">= 0.95",
        "batches split by event time while a cutover is under way, every row on one side ÷ the "
        "same model called directly (bench/cutover.py)",
    ),
    "cutover_two_versions_vs_plain": ("", "the same, half the rows on each side (two calls)"),
    "cutover_rss_growth_1000_mb": ("<= 30", "RSS growth per 1,000 event-time cutovers"),
    "cutover_models_loaded_max": ("<= 2", "models loaded at once over the cutovers"),
    "cutover_stall_max_ms": ("<= 1", "pointer swap on the predicting thread over the cutovers"),
    "shadow_cost_vs_scoring": (
        "<= 1.2",
        "a shadow candidate's cost per batch in units of the scoring itself (1.0: one more "
        "model call, nothing else; bench/cutover.py)",
    ),
    "canary_cost_vs_plain": (
        "<= 0.05",
        "records/s lost to a canary taking 5% of the ids, as a fraction (the job's vectorized "
        "predict function, 1,000-row batches: one more model call a batch; bench/cutover.py)",
    ),
    "records_lost": ("0", "soak: input ids missing from the output"),
    "records_duplicated": ("0", "soak: input ids more than once in the output"),
}


def run(script: str, args: list[str], out: Path, env: dict[str, str] | None = None) -> Any:
    """Runs `bench/<script> args --json out`; returns the JSON it wrote."""
    t0 = time.monotonic()
    print(f"\n== {script} {' '.join(args)}", flush=True)
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--json", str(out)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        check=False,
    )
    print(f"   ({time.monotonic() - t0:.0f} s, exit {proc.returncode})", flush=True)
    if not out.exists():
        raise RuntimeError(f"{script} wrote no results (exit {proc.returncode})")
    data = json.loads(out.read_text())
    data["_exit"] = proc.returncode
    data["_seconds"] = time.monotonic() - t0
    return data


def plan(quick: bool) -> list[tuple[str, str, list[str]]]:
    """(name, script, args) per benchmark."""
    if quick:
        return [
            ("v8", "v8_predict.py", ["--seconds", "0.15", "--batches", "1,16,256,4096"]),
            ("zoo", "zoo.py", ["--seconds", "0.05"]),
            ("preprocess", "preprocess.py", ["--seconds", "0.2"]),
            ("models", "models.py", ["--rounds", "1"]),
            ("keras", "keras_vs_v8.py", ["--quick", "--rounds", "3"]),
            ("swap", "swap.py", ["--swaps", "20", "--rss-swaps", "200"]),
            ("cutover", "cutover.py", ["--cutovers", "60", "--seconds", "1"]),
            ("throughput", "job_throughput.py", ["--quick", "--records", "40000",
             "--cases",
             "identity-process,identity-keyed,process,identity-vectorized,vectorized,"
             "identity-typed,typed,typed-full-row,typed-sql,peer-numpy,peer-onnx,"
             "identity-typed@throughput,typed@throughput,record"]),
            ("scaling", "scaling.py", ["--quick", "--paths", "3", "--records", "50000"]),
            ("latency", "job_latency.py", ["--quick", "--seconds", "3"]),
            ("soak", "soak.py", ["--minutes", "1"]),
        ]  # fmt: skip
    return [
        ("v8", "v8_predict.py", ["--seconds", "0.3", "--batches", "1,4,16,64,256,1024,4096"]),
        ("zoo", "zoo.py", ["--seconds", "0.2"]),
        ("preprocess", "preprocess.py", ["--seconds", "1.0"]),
        ("models", "models.py", ["--rounds", "3"]),
        ("keras", "keras_vs_v8.py", ["--seconds", "0.5"]),
        ("swap", "swap.py", ["--swaps", "100", "--rss-swaps", "1000"]),
        ("cutover", "cutover.py", ["--cutovers", "1000", "--seconds", "3"]),
        (
            "throughput",
            "job_throughput.py",
            [
                "--records",
                "120000",
                "--cases",
                "identity-process,identity-keyed,process,identity-vectorized,"
                "identity-vectorized-json,vectorized,identity-typed,typed,typed-full-row,"
                "typed-sql,peer-numpy,peer-onnx,identity-typed@throughput,typed@throughput,"
                "record",
            ],
        ),
        ("scaling", "scaling.py", []),
        ("latency", "job_latency.py", []),
        ("soak", "soak.py", ["--minutes", "10"]),
    ]


def _take(
    source: dict[str, float], key: str, src: str, keys: dict[str, float], skipped: dict[str, str]
) -> None:
    """keys[key] = source[src], or the key skipped when its case did not run."""
    if src in source:
        keys[key] = source[src]
    else:
        skipped[key] = "case not run"


def collect(d: dict[str, Any]) -> tuple[dict[str, float], dict[str, str], dict[str, Any]]:
    """(keys, skipped keys with reasons, notes) from the benchmarks' outputs."""
    keys: dict[str, float] = {}
    skipped: dict[str, str] = {}
    notes: dict[str, Any] = {}
    if "v8" in d:
        rows = {r["batch"]: r for r in d["v8"]["rows"]}
        for b in (256, 4096):
            if b in rows:
                keys[f"v8_vs_numpy_b{b}"] = rows[b]["fast_vs_numpy"]
    if "zoo" in d:
        z = d["zoo"]
        for b in (256, 4096):
            if f"min_vs_numpy_b{b}" in z:
                keys[f"zoo_min_vs_numpy_b{b}"] = z[f"min_vs_numpy_b{b}"]
                notes[f"zoo_min_vs_numpy_b{b}_model"] = z[f"min_vs_numpy_b{b}_model"]
        if "median_vs_numpy_b256" in z:
            keys["zoo_median_vs_numpy_b256"] = z["median_vs_numpy_b256"]
        if "max_fast_vs_keras" in z:
            keys["zoo_max_abs_vs_keras"] = z["max_fast_vs_keras"]
        if z.get("failed"):
            notes["zoo_failed"] = z["failed"]
    if "preprocess" in d:
        for r in d["preprocess"]["rows"]:
            b = r["batch"]
            keys[f"typed_raw_vs_encoded_b{b}"] = r["raw_vs_encoded"]
            if "typed_vs_matrix" in r:
                keys[f"typed_host_vs_matrix_b{b}"] = r["typed_vs_matrix"]
    if "models" in d:
        for r in d["models"]["models"]:
            if r["model"] == "penguins":
                keys["penguins_build_s"] = r["build_s"]
                keys["penguins_check_s"] = r["check_s"]
                keys["penguins_bundle_kb"] = r["bundle_bytes"] / 1024
    if "keras" in d:
        k = d["keras"]
        for b in (1, 256):
            if f"v8_vs_keras_b{b}" in k:
                keys[f"v8_vs_keras_b{b}"] = k[f"v8_vs_keras_b{b}"]
            else:
                skipped[f"v8_vs_keras_b{b}"] = k.get("skipped", "keras_vs_v8.py gave no figure")
    if "cutover" in d:
        c = d["cutover"]
        for key in KEYS:
            if key.startswith(("cutover_", "shadow_", "canary_")):
                keys[key] = float(c[key])
    if "swap" in d:
        s = d["swap"]
        for key in ("swap_stall_max_ms", "swap_stall_p99_ms", "rss_growth_1000_swaps_mb"):
            keys[key] = s[key]
        for kind in ("dir", "http", "s3"):
            key = f"publish_to_serve_{kind}_s"
            if s.get(key) is not None:
                keys[key] = s[key]
            else:
                skipped[key] = s.get(f"publish_to_serve_{kind}_skipped", "not measured")
        notes["poll_interval_s"] = s["poll_interval_s"]
        notes["rss_swaps"] = s["rss_swaps"]
    if "throughput" in d:
        ratios = d["throughput"]["ratios"]
        for key, src in (
            ("job_vectorized_vs_identity", "vectorized_vs_identity_p1"),
            ("job_process_vs_identity", "process_vs_identity_p1"),
            ("job_vectorized_vs_row_v8", "vectorized_vs_record_p1"),
            ("job_typed_vs_identity", "typed_vs_identity_p1"),
            ("job_typed_vs_identity_throughput", "typed_vs_identity_throughput_p1"),
            ("job_typed_full_row_vs_typed", "typed_full_row_vs_typed_p1"),
            ("job_typed_sql_vs_table", "typed_sql_vs_table_p1"),
            ("job_process_vs_keyed_identity", "process_vs_keyed_identity_p1"),
        ):
            _take(ratios, key, src, keys, skipped)
        rate = {
            r["case"]: r["records_per_s"]
            for r in d["throughput"]["results"]
            if r["parallelism"] == 1
        }
        for key, case in (
            ("job_typed_records_per_s", "typed"),
            ("job_typed_records_per_s_throughput", "typed@throughput"),
        ):
            _take(rate, key, case, keys, skipped)
        peers = [rate[c] for c in ("peer-numpy", "peer-onnx") if c in rate]
        if "typed" in rate and peers:
            keys["job_typed_vs_best_peer"] = rate["typed"] / max(peers)
        else:
            skipped["job_typed_vs_best_peer"] = "peer cases not run"
        notes["job_throughput_ratios"] = ratios
    if "scaling" in d:
        best = d["scaling"]["best"]
        keys["scaling_p2_vs_p1"] = best["ratio"]
        keys["scaling_cores_busy_p1"] = best["cores_p1"]
        notes["scaling_best"] = f"{best['layout']}, {best['path']}"
    if "latency" in d:
        lat = {k: v for k, v in d["latency"].items() if not k.startswith("_")}
        for per_s, suffix in ((1000, ""), (10000, "_10k")):
            # The prediction paths on their default settings (the record path is the baseline);
            # results from before the 10k cases carry no rate: 1,000.
            defaults = {
                k: v
                for k, v in lat.items()
                if "(defaults" in k
                and k.startswith(("process", "vect", "typed"))
                and v.get("rate", 1000) == per_s
            }
            if not defaults:
                for key in ("p99_ms", "p50_ms", "worst_p99_ms"):
                    skipped[f"job_latency_{key}{suffix}"] = f"no default path run at {per_s}/s"
                continue
            best = min(defaults, key=lambda k: defaults[k]["p99_ms"])
            worst = max(defaults, key=lambda k: defaults[k]["p99_ms"])
            keys[f"job_latency_p99_ms{suffix}"] = defaults[best]["p99_ms"]
            keys[f"job_latency_p50_ms{suffix}"] = defaults[best]["p50_ms"]
            keys[f"job_latency_worst_p99_ms{suffix}"] = defaults[worst]["p99_ms"]
            notes[f"job_latency_best_path{suffix}"] = best
            notes[f"job_latency_worst_path{suffix}"] = worst
    if "soak" in d:
        keys["records_lost"] = float(d["soak"]["records_lost"])
        keys["records_duplicated"] = float(d["soak"]["records_duplicated"])
        notes["soak_minutes"] = d["soak"]["minutes"]
    for key in KEYS:
        if key not in keys and key not in skipped:
            skipped[key] = "its benchmark did not run or failed"
    return {k: float(v) for k, v in keys.items()}, skipped, notes


def markdown(result: dict[str, Any], details: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# Benchmarks ({result['mode']}, {result['finished']})",
        "",
        f"Machine: {m['cores']} cores, {m['cpu']}; Python {m['python']}. Every figure is "
        "measured side by side with its baseline, in one run of its benchmark. Total "
        f"{result['wall_s'] / 60:.1f} min.",
        "",
    ]
    taken = result["notes"].get("taken_from_earlier_runs")
    if taken:
        lines += [
            "This run made "
            + ", ".join(sorted(n for n in details if n not in taken))
            + "; the other figures are those of earlier runs ("
            + ", ".join(f"{n}: {t}" for n, t in sorted(taken.items()))
            + "), each still measured side by side with its own baseline.",
            "",
        ]
    lines += [
        "| key | value | goal | what (baseline) |",
        "|---|---:|---|---|",
    ]
    for key, (goal, what) in KEYS.items():
        if key in result["keys"]:
            v = result["keys"][key]
            value = f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        else:
            value = "skipped: " + result["skipped"].get(key, "?")
        lines.append(f"| `{key}` | {value} | {goal} | {what} |")
    lines += ["", "## Absolute figures", ""]
    if "v8" in details:
        lines += ["| batch | V8 fast path rows/s | numpy rows/s |", "|---:|---:|---:|"]
        for r in details["v8"]["rows"]:
            lines.append(f"| {r['batch']} | {r['fast_rows_s']:,.0f} | {r['numpy_rows_s']:,.0f} |")
        lines.append("")
    if "zoo" in details:
        lines += [
            "| zoo model | kernel | bundle bytes | build s | b256 fast/numpy | b4096 fast/numpy "
            "| max abs vs Keras |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in details["zoo"]["models"]:
            ratios = [r["batches"].get(b, {}).get("fast_vs_numpy") for b in ("256", "4096")]
            cells = [f"{v:.3f}" if v is not None else "-" for v in ratios]
            lines.append(
                f"| {r['model']} | {r['kernel']} | {r['bundle_bytes']:,} | {r['build_s']:.2f} "
                f"| {cells[0]} | {cells[1]} | {r['fast_vs_keras']:.2g} |"
            )
        lines.append("")
    if "preprocess" in details:
        lines += [
            "| batch | raw rows/s | encoded rows/s | host typed rows/s | host matrix rows/s |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in details["preprocess"]["rows"]:
            lines.append(
                f"| {r['batch']} | {r['raw_rows_s']:,.0f} | {r['encoded_rows_s']:,.0f} "
                f"| {r.get('typed_rows_s', 0):,.0f} | {r.get('matrix_rows_s', 0):,.0f} |"
            )
        lines.append("")
    if "models" in details:
        lines += [
            "| model | contract | kernel | bundle KB | build s | check s | check command s |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        for r in details["models"]["models"]:
            lines.append(
                f"| {r['model']} | {r['contract']} | {r['kernel']} "
                f"| {r['bundle_bytes'] / 1024:.0f} | {r['build_s']:.2f} | {r['check_s']:.2f} "
                f"| {r['check_cli_s']:.2f} |"
            )
        lines.append("")
    k = details.get("keras", {})
    if "keras_rows_per_s" in k:
        lines += ["| batch | V8 rows/s | Keras rows/s |", "|---:|---:|---:|"]
        for b, v in k["v8_rows_per_s"].items():
            lines.append(f"| {b} | {v:,.0f} | {k['keras_rows_per_s'][b]:,.0f} |")
        lines.append("")
    if "throughput" in details:
        lines += ["| job case | parallelism | records/s |", "|---|---:|---:|"]
        for r in details["throughput"]["results"]:
            lines.append(f"| {r['case']} | {r['parallelism']} | {r['records_per_s']:,.0f} |")
        lines.append("")
    if "scaling" in details:
        lines += [
            "| scaling: layout | path | p=1 records/s | p=2 records/s | p=2 / p=1 "
            "| cores busy p=1 / p=2 |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in details["scaling"]["results"]:
            lines.append(
                f"| {r['layout']} | {r['path']} | {r['p1']:,.0f} | {r['p2']:,.0f} "
                f"| {r['p2'] / r['p1']:.2f} | {r['cores_p1']:.2f} / {r['cores_p2']:.2f} |"
            )
        lines.append("")
    if "latency" in details:
        lines += [
            "| latency case | records/s | p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, r in details["latency"].items():
            if not name.startswith("_"):
                lines.append(
                    f"| {name} | {r.get('rate', 1000):,} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                    f"| {r['max_ms']:.1f} |"
                )
        lines.append("")
    if "swap" in details:
        s = details["swap"]
        lines += [
            f"Swap: {s['swaps']:.0f} swaps of {s['batch']}-row batches; first call on a new model "
            f"p50 {s['first_call_after_swap_p50_ms']:.3f} ms vs steady "
            f"{s['steady_call_p50_ms']:.3f} ms; publish -> serve polled every "
            f"{s['poll_interval_s']:g} s; RSS over "
            f"{s['rss_swaps']} swaps {s['rss_growth_measured_mb']:+.1f} MB (from swap "
            f"{s['rss_growth_from_swap']}).",
            "",
        ]
    if "cutover" in details:
        c = details["cutover"]
        lines += [
            f"Cutover: batches of {c['batch']} rows split by event time, plain "
            f"{c['plain_records_per_s']:,.0f} rec/s, one side "
            f"{c['cutover_one_version_vs_plain']:.2f}x, both sides "
            f"{c['cutover_two_versions_vs_plain']:.2f}x; {c['cutovers']} cutovers: RSS "
            f"{c['cutover_rss_growth_measured_mb']:+.1f} MB, at most "
            f"{c['cutover_models_loaded_max']} models loaded at once, stall max "
            f"{c['cutover_stall_max_ms']:.3f} ms.",
            "",
        ]
    if "soak" in details:
        s = details["soak"]
        growth = s["rss_growth_after_settling_mb"]
        lines += [
            f"Soak: {s['minutes']:g} min at {s['rate']:g} rec/s, {s['api']} path, parallelism "
            f"{s['parallelism']}: {s['records_out']}/{s['records_in']} records out, "
            f"{s['records_lost']} lost, {s['records_duplicated']} duplicated, "
            f"{s['records_wrong_prediction']} wrong predictions; {s['versions_published']} "
            f"versions published ({len(s['bad_published'])} bad, {len(s['bad_served'])} served), "
            f"RSS growth after settling: Python {growth['python_mb']:+.1f} MB, JVM "
            f"{growth['jvm_mb']:+.1f} MB.",
            "",
        ]
    plots = result.get("plots", [])
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def plot(details: dict[str, Any], out: Path) -> list[str]:
    """PNG plots where a picture reads better than a table; returns the file names."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"no plots: {e}")
        return []
    made = []
    if "v8" in details:
        rows = details["v8"]["rows"]
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, label in (("fast", "V8 fast path"), ("numpy", "numpy"), ("json", "V8 JSON")):
            ax.plot([r["batch"] for r in rows], [r[f"{name}_rows_s"] for r in rows], "o-",
                    label=label)  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="batch size (rows)", ylabel="rows/s",
               title="Throughput vs batch size (WINE v2)")  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "throughput_vs_batch.png", dpi=110)
        plt.close(fig)
        made.append("throughput_vs_batch.png")
    timeline = details.get("swap", {}).get("timeline", {})
    if timeline.get("calls"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        t, d = zip(*timeline["calls"], strict=True)
        ax.plot(t, d, ".", ms=2, label="predict call (256 rows)")
        for i, s in enumerate(timeline["swaps"]):
            ax.axvline(s, color="red", alpha=0.5, lw=0.8, label="swap" if i == 0 else None)
        ax.set(xlabel="ms", ylabel="call duration (ms)", yscale="log",
               title="Per-call latency across hot swaps")  # fmt: skip
        ax.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(out / "swap_timeline.png", dpi=110)
        plt.close(fig)
        made.append("swap_timeline.png")
    samples = details.get("soak", {}).get("rss_samples", [])
    if samples:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ts = [s["t"] for s in samples]
        ax.plot(ts, [s["python_mb"] for s in samples], label="job's Python process")
        ax.plot(ts, [s["jvm_mb"] for s in samples], label="its JVM (thread-mode Python)")
        ax.set(xlabel="s", ylabel="RSS (MB)", title="Soak: resident memory")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "soak_rss.png", dpi=110)
        plt.close(fig)
        made.append("soak_rss.png")
    return made


def merge_previous(path: Path, mode: str, details: dict[str, Any]) -> dict[str, str]:
    """Adds to `details` every benchmark of the previous run at `path` that this run did not
    make; returns benchmark -> the run it comes from (its finish time)."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: --merge: cannot read {path}: {e}") from None
    if previous.get("mode") != mode:
        raise SystemExit(f"error: --merge: {path} is a {previous.get('mode')} run, not {mode}")
    earlier = previous.get("notes", {}).get("taken_from_earlier_runs", {})
    taken = {}
    for name, detail in previous.get("details", {}).items():
        if name not in details:
            details[name] = detail
            taken[name] = earlier.get(name, previous["finished"])
    return taken


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="<= 3 min, smaller runs")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--only", help="comma-separated subset of: v8,zoo,preprocess,models,"
                        "keras,swap,cutover,throughput,scaling,latency,soak")  # fmt: skip
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --only: keep the other benchmarks' figures from OUT/latest.json (same mode); "
        "the report names the run each comes from",
    )
    args = parser.parse_args()
    if args.merge and not args.only:
        parser.error("--merge takes --only")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    details: dict[str, Any] = {}
    failed: dict[str, str] = {}
    only = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name, script, script_args in plan(args.quick):
            if only and name not in only:
                continue
            try:
                details[name] = run(script, script_args, Path(tmp) / f"{name}.json")
            except Exception as e:  # one failed benchmark must not hide the others' figures
                failed[name] = str(e)
                print(f"   {name} failed: {e}", flush=True)
    mode = "quick" if args.quick else "full"
    taken: dict[str, str] = {}
    if args.merge:
        taken = merge_previous(args.out / "latest.json", mode, details)
    keys, skipped, notes = collect(details)
    if taken:
        notes["taken_from_earlier_runs"] = taken
    result: dict[str, Any] = {
        "mode": mode,
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_s": time.monotonic() - t0,
        "machine": {
            "cores": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
        },
        "keys": keys,
        "skipped": skipped,
        "goals": {k: goal for k, (goal, _) in KEYS.items() if goal},
        "notes": notes,
        "failed": failed,
        "nonzero_exit": {n: d["_exit"] for n, d in details.items() if d.get("_exit")},
    }
    result["plots"] = plot(details, args.out)
    details.get("swap", {}).pop("timeline", None)  # ~10k points: in the plot, not the JSON
    # The keys at the top level too: `latest.json["swap_stall_max_ms"]` is what readers expect.
    doc = {**keys, **result, "details": details}
    (args.out / "latest.json").write_text(json.dumps(doc, indent=1))
    (args.out / "latest.md").write_text(markdown(result, details))
    print("\n" + markdown(result, details))
    print(f"wrote {args.out / 'latest.json'} and latest.md in {result['wall_s']:.0f} s")
    return 1 if failed or result["nonzero_exit"] else 0


if __name__ == "__main__":
    sys.exit(main())
