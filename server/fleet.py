"""Who polls each model, and what each serves: the server's fleet view.

A reader reports itself with its reads of a pointer (`reloader.sources.Source.report`; over HTTP
the `X-Reloader-*` headers of `reloader.sources.REPORT_HEADERS`); the app passes each report of a
`version.json` or `channels/<name>.json` read to `Fleet.record`, with the channel it read, and the
API and the status page show `Fleet.describe`: the main manifest's readers with their rollout,
then each channel's against the channel's pointer. Kept in memory only: a restarted server knows
a reader again at its next poll.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from reloader.sources import REPORT_KEYS, STATE_ROLLED_BACK, clean_report_value
from server.store import _rfc3339

# A reader is stale after this many of its poll intervals without a poll; one that declared no
# interval is judged by DEFAULT_POLL_INTERVAL.
STALE_AFTER_POLLS = 3
DEFAULT_POLL_INTERVAL = 60.0
# Readers remembered per model, channels included: a Flink job has one per subtask (and one more
# per shadow or canary); this bounds what clients that invent ids can make the server hold
# (~1.5 KB each).
MAX_CLIENTS_PER_MODEL = 1000

Pointer = Mapping[str, Any]  # a manifest's fields, as `Manifest.to_dict` gives them


@dataclasses.dataclass(frozen=True)
class Poll:
    """A reader's last pointer read: what it reported (clean text), when, from where, and the
    channel whose pointer it read (None: `version.json`)."""

    info: Mapping[str, str]
    at: float
    address: str | None
    channel: str | None = None


class Fleet:
    """The readers of each model, from what they report with their pointer reads.

    At most `max_clients` per model; the one silent longest is forgotten first. A reader is one
    client id per pointer: a job's serving model and its canary are two. FastAPI runs the sync
    endpoints in a thread pool: the lock guards the maps, and nothing slow is done under it.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_clients: int = MAX_CLIENTS_PER_MODEL,
    ) -> None:
        self._clock = clock
        self._max = max_clients
        self._models: dict[str, OrderedDict[tuple[str, str], Poll]] = {}
        self._lock = threading.Lock()

    def record(
        self,
        model: str,
        info: Mapping[str, str],
        address: str | None,
        *,
        channel: str | None = None,
    ) -> bool:
        """Notes a poll of `model`'s manifest, or of its channel `channel` (a name the store
        has: the app passes only reads that succeeded); `info` is untrusted (only `REPORT_KEYS`
        are kept, cleaned). False (nothing noted) without a `client` id."""
        clean = {}
        for key in REPORT_KEYS:
            if key in info and (value := clean_report_value(info[key])) is not None:
                clean[key] = value
        client = clean.get("client")
        if client is None:
            return False
        poll = Poll(clean, self._clock(), clean_report_value(address) if address else None, channel)
        reader = (channel or "", client)
        with self._lock:
            clients = self._models.setdefault(model, OrderedDict())
            clients.pop(reader, None)
            clients[reader] = poll  # the newest at the end: eviction pops from the front
            while len(clients) > self._max:
                clients.popitem(last=False)
        return True

    def describe(
        self,
        model: str,
        current: Pointer | None,
        channels: Mapping[str, Pointer | None] | None = None,
    ) -> dict[str, Any]:
        """`fleet` (one entry per reader of the main manifest) and its `rollout` summary against
        `current`, the manifest live now; `channels`, one per channel the store has (`channels`:
        name -> its pointer) or that has readers, each with its `fleet` and its `rollout`
        against its pointer. Stale readers are listed but not counted; nor are readers of
        `version.json` that follow something else (a pinned version)."""
        now = self._clock()
        pointers = dict(channels or {})
        with self._lock:
            polls = list(self._models.get(model, {}).values())
        main: list[dict[str, Any]] = []
        groups: dict[str, list[dict[str, Any]]] = {name: [] for name in pointers}
        for p in polls:
            if p.channel is None:
                main.append(_fleet_entry(p, now, current))
            else:
                entry = _fleet_entry(p, now, pointers.get(p.channel))
                groups.setdefault(p.channel, []).append(entry)
        main.sort(key=_fleet_order)
        return {
            "fleet": main,
            "rollout": _rollout([e for e in main if e["follows"] is None], current),
            "channels": [
                {
                    "name": name,
                    "current": pointers.get(name),
                    "fleet": sorted(entries, key=_fleet_order),
                    "rollout": _rollout(entries, pointers.get(name)),
                }
                for name, entries in sorted(groups.items())
            ],
        }


def _rollout(entries: list[dict[str, Any]], current: Pointer | None) -> dict[str, Any]:
    """How far the readers in `entries` are on `current`; stale ones are not counted. Complete:
    at least one live reader, all on `current`, none of them rolled it back."""
    live = [e for e in entries if not e["stale"]]
    on_current = sum(1 for e in live if e["current"])
    rolled_back = sum(1 for e in live if e["rolled_back"])
    return {
        "version": current["version"] if current else None,
        "clients": len(live),
        "on_current": on_current,
        "rolled_back": rolled_back,
        "stale": len(entries) - len(live),
        "complete": bool(live) and on_current == len(live) and not rolled_back,
    }


def _fleet_entry(p: Poll, now: float, current: Pointer | None) -> dict[str, Any]:
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
    state = p.info.get("state")
    return {
        "client": p.info["client"],
        "job": p.info.get("job"),
        "subtask": p.info.get("subtask"),
        "role": p.info.get("role"),
        "channel": p.channel,
        # What it says it follows: its channel, or `version:<label>` when it reads version.json
        # for a pin (not a reader of the main manifest then).
        "follows": p.info.get("channel") if p.channel is None else p.channel,
        "address": p.address,
        "version": version,
        "sha256": sha,
        "state": state,
        "rolled_back": state is not None and state.startswith(STATE_ROLLED_BACK),
        "poll_interval": interval,
        "last_poll": _rfc3339(p.at),
        "seconds_since": round(since, 1),
        "stale": since > STALE_AFTER_POLLS * (interval or DEFAULT_POLL_INTERVAL),
        "current": on_current,
    }


def _fleet_order(entry: dict[str, Any]) -> tuple[str, int, str, str]:
    """By job, then subtask as a number (2 before 10, `3 canary` as 3), then client id."""
    subtask = entry["subtask"] or ""
    digits = subtask[: len(subtask) - len(subtask.lstrip("0123456789"))]
    number = int(digits) if digits and len(digits) < 10 else -1
    return (entry["job"] or "", number, subtask, entry["client"])


def _seconds(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None
