"""Output kinds decoded by column (the SQL path) equal the row-by-row decoding (the JSON path)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from reloader.outputs import OutputKind

MULTICLASS = OutputKind("multiclass", ("a", "b", "c"), labels=("x", "y", "z"), top_k=2)
BINARY = OutputKind("binary", ("p",), labels=("no", "yes"), threshold=0.3)
ONE = OutputKind("regression", ("price",))
MANY = OutputKind("regression", ("lo", "hi"))
MULTI = OutputKind(
    "multi",
    ("a", "b", "c", "p", "lo", "hi"),
    heads=(
        OutputKind("multiclass", ("a", "b", "c"), labels=("x", "y", "z"), head="species"),
        OutputKind("binary", ("p",), labels=("no", "yes"), head="alive"),
        OutputKind("regression", ("lo", "hi"), head="range"),
    ),
)


def _flat(fields: dict[str, Any], kind: OutputKind) -> dict[str, Any]:
    if kind.kind != "multi":
        return fields
    return {f"{head}_{k}": v for head, sub in fields.items() for k, v in sub.items()}


@pytest.mark.parametrize("kind", [MULTICLASS, BINARY, ONE, MANY, MULTI], ids=lambda k: k.kind)
def test_columns_equal_fields_row_by_row(kind: OutputKind) -> None:
    rng = np.random.default_rng(7)
    scores = rng.random((200, kind.width)).astype(np.float32)
    scores[:20] = 0.25  # ties: the first best label wins, top_k keeps declared order
    scores[20:40, 0] = 0.3  # on the binary threshold
    columns = kind.columns(scores)
    rows = [_flat(kind.fields(r), kind) for r in scores.tolist()]
    assert set(columns) == set(rows[0])
    for name, column in columns.items():
        got = column.tolist() if isinstance(column, np.ndarray) else column
        assert got == [r[name] for r in rows], name


@pytest.mark.parametrize("kind", [MULTICLASS, BINARY, ONE, MANY, MULTI], ids=lambda k: k.kind)
def test_columns_only_the_fields_asked_for(kind: OutputKind) -> None:
    scores = np.random.default_rng(3).random((50, kind.width)).astype(np.float32)
    every = kind.columns(scores)
    for name in every:
        got = kind.columns(scores, frozenset({name}))
        assert list(got) == [name]
        assert np.array_equal(np.asarray(got[name]), np.asarray(every[name])), name
    assert kind.columns(scores, frozenset()) == {}


def test_columns_of_no_rows() -> None:
    columns = MULTICLASS.columns(np.zeros((0, 3), dtype=np.float32))
    assert {k: len(v) for k, v in columns.items()} == dict.fromkeys(columns, 0)
