"""Bundle download into a local, content-addressed cache: size cap, size and sha256 checked,
written with temp file + fsync + rename so a crash never leaves a torn cache entry."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from reloader.atomic import write_atomic
from reloader.errors import CacheError, IntegrityError, MissingObject, NotReady
from reloader.manifest import Manifest
from reloader.sources import Source

CACHE_ENV = "RELOADER_CACHE_DIR"


def download_bundle(
    source: Source, m: Manifest, *, cache_dir: Path | None, max_bytes: int
) -> bytes:
    """The bundle `m` names, checked against its size and sha256; cached under `cache_dir`.

    A cached copy is re-hashed before use. Raises `IntegrityError` (size cap, size, sha256),
    `NotReady` (the bundle is not in the store yet), `SourceError`, `CacheError`.
    """
    if m.size > max_bytes:
        raise IntegrityError(
            f"bundle of {m.model} {m.version} is {m.size} bytes, over the {max_bytes}-byte cap "
            "(max_bundle_bytes)",
            what="size cap",
            expected=max_bytes,
            actual=m.size,
        )
    path = cache_dir / f"{m.sha256}.js" if cache_dir is not None else None
    if path is not None:
        try:
            data = path.read_bytes()
            if len(data) == m.size and hashlib.sha256(data).hexdigest() == m.sha256:
                return data
        except OSError:
            pass
    where = source.describe(m.bundle)
    digest = hashlib.sha256()
    parts: list[bytes] = []
    total = 0
    try:
        for chunk in source.iter_bundle(m.bundle):
            total += len(chunk)
            if total > m.size:
                raise IntegrityError(
                    f"{where} is larger than the manifest's size {m.size}",
                    what="size",
                    expected=m.size,
                    actual=f">{m.size}",
                )
            digest.update(chunk)
            parts.append(chunk)
    except MissingObject as e:
        raise NotReady(
            f"the manifest of {m.model} {m.version} names {where}, which is not in the store "
            "(yet): upload the bundle before the manifest"
        ) from e
    if total != m.size:
        raise IntegrityError(
            f"{where} is {total} bytes, the manifest says {m.size}",
            what="size",
            expected=m.size,
            actual=total,
        )
    if digest.hexdigest() != m.sha256:
        raise IntegrityError(
            f"{where} has sha256 {digest.hexdigest()}, the manifest says {m.sha256}",
            what="sha256",
            expected=m.sha256,
            actual=digest.hexdigest(),
        )
    data = b"".join(parts)
    if path is not None:
        _write_atomic(path, data)
    return data


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    home = Path.home() / ".cache" / "tf-on-flink" / "bundles"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if os.access(home, os.W_OK):
            return home
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"tf-on-flink-{os.getuid()}" / "bundles"


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        # No directory fsync: a cache entry lost in a crash is downloaded again.
        write_atomic(path, data, sync_dir=False)
    except OSError as e:
        raise CacheError(
            f"cannot write the bundle cache {path.parent}: {e.strerror}; make it writable or "
            f"set cache_dir / ${CACHE_ENV}"
        ) from None
