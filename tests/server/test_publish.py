"""Writing to the store: auth, integrity rules, size cap, torn uploads, concurrency, rollback, and
the reloader's `publish` and `HotModel` against the real server."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import requests

from reloader.agent import HotModel
from reloader.manifest import Manifest, parse
from reloader.sources import open_source
from tests.support.http_store import ModelStoreServer
from tests.support.stores import Versions, publish, reference_of
from tests.support.waiting import checked, wait_until


def _put(server: ModelStoreServer, path: str, body: bytes, **headers: str) -> requests.Response:
    return requests.put(f"{server.base}{path}", data=body, headers=headers, timeout=30)


def test_writes_need_the_token(server: ModelStoreServer, versions: Versions) -> None:
    v = versions.make("v1", "v1")
    path = f"/models/wine/{v.manifest.bundle}"
    r = _put(server, path, v.data)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert _put(server, path, v.data, Authorization="Bearer wrong-token").status_code == 403
    assert _put(server, path, v.data, Authorization=server.token or "").status_code == 401
    assert _put(server, path, v.data, **server.auth()).status_code == 201
    assert _put(server, path, v.data, **server.auth()).status_code == 200  # idempotent
    r = requests.post(f"{server.base}/api/models/wine/rollback", json={"version": "v1"}, timeout=10)
    assert r.status_code == 401


def test_read_only_without_a_token(tmp_path: Path, versions: Versions) -> None:
    s = ModelStoreServer(tmp_path / "ro", token=None)
    try:
        v = versions.make("v1", "v1")
        r = _put(s, f"/models/wine/{v.manifest.bundle}", v.data, Authorization="Bearer anything")
        assert r.status_code == 403 and "read-only" in r.json()["detail"]
        assert "rollback is disabled" in requests.get(s.base, timeout=10).text
    finally:
        s.stop()


def test_integrity_rules(server: ModelStoreServer, versions: Versions) -> None:
    v = versions.make("v1", "v1")
    auth = server.auth()
    # The body must hash to the name it is stored under.
    wrong = "0" * 64
    r = _put(server, f"/models/wine/bundles/{wrong}.js", v.data, **auth)
    assert r.status_code == 422 and "sha256" in r.json()["detail"]
    assert _put(server, "/models/wine/bundles/notahash.js", v.data, **auth).status_code == 400
    # A manifest is refused while its bundle is absent, and when it does not match it.
    r = _put(server, "/models/wine/version.json", v.manifest.to_bytes(), **auth)
    assert r.status_code == 409 and "upload the bundle before" in r.json()["detail"]
    assert _put(server, f"/models/wine/{v.manifest.bundle}", v.data, **auth).status_code == 201
    lying = Manifest.for_bundle(v.data + b"x", model="wine", version="x")
    lying = Manifest(**{**lying.to_dict(), "bundle": v.manifest.bundle})
    assert _put(server, "/models/wine/version.json", lying.to_bytes(), **auth).status_code == 409
    r = _put(server, "/models/wine/version.json", b"{not json", **auth)
    assert r.status_code == 422 and "not JSON" in r.json()["detail"]
    other = Manifest(**{**v.manifest.to_dict(), "model": "beer"})
    assert _put(server, "/models/wine/version.json", other.to_bytes(), **auth).status_code == 422
    assert (
        _put(server, "/models/wine/version.json", v.manifest.to_bytes(), **auth).status_code == 201
    )
    assert requests.get(f"{server.url()}/version.json", timeout=10).content == v.manifest.to_bytes()


def test_body_cap(tmp_path: Path, versions: Versions) -> None:
    s = ModelStoreServer(tmp_path / "small", max_body=100_000)
    try:
        v = versions.make("v1", "v1")
        r = _put(s, f"/models/wine/{v.manifest.bundle}", v.data, **s.auth())
        assert r.status_code == 413
        # Chunked, so the server learns the size only while reading.
        chunks = (v.data[i : i + 65536] for i in range(0, len(v.data), 65536))
        r = requests.put(
            f"{s.base}/models/wine/{v.manifest.bundle}", data=chunks, headers=s.auth(), timeout=30
        )
        assert r.status_code == 413
        assert not list((s.root / "wine").glob("**/*.js")) and not list(s.root.glob("**/*.tmp"))
    finally:
        s.stop()


def test_publisher_killed_mid_upload(server: ModelStoreServer, versions: Versions) -> None:
    v1, v2 = versions.make("v1", "v1"), versions.make("v2", "v2")
    with open_source(server.url(), token=server.token) as source:
        publish(source, v1)
    for path, body in (
        (f"/models/wine/{v2.manifest.bundle}", v2.data),
        ("/models/wine/version.json", v2.manifest.to_bytes()),
    ):
        # Announce the whole body, send half of it, vanish.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            head = (
                f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            s.sendall(head.encode() + body[: len(body) // 2])
    m = requests.get(f"{server.url()}/version.json", timeout=10)
    assert m.content == v1.manifest.to_bytes()
    assert requests.get(f"{server.url()}/{v1.manifest.bundle}", timeout=10).content == v1.data
    assert requests.get(f"{server.url()}/{v2.manifest.bundle}", timeout=10).status_code == 404

    # No temp files left once the server has noticed the disconnects.
    def leftovers() -> list[Path]:
        return list(server.root.glob("**/*.tmp"))

    wait_until(lambda: not leftovers(), what="temp files removed")


def test_concurrent_publishers(server: ModelStoreServer, versions: Versions) -> None:
    """8 publishers x 20 versions; a reader checks every manifest it sees points at a complete,
    matching bundle."""
    plans = [
        [versions.make(f"p{p}-{i:02d}", "v1" if i % 2 else "v2") for i in range(20)]
        for p in range(8)
    ]
    stop = threading.Event()
    seen: set[str] = set()
    problems: list[str] = []

    def reader() -> None:
        session = requests.Session()
        while not stop.is_set():
            r = session.get(f"{server.url()}/version.json", timeout=10)
            if r.status_code == 404:
                continue
            m = parse(r.content)
            seen.add(m.version)
            b = session.get(f"{server.url()}/{m.bundle}", timeout=30)
            if b.status_code != 200 or hashlib.sha256(b.content).hexdigest() != m.sha256:
                problems.append(f"{m.version}: bundle {b.status_code}")

    def publisher(plan: list[Any]) -> None:
        with open_source(server.url(), token=server.token) as source:
            for v in plan:
                publish(source, v)

    threads = [threading.Thread(target=publisher, args=(plan,)) for plan in plans]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert not problems, problems[:5]
    assert len(seen) > 1
    detail = requests.get(f"{server.base}/api/models/wine", timeout=10).json()
    published = {v.label for plan in plans for v in plan}
    assert {h["version"] for h in detail["history"]} == published  # nothing lost
    assert len(detail["history"]) == 160
    assert {b["sha256"] for b in detail["bundles"]} == {
        v.manifest.sha256 for plan in plans for v in plan
    }
    final = parse(requests.get(f"{server.url()}/version.json", timeout=10).content)
    assert final.version in {plan[-1].label for plan in plans}


def test_cli_publish_hotmodel_and_rollback(
    server: ModelStoreServer, built_stores: dict[str, Path], tmp_path: Path, wine: Any
) -> None:
    env = {"RELOADER_HTTP_TOKEN": server.token or ""}
    for v in ("v1", "v2"):
        out = subprocess.run(
            [sys.executable, "-m", "reloader", "publish", str(built_stores[v]), server.url()],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **env},
        )
        assert out.returncode == 0, out.stderr
        if v == "v1":
            hm = HotModel(
                server.url(), poll_interval=3600, watch=False, cache_dir=tmp_path / "c"
            ).start()
    try:
        checked(hm)
        assert hm.predict_versioned(wine.x[:1]).version == "v2"
        checked(hm)
        assert hm.info.unchanged == 1  # the server answered the unchanged manifest with a 304
        listing = requests.get(f"{server.base}/api/models", timeout=10).json()["models"]
        assert [(m["name"], m["version"]) for m in listing] == [("wine", "v2")]
        v1_sha = json.loads((built_stores["v1"] / "version.json").read_text())["sha256"]
        r = requests.post(
            f"{server.base}/api/models/wine/rollback",
            json={"sha256": v1_sha},
            headers=server.auth(),
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["current"]["version"] == "v1"
        checked(hm)
        got = hm.predict_versioned(wine.x)
        assert got.version == "v1"
        assert abs(got.value - reference_of(wine, "v1")).max() < 1e-5
        r = requests.post(
            f"{server.base}/api/models/wine/rollback",
            json={"version": "nope"},
            headers=server.auth(),
            timeout=10,
        )
        assert r.status_code == 404
    finally:
        hm.stop()
