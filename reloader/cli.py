"""`python -m reloader check|publish|channel|promote|abort|history|keygen`: inspect a store,
publish a build, point a channel, promote or abort a channel's candidate, list a store's publish
history, make a signing key. The parser, `check`, `publish` and `keygen` are here; `channel`,
`promote`, `abort` and `history` run in reloader/cli_rollouts.py.

A store URL may end in `@<ref>` for `check` and `history` (`store/wine@stable`, `store/wine@7`:
a channel or a pinned version, see `reloader.sources.split_ref`); `publish`, `channel`, `promote`
and `abort` write to a store root.

Exit codes: 0 success, 1 the store or bundle failed (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reloader import cli_rollouts
from reloader.codec import BundleMeta
from reloader.errors import ManifestError, ReloaderError
from reloader.layout import DEFAULT_MAX_BUNDLE_BYTES, channel_key
from reloader.load import Loader, LoadSettings, check
from reloader.manifest import (
    effective_stamp,
    generate_key,
    key_id,
    load_public_key,
    private_key_pem,
    public_key_pem,
)
from reloader.publish import KEEP, publish, read_build, relabel
from reloader.runtime import DEFAULT_CALL_TIMEOUT, DEFAULT_HEAP_LIMIT
from reloader.sources import scheme_of, split_ref

_MILLIS = re.compile(r"-?[0-9]+")


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
    check.add_argument(
        "url",
        help="store root: path, file://, http(s)://, s3://bucket/prefix; URL@CHANNEL or "
        "URL@VERSION for a channel or a pinned version",
    )
    _opt(check, "--public-key", "RELOADER_PUBLIC_KEY", "require a signature by this key")
    _opt(
        check,
        "--max-bundle-bytes",
        "RELOADER_MAX_BUNDLE_BYTES",
        "refuse bigger bundles",
        DEFAULT_MAX_BUNDLE_BYTES,
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
    publish.add_argument(
        "--at",
        metavar="TIME",
        help="serve this version from event time TIME on (RFC 3339 with a zone, e.g. "
        "2026-12-01T08:00:00Z, or integer milliseconds since the epoch); records before it keep "
        "the version published before (default: at once, for every event time)",
    )
    publish.add_argument("--no-check", action="store_true", help="skip the local self-test")
    publish.add_argument(
        "--channel",
        metavar="NAME",
        help="publish to channel NAME (channels/NAME.json, followed as URL@NAME) instead of "
        "the store's main manifest",
    )
    _store_options(publish)

    channel = sub.add_parser(
        "channel",
        help="point a channel at a published version (roll it back, promote), or show it",
        description="A channel is a second pointer in a store (channels/NAME.json) that jobs "
        "follow as URL@NAME. With --to, points channel NAME at the version labelled VERSION in "
        "URL's publish history (the exact manifest published then, so a signature stays "
        "valid), or at the current main manifest with --to main. Without --to, prints where it "
        "points.",
    )
    channel.add_argument("url", help="store root: path, file://, http(s)://, s3://bucket/prefix")
    channel.add_argument("name", help="the channel: [a-z][a-z0-9_-]{0,63}")
    channel.add_argument("--to", metavar="VERSION", help="a version label, or `main`")
    channel.add_argument("--json", action="store_true", help="print the manifest as JSON")
    _store_options(channel)

    for name, summary, description in (
        (
            "promote",
            "make a channel's version the store's main manifest",
            "The main manifest (version.json) becomes exactly the document channel NAME points "
            "at (a signature stays valid): every job following URL serves it at its next "
            "check, and a job's shadow or canary of it stops. A history line comes first.",
        ),
        (
            "abort",
            "point a channel back at the main manifest (ends its shadow or canary)",
            "Channel NAME points at the current main manifest again (`channel URL NAME --to "
            "main` of a channel that exists): every job's shadow or canary of it stops at its "
            "next check.",
        ),
    ):
        p = sub.add_parser(name, help=summary, description=description)
        p.add_argument("url", help="store root: path, file://, http(s)://, s3://bucket/prefix")
        p.add_argument("--channel", metavar="NAME", required=True, help="the channel")
        _store_options(p)

    history = sub.add_parser(
        "history",
        help="list the versions published to a store, and the event-time timeline they define",
        description="Reads URL's history.jsonl (written by `publish` and by the HTTP server) and "
        "lists every publish: when, how, version, sha256, effective time. '*' marks the entry "
        "the manifest points at; later entries (a publish that did not finish) are ignored.",
    )
    history.add_argument(
        "url",
        help="store root: path, file://, http(s)://, s3://bucket/prefix; URL@CHANNEL shows "
        "that channel's publishes",
    )
    _store_options(history)
    history.add_argument("--json", action="store_true", help="print one JSON object")

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
    problem = _usage_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        if args.command == "check":
            return _check(args)
        if args.command == "publish":
            return _publish(args)
        if args.command == "channel":
            return cli_rollouts.channel(args, source_options=_source_options(args))
        if args.command in ("promote", "abort"):
            return cli_rollouts.promote_or_abort(args, source_options=_source_options(args))
        if args.command == "history":
            return cli_rollouts.history(args, source_options=_source_options(args))
        return _keygen(args)
    except ReloaderError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a local file (key, build output) that cannot be read or written
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 1


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a store URL or channel name given, in one line; None when fine."""
    url = getattr(args, "url", None)
    if url is None:
        return None
    try:
        ref = split_ref(url)[1]
        for name in (getattr(args, "channel", None), getattr(args, "name", None)):
            if name is not None:
                channel_key(name)
    except ValueError as e:
        return str(e)
    if ref is not None and args.command in ("publish", "channel", "promote", "abort"):
        root = split_ref(url)[0]
        return f"{args.command} writes to a store root, not to {url!r}: use {root!r}" + (
            "" if args.command == "channel" else " with --channel NAME"
        )
    return None


