"""The embedded demo (`make run`, `python -m job` without `--model`).

The demo starts the job itself (`python -m job --model DIR --sink print ...`: a local
mini-cluster) on the WINE rows replayed at a steady rate. The model store is a temporary
directory seeded with `model/examples/wine/v1` (a weak model). The demo reads the print sink from
the job's stdout, as `bench/job_latency.py` does; when half the records are out it publishes v2 (a
good one) into the directory and the running job adopts it. The summary shows, per version, the
records, their accuracy and end-to-end latency (arrival here minus creation in the source), the
records/s in and out, how long after the publish the first v2 prediction arrived, and what the
swap cost the predicting thread (the job's model metrics, from Flink's REST API).

Why the job's stdout: reading the results in this process with `TableResult.collect()` took
~490 us of this process's CPU per record (py4j round trips per row: 27% of a core at 500/s) and
as much again in the JVM (the job's processes at 77% of a core against 32% with the print sink,
measured over the same 10k records). On two busy cores that reading, not the job, fell behind
a 500 records/s stream (346 records/s, v2's first prediction 12 s after its publish, results
seconds old). A line from the pipe costs ~21 us.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from job.metrics import local_rest, model_metrics
from job.pipeline import JobOptions
from model.bundle import EXAMPLES, BuildError, build_bundle
from model.data import load_wine_csv
from reloader.publish import publish_build

# Records created in the stream's first 2 s are left out of the latency figures (JIT and V8
# warm-up, the job's start), as in bench/job_latency.py, so the two agree.
WARM_UP_MS = 2000.0


def stream_size(opts: JobOptions, seconds: float) -> int:
    """How many records the demo streams: `--records` if given, else rate x seconds."""
    return opts.records if opts.records is not None else int(opts.rate * seconds)


def run_demo(opts: JobOptions, *, seconds: float = 40.0, out: TextIO | None = None) -> int:
    stream = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=stream, flush=True)

    from job.cli import to_argv

    with tempfile.TemporaryDirectory(prefix="tf-on-flink-demo-") as tmp:
        root = Path(tmp)
        store = root / "model"
        say("building the v1 and v2 bundles from model/examples/wine ...")
        try:
            build_bundle(EXAMPLES / "v1", root / "build-v1")
            build_bundle(EXAMPLES / "v2", root / "build-v2")
        except BuildError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        publish_build(root / "build-v1", str(store))
        rest, rest_conf = local_rest()
        opts = replace(
            opts,
            model=str(store),
            source="wine",
            sink="print",
            records=stream_size(opts, seconds),
            cache_dir=opts.cache_dir or str(root / "cache"),
            poll_interval=min(opts.poll_interval, 1.0),
            extra_config={**rest_conf, **opts.extra_config},
        )
        say(
            f"streaming {opts.records} WINE records at {opts.rate:g}/s through the {opts.api} "
            f"path (parallelism {opts.parallelism}); model store: {store}"
        )
        # The demo built v1 a moment ago: the job's pre-flight check of the store is skipped.
        argv = [sys.executable, "-m", "job", "--skip-check", *to_argv(opts)]
        log_path = root / "job.log"
        with log_path.open("w") as log:
            job = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
        run = _Run(opts, say, root / "build-v2", rest)
        try:
            assert job.stdout is not None
            run.read(job.stdout)
            code = job.wait()
        finally:
            run.stop()
            _end(job)
        if code != 0:
            tail = log_path.read_text().splitlines()[-10:]
            print(f"error: the job exited with {code}; its last log lines:", file=sys.stderr)
            print("\n".join(f"  {line}" for line in tail), file=sys.stderr)
            return 1
        return run.summary()


def _end(job: subprocess.Popen[str]) -> None:
    if job.poll() is None:
        job.terminate()
        try:
            job.wait(timeout=30)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()


@dataclass
class _Version:
    records: int = 0
    right: int = 0
    latency: list[float] = field(default_factory=list)  # ms, after the warm-up


class _Run:
    """Reads the job's output lines, publishes v2 midway and keeps the figures."""

    def __init__(self, opts: JobOptions, say: Any, v2_build: Path, rest: str) -> None:
        self.opts = opts
        self.records = opts.records or 0
        self.say = say
        self.v2_build = v2_build
        self.rest = rest
        self.classes = load_wine_csv()[3]
        self.versions: dict[str, _Version] = defaultdict(_Version)
        self.seen: set[int] = set()
        self.duplicates = self.errors = 0
        self.started = time.time() * 1e3
        self.job_id = ""
        self.start_ms: float | None = None  # the first record's creation: t = 0 below
        # Records created after the warm-up: creation and arrival times (ms), for the rates.
        self.created: list[float] = []
        self.arrived: list[float] = []
        self.published_ms: float | None = None
        self.v2_sha256 = ""
        self.first_v2_ms: float | None = None
        self.metrics: _SwapMetrics | None = None
        self._next_report = 0.0
        self._window: list[float] = []

    def read(self, lines: Iterable[str]) -> None:
        for line in lines:
            now = time.time() * 1e3
            start, end = line.find("{"), line.rfind("}")
            if start < 0:
                if line.startswith("submitted job "):
                    self.job_id = line.split()[-1]
                continue
            self.add(json.loads(line[start : end + 1]), now)

    def add(self, rec: dict[str, Any], now: float) -> None:
        created = float(rec["created_ms"])
        if self.start_ms is None:
            self.start_ms = created
            self.say(
                f"   first prediction {(now - self.started) / 1e3:.1f}s after the job was started "
                "(Python, JVM, mini-cluster, model v1 loaded)"
            )
        steady = created >= self.start_ms + WARM_UP_MS
        if steady:
            self.created.append(created)
            self.arrived.append(now)
        rid = int(rec["id"])
        self.duplicates += rid in self.seen
        self.seen.add(rid)
        version = rec.get("model_version", "?")
        if "error" in rec:
            self.errors += 1
        else:
            v = self.versions[version]
            v.records += 1
            v.right += rec["label"] == f"class_{self.classes[rid % len(self.classes)]}"
            if steady:
                v.latency.append(now - created)
        self._window.append(now - created)
        if self.published_ms is None and len(self.seen) >= self.records // 2:
            self.publish()
        if self.first_v2_ms is None and rec.get("model_sha256") == self.v2_sha256:
            self.first_v2_ms = now
            self.say(
                f"-- {self._t(now)}  first prediction by v2 received, "
                f"{(now - (self.published_ms or now)) / 1e3:.2f}s after the publish; no restart"
            )
        if now >= self._next_report:
            self._next_report = now + 1000
            self.report(rec, now)

    def publish(self) -> None:
        now = time.time() * 1e3
        self.say(f"-- {self._t(now)}  publishing v2 into the model store")
        self.published_ms = now
        self.v2_sha256 = publish_build(self.v2_build, self.opts.model).sha256
        if self.job_id:
            self.metrics = _SwapMetrics(self.rest, self.job_id, now, self.opts.parallelism)
            self.metrics.start()

    def report(self, rec: dict[str, Any], now: float) -> None:
        window, self._window = self._window, []
        p50 = f"{np.percentile(window, 50):4.0f}" if window else "   -"
        best = max(rec.get("probabilities", {}).values(), default=0.0)
        self.say(
            f"   {self._t(now)}  {len(self.seen):>6} out  latency p50 {p50} ms  "
            f"model {rec.get('model_version', '?')} ({rec.get('model_sha256', '')[:12]})  "
            f"e.g. id={rec['id']} {rec.get('label', rec.get('error'))} p={best:.2f}"
        )

    def stop(self) -> None:
        if self.metrics is not None:
            self.metrics.stopped.set()
            self.metrics.join(timeout=5)

    def _t(self, wall_ms: float) -> str:
        return f"{(wall_ms - (self.start_ms or wall_ms)) / 1e3:5.1f}s"

    # -- the summary ----------------------------------------------------------------------------

    def summary(self) -> int:
        say = self.say
        say()
        say("summary")
        say(f"  {'version':<10} {'records':>8} {'accuracy':>9} {'latency p50':>12} {'p99 ms':>7}")
        for name, v in sorted(self.versions.items()):
            p50, p99 = np.percentile(v.latency, [50, 99]) if v.latency else (np.nan, np.nan)
            say(
                f"  {name:<10} {v.records:>8} {v.right / max(v.records, 1):>9.3f} "
                f"{p50:>12.1f} {p99:>7.1f}"
            )
        say(
            "  latency: arrival here - creation in the source (Flink, prediction, print sink, "
            f"pipe), records of the first {WARM_UP_MS / 1e3:g} s (warm-up) left out"
        )
        n = len(self.seen)
        source = f"{self.opts.rate:g}/s" if self.opts.rate else "unthrottled"
        say(
            f"  records in: {self.records}, out: {n} distinct, {self.duplicates} duplicates, "
            f"{self.errors} errors"
        )
        # Both rates over the same records (those created after the warm-up): created at
        # "in" per second, arrived here at "out" per second. A job that keeps up has out = in.
        rate_in, rate_out = _rate(self.created), _rate(self.arrived)
        say(
            f"  throughput: {rate_out:,.0f} records/s out, {rate_in:,.0f} records/s in (source "
            f"rate {source}; the {len(self.arrived)} records after the warm-up)"
        )
        if self.published_ms is not None:
            say(self._swap())
        ok = n == self.records and self.first_v2_ms is not None and self.duplicates == 0
        say("  result: " + ("OK" if ok else "NOT OK (see above)"))
        return 0 if ok else 1

    def _swap(self) -> str:
        published = self.published_ms or 0.0
        text = f"  swap: v2 published at {self._t(published).strip()}"
        if self.first_v2_ms is not None:
            text += (
                f", first v2 prediction at {self._t(self.first_v2_ms).strip()} "
                f"(+{(self.first_v2_ms - published) / 1e3:.2f}s)"
            )
        found = self.metrics.found if self.metrics is not None else None
        if found is not None:
            loaded_ms, build_ms, stall_us = found
            text += (
                f"\n  v2 serving in every subtask {(loaded_ms - published) / 1e3:.2f}s after the "
                f"publish (seen, downloaded, verified, then built and self-tested in "
                f"{build_ms:.0f} ms); swap stall on the predicting thread: {stall_us:.0f} us"
            )
        return text


