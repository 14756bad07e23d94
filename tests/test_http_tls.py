"""HTTPS and mutual TLS, with certificates made here: a CA, a server certificate for 127.0.0.1, client certificates."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from anoncard import errors
from anoncard.http import uvicorn_options
from tests.http_helpers import add_terminals, live_server


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(folder: Path, stem: str, key, cert: x509.Certificate) -> tuple[str, str]:
    key_path, cert_path = folder / f"{stem}.key", folder / f"{stem}.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(cert_path), str(key_path)


def make_ca(folder: Path, common: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common)).issuer_name(_name(common)).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    paths = _write(folder, common, key, cert)
    return key, cert, paths[0]


def make_leaf(folder: Path, stem: str, ca_key, ca_cert, *, server: bool) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder().subject_name(_name(stem)).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                              else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )  # fmt: skip
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return _write(folder, stem, key, builder.sign(ca_key, hashes.SHA256()))


@pytest.fixture
def pki(tmp_path):
    folder = tmp_path / "pki"
    folder.mkdir()
    ca_key, ca_cert, ca_path = make_ca(folder, "store-ca")
    other_key, other_cert, _ = make_ca(folder, "other-ca")
    return {
        "ca": ca_path,
        "server": make_leaf(folder, "server", ca_key, ca_cert, server=True),
        "client": make_leaf(folder, "till3", ca_key, ca_cert, server=False),
        "stranger": make_leaf(folder, "stranger", other_key, other_cert, server=False),
    }


def client_context(pki: dict, identity: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki["ca"])
    if identity is not None:
        ctx.load_cert_chain(*pki[identity])
    return ctx


def test_https_serves_terminals_and_is_verified_against_the_store_ca(home, pki):
    keys = add_terminals(home, till="till")
    cert, key = pki["server"]
    with live_server(home, tls=uvicorn_options(tls_cert=cert, tls_key=key, client_ca=None)) as url:
        assert url.startswith("https://")
        with httpx.Client(base_url=url, verify=client_context(pki, None)) as c:
            r = c.get("/v1/coupons/public-key", headers={"Authorization": f"Bearer {keys['till']}"})
            assert r.status_code == 200 and len(r.json()["ed25519_public_key"]) == 44
        with pytest.raises(httpx.ConnectError), httpx.Client(base_url=url) as untrusting:  # the system CAs
            untrusting.get("/healthz")


def test_mutual_tls_admits_only_clients_with_a_certificate_of_the_store_ca(home, pki):
    keys = add_terminals(home, till="till")
    cert, key = pki["server"]
    options = uvicorn_options(tls_cert=cert, tls_key=key, client_ca=pki["ca"])
    assert options["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    with live_server(home, tls=options) as url:
        with httpx.Client(base_url=url, verify=client_context(pki, "client")) as c:
            for _ in range(20):  # one TLS connection, kept alive
                r = c.get("/v1/coupons/public-key", headers={"Authorization": f"Bearer {keys['till']}"})
                assert r.status_code == 200
            assert c.get("/v1/coupons/public-key").status_code == 401  # the certificate admits; the key authorises
        for identity in (None, "stranger"):
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)), \
                    httpx.Client(base_url=url, verify=client_context(pki, identity)) as refused:  # fmt: skip
                refused.get("/healthz")


def test_tls_options_must_fit_together(pki):
    cert, key = pki["server"]
    for bad in ({"tls_cert": cert, "tls_key": None, "client_ca": None},
                {"tls_cert": None, "tls_key": key, "client_ca": None},
                {"tls_cert": None, "tls_key": None, "client_ca": pki["ca"]}):  # fmt: skip
        with pytest.raises(errors.PolicyViolation):
            uvicorn_options(**bad)
    assert uvicorn_options(tls_cert=None, tls_key=None, client_ca=None) == {}
