"""Store test helpers: versions to publish, waiting on conditions, the HTTP store process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reloader.agent import HotModel
from reloader.manifest import Manifest
from reloader.sources import MANIFEST_NAME, Source

TESTS = Path(__file__).resolve().parent


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "") -> Any:
    """Polls `predicate` until it returns a truthy value; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what or predicate}")
        pause.wait(0.005)


def checked(hm: HotModel, timeout: float = 20.0) -> None:
    """Asks `hm` for a check now and waits until it has finished."""
    before = hm.info.checks
    hm.request_check()
    wait_until(lambda: hm.info.checks > before, timeout=timeout, what="a finished check")


@dataclass(frozen=True)
class Version:
    """A publishable version: bundle bytes, its manifest, and the reference it must reproduce."""

    manifest: Manifest
    data: bytes
    base: str  # "v1" or "v2": whose weights, hence whose reference outputs

    @property
    def label(self) -> str:
        return self.manifest.version


class Versions:
    """Makes distinct versions cheaply: the real v1/v2 bundles plus a unique comment."""

    def __init__(self, bundles: dict[str, bytes]) -> None:
        self.bundles = bundles

    def make(self, label: str, base: str = "v2", *, data: bytes | None = None) -> Version:
        body = data if data is not None else self.bundles[base] + f"\n/* {label} */\n".encode()
        return Version(Manifest.for_bundle(body, model="wine", version=label), body, base)


def publish(source: Source, version: Version, *, manifest: Manifest | None = None) -> None:
    """Bundle first, then the manifest (the commit marker)."""
    m = manifest or version.manifest
    source.put(m.bundle, version.data, content_type="application/javascript")
    source.put(MANIFEST_NAME, m.to_bytes(), content_type="application/json")


def put_manifest(source: Source, manifest: Manifest | bytes) -> None:
    data = manifest if isinstance(manifest, bytes) else manifest.to_bytes()
    source.put(MANIFEST_NAME, data, content_type="application/json")


class ServerProcess:
    """A test server in its own process; it prints "listening ...:PORT" once its socket is up."""

    proc: subprocess.Popen[str] | None = None
    port = 0

    def _launch(self, cmd: list[str], what: str) -> None:
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, text=True, cwd=TESTS.parent, stdin=subprocess.DEVNULL
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the socket is listening
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"{what} did not start: {line!r}")
        self.port = int(line.strip().rsplit(":", 1)[-1].split()[-1])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None


class HttpStore(ServerProcess):
    """`tests/http_store.py` running as a separate process on a free loopback port."""

    def __init__(
        self, root: Path, token: str | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.root = root
        self.token = token
        self.tls = tls
        self.port = 0
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, str(TESTS / "http_store.py"), "--root", str(self.root)]
        cmd += ["--port", str(self.port)]
        if self.token:
            cmd += ["--token", self.token]
        if self.tls:
            cmd += ["--tls", str(self.tls[0]), str(self.tls[1])]
        self._launch(cmd, "http_store")

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, prefix: str = "") -> str:
        return f"{self.base}/{prefix}".rstrip("/")

    def _post(self, path: str, body: dict[str, Any] | None = None) -> None:
        data = json.dumps(body or {}).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def fault(self, path: str, status: int = 500, delay: float = 0.0, count: int = -1) -> None:
        self._post(
            "/_control/fault", {"path": path, "status": status, "delay": delay, "count": count}
        )

    def clear(self) -> None:
        self._post("/_control/clear")

    def requests(self) -> list[tuple[str, str, int]]:
        with urllib.request.urlopen(f"{self.base}/_control/stats", timeout=10) as r:
            return [tuple(x) for x in json.loads(r.read())["requests"]]


def reference_of(wine: Any, base: str) -> np.ndarray:
    return np.asarray(wine.reference(base)["outputs"], dtype=np.float32)


class ModelStoreServer(ServerProcess):
    """`python -m server serve` in its own process on a free loopback port."""

    def __init__(
        self, root: Path, *, token: str | None = "tok-" + "x" * 12, max_body: int | None = None
    ) -> None:
        self.root = root
        self.token = token
        self.max_body = max_body
        self.port = 0
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "server", "serve", "--root", str(self.root)]
        cmd += ["--port", str(self.port)]
        if self.token:
            token_file = self.root.parent / f"{self.root.name}.token"
            token_file.write_text(self.token + "\n")
            cmd += ["--token-file", str(token_file)]
        if self.max_body:
            cmd += ["--max-body-bytes", str(self.max_body)]
        self._launch(cmd, "python -m server")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, model: str = "wine") -> str:
        return f"{self.base}/models/{model}"

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}
