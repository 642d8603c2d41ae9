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
from pathlib import Path
from typing import Any, NoReturn

from job.mixin import parameter_value
from job.pipeline import APIS, BATCHING, FILE_SOURCES, MODES, TYPED_FORMATS, JobOptions
from reloader.errors import ReloaderError

ENV_PREFIX = "PREDICT_JOB_"
_DEFAULTS = JobOptions()

# flag -> (JobOptions field, type, help)
_FLAGS: list[tuple[str, str, type, str]] = [
    ("--model", "model", str, "model store URL: a directory, http(s)://..., s3://bucket/prefix"),
    (
        "--source",
        "source",
        str,
        "'wine' (the WINE rows replayed), dir:PATH (JSON lines, followed), files:PATH (once), "
        "csv:PATH or json:PATH (typed columns, Flink's filesystem connector)",
    ),
    (
        "--sink",
        "sink",
        str,
        "'print', 'blackhole' (discarded), dir:PATH (JSON lines, committed on checkpoints), "
        "csv:PATH or json:PATH (typed)",
    ),
    (
        "--columns",
        "columns",
        str,
        "csv:/json: source: its columns as SQL, e.g. 'id BIGINT, x DOUBLE' (default: id + inputs)",
    ),
    (
        "--outputs",
        "outputs",
        str,
        "csv:/json: sink: the model's fields to write, e.g. 'label,score,model_version' "
        "(default: all; a probabilities MAP costs ~1 us a row)",
    ),
    (
        "--event-time",
        "event_time",
        str,
        "a field of the records holding their event time (ms or RFC 3339): each record is "
        "scored by the version published for its time (python -m reloader publish --at)",
    ),
    (
        "--out-of-orderness-ms",
        "out_of_orderness_ms",
        int,
        "with --event-time: how far out of order records may come (the watermark's lag)",
    ),
    (
        "--shadow",
        "shadow",
        str,
        "a channel of the store (e.g. shadow) whose version scores the same batches beside the "
        "serving one: compared in the metrics, never in the output",
    ),
    (
        "--canary",
        "canary",
        str,
        "a channel of the store (e.g. canary) whose version serves --canary-fraction of the ids, "
        "rolled back by each subtask when it errs more than the serving version",
    ),
    ("--canary-fraction", "canary_fraction", float, "with --canary: the share of keys, 0-1"),
    (
        "--canary-key",
        "canary_key",
        str,
        "with --canary: the field whose value picks the version (a key always gets the same one)",
    ),
    ("--call-timeout", "call_timeout", float, "seconds a model call may take (then cut off)"),
    ("--api", "api", str, f"prediction path: {', '.join(APIS)} (record: one V8 call per row)"),
    ("--parallelism", "parallelism", int, "subtasks of the predict operator"),
    ("--checkpoint-dir", "checkpoint_dir", str, "where checkpoints go (turns them on)"),
    ("--checkpoint-interval-ms", "checkpoint_interval_ms", int, "0: on only for a dir: sink"),
    ("--poll-interval", "poll_interval", float, "seconds between checks for a new model version"),
    ("--public-key", "public_key", str, "Ed25519 public key: only signed manifests are loaded"),
    ("--cache-dir", "cache_dir", str, "verified-bundle cache (default: the user cache dir)"),
    ("--rate", "rate", float, "wine source: records/s over all subtasks, 0 = unthrottled"),
    ("--records", "records", int, "wine source: how many (unset: 20000; demo: rate x seconds)"),
    ("--batch-size", "batch_size", int, "process path: predict once this many are pending"),
    ("--max-delay-ms", "max_delay_ms", int, "process path: ...or the oldest waited this long"),
    (
        "--batching",
        "batching",
        str,
        f"{' or '.join(BATCHING)}: Flink's batching for Python; throughput: batches of "
        "10,000 rows, records wait up to ~0.1-0.2 s (docs/performance.md)",
    ),
    ("--bundle-time-ms", "bundle_time_ms", int, "python.fn-execution.bundle.time (by --batching)"),
    ("--bundle-size", "bundle_size", int, "python.fn-execution.bundle.size (by --batching)"),
    ("--arrow-batch-size", "arrow_batch_size", int, "rows per Arrow batch (by --batching)"),
    ("--buffer-timeout-ms", "buffer_timeout_ms", int, "execution.buffer-timeout (by --batching)"),
    ("--execution-mode", "execution_mode", str, f"python.execution-mode: {', '.join(MODES)}"),
    ("--roll-interval", "roll_interval", str, "dir: sink: close part files after, e.g. '1 min'"),
    ("--restart-attempts", "restart_attempts", int, "fixed-delay restarts before giving up"),
    (
        "--prometheus-port",
        "prometheus_port",
        str,
        "serve Flink's metrics for Prometheus on this port (or range, e.g. 9250-9260)",
    ),
]


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (the full usage is in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _env(parser: argparse.ArgumentParser, name: str, kind: type, fallback: Any) -> Any:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return fallback
    try:
        return parameter_value(raw, kind)
    except ValueError as e:
        parser.error(f"${name}: {e}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m job",
        description="Real-time prediction in Flink with a TF.js model that is swapped while the "
        "job runs. Without --model: the embedded demo (a local mini-cluster, the WINE stream, "
        "v2 published midway).",
    )
    for flag, name, kind, text in _FLAGS:
        env = ENV_PREFIX + name.upper()
        default = getattr(_DEFAULTS, name)
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            default=_env(parser, env, kind, default),
            help=f"{text} (default: ${env}, else {'unset' if default is None else repr(default)})",
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
        default=_env(parser, ENV_PREFIX + "DEMO_SECONDS", float, 40.0),
        help="demo only: how long the WINE stream lasts (default: $PREDICT_JOB_DEMO_SECONDS, "
        "else 40)",
    )
    switches = {
        "--shadow-output": "with --shadow: each output record also carries the candidate's "
        'prediction as "shadow" (its fields and model_version, or its error)',
        "--skip-check": "submit without the pre-flight checks (the model loads here, a dir: "
        "source is readable), e.g. when only the cluster can reach the store",
    }
    for flag, text in switches.items():
        env = ENV_PREFIX + flag[2:].replace("-", "_").upper()
        parser.add_argument(
            flag,
            action="store_true",
            default=_env(parser, env, bool, False),
            help=f"{text} (default: ${env}, else false)",
        )
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    pack = commands.add_parser(
        "pack",
        help="write the archive a cluster's Python workers need: `flink run -pyfs OUT.zip` "
        "(docs/deploy.md)",
        description="Writes the job and the installed distributions it needs at run time "
        "into one zip for `flink run -pyfs` (docs/deploy.md). Build it with the cluster's "
        "Python version and platform.",
    )
    pack.add_argument("out", metavar="OUT.zip", type=Path, help="where the archive goes")
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


