"""`python -m server serve --root DIR [--host 127.0.0.1] [--port 8080] [--token-file F]`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from server.app import DEFAULT_MAX_BODY


def _env(name: str, fallback: str | None = None) -> str | None:
    return os.environ.get(name, fallback)


def _env_int(name: str, fallback: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return fallback
    try:
        return int(raw)
    except ValueError:
        print(f"error: ${name} must be an integer, got {raw!r}", file=sys.stderr)
        raise SystemExit(2) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server", description="An HTTP model store for tf-on-flink."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve a store directory",
        description="Serve <root>/<model>/{version.json,bundles/} over HTTP, with authenticated "
        "publish and rollback and a status page at /.",
    )
    serve.add_argument(
        "--root",
        default=_env("MODEL_STORE_ROOT"),
        help="store directory (default: $MODEL_STORE_ROOT)",
    )
    serve.add_argument(
        "--host",
        default=_env("MODEL_STORE_HOST", "127.0.0.1"),
        help="address to listen on (default: $MODEL_STORE_HOST, else 127.0.0.1)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=_env_int("MODEL_STORE_PORT", 8080),
        help="port; 0 picks a free one (default: $MODEL_STORE_PORT, else 8080)",
    )
    serve.add_argument(
        "--token-file",
        default=_env("MODEL_STORE_TOKEN_FILE"),
        help="file holding the bearer token that writes need; without it the store is read-only "
        "(default: $MODEL_STORE_TOKEN_FILE)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=_env_int("MODEL_STORE_MAX_BODY", DEFAULT_MAX_BODY),
        help=f"largest upload accepted (default: $MODEL_STORE_MAX_BODY, else {DEFAULT_MAX_BODY})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.root:
        print("error: --root (or $MODEL_STORE_ROOT) is required", file=sys.stderr)
        return 2
    root = Path(args.root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: cannot use {root} as the store directory: {e.strerror}", file=sys.stderr)
        return 2
    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as e:
            print(f"error: cannot read the token file: {e}", file=sys.stderr)
            return 2
        if len(token) < 8:
            print("error: the token must be at least 8 characters", file=sys.stderr)
            return 2

    import uvicorn

    from server.app import create_app

    app = create_app(root, token=token, max_body=args.max_body_bytes)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    # Print the bound port once listening (useful with --port 0 and for readiness probes).
    original = server.startup

    async def startup(sockets: object = None) -> None:
        await original(sockets=sockets)  # type: ignore[arg-type]
        for s in server.servers:
            for sock in s.sockets:
                host, port = sock.getsockname()[:2]
                print(f"listening http://{host}:{port}", flush=True)

    server.startup = startup  # type: ignore[method-assign]
    server.run()
    return 0
