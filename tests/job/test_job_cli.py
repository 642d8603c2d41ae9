"""`python -m job`: options, env defaults, configuration, and the embedded demo end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from job.cli import build_parser, main, options_from
from job.pipeline import JobOptions, flink_configuration

ROOT = Path(__file__).resolve().parents[2]


def test_help_shows_every_option_with_its_env_var(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--model", "--source", "--sink", "--api", "--parallelism", "--checkpoint-dir",
                 "--poll-interval", "--bundle-time-ms", "--execution-mode"):  # fmt: skip
        assert flag in text
    assert "$PREDICT_JOB_MODEL" in text and "$PREDICT_JOB_BUNDLE_TIME_MS" in text


def test_env_defaults_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDICT_JOB_MODEL", "s3://models/wine")
    monkeypatch.setenv("PREDICT_JOB_PARALLELISM", "2")
    opts = options_from(build_parser().parse_args(["--api", "vectorized", "--config", "a.b=c"]))
    assert opts.model == "s3://models/wine" and opts.parallelism == 2
    assert opts.api == "vectorized" and opts.extra_config == {"a.b": "c"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "m", "--api", "bogus"], "api must be one of"),
        (["--model", "m", "--source", "kafka:x"], "source must be"),
        (["--model", "m", "--sink", "s3:x"], "sink must be"),
        (["--model", "m", "--execution-mode", "fast"], "execution mode"),
        (["--model", "m", "--config", "novalue"], "KEY=VALUE"),
        (["--model", "m", "--batching", "fast"], "batching must be one of latency, throughput"),
        (["--model", "m", "--outputs", "label"], "--outputs picks the typed fields"),
    ],
)
def test_bad_options_are_refused_clearly(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_configuration_follows_the_measured_choices(tmp_path: Path) -> None:
    process = flink_configuration(JobOptions(model="m", api="process"))
    assert process["python.execution-mode"] == "thread"
    assert process["python.fn-execution.bundle.time"] == "3"
    assert process["execution.buffer-timeout"] == "5 ms"
    assert "execution.checkpointing.interval" not in process
    vectorized = flink_configuration(JobOptions(model="m", api="vectorized"))
    assert vectorized["python.execution-mode"] == "process"
    files = flink_configuration(
        JobOptions(model="m", sink=f"dir:{tmp_path}", checkpoint_dir=str(tmp_path / "cp"))
    )
    assert files["execution.checkpointing.interval"] == "5000 ms"
    assert files["execution.checkpointing.dir"].startswith("file:/")
    assert flink_configuration(JobOptions(model="m", execution_mode="process"))[
        "python.execution-mode"
    ] == "process"  # fmt: skip


def test_batching_sets_the_four_settings_and_each_given_one_wins() -> None:
    latency = flink_configuration(JobOptions(model="m"))
    throughput = flink_configuration(JobOptions(model="m", batching="throughput"))
    keys = ("python.fn-execution.bundle.time", "python.fn-execution.bundle.size",
            "python.fn-execution.arrow.batch.size", "execution.buffer-timeout")  # fmt: skip
    assert [latency[k] for k in keys] == ["3", "1000", "1000", "5 ms"]
    assert [throughput[k] for k in keys] == ["100", "10000", "10000", "100 ms"]
    opts = options_from(
        build_parser().parse_args(["--batching", "throughput", "--arrow-batch-size", "4000"])
    )
    mixed = flink_configuration(opts)
    assert [mixed[k] for k in keys] == ["100", "10000", "4000", "100 ms"]


def test_a_job_started_by_flink_run_leaves_its_python_to_the_cluster() -> None:
    """Run locally, the job gives the mini-cluster its own interpreter and path; submitted by
    `flink run` (docs/deploy.md), those are the cluster's (-pyexec, -pyfs, its config)."""
    local = flink_configuration(JobOptions(model="m"))
    assert local["python.executable"] == sys.executable and "python.pythonpath" in local
    submitted = flink_configuration(JobOptions(model="m"), submitted=True)
    python = {"python.executable", "python.client.executable", "python.pythonpath"}
    assert not python & set(submitted)
    s3 = flink_configuration(JobOptions(model="m", checkpoint_dir="s3://flink/checkpoints"))
    assert s3["execution.checkpointing.dir"] == "s3://flink/checkpoints"  # a URI as it is