def to_argv(opts: JobOptions) -> list[str]:
    """The flags that give `opts` back (`options_from`): the demo starts the job with them."""
    argv: list[str] = []
    for flag, name, _, _ in _FLAGS:
        value = getattr(opts, name)
        if value is not None and value != "":
            argv += [flag, str(value)]
    for key, value in opts.extra_config.items():
        argv += ["--config", f"{key}={value}"]
    return argv


def preflight(opts: JobOptions) -> None:
    """What is checked before the job is submitted, so that a mistake is one line here rather
    than a failed job: a `dir:` source is a readable directory, and the model loads (manifest,
    download, verification, build, self-test: what `python -m reloader check` does).

    Raises `OSError` for the source, the `ReloaderError` of the step that failed for the model.
    """
    if opts.source.startswith((*FILE_SOURCES, *TYPED_FORMATS)):
        path = Path(opts.source.partition(":")[2])
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise NotADirectoryError(f"the source directory {path} {what}")
        if not os.access(path, os.R_OK | os.X_OK):
            raise PermissionError(f"the source directory {path} is not readable")
    from reloader.load import check

    settings = opts.model_settings()
    check(settings.url, settings.hot_model().settings, source_options=settings.source_options)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "pack":
        return _pack(args.out)
    try:
        opts = options_from(args)
        if not opts.model:
            from job.demo import run_demo

            return run_demo(opts, seconds=args.demo_seconds)
        opts.validate()
    except ValueError as e:
        return _fail(str(e), 2)
    try:
        if not args.skip_check:
            preflight(opts)
    except ReloaderError as e:
        return _fail(f"{type(e).__name__}: {e}", 1)
    except OSError as e:
        return _fail(str(e), 1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from py4j.protocol import Py4JJavaError

    try:
        return _submit(opts)
    except ValueError as e:  # e.g. --outputs names a field the model function does not have
        return _fail(str(e), 2)
    except Py4JJavaError as e:
        log_dir = os.environ.get("FLINK_LOG_DIR", "Flink's log directory")
        return _fail(f"the job failed: {_root_cause(e)} (full trace in {log_dir})", 1)


def _pack(out: Path) -> int:
    from job.pack import PackError, pack

    try:
        packed = pack(out)
    except (PackError, OSError) as e:
        return _fail(f"cannot pack {out}: {e}", 1)
    print(packed.summary())
    return 0


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _root_cause(e: Any) -> str:
    """The innermost Java cause of `e`, in one line (a Python error in the job: its type and
    message, as pemja reports it)."""
    cause = getattr(e, "java_exception", None)
    while cause is not None and cause.getCause() is not None:
        cause = cause.getCause()
    text = str(cause.getMessage() or cause.toString()) if cause is not None else str(e)
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    # pemja: "<class 'reloader.errors.SourceError'>: message"
    if first.startswith("<class '") and "'>: " in first:
        name, _, message = first[len("<class '") :].partition("'>: ")
        first = f"{name.rsplit('.', 1)[-1]}: {message}"
    return first


def _submit(opts: JobOptions) -> int:
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
