"""Model stores by URL scheme: one registry, one entry point (`open_source`).

A source is small: read the manifest with a validator (an unchanged manifest costs a 304 or a
`stat`), stream a bundle, write an object (for `publish`). It knows nothing about polling or V8.

    file:///srv/models/wine  or a plain path      reloader.sources.local.LocalSource
    http://host:port/models/wine  (https too)      reloader.sources.http.HttpSource
    s3://bucket/prefix                             reloader.sources.s3.S3Source

A reader may also `report` what it serves; a store that can carry it (HTTP: the `X-Reloader-*`
headers of `REPORT_KEYS`) sends it with its manifest reads, and `python -m server` shows it as
its fleet view.

A URL may end in `@<ref>` (`s3://models/wine@stable`, `store/wine@7`, see `split_ref`): the
source then reads a channel's pointer or a pinned version from the store's history instead of
`version.json` (`reloader.sources.pinned.RefSource`, wrapped around the store's own source).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from reloader.errors import ReloaderError, SourceError
from reloader.layout import CHANNEL_NAME, MANIFEST_NAME

# scheme -> "module:Class", imported on first use so an unused backend costs nothing.
REGISTRY: dict[str, str] = {
    "file": "reloader.sources.local:LocalSource",
    "http": "reloader.sources.http:HttpSource",
    "https": "reloader.sources.http:HttpSource",
    "s3": "reloader.sources.s3:S3Source",
}
_INSTALL_HINT = {
    "requests": "pip install requests",
    "minio": "pip install minio",
    "watchdog": "pip install watchdog",
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

# What a reader reports about itself (`Source.report`), and how it travels over HTTP: each key as
# the request header `X-Reloader-<Key>` (`poll_interval` as `X-Reloader-Poll-Interval`). The
# reloader's HTTP source sends them and `python -m server` reads them: one definition for both.
REPORT_KEYS = (
    "client",
    "job",
    "subtask",
    "version",
    "sha256",
    "poll_interval",
    "channel",
    "role",
    "state",
)
REPORT_HEADERS = {k: "X-Reloader-" + k.replace("_", "-").title() for k in REPORT_KEYS}
REPORT_MAX_CHARS = 200
# How a reported `state` begins when the reader's job rolled its version back (`job.canary`); the
# server counts such readers per channel.
STATE_ROLLED_BACK = "rolled back"
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def clean_report_value(value: object) -> str | None:
    """`value` as text fit for a header and a log: printable ASCII only (other characters are
    dropped), at most `REPORT_MAX_CHARS`, surrounding spaces stripped; None when nothing is left."""
    text = _NOT_PRINTABLE.sub("", str(value))[:REPORT_MAX_CHARS].strip()
    return text or None


def report_headers(info: Mapping[str, object]) -> dict[str, str]:
    """The `X-Reloader-*` request headers for a report: known keys with a non-empty clean value."""
    out = {}
    for key, header in REPORT_HEADERS.items():
        if key in info and (value := clean_report_value(info[key])) is not None:
            out[header] = value
    return out


@dataclasses.dataclass(frozen=True)
class Validator:
    """What makes a conditional read cheap: an HTTP/S3 ETag and Last-Modified, or a file's stat."""

    etag: str | None = None
    last_modified: str | None = None


@dataclasses.dataclass(frozen=True)
class Fetched:
    """A manifest read in full, with the validator to send next time."""

    data: bytes
    validator: Validator


class Source:
    """Base class of a store. Subclasses implement the four primitives."""

    url: str

    def read_manifest(
        self, validator: Validator | None = None, *, key: str = MANIFEST_NAME
    ) -> Fetched | None:
        """The manifest, or None when it still matches `validator` (not modified).

        `key` reads another manifest-sized pointer with the same cheap conditional read: a
        channel's `channels/<name>.json` (`reloader.layout.channel_key`). Raises `MissingObject`
        when there is no such object, `SourceError` on any other failure.
        """
        raise NotImplementedError

    def iter_bundle(self, key: str) -> Iterator[bytes]:
        """The bytes of `key` (relative to the root) in chunks; `MissingObject` if absent."""
        raise NotImplementedError

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Writes `key` so that readers see the old object or the new one, never a torn one."""
        raise NotImplementedError

    def report(self, info: Mapping[str, str]) -> None:
        """Tells the store what this reader is and serves; called before each manifest read.

        `info` has the keys of `REPORT_KEYS`: `client` (a stable id such as `job/3` or
        `host:pid`), `job`, `subtask`, `version` and `sha256` of the model served now (empty
        before the first load), `poll_interval` (seconds, as text), `channel` (the `@ref` of
        its URL: `stable`, `channel:canary`, `version:7`; empty for the main manifest), `role`
        (`serving`, `shadow`, `canary`) and `state` (a short text about the version served,
        e.g. why the job rolled it back: then it begins with `STATE_ROLLED_BACK`). A store may
        send it with its next manifest reads so its operators see which reader serves which
        version (the HTTP source does); the default ignores it. It never raises and never
        changes what is read.
        """

    def watch(
        self, callback: Callable[[], None], *, keys: tuple[str, ...] = (MANIFEST_NAME,)
    ) -> Callable[[], None] | None:
        """Calls `callback` (from another thread) soon after the manifest (or another of `keys`,
        relative to the root) changes; returns a function that stops watching, or None when the
        store cannot push changes (poll)."""
        return None

    def close(self) -> None:
        """Releases connections and watchers."""

    def describe(self, key: str) -> str:
        """A human-readable location for messages."""
        return f"{self.url.rstrip('/')}/{key}"

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scheme_of(url: str) -> str:
    """`file` for plain paths, else the URL's scheme, lower-cased."""
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else "file"


