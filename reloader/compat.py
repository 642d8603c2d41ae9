"""The schema compatibility gate: a job's columns are fixed when it starts, models change while it
runs.

`Fixed` is what a job fixed: the typed columns it hands the model (by name) and the shape of the
output columns it writes. `problem(meta, fixed)` says why a new version cannot serve that job
(an input the job does not have, a text input where the job has numbers, another output kind,
an extra output column the new version no longer makes), or None. `Loader.build` refuses such a
version with `IncompatibleBundle` before it serves, so a `HotModel` quarantines it and the old
version keeps serving. Compatible changes go through: a new class label, a new optional input,
new extras, inputs in another order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reloader.codec import BundleMeta

NUMERIC = frozenset({"float", "int", "bool", "timestamp"})


@dataclass(frozen=True)
class Fixed:
    """What a running job fixed when it started.

    Attributes:
        inputs: the job's columns the model may read, name -> type (`float`, `int`, `bool`,
            `string`, `timestamp`); None when the job hands over whatever a record holds (JSON
            lines), so any input is worth a try and a missing one is an error record.
        output: the output shape its columns were made for (`output_shape(meta)` of the version
            it started with); None when its output is not typed (JSON lines).
    """

    inputs: Mapping[str, str] | None = None
    output: Mapping[str, Any] | None = field(default=None)


def output_shape(meta: BundleMeta) -> dict[str, Any]:
    """The part of a bundle's declared output that a job's typed columns depend on."""
    schema = meta.schema or {}
    out = schema.get("output") or {"kind": "multiclass"}
    return {
        "kind": out["kind"],
        "names": list(out.get("names") or ()) if out["kind"] == "regression" else [],
        "heads": [{"name": h["name"], "kind": h["kind"]} for h in out.get("heads") or ()],
        "extras": {str(e["name"]): str(e["type"]) for e in schema.get("extras") or ()},
    }


def input_types(meta: BundleMeta) -> dict[str, tuple[str, bool]]:
    """The raw inputs a bundle reads: name -> (type, may be null)."""
    if meta.schema is None:  # contract 1: float features, all required
        return {name: ("float", False) for name in meta.inputs}
    derived = set(meta.schema.get("derived") or ())
    return {
        str(f["name"]): (str(f["type"]), bool(f.get("nullable")) or "default" in f)
        for f in meta.schema["inputs"]
        if f["name"] not in derived and not f.get("derived")
    }


def problem(meta: BundleMeta, fixed: Fixed) -> str | None:
    """Why `meta`'s version cannot serve a job that fixed `fixed`, or None."""
    who = f"{meta.name} {meta.version}".strip()
    if fixed.inputs is not None:
        for name, (kind, optional) in input_types(meta).items():
            have = fixed.inputs.get(name)
            if have is None:
                if optional:
                    continue  # a new optional input: null for every record of this job
                columns = ", ".join(sorted(fixed.inputs)) or "none"
                return f"{who} needs input {name!r}, which the job does not have (it has {columns})"
            if (kind == "string") != (have == "string"):
                return f"{who} reads input {name!r} as {kind}; the job's column is {have}"
    if fixed.output is not None:
        want, got = fixed.output, output_shape(meta)
        if got["kind"] != want["kind"]:
            return (
                f"{who} declares a {got['kind']} output; the job's output columns were made for "
                f"{want['kind']}"
            )
        for key in ("names", "heads"):
            if got[key] != want[key]:
                return f"{who} declares output {key} {got[key]}; the job's columns hold {want[key]}"
        for name, kind in want["extras"].items():
            if got["extras"].get(name) != kind:
                now = got["extras"].get(name)
                return (
                    f"{who} no longer makes the {kind} extra {name!r} the job writes"
                    if now is None
                    else f"{who} makes extra {name!r} a {now}; the job writes a {kind}"
                )
    return None
