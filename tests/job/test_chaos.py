"""Chaos: the running job (mini-cluster, checkpoints, exactly-once file sink) under one fault after
another, with records streaming all along.

The model comes from an HTTP store (`tests.support.http_store`: fault injection, restartable on
its port) and the job only accepts manifests signed with the team's key. Faults, in turn: the store
killed and restarted, HTTP 500s, slow responses, a torn upload (manifest before bundle), bundles
that loop forever, exhaust their heap, return NaN, fail their self-test, a bundle swapped for
another under the same name, an unsigned manifest, and a task failure. After each: the job still
runs, keeps serving the last good version, the fault shows in the Flink metrics and in exactly
one log line, and the next good version is adopted. Last, a canary candidate (the job runs with
`--canary canary` all along, the channel absent until then) that breaks once it serves: the job
rolls it back by itself and serves its rows with the serving version. At the end every input id
is in the output exactly once, predicted by the version it names. The test prints a table per
fault.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

import reloader.publish
from job.pipeline import JobOptions
from reloader.layout import MANIFEST_NAME
from reloader.manifest import generate_key, public_key_pem
from reloader.sources import open_source
from tests.support.faults import FAILS_WHEN_SERVING, bad_bundle
from tests.support.flink import (
    Feeder,
    check_predictions,
    ids_out,
    read_outputs,
    rest_get,
    running_job,
)
from tests.support.http_store import HttpStore
from tests.support.stores import Version, Versions, publish
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

KEY = generate_key()
STRANGER = generate_key()


class Lines(logging.Handler):
    """The reloader's log records. On the `reloader` logger itself, not the root: the Python
    worker (Beam's SDK harness, in this process in local mode) replaces the root's handlers."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Outcome:
    fault: str
    detected: bool
    kept_serving: bool
    one_log_line: bool | None
    recovered_after_s: float
    ids: tuple[int, int] = (0, 0)  # ids fed while this fault was on
    lost: int = 0


class Chaos:
    def __init__(
        self, job: Any, root: Path, versions: Versions, feeder: Feeder, log: Lines
    ) -> None:
        self.job = job
        self.store = open_source(str(root))  # writes go straight to the served directory
        self.versions = versions
        self.feeder = feeder
        self.log = log
        self.label = 0
        self.serving = 0
        self.good: dict[str, str] = {}
        self.outcomes: list[Outcome] = []

    # -- publishing ---------------------------------------------------------------------------

    def next_version(self, data: bytes | None = None) -> Version:
        self.label += 1
        base = "v1" if self.label % 2 else "v2"
        return self.versions.make(str(self.label), base, data=data)

    def publish_good(self) -> Version:
        v = self.next_version()
        publish(self.store, v, manifest=v.manifest.signed(KEY))
        self.good[v.label] = v.base
        return v

    def publish_bad(self, kind: str) -> None:
        data = bad_bundle(self.versions.bundles["v2"], kind)
        v = self.next_version(data)
        publish(self.store, v, manifest=v.manifest.signed(KEY))

    # -- observing ----------------------------------------------------------------------------

    def metric(self, name: str) -> float:
        values = self.job.metric(name)
        return next(iter(values.values())) if values else -1.0

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in list(self.log.records) if r.levelno >= logging.WARNING]

    def running(self) -> bool:
        return self.job.state() == "RUNNING"

    def wait_serving(self, version: int, what: str, timeout: float = 60.0) -> None:
        self.job.wait_metric("version_number", lambda vs: vs == [version], what, timeout=timeout)

    # -- one fault ----------------------------------------------------------------------------

    def fault(
        self,
        name: str,
        inject: Callable[[], None],
        *,
        counter: str = "reload_failures",
        needle: str = "",
        recover: Callable[[], Version] | None = None,
    ) -> None:
        """Injects a fault; waits until the metrics show it; checks the job still runs and serves
        the last good version with one log line; then recovers (by default: publishes a good
        version) and waits until that is served."""
        before = self.metric(counter)
        logged = len(self.warnings())
        first_id = self.feeder.next_id
        inject()
        detected = True
        try:
            self.job.wait_metric(counter, lambda vs: vs[0] > before, f"{name}: {counter} rises")
        except pytest.fail.Exception:
            detected = False
        # Two more polls of the same fault: counted again, never logged again.
        checks = self.metric("checks")
        self.job.wait_metric("checks", lambda vs: vs[0] >= checks + 2, f"{name}: two more polls")
        kept = self.running() and self.metric("version_number") == self.serving
        new_lines = [line for line in self.warnings()[logged:] if "reachable again" not in line]
        one_line = len(new_lines) == 1 and needle in new_lines[0]
        t0 = time.monotonic()
        v = recover() if recover else self.publish_good()
        self.wait_serving(int(v.label), f"{name}: recovered to version {v.label}")
        self.serving = int(v.label)
        recovered = time.monotonic() - t0
        self.outcomes.append(
            Outcome(name, detected, kept, one_line, recovered, (first_id, self.feeder.next_id))
        )
        assert detected and kept and one_line, (self.outcomes[-1], new_lines)