def split_ref(url: str) -> tuple[str, str | None]:
    """`(store URL, ref)` of `<store URL>@<ref>`, `(url, None)` without a ref.

    The ref is the end of the URL's last path segment, from its first `@`: `store/wine@7`,
    `s3://models/wine@stable`, `http://host:8080/models/wine@channel:stable`. An `@` in an
    http(s) URL's authority (`http://user@host/...`) is not one. Its forms (`parse_ref`):
    `channel:<name>`, `version:<label>`, or a bare `<name-or-label>`. A store whose own last
    segment holds an `@` can be named as a `file://` URL with `%40`.

    Raises `ValueError` for a ref that names nothing (`store/wine@`, a bad channel name).
    """
    body = url.rstrip("/")
    start = 0
    m = _SCHEME.match(body)
    if m:
        slash = body.find("/", m.end())
        if slash < 0:
            return url, None  # no path: an `@` is in the authority
        start = slash
    last = body.rfind("/", start) + 1
    at = body.find("@", last)
    if at < 0:
        return url, None
    root, ref = body[:at], body[at + 1 :]
    if not root or root.endswith("/"):
        raise ValueError(f"{url!r}: no store before '@{ref}'")
    parse_ref(ref)
    return root, ref


def parse_ref(ref: str) -> tuple[str | None, str]:
    """`(kind, name)` of a ref: `("channel", name)` for `channel:<name>`, `("version", label)`
    for `version:<label>` and for a bare ref that cannot be a channel name (`7`, `v1.2`), and
    `(None, name)` for a bare one that can (`stable`, `v7`): a channel if the store has it, else
    a version label. Raises `ValueError` for a bad channel name or label."""
    kind, sep, name = ref.partition(":")
    if not sep or kind not in ("channel", "version"):
        kind, name = "", ref
    if kind == "channel" and not CHANNEL_NAME.fullmatch(name):
        raise ValueError(
            f"ref {ref!r}: a channel name is a lowercase letter, then up to 63 lowercase "
            "letters, digits, '_' or '-'"
        )
    if not 0 < len(name) <= 128 or not name.isprintable():
        raise ValueError(f"ref {ref!r}: a version label is 1-128 printable characters")
    if kind:
        return kind, name
    return (None if CHANNEL_NAME.fullmatch(name) else "version"), name


def open_source(url: str, **options: Any) -> Source:
    """The source for `url`; `options` go to its constructor (e.g. `timeout`, `endpoint`).

    A URL with a ref (`s3://models/wine@stable`, see `split_ref`) gives the store's source
    wrapped in a `reloader.sources.pinned.RefSource`, which serves that channel or pinned
    version as the manifest. Raises `ValueError` for a malformed ref.
    """
    root, ref = split_ref(url)
    if ref is not None:
        from reloader.sources.pinned import RefSource

        return RefSource(open_source(root, **options), ref, url=url)
    scheme = scheme_of(url)
    target = REGISTRY.get(scheme)
    if target is None:
        known = ", ".join(sorted(REGISTRY))
        raise SourceError(
            f"no source for scheme {scheme!r}; known schemes: {known} (or a plain path)", url=url
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        hint = _INSTALL_HINT.get(e.name or "", f"pip install {e.name}")
        raise ReloaderError(f"the {scheme}:// source needs the {e.name!r} package: {hint}") from e
    # Each backend has its own keyword options; the registry only promises `cls(url, **options)`.
    cls: Callable[..., Source] = getattr(module, class_name)
    return cls(url, **options)


def join_key(prefix: str, key: str) -> str:
    return f"{prefix.strip('/')}/{key}" if prefix.strip("/") else key
