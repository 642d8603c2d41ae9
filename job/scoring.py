"""Batches of rows in, output records (JSON lines) out: the part both prediction paths share.

A batch arrives as columns by name (the source table's columns: `id`, the model's features,
anything else). The current model's `meta.inputs` pick and order the features, so a new model
version that takes its features in another order, or fewer of them, needs no job change. A row
whose features are missing, not numbers, or not finite gets an error record naming the feature;
the rest of the batch is predicted.

Output record (one JSON object per input row):
    {"id": ..., "label": ..., "probabilities": {output: p, ...}, "model_version": ...,
     "model_sha256": ..., "subtask": ..., <other input columns as they came>}
or, for a row that cannot be predicted:
    {"id": ..., "error": "feature 'ash' is missing", "model_version": ..., ...}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reloader.outputs import OutputKind
from reloader.runtime import ModelRuntime
from reloader.values import Versioned

ID_COLUMN = "id"
_NONFINITE = (
    "the model's output for this row is not finite (features far outside the training range?)"
)
INVALID = "_invalid"  # key of a record that could not be parsed; its value says why
EVENT_TIME = "_event_ms"  # key of a buffered record's event time (ms), not passed through
Column = Sequence[Any] | npt.NDArray[Any]


@dataclass(frozen=True)
class Scored:
    """One batch's model results, before formatting (what runs inside the model call)."""

    probabilities: npt.NDArray[np.float32]  # [ok rows, outputs]
    ok: npt.NDArray[np.bool_]  # [n]: rows that were predicted
    errors: dict[int, str]  # row -> why it was not
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    labels: tuple[str, ...]
    kind: OutputKind | None = None  # None: multiclass over `labels` (the template path)
    extras: Mapping[str, Any] | None = None  # name -> n values (the declared extras)


def as_floats(values: Column) -> npt.NDArray[np.float64]:
    """A column as float64; anything that is not a number (None, text, bool) becomes NaN."""
    dtype = getattr(values, "dtype", None)  # numpy arrays and pandas Series (the SQL path)
    if isinstance(dtype, np.dtype) and dtype.kind in ("f", "i", "u"):
        return np.asarray(values, dtype=np.float64)
    try:
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape == (len(values),) and not any(
            isinstance(v, bool | str | bytes) for v in values
        ):
            return arr
    except (TypeError, ValueError, OverflowError):
        pass
    return np.array([_number(v) for v in values], dtype=np.float64)


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        return math.nan
    try:
        return float(v)
    except OverflowError:  # an int beyond float64
        return math.inf


def _why(v: Any, feature: str) -> str:
    if v is None:
        return f"feature {feature!r} is missing"
    if isinstance(v, float) and math.isnan(v):
        return f"feature {feature!r} is NaN (missing or not a number)"
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        return f"feature {feature!r} is {type(v).__name__}, not a number"
    if isinstance(v, float) and not math.isfinite(v):
        return f"feature {feature!r} is {v}"
    return f"feature {feature!r} is out of the float32 range"


class Scorer:
    """Scores batches given as columns; the same for the process and the vectorized path."""

    def __init__(self) -> None:
        self.subtask: int | None = None

    def score(
        self, run: Callable[[Callable[[ModelRuntime], Scored]], Versioned[Scored]], batch: Batch
    ) -> tuple[Versioned[Scored], list[str]]:
        """Predicts `batch` on the current model; returns the results and one JSON line per row."""
        result = self.predict(run, batch)
        return result, self.format(batch, result)

    def predict(
        self, run: Callable[[Callable[[ModelRuntime], Scored]], Versioned[Scored]], batch: Batch
    ) -> Versioned[Scored]:
        """Predicts `batch` on the current model, unformatted (for typed outputs)."""
        return run(lambda rt: self._predict(rt, batch))

    def _predict(self, rt: ModelRuntime, batch: Batch) -> Scored:
        if rt.columns is not None:
            return self._predict_typed(rt, batch)
        meta = rt.meta
        n = batch.size
        x = np.empty((n, len(meta.inputs)), dtype=np.float32)
        errors: dict[int, str] = {}
        invalid = batch.column(INVALID)
        if invalid is not None:
            errors.update({r: why for r, why in enumerate(invalid) if why is not None})
        for j, name in enumerate(meta.inputs):
            raw = batch.column(name)
            if raw is None:
                for r in range(n):
                    errors.setdefault(r, f"feature {name!r} is missing")
                x[:, j] = 0.0
                continue
            col = as_floats(raw)
            with np.errstate(over="ignore"):
                bad = ~np.isfinite(col.astype(np.float32))  # what the model is given
            if bad.any():
                for r in np.flatnonzero(bad):
                    errors.setdefault(int(r), _why(raw[int(r)], name))
                col = np.where(bad, 0.0, col)
            x[:, j] = col
        ok = np.ones(n, dtype=bool)
        if errors:
            ok[list(errors)] = False
        if ok.any():
            probabilities = rt.predict(x[ok] if errors else x, allow_nonfinite=True)
            finite = np.isfinite(probabilities).all(axis=1)
            if not finite.all():
                # Features finite but extreme enough to overflow the model: those rows only.
                rows = np.flatnonzero(ok)
                for r in rows[~finite]:
                    errors[int(r)] = _NONFINITE
                ok[rows[~finite]] = False
                probabilities = probabilities[finite]
        else:
            probabilities = np.empty((0, 0), dtype=np.float32)
        return Scored(
            probabilities.astype(np.float32, copy=False),
            ok,
            errors,
            meta.inputs,
            meta.outputs,
            meta.labels,
        )

    def _predict_typed(self, rt: ModelRuntime, batch: Batch) -> Scored:
        """Contract 2: the batch's columns go to the bundle as they are; its pre-processing
        checks and encodes them (and names the input of every row it refuses)."""
        meta = rt.meta
        n = batch.size
        result = rt.predict_columns({name: batch.column(name) for name in meta.inputs}, n)
        errors = result.errors
        ok = result.ok
        invalid = batch.column(INVALID)
        if invalid is not None:
            for r, why in enumerate(invalid):
                if why is not None:
                    errors[r] = why
                    ok[r] = False
        kind = rt.outputs
        plain = kind.kind == "multiclass" and not kind.top_k and not result.extras
        return Scored(
            result.scores[ok],
            ok,
            errors,
            meta.inputs,
            meta.outputs,
            kind.labels if plain else meta.labels,
            None if plain else kind,
            {name: values for name, values in result.extras.items()} if result.extras else None,
        )

    def format(self, batch: Batch, result: Versioned[Scored]) -> list[str]:
        """One JSON line per row. Built from templates rather than `json.dumps` per record: this
        runs for every record and was most of the vectorized path's cost (22 of 34 us/record)."""
        s = result.value
        n = batch.size
        ids = _json_column(batch.column(ID_COLUMN), n)
        skip = _RESERVED | set(s.inputs)
        shadows = None
        if batch.shadow is not None:  # the candidate's prediction rides along (job.shadow)
            shadows = _shadow_members(batch.shadow, n)
            skip |= {"shadow"}
        tail = f',"model_version":{_js(result.version)},"model_sha256":{_js(result.sha256)}'
        if self.subtask is not None:
            tail += f',"subtask":{self.subtask}'
        extras = batch.extra_columns(skip)
        if extras is not None:
            columns = [(f", {_js(name)}: ", _json_column(col, n)) for name, col in extras]
        if s.kind is not None:
            fields = _kind_fields(s)
            ok_head = '{"id":%s,%s'
        else:
            template, labels, best = _label_template(s)
            ok_head = '{"id":%s,' + template
        rows = s.probabilities.tolist()
        out: list[str] = []
        k = 0
        for r in range(n):
            if s.ok[r]:
                if s.kind is not None:
                    line = ok_head % (ids[r], fields(rows[k], r))
                else:
                    line = ok_head % (ids[r], labels[best[k]], *rows[k])
                k += 1
            else:
                line = f'{{"id":{ids[r]},"error":{_js(s.errors[r])}'
            line += tail
            if shadows is not None:
                line += shadows[r]
            if extras is not None:
                line += "".join(prefix + values[r] for prefix, values in columns)
            else:
                more = batch.extras(r, skip)
                if more:
                    line += "," + _js(more)[1:-1]
            out.append(line + "}")
        return out

    def errors_only(self, batch: Batch, why: str, version: str, sha256: str) -> list[str]:
        """Error records for a whole batch the model could not score (the model itself failed).
        Rows without an id get `"id": null`, as in `format`."""
        ids = _json_column(batch.column(ID_COLUMN), batch.size)
        tail = f',"error":{_js(why)},"model_version":{_js(version)},"model_sha256":{_js(sha256)}}}'
        return ['{"id":' + rid + tail for rid in ids]


