"""The manifest: every field validated by name, canonical bytes, Ed25519, and a parser that only
ever answers with a `Manifest` or a `ManifestError`."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reloader.errors import ManifestError, SignatureError
from reloader.manifest import (
    Manifest,
    from_mapping,
    generate_key,
    load_private_key,
    load_public_key,
    parse,
    private_key_pem,
    public_key_pem,
)

SHA = "a" * 64
GOOD: dict[str, Any] = {
    "format": 1,
    "model": "wine",
    "version": "v2",
    "bundle": f"bundles/{SHA}.js",
    "sha256": SHA,
    "size": 601214,
    "created": "2026-11-23T10:00:00Z",
}


def test_parses_what_the_builder_writes(built_stores: Any) -> None:
    for store in built_stores.values():
        raw = (store / "version.json").read_bytes()
        m = parse(raw)
        assert m.model == "wine" and m.bundle == f"bundles/{m.sha256}.js"
        assert m.size == (store / m.bundle).stat().st_size
        assert parse(m.to_bytes()) == m


def test_round_trip_with_optional_fields() -> None:
    spec = {"inputs": [[1.0, 2]], "expected": [[0.5]], "tolerance": 1e-4}
    m = from_mapping({**GOOD, "self_test": spec})
    assert parse(m.to_bytes()) == m
    assert m.self_test == spec


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"format": 2}, "format"),
        ({"format": "1"}, "format"),
        ({"format": True}, "format"),
        ({"format": None}, "format"),
        ({"model": ""}, "model"),
        ({"model": "../etc"}, "model"),
        ({"model": 7}, "model"),
        ({"version": ""}, "version"),
        ({"version": "a\nb"}, "version"),
        ({"bundle": "/etc/passwd"}, "bundle"),
        ({"bundle": "bundles/../../x.js"}, "bundle"),
        ({"bundle": "bundles//x.js"}, "bundle"),
        ({"bundle": "bundles\\x.js"}, "bundle"),
        ({"bundle": "http://evil/x.js"}, "bundle"),
        ({"sha256": "A" * 64}, "sha256"),
        ({"sha256": "a" * 63}, "sha256"),
        ({"size": 0}, "size"),
        ({"size": -5}, "size"),
        ({"size": 1.5}, "size"),
        ({"size": "10"}, "size"),
        ({"size": True}, "size"),
        ({"created": "yesterday"}, "created"),
        ({"created": "2026-11-23T10:00:00"}, "created"),  # no zone
        ({"signature": "abc", "key_id": "0" * 16}, "signature"),
        ({"signature": "A" * 86 + "==", "key_id": "xyz"}, "key_id"),
        ({"signature": "A" * 86 + "=="}, "signature"),  # without key_id
        ({"self_test": {"inputs": [[1]], "expected": [[1], [2]], "tolerance": 1}}, "self_test"),
        ({"self_test": {"inputs": [[1]], "expected": [[1]], "tolerance": 0}}, "self_test"),
        ({"self_test": {"inputs": [], "expected": [], "tolerance": 1}}, "self_test"),
        ({"self_test": [1]}, "self_test"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], field: str) -> None:
    doc = {**GOOD, **change}
    with pytest.raises(ManifestError) as info:
        parse(json.dumps(doc).encode())
    assert info.value.field == field
    assert f"`{field}`" in str(info.value)


@pytest.mark.parametrize("missing", ["model", "version", "bundle", "sha256", "size", "created"])
def test_missing_fields_are_named(missing: str) -> None:
    doc = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ManifestError, match="missing") as info:
        parse(json.dumps(doc).encode())
    assert info.value.field == missing


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b'{"format": 1, "format": 1}', "twice"),
        (b'{"format": NaN}', "NaN"),
        (b"[" * 100_000, "at most"),
        (b"[" * 50_000, "not JSON"),  # recursion depth, under the size cap
        (b'{"format": 1' + b"1" * 5000 + b"}", "not JSON"),  # integer digit limit
    ],
)
def test_documents_that_are_not_manifests(raw: bytes, needle: str) -> None:
    with pytest.raises(ManifestError, match=needle):
        parse(raw)


def test_sign_and_verify() -> None:
    key = generate_key()
    m = from_mapping(GOOD).signed(key)
    assert m.key_id is not None and m.signature is not None
    parse(m.to_bytes()).verify(key.public_key())
    # Any change to a signed field breaks it, including the key id.
    for change in ({"version": "v3"}, {"sha256": "b" * 64}, {"size": 1}, {"key_id": "0" * 16}):
        tampered = dataclasses.replace(m, **change)
        with pytest.raises(SignatureError):
            tampered.verify(key.public_key())
    # Another key, and no signature at all.
    other = generate_key()
    with pytest.raises(SignatureError, match="signed by key"):
        m.verify(other.public_key())
    with pytest.raises(SignatureError, match="not signed"):
        from_mapping(GOOD).verify(key.public_key())


def test_canonical_bytes_ignore_layout_and_signature() -> None:
    m = from_mapping(GOOD)
    shuffled = json.dumps(dict(reversed(list(GOOD.items()))), indent=7).encode()
    assert parse(shuffled).canonical_bytes() == m.canonical_bytes()
    signed = m.signed(generate_key())
    assert b"signature" not in signed.canonical_bytes()
    assert b"key_id" in signed.canonical_bytes()


def test_key_files_round_trip(tmp_path: Any) -> None:
    key = generate_key()
    (tmp_path / "k.key").write_bytes(private_key_pem(key))
    (tmp_path / "k.pub").write_bytes(public_key_pem(key.public_key()))
    m = from_mapping(GOOD).signed(load_private_key(tmp_path / "k.key"))
    m.verify(load_public_key(str(tmp_path / "k.pub")))
    with pytest.raises(SignatureError, match="cannot read key file"):
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(SignatureError, match="not an Ed25519 public key"):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")


# -- property tests: nothing but a Manifest or a ManifestError, whatever the bytes --------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _parse_or_error(raw: bytes) -> None:
    try:
        m = parse(raw)
    except ManifestError:
        return
    assert isinstance(m, Manifest)
    assert parse(m.to_bytes()) == m


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes(raw: bytes) -> None:
    _parse_or_error(raw)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from([*GOOD, "signature", "key_id", "self_test"]), _json))
def test_good_manifest_with_fields_replaced(changes: dict[str, Any]) -> None:
    _parse_or_error(json.dumps({**GOOD, **changes}).encode())


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=8), st.integers(min_value=0, max_value=400))
def test_corrupted_real_manifest(junk: bytes, at: int) -> None:
    raw = json.dumps(GOOD).encode()
    at %= len(raw)
    _parse_or_error(raw[:at] + junk + raw[at + len(junk) :])
