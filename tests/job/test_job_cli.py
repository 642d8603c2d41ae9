"""`python -m job`: options, env defaults, configuration, and the embedded demo end to end."""

from __future__ import annotations

import os
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
    assert process["python.fn-execution.bundle.time"] == "10"
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


@pytest.mark.slow
def test_demo_runs_unattended_and_adopts_v2(tmp_path: Path) -> None:
    """`make run` without a TTY: the embedded demo streams, publishes v2 midway, adopts it and
    prints the summary; exit 0 means every record came out once and v2 served."""
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
