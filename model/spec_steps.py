"""The declarative pre-processing steps of a feature block (docs/model-spec.md, "Features").

Each step is a frozen dataclass that knows its parameters (`params`, what `fit` must fill in),
which kind of value it takes and makes (`next`), how it is fitted on training values (`fit`) and
what it computes (`apply`). `model/src/features.js` computes the same in JavaScript: the numerics
below keep the doc's operation order (float64, `(x - mean) / std`, ...) so both round alike.

Kinds of value between steps: `number` (`bool` is a number of 0/1 that remembers it was one),
`index` (0..size-1, from `vocabulary` or `bucketize`), `string`, `timestamp` (ms, float64) and
`onehot` (the last step). A null is NaN (None for strings) until `impute` replaces it.

Longer than our modules usually are: the nine steps are the doc's one table, each step small and
self-contained, and reading them side by side is how they are checked against features.js.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from model.spec_base import SpecError, count, number, show, typed_constant

F64 = npt.NDArray[np.float64]
DATEPARTS = ("year", "month", "day", "weekday", "hour", "minute", "dayofyear", "epoch_days")
_DAY = 86_400_000.0


@dataclass(frozen=True)
class Kind:
    """The kind of value a step receives: `number` (`bool` when it is still a 0/1 input),
    `index` (`size` values, or None while unfitted), `string`, `timestamp` or `onehot`."""

    name: str
    size: int | None = None
    is_bool: bool = False

    def __str__(self) -> str:
        return "bool" if self.is_bool else self.name


NUMBER = Kind("number")


@dataclass
class Column:
    """A block's values between steps: float64 (NaN = null), object (None = null) for strings,
    or float64 [n, size] after `onehot` (a row of NaN = null)."""

    kind: Kind
    x: Any


# Reports rows: fail(rows, message for row r) -> the row becomes an error record (first one wins).
Fail = Callable[[Any, Callable[[int], str]], None]


def nulls(col: Column) -> npt.NDArray[np.bool_]:
    if col.kind.name == "string":
        return np.array([v is None for v in col.x], dtype=bool)
    x: F64 = col.x
    null: npt.NDArray[np.bool_] = np.isnan(x).any(axis=1) if x.ndim == 2 else np.isnan(x)
    return null


def _present(col: Column) -> Any:
    """The non-null values, for fitting."""
    if col.kind.name == "string":
        return [v for v in col.x if v is not None]
    x: F64 = col.x
    return x[~np.isnan(x)]


def _no_data(where: str) -> SpecError:
    return SpecError(f"{where}: no non-null training values to fit on")


class Step:
    """Base of the steps: the parameters in the spec, what is unfitted, kinds, fit, apply."""

    key: ClassVar[str]

    def params(self) -> dict[str, Any]:
        return {}

    def missing(self) -> str | None:
        """What `fit` must fill in (e.g. 'mean/std'), or None when fitted."""
        return None

    def next(self, kind: Kind, where: str) -> Kind:
        raise NotImplementedError

    def fit(self, col: Column, where: str) -> Step:
        return self

    def apply(self, col: Column, fail: Fail) -> Column:
        raise NotImplementedError


def _numeric(step: Step, kind: Kind, where: str) -> Kind:
    if kind.name not in ("number", "index"):
        hint = {
            "string": " (a string needs vocabulary first)",
            "timestamp": " (needs datepart first)",
        }
        raise SpecError(
            f"{where} works on numbers, not on a {kind}{hint.get(kind.name, ' (onehot is last)')}"
        )
    return NUMBER


@dataclass(frozen=True)
class Impute(Step):
    """The null replaced by `value` (fitted from `strategy`: mean, median, most_frequent)."""

    key: ClassVar[str] = "impute"
    value: Any = None
    strategy: str | None = None

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.strategy is not None:
            out["strategy"] = self.strategy
        if self.value is not None:
            out["value"] = self.value
        return out

    def missing(self) -> str | None:
        return f"value (strategy {self.strategy})" if self.value is None else None

    def next(self, kind: Kind, where: str) -> Kind:
        if kind.name == "onehot":
            raise SpecError(f"{where} comes after onehot, which must be the last step")
        if self.strategy in ("mean", "median") and not (kind.name == "number" and not kind.is_bool):
            raise SpecError(f"{where}: strategy {self.strategy!r} needs numbers, not a {kind}")
        if self.value is not None:
            self.constant(kind, where)
        return kind

    def constant(self, kind: Kind, where: str) -> float | str:
        w = f"{where}: value"
        if kind.name in ("string", "timestamp"):
            return typed_constant(kind.name, self.value, w)
        if kind.is_bool:
            if isinstance(self.value, bool | int | float) and self.value in (0, 1):
                return float(self.value)
            raise SpecError(f"{w} must be true or false, not {self.value!r}")
        x = number(self.value, w)
        if (
            kind.name == "index"
            and kind.size is not None
            and not (x == math.floor(x) and 0 <= x < kind.size)
        ):
            raise SpecError(f"{w} must be an index in 0..{kind.size - 1}, not {show(x)}")
        return x

    def fit(self, col: Column, where: str) -> Step:
        values = _present(col)
        if len(values) == 0:
            raise _no_data(where)
        if self.strategy == "mean":
            return replace(self, value=float(np.mean(values)))
        if self.strategy == "median":
            return replace(self, value=float(np.median(values)))
        counts = Counter(values.tolist() if isinstance(values, np.ndarray) else values)
        best = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        if col.kind.is_bool:
            return replace(self, value=bool(best))
        if col.kind.name == "index":
            return replace(self, value=int(best))
        return replace(self, value=best)

    def apply(self, col: Column, fail: Fail) -> Column:
        null = nulls(col)
        if not null.any():
            return col
        x = col.x.copy()
        x[null] = self.constant(col.kind, "impute")
        return Column(col.kind, x)


@dataclass(frozen=True)
class Clip(Step):
    key: ClassVar[str] = "clip"
    min: float | None = None
    max: float | None = None

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}

    def next(self, kind: Kind, where: str) -> Kind:
        if self.min is None and self.max is None:
            raise SpecError(f"{where}: needs min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise SpecError(f"{where}: min {show(self.min)} is above max {show(self.max)}")
        return _numeric(self, kind, where)

    def apply(self, col: Column, fail: Fail) -> Column:
        x: F64 = col.x
        if self.min is not None:
            x = np.maximum(x, self.min)  # NaN (null) stays NaN
        if self.max is not None:
            x = np.minimum(x, self.max)
        return Column(NUMBER, x)


@dataclass(frozen=True)
class Log1p(Step):
    key: ClassVar[str] = "log1p"

    def next(self, kind: Kind, where: str) -> Kind:
        return _numeric(self, kind, where)

    def apply(self, col: Column, fail: Fail) -> Column:
        x: F64 = col.x
        bad = x <= -1.0
        if bad.any():
            fail(bad, lambda r: f"is {show(float(x[r]))}: log1p needs x > -1")
            x = np.where(bad, np.nan, x)
        return Column(NUMBER, np.log1p(x))


@dataclass(frozen=True)
class Standardize(Step):
    key: ClassVar[str] = "standardize"
    mean: float | None = None
    std: float | None = None

    def params(self) -> dict[str, Any]:
        return {} if self.mean is None else {"mean": self.mean, "std": self.std}

    def missing(self) -> str | None:
        return "mean/std" if self.mean is None else None

    def next(self, kind: Kind, where: str) -> Kind:
        if (self.mean is None) != (self.std is None):
            raise SpecError(f"{where}: give both mean and std, or neither (fit fills them)")
        if self.std is not None and self.std <= 0:
            raise SpecError(
                f"{where}: std must be > 0, not {show(self.std)} (a constant input carries nothing)"
            )
        return _numeric(self, kind, where)

    def fit(self, col: Column, where: str) -> Step:
        x = _present(col)
        if len(x) == 0:
            raise _no_data(where)
        std = float(np.std(x))  # population std (ddof=0)
        if std == 0:
            raise SpecError(f"{where}: the training values are all {show(float(x[0]))} (std 0)")
        return replace(self, mean=float(np.mean(x)), std=std)

    def apply(self, col: Column, fail: Fail) -> Column:
        assert self.mean is not None and self.std is not None
        return Column(NUMBER, (col.x - self.mean) / self.std)


@dataclass(frozen=True)
class MinMax(Step):
    key: ClassVar[str] = "minmax"
    min: float | None = None
    max: float | None = None

    def params(self) -> dict[str, Any]:
        return {} if self.min is None else {"min": self.min, "max": self.max}

    def missing(self) -> str | None:
        return "min/max" if self.min is None else None

    def next(self, kind: Kind, where: str) -> Kind:
        if (self.min is None) != (self.max is None):
            raise SpecError(f"{where}: give both min and max, or neither (fit fills them)")
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise SpecError(
                f"{where}: min must be below max, not {show(self.min)}..{show(self.max)}"
            )
        return _numeric(self, kind, where)

    def fit(self, col: Column, where: str) -> Step:
        x = _present(col)
        if len(x) == 0:
            raise _no_data(where)
        lo, hi = float(np.min(x)), float(np.max(x))
        if lo == hi:
            raise SpecError(f"{where}: the training values are all {show(lo)} (min = max)")
        return replace(self, min=lo, max=hi)

    def apply(self, col: Column, fail: Fail) -> Column:
        assert self.min is not None and self.max is not None
        return Column(NUMBER, (col.x - self.min) / (self.max - self.min))


@dataclass(frozen=True)
class Bucketize(Step):
    """Bucket index = how many boundaries are <= x; `quantiles: k` fits k - 1 boundaries."""

    key: ClassVar[str] = "bucketize"
    boundaries: tuple[float, ...] | None = None
    quantiles: int | None = None

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.quantiles is not None:
            out["quantiles"] = self.quantiles
        if self.boundaries is not None:
            out["boundaries"] = list(self.boundaries)
        return out

    def missing(self) -> str | None:
        return f"boundaries (quantiles {self.quantiles})" if self.boundaries is None else None

    def next(self, kind: Kind, where: str) -> Kind:
        b = self.boundaries
        if b is None and self.quantiles is None:
            raise SpecError(f"{where}: needs boundaries, or quantiles for fit to find them")
        if b is not None:
            if not b:
                raise SpecError(f"{where}: boundaries must not be empty")
            for lo, hi in itertools.pairwise(b):
                if not lo < hi:
                    raise SpecError(
                        f"{where}: boundaries must ascend strictly, not {show(lo)} then {show(hi)}"
                    )
        _numeric(self, kind, where)
        return Kind("index", None if b is None else len(b) + 1)

    def fit(self, col: Column, where: str) -> Step:
        x = _present(col)
        if len(x) == 0:
            raise _no_data(where)
        assert self.quantiles is not None
        qs = np.unique(np.quantile(x, np.arange(1, self.quantiles) / self.quantiles))
        if len(qs) == 0:
            raise SpecError(f"{where}: {self.quantiles} quantiles give no boundary")
        return replace(self, boundaries=tuple(float(v) for v in qs))

    def apply(self, col: Column, fail: Fail) -> Column:
        assert self.boundaries is not None
        x: F64 = col.x
        idx = np.searchsorted(np.asarray(self.boundaries), x, side="right").astype(np.float64)
        idx[np.isnan(x)] = np.nan
        return Column(Kind("index", len(self.boundaries) + 1), idx)


@dataclass(frozen=True)
class Vocabulary(Step):
    """String -> index in `values`; an unknown string is `len(values)` (oov bucket) or an error.
    Fitted by frequency, then value, keeping at most `max_size` seen at least `min_count` times."""

    key: ClassVar[str] = "vocabulary"
    values: tuple[str, ...] | None = None
    oov: str = "error"
    max_size: int | None = None
    min_count: int | None = None

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.values is not None:
            out["values"] = list(self.values)
        out["oov"] = self.oov  # always written: the default differs between libraries
        if self.max_size is not None:
            out["max_size"] = self.max_size
        if self.min_count is not None:
            out["min_count"] = self.min_count
        return out

    def missing(self) -> str | None:
        return "values" if self.values is None else None

    @property
    def bucket(self) -> bool:
        return self.oov == "bucket"

    def next(self, kind: Kind, where: str) -> Kind:
        if self.oov not in ("bucket", "error"):
            raise SpecError(f"{where}: oov must be 'bucket' or 'error', not {self.oov!r}")
        if self.values is not None:
            if not self.values:
                raise SpecError(f"{where}: values must not be empty")
            if len(set(self.values)) != len(self.values):
                twice = next(v for v in self.values if self.values.count(v) > 1)
                raise SpecError(f"{where}: value {twice!r} is listed twice")
        if kind.name != "string":
            raise SpecError(f"{where} works on strings, not on a {kind}")
        if self.values is None:
            return Kind("index")
        return Kind("index", len(self.values) + self.bucket)

    def fit(self, col: Column, where: str) -> Step:
        counts = Counter(_present(col))
        least = self.min_count or 1
        ranked = sorted(
            (kv for kv in counts.items() if kv[1] >= least), key=lambda kv: (-kv[1], kv[0])
        )
        values = tuple(v for v, _ in ranked[: self.max_size])
        if not values:
            raise (
                _no_data(where) if not counts else SpecError(f"{where}: no value is seen {least}x")
            )
        return replace(self, values=values)

    def apply(self, col: Column, fail: Fail) -> Column:
        assert self.values is not None
        lookup = {v: float(i) for i, v in enumerate(self.values)}
        unknown = float(len(self.values)) if self.bucket else math.nan
        strings = col.x
        idx = np.array(
            [math.nan if s is None else lookup.get(s, unknown) for s in strings], dtype=np.float64
        )
        if not self.bucket:
            bad = np.array([s is not None and s not in lookup for s in strings], dtype=bool)
            if bad.any():
                fail(bad, lambda r: f"value {strings[r]!r} is not in the vocabulary")
        return Column(Kind("index", len(self.values) + self.bucket), idx)


@dataclass(frozen=True)
class OneHot(Step):
    key: ClassVar[str] = "onehot"
    size: int | None = None

    def params(self) -> dict[str, Any]:
        return {} if self.size is None else {"size": self.size}

    def next(self, kind: Kind, where: str) -> Kind:
        if kind.name != "index":
            raise SpecError(f"{where} needs an index (from vocabulary or bucketize), not a {kind}")
        if self.size is not None and kind.size is not None and self.size != kind.size:
            raise SpecError(
                f"{where}: size {self.size} does not match the {kind.size} indexes "
                "of the step before"
            )
        return Kind("onehot", self.size or kind.size)

    def apply(self, col: Column, fail: Fail) -> Column:
        size = self.size or col.kind.size
        assert size is not None
        idx: F64 = col.x
        out = np.zeros((len(idx), size), dtype=np.float64)
        ok = ~np.isnan(idx)
        out[np.flatnonzero(ok), idx[ok].astype(np.int64)] = 1.0
        out[~ok] = np.nan
        return Column(Kind("onehot", size), out)


@dataclass(frozen=True)
class DatePart(Step):
    key: ClassVar[str] = "datepart"
    part: str = ""

    def params(self) -> dict[str, Any]:
        return {"part": self.part}

    def next(self, kind: Kind, where: str) -> Kind:
        if self.part not in DATEPARTS:
            raise SpecError(
                f"{where}: part must be one of {', '.join(DATEPARTS)}, not {self.part!r}"
            )
        if kind.name != "timestamp":
            raise SpecError(f"{where} works on timestamps, not on a {kind}")
        return NUMBER

    def apply(self, col: Column, fail: Fail) -> Column:
        return Column(NUMBER, datepart(col.x, self.part))


def datepart(ms: F64, part: str) -> F64:
    """A date part (UTC) of ms since 1970, in float64 operations as features.js does them:
    days = floor(ms / 86400000), then H. Hinnant's civil_from_days; NaN stays NaN."""
    out: F64
    days = np.floor(ms / _DAY)
    if part == "epoch_days":
        out = ms / _DAY
    elif part == "hour":
        out = np.floor((ms - days * _DAY) / 3_600_000.0)
    elif part == "minute":
        out = np.fmod(np.floor((ms - days * _DAY) / 60_000.0), 60.0)  # JavaScript's %
    elif part == "weekday":
        out = (days + 3.0) % 7.0  # 1970-01-01 was a Thursday; numpy's % is never negative
    else:
        year, month, day = _civil(days)
        if part == "dayofyear":
            out = days - _days_from_civil_jan1(year) + 1.0
        else:
            out = {"year": year, "month": month, "day": day}[part]
    return out


