"""A store's publish history (`history.jsonl`): read it, append to it, and the timeline it defines.

One JSON object a line, in publish order, the format the HTTP server (`server/store.py`) writes:

    {"published_at": "2026-12-01T07:55:02Z", "how": "publish" | "rollback" | "promote" | "abort",
     "manifest": {...the manifest's fields...}, "document": "<the exact manifest bytes as text>"}

A publish to a channel (`channels/<name>.json`, see `reloader.layout`) adds `"channel": "<name>"`
at the end of its line. The main manifest's lines have none: `entry_for` and `segments` take the
main manifest's lines unless asked for a channel's (`channel="stable"`), so a channel's publishes
never enter the main timeline, nor the main manifest's into a channel's.

Who writes it: `reloader.publish` appends a line to a directory or S3 store after the bundle and
before the manifest; the HTTP server appends one itself whenever a manifest is PUT or rolled back.
A store filled by other means (`aws s3 cp` of a build) has no history, or a manifest that is not
in it; readers follow such a manifest as they always did.

Readers: the history can hold entries newer than the manifest (a publisher that died after the
history line and before the manifest, or one whose manifest write failed). Only the entries up to
`entry_for(entries, current_manifest)` count; later ones are ignored.

Concurrency: for directory and S3 stores the append is a read-modify-write of the whole file, so
two publishers at the same time can lose one's line. Publish to such a store from one place at a
time, or through the HTTP server, which serializes the writers of a model.

This module imports no V8 and no network code of its own: it reads and writes through a `Source`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from reloader.errors import ManifestError, MissingObject, ReloaderError
from reloader.layout import HISTORY_NAME, MAX_HISTORY_BYTES
from reloader.manifest import Manifest, parse
from reloader.sources import Source, scheme_of

HISTORY_TYPE = "application/x-ndjson"
# The first key of every line (json.dumps keeps insertion order): where a line starts.
_LINE_START = b'{"published_at"'


class HistoryTooLarge(ReloaderError):
    """A `history.jsonl` over `MAX_HISTORY_BYTES`: neither read nor appended to.

    Attributes:
        url: where the history is.
        limit: the cap in bytes.
    """

    def __init__(self, *, url: str, limit: int) -> None:
        self.url = url
        self.limit = limit
        super().__init__(
            f"{url} is over the {limit >> 20} MiB cap of a publish history; archive its old "
            "lines (keep every line from the last publish without an effective time on)"
        )


@dataclass(frozen=True)
class HistoryEntry:
    """One line of `history.jsonl`.

    Attributes:
        manifest: the manifest published, parsed from `document`.
        published_at: when the publisher or the server wrote the line (RFC 3339, UTC).
        how: `publish`, `rollback` (the HTTP server's), `promote` or `abort` (of a channel).
        document: the exact bytes published as `version.json`.
        channel: the channel it was published to (`channels/<channel>.json`); None for the main
            manifest.
    """

    manifest: Manifest
    published_at: str
    how: str
    document: bytes
    channel: str | None = None


def read_history(source: Source) -> list[HistoryEntry]:
    """The store's history in publish order; `[]` when it has none.

    A line that does not parse (a torn last line after a crash, garbage) or whose document is not
    a valid manifest is skipped; the rest still count. Raises `HistoryTooLarge` over the cap,
    `SourceError` when the store cannot be read.
    """
    data = _read(source)
    return [] if data is None else parse_history(data)


def parse_history(data: bytes) -> list[HistoryEntry]:
    """The entries of a `history.jsonl` document (see `read_history`)."""
    entries = []
    for line in data.split(b"\n"):
        entry = _entry(line)
        if entry is None:
            # A line torn by a crash, with the next append run onto it: the last line start.
            start = line.rfind(_LINE_START)
            entry = _entry(line[start:]) if start > 0 else None
        if entry is not None:
            entries.append(entry)
    return entries


def entry_for(
    entries: Sequence[HistoryEntry], manifest: Manifest, *, channel: str | None = None
) -> int | None:
    """The index of the last entry that published exactly `manifest`, or None.

    Exactly: the same document bytes, or the same fields. A relabelled, re-stamped or re-signed
    manifest is another entry (its `version`, `created` or `signature` differs). Only the entries
    of the main manifest count, or with `channel` those of that channel; the index is into
    `entries` as given, so `entries[: index + 1]` is the history up to it.
    """
    document = manifest.to_bytes()
    for i in range(len(entries) - 1, -1, -1):
        e = entries[i]
        if e.channel == channel and (e.document == document or e.manifest == manifest):
            return i
    return None


def segments(
    entries: Sequence[HistoryEntry], *, channel: str | None = None
) -> list[tuple[int | None, Manifest]]:
    """The timeline the publishes define, as `(start, manifest)` sorted by start.

    `start` is the event time in milliseconds from which `manifest` serves (until the next
    segment's start); None is minus infinity. Each publish with an effective time T says "from T
    on, this version": it drops the segments that start at or after T and adds `(T, manifest)`.
    A publish without one (T = None) replaces the whole timeline. So A, B(T=1000), C(T=2000) give
    `[(None, A), (1000, B), (2000, C)]`; A, B(2000), C(1000) give `[(None, A), (1000, C)]`; A,
    B(1000), D give `[(None, D)]`.

    Pass the entries up to the current manifest (`entries[: entry_for(...) + 1]`). A timeline
    whose first publish had an effective time starts there: before it, nothing was published.
    Only the main manifest's entries count, or with `channel` that channel's (the others are
    skipped), as for `entry_for`.
    """
    timeline: list[tuple[int | None, Manifest]] = []
    for entry in entries:
        if entry.channel != channel:
            continue
        start = entry.manifest.effective_at_ms
        timeline = [s for s in timeline if _before(s[0], start)]
        timeline.append((start, entry.manifest))
    return timeline


def append_entry(
    source: Source,
    manifest: Manifest,
    *,
    how: str = "publish",
    channel: str | None = None,
    document: bytes | None = None,
) -> None:
    """Appends a line for `manifest` (published as `document`, default `manifest.to_bytes()`)
    to the history; with `channel`, as a publish to that channel.

    A read-modify-write of the whole file through `source.put`: one publisher at a time per store
    (see the module docstring). Not for an HTTP store, whose server keeps its own history (it
    refuses a PUT of it). Raises `HistoryTooLarge` when the history is over the cap, `SourceError`
    when a read or the write fails.
    """
    if writes_own_history(source):
        raise ValueError(
            f"{source.url} is an HTTP store: its server appends the history when the manifest "
            "is published"
        )
    old = _read(source) or b""
    if old and not old.endswith(b"\n"):
        old += b"\n"  # a torn last line stays torn; it must not swallow this one
    line = history_line(
        manifest, manifest.to_bytes() if document is None else document, how=how, channel=channel
    )
    data = old + line
    if len(data) > MAX_HISTORY_BYTES:
        raise HistoryTooLarge(url=source.describe(HISTORY_NAME), limit=MAX_HISTORY_BYTES)
    source.put(HISTORY_NAME, data, content_type=HISTORY_TYPE)


def history_line(
    manifest: Manifest,
    document: bytes,
    *,
    how: str,
    published_at: str | None = None,
    channel: str | None = None,
) -> bytes:
    """One line of `history.jsonl` (with its newline), as every writer of a history writes it."""
    entry: dict[str, Any] = {
        "published_at": published_at or now_utc(),
        "how": how,
        "manifest": manifest.to_dict(),
        "document": document.decode(),
    }
    if channel is not None:
        entry["channel"] = channel
    return (json.dumps(entry) + "\n").encode()


def now_utc() -> str:
    """The current time as an RFC 3339 UTC stamp to the second (`2026-12-01T07:55:02Z`)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def writes_own_history(source: Source) -> bool:
    """True for an HTTP(S) store: its server appends the history itself, publishers must not."""
    return scheme_of(source.url) in ("http", "https")


def _read(source: Source) -> bytes | None:
    """The raw history, None when there is none; `HistoryTooLarge` past the cap."""
    parts: list[bytes] = []
    total = 0
    chunks = source.iter_bundle(HISTORY_NAME)
    try:
        for chunk in chunks:
            total += len(chunk)
            if total > MAX_HISTORY_BYTES:
                raise HistoryTooLarge(url=source.describe(HISTORY_NAME), limit=MAX_HISTORY_BYTES)
            parts.append(chunk)
    except MissingObject:
        return None
    finally:
        # Stop the download now (a generator's close), not when it is garbage collected.
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return b"".join(parts)


def _entry(line: bytes) -> HistoryEntry | None:
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    document, published_at, how = doc.get("document"), doc.get("published_at"), doc.get("how")
    channel = doc.get("channel")
    if not (isinstance(document, str) and isinstance(published_at, str)):
        return None
    if channel is not None and not isinstance(channel, str):
        return None  # neither the main manifest's line nor a channel's: garbled
    try:
        raw = document.encode()
        manifest = parse(raw)
    except (UnicodeEncodeError, ManifestError):
        return None
    return HistoryEntry(
        manifest=manifest,
        published_at=published_at,
        how=how if isinstance(how, str) else "publish",
        document=raw,
        channel=channel,
    )


def _before(a: int | None, b: int | None) -> bool:
    """a < b, where None is minus infinity."""
    return b is not None and (a is None or a < b)
