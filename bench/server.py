"""Requests/s of the model store (`python -m server`) beside a plain Python http.server.

    python bench/server.py [--seconds 3] [--clients 4] [--json out.json]

What a fleet of reloaders costs the store: conditional manifest GETs answered with 304 (the steady
state of every poll), full manifest GETs, and bundle downloads. The baseline is the tests' HTTP
store, `tests/support/http_store.py` (stdlib ThreadingHTTPServer, same files, same ETag logic).
Both run as their own process on loopback; the clients are threads of this process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the project and the test support, `tests.support`

from model.bundle import EXAMPLES, build_bundle, bundle_path
from reloader.sources import open_source
from tests.support.http_store import HttpStore, ModelStoreServer
from tests.support.stores import Versions, publish


def rate(url: str, headers: dict[str, str], seconds: float, clients: int, expect: int) -> float:
    stop = threading.Event()
    counts = [0] * clients

    def client(i: int) -> None:
        s = requests.Session()
        while not stop.is_set():
            r = s.get(url, headers=headers, timeout=30)
            if r.status_code != expect:
                raise AssertionError(f"{url}: {r.status_code}")
            counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def measure(base_url: str, key: str, seconds: float, clients: int) -> dict[str, float]:
    manifest = f"{base_url}/version.json"
    etag = requests.get(manifest, timeout=10).headers["ETag"]
    return {
        "manifest_304_per_s": rate(manifest, {"If-None-Match": etag}, seconds, clients, 304),
        "manifest_200_per_s": rate(manifest, {}, seconds, clients, 200),
        "bundle_200_per_s": rate(f"{base_url}/{key}", {}, seconds, clients, 200),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        build_bundle(EXAMPLES / "v2", tmp / "build")
        v = Versions({"v2": bundle_path(tmp / "build").read_bytes()}).make("v2", "v2")
        ours = ModelStoreServer(tmp / "ours")
        (tmp / "plain").mkdir()
        plain = HttpStore(tmp / "plain", token="t")
        try:
            with open_source(ours.url(), token=ours.token) as s:
                publish(s, v)
            with open_source(plain.url("models/wine"), token="t") as s:
                publish(s, v)
            results: dict[str, Any] = {"clients": args.clients, "cores": os.cpu_count()}
            a = measure(ours.url(), v.manifest.bundle, args.seconds, args.clients)
            b = measure(plain.url("models/wine"), v.manifest.bundle, args.seconds, args.clients)
        finally:
            ours.stop()
            plain.stop()
    print(f"requests/s with {args.clients} client threads (bundle {v.manifest.size:,} bytes):")
    print(f"  {'':22s} {'server/':>10s} {'http.server':>12s} {'ratio':>7s}")
    for k in a:
        results[k] = a[k]
        results[f"baseline_{k}"] = b[k]
        results[f"{k.removesuffix('_per_s')}_vs_http_server"] = a[k] / b[k]
        print(f"  {k:22s} {a[k]:10.0f} {b[k]:12.0f} {a[k] / b[k]:7.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
