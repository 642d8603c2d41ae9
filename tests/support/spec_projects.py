"""Model projects with a spec (docs/model-spec.md), written into a directory for `build.mjs`, and
built into bundles (`built_bundle`).

`write_typed(dir)` writes the "typed" project (every input type, nulls, a default, vocabularies
with and without an OOV bucket, one-hot, bucketize, clip + log1p, date parts, standardize, minmax)
with a hand-written Dense model; its `selfTest.expected` and `samples.features` come from
`typed_features`, a third, plain-Python implementation of that one spec (`datetime` for the date
parts), so neither runtime checks itself. The committed copy is `TYPED_FIXTURE`,
`tests/model/fixtures/typed/`; regenerate it with

    python -m tests.support.spec_projects tests/model/fixtures/typed
"""

from __future__ import annotations

import bisect
import copy
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle import build_bundle, bundle_path
from tests.support.tfjs_models import Layer, dense_model, numpy_forward

TYPED_FIXTURE = Path(__file__).resolve().parents[1] / "model" / "fixtures" / "typed"

# A project dir -> the bytes of its bundle, built into a fresh store (`build_spec` in
# tests/model/conftest.py).
BuildSpec = Callable[[Path], bytes]

LABELS = ["Adelie", "Chinstrap", "Gentoo"]
ISLANDS = ["Biscoe", "Dream", "Torgersen"]
SEXES = ["female", "male", "unknown"]
BILL_BOUNDARIES = [40.0, 45.0, 50.0]
WEEKDAY_IMPUTE = "2024-01-01T00:00:00Z"
EPOCH_IMPUTE = 1.7e12

# The raw inputs of the penguin records in docs/model-spec.md's example spec.
PENGUIN_INPUTS: list[dict[str, Any]] = [
    {"name": "island", "type": "string"},
    {"name": "bill_length_mm", "type": "float", "nullable": True},
    {"name": "sex", "type": "string", "nullable": True, "default": "unknown"},
    {"name": "year", "type": "int"},
    {"name": "observed", "type": "timestamp", "nullable": True},
]

TYPED_SPEC: dict[str, Any] = {
    "name": "typed",
    "version": "1",
    "inputs": [
        *copy.deepcopy(PENGUIN_INPUTS),
        {"name": "tagged", "type": "bool"},
        {"name": "body_mass_g", "type": "float", "nullable": True},
    ],
    "features": [
        {
            "input": "island",
            "steps": [{"vocabulary": {"values": ISLANDS, "oov": "bucket"}}, {"onehot": {}}],
        },
        {
            "input": "bill_length_mm",
            "steps": [
                {"impute": {"strategy": "mean", "value": 43.92}},
                {"standardize": {"mean": 43.92, "std": 5.46}},
            ],
        },
        {
            "input": "sex",
            "steps": [{"vocabulary": {"values": SEXES, "oov": "error"}}, {"onehot": {}}],
        },
        {"input": "year", "steps": [{"minmax": {"min": 2007, "max": 2009}}]},
        {
            "input": "observed",
            "name": "observed.month",
            "steps": [{"impute": {"value": 0}}, {"datepart": {"part": "month"}}],
        },
        {
            "input": "observed",
            "name": "observed.weekday",
            "steps": [{"impute": {"value": WEEKDAY_IMPUTE}}, {"datepart": {"part": "weekday"}}],
        },
        {
            "input": "observed",
            "name": "observed.days",
            "steps": [
                {"impute": {"value": EPOCH_IMPUTE}},
                {"datepart": {"part": "epoch_days"}},
                {"standardize": {"mean": 19000, "std": 500}},
            ],
        },
        {"input": "tagged"},
        {
            "input": "bill_length_mm",
            "name": "bill_bucket",
            "steps": [
                {"impute": {"value": 43.92}},
                {"bucketize": {"boundaries": BILL_BOUNDARIES}},
                {"onehot": {}},
            ],
        },
        {
            "input": "body_mass_g",
            "steps": [
                {"impute": {"strategy": "median", "value": 4050}},
                {"clip": {"min": 2000, "max": 7000}},
                {"log1p": {}},
            ],
        },
    ],
    "output": {"kind": "multiclass", "labels": LABELS, "top_k": 2},
    "maxBatch": 4096,
}

TYPED_NAMES = [
    *(f"island={v}" for v in ISLANDS),
    "island=<oov>",
    "bill_length_mm",
    *(f"sex={v}" for v in SEXES),
    "year",
    "observed.month",
    "observed.weekday",
    "observed.days",
    "tagged",
    *(f"bill_bucket#{i}" for i in range(len(BILL_BOUNDARIES) + 1)),
    "body_mass_g",
]

