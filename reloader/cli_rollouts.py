"""The rollout commands of `python -m reloader`: `channel`, `promote`, `abort` and `history`.

Their parser and the dispatch are in reloader/cli.py, which passes each one the store options
(`source_options`) built from the command line. `channel` points a channel at a published version
or shows it, `promote` and `abort` end a channel's rollout either way, and `history` lists a store's
publishes and the event-time timeline they define.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reloader.errors import ManifestError, MissingObject
from reloader.history import HistoryEntry, entry_for, read_history, segments
from reloader.layout import channel_key
from reloader.manifest import Manifest, parse
from reloader.publish import abort_channel, point_channel, promote_channel
from reloader.sources import open_source, split_ref


def channel(args: argparse.Namespace, *, source_options: dict[str, Any]) -> int:
    """`channel URL NAME [--to VERSION]`: point channel NAME, or print where it points."""
    if args.to is not None:
        m = point_channel(args.url, args.name, args.to, source_options=source_options)
        verb = "points at"
    else:
        with open_source(args.url, **source_options) as source:
            try:
                fetched = source.read_manifest(key=channel_key(args.name))
            except MissingObject:
                print(
                    f"error: {args.url} has no channel {args.name!r}; create it with "
                    f"`python -m reloader channel {args.url} {args.name} --to VERSION` or "
                    "`publish BUILD_DIR URL --channel NAME`",
                    file=sys.stderr,
                )
                return 1
        if fetched is None:  # only possible with a validator
            raise MissingObject("no channel returned", url=source.describe(channel_key(args.name)))
        m = parse(fetched.data)
        verb = "is at"
    if args.json:
        print(json.dumps({"channel": args.name, "manifest": m.to_dict()}))
        return 0
    at = f", from event time {m.effective_at}" if m.effective_at else ""
    print(
        f"channel {args.name} of {args.url} {verb} {m.model} {m.version} "
        f"({m.sha256[:12]}, created {m.created}{at})"
    )
    return 0


def promote_or_abort(args: argparse.Namespace, *, source_options: dict[str, Any]) -> int:
    """`promote|abort URL --channel NAME`: the main manifest becomes the channel's, or the
    channel points back at the main manifest."""
    if args.command == "promote":
        m = promote_channel(args.url, args.channel, source_options=source_options)
        done = f"promoted channel {args.channel} of {args.url}: the main manifest is"
    else:
        m = abort_channel(args.url, args.channel, source_options=source_options)
        done = f"aborted channel {args.channel} of {args.url}: it points at the main manifest,"
    print(f"{done} {m.model} {m.version} ({m.sha256[:12]}, created {m.created})")
    return 0


def history(args: argparse.Namespace, *, source_options: dict[str, Any]) -> int:
    """`history URL`: every publish, the one the manifest points at, and the timeline."""
    with open_source(args.url, **source_options) as source:
        current: Manifest | None = None
        problem = None
        # The manifest first: through a channel (URL@NAME) it decides what the history is.
        try:
            fetched = source.read_manifest()
            current = parse(fetched.data) if fetched else None
        except MissingObject as missing:
            problem = (
                "the store has no manifest" if split_ref(args.url)[1] is None else str(missing)
            )
        except ManifestError as bad:
            problem = f"its manifest is unusable ({bad})"
        entries = read_history(source)
    index = entry_for(entries, current) if current is not None else None
    timeline = segments(entries[: index + 1]) if index is not None else None
    if args.json:
        print(json.dumps(_history_dict(args.url, entries, current, index, timeline)))
        return 0
    if not entries:
        print(f"{args.url}: no publish history")
    else:
        channels = any(e.channel is not None for e in entries)
        rows = [["", "#", "published_at", "how", "version", "sha256", "effective_at"]]
        if channels:
            rows[0].insert(4, "to")
        for i, e in enumerate(entries):
            m = e.manifest
            mark = "*" if i == index else ""
            rows.append([mark, str(i + 1), e.published_at, e.how, m.version, m.sha256[:12]])
            if channels:  # a store with channels: which pointer each publish moved
                rows[-1].insert(4, e.channel or "main")
            rows[-1].append(m.effective_at or "-")
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    if problem is not None:
        print(f"{args.url}: {problem}")
    elif current is not None and index is None:
        print(
            f"the manifest ({current.version}, {current.sha256[:12]}) is not in the history "
            "(published without it, e.g. by `aws s3 cp`): it serves every event time"
        )
    elif current is not None and index is not None:
        if any(e.channel is None for e in entries[index + 1 :]):
            print(f"entries after #{index + 1} are newer than the manifest: ignored")
        print("timeline (event time -> version):")
        for start, m in timeline or []:
            since = "from the start" if start is None else f"from {m.effective_at}"
            print(f"  {since}: {m.version} ({m.sha256[:12]})")
    return 0


def _history_dict(
    url: str,
    entries: list[HistoryEntry],
    current: Manifest | None,
    index: int | None,
    timeline: list[tuple[int | None, Manifest]] | None,
) -> dict[str, Any]:
    return {
        "url": url,
        "manifest": current.to_dict() if current else None,
        "current": index,
        "entries": [
            {
                "published_at": e.published_at,
                "how": e.how,
                "channel": e.channel,
                "version": e.manifest.version,
                "sha256": e.manifest.sha256,
                "effective_at": e.manifest.effective_at,
                "effective_at_ms": e.manifest.effective_at_ms,
                "current": i == index,
                "manifest": e.manifest.to_dict(),
            }
            for i, e in enumerate(entries)
        ],
        "timeline": None
        if timeline is None
        else [
            {"start_ms": start, "version": m.version, "sha256": m.sha256} for start, m in timeline
        ],
    }
