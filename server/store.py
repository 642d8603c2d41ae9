"""The model store on disk, without HTTP: safe paths, content ETags, atomic writes, rollback,
a channel's promotion and abort.

Layout under the root (the store format of `reloader.layout`, one directory per model):

    <root>/<model>/bundles/<sha256>.js    immutable, content-addressed
    <root>/<model>/version.json           the pointer, the only mutable file, written last
    <root>/<model>/history.jsonl          every manifest ever published here (for listing/rollback)
    <root>/<model>/channels/<name>.json   a channel's pointer (its history lines name the channel)

Writers of one model are serialized by a lock; every write is temp file + fsync + rename (+ fsync
of the directory), so a reader sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from reloader.atomic import fsync_dir, write_atomic
from reloader.errors import ManifestError
from reloader.layout import (
    BUNDLE_FILE,
    BUNDLES_DIR,
    CHANNEL_FILE,
    CHANNELS_DIR,
    CHUNK,
    HISTORY_NAME,
    KEY_SEGMENT,
    MANIFEST_NAME,
    MODEL_NAME,
    bundle_file,
    channel_key,
)
from reloader.manifest import Manifest, parse


class StoreError(Exception):
    """A request the store refuses; `status` is the HTTP status the API maps it to."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class FileInfo:
    path: Path
    size: int
    mtime: float
    etag: str


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._etags: dict[tuple[int, int, int, int], str] = {}

    # -- paths ------------------------------------------------------------------------------------

    def model_dir(self, name: str) -> Path:
        if not MODEL_NAME.fullmatch(name):
            raise StoreError(400, f"invalid model name {name[:64]!r}")
        return self.root / name

    def file_path(self, name: str, rel: str) -> Path:
        """The file `rel` of model `name`; refuses anything that could leave the root."""
        base = self.model_dir(name)
        parts = rel.split("/")
        if (
            not rel
            or "\\" in rel
            # Leading dots also hide temp files of uploads in progress.
            or any(p.startswith(".") or not KEY_SEGMENT.fullmatch(p) for p in parts)
        ):
            raise StoreError(
                400, "invalid path: letters, digits, '.', '_', '-' and '/', no leading '.'"
            )
        path = base.joinpath(*parts)
        # resolve() follows symlinks: one pointing out of the root is refused.
        try:
            real = path.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            raise StoreError(404, "not found") from None
        except OSError as e:
            raise StoreError(404, f"not found ({e.strerror})") from None
        if not real.is_relative_to(self.root) or not real.is_file():
            raise StoreError(404, "not found")
        return real

    # -- reading ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def open(self, name: str, rel: str) -> Iterator[tuple[BinaryIO, FileInfo]]:
        """Opens a store file; the info (size, strong ETag) belongs to the bytes of this handle."""
        path = self.file_path(name, rel)
        try:
            f = open(path, "rb")  # noqa: SIM115 -- closed below
        except OSError:
            raise StoreError(404, "not found") from None
        with f:
            st = os.fstat(f.fileno())
            yield f, FileInfo(path, st.st_size, st.st_mtime, self._etag(f, st))

    def _etag(self, f: BinaryIO, st: os.stat_result) -> str:
        """A strong ETag: a content hash, computed once per (device, inode, mtime, size)."""
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        tag = self._etags.get(key)
        if tag is None:
            digest = hashlib.sha256()
            while chunk := f.read(CHUNK):
                digest.update(chunk)
            f.seek(0)
            tag = f'"{digest.hexdigest()[:32]}"'
            if len(self._etags) > 10_000:
                self._etags.clear()
            self._etags[key] = tag
        return tag

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and MODEL_NAME.fullmatch(p.name)
        )

    def current(self, name: str) -> Manifest | None:
        try:
            return parse((self.model_dir(name) / MANIFEST_NAME).read_bytes())
        except (OSError, ManifestError):
            return None

    def history(self, name: str) -> list[dict[str, Any]]:
        try:
            lines = (self.model_dir(name) / HISTORY_NAME).read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a crash: skip it
        return out

    def describe(self, name: str) -> dict[str, Any]:
        base = self.model_dir(name)
        if not base.is_dir():
            raise StoreError(404, f"no model {name!r}")
        current = self.current(name)
        history = self.history(name)
        labels: dict[str, list[str]] = {}
        for h in history:
            seen = labels.setdefault(h["manifest"]["sha256"], [])
            if h["manifest"]["version"] not in seen:
                seen.append(h["manifest"]["version"])
        bundles = []
        bundle_dir = base / BUNDLES_DIR
        for p in sorted(bundle_dir.iterdir()) if bundle_dir.is_dir() else []:
            m = BUNDLE_FILE.fullmatch(p.name)
            if not m or not p.is_file():
                continue
            st = p.stat()
            bundles.append(
                {
                    "sha256": m.group(1),
                    "size": st.st_size,
                    "created": _rfc3339(st.st_mtime),
                    "versions": labels.get(m.group(1), []),
                    "current": current is not None and current.sha256 == m.group(1),
                }
            )
        bundles.sort(key=lambda b: b["created"], reverse=True)
        return {
            "name": name,
            "current": current.to_dict() if current else None,
            "bundles": bundles,
            "history": [
                {
                    "version": h["manifest"]["version"],
                    "sha256": h["manifest"]["sha256"],
                    "published_at": h["published_at"],
                    "how": h.get("how", "publish"),
                    "channel": h.get("channel"),
                }
                for h in reversed(history)
            ],
        }

    # -- writing ----------------------------------------------------------------------------------

    def lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def new_temp(self, name: str) -> tuple[Path, BinaryIO]:
        """A temp file in the model's directory (same file system as its final place)."""
        base = self.model_dir(name)
        (base / BUNDLES_DIR).mkdir(parents=True, exist_ok=True)
        path = base / f".upload-{secrets.token_hex(8)}.tmp"
        return path, open(path, "wb")

    def commit_bundle(self, name: str, sha: str, tmp: Path, size: int, digest: str) -> bool:
        """Moves a fully received, fsynced temp file into place; True if it was new."""
        if digest != sha:
            tmp.unlink(missing_ok=True)
            raise StoreError(
                422, f"body sha256 is {digest}, not the {sha} the path names; nothing stored"
            )
        final = self.model_dir(name) / BUNDLES_DIR / bundle_file(sha)
        with self.lock(name):
            if final.is_file() and final.stat().st_size == size:
                tmp.unlink(missing_ok=True)
                return False
            os.replace(tmp, final)
            fsync_dir(final.parent)
        return True

    def put_manifest(
        self, name: str, data: bytes, *, how: str = "publish", channel: str | None = None
    ) -> Manifest:
        """Publishes `data` as the model's manifest, or with `channel` as that channel's pointer
        (`channels/<channel>.json`): checked, appended to the history, then written."""
        target = MANIFEST_NAME if channel is None else _channel_key(channel)
        with self.lock(name):
            return self._put_locked(name, data, target, how, channel)

    def promote(self, name: str, channel: str) -> Manifest:
        """Makes the model's manifest exactly the document `channel` points at (a signature
        stays valid); its history line says `promote`."""
        self.model_dir(name)  # a bad name is refused before it gets a lock
        with self.lock(name):
            data = self._read_pointer(name, _channel_key(channel), f"no channel {channel!r}")
            return self._put_locked(name, data, MANIFEST_NAME, "promote", None)

    def abort(self, name: str, channel: str) -> Manifest:
        """Points `channel` back at the model's manifest (the exact document); its history line
        says `abort`. The channel must exist."""
        key = _channel_key(channel)
        self.model_dir(name)
        with self.lock(name):
            self._read_pointer(name, key, f"no channel {channel!r}")
            data = self._read_pointer(name, MANIFEST_NAME, "no manifest to point the channel at")
            return self._put_locked(name, data, key, "abort", channel)

    def channels(self, name: str) -> dict[str, dict[str, Any] | None]:
        """Each channel's pointer (its manifest's fields; None when it does not parse)."""
        folder = self.model_dir(name) / CHANNELS_DIR
        out: dict[str, dict[str, Any] | None] = {}
        for p in sorted(folder.iterdir()) if folder.is_dir() else []:
            m = CHANNEL_FILE.fullmatch(p.name)
            if m:
                try:
                    data = self._read_pointer(name, f"{CHANNELS_DIR}/{p.name}", "")
                    out[m.group(1)] = parse(data).to_dict()
                except StoreError:
                    continue  # gone meanwhile, or not a file of the store
                except ManifestError:
                    out[m.group(1)] = None
        return out

    def _read_pointer(self, name: str, key: str, missing: str) -> bytes:
        """The bytes of `key` (through `file_path`: nothing out of the root); `missing` says
        what is not there in the 404."""
        try:
            return self.file_path(name, key).read_bytes()
        except (StoreError, OSError):
            raise StoreError(404, f"{missing} in model {name!r}") from None

    def _put_locked(
        self, name: str, data: bytes, target: str, how: str, channel: str | None
    ) -> Manifest:
        try:
            manifest = parse(data)
        except ManifestError as e:
            raise StoreError(422, str(e)) from None
        if manifest.model != name:
            raise StoreError(
                422, f"manifest is for model {manifest.model!r}, published under {name!r}"
            )
        self._check_bundle(name, manifest)
        # History first: a reader that sees the manifest finds it in the history (the event-time
        # timeline of `reloader.history`); a crash in between leaves a history entry newer than
        # the manifest, which readers ignore.
        self._append_history(name, manifest, data, how, channel)
        write_atomic(self.model_dir(name).joinpath(*target.split("/")), data)
        return manifest

    def rollback(self, name: str, *, sha256: str | None, version: str | None) -> Manifest:
        """Points the manifest at an earlier bundle: the exact manifest once published for it
        (so a signature stays valid), else a new unsigned one."""
        if not sha256 and not version:
            raise StoreError(422, "give the sha256 or the version to roll back to")
        for h in reversed(self.history(name)):
            m = h["manifest"]
            if (sha256 is None or m["sha256"] == sha256) and (
                version is None or m["version"] == version
            ):
                return self.put_manifest(name, h["document"].encode(), how="rollback")
        bundle = self.model_dir(name) / BUNDLES_DIR / bundle_file(sha256 or "")
        if sha256 and bundle.is_file():
            data = bundle.read_bytes()
            manifest = Manifest.for_bundle(
                data, model=name, version=version or f"rollback-{sha256[:12]}"
            )
            return self.put_manifest(name, manifest.to_bytes(), how="rollback")
        raise StoreError(404, f"no bundle of {name!r} matches the rollback target")

    def _check_bundle(self, name: str, m: Manifest) -> None:
        path = self.model_dir(name).joinpath(*m.bundle.split("/"))
        try:
            data = path.read_bytes()
        except OSError:
            raise StoreError(
                409, f"{m.bundle} is not in the store; upload the bundle before the manifest"
            ) from None
        if len(data) != m.size or hashlib.sha256(data).hexdigest() != m.sha256:
            raise StoreError(409, f"{m.bundle} does not match the manifest's sha256/size")

    def _append_history(
        self, name: str, m: Manifest, data: bytes, how: str, channel: str | None = None
    ) -> None:
        entry = {
            "published_at": _rfc3339(datetime.now(timezone.utc).timestamp()),
            "how": how,
            "manifest": m.to_dict(),
            "document": data.decode(),
        }
        if channel is not None:
            entry["channel"] = channel
        with open(self.model_dir(name) / HISTORY_NAME, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _channel_key(channel: str) -> str:
    try:
        return channel_key(channel)
    except ValueError as e:
        raise StoreError(400, str(e)) from None


def _rfc3339(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )
