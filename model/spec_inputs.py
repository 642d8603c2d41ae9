"""The inputs of a spec (docs/model-spec.md, "Inputs"): their declaration, and records in any
accepted form typed into columns by it, with the defaults, the null rule and the `derive=`
hook; and typed records back to JSON.

The forms: a list of dicts (a missing key is a null), a dict of columns (lists, numpy arrays,
pandas Series), a pandas DataFrame or a pyarrow Table. Typing is `reloader.columns`, the encoder
the job uses to hand columns to V8, so a value means the same in training and in serving.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.spec_base import SpecError, keys_of, name_of, typed_constant
from model.spec_steps import Column, Kind, nulls
from reloader.columns import Field, columns_from_records, encode_column, records_problem

TYPES = ("float", "int", "bool", "string", "timestamp")

Derive = Callable[[dict[str, Any]], Mapping[str, Any]]


def _flag(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise SpecError(f"{where} must be true or false, not {v!r}")
    return v


@dataclass(frozen=True)
class Input:
    """A typed input. `default` replaces a null (and makes the input nullable); a `derived`
    input is computed by the `prepare` hook (in Python: `derive=`), not given by the job."""

    name: str
    type: str
    nullable: bool = False
    default: Any = None
    derived: bool = False

    def __post_init__(self) -> None:
        where = f"input {self.name!r}"
        name_of(self.name, "input")
        if self.type not in TYPES:
            raise SpecError(f"{where}: unknown type {self.type!r} (known: {', '.join(TYPES)})")
        if self.default is not None:
            typed_constant(self.type, self.default, f"{where}: default")
            if isinstance(self.default, np.generic):
                object.__setattr__(self, "default", self.default.item())
            if self.type == "timestamp" and not isinstance(self.default, str | int | float):
                ms = typed_constant("timestamp", self.default, where)  # a datetime: as ms (JSON)
                object.__setattr__(self, "default", ms)
            object.__setattr__(self, "nullable", True)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Input:
        d = keys_of(d, ("name", "type", "nullable", "default", "derived"), where)
        name = name_of(d.get("name"), where)
        where = f"input {name!r}"
        nullable = _flag(d.get("nullable", False), f"{where}: nullable")
        if d.get("default") is not None and d.get("nullable") is False:
            raise SpecError(f"{where}: a default makes it nullable; drop `nullable: false`")
        return cls(
            name,
            d.get("type"),  # checked in __post_init__
            nullable=nullable,
            default=d.get("default"),
            derived=_flag(d.get("derived", False), f"{where}: derived"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.nullable:
            out["nullable"] = True
        if self.default is not None:
            out["default"] = self.default
        if self.derived:
            out["derived"] = True
        return out

    @property
    def as_field(self) -> Field:
        """The input as the host's encoder knows it."""
        return Field(self.name, self.type, self.nullable)

    @property
    def kind(self) -> Kind:
        if self.type in ("string", "timestamp"):
            return Kind(self.type)
        return Kind("number", is_bool=self.type == "bool")


def prepare(
    inputs: Sequence[Input], records: Any, derive: Derive | None
) -> tuple[dict[str, Any], int, dict[int, str]]:
    """Typed columns by input name (float64 with NaN, or object with None), after `derive`
    and the defaults; the rows already in error (typing, derive, nulls)."""
    names = [i.name for i in inputs]
    by_name = {i.name: i for i in inputs}
    raw = [i for i in inputs if not i.derived]
    cols, n, present = columns_of(records, names)
    errors: dict[int, str] = {}
    values = {i.name: typed(i.as_field, cols.get(i.name), n, errors) for i in raw}
    derived = [i for i in inputs if i.derived]
    if derive is not None:
        got = derive({k: v.copy() for k, v in values.items()})
        if not isinstance(got, Mapping):
            raise SpecError(f"derive= must return a dict of columns, not {type(got).__name__}")
        for i in derived:
            if i.name not in got:
                raise SpecError(f"derive= returned no column for derived input {i.name!r}")
        for k, column in got.items():
            if k not in names:
                raise SpecError(f"derive= returned {k!r}, which is not an input of the spec")
            values[k] = typed(by_name[k].as_field, column, n, errors)
    for i in derived:
        if i.name not in values:
            if i.name not in present:
                raise SpecError(
                    f"derived input {i.name!r} needs derive= (or a column of that name)"
                )
            values[i.name] = typed(i.as_field, cols.get(i.name), n, errors)
    for i in inputs:
        x = values[i.name]
        null = nulls(Column(i.kind, x))
        if not null.any():
            continue
        if i.default is not None:
            x[null] = typed_constant(i.type, i.default, f"input {i.name!r}: default")
        elif not i.nullable:
            failer(errors, i.name)(null, text("is null and not nullable"))
    return values, n, errors