SELF_TEST_RECORDS: list[dict[str, Any]] = [
    {
        "island": "Dream",
        "bill_length_mm": 39.5,
        "sex": "female",
        "year": 2007,
        "observed": "2023-06-15T10:30:00",
        "tagged": True,
        "body_mass_g": 3800,
    },
    {
        "island": "Biscoe",
        "bill_length_mm": None,
        "sex": None,
        "year": 2009,
        "observed": None,
        "tagged": False,
        "body_mass_g": None,
    },
    {
        "island": "Mars",
        "bill_length_mm": 52.25,
        "sex": "male",
        "year": 2008,
        "observed": 1700000000000,
        "tagged": False,
        "body_mass_g": 9000.5,
    },
    {
        "island": "Torgersen",
        "bill_length_mm": 45.0,
        "sex": "unknown",
        "year": 2008,
        "observed": "2020-02-29T23:59:59+02:00",
        "tagged": True,
        "body_mass_g": 1500,
    },
]

SAMPLE_RECORDS: list[dict[str, Any]] = [
    *SELF_TEST_RECORDS,
    {
        "island": "Biscoe",
        "bill_length_mm": 40.0,
        "sex": "male",
        "year": 2009,
        "observed": "1969-12-31T23:00:00Z",
        "tagged": True,
        "body_mass_g": 4050.25,
    },
    {
        "island": "Dream",
        "bill_length_mm": 49.999,
        "sex": "female",
        "year": 2007,
        "observed": "2024-12-31",
        "tagged": False,
        "body_mass_g": 6999.9,
    },
]


def to_ms(v: Any) -> float:
    """A timestamp value of a JSON record (ISO text, naive = UTC, or ms) as ms since 1970."""
    if isinstance(v, int | float):
        return float(v)
    dt = datetime.fromisoformat(str(v))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000.0


def _utc(ms: float) -> datetime:
    return datetime.fromtimestamp(math.floor(ms / 1000.0), tz=UTC)


def typed_features(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The typed spec's features of good records, computed independently of both runtimes."""
    rows = []
    for rec in records:
        island = rec["island"]
        row = [1.0 if island == v else 0.0 for v in ISLANDS]
        row.append(0.0 if island in ISLANDS else 1.0)
        bill = 43.92 if rec["bill_length_mm"] is None else float(rec["bill_length_mm"])
        row.append((bill - 43.92) / 5.46)
        sex = rec["sex"] if rec["sex"] is not None else "unknown"
        row += [1.0 if sex == v else 0.0 for v in SEXES]
        row.append((rec["year"] - 2007) / (2009 - 2007))
        obs = rec["observed"]
        row.append(float(_utc(0.0 if obs is None else to_ms(obs)).month))
        row.append(float(_utc(to_ms(WEEKDAY_IMPUTE) if obs is None else to_ms(obs)).weekday()))
        days = (EPOCH_IMPUTE if obs is None else to_ms(obs)) / 86400000.0
        row.append((days - 19000) / 500)
        row.append(1.0 if rec["tagged"] else 0.0)
        bucket = bisect.bisect_right(BILL_BOUNDARIES, bill)
        row += [1.0 if i == bucket else 0.0 for i in range(len(BILL_BOUNDARIES) + 1)]
        mass = 4050.0 if rec["body_mass_g"] is None else float(rec["body_mass_g"])
        row.append(math.log1p(min(max(mass, 2000.0), 7000.0)))
        rows.append(row)
    return np.asarray(rows, dtype=np.float64).astype(np.float32)


def typed_layers(seed: int = 14) -> list[Layer]:
    rng = np.random.default_rng(seed)
    width = len(TYPED_NAMES)
    return [
        (rng.normal(0, 0.5, (width, 8)), rng.normal(0, 0.1, 8), "relu"),
        (rng.normal(0, 0.5, (8, 3)), rng.normal(0, 0.1, 3), "softmax"),
    ]


def write_project(
    out: Path,
    spec: Mapping[str, Any],
    layers: Sequence[Layer],
    *,
    hooks: str | None = None,
) -> Path:
    """A project dir: the Dense model, spec.json and, when given, hooks.js."""
    dense_model(out, layers)
    (out / "spec.json").write_text(json.dumps(spec, indent=1) + "\n")
    if hooks is not None:
        (out / "hooks.js").write_text(hooks)
    return out


def typed_spec(layers: Sequence[Layer] | None = None) -> dict[str, Any]:
    """The typed spec with its selfTest (numpy's outputs) and samples filled in."""
    layers = typed_layers() if layers is None else layers
    spec = copy.deepcopy(TYPED_SPEC)
    expected = numpy_forward(layers, typed_features(SELF_TEST_RECORDS))
    spec["selfTest"] = {
        "records": copy.deepcopy(SELF_TEST_RECORDS),
        "expected": expected.astype(np.float64).tolist(),
        "tolerance": 1e-5,
    }
    spec["samples"] = {
        "records": copy.deepcopy(SAMPLE_RECORDS),
        "names": list(TYPED_NAMES),
        "features": typed_features(SAMPLE_RECORDS).astype(np.float64).tolist(),
    }
    return spec


def built_bundle(project: Path, store: Path) -> bytes:
    """`project` built into the store dir `store`: the bundle's bytes."""
    build_bundle(project, store)
    return bundle_path(store).read_bytes()


def write_typed(out: Path) -> Path:
    layers = typed_layers()
    return write_project(out, typed_spec(layers), layers)


if __name__ == "__main__":
    print(write_typed(Path(sys.argv[1])))
