"""The model as a Flink SQL / Table API function: the model's inputs as typed columns in, a typed
ROW out.

    from job.table import register_model
    sig = register_model(t_env, "penguins", ModelSettings(url="s3://models/penguins"))
    t_env.sql_query(f"SELECT id, p.label, p.score, p.model_version "
                    f"FROM (SELECT id, {sig.call('penguins')} AS p FROM observations)")

Registration loads the version the store serves now (the same check `python -m reloader check`
makes) and fixes the function's signature from it: one parameter per raw input of the model, in
its declared order and SQL type, and a ROW whose fields follow the declared output kind (the same
names as the JSON output: `label`, `score`, `probabilities`, `probability`, `value`, `values`, the
extras), plus `model_version`, `model_sha256` and `error`. The job's columns are then fixed: a
later version that needs an input the call does not pass, or whose outputs do not fit the ROW, is
refused before it serves (`reloader.compat`), and the current version keeps serving.

The function is a pandas UDF: one V8 call per Arrow batch, the columns handed to the bundle as
they are (`reloader.columns`), no JSON on the way in or out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from job.functions import _Predicting
from job.mixin import ModelSettings
from job.scoring import Batch, Scored
from reloader.codec import BundleMeta
from reloader.compat import Fixed, input_types, output_shape
from reloader.outputs import OutputKind
from reloader.values import Versioned

try:  # the driver and the Python workers have PyFlink; this module's pure parts do not need it
    from pyflink.table.udf import FunctionContext, ScalarFunction
except ImportError:  # pragma: no cover
    ScalarFunction = object
    FunctionContext = Any

# Column kinds of the ROW, mapped to SQL types in `result_type`.
STRING, DOUBLE, MAP, ARRAY = "STRING", "DOUBLE", "MAP<STRING, DOUBLE>", "ARRAY<STRING>"
SQL_INPUT = {
    "float": "DOUBLE",
    "int": "BIGINT",
    "bool": "BOOLEAN",
    "string": "STRING",
    "timestamp": "TIMESTAMP(3)",
}
TRAILER = (("model_version", STRING), ("model_sha256", STRING), ("error", STRING))


@dataclass(frozen=True)
class Signature:
    """A model function's parameters and result, fixed when it is registered."""

    inputs: tuple[tuple[str, str], ...]  # (input name, spec type), in call order
    fields: tuple[tuple[str, str], ...]  # (ROW field, SQL type)
    shape: Mapping[str, Any]  # reloader.compat.output_shape of the version it was made for
    # One more parameter, last: the row's event time (TIMESTAMP(3)), which picks the version
    # that scores the row when versions are published with an effective time.
    event_time: bool = False

    def call(
        self,
        function: str,
        columns: Mapping[str, str] | None = None,
        *,
        event_time: str | None = None,
    ) -> str:
        """The SQL call text: `function(`col`, ...)`, each input taken from the column of the
        same name (or the one `columns` maps it to), and the event-time column last if the
        function takes one."""
        names = [(columns or {}).get(name, name) for name, _ in self.inputs]
        if self.event_time:
            if not event_time:
                raise ValueError(
                    "this function takes the row's event time last: pass event_time='<column>'"
                )
            names.append(event_time)
        elif event_time:
            raise ValueError(
                "registered without an event time: register_model(..., event_time=True)"
            )
        return f"{function}({', '.join(f'`{n}`' for n in names)})"

    def fixed(self) -> Fixed:
        return Fixed(dict(self.inputs), dict(self.shape))

    def select(self, names: Sequence[str]) -> Signature:
        """The same function returning only the ROW fields `names`, in that order.

        Fields a query does not read still cost their making: a `probabilities` MAP is about
        1 µs a row in Python and more in Arrow, the ROW of label, score and model_version
        0.1 µs. An extra the function no longer returns is no longer held against a new
        version by the compatibility gate.
        """
        have = dict(self.fields)
        unknown = [n for n in names if n not in have]
        if unknown or not names or len(set(names)) != len(names):
            why = (
                f"no field {unknown[0]!r}"
                if unknown
                else "a field named twice"
                if names
                else "no fields asked for"
            )
            raise ValueError(f"model function: {why}; its fields are {', '.join(have)}")
        extras = {k: v for k, v in self.shape["extras"].items() if k in names}
        return replace(
            self,
            fields=tuple((n, have[n]) for n in names),
            shape={**self.shape, "extras": extras},
        )

    def input_types(self) -> list[Any]:
        from pyflink.table import DataTypes

        kinds = {
            "float": DataTypes.DOUBLE(),
            "int": DataTypes.BIGINT(),
            "bool": DataTypes.BOOLEAN(),
            "string": DataTypes.STRING(),
            "timestamp": DataTypes.TIMESTAMP(3),
        }
        types = [kinds[kind] for _, kind in self.inputs]
        return [*types, DataTypes.TIMESTAMP(3)] if self.event_time else types

    def result_type(self) -> Any:
        from pyflink.table import DataTypes

        sql = {
            STRING: DataTypes.STRING(),
            DOUBLE: DataTypes.DOUBLE(),
            MAP: DataTypes.MAP(DataTypes.STRING(), DataTypes.DOUBLE()),
            ARRAY: DataTypes.ARRAY(DataTypes.STRING()),
        }
        return DataTypes.ROW([DataTypes.FIELD(name, sql[kind]) for name, kind in self.fields])


def signature(meta: BundleMeta) -> Signature:
    """The function signature a version implies."""
    inputs = tuple((name, kind) for name, (kind, _) in input_types(meta).items())
    shape = output_shape(meta)
    out: list[tuple[str, str]] = []
    schema_output = (meta.schema or {}).get("output") or {"kind": "multiclass"}
    heads = schema_output.get("heads") if shape["kind"] == "multi" else None
    for head in heads or [schema_output]:
        prefix = f"{head['name']}_" if heads else ""
        out += [(prefix + name, kind) for name, kind in _kind_fields(head)]
    out += [
        (name, STRING if kind == "string" else DOUBLE) for name, kind in shape["extras"].items()
    ]
    return Signature(inputs, (*out, *TRAILER), shape)


def _kind_fields(output: Mapping[str, Any]) -> list[tuple[str, str]]:
    kind = output["kind"]
    if kind == "multiclass":
        fields = [("label", STRING), ("score", DOUBLE), ("probabilities", MAP)]
        return fields + ([("top_k", ARRAY)] if output.get("top_k") else [])
    if kind == "binary":
        return [("label", STRING), ("probability", DOUBLE)]
    names = output.get("names") or ["value"]
    return [("value", DOUBLE)] if len(names) == 1 else [("values", MAP)]


def model_function(
    settings: ModelSettings,
    *,
    event_time: bool = False,
    fields: Sequence[str] | None = None,
) -> tuple[Any, Signature]:
    """The pandas UDF for the version `settings.url` serves now, and its signature; with
    `event_time`, the function takes each row's event time as its last argument; with
    `fields`, its ROW holds only those fields (`Signature.select`)."""
    from pyflink.table.udf import udf

    from reloader.load import check

    hot = settings.hot_model()  # not started: only its load settings are used
    report = check(settings.url, hot.settings, source_options=settings.source_options)
    sig = replace(signature(report.meta), event_time=event_time)
    if fields is not None:
        sig = sig.select(fields)
    fn = PredictTable(sig, replace(settings, fixed=sig.fixed()))
    return (
        udf(fn, input_types=sig.input_types(), result_type=sig.result_type(), func_type="pandas"),
        sig,
    )


def register_model(
    t_env: Any,
    name: str,
    settings: ModelSettings,
    *,
    event_time: bool = False,
    fields: Sequence[str] | None = None,
) -> Signature:
    """Registers the model as the temporary system function `name`; returns its signature.
    With `event_time`, the call passes each row's event time last (`sig.call(name,
    event_time="ts")`), and each row is scored by the version its time falls under. With
    `fields`, the ROW holds only those fields, e.g. `("label", "score", "model_version")`:
    the ones a query does not read are not made at all."""
    fn, sig = model_function(settings, event_time=event_time, fields=fields)
    t_env.create_temporary_system_function(name, fn)
    return sig


