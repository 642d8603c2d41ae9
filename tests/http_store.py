"""A real HTTP file server for the reloader tests, run as its own process, with fault injection.

Serves `--root` like a static file server with strong ETags, Last-Modified and conditional GET
(304), accepts `PUT` with a bearer token (temp file + rename), and counts every request. Faults
are injected over a control API, so a test can make the store answer 404/500 or stall:

    POST /_control/fault {"path": "version.json", "status": 500, "delay": 0, "count": -1}
    POST /_control/clear
    GET  /_control/stats   -> {"requests": [[method, path, status], ...]}

Usage: python tests/http_store.py --root DIR [--port 0] [--token T]; prints "listening PORT".
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import os
import secrets
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse


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


if __name__ == "__main__":
    main()