_RESERVED = frozenset(
    {
        INVALID,
        ID_COLUMN,
        "label",
        "probabilities",
        "error",
        "model_version",
        "model_sha256",
        "subtask",
        EVENT_TIME,
    }
)


def _shadow_members(shadow: Versioned[Scored], n: int) -> list[str]:
    """Each row's `"shadow"` member: the candidate's prediction (its fields as in a record of
    its own) or its error, with its `model_version`."""
    s = shadow.value
    version = f'"model_version":{_js(shadow.version)}'
    rows = s.probabilities.tolist()
    if s.kind is not None:
        fields = _kind_fields(s)
    else:
        template, labels, best = _label_template(s)
    out: list[str] = []
    k = 0
    for r in range(n):
        if s.ok[r]:
            if s.kind is not None:
                body = fields(rows[k], r)
            else:
                body = template % (labels[best[k]], *rows[k])
            k += 1
        else:
            body = f'"error":{_js(s.errors[r])}'
        out.append(f',"shadow":{{{body},{version}}}')
    return out


def _label_template(s: Scored) -> tuple[str, list[str], list[int]]:
    """For a model with probabilities: the members of a predicted row as a %-template (its label,
    then each output's score), the labels as JSON, and each predicted row's best output.
    %.9g keeps every float32 digit (float32 needs 9 to round-trip)."""
    probs = ",".join(f"{_js(o)}:%.9g" for o in s.outputs)
    labels = [_js(label) for label in s.labels]
    best = s.probabilities.argmax(axis=1).tolist() if len(s.probabilities) else []
    return '"label":%s,"probabilities":{' + probs + "}", labels, best


def _kind_fields(s: Scored) -> Callable[[list[float], int], str]:
    """Formats one predicted row's output fields (a declared output kind, extras) as JSON
    members, without the braces. Scores are rounded to float32's 9 digits, as above."""
    assert s.kind is not None
    kind = s.kind
    extras = list((s.extras or {}).items())

    def fields(row: list[float], r: int) -> str:
        out = kind.fields([float(f"{v:.9g}") for v in row])
        for name, values in extras:
            v = values[r]
            out[name] = float(v) if isinstance(v, np.floating) else v
        return _js(out)[1:-1]

    return fields


def _js(v: Any) -> str:
    try:
        return json.dumps(_plain(v), allow_nan=False, default=str, separators=(",", ":"))
    except ValueError:  # NaN/inf inside a list or object (json.loads accepts them in input)
        return json.dumps(_finite(v), allow_nan=False, default=str, separators=(",", ":"))


def _finite(v: Any) -> Any:
    """`v` with every non-finite float, however deep, as None."""
    if isinstance(v, Mapping):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return _plain(v)


