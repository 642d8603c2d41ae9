"""The base of the spec modules: `SpecError`, and the readers of a spec's JSON values, each of
which raises one line naming where the value is (`feature 'x' step 2 (clip): min must be ...`)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from reloader.columns import Field, encode_column


class SpecError(ValueError):
    """A spec, or what was asked of it, is wrong; the message names the input, feature or step."""


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def keys_of(d: Any, known: Iterable[str], where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise SpecError(f"{where} must be an object, not {d!r}")
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise SpecError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(known)})")
    return d


def name_of(v: Any, where: str, pattern: re.Pattern[str] = NAME) -> str:
    if not isinstance(v, str) or not pattern.fullmatch(v):
        raise SpecError(f"{where}: name {v!r} must match {pattern.pattern}")
    return v


def list_of(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list | tuple):
        raise SpecError(f"{where} must be a list, not {v!r}")
    return list(v)


def show(v: Any) -> str:
    """A value in a message: integral floats without `.0` (as JavaScript prints them)."""
    if isinstance(v, float) and math.isfinite(v) and v == math.floor(v) and abs(v) < 1e21:
        return str(int(v))
    return repr(v)


def number(v: Any, where: str) -> float:
    """A finite number from a spec (JSON), or SpecError."""
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
        raise SpecError(f"{where} must be a number, not {v!r}")
    x = float(v)
    if not math.isfinite(x):
        raise SpecError(f"{where} must be finite, not {x}")
    return x


def count(v: Any, where: str, least: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < least:
        raise SpecError(f"{where} must be an integer >= {least}, not {v!r}")
    return v


def typed_constant(type_: str, value: Any, where: str) -> float | str:
    """`value` as an input of `type_` carries it (float64, or str), typed by the host's rules."""
    errors: dict[int, str] = {}
    enc = encode_column(Field("value", type_), [value], 1, errors)
    if errors or value is None or not enc.valid[0]:
        why = errors.get(0, "is null").removeprefix("input 'value' ")
        raise SpecError(f"{where} {why}")
    if type_ == "string":
        return str(value)
    assert enc.values is not None
    return float(enc.values[0])
