"""The embedded demo (`make run`, `python -m job` without `--model`).

A local mini-cluster runs the prediction job on the WINE rows replayed at a steady rate. The model
store is a temporary directory seeded with `model/examples/wine/v1` (a weak model); when half the
records are predicted the demo publishes v2 (a good one) into the directory, the running job
adopts it, and the summary shows records and accuracy per version, throughput, when the swap
happened and what it cost the predicting thread.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from job.metrics import local_rest, model_metrics
from job.pipeline import JobOptions, build, environments
from model.bundle import EXAMPLES, build_bundle
from model.train import load_wine_csv
from reloader.manifest import MANIFEST_NAME, Manifest, parse
from reloader.sources import open_source


def _publish(build_dir: Path, store: str) -> Manifest:
    """What `python -m reloader publish` does: the bundle first, then the manifest."""
    manifest = parse((build_dir / MANIFEST_NAME).read_bytes())
    with open_source(store) as source:
        bundle = (build_dir / manifest.bundle).read_bytes()
        source.put(manifest.bundle, bundle, content_type="application/javascript")
        source.put(MANIFEST_NAME, manifest.to_bytes(), content_type="application/json")
    return manifest


def run_demo(opts: JobOptions, *, seconds: float = 40.0, out: Any = None) -> int:
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    _, _, _, classes = load_wine_csv()
    with tempfile.TemporaryDirectory(prefix="tf-on-flink-demo-") as tmp:
        root = Path(tmp)
        store = root / "model"
        say("building the v1 and v2 bundles from model/examples/wine ...")
        build_bundle(EXAMPLES / "v1", root / "build-v1")
        build_bundle(EXAMPLES / "v2", root / "build-v2")
        _publish(root / "build-v1", str(store))
        records = opts.records if opts.records != JobOptions.records else int(opts.rate * seconds)
        rest, rest_conf = local_rest()
        opts = replace(
            opts,
            model=str(store),
            source="wine",
            records=records,
            cache_dir=opts.cache_dir or str(root / "cache"),
            poll_interval=min(opts.poll_interval, 1.0),
            extra_config={**rest_conf, **opts.extra_config},
        )
        say(
            f"streaming {records} WINE records at {opts.rate:g}/s through the {opts.api} path "
            f"(parallelism {opts.parallelism}); model store: {store}"
        )
        env, t_env = environments(opts)
        result = build(opts, env, t_env).execute()
        job_id = str(result.get_job_client().get_job_id())

        per_version: dict[str, Counter[str]] = defaultdict(Counter)
        errors = 0
        seen: set[int] = set()
        duplicates = 0
        published_at = first_v2_at = None
        v2_sha = ""
        stall_us: float | None = None
        loaded_ms: float | None = None
        published_wall = 0.0
        start = last_print = time.monotonic()
        first_at = last_at = 0.0
        with result.collect() as rows:
            for row in rows:
                rec = json.loads(row[0])
                now = time.monotonic()
                first_at = first_at or now
                last_at = now
                rid = int(rec["id"])
                duplicates += rid in seen
                seen.add(rid)
                version = rec.get("model_version", "?")
                if "error" in rec:
                    errors += 1
                else:
                    right = rec["label"] == f"class_{classes[rid % len(classes)]}"
                    per_version[version]["records"] += 1
                    per_version[version]["right"] += right
                if published_at is None and len(seen) >= records // 2:
                    say(f"-- {now - start:5.1f}s  publishing v2 into {store}")
                    published_wall = time.time()
                    v2_sha = _publish(root / "build-v2", str(store)).sha256
                    published_at = now
                if first_v2_at is None and rec.get("model_sha256") == v2_sha:
                    first_v2_at = now
                    say(f"-- {now - start:5.1f}s  first prediction by v2 received; no restart")
                if now - last_print >= 1.0 or len(seen) == 1:
                    last_print = now
                    p = max(rec.get("probabilities", {}).values(), default=0.0)
                    say(
                        f"   {now - start:5.1f}s  id={rid:<6} {rec.get('label', rec.get('error'))}"
                        f" p={p:.2f}  model {version} ({rec.get('model_sha256', '')[:12]})"
                        f"  [{len(seen)} predicted]"
                    )
                    if published_at is not None and not (loaded_ms or 0) > published_wall * 1e3:
                        stall_us, loaded_ms = _swap_metrics(rest, job_id)

        span = max(last_at - first_at, 1e-9)
        say()
        say("summary")
        say(f"  {'version':<10} {'records':>8} {'accuracy':>9}")
        for version, c in sorted(per_version.items()):
            say(f"  {version:<10} {c['records']:>8} {c['right'] / max(c['records'], 1):>9.3f}")
        say(
            f"  records in: {records}, out: {len(seen)} distinct, {duplicates} duplicates, "
            f"{errors} errors"
        )
        say(f"  throughput: {len(seen) / span:,.0f} records/s (source rate {opts.rate:g}/s)")
        if published_at is not None and first_v2_at is not None:
            adopted = (
                f", serving {loaded_ms - published_wall * 1000:.0f} ms later (checked, "
                "downloaded, built, self-tested)"
                if loaded_ms and loaded_ms > published_wall * 1e3
                else ""
            )
            say(f"  swap: v2 published at {published_at - start:.1f}s{adopted}")
            if stall_us and adopted:
                say(f"  swap stall on the predicting thread: {stall_us:.0f} us")
        ok = len(seen) == records and first_v2_at is not None and duplicates == 0
        say("  result: " + ("OK" if ok else "NOT OK (see above)"))
        return 0 if ok else 1


def _swap_metrics(rest: str, job_id: str) -> tuple[float | None, float | None]:
    """The largest last-swap stall (us) and the latest load time (epoch ms) over subtasks."""
    try:
        stalls = model_metrics(rest, job_id, "last_swap_stall_us")
        loaded = model_metrics(rest, job_id, "loaded_at_ms")
    except OSError:  # the job may be finishing; the caller asks again at its next report
        return None, None
    positive = [v for v in stalls.values() if v > 0]
    return (max(positive) if positive else None), (max(loaded.values()) if loaded else None)
