"""Reading the store over HTTP: ETags, 304s, Range, content types, cache headers, traversal."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import requests

from reloader.sources import open_source
from tests.support.http_store import ModelStoreServer
from tests.support.stores import Versions, publish


@pytest.fixture
def published(server: ModelStoreServer, versions: Versions) -> tuple[bytes, bytes, str]:
    v = versions.make("v1", "v1")
    with open_source(server.url(), token=server.token) as source:
        publish(source, v)
    return v.data, v.manifest.to_bytes(), v.manifest.bundle


def test_get_and_head(server: ModelStoreServer, published: tuple[bytes, bytes, str]) -> None:
    bundle, manifest, key = published
    r = requests.get(f"{server.url()}/{key}", timeout=10)
    assert r.status_code == 200 and r.content == bundle
    assert r.headers["Content-Type"].startswith("application/javascript")
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert r.headers["ETag"].startswith('"') and "Last-Modified" in r.headers
    m = requests.get(f"{server.url()}/version.json", timeout=10)
    assert m.content == manifest and m.headers["Cache-Control"] == "no-cache"
    assert m.headers["Content-Type"].startswith("application/json")
    h = requests.head(f"{server.url()}/{key}", timeout=10)
    assert h.status_code == 200 and h.content == b""
    assert (
        h.headers["Content-Length"] == str(len(bundle)) and h.headers["ETag"] == r.headers["ETag"]
    )


def test_conditional_get(server: ModelStoreServer, published: tuple[bytes, bytes, str]) -> None:
    url = f"{server.url()}/version.json"
    first = requests.get(url, timeout=10)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=10).status_code == 304
    assert (
        requests.get(url, headers={"If-None-Match": f'"x", {etag}'}, timeout=10).status_code == 304
    )
    assert requests.get(url, headers={"If-None-Match": '"other"'}, timeout=10).status_code == 200
    assert requests.get(url, headers={"If-Modified-Since": modified}, timeout=10).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert requests.get(url, headers={"If-Modified-Since": old}, timeout=10).status_code == 200
    assert (
        requests.get(url, headers={"If-Modified-Since": "garbage"}, timeout=10).status_code == 200
    )


def test_etag_is_strong_and_follows_content(
    server: ModelStoreServer, versions: Versions, published: tuple[bytes, bytes, str]
) -> None:
    url = f"{server.url()}/version.json"
    before = requests.get(url, timeout=10).headers["ETag"]
    with open_source(server.url(), token=server.token) as source:
        publish(source, versions.make("v2", "v2"))
    after = requests.get(url, headers={"If-None-Match": before}, timeout=10)
    assert after.status_code == 200 and after.headers["ETag"] != before
    assert not before.startswith("W/")


def test_range(server: ModelStoreServer, published: tuple[bytes, bytes, str]) -> None:
    bundle, _, key = published
    url = f"{server.url()}/{key}"
    size = len(bundle)
    cases = {
        "bytes=0-99": (206, bundle[:100], f"bytes 0-99/{size}"),
        "bytes=100-": (206, bundle[100:], f"bytes 100-{size - 1}/{size}"),
        "bytes=-50": (206, bundle[-50:], f"bytes {size - 50}-{size - 1}/{size}"),
        f"bytes=10-{size * 2}": (206, bundle[10:], f"bytes 10-{size - 1}/{size}"),
    }
    for header, (status, body, content_range) in cases.items():
        r = requests.get(url, headers={"Range": header}, timeout=10)
        assert (r.status_code, r.content, r.headers["Content-Range"]) == (
            status,
            body,
            content_range,
        )
    r = requests.get(url, headers={"Range": f"bytes={size}-"}, timeout=10)
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
    # Ranges we do not serve are ignored, which HTTP allows: the whole file.
    for header in ("bytes=0-1,5-6", "pages=1-2"):
        r = requests.get(url, headers={"Range": header}, timeout=10)
        assert r.status_code == 200 and r.content == bundle
    etag = requests.head(url, timeout=10).headers["ETag"]
    r = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}, timeout=10)
    assert r.status_code == 200
    r = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}, timeout=10)
    assert r.status_code == 206 and r.content == bundle[:10]


def _raw_get(port: int, target: str) -> int:
    """A request line sent as is (clients normalise `..` away before sending)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return int(s.recv(64).split()[1])


def test_path_traversal_is_refused(
    server: ModelStoreServer, published: tuple[bytes, bytes, str], tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve me")
    model_dir = server.root / "wine"
    os.symlink(secret, model_dir / "leak.json")
    os.symlink(tmp_path, model_dir / "up")
    targets = [
        "/models/wine/../../secret.txt",
        "/models/wine/%2e%2e/%2e%2e/secret.txt",
        "/models/wine/%2E%2E%2Fsecret.txt",
        "/models/wine/..%2f..%2fsecret.txt",
        "/models/wine/bundles/..%5c..%5csecret.txt",
        "/models/%2e%2e/secret.txt",
        "/models/wine//etc/passwd",
        "/models/wine/%2Fetc%2Fpasswd",
        "/models/wine/leak.json",
        "/models/wine/up/secret.txt",
        "/models/wine/%00version.json",
        "/models/wine/history.jsonl/..",
        "/models/wine/.version.json.tmp",
    ]
    for target in targets:
        status = _raw_get(server.port, target)
        assert status in (400, 404), (target, status)
    assert _raw_get(server.port, "/models/wine/version.json") == 200
