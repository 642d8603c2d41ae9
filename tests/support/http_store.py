"""The HTTP stores of the tests: a static file server with fault injection, and the processes.

The server (`main`, run as its own process) serves `--root` like a static file server with strong
ETags, Last-Modified and conditional GET (304), accepts `PUT` with a bearer token (temp file +
rename), and counts every request. Faults are injected over a control API, so a test can make the
store answer 404/500 or stall:

    POST /_control/fault {"path": "version.json", "status": 500, "delay": 0, "count": -1}
    POST /_control/clear
    GET  /_control/stats   -> {"requests": [[method, path, status], ...]}

Usage: python -m tests.support.http_store --root DIR [--port 0] [--token T] [--tls CERT KEY];
prints "listening PORT".

From a test: `HttpStore` runs that server, `ModelStoreServer` runs the project's own store
(`python -m server serve`), each in its own process on a free loopback port. Standard library only,
so the server process starts fast.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parents[2]


class Store:
    def __init__(self, root: Path, token: str | None) -> None:
        self.root = root.resolve()
        self.token = token
        self.lock = threading.Lock()
        self.faults: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, int]] = []

    def fault_for(self, path: str) -> dict[str, Any] | None:
        with self.lock:
            for f in self.faults:
                if path.endswith(f["path"]) and f["count"] != 0:
                    f["count"] -= 1
                    return dict(f)
        return None


class Handler(BaseHTTPRequestHandler):
    server_version = "test-store/1"
    protocol_version = "HTTP/1.1"
    store: Store

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        with self.store.lock:
            self.store.requests.append((self.command, urlparse(self.path).path, status))

    def _file(self) -> Path | None:
        rel = unquote(urlparse(self.path).path).lstrip("/")
        path = (self.store.root / rel).resolve()
        return path if path.is_relative_to(self.store.root) else None

    def _control(self) -> bool:
        path = urlparse(self.path).path
        if not path.startswith("/_control/"):
            return False
        if path == "/_control/stats":
            with self.store.lock:
                body = json.dumps({"requests": self.store.requests}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/_control/fault":
            spec = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            spec.setdefault("status", 500)
            spec.setdefault("delay", 0.0)
            spec.setdefault("count", -1)
            with self.store.lock:
                self.store.faults.append(spec)
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/_control/clear":
            with self.store.lock:
                self.store.faults.clear()
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        return True

    def _faulted(self) -> bool:
        fault = self.store.fault_for(urlparse(self.path).path)
        if fault is None:
            return False
        if fault["delay"]:
            time.sleep(fault["delay"])  # the fault being simulated is a slow server
        if fault["status"]:
            self._send(fault["status"], f"injected {fault['status']}\n".encode())
            return True
        return False

    def do_GET(self) -> None:
        if self._control() or self._faulted():
            return
        path = self._file()
        if path is None or not path.is_file():
            self._send(404, b"not found\n")
            return
        data = path.read_bytes()
        st = path.stat()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        headers = {"ETag": etag, "Last-Modified": modified}
        inm = self.headers.get("If-None-Match")
        if inm is not None and etag in [t.strip() for t in inm.split(",")]:
            self._send(304, b"", headers)
            return
        ctype = "application/json" if path.suffix == ".json" else "application/javascript"
        self._send(200, data, {**headers, "Content-Type": ctype})

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._control():
            self._send(405, b"method not allowed\n")

    def do_PUT(self) -> None:
        if self._faulted():
            return
        if self.store.token and self.headers.get("Authorization") != f"Bearer {self.store.token}":
            self._send(401, b"bad token\n")
            return
        path = self._file()
        if path is None:
            self._send(400, b"bad path\n")
            return
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self._send(201, b"")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS")
    args = parser.parse_args()
    Handler.store = Store(args.root, args.token)
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*args.tls)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


# -- from a test: the stores as processes ---------------------------------------------------------


class ServerProcess:
    """A test server in its own process; it prints "listening ...:PORT" once its socket is up."""

    proc: subprocess.Popen[str] | None = None
    port = 0

    def _launch(self, cmd: list[str], what: str) -> None:
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, text=True, cwd=REPO, stdin=subprocess.DEVNULL
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
    """This module's server running as a separate process on a free loopback port."""

    def __init__(
        self, root: Path, token: str | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.root = root
        self.token = token
        self.tls = tls
        self.port = 0
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "tests.support.http_store", "--root", str(self.root)]
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


if __name__ == "__main__":
    main()
