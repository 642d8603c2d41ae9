"""`python -m reloader check|publish|keygen`: inspect a store, publish a build, make a signing key.

Exit codes: 0 success, 1 the store or bundle failed (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reloader.errors import ReloaderError, SourceError
from reloader.fetch import download_bundle
from reloader.manifest import (
    MANIFEST_NAME,
    Manifest,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    parse,
    private_key_pem,
    public_key_pem,
)
from reloader.runtime import DEFAULT_CALL_TIMEOUT, DEFAULT_HEAP_LIMIT, ModelRuntime
from reloader.sources import Source, open_source, scheme_of


def _env_default(name: str, fallback: Any = None) -> Any:
    return os.environ.get(name, fallback)


def _opt(
    p: argparse.ArgumentParser, flag: str, env: str, help: str, fallback: Any = None, **kw: Any
) -> None:
    shown = f" (default: ${env}" + (f", else {fallback}" if fallback is not None else "") + ")"
    p.add_argument(flag, default=_env_default(env, fallback), help=help + shown, **kw)


def _store_options(p: argparse.ArgumentParser) -> None:
    _opt(p, "--endpoint", "AWS_ENDPOINT_URL", "S3 endpoint URL for s3:// stores")
    _opt(p, "--token", "RELOADER_HTTP_TOKEN", "bearer token for writing to an HTTP store")
    _opt(p, "--timeout", "RELOADER_TIMEOUT", "network timeout in seconds", 10.0, type=float)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reloader",
        description="Check, publish and sign tf-on-flink model stores (local dir, http(s)://, "
        "s3://bucket/prefix). S3 credentials come from AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY and AWS_REGION, as for `aws s3 cp`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser(
        "check",
        help="fetch, verify, build and self-test the version a store serves",
        description="Fetch the manifest, download and verify the bundle, build it in V8 and run "
        "its self-test, as a HotModel would. Prints the manifest and timings; exits 0 only if "
        "the version is loadable.",
    )
    check.add_argument("url", help="store root: path, file://, http(s)://, s3://bucket/prefix")
    _opt(check, "--public-key", "RELOADER_PUBLIC_KEY", "require a signature by this key")
    _opt(
        check,
        "--max-bundle-bytes",
        "RELOADER_MAX_BUNDLE_BYTES",
        "refuse bigger bundles",
        64 << 20,
        type=int,
    )
    _opt(
        check,
        "--heap-limit-mb",
        "RELOADER_HEAP_LIMIT_MB",
        "V8 heap limit",
        DEFAULT_HEAP_LIMIT >> 20,
        type=int,
    )
    _opt(
        check,
        "--call-timeout",
        "RELOADER_CALL_TIMEOUT",
        "seconds per call into V8",
        DEFAULT_CALL_TIMEOUT,
        type=float,
    )
    _store_options(check)
    check.add_argument("--json", action="store_true", help="print one JSON object")

    publish = sub.add_parser(
        "publish",
        help="upload a build (bundle first, then manifest) to a store",
        description="Upload BUILD_DIR's bundle, then its manifest (the commit marker), to URL. "
        "The bundle is loaded and self-tested locally first unless --no-check.",
    )
    publish.add_argument("build_dir", type=Path, help="a build output: version.json + bundles/")
    publish.add_argument("url", help="store root: path, file://, http(s)://, s3://bucket/prefix")
    _opt(publish, "--sign", "RELOADER_SIGNING_KEY", "sign the manifest with this private key")
    publish.add_argument("--version", dest="label", help="override the manifest's version label")
    publish.add_argument("--no-check", action="store_true", help="skip the local self-test")
    _store_options(publish)

    keygen = sub.add_parser(
        "keygen",
        help="create an Ed25519 key pair for signing manifests",
        description="Writes PREFIX.key (private, mode 0600) and PREFIX.pub (public, PEM).",
    )
    _opt(keygen, "--out", "RELOADER_KEY_PREFIX", "path prefix of the key files", "reloader-ed25519")
    keygen.add_argument("--force", action="store_true", help="overwrite existing files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(args)
        if args.command == "publish":
            return _publish(args)
        return _keygen(args)
    except ReloaderError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def _open(args: argparse.Namespace) -> Source:
    scheme = scheme_of(args.url)
    options: dict[str, Any] = {}
    if scheme in ("http", "https", "s3"):
        options["timeout"] = float(args.timeout)
    if scheme == "s3" and args.endpoint:
        options["endpoint"] = args.endpoint
    if scheme in ("http", "https") and args.token:
        options["token"] = args.token
    return open_source(args.url, **options)


def _check(args: argparse.Namespace) -> int:
    timings: dict[str, float] = {}
    public_key = load_public_key(args.public_key) if args.public_key else None
    with _open(args) as source:
        t0 = time.perf_counter()
        fetched = source.read_manifest()
        if fetched is None:  # only possible with a validator; keeps mypy honest
            raise SourceError("no manifest returned", url=args.url)
        manifest = parse(fetched.data)
        timings["manifest_ms"] = (time.perf_counter() - t0) * 1e3
        if public_key is not None:
            manifest.verify(public_key)
        t0 = time.perf_counter()
        data = download_bundle(source, manifest, cache_dir=None, max_bytes=args.max_bundle_bytes)
        timings["download_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    with ModelRuntime(
        data,
        heap_limit=int(args.heap_limit_mb) << 20,
        call_timeout=float(args.call_timeout),
        self_test=manifest.self_test if manifest.self_test is not None else True,
    ) as runtime:
        timings["build_and_self_test_ms"] = (time.perf_counter() - t0) * 1e3
        meta = dataclasses.asdict(runtime.meta)
        delta = runtime.self_test_delta
    report = {
        "url": args.url,
        "manifest": manifest.to_dict(),
        "signature": "verified" if public_key is not None else "not checked",
        "meta": meta,
        "self_test_max_delta": delta,
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    if args.json:
        print(json.dumps(report))
    else:
        m = manifest
        print(f"{args.url}: {m.model} {m.version} loadable")
        print(f"  bundle     {m.bundle} ({m.size} bytes, sha256 {m.sha256})")
        print(f"  created    {m.created}")
        print(f"  signature  {report['signature']}" + (f" (key {m.key_id})" if m.key_id else ""))
        print(f"  inputs     {', '.join(meta['inputs'])}")
        print(f"  outputs    {', '.join(meta['outputs'])}  kernel {meta['kernel']}")
        print(f"  self-test  max |delta| {delta:.3g}")
        print("  timings    " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings"].items()))
    return 0


def _publish(args: argparse.Namespace) -> int:
    build_dir: Path = args.build_dir
    try:
        manifest = parse((build_dir / MANIFEST_NAME).read_bytes())
        data = (build_dir / manifest.bundle).read_bytes()
    except OSError as e:
        print(f"error: cannot read the build in {build_dir}: {e}", file=sys.stderr)
        return 1
    fresh = Manifest.for_bundle(
        data, model=manifest.model, version=args.label or manifest.version, created=None
    )
    if (fresh.sha256, fresh.size) != (manifest.sha256, manifest.size):
        print(
            f"error: {build_dir / manifest.bundle} does not match its manifest "
            f"(sha256 {fresh.sha256[:12]}…, {fresh.size} bytes); rebuild it",
            file=sys.stderr,
        )
        return 1
    manifest = dataclasses.replace(
        manifest,
        version=fresh.version,
        created=fresh.created if args.label else manifest.created,
        signature=None,
        key_id=None,
    )
    if not args.no_check:
        with ModelRuntime(data, self_test=manifest.self_test or True):
            pass
    if args.sign:
        manifest = manifest.signed(load_private_key(args.sign))
    with _open(args) as source:
        t0 = time.perf_counter()
        source.put(manifest.bundle, data, content_type="application/javascript")
        source.put(MANIFEST_NAME, manifest.to_bytes(), content_type="application/json")
        elapsed = time.perf_counter() - t0
    signed = f", signed by {manifest.key_id}" if manifest.key_id else ""
    print(
        f"published {manifest.model} {manifest.version} ({manifest.sha256[:12]}, "
        f"{manifest.size} bytes{signed}) to {args.url} in {elapsed * 1e3:.0f} ms"
    )
    return 0


def _keygen(args: argparse.Namespace) -> int:
    prefix = Path(args.out)
    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for path in (private, public):
        if path.exists() and not args.force:
            print(f"error: {path} exists; pass --force to overwrite it", file=sys.stderr)
            return 1
    key = generate_key()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_pem(key))
    os.chmod(private, 0o600)
    public.write_bytes(public_key_pem(key.public_key()))
    print(f"wrote {private} (keep it secret) and {public}; key id {key_id(key.public_key())}")
    print(f"sign:   python -m reloader publish BUILD_DIR URL --sign {private}")
    print(f"verify: HotModel(url, public_key={str(public)!r}), or check --public-key {public}")
    return 0
