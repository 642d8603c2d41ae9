"""What a model's scores mean: the declared output kind, decoded into output fields.

docs/model-spec.md ("Output kinds"): `multiclass` (label, score, probabilities, top_k), `binary`
(label by threshold, probability), `regression` (value or values), `multi` (one object per head).
A contract-1 bundle is `multiclass` over its `meta.labels`. The job's output records and
`ModelRuntime.predict_dicts` both come from here, so a kind is decoded in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reloader.codec import BundleMeta


@dataclass(frozen=True)
class OutputKind:
    """One output (or one head of a `multi` output) and the score columns it owns."""

    kind: str
    names: tuple[str, ...]  # its score columns
    labels: tuple[str, ...] = ()
    threshold: float = 0.5
    top_k: int = 0
    head: str = ""
    heads: tuple[OutputKind, ...] = ()

    @property
    def width(self) -> int:
        return sum(h.width for h in self.heads) if self.kind == "multi" else len(self.names)

    def decode(self, scores: npt.NDArray[np.float32]) -> list[dict[str, Any]]:
        """Scores [n, width] -> one dict of output fields per row."""
        rows: list[list[float]] = scores.tolist()
        return [self.fields(row) for row in rows]

    def columns(
        self, scores: npt.NDArray[np.floating[Any]], only: frozenset[str] | None = None
    ) -> dict[str, Any]:
        """Scores [n, width] -> the output fields as columns, by numpy (the typed SQL path).

        The same values as `fields` row by row (a test holds them equal); a `multi` output's
        fields are named `head_field`. Labels come as object arrays, scores as float64 arrays,
        `probabilities` / `values` as one dict per row and `top_k` as [label, score] lists.
        With `only`, just the fields named there are computed: the per-row dicts and lists
        cost about 1 µs a row, the rest well under 0.1 µs.
        """
        x = np.asarray(scores, dtype=np.float64)
        n = len(x)

        def wanted(name: str) -> bool:
            return only is None or name in only

        if self.kind == "multi":
            out: dict[str, Any] = {}
            start = 0
            for h in self.heads:
                prefix = f"{h.head}_"
                sub_only = (
                    None
                    if only is None
                    else frozenset(k.removeprefix(prefix) for k in only if k.startswith(prefix))
                )
                sub = h.columns(x[:, start : start + h.width], sub_only)
                out.update({prefix + name: col for name, col in sub.items()})
                start += h.width
            return out
        out = {}
        if self.kind == "multiclass":
            labels = np.array(self.labels, dtype=object)
            best = x.argmax(axis=1) if n else np.zeros(0, dtype=np.intp)
            if wanted("label"):
                out["label"] = labels[best]
            if wanted("score"):
                out["score"] = x[np.arange(n), best]
            per_row = wanted("probabilities") or (self.top_k and wanted("top_k"))
            rows: list[list[float]] = x.tolist() if per_row else []
            if wanted("probabilities"):
                out["probabilities"] = [dict(zip(self.labels, r, strict=True)) for r in rows]
            if self.top_k and wanted("top_k"):
                order = np.argsort(-x, axis=1, kind="stable")[:, : self.top_k].tolist()
                out["top_k"] = [
                    [[self.labels[i], r[i]] for i in o] for o, r in zip(order, rows, strict=True)
                ]
            return out
        if self.kind == "binary":
            p = x[:, 0]
            pair = np.array(self.labels, dtype=object)
            if wanted("label"):
                out["label"] = pair[(p >= self.threshold).astype(np.intp)]
            if wanted("probability"):
                out["probability"] = p
            return out
        if len(self.names) == 1:
            return {"value": x[:, 0]} if wanted("value") else {}
        if wanted("values"):
            out["values"] = [dict(zip(self.names, r, strict=True)) for r in x.tolist()]
        return out

    def fields(self, row: Sequence[float]) -> dict[str, Any]:
        """One row's scores -> its output fields."""
        if self.kind == "multi":
            out: dict[str, Any] = {}
            start = 0
            for h in self.heads:
                out[h.head] = h.fields(row[start : start + h.width])
                start += h.width
            return out
        if self.kind == "multiclass":
            best = max(range(len(row)), key=row.__getitem__)
            out = {
                "label": self.labels[best],
                "score": row[best],
                "probabilities": dict(zip(self.labels, row, strict=True)),
            }
            if self.top_k:
                order = sorted(range(len(row)), key=lambda i: -row[i])[: self.top_k]
                out["top_k"] = [[self.labels[i], row[i]] for i in order]
            return out
        if self.kind == "binary":
            p = row[0]
            return {"label": self.labels[1 if p >= self.threshold else 0], "probability": p}
        if len(self.names) == 1:
            return {"value": row[0]}
        return {"values": dict(zip(self.names, row, strict=True))}


def output_kind(meta: BundleMeta) -> OutputKind:
    """The output kind a bundle declares (contract 2) or implies (contract 1: multiclass)."""
    if meta.schema is None:
        return OutputKind("multiclass", meta.outputs, labels=meta.labels)
    kind = _kind(meta.schema["output"], meta.outputs, meta.labels)
    if kind.width != len(meta.outputs):
        raise ValueError(
            f"the declared output takes {kind.width} score columns, the bundle has "
            f"{len(meta.outputs)} ({', '.join(meta.outputs)})"
        )
    return kind


def _kind(spec: Mapping[str, Any], names: Sequence[str], labels: Sequence[str]) -> OutputKind:
    kind = str(spec["kind"])
    if kind == "multi":
        heads = []
        start = 0
        for h in spec.get("heads") or ():
            width = _width(h)
            head = _kind(h, names[start : start + width], labels[start : start + width])
            heads.append(_with_head(head, str(h["name"])))
            start += width
        return OutputKind("multi", tuple(names), heads=tuple(heads))
    if kind == "multiclass":
        return OutputKind(
            kind,
            tuple(names),
            labels=tuple(str(v) for v in spec.get("labels") or labels),
            top_k=int(spec.get("top_k") or 0),
        )
    if kind == "binary":
        pair = spec.get("labels") or ("0", "1")
        return OutputKind(
            kind,
            tuple(names),
            labels=(str(pair[0]), str(pair[1])),
            threshold=float(spec.get("threshold", 0.5)),
        )
    return OutputKind("regression", tuple(str(v) for v in spec.get("names") or names))


def _width(spec: Mapping[str, Any]) -> int:
    kind = spec.get("kind")
    if kind == "multiclass":
        return len(spec["labels"])
    if kind == "binary":
        return 1
    if kind == "regression":
        return len(spec["names"])
    return sum(_width(h) for h in spec.get("heads") or ())


def _with_head(kind: OutputKind, head: str) -> OutputKind:
    return OutputKind(
        kind.kind, kind.names, kind.labels, kind.threshold, kind.top_k, head, kind.heads
    )