def _source_options(args: argparse.Namespace) -> dict[str, Any]:
    scheme = scheme_of(args.url)
    options: dict[str, Any] = {}
    if scheme in ("http", "https", "s3"):
        options["timeout"] = float(args.timeout)
    if scheme == "s3" and args.endpoint:
        options["endpoint"] = args.endpoint
    if scheme in ("http", "https") and args.token:
        options["token"] = args.token
    return options


def _settings(args: argparse.Namespace) -> LoadSettings:
    return LoadSettings(
        max_bundle_bytes=int(args.max_bundle_bytes),
        public_key=load_public_key(args.public_key) if args.public_key else None,
        heap_limit=int(args.heap_limit_mb) << 20,
        call_timeout=float(args.call_timeout),
    )


def _check(args: argparse.Namespace) -> int:
    report = check(args.url, _settings(args), source_options=_source_options(args))
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0
    m, meta, out = report.manifest, report.meta, report.as_dict()
    print(f"{args.url}: {m.model} {m.version} loadable")
    print(f"  bundle     {m.bundle} ({m.size} bytes, sha256 {m.sha256})")
    print(f"  created    {m.created}")
    print(f"  signature  {out['signature']}" + (f" (key {m.key_id})" if m.key_id else ""))
    for line in describe_interface(meta):
        print("  " + line)
    deltas = ", ".join(f"{k} {v:.3g}" for k, v in report.self_test_deltas.items())
    print(
        f"  self-test  max |delta| {report.self_test_max_delta or 0.0:.3g}"
        + (f" ({deltas}; against the training framework's outputs)" if deltas else "")
    )
    if report.skew is not None:
        sk = report.skew
        print(
            f"  features   train/serve: {sk['records']} sample records x {sk['features']} "
            f"features, max |delta| {sk['max_delta']:.3g}"
            + (f" (in {sk['worst_feature']})" if sk["max_delta"] else "")
        )
    print("  timings    " + ", ".join(f"{k} {v:.1f}" for k, v in out["timings"].items()))
    return 0


def describe_interface(meta: BundleMeta) -> list[str]:
    """What a bundle takes and gives, and its kernel, as `check` prints it."""
    kernel = f"kernel     {meta.kernel}" + (
        f" ({meta.kernel_reason})" if meta.kernel_reason else ""
    )
    if meta.schema is None:
        return [
            f"inputs     {', '.join(meta.inputs)} (float32 matrix, contract 1)",
            f"outputs    {', '.join(meta.outputs)}",
            kernel,
        ]
    schema = meta.schema
    lines = []
    for f in schema["inputs"]:
        notes = [str(f["type"])]
        if f.get("derived") or f["name"] in (schema.get("derived") or ()):
            notes.append("derived by the prepare hook")
        elif "default" in f:
            notes.append(f"default {json.dumps(f['default'])}")
        elif f.get("nullable"):
            notes.append("nullable")
        lines.append(f"{f['name']}: {', '.join(notes)}")
    listed = {f["name"] for f in schema["inputs"]}
    for name in schema.get("derived") or ():
        if name not in listed:
            lines.append(f"{name}: derived by the prepare hook")
    features = [str(v) for v in schema.get("features") or ()]
    shown = ", ".join(features[:12]) + (
        f", ... ({len(features)} in all)" if len(features) > 12 else ""
    )
    output = dict(schema["output"])
    kind = output.pop("kind")
    out = [
        "inputs     " + "; ".join(lines),
        f"features   {len(features)}: {shown}",
        f"output     {kind} {json.dumps(output, separators=(',', ':'))}"[:300],
    ]
    if schema.get("extras"):
        out.append("extras     " + ", ".join(f"{e['name']}: {e['type']}" for e in schema["extras"]))
    out.append(kernel)
    return out


def _publish(args: argparse.Namespace) -> int:
    effective_at = None
    if args.at is not None:
        value = args.at.strip()
        try:
            effective_at = effective_stamp(int(value) if _MILLIS.fullmatch(value) else value)
        except ManifestError:
            print(
                f"error: --at {args.at!r} is not an RFC 3339 time with a zone "
                "(e.g. 2026-12-01T08:00:00Z) or integer milliseconds since the epoch",
                file=sys.stderr,
            )
            return 2
    manifest, data = read_build(args.build_dir)
    manifest = relabel(
        manifest, args.label, effective_at=KEEP if effective_at is None else effective_at
    )
    if not args.no_check:
        # The same build a HotModel does (trial in a child process included), before upload.
        Loader(LoadSettings()).build(manifest, data).runtime.close()
    t0 = time.perf_counter()
    manifest = publish(
        args.url,
        data,
        manifest,
        signing_key=args.sign,
        source_options=_source_options(args),
        channel=args.channel,
    )
    elapsed = time.perf_counter() - t0
    signed = f", signed by {manifest.key_id}" if manifest.key_id else ""
    at = f", from event time {manifest.effective_at}" if manifest.effective_at else ""
    to = f"channel {args.channel} of {args.url}" if args.channel else args.url
    print(
        f"published {manifest.model} {manifest.version} ({manifest.sha256[:12]}, "
        f"{manifest.size} bytes{signed}{at}) to {to} in {elapsed * 1e3:.0f} ms"
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
