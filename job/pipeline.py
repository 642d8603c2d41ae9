"""The job graph: source -> predict (process or vectorized path) -> sink, and its configuration.

Sources (tables):
    wine        the WINE rows replayed at `rate` records/s (a rate-limited Java generator, so
                the stream is steady, not bursty): columns id, the 13 features, created_ms
    dir:PATH    JSON-lines files in PATH, read continuously (Flink's FileSource): one STRING
                column of lines, parsed in the predict function (a bad line becomes an error
                record, not a failed job)
    files:PATH  the same, for the files in PATH when the job starts: read once, then the job
                ends (scoring a directory of records)
Sinks (one STRING column of JSON lines):
    print       stdout of the TaskManagers
    blackhole   discarded (measuring the job itself)
    dir:PATH    rolling files, committed on checkpoints (exactly-once)
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job.functions import (
    JSON_LINES,
    JsonEventTime,
    PredictBatched,
    PredictRecord,
    PredictVectorized,
)
from job.mixin import ModelSettings
from job.planning import planned
from job.prometheus import add_reporter_to_local_classpath, reporter_configuration

APIS = ("process", "vectorized", "record")
MODES = ("auto", "process", "thread")
MAX_PARALLELISM = 128
WINE_RECORDS = 20_000  # the wine source's length when `records` is not given
FILE_SOURCES = ("dir:", "files:")  # JSON lines in a directory: followed, or read once
TYPED_FORMATS = ("csv:", "json:")  # Flink's filesystem connector, typed columns


# Flink's batching of records for Python, by what a job is for (`--batching`):
# - latency: Flink ends a bundle on a timer that ticks every bundle_time_ms but counts from the
#   end of the previous bundle's flush (5-10 ms on 2 cores), so a bundle lasts about the flush
#   plus up to twice that. Measured p99 on the vectorized path at 10,000 rec/s: 10 -> ~30 ms,
#   5 -> 19-24, 3 -> 17-22, the same records/s. Flink's default buffer timeout (100 ms) would
#   add its own wait.
# - throughput: batches of 10,000 rows. Each Python call, Arrow batch and V8 call costs the same
#   whatever its rows, so fewer of them leave more of a core to the model: the typed path at
#   p=1 went from ~110k to ~380k records/s (WINE). Records wait up to ~0.1-0.2 s.
# docs/performance.md has the figures of both.
BATCHING: dict[str, dict[str, int]] = {
    "latency": {"bundle_time_ms": 3, "bundle_size": 1000, "arrow_batch_size": 1000,
                "buffer_timeout_ms": 5},
    "throughput": {"bundle_time_ms": 100, "bundle_size": 10_000, "arrow_batch_size": 10_000,
                   "buffer_timeout_ms": 100},
}  # fmt: skip


@dataclass
class JobOptions:
    """Everything `python -m job` can set (see `job.cli` for the flags and their env vars)."""

    model: str = ""
    source: str = "wine"
    sink: str = "print"
    api: str = "process"
    parallelism: int = 1
    checkpoint_dir: str = ""
    checkpoint_interval_ms: int = 0  # 0: none, unless the sink needs it (dir:)
    poll_interval: float = 1.0
    public_key: str = ""
    cache_dir: str = ""
    rate: float = 500.0  # wine: records/s over all subtasks (0: as fast as possible)
    records: int | None = None  # wine: how many (None: WINE_RECORDS; the demo: rate x seconds)
    batch_size: int = 256  # process path: predict when this many are pending...
    max_delay_ms: int = 5  # ...or the oldest has waited this long
    # How Flink batches records for Python (BATCHING): "latency" or "throughput". Each of the
    # four settings below, when given, overrides the one `batching` implies.
    batching: str = "latency"
    bundle_time_ms: int | None = None  # python.fn-execution.bundle.time
    bundle_size: int | None = None  # python.fn-execution.bundle.size
    arrow_batch_size: int | None = None  # python.fn-execution.arrow.batch.size
    buffer_timeout_ms: int | None = None  # execution.buffer-timeout
    execution_mode: str = "auto"  # python.execution-mode; auto: see `python_mode`
    restart_attempts: int = 3
    roll_interval: str = "1 min"  # dir: sink: a part file is closed after this long
    prometheus_port: str = ""  # a port or range: Flink's Prometheus reporter serves the metrics
    columns: str = ""  # csv:/json: source: its columns as SQL (default: id + the model's inputs)
    outputs: str = ""  # csv:/json: the model function's fields to write, comma-separated (all)
    # A field of the records that holds their event time (ms since the epoch, or an RFC 3339
    # time): the version that scores a record is then the one its time falls under, and
    # `out_of_orderness_ms` is how far out of order the records may come (the watermark lag).
    event_time: str = ""
    out_of_orderness_ms: int = 1000
    shadow: str = ""  # a channel whose version scores beside the serving one (job.shadow)
    shadow_output: bool = False  # outputs also carry the shadow's prediction ("shadow")
    canary: str = ""  # a channel whose version serves a fraction of the keys (job.canary)
    canary_fraction: float = 0.1
    canary_key: str = "id"  # the field whose hash picks a canary's keys
    call_timeout: float = 5.0  # seconds a model call may take before it is cut off
    name: str = "tf-on-flink predict"
    extra_config: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.batching not in BATCHING:
            raise ValueError(
                f"batching must be one of {', '.join(BATCHING)}, got {self.batching!r}"
            )
        if self.api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, got {self.api!r}")
        if self.execution_mode not in MODES:
            raise ValueError(f"execution mode must be one of {', '.join(MODES)}")
        if not (self.source == "wine" or self.source.startswith((*FILE_SOURCES, *TYPED_FORMATS))):
            raise ValueError(
                "source must be 'wine', 'dir:PATH', 'files:PATH', 'csv:PATH' or 'json:PATH', "
                f"got {self.source!r}"
            )
        if not (
            self.sink in ("print", "blackhole") or self.sink.startswith(("dir:", *TYPED_FORMATS))
        ):
            raise ValueError(
                "sink must be 'print', 'blackhole', 'dir:PATH', 'csv:PATH' or 'json:PATH', "
                f"got {self.sink!r}"
            )
        if self.sink.startswith(TYPED_FORMATS) and not self.typed:
            raise ValueError("a csv:/json: sink takes typed results: use a csv:/json: source")
        if self.typed and self.sink.startswith("dir:"):
            raise ValueError("a csv:/json: source gives typed results: use a json:PATH sink")
        if not self.model:
            raise ValueError("no model URL (--model / PREDICT_JOB_MODEL)")
        if self.event_time and not (self.typed or self.source.startswith(FILE_SOURCES)):
            raise ValueError("--event-time takes a field of dir:, files:, csv: or json: records")
        if self.event_time and not self.typed and self.api != "process":
            raise ValueError("--event-time with JSON lines needs the process path (--api process)")
        if self.outputs and not self.typed:
            raise ValueError("--outputs picks the typed fields of a csv:/json: source's job")
        if self.out_of_orderness_ms < 0:
            raise ValueError("out-of-orderness must be >= 0 ms")
        if self.parallelism < 1 or self.batch_size < 1 or (self.records or 0) < 0 or self.rate < 0:
            raise ValueError("parallelism and batch size must be >= 1, records and rate >= 0")

    def batch_setting(self, name: str) -> int:
        """One of the four batching settings: as given, else as `batching` implies."""
        given: int | None = getattr(self, name)
        return BATCHING[self.batching][name] if given is None else given

    @property
    def typed(self) -> bool:
        """Typed columns end to end: Flink's filesystem connector in, the SQL function, typed
        columns out (`job.table`)."""
        return self.source.startswith(TYPED_FORMATS)

    @property
    def python_mode(self) -> str:
        """auto: "thread" for the process and record paths (measured: p99 ~37 ms at 1k rec/s
        against ~275 ms in process mode, where the keyed hop and its timers each wait for a
        bundle), "process" for the vectorized path (pandas UDFs run in process mode)."""
        if self.execution_mode != "auto":
            return self.execution_mode
        return "process" if self.api == "vectorized" or self.typed else "thread"

    @property
    def checkpointing_ms(self) -> int:
        if self.checkpoint_interval_ms:
            return self.checkpoint_interval_ms
        # A dir: sink commits its files on checkpoints: without them nothing would be visible.
        files = self.sink.startswith(("dir:", *TYPED_FORMATS))
        return 5000 if files or self.checkpoint_dir else 0

    def model_settings(self) -> ModelSettings:
        return ModelSettings(
            url=self.model,
            poll_interval=self.poll_interval,
            public_key=self.public_key,
            cache_dir=self.cache_dir,
            job_name=self.name,
            shadow=self.shadow,
            shadow_output=self.shadow_output,
            canary=self.canary,
            canary_fraction=self.canary_fraction,
            canary_key=self.canary_key,
            call_timeout=self.call_timeout,
        )


def flink_configuration(opts: JobOptions, *, submitted: bool = False) -> dict[str, str]:
    """The Flink settings the options imply (a plain dict, so it is easy to show and test).

    `submitted`: `flink run` started this process (`submitted_by_flink`). The Python the workers
    run and their path are then the cluster's (its configuration, `flink run -pyexec/-pyfs`):
    this interpreter and its path exist only where the job was submitted from.
    """
    conf = {
        "python.execution-mode": opts.python_mode,
        "python.fn-execution.bundle.time": str(opts.batch_setting("bundle_time_ms")),
        "python.fn-execution.bundle.size": str(opts.batch_setting("bundle_size")),
        "python.fn-execution.arrow.batch.size": str(opts.batch_setting("arrow_batch_size")),
        "execution.buffer-timeout": f"{opts.batch_setting('buffer_timeout_ms')} ms",
        "pipeline.max-parallelism": str(MAX_PARALLELISM),
        "pipeline.name": opts.name,
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": str(opts.restart_attempts),
        "restart-strategy.fixed-delay.delay": "1 s",
    }
    if not submitted:
        conf["python.executable"] = sys.executable
        conf["python.client.executable"] = sys.executable
    if opts.checkpointing_ms:
        conf["execution.checkpointing.interval"] = f"{opts.checkpointing_ms} ms"
        conf["execution.checkpointing.mode"] = "EXACTLY_ONCE"
    if opts.checkpoint_dir:
        conf["execution.checkpointing.storage"] = "filesystem"
        conf["execution.checkpointing.dir"] = _uri(opts.checkpoint_dir)
    if opts.prometheus_port:
        conf.update(reporter_configuration(opts.prometheus_port))
    if opts.python_mode == "thread" and not submitted:
        # Thread mode runs Python inside the JVM: it needs this venv's packages on the path.
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        conf["python.pythonpath"] = os.pathsep.join(paths)
    conf.update(opts.extra_config)
    return conf


def submitted_by_flink() -> bool:
    """Whether `flink run` started this process: its JVM is up and gave PyFlink its port."""
    return "PYFLINK_GATEWAY_PORT" in os.environ


def _uri(path: str) -> str:
    """A URI as it is (`s3://...`, `file:///...`); a local path as an absolute file URI."""
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", path):
        return path
    return Path(path).resolve().as_uri()


def environments(opts: JobOptions) -> tuple[Any, Any]:
    """(StreamExecutionEnvironment, StreamTableEnvironment) configured for `opts`."""
    # PyFlink writes its logs into site-packages unless told otherwise.
    os.environ.setdefault("FLINK_LOG_DIR", str(Path(tempfile.gettempdir()) / "tf-on-flink-logs"))
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    if opts.prometheus_port:
        add_reporter_to_local_classpath()  # before PyFlink starts its gateway JVM
    conf = Configuration()
    for key, value in flink_configuration(opts, submitted=submitted_by_flink()).items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(opts.parallelism)
    env.get_config().set_global_job_parameters(opts.model_settings().as_parameters())
    # The table environment reads every setting it lacks from the stream environment's
    # configuration (its root), so the settings are given once, here above.
    return env, StreamTableEnvironment.create(env)


# -- sources --------------------------------------------------------------------------------------


def wine_source(env: Any, t_env: Any, rate: float, records: int) -> Any:
    """The WINE rows replayed as a steady stream: a Table (id, 13 features, created_ms)."""
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream.connectors import Source
    from pyflink.java_gateway import get_gateway

    from model.data import load_wine_csv

    features, _, x, _ = load_wine_csv()
    jvm = get_gateway().jvm
    ids = jvm.java.util.stream.LongStream.range(0, max(records, 1)).boxed()
    elements = ids.collect(jvm.java.util.stream.Collectors.toList())
    long_type = Types.LONG().get_java_type_info()
    generator = jvm.org.apache.flink.connector.datagen.functions.IndexLookupGeneratorFunction(
        long_type, elements
    )
    limits = jvm.org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy
    limiter = limits.perSecond(float(rate)) if rate > 0 else limits.noOp()
    source = jvm.org.apache.flink.connector.datagen.source.DataGeneratorSource(
        generator, records, limiter, long_type
    )
    stream = env.from_source(
        Source(source), WatermarkStrategy.no_watermarks(), "wine ids", type_info=Types.LONG()
    ).uid("source-wine")  # its state (how far it got) goes into savepoints under this uid
    t_env.create_temporary_view("wine_ids", t_env.from_data_stream(stream))
    n = len(x)
    # Row i of the data set is WINE row id % n; DOUBLE literals (E0) keep the columns DOUBLE.
    cols = ",\n  ".join(
        f"ARRAY[{', '.join(repr(float(v)) + 'E0' for v in x[:, j])}]"
        f"[CAST(MOD(f0, {n}) AS INT) + 1] AS `{name}`"
        for j, name in enumerate(features)
    )
    now_ms = (
        "UNIX_TIMESTAMP(CAST(LOCALTIMESTAMP AS STRING)) * 1000"
        " + EXTRACT(MILLISECOND FROM LOCALTIMESTAMP)"
    )
    return t_env.sql_query(f"SELECT f0 AS id,\n  {cols},\n  {now_ms} AS created_ms FROM wine_ids")


def dir_source(env: Any, path: str, *, follow: bool = True) -> Any:
    """JSON-lines files in `path`, read continuously (or once: `follow=False`): a DataStream of
    lines."""
    from pyflink.common import Duration, WatermarkStrategy
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    builder = FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(path))
    if follow:
        builder = builder.monitor_continuously(Duration.of_seconds(1))
    source = builder.build()
    return env.from_source(source, WatermarkStrategy.no_watermarks(), f"files in {path}").uid(
        "source-files"
    )


def with_event_time(lines: Any, field_name: str, out_of_orderness_ms: int) -> Any:
    """JSON lines with their event time taken from `field_name`, and watermarks that lag the
    largest time seen by `out_of_orderness_ms` (idle source splits do not hold them back)."""
    from pyflink.common import Duration, WatermarkStrategy

    # The assigner last: PyFlink's `with_idleness` returns a strategy without it.
    strategy = (
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(out_of_orderness_ms))
        .with_idleness(Duration.of_seconds(1))
        .with_timestamp_assigner(JsonEventTime(field_name))
    )
    return lines.assign_timestamps_and_watermarks(strategy).uid("event-time")


# -- the graph ------------------------------------------------------------------------------------


def build(opts: JobOptions, env: Any, t_env: Any, *, predictor: Any = None) -> Any:
    """The job's result: a Table with one STRING column `record` (JSON lines).

    `predictor` replaces the process path's function (a `PredictBatched` subclass, e.g. with
    per-record logic).
    """
    from pyflink.common import Types
    from pyflink.table import DataTypes
    from pyflink.table.expressions import col
    from pyflink.table.udf import udf

    opts.validate()
    settings = opts.model_settings()
    if opts.typed:
        return typed_table(opts, t_env, settings)
    if opts.source == "wine":
        records = WINE_RECORDS if opts.records is None else opts.records
        table = wine_source(env, t_env, opts.rate, records)
        lines = None
    else:
        kind, _, path = opts.source.partition(":")
        lines = dir_source(env, path, follow=kind == "dir")
        if opts.event_time:
            lines = with_event_time(lines, opts.event_time, opts.out_of_orderness_ms)
        table = None

    if opts.api == "vectorized":
        if table is None:
            table = t_env.from_data_stream(lines).alias(JSON_LINES)
        columns = table.get_schema().get_field_names()
        predict = udf(
            PredictVectorized(columns, settings),
            result_type=DataTypes.STRING(),
            func_type="pandas",
        )
        return table.select(predict(*[col(c) for c in columns]).alias("record"))

    stream: Any = lines
    if table is not None:
        # The process paths take JSON lines whatever the source (Java writes them), so the
        # per-record hook `accept` always sees a plain dict. Measured against passing rows:
        # the same records/s (16.0k vs 15.4k); the key_by hop, not the row format, bounds it.
        names = table.get_schema().get_field_names()
        fields = ", ".join(f"'{n}' VALUE `{n}`" for n in names)
        t_env.create_temporary_view("rows_to_json", table)
        as_json = t_env.sql_query(f"SELECT JSON_OBJECT({fields}) AS line FROM rows_to_json")
        stream = planned(t_env, lambda: t_env.to_data_stream(as_json))
    if opts.api == "record":
        out = stream.process(PredictRecord(settings), output_type=Types.STRING()).uid(
            "predict-record"
        )
    else:
        from job.functions import RouteBySubtask

        function = predictor or PredictBatched(
            settings, batch_size=opts.batch_size, max_delay_ms=opts.max_delay_ms
        )
        keyed = stream.key_by(
            RouteBySubtask(opts.parallelism, MAX_PARALLELISM), key_type=Types.INT()
        )
        # The uid names its state (the pending batch, timers) in savepoints: an upgraded job
        # finds it under the same uid (docs/deploy.md).
        out = keyed.process(function, output_type=Types.STRING()).uid("predict-batched")
    return t_env.from_data_stream(out).alias("record")


def typed_table(opts: JobOptions, t_env: Any, settings: ModelSettings) -> Any:
    """csv:/json: in, typed columns out: the source table's columns that are not the model's
    inputs (e.g. `id`) and the fields of the model function's ROW."""
    from job.table import SQL_INPUT, register_model

    outputs = [f.strip() for f in opts.outputs.split(",") if f.strip()] or None
    sig = register_model(
        t_env, "model_predict", settings, event_time=bool(opts.event_time), fields=outputs
    )
    fmt, _, path = opts.source.partition(":")
    inputs = {name for name, _ in sig.inputs}
    default = ["`id` BIGINT", *(f"`{name}` {SQL_INPUT[kind]}" for name, kind in sig.inputs)]
    if opts.event_time and opts.event_time not in inputs:
        default.append(f"`{opts.event_time}` TIMESTAMP(3)")
    columns = opts.columns or ", ".join(default)
    if opts.event_time:
        lag = opts.out_of_orderness_ms
        columns += (
            f", WATERMARK FOR `{opts.event_time}` AS `{opts.event_time}` - "
            f"INTERVAL '{lag // 1000}.{lag % 1000:03d}' SECOND"
        )
    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE model_input ({columns}) WITH ("
        f"{_file_options(fmt, path)}, '{fmt}.ignore-parse-errors' = 'true')"
    )
    names = t_env.from_path("model_input").get_schema().get_field_names()
    passed = [f"`{c}`" for c in names if c not in inputs]
    if opts.event_time:  # a plain TIMESTAMP(3) out: the sink takes no time attribute
        passed = [
            f"CAST(`{c}` AS TIMESTAMP(3)) AS `{c}`" if c == opts.event_time else f"`{c}`"
            for c in names
            if c not in inputs or c == opts.event_time
        ]
    fields = [f"p.`{f}` AS `{f}`" for f, _ in sig.fields]
    call = sig.call("model_predict", event_time=opts.event_time or None)
    return t_env.sql_query(
        f"SELECT {', '.join([*passed, *fields])} FROM (SELECT *, {call} AS p FROM model_input)"
    )


