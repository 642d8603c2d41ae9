"""Reads a running job's model metrics from Flink's REST API (the demo shows the swap with them),
and gives a local job a REST API to read them from (the demo, the tests and the benchmarks)."""

from __future__ import annotations

import json
import socket
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


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_rest(update_interval: str = "100 ms") -> tuple[str, dict[str, str]]:
    """(REST base URL, Flink settings) for a local job whose REST API and metrics a caller reads:
    a free loopback port, chosen here because Flink does not report its own pick (`rest.port`
    0) back to the process that starts the job, and metrics fetched every `update_interval` (the
    REST API caches them for 10 s by default)."""
    port = free_port()
    conf = {
        "rest.port": str(port),
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "metrics.fetcher.update-interval": update_interval,
    }
    return f"http://127.0.0.1:{port}", conf
