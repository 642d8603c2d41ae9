"""Publishing a version to a store: the bundle, the history line, then the manifest (the commit
marker).

The one implementation of the publish sequence, used by `python -m reloader publish`, the demo,
the benchmarks and the tests. A reader that sees the new manifest always finds its bundle, and its
line in `history.jsonl` (`reloader.history`). A publisher that dies between the writes leaves an
unreferenced bundle, or a history entry newer than the manifest, never a broken store: readers
take the history up to `entry_for(entries, current manifest)` and ignore later entries.

An HTTP store's server appends the history itself when the manifest is PUT, so there only the
bundle and the manifest are written. For directory and S3 stores the history append is a
read-modify-write: publish to one of them from one place at a time (or through the HTTP server).

A publish to a channel (`channel="stable"`) is the same sequence with the channel's pointer,
`channels/<name>.json`, in place of `version.json`, and a history line that names the channel;
`point_channel` moves a channel to a version published before (or to the main manifest).
`promote_channel` makes the main manifest the channel's document, `abort_channel` points the
channel back at the main manifest: the end of a shadow or canary either way.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reloader.errors import IntegrityError, MissingObject, ReloaderError
from reloader.history import append_entry, read_history, writes_own_history
from reloader.layout import HISTORY_NAME, MANIFEST_NAME, channel_key
from reloader.manifest import (
    Manifest,
    effective_ms,
    effective_stamp,
    from_mapping,
    load_private_key,
    now_stamp,
    parse,
)
from reloader.sources import Source, open_source, split_ref
from reloader.sources.pinned import RefSource

T = TypeVar("T")

BUNDLE_TYPE = "application/javascript"
MANIFEST_TYPE = "application/json"


class Keep(enum.Enum):
    """`relabel(..., effective_at=KEEP)`: leave the manifest's effective time as it is."""

    KEEP = "keep"


KEEP = Keep.KEEP


class BuildError(ReloaderError):
    """A build directory cannot be read or is inconsistent (`path` names the file)."""

    def __init__(self, message: str, *, path: Path) -> None:
        self.path = path
        super().__init__(message)


def publish(
    store: str | Source,
    bundle: bytes,
    manifest: Manifest | None = None,
    *,
    model: str | None = None,
    version: str | None = None,
    signing_key: Ed25519PrivateKey | str | Path | bytes | None = None,
    source_options: Mapping[str, Any] | None = None,
    effective_at: str | int | None = None,
    channel: str | None = None,
) -> Manifest:
    """Uploads `bundle`, a history line, then the manifest, to `store` (a URL, or a `Source`).

    Args:
        store: the store root (path, `file://`, `http(s)://`, `s3://bucket/prefix`) or a source.
        bundle: the bundle's bytes.
        manifest: the manifest to publish; default: a new one for `bundle` with `model` and
            `version`. Its `sha256` and `size` must match `bundle`.
        model, version: name and label of a new manifest (required without `manifest`).
        signing_key: sign the manifest with this Ed25519 private key (object, PEM path or bytes);
            an earlier signature is replaced.
        source_options: keyword arguments for `open_source` when `store` is a URL.
        effective_at: the event time from which this version serves: an RFC 3339 time with a
            zone, or integer milliseconds since the epoch. A value other than the manifest's
            re-stamps it (new `created`, signature dropped, then `signing_key` signs it). None:
            the manifest's own (none for a new manifest): it serves every event time at once.
        channel: publish to this channel (`channels/<channel>.json`) instead of the main
            manifest; readers of `<store>@<channel>` follow it. `ValueError` for a bad name.

    Returns the manifest as published. Raises `IntegrityError` when `manifest` does not describe
    `bundle`, `ManifestError` for a bad `effective_at`, `SignatureError` for an unusable key,
    `HistoryTooLarge` when the store's history is over its cap, `SourceError` when a write fails,
    `ValueError` for a store URL with a ref (`store@stable`: publish to the root, `channel=`).
    """
    if manifest is None:
        if not model or not version:
            raise ValueError("publish() needs a manifest, or model= and version=")
        manifest = Manifest.for_bundle(bundle, model=model, version=version)
    else:
        _check_describes(manifest, bundle, f"the bundle of {manifest.model} {manifest.version}")
    if effective_at is not None and not _same_time(manifest, effective_at):
        manifest = relabel(manifest, None, effective_at=effective_at)
    return _publish(store, bundle, manifest, signing_key, source_options, channel)


def _publish(
    store: str | Source,
    bundle: bytes,
    manifest: Manifest,
    signing_key: Ed25519PrivateKey | str | Path | bytes | None,
    source_options: Mapping[str, Any] | None,
    channel: str | None = None,
) -> Manifest:
    """`publish` of a manifest known to describe `bundle` (signs, then writes)."""
    pointer = _pointer(store, channel)
    if signing_key is not None:
        key = (
            signing_key
            if isinstance(signing_key, Ed25519PrivateKey)
            else load_private_key(signing_key)
        )
        manifest = manifest.signed(key)
    _on(store, source_options, lambda source: _write(source, bundle, manifest, pointer, channel))
    return manifest


