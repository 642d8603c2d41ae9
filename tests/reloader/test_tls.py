"""HTTPS stores: certificates are verified; a private CA is configured, never skipped."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reloader.agent import HotModel
from reloader.errors import SourceError
from reloader.sources import open_source
from tests.support.http_store import HttpStore
from tests.support.stores import Versions, publish


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_certificates_are_verified(tmp_path: Path, versions: Versions, wine: Any) -> None:
    cert, key = _self_signed(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    server = HttpStore(root, token="t", tls=(cert, key))
    try:
        url = server.url("wine")
        assert url.startswith("https://")
        with open_source(url, token="t", verify=str(cert)) as source:
            publish(source, versions.make("v1", "v1"))
        # An unknown certificate is refused with a clear error...
        with pytest.raises(SourceError, match="TLS verification failed"):
            HotModel(url, cache_dir=tmp_path / "c", watch=False).start()
        # ...and accepted once its CA is configured.
        options = {"verify": str(cert)}
        with HotModel(url, cache_dir=tmp_path / "c", source_options=options) as hm:
            assert hm.predict_versioned(wine.x[:1]).version == "v1"
    finally:
        server.stop()
