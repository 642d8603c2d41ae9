"""`python -m job`: the prediction job. With no `--model` it runs the embedded demo (`job.demo`).

Every option has an environment-variable default (shown in `--help`), so a job submitted with
`flink run --python` or started by a scheduler can be configured without editing its command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from job.pipeline import APIS, MODES, JobOptions

ENV_PREFIX = "PREDICT_JOB_"
_DEFAULTS = JobOptions()

# flag -> (JobOptions field, type, help)
_FLAGS: list[tuple[str, str, type, str]] = [
    ("--model", "model", str, "model store URL: a directory, http(s)://..., s3://bucket/prefix"),
    ("--source", "source", str, "'wine' (the WINE rows replayed) or dir:PATH (JSON lines)"),
    ("--sink", "sink", str, "'print' or dir:PATH (rolling files, committed on checkpoints)"),
    ("--api", "api", str, f"prediction path: {', '.join(APIS)} (record: one V8 call per row)"),
    ("--parallelism", "parallelism", int, "subtasks of the predict operator"),
    ("--checkpoint-dir", "checkpoint_dir", str, "where checkpoints go (turns them on)"),
    ("--checkpoint-interval-ms", "checkpoint_interval_ms", int, "0: on only for a dir: sink"),
    ("--poll-interval", "poll_interval", float, "seconds between checks for a new model version"),
    ("--public-key", "public_key", str, "Ed25519 public key: only signed manifests are loaded"),
    ("--cache-dir", "cache_dir", str, "verified-bundle cache (default: the user cache dir)"),
    ("--rate", "rate", float, "wine source: records/s over all subtasks, 0 = unthrottled"),
    ("--records", "records", int, "wine source: how many records"),
    ("--batch-size", "batch_size", int, "process path: predict once this many are pending"),
    ("--max-delay-ms", "max_delay_ms", int, "process path: ...or the oldest waited this long"),
    ("--bundle-time-ms", "bundle_time_ms", int, "python.fn-execution.bundle.time (latency)"),
    ("--bundle-size", "bundle_size", int, "python.fn-execution.bundle.size"),
    ("--arrow-batch-size", "arrow_batch_size", int, "vectorized path: rows per Arrow batch"),
    ("--buffer-timeout-ms", "buffer_timeout_ms", int, "execution.buffer-timeout (latency)"),
    ("--execution-mode", "execution_mode", str, f"python.execution-mode: {', '.join(MODES)}"),
    ("--roll-interval", "roll_interval", str, "dir: sink: close part files after, e.g. '1 min'"),
    ("--restart-attempts", "restart_attempts", int, "fixed-delay restarts before giving up"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m job",
        description="Real-time prediction in Flink with a TF.js model that is swapped while the "
        "job runs. Without --model: the embedded demo (a local mini-cluster, the WINE stream, "
        "v2 published midway).",
    )
    for flag, name, kind, text in _FLAGS:
        env = ENV_PREFIX + name.upper()
        default = getattr(_DEFAULTS, name)
        raw = os.environ.get(env)
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            default=kind(raw) if raw not in (None, "") else default,
            help=f"{text} (default: ${env}, else {default!r})",
        )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other Flink setting, e.g. --config state.backend.type=rocksdb (repeatable)",
    )
    parser.add_argument(
        "--demo-seconds",
        type=float,
        default=float(os.environ.get(ENV_PREFIX + "DEMO_SECONDS") or 40),
        help="demo only: how long the WINE stream lasts (default: $PREDICT_JOB_DEMO_SECONDS, "
        "else 40)",
    )
    return parser


def options_from(args: argparse.Namespace) -> JobOptions:
    values: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in fields(JobOptions) if hasattr(args, f.name)
    }
    extra = {}
    for item in args.config:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--config takes KEY=VALUE, got {item!r}")
        extra[key.strip()] = value.strip()
    values["extra_config"] = extra
    return JobOptions(**values)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        opts = options_from(args)
        if not opts.model:
            from job.demo import run_demo

            return run_demo(opts, seconds=args.demo_seconds)
        opts.validate()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from job.pipeline import build, environments, sink

    env, t_env = environments(opts)
    result = sink(opts, t_env, build(opts, env, t_env))
    client = result.get_job_client()
    if client is not None:
        print(f"submitted job {client.get_job_id()}", flush=True)
    if _attached(env):  # `flink run -d` returns once the job is submitted
        result.wait()
    return 0


def _attached(env: Any) -> bool:
    from pyflink.java_gateway import get_gateway

    options = get_gateway().jvm.org.apache.flink.configuration.DeploymentOptions
    conf = env._j_stream_execution_environment.getConfiguration()
    return bool(conf.get(options.ATTACHED))
