"""Reads a running job's model metrics from Flink's REST API (the demo shows the swap with them)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any


def rest_get(base: str, path: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(base.rstrip("/") + path, timeout=timeout) as resp:
        return json.loads(resp.read())


def model_metrics(base: str, job_id: str, name: str) -> dict[str, float]:
    """Every subtask's value of the model metric `name` (e.g. "reload_failures"), keyed by the
    full metric id (`<subtask>.<operator>...model.<name>`). Empty until the metric is reported."""
    out: dict[str, float] = {}
    job = rest_get(base, f"/jobs/{job_id}")
    suffix = f".model.{name}"
    for vertex in job.get("vertices", []):
        path = f"/jobs/{job_id}/vertices/{vertex['id']}/metrics"
        ids = [m["id"] for m in rest_get(base, path) if m["id"].endswith(suffix)]
        if not ids:
            continue
        query = urllib.parse.quote(",".join(ids), safe=",")
        for m in rest_get(base, f"{path}?get={query}"):
            try:
                out[m["id"]] = float(m["value"])
            except (KeyError, ValueError):
                continue
    return out
