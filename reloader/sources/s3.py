"""A store in S3 or an S3-compatible server (MinIO, SeaweedFS): `s3://bucket/prefix`.

Endpoint, credentials and region come from the variables `aws s3 cp` reads (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`), each
overridable in code. The manifest is read with `If-None-Match`, so an unchanged one costs a 304.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from reloader.errors import MissingObject, SourceError
from reloader.layout import CHUNK, MANIFEST_NAME, MAX_MANIFEST_BYTES
from reloader.sources import Fetched, Source, Validator, join_key

ENV_ENDPOINT = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
ENV_REGION = ("AWS_REGION", "AWS_DEFAULT_REGION")
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken"}


class S3Source(Source):
    """Args:
    url: `s3://bucket/prefix` (the prefix is the store root).
    endpoint: e.g. `http://127.0.0.1:8333` (default `$AWS_ENDPOINT_URL`, else AWS itself).
    access_key, secret_key, session_token, region: default to the AWS variables.
    timeout: seconds to connect and between bytes of a response.
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        region: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise SourceError("expected s3://bucket/prefix", url=url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        endpoint = endpoint or _env(ENV_ENDPOINT) or "https://s3.amazonaws.com"
        ep = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        if ep.scheme not in ("http", "https") or not ep.netloc or ep.path.strip("/"):
            raise SourceError(
                f"endpoint {endpoint!r} must be http(s)://host[:port] with no path", url=url
            )
        self.endpoint = f"{ep.scheme}://{ep.netloc}"
        access_key = access_key if access_key is not None else os.environ.get("AWS_ACCESS_KEY_ID")
        secret_key = (
            secret_key if secret_key is not None else os.environ.get("AWS_SECRET_ACCESS_KEY")
        )
        if access_key and not secret_key:
            raise SourceError(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not", url=self.url
            )
        self.timeout = timeout
        # Our own pool: minio's default retries 5 times with back-off (logging a warning each
        # time) and waits 5 minutes for a read; the agent has its own retry schedule, logs a
        # failure once, and must notice a dead server quickly.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            maxsize=4,
            retries=urllib3.Retry(total=0, redirect=0, raise_on_status=False),
        )
        self._client = Minio(
            ep.netloc,
            access_key=access_key or None,
            secret_key=secret_key or None,
            session_token=session_token or os.environ.get("AWS_SESSION_TOKEN") or None,
            secure=ep.scheme == "https",
            region=region or _env(ENV_REGION) or None,
            http_client=http,
        )

    def read_manifest(
        self, validator: Validator | None = None, *, key: str = MANIFEST_NAME
    ) -> Fetched | None:
        what = "the manifest" if key == MANIFEST_NAME else key
        key = join_key(self.prefix, key)
        headers: dict[str, str | list[str] | tuple[str]] | None = (
            {"If-None-Match": validator.etag} if validator and validator.etag else None
        )
        try:
            r = self._client.get_object(self.bucket, key, request_headers=headers)
        except ServerError as e:
            if e.status_code == 304:  # minio raises on a successful conditional GET
                return None
            raise self._error(e, key, what) from None
        except Exception as e:
            raise self._error(e, key, what) from None
        try:
            data = r.read(MAX_MANIFEST_BYTES + 1)
            tag = Validator(r.headers.get("ETag"), r.headers.get("Last-Modified"))
        except Exception as e:
            raise self._error(e, key, what) from None
        finally:
            r.close()
            r.release_conn()
        return Fetched(data, tag)

    def iter_bundle(self, key: str) -> Iterator[bytes]:
        full = join_key(self.prefix, key)
        try:
            r = self._client.get_object(self.bucket, full)
        except Exception as e:
            raise self._error(e, full, "the bundle") from None
        try:
            yield from r.stream(CHUNK)
        except Exception as e:
            raise self._error(e, full, "the bundle") from None
        finally:
            r.close()
            r.release_conn()

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        full = join_key(self.prefix, key)
        try:
            self._client.put_object(
                self.bucket, full, io.BytesIO(data), len(data), content_type=content_type
            )
        except Exception as e:
            raise self._error(e, full, "the upload") from None

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{join_key(self.prefix, key)}"

    def _error(self, e: Exception, full_key: str, what: str) -> SourceError:
        where = f"s3://{self.bucket}/{full_key} at {self.endpoint}"
        if isinstance(e, S3Error):
            if e.code == "NoSuchKey":
                return MissingObject(f"{what} does not exist", url=where, status=e.code)
            if e.code == "NoSuchBucket":
                return SourceError(
                    f"bucket {self.bucket!r} does not exist", url=where, status=e.code
                )
            if e.code in _AUTH_CODES:
                return SourceError(
                    f"{what}: the server refused the credentials ({e.code}); check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy",
                    url=where,
                    status=e.code,
                )
            return SourceError(f"{what}: S3 error {e.code}: {e.message}", url=where, status=e.code)
        if isinstance(e, ServerError):
            return SourceError(
                f"{what}: HTTP {e.status_code} from the server", url=where, status=e.status_code
            )
        if isinstance(e, InvalidResponseError | MinioException):
            return SourceError(f"{what}: unexpected answer: {_first(e)}", url=where)
        if isinstance(e, urllib3.exceptions.HTTPError | OSError):
            return SourceError(f"{what}: cannot reach the S3 endpoint: {_cause(e)}", url=where)
        return SourceError(f"{what}: {type(e).__name__}: {_first(e)}", url=where)


def _env(names: tuple[str, ...]) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _first(e: Any) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


def _cause(e: Exception) -> str:
    text = str(e)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return _first(e)
