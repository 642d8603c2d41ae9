"""A store in a local directory (`file:///srv/models/wine` or a plain path).

Changes are pushed by watchdog (inotify on Linux), so a new manifest is seen within a second; the
agent's polling stays as the fallback. An unchanged manifest costs one `stat`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from reloader.atomic import write_atomic
from reloader.errors import MissingObject, SourceError
from reloader.layout import CHUNK, MANIFEST_NAME
from reloader.sources import Fetched, Source, Validator

log = logging.getLogger(__name__)


class LocalSource(Source):
    """Args:
    url: `file:///abs/path`, `file://localhost/abs/path`, or a plain (relative) path.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("file://"):
            parsed = urlparse(url)
            if parsed.netloc not in ("", "localhost"):
                raise SourceError(
                    f"file URLs name a local path; host {parsed.netloc!r} is not supported", url=url
                )
            path = unquote(parsed.path)
        else:
            path = url
        self.root = Path(path).expanduser().absolute()

    def read_manifest(
        self, validator: Validator | None = None, *, key: str = MANIFEST_NAME
    ) -> Fetched | None:
        path = self._path(key)
        try:
            if validator is not None and _validator(os.stat(path)) == validator:
                return None
            with open(path, "rb") as f:
                # fstat of the open file, so the validator belongs to the bytes read even if a
                # publisher renames a new manifest into place meanwhile.
                tag = _validator(os.fstat(f.fileno()))
                data = f.read()
        except FileNotFoundError:
            what = (
                f"no {key} in the store"
                if self.root.is_dir()
                else f"the store directory {self.root} does not exist"
            )
            raise MissingObject(what, url=str(path)) from None
        except OSError as e:
            raise SourceError(f"cannot read {key}: {e.strerror}", url=str(path)) from None
        return Fetched(data, tag)

    def iter_bundle(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            f = open(path, "rb")  # noqa: SIM115 -- closed by the `with` below, after the errors
        except FileNotFoundError:
            raise MissingObject("no such bundle in the store", url=str(path)) from None
        except OSError as e:
            raise SourceError(f"cannot read the bundle: {e.strerror}", url=str(path)) from None
        with f:
            while chunk := f.read(CHUNK):
                yield chunk

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        path = self._path(key)
        try:
            write_atomic(path, data)
        except OSError as e:
            raise SourceError(f"cannot write: {e.strerror}", url=str(path)) from None

    def watch(
        self, callback: Callable[[], None], *, keys: tuple[str, ...] = (MANIFEST_NAME,)
    ) -> Callable[[], None] | None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        root = str(self.root)
        wanted = {os.path.normpath(k) for k in keys}
        # A key in a subdirectory (`channels/stable.json`) needs the tree watched: the directory
        # may not exist yet. Otherwise only the root, as before (no events of bundle uploads).
        recursive = any(os.sep in k for k in wanted)

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                for p in (event.src_path, getattr(event, "dest_path", "")):
                    if p and os.path.relpath(os.fsdecode(p), root) in wanted:
                        callback()
                        return

        observer = Observer()
        try:
            observer.schedule(_Handler(), root, recursive=recursive)
            observer.daemon = True
            observer.start()
        except OSError as e:
            # A missing directory or exhausted inotify watches: polling still works.
            log.warning("cannot watch %s (%s); relying on polling", self.root, e)
            return None

        def stop() -> None:
            observer.stop()
            observer.join(timeout=5)

        return stop

    def describe(self, key: str) -> str:
        return str(self.root / key)

    def _path(self, key: str) -> Path:
        path = (self.root / key).absolute()
        if ".." in Path(key).parts or not path.is_relative_to(self.root) or Path(key).is_absolute():
            raise SourceError(f"key {key!r} leaves the store root", url=str(self.root))
        return path


def _validator(st: os.stat_result) -> Validator:
    return Validator(etag=f"{st.st_dev:x}-{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}")
