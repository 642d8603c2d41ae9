"""Who polls each model, and what each serves: the server's fleet view.

A reader reports itself with its manifest reads (`reloader.sources.Source.report`; over HTTP the
`X-Reloader-*` headers of `reloader.sources.REPORT_HEADERS`); the app passes each report of a
`version.json` read to `Fleet.record`, and the API and the status page show `Fleet.describe`.
Kept in memory only: a restarted server knows a reader again at its next poll.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from reloader.sources import REPORT_KEYS, clean_report_value
from server.store import _rfc3339

# A reader is stale after this many of its poll intervals without a poll; one that declared no
# interval is judged by DEFAULT_POLL_INTERVAL.
STALE_AFTER_POLLS = 3
DEFAULT_POLL_INTERVAL = 60.0
# Readers remembered per model: a Flink job has one per subtask; this bounds what clients that
# invent ids can make the server hold (~1.5 KB each).
MAX_CLIENTS_PER_MODEL = 1000


@dataclasses.dataclass(frozen=True)
class Poll:
    """A reader's last manifest read: what it reported (clean text), when, and from where."""

    info: Mapping[str, str]
    at: float
    address: str | None


class Fleet:
    """The readers of each model, from what they report with their manifest reads.

    At most `max_clients` per model; the one silent longest is forgotten first. FastAPI runs the
    sync endpoints in a thread pool: the lock guards the maps, and nothing slow is done under it.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_clients: int = MAX_CLIENTS_PER_MODEL,
    ) -> None:
        self._clock = clock
        self._max = max_clients
        self._models: dict[str, OrderedDict[str, Poll]] = {}
        self._lock = threading.Lock()

    def record(self, model: str, info: Mapping[str, str], address: str | None) -> bool:
        """Notes a poll of `model`; `info` is untrusted (only `REPORT_KEYS` are kept, cleaned).
        False (nothing noted) without a `client` id."""
        clean = {}
        for key in REPORT_KEYS:
            if key in info and (value := clean_report_value(info[key])) is not None:
                clean[key] = value
        client = clean.get("client")
        if client is None:
            return False
        poll = Poll(clean, self._clock(), clean_report_value(address) if address else None)
        with self._lock:
            clients = self._models.setdefault(model, OrderedDict())
            clients.pop(client, None)
            clients[client] = poll  # the newest at the end: eviction pops from the front
            while len(clients) > self._max:
                clients.popitem(last=False)
        return True

    def describe(self, model: str, current: Mapping[str, Any] | None) -> dict[str, Any]:
        """`fleet` (one entry per reader) and the `rollout` summary against the manifest
        `current` points at; stale readers are listed but not counted in the rollout."""
        now = self._clock()
        with self._lock:
            polls = list(self._models.get(model, {}).values())
        fleet = [_fleet_entry(p, now, current) for p in polls]
        fleet.sort(key=_fleet_order)
        live = [f for f in fleet if not f["stale"]]
        on_current = sum(1 for f in live if f["current"])
        return {
            "fleet": fleet,
            "rollout": {
                "version": current["version"] if current else None,
                "clients": len(live),
                "on_current": on_current,
                "stale": len(fleet) - len(live),
                "complete": bool(live) and on_current == len(live),
            },
        }


def _fleet_entry(p: Poll, now: float, current: Mapping[str, Any] | None) -> dict[str, Any]:
    interval = _seconds(p.info.get("poll_interval"))
    since = max(0.0, now - p.at)
    sha = p.info.get("sha256")
    version = p.info.get("version")
    if current is None:
        on_current = False
    elif sha is not None:
        on_current = sha == current["sha256"]
    else:  # a reader that reports only a label: the label must match
        on_current = version is not None and version == current["version"]
    return {
        "client": p.info["client"],
        "job": p.info.get("job"),
        "subtask": p.info.get("subtask"),
        "address": p.address,
        "version": version,
        "sha256": sha,
        "poll_interval": interval,
        "last_poll": _rfc3339(p.at),
        "seconds_since": round(since, 1),
        "stale": since > STALE_AFTER_POLLS * (interval or DEFAULT_POLL_INTERVAL),
        "current": on_current,
    }


def _fleet_order(entry: dict[str, Any]) -> tuple[str, int, str, str]:
    """By job, then subtask as a number (2 before 10), then client id."""
    subtask = entry["subtask"] or ""
    number = int(subtask) if subtask.isdigit() and len(subtask) < 10 else -1
    return (entry["job"] or "", number, subtask, entry["client"])


def _seconds(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None