def _civil(days: F64) -> tuple[F64, F64, F64]:
    z = days + 719468.0
    era = np.floor(z / 146097.0)
    doe = z - era * 146097.0
    yoe = np.floor(
        (doe - np.floor(doe / 1460.0) + np.floor(doe / 36524.0) - np.floor(doe / 146096.0)) / 365.0
    )
    doy = doe - (365.0 * yoe + np.floor(yoe / 4.0) - np.floor(yoe / 100.0))
    mp = np.floor((5.0 * doy + 2.0) / 153.0)
    d = doy - np.floor((153.0 * mp + 2.0) / 5.0) + 1.0
    m = np.where(mp < 10.0, mp + 3.0, mp - 9.0)
    y = yoe + era * 400.0 + np.where(m <= 2.0, 1.0, 0.0)
    return y, m, d


def _days_from_civil_jan1(year: F64) -> F64:
    y = year - 1.0  # January counts in the year before, as in days_from_civil
    era = np.floor(y / 400.0)
    yoe = y - era * 400.0
    doy = 306.0  # floor((153 * (1 + 9) + 2) / 5) + 1 - 1
    doe = yoe * 365.0 + np.floor(yoe / 4.0) - np.floor(yoe / 100.0) + doy
    out: F64 = era * 146097.0 + doe - 719468.0
    return out