def text(message: str) -> Callable[[int], str]:
    """A row message that does not depend on the row."""
    return lambda row: message


def failer(errors: dict[int, str], name: str) -> Callable[[Any, Callable[[int], str]], None]:
    """fail(rows mask, message of a row): those rows become error records naming the input,
    unless they already are one (the first error wins)."""

    def fail(rows: Any, message: Callable[[int], str]) -> None:
        for r in np.flatnonzero(rows).tolist():
            if r not in errors:
                errors[r] = f"input {name!r} {message(r)}"

    return fail


def columns_of(records: Any, names: Sequence[str]) -> tuple[dict[str, Any], int, set[str]]:
    """(columns by name, rows, the names the records have) of any accepted records form."""
    mod = type(records).__module__
    if mod.startswith("pandas") and hasattr(records, "columns"):
        present = {str(c) for c in records.columns}
        return {k: records[k] for k in names if k in present}, len(records), present
    if mod.startswith("pyarrow") and hasattr(records, "column_names"):
        present = set(records.column_names)
        return {k: records.column(k) for k in names if k in present}, records.num_rows, present
    if isinstance(records, Mapping):
        for k, v in records.items():
            if isinstance(v, str | bytes) or not hasattr(v, "__len__"):
                raise SpecError(
                    f"records: a dict must map names to columns (lists or arrays); {k!r} holds "
                    f"{type(v).__name__} (for one record, pass [record])"
                )
        n = len(next(iter(records.values()))) if records else 0
        return {k: records[k] for k in names if k in records}, n, set(records)
    if isinstance(records, str | bytes) or not isinstance(records, Iterable):
        raise SpecError(
            "records must be a list of dicts, a dict of columns or a DataFrame, "
            f"not {type(records).__name__}"
        )
    rows = records if isinstance(records, Sequence) else list(records)
    problem = records_problem(rows)
    if problem:
        raise SpecError(f"records: {problem}")
    present = {k for r in rows for k in r}
    return columns_from_records(rows, names), len(rows), present


def typed(inp: Field, column: Any, n: int, errors: dict[int, str]) -> Any:
    """One input's column typed by the host's rules: float64 (NaN = null) or object strings."""
    try:
        enc = encode_column(inp, column, n, errors)
    except ValueError as e:
        raise SpecError(f"input {inp.name!r}: {e}") from e
    if inp.type != "string":
        assert enc.values is not None
        x = np.array(enc.values, dtype=np.float64)  # a copy: never the caller's array
        x[enc.valid == 0] = np.nan
        return x
    assert enc.offsets is not None and enc.data is not None
    data = bytes(enc.data)
    off = enc.offsets.tolist()
    valid = enc.valid.tolist()
    out = np.empty(n, dtype=object)
    for r in range(n):
        out[r] = data[off[r] : off[r + 1]].decode("utf-8", "surrogatepass") if valid[r] else None
    return out


_EPOCH = _dt.datetime(1970, 1, 1)


def json_value(type_: str, v: Any) -> Any:
    """A typed value as the job would send it in JSON: nulls as None, ints as int, timestamps of
    whole milliseconds in years 1..9999 as ISO-8601 text in UTC (else their number of ms)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if type_ == "string":
        return v
    if type_ == "bool":
        return bool(v)
    if type_ == "int":
        return int(v)
    if type_ == "timestamp" and v == math.floor(v) and -62135596800000 <= v < 253402300800000:
        t = _EPOCH + _dt.timedelta(milliseconds=int(v))
        return t.isoformat(timespec="milliseconds") + "Z"
    return float(v)


def json_records(
    fields: Sequence[Field], records: Any, rows: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """`records` (the `rows` of them) as JSON-able dicts of `fields`, typed by the host's rules."""
    cols, n, _ = columns_of(records, [f.name for f in fields])
    if rows is not None:  # type only the rows asked for
        at = np.asarray(rows, dtype=np.int64)
        cols = {k: _take(v, at) for k, v in cols.items()}
        n = len(at)
    scratch: dict[int, str] = {}
    values = {f.name: typed(f, cols.get(f.name), n, scratch) for f in fields}
    return [{f.name: json_value(f.type, values[f.name][r]) for f in fields} for r in range(n)]


def _take(column: Any, at: Any) -> Any:
    mod = type(column).__module__
    if mod.startswith("pandas"):
        return column.iloc[at]
    if mod.startswith("pyarrow"):
        return column.take(at)
    if isinstance(column, np.ndarray):
        return column[at]
    return [column[r] for r in at.tolist()]
