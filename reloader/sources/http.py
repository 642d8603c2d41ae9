"""A store served over HTTP(S): our `server/`, nginx, any static file server.

The manifest is read with `If-None-Match` / `If-Modified-Since`, so an unchanged manifest costs a
304 with no body. TLS certificates are verified (set `REQUESTS_CA_BUNDLE` for a private CA).
Writes (`publish`) are `PUT`s with a bearer token, the protocol of `python -m server`. What the
reader last `report`ed goes with every manifest read as `X-Reloader-*` headers (the server's fleet
view); a static file server ignores them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping

import requests

from reloader.errors import MissingObject, SourceError
from reloader.layout import CHUNK, MANIFEST_NAME, MAX_MANIFEST_BYTES
from reloader.sources import Fetched, Source, Validator, report_headers

TOKEN_ENV = "RELOADER_HTTP_TOKEN"


class HttpSource(Source):
    """Args:
    url: the store root, e.g. `http://127.0.0.1:8080/models/wine`.
    timeout: seconds to connect and between bytes of a response (not the whole download).
    token: bearer token for `put` (default: `$RELOADER_HTTP_TOKEN`).
    verify: TLS verification: True, or a CA bundle path. Never turned off silently.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        token: str | None = None,
        verify: bool | str = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        # Passed with every request: a Session's own `verify` loses to $REQUESTS_CA_BUNDLE.
        self.verify = verify
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "tf-on-flink-reloader"
        # Replaced whole by `report` (one assignment), read by `read_manifest`: no lock needed.
        self._report: dict[str, str] = {}

    def report(self, info: Mapping[str, str]) -> None:
        self._report = report_headers(info)

    def read_manifest(
        self, validator: Validator | None = None, *, key: str = MANIFEST_NAME
    ) -> Fetched | None:
        headers = {"Cache-Control": "no-cache", **self._report}
        if validator is not None:
            if validator.etag:
                headers["If-None-Match"] = validator.etag
            if validator.last_modified:
                headers["If-Modified-Since"] = validator.last_modified
        url = f"{self.url}/{key}"
        with self._get(url, headers) as r:
            if r.status_code == 304:
                return None
            self._check(r, url, what="the manifest" if key == MANIFEST_NAME else key)
            data = _read_capped(r, MAX_MANIFEST_BYTES + 1, url)
            tag = Validator(r.headers.get("ETag"), r.headers.get("Last-Modified"))
        return Fetched(data, tag)

    def iter_bundle(self, key: str) -> Iterator[bytes]:
        url = f"{self.url}/{key}"
        with self._get(url, {}) as r:
            self._check(r, url, what="the bundle")
            try:
                yield from r.iter_content(CHUNK)
            except requests.RequestException as e:
                raise SourceError(f"download interrupted: {_reason(e)}", url=url) from None

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        url = f"{self.url}/{key}"
        headers = {"Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            r = self._session.put(
                url, data=data, headers=headers, timeout=self.timeout, verify=self.verify
            )
        except requests.RequestException as e:
            raise SourceError(f"upload failed: {_reason(e)}", url=url) from None
        with r:
            if r.status_code in (401, 403):
                raise SourceError(
                    f"the server refused the upload (HTTP {r.status_code}); set "
                    f"{TOKEN_ENV} to a token it accepts",
                    url=url,
                    status=r.status_code,
                )
            self._check(r, url, what="the upload")

    def close(self) -> None:
        self._session.close()

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        try:
            return self._session.get(
                url, headers=headers, timeout=self.timeout, stream=True, verify=self.verify
            )
        except requests.exceptions.SSLError as e:
            raise SourceError(f"TLS verification failed: {_reason(e)}", url=url) from None
        except requests.Timeout:
            raise SourceError(f"no answer within {self.timeout:g} s", url=url) from None
        except requests.ConnectionError as e:
            raise SourceError(f"cannot connect: {_reason(e)}", url=url) from None
        except requests.RequestException as e:
            raise SourceError(f"request failed: {_reason(e)}", url=url) from None

    @staticmethod
    def _check(r: requests.Response, url: str, *, what: str) -> None:
        if r.status_code == 404:
            raise MissingObject(f"{what} is not on the server (HTTP 404)", url=url, status=404)
        if not 200 <= r.status_code < 300:
            raise SourceError(
                f"{what}: HTTP {r.status_code} {r.reason or ''}".rstrip(),
                url=url,
                status=r.status_code,
            )


def _read_capped(r: requests.Response, cap: int, url: str) -> bytes:
    parts: list[bytes] = []
    total = 0
    try:
        for chunk in r.iter_content(CHUNK):
            parts.append(chunk)
            total += len(chunk)
            if total >= cap:
                break  # the parser reports the oversize document
    except requests.RequestException as e:
        raise SourceError(f"download interrupted: {_reason(e)}", url=url) from None
    return b"".join(parts)


def _reason(e: Exception) -> str:
    """A short cause: requests nests urllib3's error texts several levels deep."""
    text = str(e)
    ssl_reason = re.search(r"certificate verify failed: ([^(']+)", text)
    if ssl_reason:
        return f"certificate verify failed: {ssl_reason.group(1).strip()}"
    for marker, short in (
        ("Connection refused", "connection refused"),
        ("Read timed out", "read timed out"),
        ("Connection aborted", "connection aborted"),
        ("Connection broken", "connection broken"),
        ("RemoteDisconnected", "server closed the connection"),
    ):
        if marker in text:
            return short
    return text.splitlines()[0][:200] if text else type(e).__name__
