"""The store format, in one place: object names, key patterns and size caps.

Every part that reads or writes a store imports these: the sources and the manifest parser
(reloader), `publish`, the HTTP server (`server/`) and the job's settings. A store root holds

    <root>/bundles/<sha256>.js   immutable, content-addressed
    <root>/version.json          the manifest: the one mutable object, written last (commit marker)
    <root>/history.jsonl         every manifest published there, one JSON object a line
    <root>/channels/<name>.json  a channel's pointer: a manifest, moved independently of
                                 version.json (its history lines carry `"channel": "<name>"`)

`publish` appends to the history before it writes the manifest (the HTTP server appends it itself
when a manifest is PUT); `reloader.history` reads it. A store filled by other means (`aws s3 cp`)
may have none.

This module imports nothing of the package, so the server can use it without V8 or network code.
"""

from __future__ import annotations

import re

FORMAT = 1
MANIFEST_NAME = "version.json"
HISTORY_NAME = "history.jsonl"
BUNDLES_DIR = "bundles"
BUNDLE_SUFFIX = ".js"
CHANNELS_DIR = "channels"
CHANNEL_SUFFIX = ".json"

# A manifest is a few hundred bytes; the cap bounds what a hostile store can make us parse.
MAX_MANIFEST_BYTES = 64 << 10
# The largest `size` a manifest may declare at all (the format's limit, not a policy).
MAX_BUNDLE_SIZE = 1 << 40
# The default policy: readers refuse, and the server does not accept, bundles larger than this.
# The WINE bundle is ~1 MB; TF.js with a mid-sized model stays well under 64 MB.
DEFAULT_MAX_BUNDLE_BYTES = 64 << 20
# A history line is ~1 KB (manifest + document): 64 MiB holds tens of thousands of publishes, and
# bounds what a hostile store can make a reader download and parse.
MAX_HISTORY_BYTES = 64 << 20
# Streaming reads and copies: large enough to amortize a syscall, small enough to cap memory.
CHUNK = 256 << 10

SHA256 = re.compile(r"[0-9a-f]{64}")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
KEY_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
BUNDLE_FILE = re.compile(r"([0-9a-f]{64})\.js")
# Channel names are URL- and file-name-safe as they are, and cannot be confused with a path.
CHANNEL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
CHANNEL_FILE = re.compile(r"([a-z][a-z0-9_-]{0,63})\.json")
MAX_KEY_LENGTH = 512


def bundle_key(sha256: str) -> str:
    """The key, relative to the root, under which the bundle with this hash is stored."""
    return f"{BUNDLES_DIR}/{bundle_file(sha256)}"


def bundle_file(sha256: str) -> str:
    """The bundle's file name (in a store's `bundles/` and in the local cache)."""
    return f"{sha256}{BUNDLE_SUFFIX}"


def channel_key(name: str) -> str:
    """The key, relative to the root, of channel `name`'s pointer; `ValueError` for a bad name."""
    if not CHANNEL_NAME.fullmatch(name):
        raise ValueError(
            f"invalid channel name {name[:80]!r}: a lowercase letter, then up to 63 lowercase "
            "letters, digits, '_' or '-'"
        )
    return f"{CHANNELS_DIR}/{name}{CHANNEL_SUFFIX}"


def valid_key(key: str) -> bool:
    """True for a relative key like `bundles/<sha256>.js`: safe segments, no `.`/`..`/empty."""
    parts = key.split("/")
    return 0 < len(key) <= MAX_KEY_LENGTH and all(
        p not in (".", "..") and KEY_SEGMENT.fullmatch(p) for p in parts
    )
