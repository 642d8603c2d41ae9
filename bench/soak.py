"""Soak: the prediction job runs for N minutes while versions, good and bad, are published.

    python bench/soak.py [--minutes 10] [--rate 1000] [--api process] [--parallelism 2]
                         [--publish-every 3] [--json OUT]

`python -m job` runs in its own process (a local mini-cluster, checkpoints every second, a
`dir:` sink that commits on checkpoints), streaming the WINE rows at `--rate` for `--minutes`.
Every `--publish-every` seconds a new version goes into the model directory; every third one is
bad (a rotating catalogue: self-test mismatch, syntax error, a predict that loops forever, a heap
blow-up, NaN outputs, a torn upload whose manifest lands before its bundle). Meanwhile the RSS of
the job's Python process and of its JVM (which hosts the Python of thread mode) is sampled.

At the end every input id must be in the output exactly once, with the prediction of the version
it names (the reference outputs of that version's weights), versions per subtask never going
back, and no bad version ever serving. The figures: records lost / duplicated / mispredicted,
versions published and served, the RSS over time and its growth after the first minute.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project and the test support, `tests.support`

from model.bundle import EXAMPLES, build_bundle, bundle_path
from reloader.layout import MANIFEST_NAME
from reloader.sources import open_source
from tests.support.faults import bad_bundle
from tests.support.flink import RunningJob, free_port, read_outputs
from tests.support.stores import Version, Versions, publish

# Bad uploads in turn; "torn" publishes the manifest first and the bundle one period later.
BAD_KINDS = ("selftest_mismatch", "syntax_error", "infinite_loop", "heap_blowup", "nan_output")


def rss_mb(pid: int) -> tuple[float, float]:
    """(RSS of the process `pid`, RSS of its Java children), MB."""
    import psutil

    try:
        proc = psutil.Process(pid)
        own = proc.memory_info().rss
        java = sum(
            c.memory_info().rss for c in proc.children(recursive=True) if "java" in (c.name() or "")
        )
    except psutil.Error:
        return 0.0, 0.0
    return own / 2**20, java / 2**20


class Publisher(threading.Thread):
    """Publishes a version every `period` s until stopped; every third one is bad."""

    def __init__(self, store: str, versions: Versions, period: float) -> None:
        super().__init__(name="soak-publisher", daemon=True)
        self.store = store
        self.versions = versions
        self.period = period
        self.stopped = threading.Event()
        self.good: dict[str, str] = {}  # label -> weights base ("v1"/"v2")
        self.bad: list[tuple[str, str]] = []  # (label, kind)
        self.label = 0

    def next_good(self) -> Version:
        self.label += 1
        base = "v1" if self.label % 2 else "v2"
        v = self.versions.make(str(self.label), base)
        self.good[v.label] = base
        return v

    def run(self) -> None:
        torn: Version | None = None
        with open_source(self.store) as source:
            n = 0
            while not self.stopped.wait(self.period):
                n += 1
                if torn is not None:  # the torn upload's bundle arrives late: now it is good
                    source.put(torn.manifest.bundle, torn.data, content_type="text/javascript")
                    torn = None
                    continue
                if n % 3:
                    publish(source, self.next_good())
                    continue
                k = (n // 3 - 1) % (len(BAD_KINDS) + 1)
                if k == len(BAD_KINDS):
                    torn = self.next_good()
                    source.put(MANIFEST_NAME, torn.manifest.to_bytes(), content_type="x")
                    self.bad.append((torn.label, "torn (manifest before bundle)"))
                    continue
                self.label += 1
                # Unique bytes: a bad bundle seen before is skipped by its quarantined hash.
                data = bad_bundle(self.versions.bundles["v2"], BAD_KINDS[k])
                data += f"\n/* {self.label} */\n".encode()
                v = self.versions.make(str(self.label), data=data)
                publish(source, v)
                self.bad.append((v.label, BAD_KINDS[k]))


def check(
    out_dir: Path, records: int, good: dict[str, str], refs: dict[str, Any]
) -> dict[str, Any]:
    outputs = read_outputs(out_dir)
    ids: Counter[int] = Counter()
    wrong = errors = backwards = 0
    served: Counter[str] = Counter()
    for recs in outputs.values():
        last = -1
        for rec in recs:
            ids[rec["id"]] += 1
            version = rec.get("model_version", "")
            served[version] += 1
            if "error" in rec:
                errors += 1
                continue
            number = int(version) if version.isdigit() else -1
            backwards += number < last
            last = max(last, number)
            base = good.get(version)
            expected = refs[base][rec["id"] % len(refs[base])] if base else None
            got = list(rec["probabilities"].values())
            if expected is None or not np.allclose(got, expected, atol=1e-5):
                wrong += 1
    return {
        "records_in": records,
        "records_out": sum(ids.values()),
        "records_lost": len(set(range(records)) - set(ids)),
        "records_duplicated": sum(c - 1 for c in ids.values() if c > 1),
        "records_wrong_prediction": wrong,
        "records_error": errors,
        "version_went_back": backwards,
        "versions_served": len(served),
        "records_per_version": dict(sorted(served.items(), key=lambda kv: int(kv[0] or -1))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s")
    parser.add_argument("--api", default="process", choices=("process", "vectorized"))
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--publish-every", type=float, default=3.0, help="seconds")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    wine_refs = {
        base: np.asarray(json.loads((EXAMPLES / base / "reference.json").read_text())["outputs"])
        for base in ("v1", "v2")
    }
    records = int(args.rate * args.minutes * 60)
    with tempfile.TemporaryDirectory(prefix="soak-") as t:
        tmp = Path(t)
        bundles = {}
        for base in ("v1", "v2"):
            build_bundle(EXAMPLES / base, tmp / base)
            bundles[base] = bundle_path(tmp / base).read_bytes()
        versions = Versions(bundles)
        store = str(tmp / "store")
        publisher = Publisher(store, versions, args.publish_every)
        with open_source(store) as source:
            publish(source, publisher.next_good())
        port = free_port()
        rest = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable, "-m", "job", "--model", store, "--source", "wine",
            "--rate", str(args.rate), "--records", str(records), "--api", args.api,
            "--parallelism", str(args.parallelism), "--sink", f"dir:{tmp / 'out'}",
            "--checkpoint-dir", str(tmp / "checkpoints"), "--checkpoint-interval-ms", "1000",
            "--roll-interval", "2 s", "--poll-interval", "0.5", "--cache-dir", str(tmp / "cache"),
            "--config", f"rest.port={port}", "--config", "rest.address=127.0.0.1",
            "--config", "rest.bind-address=127.0.0.1",
            "--config", "metrics.fetcher.update-interval=1 s",
        ]  # fmt: skip
        env = {**os.environ, "FLINK_LOG_DIR": str(tmp / "logs")}
        log = open(tmp / "job.log", "w")  # noqa: SIM115 (closed below, after the job)
        job = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        print(
            f"soak: {records} records at {args.rate:g}/s over {args.minutes:g} min, "
            f"{args.api} path, parallelism {args.parallelism}, a version every "
            f"{args.publish_every:g} s (every third one bad)",
            flush=True,
        )
        samples: list[dict[str, float]] = []
        start = time.monotonic()
        job_id = ""
        failures_seen = 0.0
        try:
            publisher.start()
            next_print = 0.0
            while job.poll() is None:
                now = time.monotonic() - start
                python_mb, java_mb = rss_mb(job.pid)
                samples.append({"t": now, "python_mb": python_mb, "jvm_mb": java_mb})
                if now >= next_print:
                    next_print = now + 10
                    if not job_id:
                        job_id = _job_id(tmp / "job.log")
                    served = _metric(rest, job_id, "version_number")
                    failures_seen = max(
                        failures_seen, sum(_metric(rest, job_id, "reload_failures").values())
                    )
                    print(
                        f"  {now:6.0f}s  python {python_mb:7.1f} MB  jvm {java_mb:7.1f} MB  "
                        f"published {publisher.label} ({len(publisher.bad)} bad)  serving "
                        f"{sorted({int(v) for v in served.values()})}  "
                        f"reload failures {failures_seen:.0f}",
                        flush=True,
                    )
                time.sleep(1.0)  # the sampling period, not a wait for an event
        finally:
            publisher.stopped.set()
            publisher.join(30)
            if job.poll() is None:
                job.terminate()
            job.wait(60)
            log.close()
        elapsed = time.monotonic() - start
        if job.returncode != 0:
            print((tmp / "job.log").read_text()[-5000:])
            raise SystemExit(f"the job failed with exit code {job.returncode}")
        result = check(tmp / "out", records, publisher.good, {b: wine_refs[b] for b in wine_refs})

    bad_labels = {label for label, _ in publisher.bad if label not in publisher.good}
    served_bad = bad_labels & set(result["records_per_version"])
    settled = [s for s in samples if s["t"] >= min(60.0, elapsed / 2)]
    growth = {
        k: (settled[-1][k] - settled[0][k]) if len(settled) > 1 else 0.0
        for k in ("python_mb", "jvm_mb")
    }
    out = {
        **result,
        "minutes": args.minutes,
        "rate": args.rate,
        "api": args.api,
        "parallelism": args.parallelism,
        "wall_s": elapsed,
        "versions_published": publisher.label,
        "bad_published": publisher.bad,
        "bad_served": sorted(served_bad),
        "reload_failures_seen": failures_seen,
        "rss_growth_after_settling_mb": growth,
        "rss_samples": samples[:: max(1, len(samples) // 120)],
    }
    print(
        f"\nsoak: {out['records_out']}/{records} records out, lost {out['records_lost']}, "
        f"duplicated {out['records_duplicated']}, wrong predictions "
        f"{out['records_wrong_prediction']}, error records {out['records_error']}, "
        f"version went back {out['version_went_back']}x; {publisher.label} versions published "
        f"({len(publisher.bad)} bad, served: {len(served_bad)}), {out['versions_served']} served; "
        f"RSS growth after settling: python {growth['python_mb']:+.1f} MB, "
        f"jvm {growth['jvm_mb']:+.1f} MB"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    ok = not (
        out["records_lost"]
        or out["records_duplicated"]
        or out["records_wrong_prediction"]
        or out["records_error"]
        or out["version_went_back"]
        or served_bad
    )
    return 0 if ok else 1


def _job_id(log: Path) -> str:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("submitted job "):
            return line.split()[-1]
    return ""


def _metric(rest: str, job_id: str, name: str) -> dict[str, float]:
    return RunningJob(None, rest, job_id).metric(name) if job_id else {}


if __name__ == "__main__":
    sys.exit(main())