def _json_column(values: Column | None, n: int) -> list[str]:
    """A column's values as JSON text (integers fast, anything else through `json.dumps`)."""
    if values is None:
        return ["null"] * n
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return [str(v) for v in values.tolist()]
    return [str(v) if type(v) is int else _js(v) for v in values]


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class Batch:
    """The rows of one batch: records (mappings by column name) or columns by name.

    `event_ms`, when given, holds each row's event time (ms since the epoch): the model version
    that scores a row is then the one its event time falls under (`HotModel.split`). A part of
    a batch split by version (`_Predicting.by_version`) has its `model` and its `rows` in the
    batch it came from.
    """

    def __init__(
        self,
        *,
        records: Sequence[Mapping[str, Any]] | None = None,
        columns: Mapping[str, Column] | None = None,
        event_ms: npt.NDArray[np.int64] | None = None,
    ) -> None:
        self.records = records
        self._columns: dict[str, Column] = dict(columns or {})
        self.event_ms = event_ms
        self.model: Any = None
        self.rows: npt.NDArray[np.intp] | None = None  # a part's rows in the batch it came from
        self.role: str | None = None  # "canary" / "serving": a part of a canary's batch
        self.fallback: Any = None  # a canary part's serving model (if the candidate fails)
        # The shadow candidate's results for this batch, when outputs carry them (`format`).
        self.shadow: Versioned[Scored] | None = None
        if records is not None:
            self.size = len(records)
            self.names: tuple[str, ...] = ()
        else:
            self.names = tuple(self._columns)
            self.size = len(next(iter(self._columns.values()))) if self._columns else 0

    def subset(self, rows: npt.NDArray[np.intp]) -> Batch:
        """The batch of these rows, in this order."""
        event_ms = None if self.event_ms is None else self.event_ms[rows]
        if self.records is not None:
            records = self.records
            return Batch(records=[records[r] for r in rows.tolist()], event_ms=event_ms)
        columns = {name: _take(col, rows) for name, col in self._columns.items()}
        return Batch(columns=columns, event_ms=event_ms)

    def column(self, name: str) -> Column | None:
        """Values of `name` by row; None if no row has it (None in rows that lack it)."""
        col = self._columns.get(name)
        if col is None and self.records is not None:
            if not any(name in rec for rec in self.records):
                return None
            col = [rec.get(name) for rec in self.records]
            self._columns[name] = col
        return col

    def extra_columns(self, skip: frozenset[str] | set[str]) -> list[tuple[str, Column]] | None:
        """The other columns of a columnar batch (None for records: theirs vary per record)."""
        if self.records is not None:
            return None
        return [(k, col) for k, col in self._columns.items() if k not in skip]

    def extras(self, row: int, skip: frozenset[str] | set[str]) -> dict[str, Any]:
        """The row's other columns (passed through to its output)."""
        if self.records is not None:
            return {k: _plain(v) for k, v in self.records[row].items() if k not in skip}
        return {k: _plain(col[row]) for k, col in self._columns.items() if k not in skip}


def _take(col: Column, rows: npt.NDArray[np.intp]) -> Column:
    if isinstance(col, np.ndarray):
        return col[rows]
    iloc = getattr(col, "iloc", None)  # a pandas Series: by position, a fresh index
    if iloc is not None:
        return iloc[rows].reset_index(drop=True)  # type: ignore[no-any-return]
    return [col[r] for r in rows.tolist()]


def parse_record(line: str | bytes) -> dict[str, Any]:
    """A JSON-lines record; one that is not a JSON object becomes an invalid record (its error
    names the problem, its `line` holds the start of the text)."""
    try:
        rec = json.loads(line)
    except ValueError as e:
        return {INVALID: f"not JSON: {e}", "line": _head(line)}
    if not isinstance(rec, dict):
        return {INVALID: f"not a JSON object but {type(rec).__name__}", "line": _head(line)}
    return rec


def _head(line: str | bytes) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return text[:200]