STEPS: dict[str, type[Step]] = {
    s.key: s
    for s in (Impute, Clip, Log1p, Standardize, MinMax, Bucketize, Vocabulary, OneHot, DatePart)
}


def parse_step(d: Any, where: str) -> Step:
    """One step of a spec: `{"standardize": {"mean": 1, "std": 2}}`."""
    if not isinstance(d, Mapping) or len(d) != 1:
        raise SpecError(f"{where} must be an object with one key, the step's name, not {d!r}")
    ((key, p),) = d.items()
    cls = STEPS.get(key)
    if cls is None:
        raise SpecError(f"{where}: unknown step {key!r} (known: {', '.join(STEPS)})")
    where = f"{where} ({key})"
    p = {} if p is None else p
    if not isinstance(p, Mapping):
        raise SpecError(f"{where}: parameters must be an object, not {p!r}")
    known = set(_PARSE[key])
    unknown = sorted(set(p) - known)
    if unknown:
        hint = f" (known: {', '.join(sorted(known))})" if known else " (it takes none)"
        raise SpecError(f"{where}: unknown parameter {unknown[0]!r}{hint}")
    kw = {k: _PARSE[key][k](v, f"{where}: {k}") for k, v in p.items() if v is not None}
    return cls(**kw)


def _opt_number(v: Any, where: str) -> float:
    return number(v, where)