def _on(
    store: str | Source, source_options: Mapping[str, Any] | None, act: Callable[[Source], T]
) -> T:
    """`act(source)` on `store`: the source itself, or one opened for the call (then closed)."""
    if isinstance(store, Source):
        return act(store)
    with open_source(store, **dict(source_options or {})) as source:
        return act(source)


def _pointer(store: str | Source, channel: str | None) -> str:
    """The key the publish writes last (`ValueError` for a bad channel or a store with a ref)."""
    ref = store.ref if isinstance(store, RefSource) else None
    if isinstance(store, str):
        ref = split_ref(store)[1]
    if ref is not None:
        raise ValueError(
            f"{store if isinstance(store, str) else store.url} names a channel or version "
            f"(@{ref}): publish to the store root (to a channel: channel=NAME, --channel NAME)"
        )
    return MANIFEST_NAME if channel is None else channel_key(channel)


def _check_describes(manifest: Manifest, data: bytes, what: str) -> None:
    sha256 = hashlib.sha256(data).hexdigest()
    if (sha256, len(data)) != (manifest.sha256, manifest.size):
        raise IntegrityError(
            f"{what} does not match its manifest (sha256 {sha256[:12]}…, {len(data)} bytes; "
            f"the manifest says {manifest.sha256[:12]}…, {manifest.size}); rebuild it",
            what="sha256",
            expected=manifest.sha256,
            actual=sha256,
        )


def _write(
    source: Source, bundle: bytes, manifest: Manifest, pointer: str, channel: str | None
) -> None:
    # The order is the protocol: a reader that sees the manifest must find its bundle, and the
    # manifest in the history (the HTTP server appends it there itself, on the manifest PUT).
    source.put(manifest.bundle, bundle, content_type=BUNDLE_TYPE)
    _write_pointer(source, manifest, manifest.to_bytes(), pointer, channel)


def _write_pointer(
    source: Source,
    manifest: Manifest,
    document: bytes,
    pointer: str,
    channel: str | None,
    how: str = "publish",
) -> None:
    if not writes_own_history(source):
        append_entry(source, manifest, how=how, channel=channel, document=document)
    source.put(pointer, document, content_type=MANIFEST_TYPE)


def point_channel(
    store: str | Source,
    channel: str,
    to: str,
    *,
    source_options: Mapping[str, Any] | None = None,
) -> Manifest:
    """Points `channel` at the version labelled `to`, or at the main manifest when `to` is
    `main`: the one-command rollback (and promotion) of a channel.

    The channel gets the exact document once published (a signature stays valid): the current
    `version.json` for `main`, else that of the last publish labelled `to` in the store's
    history (to the main manifest or to any channel). A history line for the channel is written
    before its pointer, as for `publish(..., channel=)`.

    Returns the manifest the channel now points at. Raises `ValueError` for a bad channel name or
    a store URL with a ref, `MissingObject` when there is no such version (or no main manifest),
    `HistoryTooLarge`, `SourceError` when the store cannot be read or written.
    """
    pointer = _pointer(store, channel)
    return _on(store, source_options, lambda source: _point(source, channel, to, pointer))


def promote_channel(
    store: str | Source,
    channel: str,
    *,
    source_options: Mapping[str, Any] | None = None,
) -> Manifest:
    """Makes the main manifest exactly the document `channel` points at: its shadow or canary
    becomes what every reader of the store serves (a signature stays valid; an effective time
    comes along).

    A history line (`how`: `promote`) is written before `version.json`, as for `publish`; an
    HTTP store's server writes it itself (as a publish: use its `POST
    /api/models/{name}/channels/{channel}/promote` to have it say promote). The channel keeps
    pointing at the same version, now the live one: a job's shadow or canary of it stops.

    Returns the manifest now live. Raises `ValueError` for a bad channel name or a store URL
    with a ref, `MissingObject` when the store has no such channel, `ManifestError` when its
    pointer is not a valid manifest, `HistoryTooLarge`, `SourceError` when the store cannot be
    read or written.
    """
    _pointer(store, channel)
    return _on(store, source_options, lambda source: _promote(source, channel))


def abort_channel(
    store: str | Source,
    channel: str,
    *,
    source_options: Mapping[str, Any] | None = None,
) -> Manifest:
    """Points `channel` back at the main manifest, which ends its shadow or canary in every job:
    `point_channel(store, channel, "main")` of a channel that exists, with a history line that
    says `abort`. Returns the manifest the channel now points at; raises as `point_channel`
    does, `MissingObject` also when the store has no such channel."""
    pointer = _pointer(store, channel)
    return _on(store, source_options, lambda source: _abort(source, channel, pointer))