def _file_options(fmt: str, path: str) -> str:
    options = {
        "connector": "filesystem",
        "path": Path(path).resolve().as_uri(),
        "format": fmt,
    }
    if fmt == "csv":
        options["csv.null-literal"] = ""  # an empty field is a null (CSV has no other)
    return ", ".join(f"'{k}' = '{v}'" for k, v in options.items())


def sink(opts: JobOptions, t_env: Any, result: Any) -> Any:
    """Inserts `result` into the sink the options name; returns the TableResult (job started)."""
    if opts.typed:
        return _typed_sink(opts, t_env, result)
    if opts.sink in ("print", "blackhole"):
        ddl = (
            f"CREATE TEMPORARY TABLE predictions (record STRING) WITH ('connector' = '{opts.sink}')"
        )
    else:
        path = Path(opts.sink[len("dir:") :]).resolve()
        ddl = f"""CREATE TEMPORARY TABLE predictions (record STRING) WITH (
            'connector' = 'filesystem',
            'path' = '{path.as_uri()}',
            'format' = 'raw',
            'sink.rolling-policy.file-size' = '64MB',
            'sink.rolling-policy.rollover-interval' = '{opts.roll_interval}',
            'sink.rolling-policy.inactivity-interval' = '{opts.roll_interval}',
            'sink.rolling-policy.check-interval' = '{opts.roll_interval}'
        )"""
    t_env.execute_sql(ddl)
    return planned(t_env, lambda: result.execute_insert("predictions"))