@pytest.mark.slow
def test_demo_runs_unattended_and_adopts_v2(tmp_path: Path) -> None:
    """`make run` without a TTY: the embedded demo streams, publishes v2 midway, adopts it and
    prints the summary; exit 0 means every record came out once and v2 served. Its figures: the
    job keeps up with the source (the demo's own reading is not the bottleneck), latency per
    version, and v2's first prediction after its publish."""
    env = dict(os.environ, CI="true", FLINK_LOG_DIR=str(tmp_path / "logs"))
    proc = subprocess.run(
        [sys.executable, "-m", "job", "--demo-seconds", "8", "--rate", "500"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert "publishing v2" in out and "first prediction by v2" in out
    assert "records in: 4000, out: 4000 distinct, 0 duplicates" in out
    summary = out[out.index("summary") :]
    assert "v1" in summary and "v2" in summary and "result: OK" in summary
    rows = re.finditer(r"^ +(v[12]) +\d+ +[\d.]+ +([\d.]+) +([\d.]+)$", summary, re.M)
    latency = {m[1]: (float(m[2]), float(m[3])) for m in rows}
    assert set(latency) == {"v1", "v2"}, summary
    assert all(0 < p50 <= p99 for p50, p99 in latency.values()), summary
    rates = re.search(
        r"throughput: ([\d,]+) records/s out, ([\d,]+) records/s in \(source rate 500/s", summary
    )
    assert rates, summary
    assert float(rates[1].replace(",", "")) >= 0.95 * 500, summary
    swap = re.search(
        r"v2 published at ([\d.]+)s, first v2 prediction at ([\d.]+)s \(\+([\d.]+)s\)", summary
    )
    assert swap, summary
    assert float(swap[1]) <= float(swap[2]) and float(swap[3]) >= 0, summary


@pytest.mark.parametrize(
    ("argv", "records"),
    [
        (["--records", "20000"], 20000),  # the old default, given explicitly
        (["--records", "300"], 300),
        ([], 8 * 250),  # none given: rate x seconds
    ],
)
def test_demo_streams_the_records_asked_for(argv: list[str], records: int) -> None:
    from job.demo import stream_size

    opts = options_from(build_parser().parse_args(["--rate", "250", *argv]))
    assert stream_size(opts, seconds=8) == records


def test_options_survive_the_round_trip_through_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo starts the job with `to_argv(opts)`: the job must get the same options."""
    from job.cli import to_argv

    for name in [k for k in os.environ if k.startswith("PREDICT_JOB_")]:
        monkeypatch.delenv(name)
    opts = JobOptions(
        model="/m", api="vectorized", parallelism=2, poll_interval=0.5, records=20000, rate=0.0,
        extra_config={"rest.port": "1234", "a": "b=c"},
    )  # fmt: skip
    assert options_from(build_parser().parse_args(to_argv(opts))) == opts


def _job(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "job", *argv],
        cwd=ROOT,
        env=dict(os.environ, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    everything = proc.stdout + proc.stderr
    assert proc.returncode in (1, 2), everything[-3000:]
    assert "Traceback" not in everything and "at org.apache" not in everything, everything[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0]


def test_an_unreachable_store_fails_before_submitting_with_one_line() -> None:
    proc = _job(
        ["--model", "s3://models/wine"],
        AWS_ENDPOINT_URL="http://127.0.0.1:1",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_REGION="us-east-1",
    )
    _one_line_error(proc, "SourceError", "s3://models/wine/version.json", "http://127.0.0.1:1")
    assert "submitted job" not in proc.stdout


def test_a_missing_model_dir_fails_with_one_line(tmp_path: Path) -> None:
    _one_line_error(_job(["--model", str(tmp_path / "missing")]), str(tmp_path / "missing"))


def test_a_missing_source_dir_fails_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "in"
    _one_line_error(_job(["--model", str(tmp_path), "--source", f"dir:{missing}"]), str(missing))


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--model", "m", "--parallelism", "two"], {}, "--parallelism"),
        (["--model", "m", "--api", "bogus"], {}, "api must be one of"),
        (["--model", "m"], {"PREDICT_JOB_RATE": "fast"}, "PREDICT_JOB_RATE"),
        (["--bogus-flag"], {}, "--bogus-flag"),
    ],
)
def test_bad_options_give_one_line(argv: list[str], env: dict[str, str], needle: str) -> None:
    proc = _job(argv, **env)
    _one_line_error(proc, needle)
    assert proc.returncode == 2


def test_a_failed_job_is_reported_by_its_innermost_cause() -> None:
    """A job that fails on the cluster (e.g. open() cannot load the model after the restarts) is
    one line: the innermost cause of Flink's exception chain, a Python error by its name."""
    from job.cli import _root_cause

    class Java:
        def __init__(self, message: str, cause: Java | None = None) -> None:
            self.message, self.cause = message, cause

        def getCause(self) -> Java | None:  # the Java API
            return self.cause

        def getMessage(self) -> str:
            return self.message

    inner = Java("<class 'reloader.errors.SourceError'>: cannot reach the S3 endpoint\n  File ...")
    error = type("Py4JJavaError", (Exception,), {})()
    error.java_exception = Java("Job execution failed.", Java("Recovery is suppressed", inner))
    assert _root_cause(error) == "SourceError: cannot reach the S3 endpoint"
