"""The store's `version.json`: parse, validate, canonical bytes, Ed25519 sign and verify.

A manifest is the one mutable object of a store and its commit marker: it names an immutable,
content-addressed bundle by key, hash and size. `parse(data)` accepts any bytes and returns a
`Manifest` or raises `ManifestError` naming the field; it never raises anything else.

Signing covers `canonical_bytes()`: every field but `signature`, as compact JSON with sorted keys,
UTF-8. `key_id` is part of the signed bytes, so it cannot be swapped to point at another key, and
so is `effective_at`, the optional event time from which a version serves.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from reloader.errors import ManifestError, SignatureError
from reloader.layout import (
    FORMAT,
    MAX_BUNDLE_SIZE,
    MAX_MANIFEST_BYTES,
    MODEL_NAME,
    SHA256,
    bundle_key,
    valid_key,
)

_SELF_TEST_MAX_ROWS = 1024
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_B64_KEY = re.compile(r"[A-Za-z0-9+/]{43}=")
_FIELDS = ("format", "model", "version", "bundle", "sha256", "size", "created")
_OPTIONAL = ("effective_at", "signature", "key_id", "self_test")
# RFC 3339 `date-time`, strictly (no week dates or hour-only times, which fromisoformat takes).
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclasses.dataclass(frozen=True)
class Manifest:
    """One `version.json`. Build one with `Manifest.for_bundle` or `parse`; never mutate.

    Attributes:
        model: the model's name (`[A-Za-z0-9][A-Za-z0-9._-]*`).
        version: the publisher's label for this version (printable text, up to 128 chars).
        bundle: the bundle's key relative to the store root, e.g. `bundles/<sha256>.js`.
        sha256: lowercase hex SHA-256 of the bundle's bytes.
        size: the bundle's size in bytes.
        created: RFC 3339 time stamp with a time zone.
        signature: base64 Ed25519 signature over `canonical_bytes()`, if signed.
        key_id: `key_id(public_key)` of the signing key, if signed.
        self_test: optional `{inputs, expected, tolerance}` that replaces the bundle's own.
        effective_at: optional RFC 3339 time stamp with a zone: the event time from which this
            version serves (records before it keep the version published before); None: at once,
            for every event time.
    """

    model: str
    version: str
    bundle: str
    sha256: str
    size: int
    created: str
    format: int = FORMAT
    signature: str | None = None
    key_id: str | None = None
    self_test: Mapping[str, Any] | None = None
    effective_at: str | None = None

    @property
    def effective_at_ms(self) -> int | None:
        """`effective_at` in milliseconds since the Unix epoch (UTC), or None when unset.

        Exact: a finer fraction is rounded up, so for an event time `t` in whole milliseconds
        `t >= effective_at_ms` exactly when `t` is at or after `effective_at`.
        """
        return None if self.effective_at is None else _stamp_ms(self.effective_at)

    @classmethod
    def for_bundle(
        cls, data: bytes, *, model: str, version: str, created: str | None = None
    ) -> Manifest:
        """The manifest that publishes `data` under the content-addressed key."""
        sha = hashlib.sha256(data).hexdigest()
        stamp = created or now_stamp()
        fields = {
            "format": FORMAT,
            "model": model,
            "version": version,
            "bundle": bundle_key(sha),
            "sha256": sha,
            "size": len(data),
            "created": stamp,
        }
        return from_mapping(fields)

    def to_dict(self) -> dict[str, Any]:
        """Fields in publishing order; optional fields only when set."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _FIELDS}
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                out[name] = dict(value) if name == "self_test" else value
        return out

    def to_bytes(self) -> bytes:
        """The document to store as `version.json` (indented JSON, trailing newline)."""
        return (json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n").encode()

    def canonical_bytes(self) -> bytes:
        """The bytes a signature covers: all fields but `signature`, compact, keys sorted."""
        fields = self.to_dict()
        fields.pop("signature", None)
        return json.dumps(
            fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()

    def signed(self, private_key: Ed25519PrivateKey) -> Manifest:
        """A copy signed with `private_key` (replaces any earlier signature)."""
        unsigned = dataclasses.replace(
            self, signature=None, key_id=key_id(private_key.public_key())
        )
        signature = private_key.sign(unsigned.canonical_bytes())
        return dataclasses.replace(unsigned, signature=base64.b64encode(signature).decode())

    def verify(self, public_key: Ed25519PublicKey) -> None:
        """Raises `SignatureError` unless this manifest carries a valid signature by the key."""
        expected = key_id(public_key)
        if self.signature is None:
            raise SignatureError(
                f"manifest of {self.model} {self.version} is not signed, and a public key "
                f"({expected}) is configured: publish it with `--sign KEY`",
                what="signature",
                expected=expected,
                actual=None,
            )
        if self.key_id != expected:
            raise SignatureError(
                f"manifest of {self.model} {self.version} is signed by key {self.key_id}, "
                f"not by the configured key {expected}",
                what="signature",
                expected=expected,
                actual=self.key_id,
            )
        try:
            public_key.verify(base64.b64decode(self.signature), self.canonical_bytes())
        except InvalidSignature:
            raise SignatureError(
                f"signature of {self.model} {self.version} does not match its contents "
                "(the manifest was changed after signing)",
                what="signature",
                expected=expected,
                actual="invalid",
            ) from None


def parse(data: bytes | str) -> Manifest:
    """Parses and validates a `version.json`. Raises only `ManifestError`."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{len(data)} bytes; a manifest is at most {MAX_MANIFEST_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except ManifestError:
        raise
    except (ValueError, RecursionError) as e:
        raise ManifestError(f"not JSON ({_first_line(e)})") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"must be a JSON object, got {_json_type(doc)}")
    return from_mapping(doc)


def from_mapping(doc: Mapping[str, Any]) -> Manifest:
    """Validates a decoded manifest document. Raises only `ManifestError`."""
    fmt = doc.get("format")
    if "format" not in doc:
        raise ManifestError("missing; this reader understands format 1", field="format")
    if type(fmt) is not int or fmt != FORMAT:
        raise ManifestError(
            f"{_show(fmt)} is not a format this reader understands (it reads {FORMAT}); "
            "upgrade tf-on-flink",
            field="format",
        )
    for name in doc:
        if name not in _FIELDS and name not in _OPTIONAL:
            raise ManifestError("unknown field in format 1", field=str(name)[:64])
    for name in _FIELDS:
        if name not in doc:
            raise ManifestError("missing", field=name)
    sha = _string(doc, "sha256")
    if not SHA256.fullmatch(sha):
        raise ManifestError("must be 64 lowercase hex digits", field="sha256")
    size = doc["size"]
    if type(size) is not int or not 0 < size <= MAX_BUNDLE_SIZE:
        raise ManifestError(f"must be a positive integer of bytes, got {_show(size)}", field="size")
    model = _string(doc, "model")
    if not MODEL_NAME.fullmatch(model):
        raise ManifestError(
            "must be 1-128 of letters, digits, '.', '_', '-' (starting with a letter or digit)",
            field="model",
        )
    version = _string(doc, "version")
    if not 0 < len(version) <= 128 or not version.isprintable():
        raise ManifestError("must be 1-128 printable characters", field="version")
    signature = doc.get("signature")
    if signature is not None:
        signature = _string(doc, "signature")
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 64:
            raise ManifestError("must be a base64 Ed25519 signature (64 bytes)", field="signature")
    key = doc.get("key_id")
    if key is not None:
        key = _string(doc, "key_id")
        if not _KEY_ID.fullmatch(key):
            raise ManifestError("must be 16 lowercase hex digits", field="key_id")
    if (signature is None) != (key is None):
        raise ManifestError("`signature` and `key_id` go together", field="signature")
    self_test = doc.get("self_test")
    if self_test is not None:
        self_test = _self_test(self_test)
    effective_at = doc.get("effective_at")
    if effective_at is not None:
        effective_at = effective_stamp(_string(doc, "effective_at"))
    return Manifest(
        format=FORMAT,
        model=model,
        version=version,
        bundle=_bundle_key(doc),
        sha256=sha,
        size=size,
        created=_created(doc),
        signature=signature,
        key_id=key,
        self_test=self_test,
        effective_at=effective_at,
    )


def now_stamp() -> str:
    """The current local time as an RFC 3339 `created` stamp, to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def effective_stamp(value: str | int) -> str:
    """An `effective_at` value: an RFC 3339 time with a zone, returned as given, or an integer of
    milliseconds since the Unix epoch, returned as a UTC stamp (`2026-12-01T08:00:00Z`, with
    `.123` when it has a fraction). Raises `ManifestError` (field `effective_at`) otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            stamp = _EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            stamp = None
        if stamp is None:
            raise ManifestError(
                f"{value} milliseconds since the epoch is out of range", field="effective_at"
            )
        spec = "seconds" if value % 1000 == 0 else "milliseconds"
        return stamp.isoformat(timespec=spec).replace("+00:00", "Z")
    if isinstance(value, str) and len(value) <= 64:
        try:
            _stamp_ms(value)
            return value
        except ValueError:
            pass
    raise ManifestError(
        f"{_show(value)} is not an RFC 3339 time with a zone (e.g. 2026-12-01T08:00:00Z) "
        "or integer milliseconds since the epoch",
        field="effective_at",
    )


def effective_ms(value: str | int) -> int:
    """Milliseconds since the Unix epoch of an `effective_at` value (see `effective_stamp` and
    `Manifest.effective_at_ms`). Raises `ManifestError` for a bad value."""
    return _stamp_ms(effective_stamp(value))


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short identifier of a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(source: str | Path | bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (path) or PEM bytes, as written by `keygen`."""
    pem = _read_key(source)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise SignatureError(
            f"not an unencrypted PEM private key: {e}", what="key", expected="Ed25519", actual=None
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(
            "the private key is not Ed25519", what="key", expected="Ed25519", actual=type(key)
        )
    return key


def load_public_key(source: str | Path | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (path), PEM bytes, or base64 of the 32 raw bytes."""
    pem = _read_key(source)
    try:
        if pem.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(pem)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(pem.strip(), validate=True))
    except (ValueError, TypeError, binascii.Error) as e:
        raise SignatureError(
            f"not an Ed25519 public key (PEM or base64 raw): {e}",
            what="key",
            expected="Ed25519",
            actual=None,
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(
            "the public key is not Ed25519", what="key", expected="Ed25519", actual=type(key)
        )
    return key


def _read_key(source: str | Path | bytes) -> bytes:
    """Key material given inline (PEM text or base64) or as a file path."""
    if isinstance(source, bytes):
        return source
    text = str(source)
    if isinstance(source, str) and (text.startswith("-----BEGIN") or _B64_KEY.fullmatch(text)):
        return text.encode()
    try:
        return Path(text).read_bytes()
    except OSError as e:
        raise SignatureError(
            f"cannot read key file {text}: {e.strerror}", what="key", expected=text, actual=None
        ) from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ManifestError("appears twice", field=key[:64])
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ManifestError(f"{name} is not allowed in a manifest")


def _string(doc: Mapping[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str):
        raise ManifestError(f"must be a string, got {_json_type(value)}", field=name)
    return value


def _bundle_key(doc: Mapping[str, Any]) -> str:
    key = _string(doc, "bundle")
    if not valid_key(key):
        raise ManifestError(
            "must be a relative key like bundles/<sha256>.js (letters, digits, '.', '_', '-', "
            "'/'; no empty, '.' or '..' segments)",
            field="bundle",
        )
    return key


def _created(doc: Mapping[str, Any]) -> str:
    stamp = _string(doc, "created")
    try:
        parsed = datetime.fromisoformat(stamp) if len(stamp) <= 64 and "T" in stamp else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ManifestError(
            "must be an RFC 3339 time with a zone, e.g. 2026-11-23T10:00:00Z", field="created"
        )
    return stamp


def _stamp_ms(stamp: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 stamp (fractions rounded up); ValueError if
    it is not one."""
    m = _RFC3339.fullmatch(stamp)
    if m is None:
        raise ValueError(stamp)
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    zone = m.group(8)
    offset = timedelta(0)
    if zone not in ("Z", "z"):
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(stamp)
        offset = (1 if zone[0] == "+" else -1) * timedelta(hours=hours, minutes=minutes)
    # datetime() validates the calendar (Feb 30, hour 24) and refuses leap second 60.
    local = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    whole = (local - _EPOCH) // timedelta(seconds=1)
    fraction = m.group(7) or ""
    # ceil(fraction * 1000) in integers: exact for any number of digits.
    ms = -(-int(fraction) * 1000 // 10 ** len(fraction)) if fraction else 0
    return whole * 1000 + ms


def _self_test(spec: Any) -> dict[str, Any]:
    def fail(why: str) -> ManifestError:
        return ManifestError(
            f"{why}; expected {{inputs: [[number]], expected: [[number]], tolerance > 0}}",
            field="self_test",
        )

    if not isinstance(spec, dict) or set(spec) != {"inputs", "expected", "tolerance"}:
        raise fail("wrong shape")
    tolerance = spec["tolerance"]
    if type(tolerance) not in (int, float) or not 0 < tolerance < math.inf:
        raise fail("tolerance must be a positive number")
    rows = []
    for name in ("inputs", "expected"):
        table = spec[name]
        if not isinstance(table, list) or not 0 < len(table) <= _SELF_TEST_MAX_ROWS:
            raise fail(f"{name} must be a list of 1-{_SELF_TEST_MAX_ROWS} rows")
        ok = all(
            isinstance(row, list)
            and len(row) == len(table[0])
            and all(type(v) in (int, float) and math.isfinite(v) for v in row)
            for row in table
        )
        if not ok or not table[0]:
            raise fail(f"{name} rows must be equal-length lists of finite numbers")
        rows.append(len(table))
    if rows[0] != rows[1]:
        raise fail("inputs and expected must have the same number of rows")
    return {"inputs": spec["inputs"], "expected": spec["expected"], "tolerance": tolerance}


def _show(value: Any) -> str:
    if type(value) not in (int, float, str, bool) and value is not None:
        return _json_type(value)
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if type(value) in (int, float):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:120]
