"""The HTTP semantics of the store's file routes, apart from the routes (server/app.py).

Reads: conditional GET (`If-None-Match`, `If-Modified-Since`), one byte range (`Range`,
`If-Range`), the media type of a store file. Writes: the `Content-Length` check and the capped
read of a manifest body. Refusals raise `StoreError` with the status to answer.
"""

from __future__ import annotations

import email.utils
import re

from fastapi import Request

from server.store import StoreError

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


async def manifest_body(request: Request, max_body: int) -> bytes:
    """The body of a manifest PUT, at most `max_body` and never over 64 KiB (413 beyond)."""
    cap = min(max_body, 64 << 10)
    check_length(request, cap)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > cap:
            raise StoreError(413, f"a manifest is at most {cap} bytes")
    return bytes(data)


def media_type(path: str) -> str:
    """The Content-Type of a store file, by its extension."""
    if path.endswith(".js"):
        return "application/javascript"
    if path.endswith(".json"):
        return "application/json"
    return "application/octet-stream"


def check_length(request: Request, cap: int) -> None:
    """Refuses a declared `Content-Length` that is malformed (400) or over `cap` (413)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise StoreError(400, "invalid Content-Length")
        if int(length) > cap:
            raise StoreError(413, f"body of {length} bytes over the {cap}-byte limit")


def not_modified(request: Request, etag: str, mtime: float) -> bool:
    """Whether the client's copy is current (a 304): `If-None-Match` first, else
    `If-Modified-Since`."""
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or etag in tags
    ims = request.headers.get("if-modified-since")
    if ims:
        try:
            since = email.utils.parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return int(mtime) <= since
    return False


def byte_range(request: Request, etag: str, size: int) -> tuple[int, int] | str | None:
    """(start, end) inclusive for a single satisfiable range, "invalid", or None (whole file)."""
    header = request.headers.get("range")
    if not header:
        return None
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        return None  # the client's copy is stale: send it all
    m = _RANGE.fullmatch(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multiple or malformed ranges: ignoring Range is allowed
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
        if start >= size or end < start:
            return "invalid"
        return start, min(end, size - 1)
    suffix = int(m.group(2))
    if suffix == 0 or size == 0:
        return "invalid"
    return max(0, size - suffix), size - 1
