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
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reloader.errors import IntegrityError, ReloaderError
from reloader.history import append_entry, writes_own_history
from reloader.layout import MANIFEST_NAME
from reloader.manifest import (
    Manifest,
    effective_ms,
    effective_stamp,
    from_mapping,
    load_private_key,
    now_stamp,
    parse,
)
from reloader.sources import Source, open_source

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

    Returns the manifest as published. Raises `IntegrityError` when `manifest` does not describe
    `bundle`, `ManifestError` for a bad `effective_at`, `SignatureError` for an unusable key,
    `HistoryTooLarge` when the store's history is over its cap, `SourceError` when a write fails.
    """
    if manifest is None:
        if not model or not version:
            raise ValueError("publish() needs a manifest, or model= and version=")
        manifest = Manifest.for_bundle(bundle, model=model, version=version)
    else:
        _check_describes(manifest, bundle, f"the bundle of {manifest.model} {manifest.version}")
    if effective_at is not None and not _same_time(manifest, effective_at):
        manifest = relabel(manifest, None, effective_at=effective_at)
    return _publish(store, bundle, manifest, signing_key, source_options)


def _publish(
    store: str | Source,
    bundle: bytes,
    manifest: Manifest,
    signing_key: Ed25519PrivateKey | str | Path | bytes | None,
    source_options: Mapping[str, Any] | None,
) -> Manifest:
    """`publish` of a manifest known to describe `bundle` (signs, then writes)."""
    if signing_key is not None:
        key = (
            signing_key
            if isinstance(signing_key, Ed25519PrivateKey)
            else load_private_key(signing_key)
        )
        manifest = manifest.signed(key)
    if isinstance(store, Source):
        _write(store, bundle, manifest)
    else:
        with open_source(store, **dict(source_options or {})) as source:
            _write(source, bundle, manifest)
    return manifest


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


def _write(source: Source, bundle: bytes, manifest: Manifest) -> None:
    # The order is the protocol: a reader that sees the manifest must find its bundle, and the
    # manifest in the history (the HTTP server appends it there itself, on the manifest PUT).
    source.put(manifest.bundle, bundle, content_type=BUNDLE_TYPE)
    if not writes_own_history(source):
        append_entry(source, manifest)
    source.put(MANIFEST_NAME, manifest.to_bytes(), content_type=MANIFEST_TYPE)


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
) -> Manifest:
    """Publishes what a build wrote into `build_dir` (see `read_build`) to `store`.

    `version` relabels it (and stamps a new `created`); `effective_at` sets the event time from
    which it serves (as for `publish`; None keeps the build's, normally none); any signature of
    the build is dropped and replaced by one with `signing_key` if given.
    """
    manifest, data = read_build(build_dir)  # checked against each other there
    manifest = relabel(
        manifest, version, effective_at=KEEP if effective_at is None else effective_at
    )
    return _publish(store, data, manifest, signing_key, source_options)


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
