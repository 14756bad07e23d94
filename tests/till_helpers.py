"""Helpers for the till client tests: the store server in a process on a free port, a seeded checkout stream."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from anoncard import Programme, Service
from anoncard.money import parse_cents
from anoncard.terminals import Terminals

REPO = Path(__file__).resolve().parent.parent
FAILING_SERVER = Path(__file__).with_name("failing_server.py")
CATEGORIES = ("dairy", "fruit", "coffee", "bakery", "wine", "vegetables", "snacks")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_till(home: Path, name: str = "store7-till1", role: str = "till") -> str:
    """A terminal (a till by default) on the server of ``home``; its bearer key (shown once)."""
    with Service.open(home) as svc:
        return Terminals(svc).add(name, role)[1]


class ServerProcess:
    """``anoncard server`` over ``home`` in a process of its own, to be killed with -9 and restarted.

    ``fail_with`` runs tests/failing_server.py instead: every request answered with that status."""

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        *,
        fail_with: int | None = None,
        tls: tuple[Path, Path] | None = None,
        client_ca: Path | None = None,
    ) -> None:
        self.home, self.port, self.fail_with, self.tls = home, port or free_port(), fail_with, tls
        self.client_ca = client_ca
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        if self.fail_with is not None:
            args = [sys.executable, str(FAILING_SERVER), str(self.port), str(self.fail_with)]
        else:
            args = [sys.executable, "-m", "anoncard", "--home", str(self.home), "server", "--host", "127.0.0.1",
                    "--port", str(self.port), "--threads", "2"]  # fmt: skip
            if self.tls is not None:
                args += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
            if self.client_ca is not None:
                args += ["--client-ca", str(self.client_ca)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, cwd=REPO)
        deadline = time.monotonic() + 30
        while True:  # listening once a connection is accepted
            assert self.proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.02)

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.kill()


def make_pki(directory: Path) -> dict[str, Path]:
    """A store CA and two certificates it signs (PEM files): the server's for 127.0.0.1 and a till's.

    Keys are: ``ca``, ``server_cert``, ``server_key``, ``till_cert``, ``till_key``."""
    import ipaddress
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    out: dict[str, Path] = {}

    def build(common: str, key, issuer_key, issuer_name, extensions) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer_name or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical)
        return builder.sign(issuer_key, hashes.SHA256())

    def save(stem: str, key, cert: x509.Certificate) -> None:
        out[f"{stem}_cert"] = directory / f"{stem}.pem"
        out[f"{stem}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{stem}_key"] = directory / f"{stem}.key"
        out[f"{stem}_key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
        out[f"{stem}_key"].chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("anoncard test store CA", ca_key, ca_key, None, [(x509.BasicConstraints(ca=True, path_length=0), True)])
    save("ca", ca_key, ca)
    out["ca"] = out.pop("ca_cert")
    leaf = [(x509.BasicConstraints(ca=False, path_length=None), True)]
    server_key = ec.generate_private_key(ec.SECP256R1())
    save("server", server_key, build("127.0.0.1", server_key, ca_key, ca.subject, [
        *leaf, (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)]))  # fmt: skip
    till_key = ec.generate_private_key(ec.SECP256R1())
    save("till", till_key, build("store7-till1", till_key, ca_key, ca.subject, [
        *leaf, (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)]))  # fmt: skip
    return out


def stream_request(codes: list[str], stream: str, i: int) -> dict:
    """The i-th checkout of a named stream: rebuilt the same in every process."""
    rng = random.Random(f"till-stream/{stream}/{i}")
    lines = [
        {"category": category, "amount": f"{rng.randint(0, 45)}.{rng.randint(1, 99):02d}"}
        for category in rng.sample(CATEGORIES, rng.randint(1, 4))
    ]
    return {"card": rng.choice(codes), "txn": f"{stream}-{i}", "lines": lines}


def expected_points(programme: Programme, requests: list[dict]) -> dict[str, int]:
    """Each card's balance if every request in ``requests`` is credited exactly once."""
    out: dict[str, int] = {}
    for r in requests:
        lines = sorted((ln["category"], parse_cents(ln["amount"], "amount")) for ln in r["lines"])
        out[r["card"]] = out.get(r["card"], 0) + programme.points_for(lines)
    return out