def _strategy(v: Any, where: str) -> str:
    if v not in ("mean", "median", "most_frequent"):
        raise SpecError(f"{where} must be mean, median or most_frequent, not {v!r}")
    return str(v)


def _json_value(v: Any, where: str) -> Any:
    """An impute value as it goes back into JSON (numpy scalars made plain)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str | bool | int | float):
        return v
    if hasattr(v, "isoformat") or isinstance(v, np.datetime64):
        return typed_constant("timestamp", v, where)  # a datetime: kept as ms
    raise SpecError(f"{where} must be a number, string, boolean or time, not {v!r}")


def _numbers(v: Any, where: str) -> tuple[float, ...]:
    if isinstance(v, str | bytes) or not hasattr(v, "__iter__"):
        raise SpecError(f"{where} must be a list of numbers, not {v!r}")
    return tuple(number(x, where) for x in v)


def _strings(v: Any, where: str) -> tuple[str, ...]:
    if isinstance(v, str | bytes) or not hasattr(v, "__iter__"):
        raise SpecError(f"{where} must be a list of strings, not {v!r}")
    out = tuple(v)
    for s in out:
        if not isinstance(s, str):
            raise SpecError(f"{where} must be a list of strings; {s!r} is not one")
    return out


def _text(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise SpecError(f"{where} must be a string, not {v!r}")
    return v


_PARSE: dict[str, dict[str, Callable[[Any, str], Any]]] = {
    "impute": {"value": _json_value, "strategy": _strategy},
    "clip": {"min": _opt_number, "max": _opt_number},
    "log1p": {},
    "standardize": {"mean": _opt_number, "std": _opt_number},
    "minmax": {"min": _opt_number, "max": _opt_number},
    "bucketize": {"boundaries": _numbers, "quantiles": lambda v, w: count(v, w, 2)},
    "vocabulary": {"values": _strings, "oov": _text, "max_size": count, "min_count": count},
    "onehot": {"size": count},
    "datepart": {"part": _text},
}