class PredictTable(_Predicting, ScalarFunction):  # type: ignore[misc]
    """The pandas UDF behind `model_function`: typed columns in, a DataFrame of the ROW out."""

    def __init__(self, sig: Signature, settings: ModelSettings) -> None:
        _Predicting.__init__(self, settings)
        self.sig = sig

    def open(self, function_context: FunctionContext) -> None:
        self._setup(function_context)

    def close(self) -> None:
        self.close_model()

    def eval(self, *series: pd.Series) -> pd.DataFrame:
        event_ms = None
        if self.sig.event_time:
            *series, times = series  # type: ignore[assignment]
            event_ms = _epoch_ms(times)
        columns = {name: s for (name, _), s in zip(self.sig.inputs, series, strict=True)}
        batch = Batch(columns=columns, event_ms=event_ms)
        if batch.size == 0:
            return self._frame(batch)
        parts = self.by_route(batch)
        if event_ms is not None and self.model is not None:
            # No watermark reaches a SQL function: records later than this are not expected.
            self.model.advance(int(event_ms.max()) - self.settings.lateness_ms)
        if len(parts) == 1:
            return self._frame(parts[0])
        order = np.concatenate([part.rows for part in parts])
        out = pd.concat([self._frame(part) for part in parts], ignore_index=True)
        out.index = order
        return out.sort_index()

    def _frame(self, batch: Batch) -> pd.DataFrame:
        result, why = self.score_batch(batch) if batch.size else (None, "")
        if result is None:
            version, sha256 = self.failed_version(batch, why) if batch.size else ("", "")
            return frame_of_errors(self.sig, batch.size, why, version, sha256)
        return frame(self.sig, result)


def _epoch_ms(times: pd.Series) -> npt.NDArray[np.int64]:
    """A TIMESTAMP(3) column as ms since the epoch (Flink's event time: the time read as UTC);
    a null is a record of now."""
    values = pd.to_datetime(times)
    ms: npt.NDArray[np.int64] = values.to_numpy(dtype="datetime64[ms]").astype(np.int64)
    missing = values.isna().to_numpy()
    if missing.any():
        ms[missing] = int(pd.Timestamp.now(tz="UTC").value // 1_000_000)
    return ms


def frame(sig: Signature, result: Versioned[Scored]) -> pd.DataFrame:
    """The ROW's columns for one scored batch (error rows: nulls and `error`).

    Decoded by column (`OutputKind.columns`), only the fields the signature holds: numpy
    arrays where the SQL type allows, Python objects only for MAP and ARRAY fields.
    """
    s = result.value
    n = len(s.ok)
    rows = np.flatnonzero(s.ok)
    every = len(rows) == n  # no error rows: the predicted rows are the rows
    kind = s.kind or OutputKind("multiclass", s.outputs, labels=s.labels)
    extras = sig.shape["extras"]
    trailer = {name for name, _ in TRAILER}
    decoded = kind.columns(
        s.probabilities,
        frozenset(f for f, _ in sig.fields if f not in extras and f not in trailer),
    )
    out: dict[str, Any] = {}
    for name, sql in sig.fields:
        if name in trailer:
            out[name] = _trailer(name, result, s.errors, n)
            continue
        if name in extras:
            values = (s.extras or {}).get(name)
            got = None if values is None else [_sql_value(values[r], sql) for r in rows.tolist()]
        else:
            got = decoded.get(name)
            if sql == ARRAY and got is not None:
                got = [[str(pair[0]) for pair in top] for top in got]
        out[name] = got if every and got is not None else _scatter(got, rows, n, sql)
    return pd.DataFrame(out, columns=[f for f, _ in sig.fields])


def _trailer(name: str, result: Versioned[Scored], errors: Mapping[int, str], n: int) -> Any:
    if name == "model_version":
        return np.full(n, result.version, dtype=object)
    if name == "model_sha256":
        return np.full(n, result.sha256, dtype=object)
    column: list[str | None] = [None] * n
    for r, why in errors.items():
        column[r] = why
    return column


def _scatter(got: Any, rows: npt.NDArray[np.intp], n: int, sql: str) -> Any:
    """A column of the predicted rows spread over all `n` rows, null elsewhere."""
    if sql == DOUBLE:
        col = np.full(n, np.nan)
        if got is not None:
            col[rows] = np.asarray(got, dtype=np.float64)
        return col
    full: list[Any] = [None] * n
    if got is not None:
        for k, r in enumerate(rows.tolist()):
            full[r] = got[k]
    return full


def frame_of_errors(sig: Signature, n: int, why: str, version: str, sha256: str) -> pd.DataFrame:
    """Every row an error: the model could not score this batch."""
    trailer = {"model_version": version, "model_sha256": sha256, "error": why}
    out = {name: [trailer.get(name)] * n for name, _ in sig.fields}
    return pd.DataFrame(out, columns=[f for f, _ in sig.fields])


def _sql_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    if kind == MAP:
        return [(str(k), float(v)) for k, v in value.items()]
    if kind == ARRAY:
        return [str(pair[0]) for pair in value]
    if kind == DOUBLE:
        return float(value)
    return value
