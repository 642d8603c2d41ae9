"""The Python side of a model: records in, predictions out.

`RecordCodec` maps a job's records (dicts keyed by feature name, or rows in `meta.inputs` order) to
the float32 matrix of the bundle's fast path, and its outputs (probabilities) back to labels and
scores. Users adapt input and return types here, without touching the reloader.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reloader.columns import TYPES
from reloader.errors import InputError

Matrix = npt.NDArray[np.float32]
OUTPUT_KINDS = ("multiclass", "binary", "regression", "multi")
EXTRA_TYPES = ("float", "string")


@dataclass(frozen=True)
class BundleMeta:
    """What a bundle declares about itself (`ml.meta`), validated."""

    name: str
    version: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    labels: tuple[str, ...]
    max_batch: int
    kernel: str = ""
    runtime: str = ""
    # contract 2 (docs/model-spec.md): typed columns in, scores out; `schema` is `ml.meta.schema`
    contract: int = 1
    schema: Mapping[str, Any] | None = None
    kernel_reason: str = ""


@dataclass(frozen=True)
class Prediction:
    """One record's result: the winning label, its index and all scores in `meta.outputs` order."""

    label: str
    index: int
    scores: tuple[float, ...]

    @property
    def score(self) -> float:
        return self.scores[self.index]


class RecordCodec:
    """Encodes records to the fast path's matrix and decodes its outputs, by a bundle's `meta`."""

    def __init__(self, meta: BundleMeta) -> None:
        self.meta = meta
        self._n_in = len(meta.inputs)

    def encode(self, records: Sequence[Mapping[str, Any] | Sequence[Any]]) -> Matrix:
        """Records -> float32 matrix [n, len(meta.inputs)].

        Raises:
            InputError: naming the first record and feature that is missing, not a number, or
                not finite.
        """
        n = len(records)
        out = np.empty((n, self._n_in), dtype=np.float32)
        names = self.meta.inputs
        for r, rec in enumerate(records):
            if isinstance(rec, Mapping):
                try:
                    values = [rec[name] for name in names]
                except KeyError as e:
                    raise InputError(
                        f"record {r}: feature {e.args[0]!r} is missing", row=r, feature=e.args[0]
                    ) from None
            elif isinstance(rec, np.ndarray | Sequence) and not isinstance(rec, str | bytes):
                if len(rec) != self._n_in:
                    raise InputError(
                        f"record {r}: has {len(rec)} values, the model takes {self._n_in} "
                        f"({', '.join(names)})",
                        row=r,
                    )
                values = list(rec)
            else:
                raise InputError(
                    f"record {r}: expected a mapping or a sequence, got {type(rec).__name__}", row=r
                )
            for i, v in enumerate(values):
                if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                    raise InputError(
                        f"record {r}: feature {names[i]!r} is {type(v).__name__}, not a number",
                        row=r,
                        feature=names[i],
                    )
                if not math.isfinite(v):
                    raise InputError(
                        f"record {r}: feature {names[i]!r} is {v}", row=r, feature=names[i]
                    )
            out[r] = values
        return out

    def decode(self, scores: Matrix) -> list[Prediction]:
        """Output matrix [n, len(meta.outputs)] -> one `Prediction` per row (argmax label)."""
        best = scores.argmax(axis=1)
        labels = self.meta.labels
        return [
            Prediction(label=labels[int(b)], index=int(b), scores=tuple(float(v) for v in row))
            for b, row in zip(best, scores, strict=True)
        ]


def meta_from_contract(meta: dict[str, Any], *, kernel: str, kernel_reason: str = "") -> BundleMeta:
    """`BundleMeta` from a validated `ml.meta` (see `meta_problem`) and the kernel name."""
    contract = int(meta.get("contract", 1))
    return BundleMeta(
        name=meta["name"],
        version=str(meta.get("version", "")),
        inputs=tuple(meta["inputs"]),
        outputs=tuple(meta["outputs"]),
        labels=tuple(meta.get("labels") or meta["outputs"]),
        max_batch=int(meta["maxBatch"]),
        kernel=kernel,
        runtime=str(meta.get("runtime", "")),
        contract=contract,
        schema=meta.get("schema") if contract >= 2 else None,
        kernel_reason=kernel_reason,
    )


def meta_problem(meta: Any) -> str | None:
    """What is wrong with a bundle's `ml.meta`, or None when it fits the contract."""
    if not isinstance(meta, dict):
        return "missing (expected {name, inputs, outputs, maxBatch})"
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        return "`name` must be a non-empty string"
    for key in ("inputs", "outputs"):
        v = meta.get(key)
        if not (isinstance(v, list) and v and all(isinstance(s, str) and s for s in v)):
            return f"`{key}` must be a non-empty list of names"
        if len(set(v)) != len(v):
            return f"`{key}` has duplicate names"
    labels = meta.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(meta["outputs"])):
        return "`labels` must have one entry per output"
    mb = meta.get("maxBatch")
    if isinstance(mb, bool) or not isinstance(mb, int) or not 1 <= mb <= 1 << 20:
        return "`maxBatch` must be an integer in 1..1048576"
    contract = meta.get("contract", 1)
    if contract not in (1, 2):
        return f"`contract` must be 1 or 2, got {contract!r} (a bundle newer than this host?)"
    if contract == 2:
        return _schema_problem(meta)
    return None


def _schema_problem(meta: dict[str, Any]) -> str | None:
    schema = meta.get("schema")
    if not isinstance(schema, dict):
        return "`schema` must be an object (contract 2)"
    inputs = schema.get("inputs")
    if not isinstance(inputs, list) or not all(
        isinstance(f, dict) and isinstance(f.get("name"), str) and f.get("type") in TYPES
        for f in inputs
    ):
        kinds = ", ".join(TYPES)
        return f"`schema.inputs` must be a list of {{name, type}} with type one of {kinds}"
    derived = schema.get("derived") or []
    if not isinstance(derived, list):
        return "`schema.derived` must be a list of input names"
    raw = [f["name"] for f in inputs if f["name"] not in derived and not f.get("derived")]
    if raw != list(meta["inputs"]):
        return "`inputs` must name the schema's raw (non-derived) inputs in order"
    output = schema.get("output")
    if not isinstance(output, dict) or output.get("kind") not in OUTPUT_KINDS:
        return f"`schema.output.kind` must be one of {', '.join(OUTPUT_KINDS)}"
    extras = schema.get("extras") or []
    if not isinstance(extras, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) and e.get("type") in EXTRA_TYPES
        for e in extras
    ):
        return "`schema.extras` must be a list of {name, type: float|string}"
    return None
