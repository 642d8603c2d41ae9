"""The output kinds of a spec (docs/model-spec.md, "Output kinds"): what the model's outputs
mean, their score columns (`meta.outputs`), the regression's scale, and the decoded fields.

Decoding is the job's own (`reloader.outputs`), so a kind means one thing everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from model.spec_base import SpecError, count, keys_of, list_of, name_of, number
from reloader.outputs import OutputKind

F32 = npt.NDArray[np.float32]
KINDS = ("multiclass", "binary", "regression", "multi")
# Fields of the job's own output records: an extra (or a multi head) may not take these names.
RESERVED = frozenset(
    {
        *("id", "label", "score", "probabilities", "probability", "top_k", "value", "values"),
        *("error", "model_version", "model_sha256", "subtask", "_invalid"),
    }
)


@dataclass(frozen=True)
class OutputSpec:
    """What the model's outputs mean. `targets` are a regression's `names` (one output each);
    `head` is the name of a head of a `multi` output."""

    kind: str
    labels: tuple[str, ...] = ()
    top_k: int | None = None
    threshold: float | None = None
    targets: tuple[str, ...] = ()
    scale_mean: tuple[float, ...] | None = None
    scale_std: tuple[float, ...] | None = None
    heads: tuple[OutputSpec, ...] = ()
    head: str | None = None

    @property
    def _where(self) -> str:
        return "output" if self.head is None else f"output head {self.head!r}"

    def __post_init__(self) -> None:
        w = f"{self._where} ({self.kind})"
        if self.kind not in KINDS or (self.head is not None and self.kind == "multi"):
            known = KINDS if self.head is None else KINDS[:3]
            raise SpecError(
                f"{self._where}: unknown kind {self.kind!r} (known: {', '.join(known)})"
            )
        if self.kind in ("multiclass", "binary"):
            least = 2 if self.kind == "multiclass" else 0
            if (self.kind == "binary" and len(self.labels) != 2) or len(self.labels) < least:
                what = "[negative, positive]" if self.kind == "binary" else "at least two labels"
                raise SpecError(f"{w}: labels must be {what}, not {list(self.labels)}")
            _distinct(self.labels, f"{w}: labels")
        if self.top_k is not None and not 1 <= self.top_k <= len(self.labels):
            raise SpecError(f"{w}: top_k must be in 1..{len(self.labels)}, not {self.top_k}")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise SpecError(f"{w}: threshold must be between 0 and 1, not {self.threshold}")
        if self.kind == "regression":
            if not self.targets:
                object.__setattr__(self, "targets", ("value",))
            _distinct(self.targets, f"{w}: names")
            for std in self.scale_std or ():
                if std <= 0:
                    raise SpecError(f"{w}: scale std must be > 0, not {std}")
        if self.kind == "multi":
            if not self.heads:
                raise SpecError(f"{w}: heads must be a non-empty list")
            _distinct(tuple(h.head or "" for h in self.heads), f"{w}: head names")

    @classmethod
    def from_dict(cls, d: Any, where: str = "output", head: str | None = None) -> OutputSpec:
        if not isinstance(d, Mapping):
            raise SpecError(f"{where} must be an object {{kind, ...}}, not {d!r}")
        kind = str(d.get("kind"))
        if kind not in KINDS or (head is not None and kind == "multi"):
            known = KINDS if head is None else KINDS[:3]
            raise SpecError(f"{where}: unknown kind {kind!r} (known: {', '.join(known)})")
        fields: tuple[str, ...] = {
            "multiclass": ("kind", "labels", "top_k"),
            "binary": ("kind", "labels", "threshold"),
            "regression": ("kind", "names", "scale"),
            "multi": ("kind", "heads"),
        }.get(kind, ("kind",))
        if head is not None:
            fields = ("name", *fields)
        d = keys_of(d, fields, f"{where} ({kind})")
        strings = [_str(v, f"{where}: labels") for v in list_of(d.get("labels", []), where)]
        top_k = count(d["top_k"], f"{where}: top_k") if d.get("top_k") else None
        heads: list[OutputSpec] = []
        for i, h in enumerate(list_of(d.get("heads", []), f"{where}: heads")):
            hw = f"{where} head {i + 1}"
            name = name_of(h.get("name") if isinstance(h, Mapping) else None, hw)
            if name in RESERVED:
                raise SpecError(f"{hw}: {name!r} is a field the job writes itself")
            heads.append(cls.from_dict(h, f"output head {name!r}", head=name))
        targets = tuple(_str(v, f"{where}: names") for v in list_of(d.get("names", []), where))
        mean = std = None
        if d.get("scale") is not None:
            scale = keys_of(d["scale"], ("mean", "std"), f"{where}: scale")
            n = max(1, len(targets))
            mean = _pername_of(scale.get("mean"), n, f"{where}: scale.mean")
            std = _pername_of(scale.get("std"), n, f"{where}: scale.std")
        return cls(
            str(kind),
            labels=tuple(strings),
            top_k=top_k,
            threshold=None if d.get("threshold") is None else number(d["threshold"], where),
            targets=targets,
            scale_mean=mean,
            scale_std=std,
            heads=tuple(heads),
            head=head,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.head} if self.head is not None else {}
        out["kind"] = self.kind
        if self.labels:
            out["labels"] = list(self.labels)
        if self.top_k is not None:
            out["top_k"] = self.top_k
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.kind == "regression":
            out["names"] = list(self.targets)
            if self.scale_mean is not None and self.scale_std is not None:
                out["scale"] = {"mean": list(self.scale_mean), "std": list(self.scale_std)}
        if self.heads:
            out["heads"] = [h.to_dict() for h in self.heads]
        return out

    def width(self) -> int:
        """How many float32 score columns the model outputs for this kind."""
        return len(self.names())

    def names(self) -> list[str]:
        """The score columns (`meta.outputs`): labels, the positive label, names, head.column."""
        if self.kind == "multi":
            return [f"{h.head}.{c}" for h in self.heads for c in h.names()]
        if self.kind == "multiclass":
            return list(self.labels)
        if self.kind == "binary":
            return [self.labels[1]]
        return list(self.targets)

    def postprocess(self, raw: Any) -> F32:
        """The model's raw outputs [n, width] -> the final scores (a regression's scale:
        output * std + mean, in float64, then float32), as the bundle returns them."""
        out = np.asarray(raw, dtype=np.float32)
        if out.ndim != 2 or out.shape[1] != self.width():
            raise SpecError(
                f"{self._where}: the model gives outputs of shape {out.shape}, the {self.kind} "
                f"output needs [n, {self.width()}] ({', '.join(self.names())})"
            )
        if self.kind == "multi":
            parts, start = [], 0
            for h in self.heads:
                parts.append(h.postprocess(out[:, start : start + h.width()]))
                start += h.width()
            return np.concatenate(parts, axis=1)
        if self.scale_mean is not None and self.scale_std is not None:
            std = np.asarray(self.scale_std, dtype=np.float64)
            mean = np.asarray(self.scale_mean, dtype=np.float64)
            scaled: F32 = (out.astype(np.float64) * std + mean).astype(np.float32)
            return scaled
        return out

    def decode(self, scores: Any) -> list[dict[str, Any]]:
        """Final scores [n, width] -> the output fields of each row, as the job writes them."""
        return self._runtime().decode(np.asarray(scores, dtype=np.float32))

    def _runtime(self) -> OutputKind:
        # The job's own decoder (reloader/outputs.py): one place that says what a kind means.
        names = tuple(self.names())
        if self.kind == "multi":
            return OutputKind("multi", names, heads=tuple(h._runtime() for h in self.heads))
        return OutputKind(
            self.kind,
            names if self.kind != "regression" else self.targets,
            labels=self.labels,
            threshold=0.5 if self.threshold is None else self.threshold,
            top_k=self.top_k or 0,
            head=self.head or "",
        )


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise SpecError(f"{where} must be non-empty strings; {v!r} is not one")
    return v


def _distinct(values: tuple[str, ...], where: str) -> None:
    for v in values:
        if values.count(v) > 1:
            raise SpecError(f"{where}: {v!r} is listed twice")


def _pername_of(v: Any, n: int, where: str) -> tuple[float, ...]:
    if isinstance(v, list | tuple):
        if len(v) != n:
            raise SpecError(f"{where} must have one number per name ({n}), not {len(v)}")
        return tuple(number(x, where) for x in v)
    return (number(v, where),) * n