def _abort(source: Source, channel: str, pointer: str) -> Manifest:
    _channel_document(source, channel)  # MissingObject when there is no such channel
    return _point(source, channel, "main", pointer, how="abort")


def _promote(source: Source, channel: str) -> Manifest:
    document = _channel_document(source, channel)
    manifest = parse(document)
    _write_pointer(source, manifest, document, MANIFEST_NAME, None, how="promote")
    return manifest


def _channel_document(source: Source, channel: str) -> bytes:
    """The exact bytes of `channel`'s pointer, read as a reader of `<store>@channel:<name>`
    reads it (`MissingObject` when the store has none)."""
    ref = f"channel:{channel}"
    fetched = RefSource(source, ref, url=f"{source.url}@{ref}").read_manifest()
    if fetched is None:  # only possible with a validator
        raise MissingObject("no channel returned", url=source.describe(channel_key(channel)))
    return fetched.data


def _point(source: Source, channel: str, to: str, pointer: str, how: str = "publish") -> Manifest:
    if to == "main":
        fetched = source.read_manifest()
        if fetched is None:  # only possible with a validator
            raise MissingObject("no manifest returned", url=source.describe(MANIFEST_NAME))
        document = fetched.data
        manifest = parse(document)
    else:
        entry = next((e for e in reversed(read_history(source)) if e.manifest.version == to), None)
        if entry is None:
            raise MissingObject(
                f"no version labelled {to!r} in the publish history of {source.url}",
                url=source.describe(HISTORY_NAME),
            )
        document, manifest = entry.document, entry.manifest
    _write_pointer(source, manifest, document, pointer, channel, how)
    return manifest


def read_build(build_dir: str | Path) -> tuple[Manifest, bytes]:
    """The manifest and bundle a build wrote (`version.json` + `bundles/<sha256>.js`).

    Raises `BuildError` when a file is missing or unreadable, `ManifestError` for a bad manifest,
    `IntegrityError` when the bundle does not match its manifest.
    """
    root = Path(build_dir)
    path = root / MANIFEST_NAME
    try:
        manifest = parse(path.read_bytes())
        path = root / manifest.bundle
        data = path.read_bytes()
    except OSError as e:
        raise BuildError(
            f"cannot read the build in {root}: {e.strerror} ({path}); build it first",
            path=path,
        ) from None
    _check_describes(manifest, data, str(path))
    return manifest, data


def publish_build(
    build_dir: str | Path,
    store: str | Source,
    *,
    version: str | None = None,
    signing_key: Ed25519PrivateKey | str | Path | bytes | None = None,
    source_options: Mapping[str, Any] | None = None,
    effective_at: str | int | None = None,
    channel: str | None = None,
) -> Manifest:
    """Publishes what a build wrote into `build_dir` (see `read_build`) to `store`.

    `version` relabels it (and stamps a new `created`); `effective_at` sets the event time from
    which it serves (as for `publish`; None keeps the build's, normally none); any signature of
    the build is dropped and replaced by one with `signing_key` if given; `channel` publishes it
    to that channel instead of the main manifest.
    """
    manifest, data = read_build(build_dir)  # checked against each other there
    manifest = relabel(
        manifest, version, effective_at=KEEP if effective_at is None else effective_at
    )
    return _publish(store, data, manifest, signing_key, source_options, channel)


def relabel(
    manifest: Manifest,
    version: str | None,
    *,
    effective_at: str | int | Keep | None = KEEP,
) -> Manifest:
    """`manifest` unsigned, with a new version label and creation time if `version` is given.

    `effective_at` (RFC 3339 with a zone, or integer milliseconds since the epoch) sets the event
    time from which it serves, None removes it, `KEEP` (the default) keeps the manifest's; a
    changed one also stamps a new creation time. Raises `ManifestError` for a label or time the
    format does not allow.
    """
    fields = manifest.to_dict()
    fields.pop("signature", None)
    fields.pop("key_id", None)
    if version:
        fields.update(version=version, created=now_stamp())
    if effective_at is not KEEP and not _same_time(manifest, effective_at):
        fields.pop("effective_at", None)
        if effective_at is not None:
            fields["effective_at"] = effective_stamp(effective_at)
        fields.update(created=now_stamp())
    return from_mapping(fields)


def _same_time(manifest: Manifest, effective_at: str | int | None) -> bool:
    """True when `effective_at` is the manifest's effective time (the same instant)."""
    if effective_at is None or manifest.effective_at is None:
        return effective_at is None and manifest.effective_at is None
    return effective_ms(effective_at) == manifest.effective_at_ms
