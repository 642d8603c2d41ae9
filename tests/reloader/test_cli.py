"""`python -m reloader check|publish|keygen`, run as a user would: a subprocess per command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reloader.manifest import parse
from reloader.sources import Source, open_source
from tests.support.http_store import HttpStore
from tests.support.stores import Versions, publish, put_manifest


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "reloader", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_help_shows_env_defaults() -> None:
    for command, names in {
        "check": ["RELOADER_PUBLIC_KEY", "RELOADER_MAX_BUNDLE_BYTES", "AWS_ENDPOINT_URL"],
        "publish": ["RELOADER_SIGNING_KEY", "RELOADER_HTTP_TOKEN", "AWS_ENDPOINT_URL"],
        "keygen": ["RELOADER_KEY_PREFIX"],
    }.items():
        out = run(command, "--help")
        assert out.returncode == 0
        text = " ".join(out.stdout.split())
        for name in names:
            assert f"${name}" in text, (command, name)
    assert run().returncode == 2


def test_keygen_publish_check_signed(built_stores: dict[str, Path], tmp_path: Path) -> None:
    keys = tmp_path / "keys" / "team"
    out = run("keygen", "--out", str(keys))
    assert out.returncode == 0, out.stderr
    key, pub = keys.with_suffix(".key"), keys.with_suffix(".pub")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert run("keygen", "--out", str(keys)).returncode == 1  # no silent overwrite

    store = tmp_path / "store"
    out = run("publish", str(built_stores["v2"]), str(store), "--sign", str(key), "--version", "v7")
    assert out.returncode == 0, out.stderr
    assert "published wine v7" in out.stdout
    manifest = parse((store / "version.json").read_bytes())
    assert manifest.version == "v7" and manifest.key_id is not None
    assert (store / manifest.bundle).read_bytes() == (
        built_stores["v2"] / manifest.bundle
    ).read_bytes()

    out = run("check", str(store), "--public-key", str(pub), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["signature"] == "verified" and report["manifest"]["version"] == "v7"
    assert report["meta"]["inputs"][0] == "alcohol" and report["self_test_max_delta"] < 1e-5
    assert set(report["timings"]) == {"manifest_ms", "download_ms", "build_and_self_test_ms"}

    other = tmp_path / "other"
    assert run("keygen", "--out", str(other)).returncode == 0
    out = run("check", f"file://{store}", env={"RELOADER_PUBLIC_KEY": f"{other}.pub"})
    assert out.returncode == 1 and "SignatureError" in out.stderr


def test_check_refuses_broken_stores(
    tmp_path: Path, local: Source, store_dir: Path, versions: Versions
) -> None:
    out = run("check", str(tmp_path / "nowhere"))
    assert out.returncode == 1 and "NotReady: no manifest in the store yet" in out.stderr
    bad = versions.make(
        "v9", data=versions.bundles["v2"] + b"\n;globalThis.ml.selfTest.expected[0][0] += 1;"
    )
    publish(local, bad)
    out = run("check", str(store_dir))
    assert out.returncode == 1 and "SelfTestError" in out.stderr
    put_manifest(local, versions.make("v10").manifest)  # its bundle was never uploaded
    out = run("check", str(store_dir))
    assert out.returncode == 1 and "NotReady" in out.stderr and "upload the bundle" in out.stderr


def test_publish_refuses_a_broken_build(built_stores: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    build = tmp_path / "build"
    shutil.copytree(built_stores["v2"], build)
    bundle = build / parse((build / "version.json").read_bytes()).bundle
    bundle.write_bytes(bundle.read_bytes() + b"\n")
    out = run("publish", str(build), str(tmp_path / "store"))
    assert out.returncode == 1 and "does not match its manifest" in out.stderr
    assert not (tmp_path / "store").exists()


def test_publish_over_http(built_stores: dict[str, Path], http_store: HttpStore) -> None:
    url = http_store.url("models/wine")
    out = run("publish", str(built_stores["v1"]), url, env={"RELOADER_HTTP_TOKEN": "wrong"})
    assert out.returncode == 1 and "HTTP 401" in out.stderr and "RELOADER_HTTP_TOKEN" in out.stderr
    out = run("publish", str(built_stores["v1"]), url, "--token", "s3cret")
    assert out.returncode == 0, out.stderr
    puts = [r for r in http_store.requests() if r[0] == "PUT" and r[2] == 201]
    assert [p[1].rsplit("/", 1)[-1] for p in puts][-1] == "version.json", "manifest last"
    out = run("check", url)
    assert out.returncode == 0 and "wine v1 loadable" in out.stdout


@pytest.mark.usefixtures("s3")
def test_publish_and_check_on_s3(built_stores: dict[str, Path], s3_url: str) -> None:
    out = run("publish", str(built_stores["v2"]), s3_url)
    assert out.returncode == 0, out.stderr
    out = run("check", s3_url)
    assert out.returncode == 0, out.stderr
    assert "wine v2 loadable" in out.stdout
    with open_source(s3_url) as source:
        fetched = source.read_manifest()
        assert fetched is not None and parse(fetched.data).version == "v2"


def test_a_local_file_error_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = run("keygen", "--out", str(blocker / "keys" / "k"))
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "Not a directory" in out.stderr and str(blocker) in out.stderr