def test_the_job_survives_every_fault_and_loses_nothing(
    tmp_path: Path, versions: Versions, wine: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from poison import PoisonedPredict

    lines = Lines()
    reloader_log = logging.getLogger("reloader")
    reloader_log.addHandler(lines)
    level = reloader_log.level
    reloader_log.setLevel(logging.INFO)
    root = tmp_path / "http"
    (root / "wine").mkdir(parents=True)
    http = HttpStore(root)
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    pub = tmp_path / "team.pub"
    pub.write_bytes(public_key_pem(KEY.public_key()))
    marker = tmp_path / "poisoned"
    opts = JobOptions(
        model=http.url("wine"),
        source=f"dir:{in_dir}",
        sink=f"dir:{tmp_path / 'out'}",
        api="process",
        execution_mode="process",  # the Python workers log into this process (caplog)
        parallelism=1,
        checkpoint_interval_ms=500,
        roll_interval="1 s",
        poll_interval=0.2,
        public_key=str(pub),
        cache_dir=str(tmp_path / "cache"),
        max_delay_ms=20,
        canary="canary",
        canary_fraction=0.3,
    )
    settings = replace(
        opts.model_settings(),
        call_timeout=1.0,
        heap_limit_mb=64,
        max_backoff=0.5,
        source_options={"timeout": 1.0},
    )
    feeder = Feeder(in_dir, wine)
    # An id outside the fed range: the feeder never writes it; the task-failure fault does.
    poison_id = 10**9
    predictor = PoisonedPredict(
        settings, poison_id=poison_id, marker=str(marker), batch_size=64, max_delay_ms=20
    )
    chaos: Chaos | None = None
    try:
        with open_source(str(root / "wine")) as store:
            first = versions.make("0", "v2")
            publish(store, first, manifest=first.manifest.signed(KEY))
        feeder.write_chunk()
        with running_job(opts, tmp_path, predictor=predictor) as job:
            chaos = Chaos(job, root / "wine", versions, feeder, lines)
            chaos.good["0"] = "v2"
            try:
                chaos.wait_serving(0, "serving version 0", timeout=120)
            except BaseException:
                print(rest_get(job.rest, f"/jobs/{job.job_id}/exceptions"))
                raise
            feeder.start()
            _faults(chaos, http, marker, poison_id)
            feeder.stopped.set()
            feeder.join()
            total = feeder.next_id
            wait_until(
                lambda: ids_out(tmp_path / "out", total) >= total,
                timeout=120,
                what=f"all {total} records committed",
            )
            job.result.get_job_client().cancel().result()
        records = [r for recs in read_outputs(tmp_path / "out").values() for r in recs]
        ids = Counter(r["id"] for r in records)
        missing = set(range(total)) - set(ids)
        for o in chaos.outcomes:
            o.lost = len(missing & set(range(*o.ids)))
        with capsys.disabled():  # the table is the test's report: shown even when it passes
            _print_table(chaos.outcomes, total, len(missing), sum(c - 1 for c in ids.values()))
        assert not missing, f"lost: {sorted(missing)[:20]}"
        assert poison_id in ids, "the poison record was not predicted after the restart"
        assert max(ids.values()) == 1, "duplicates"
        check_predictions(records, chaos.good, wine)
    finally:
        feeder.stopped.set()
        reloader_log.removeHandler(lines)
        reloader_log.setLevel(level)
        if chaos is not None:
            chaos.store.close()
        http.stop()


def _faults(chaos: Chaos, http: HttpStore, marker: Path, poison_id: int) -> None:
    def store_down() -> None:
        http.stop()

    def store_back() -> Version:
        http.start()  # the same port
        return chaos.publish_good()

    chaos.fault("store killed, restarted", store_down, needle="SourceError", recover=store_back)

    def clear_then_publish() -> Version:
        http.clear()
        return chaos.publish_good()

    chaos.fault(
        "HTTP 500s",
        lambda: http.fault(MANIFEST_NAME, status=500),
        needle="500",
        recover=clear_then_publish,
    )
    chaos.fault(
        "slow responses (2 s, timeout 1 s)",
        lambda: http.fault(MANIFEST_NAME, status=0, delay=2.0),
        needle="no answer within 1 s",
        recover=clear_then_publish,
    )

    torn: list[Version] = []

    def torn_upload() -> None:
        v = chaos.next_version()
        chaos.good[v.label] = v.base
        chaos.store.put(MANIFEST_NAME, v.manifest.signed(KEY).to_bytes(), content_type="x")
        torn.append(v)

    def bundle_arrives() -> Version:
        v = torn[0]
        chaos.store.put(v.manifest.bundle, v.data, content_type="x")
        return v

    chaos.fault(
        "torn upload (manifest first)",
        torn_upload,
        counter="not_ready",
        needle="NotReady",
        recover=bundle_arrives,
    )
    for kind, name, needle in (
        ("infinite_loop", "bundle loops forever", "BundleTimeout"),
        ("heap_blowup", "bundle exhausts its heap", "BundleMemoryError"),
        ("nan_output", "bundle returns NaN", "non-finite output"),
        ("selftest_mismatch", "bundle fails its self-test", "SelfTestError"),
    ):
        chaos.fault(name, lambda kind=kind: chaos.publish_bad(kind), needle=needle)

    def swapped_bundle() -> None:
        v = chaos.next_version()
        other = chaos.versions.bundles["v1"] + b"\n/* not the bundle the manifest names */\n"
        chaos.store.put(v.manifest.bundle, other, content_type="x")
        chaos.store.put(MANIFEST_NAME, v.manifest.signed(KEY).to_bytes(), content_type="x")

    chaos.fault("bundle swapped under its name", swapped_bundle, needle="IntegrityError")

    stranger: list[Version] = []

    def signed_by_a_stranger() -> None:
        v = chaos.next_version()
        publish(chaos.store, v, manifest=v.manifest.signed(STRANGER))
        stranger.append(v)

    chaos.fault("manifest signed by another key", signed_by_a_stranger, needle="SignatureError")
    fetched = {path for _, path, _ in http.requests()}
    assert not any(path.endswith(stranger[0].manifest.bundle) for path in fetched), (
        "the bundle of a manifest that failed verification was downloaded"
    )

    # A task failure: a record that raises once; Flink restarts the task from its checkpoint.
    restarts = chaos.job.restarts()
    serving = chaos.serving

    def poison() -> None:
        records = chaos.feeder.wine.records
        line = json.dumps({"id": poison_id, **records[poison_id % len(records)]})
        (chaos.feeder.in_dir / "poison.jsonl").write_text(line + "\n")

    t0 = time.monotonic()
    first_id = chaos.feeder.next_id
    poison()
    wait_until(lambda: chaos.job.restarts() > restarts, timeout=60, what="the task restarted")
    wait_until(chaos.running, timeout=60, what="the job running again")
    chaos.wait_serving(serving, "serving the last good version after the restart")
    assert marker.exists()
    chaos.outcomes.append(
        Outcome(
            "task failure (poison record)",
            detected=True,
            kept_serving=True,
            one_log_line=None,
            recovered_after_s=time.monotonic() - t0,
            ids=(first_id, chaos.feeder.next_id),
        )
    )

    # A canary candidate that breaks once it serves: rolled back by the job itself; the rows of
    # the batches it failed are scored by the serving version (none lost, none an error).
    rollbacks = chaos.metric("canary.rollbacks")
    t0 = time.monotonic()
    first_id = chaos.feeder.next_id
    broken = chaos.next_version(chaos.versions.bundles["v2"] + FAILS_WHEN_SERVING.encode())
    chaos.good[broken.label] = "v2"  # until it breaks, its rows are its own (v2) predictions
    reloader.publish.publish(
        chaos.store, broken.data, broken.manifest.signed(KEY), channel="canary"
    )
    chaos.job.wait_metric(
        "canary.rollbacks", lambda vs: vs[0] > rollbacks, "the canary rolled back", timeout=120
    )
    kept = chaos.running() and chaos.metric("version_number") == chaos.serving
    chaos.outcomes.append(
        Outcome(
            "canary candidate breaks (rolled back)",
            detected=chaos.metric("canary.failed_batches") >= 3,
            kept_serving=kept,
            one_log_line=None,
            recovered_after_s=time.monotonic() - t0,
            ids=(first_id, chaos.feeder.next_id),
        )
    )
    assert chaos.outcomes[-1].detected and kept, chaos.outcomes[-1]


def _print_table(outcomes: list[Outcome], total: int, lost: int, duplicated: int) -> None:
    print(f"\nchaos: {total} records fed, {lost} lost, {duplicated} duplicated")
    print("| fault | detected | kept serving | one log line | recovered after (s) | records lost |")
    print("|---|---|---|---|---:|---:|")
    yes = {True: "yes", False: "NO", None: "n/a"}
    for o in outcomes:
        print(
            f"| {o.fault} | {yes[o.detected]} | {yes[o.kept_serving]} | {yes[o.one_log_line]} "
            f"| {o.recovered_after_s:.2f} | {o.lost} |"
        )