def _typed_sink(opts: JobOptions, t_env: Any, result: Any) -> Any:
    """Typed results into print, json:PATH or csv:PATH (CSV holds no MAP or ARRAY: those
    columns are left out)."""
    from pyflink.table.expressions import col

    schema = result.get_schema()
    names, types = schema.get_field_names(), schema.get_field_data_types()
    fmt, _, path = opts.sink.partition(":")
    keep = [
        (n, t)
        for n, t in zip(names, types, strict=True)
        if fmt != "csv" or type(t).__name__ not in ("MapType", "ArrayType")
    ]
    columns = ", ".join(f"`{n}` {_sql_type(t)}" for n, t in keep)
    if opts.sink in ("print", "blackhole"):
        options = f"'connector' = '{opts.sink}'"
    else:
        options = _file_options(fmt, path) + (
            f", 'sink.rolling-policy.rollover-interval' = '{opts.roll_interval}'"
            f", 'sink.rolling-policy.inactivity-interval' = '{opts.roll_interval}'"
            f", 'sink.rolling-policy.check-interval' = '{opts.roll_interval}'"
        )
    t_env.execute_sql(f"CREATE TEMPORARY TABLE predictions ({columns}) WITH ({options})")
    kept = result.select(*[col(n) for n, _ in keep])
    return planned(t_env, lambda: kept.execute_insert("predictions"))


_SQL_TYPES = {
    "DoubleType": "DOUBLE",
    "FloatType": "FLOAT",
    "BigIntType": "BIGINT",
    "IntType": "INT",
    "BooleanType": "BOOLEAN",
    "VarCharType": "STRING",
    "TimestampType": "TIMESTAMP(3)",
    "MapType": "MAP<STRING, DOUBLE>",  # the only ones job.table makes
    "ArrayType": "ARRAY<STRING>",
}


def _sql_type(data_type: Any) -> str:
    name = type(data_type).__name__
    if name not in _SQL_TYPES:
        raise ValueError(f"a column of type {data_type} cannot go to a typed sink")
    return _SQL_TYPES[name]