def _rate(times_ms: list[float]) -> float:
    """Events per second over the span of their times."""
    span = (max(times_ms) - min(times_ms)) / 1e3 if times_ms else 0.0
    return (len(times_ms) - 1) / span if span > 0 else 0.0


class _SwapMetrics(threading.Thread):
    """Reads the job's model metrics after a publish until every subtask serves a build newer
    than the publish: (loaded at, build ms, swap stall us), the latest over subtasks."""

    def __init__(self, rest: str, job_id: str, since_ms: float, subtasks: int) -> None:
        super().__init__(name="demo-swap-metrics", daemon=True)
        self.rest, self.job_id, self.since_ms, self.subtasks = rest, job_id, since_ms, subtasks
        self.stopped = threading.Event()
        self.found: tuple[float, float, float] | None = None

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            try:
                loaded = model_metrics(self.rest, self.job_id, "loaded_at_ms")
                if len(loaded) < self.subtasks or min(loaded.values()) < self.since_ms:
                    continue
                build = model_metrics(self.rest, self.job_id, "last_build_ms")
                stall = model_metrics(self.rest, self.job_id, "last_swap_stall_us")
            except OSError:  # not reported yet, or the job is finishing
                continue
            self.found = (
                max(loaded.values()),
                max(build.values(), default=0.0),
                max(stall.values(), default=0.0),
            )
            return
