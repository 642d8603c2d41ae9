"""The HTTP model store (FastAPI): static store files, authenticated publish, listing, rollback.

    GET/HEAD /models/{name}/{path}              any store file: strong ETag, 304s, Range
    PUT      /models/{name}/bundles/{sha}.js    a bundle (body sha256 must equal the name)
    PUT      /models/{name}/version.json        the pointer (refused unless its bundle is there)
    PUT      /models/{name}/channels/{ch}.json  a channel's pointer (the same checks)
    GET      /api/models, /api/models/{name}    listing: current pointer, bundles, history, fleet
    POST     /api/models/{name}/rollback        re-point the manifest at an earlier bundle
    POST     /api/models/{name}/channels/{ch}/promote   the manifest becomes the channel's
    POST     /api/models/{name}/channels/{ch}/abort     the channel points at the manifest again
    GET      /                                  the status page

A reader's `X-Reloader-*` headers on a read of `version.json` or of a channel's pointer say who
it is and what it serves; the listing of a model and the status page show them as its fleet, per
pointer (server/fleet.py).

Writes need `Authorization: Bearer <token>`; without a configured token the store is read-only.
The file routes' conditional GETs, byte ranges and body caps are in server/http.py.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import Body, FastAPI, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from reloader.layout import (
    BUNDLE_FILE,
    CHANNEL_FILE,
    CHANNELS_DIR,
    DEFAULT_MAX_BUNDLE_BYTES,
    MANIFEST_NAME,
)
from reloader.sources import REPORT_HEADERS
from server.fleet import Fleet
from server.http import byte_range, check_length, manifest_body, media_type, not_modified
from server.page import render_status_page
from server.store import Store, StoreError

DEFAULT_MAX_BODY = DEFAULT_MAX_BUNDLE_BYTES
_IMMUTABLE = "public, max-age=31536000, immutable"
_MANIFEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
_BINARY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


class RollbackRequest(BaseModel):
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    version: str | None = Field(default=None, min_length=1, max_length=128)


class Problem(BaseModel):
    detail: str


_CHANNEL_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem},  # a bad model or channel name
    401: {"model": Problem},
    403: {"model": Problem},
    404: {"model": Problem},  # no such channel (or manifest)
    409: {"model": Problem},  # the bundle it names is not in the store
    422: {"model": Problem},  # it is not a valid manifest of this model
}
CHANNELS_PREFIX = CHANNELS_DIR + "/"


def create_app(
    root: Path,
    *,
    token: str | None,
    max_body: int = DEFAULT_MAX_BODY,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The app serving the store at `root`; `clock` (wall time) dates the fleet's polls."""
    store = Store(root)
    fleet = Fleet(clock=clock)
    app = FastAPI(
        title="tf-on-flink model store",
        version="1",
        description="The tf-on-flink store layout over HTTP: bundles/<sha256>.js, version.json.",
    )

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, e: StoreError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return JSONResponse({"detail": str(e)}, status_code=e.status, headers=headers)

    def authorize(authorization: str | None) -> None:
        if token is None:
            raise StoreError(403, "this store is read-only: start the server with --token-file")
        if not authorization or not authorization.startswith("Bearer "):
            raise StoreError(401, "writes need an `Authorization: Bearer <token>` header")
        given = authorization[len("Bearer ") :].encode()
        if not hmac.compare_digest(given, token.encode()):
            raise StoreError(403, "wrong token")

    # -- files ------------------------------------------------------------------------------------

    @app.api_route(
        "/models/{name}/{path:path}",
        methods=["GET", "HEAD"],
        responses={
            200: {"content": {"application/javascript": {}, "application/json": {}}},
            206: {},
            304: {},
            404: {"model": Problem},
            416: {},
        },
        summary="Read a store file (bundle or manifest)",
    )
    def get_file(name: str, path: str, request: Request) -> Response:
        with store.open(name, path) as (f, info):
            if path == MANIFEST_NAME:
                _record_poll(fleet, name, request)
            elif path.startswith(CHANNELS_PREFIX) and (
                m := CHANNEL_FILE.fullmatch(path[len(CHANNELS_PREFIX) :])
            ):
                _record_poll(fleet, name, request, channel=m.group(1))
            immutable = BUNDLE_FILE.fullmatch(path.rsplit("/", 1)[-1]) is not None
            headers = {
                "ETag": info.etag,
                "Last-Modified": email.utils.formatdate(info.mtime, usegmt=True),
                "Cache-Control": _IMMUTABLE if immutable else "no-cache",
                "Accept-Ranges": "bytes",
            }
            media = media_type(path)
            if not_modified(request, info.etag, info.mtime):
                return Response(status_code=304, headers=headers)
            span = byte_range(request, info.etag, info.size)
            if span == "invalid":
                headers["Content-Range"] = f"bytes */{info.size}"
                return Response(status_code=416, headers=headers)
            start, end = span if isinstance(span, tuple) else (0, info.size - 1)
            length = max(0, end - start + 1)
            if isinstance(span, tuple):
                headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
            headers["Content-Length"] = str(length)
            status = 206 if isinstance(span, tuple) else 200
            if request.method == "HEAD":
                return Response(status_code=status, headers=headers, media_type=media)
            # Read now, from this handle: a publish renaming a new file into place meanwhile
            # cannot mix two versions into one response.
            f.seek(start)
            body = f.read(length)
        return Response(body, status_code=status, headers=headers, media_type=media)

    @app.put(
        "/models/{name}/bundles/{filename}",
        status_code=201,
        openapi_extra=_BINARY_BODY,
        responses={
            200: {},
            401: {"model": Problem},
            403: {"model": Problem},
            413: {"model": Problem},
            422: {"model": Problem},
        },
        summary="Upload a bundle; the body's sha256 must equal the file name",
    )
    async def put_bundle(
        name: str,
        filename: str,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        authorize(authorization)
        m = BUNDLE_FILE.fullmatch(filename)
        if not m:
            raise StoreError(400, "bundles are named <sha256>.js (64 lowercase hex digits)")
        store.model_dir(name)
        check_length(request, max_body)
        tmp, f = await anyio.to_thread.run_sync(store.new_temp, name)
        digest = hashlib.sha256()
        size = 0
        try:
            try:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_body:
                        raise StoreError(413, f"body over the {max_body}-byte limit")
                    digest.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            finally:
                f.close()
            created = await anyio.to_thread.run_sync(
                store.commit_bundle, name, m.group(1), tmp, size, digest.hexdigest()
            )
        except ClientDisconnect:
            tmp.unlink(missing_ok=True)  # a publisher that died mid-upload leaves nothing behind
            return Response(status_code=400)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return JSONResponse(
            {"sha256": m.group(1), "size": size, "created": created},
            status_code=201 if created else 200,
        )

    @app.put(
        "/models/{name}/version.json",
        status_code=201,
        openapi_extra=_MANIFEST_BODY,
        responses={
            401: {"model": Problem},
            403: {"model": Problem},
            409: {"model": Problem},
            413: {"model": Problem},
            422: {"model": Problem},
        },
        summary="Publish the manifest (the commit marker); its bundle must already be stored",
    )
    async def put_manifest(
        name: str, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Response:
        authorize(authorization)
        store.model_dir(name)
        data = await manifest_body(request, max_body)
        manifest = await anyio.to_thread.run_sync(store.put_manifest, name, data)
        return JSONResponse(manifest.to_dict(), status_code=201)

    @app.put(
        "/models/{name}/channels/{filename}",
        status_code=201,
        openapi_extra=_MANIFEST_BODY,
        responses={
            400: {"model": Problem},
            401: {"model": Problem},
            403: {"model": Problem},
            409: {"model": Problem},
            413: {"model": Problem},
            422: {"model": Problem},
        },
        summary="Point a channel (channels/<name>.json) at a version; its bundle must be stored",
    )
    async def put_channel(
        name: str,
        filename: str,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        authorize(authorization)
        m = CHANNEL_FILE.fullmatch(filename)
        if not m:
            raise StoreError(
                400,
                "channels are named <name>.json: a lowercase letter, then up to 63 "
                "lowercase letters, digits, '_' or '-'",
            )
        store.model_dir(name)
        data = await manifest_body(request, max_body)
        manifest = await anyio.to_thread.run_sync(
            lambda: store.put_manifest(name, data, channel=m.group(1))
        )
        return JSONResponse(manifest.to_dict(), status_code=201)

    # -- API --------------------------------------------------------------------------------------

    @app.get("/api/models", summary="All models with their live version")
    def list_models() -> dict[str, Any]:
        out = []
        for name in store.models():
            current = store.current(name)
            out.append(
                {
                    "name": name,
                    "version": current.version if current else None,
                    "sha256": current.sha256 if current else None,
                    "created": current.created if current else None,
                }
            )
        return {"models": out}

    @app.get(
        "/api/models/{name}",
        responses={400: {"model": Problem}, 404: {"model": Problem}},
        summary="One model: the current pointer, every bundle, the publish history, its fleet",
    )
    def model_detail(name: str) -> dict[str, Any]:
        return describe(name)

    @app.post(
        "/api/models/{name}/rollback",
        responses={
            401: {"model": Problem},
            403: {"model": Problem},
            404: {"model": Problem},
            409: {"model": Problem},
            422: {"model": Problem},
        },
        summary="Point the manifest at an earlier bundle (by sha256 or version label)",
    )
    def rollback(
        name: str,
        target: Annotated[RollbackRequest, Body()],
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        authorize(authorization)
        manifest = store.rollback(name, sha256=target.sha256, version=target.version)
        return {"current": manifest.to_dict()}

    @app.post(
        "/api/models/{name}/channels/{channel}/{action}",
        responses=_CHANNEL_ERRORS,
        summary="promote: make the manifest exactly the document the channel points at; "
        "abort: point the channel back at the manifest (ends its shadow or canary)",
    )
    def promote_or_abort(
        name: str,
        channel: str,
        action: Literal["promote", "abort"],
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        authorize(authorization)
        if action == "promote":
            return {"current": store.promote(name, channel).to_dict()}
        return {"channel": channel, "current": store.abort(name, channel).to_dict()}

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return Response("ok\n", media_type="text/plain")

    @app.get("/", response_class=HTMLResponse, summary="Status page")
    def status_page() -> HTMLResponse:
        models = [describe(name) for name in store.models()]
        return HTMLResponse(render_status_page(models, writable=token is not None))

    def describe(name: str) -> dict[str, Any]:
        detail = store.describe(name)
        detail.update(fleet.describe(name, detail["current"], store.channels(name)))
        return detail

    app.state.store = store
    app.state.fleet = fleet
    return app


def _record_poll(fleet: Fleet, name: str, request: Request, *, channel: str | None = None) -> None:
    """Notes the poll (of `channel`'s pointer, or of the manifest) if the reader says who it is
    (`X-Reloader-Client`); its values are untrusted, `Fleet.record` cleans them."""
    if REPORT_HEADERS["client"] not in request.headers:
        return
    info = {k: request.headers[h] for k, h in REPORT_HEADERS.items() if h in request.headers}
    fleet.record(name, info, request.client.host if request.client else None, channel=channel)
