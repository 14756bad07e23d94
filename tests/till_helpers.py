"""Helpers for the till client tests: a server process on a free port, a seeded checkout stream."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

from anoncard import Programme
from anoncard.money import parse_cents

REPO = Path(__file__).resolve().parent.parent
WIRE_SERVER = Path(__file__).with_name("wire_server.py")
KEY = "till-key-for-tests-0123456789abcdef"
CATEGORIES = ("dairy", "fruit", "coffee", "bakery", "wine", "vegetables", "snacks")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """The HTTP server over ``home`` in a process of its own, to be killed with -9 and restarted."""

    def __init__(
        self, home: Path, port: int | None = None, *, fail_with: int | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.home, self.port, self.fail_with, self.tls = home, port or free_port(), fail_with, tls
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        args = [sys.executable, str(WIRE_SERVER), str(self.home), str(self.port)]
        if self.fail_with is not None:
            args += ["--fail-with", str(self.fail_with)]
        if self.tls is not None:
            args += ["--tls", *map(str, self.tls)]
        env = {**os.environ, "ANONCARD_TILL_KEY": KEY}
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env, cwd=REPO)
        line = self.proc.stdout.readline()
        assert line == b"ready\n", line
        return self

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.kill()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files): the server's, and the till's CA file."""
    import ipaddress
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anoncard test server")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


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
