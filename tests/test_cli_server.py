"""The terminals commands (add shows the key once, list, revoke) and the server command's start-up checks."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from anoncard import Service
from anoncard.store import SCHEMA_VERSION
from anoncard.terminals import KEY_LENGTH, Terminals, key_bytes
from cli.main import main
from tests.cli_helpers import RULE_ERRORS


def cli(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *args])


def stored_bytes(home) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.iterdir()) if p.name.startswith("anoncard.db"))


def test_terminals_add_prints_the_key_once_and_stores_only_its_digest(home):
    added = cli(home, "terminals", "add", "--name", "store7-till3", "--role", "till")
    assert added.exit_code == 0, added.output
    key = added.stdout.strip()
    assert len(key) == KEY_LENGTH and key.startswith("ak1_")
    assert "not shown again" in added.stderr
    raw = key_bytes(key)
    assert key.encode() not in stored_bytes(home) and raw not in stored_bytes(home)
    with Service.open(home) as svc:
        assert Terminals(svc).authenticate(key).role == "till"
        (digest,) = svc.store.conn.execute("SELECT digest FROM terminals").fetchone()
        assert digest == svc.ring.terminal_digest(raw) and len(digest) == 32
    listing = cli(home, "terminals", "list", "--json")
    assert json.loads(listing.output) == [{"name": "store7-till3", "role": "till", "created": listing_day(home),
                                           "revoked": None}]  # fmt: skip
    assert key not in listing.output and key not in cli(home, "terminals", "list").output
    second = cli(home, "terminals", "add", "--name", "store7-entrance", "--role", "entrance", "--json")
    assert json.loads(second.output)["key"] != key


def listing_day(home) -> str:
    with Service.open(home) as svc:
        return svc.clock().date().isoformat()


def test_revoked_terminals_are_refused_and_their_names_stay_taken(home):
    key = cli(home, "terminals", "add", "--name", "kiosk1", "--role", "kiosk").stdout.strip()
    revoked = cli(home, "terminals", "revoke", "--name", "kiosk1")
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    with Service.open(home) as svc:
        from anoncard.errors import Unauthenticated

        try:
            Terminals(svc).authenticate(key)
            raise AssertionError("a revoked key was accepted")
        except Unauthenticated as exc:
            assert key not in exc.message
        conn = svc.store.conn
        try:
            conn.execute("UPDATE terminals SET revoked_day = NULL")
            raise AssertionError("a revocation was undone")
        except RULE_ERRORS:
            pass
    again = cli(home, "terminals", "add", "--name", "kiosk1", "--role", "kiosk")
    assert again.exit_code == 3 and "exists (or was revoked)" in again.stderr
    assert cli(home, "terminals", "revoke", "--name", "kiosk1").exit_code == 3


def test_bad_terminal_fields_are_refused_by_name_and_nothing_is_stored(home):
    before = stored_bytes(home)
    cases = [
        (["--name", "Erika Mustermann", "--role", "till"], "field 'name'"),
        (["--name", "till+49 30 1234567", "--role", "till"], "field 'name'"),
        (["--name", "till9", "--role", "root"], "field 'role': must be one of till, entrance, kiosk"),
        (["--role", "till"], "field 'name'"),
    ]
    for args, rule in cases:
        r = cli(home, "terminals", "add", *args, "--json")
        assert r.exit_code == 3, r.output
        assert rule in r.stderr and "Erika" not in r.output + r.stderr and "root" not in r.stderr
        assert json.loads(r.stdout)["error"]["code"] == "policy_violation"
    assert stored_bytes(home) == before


def test_server_refuses_tls_options_that_do_not_fit(home, tmp_path):
    cert = tmp_path / "server.pem"
    cert.write_text("not used")
    r = cli(home, "server", "--tls-cert", str(cert), "--port", "0")
    assert r.exit_code == 3 and "--tls-cert and --tls-key go together" in r.stderr


@pytest.mark.sqlite_only(reason="SQLite's numbered migrations of an older file")
def test_a_database_from_before_terminals_gains_the_table(home):
    with Service.open(home) as svc:
        svc.store.conn.executescript("DROP TABLE terminals; PRAGMA user_version = 2;")
    assert cli(home, "terminals", "add", "--name", "till1", "--role", "till").exit_code == 0
    with Service.open(home) as svc:
        assert svc.store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [t.name for t in Terminals(svc).list()] == ["till1"]


def test_the_server_command_serves_with_its_options(home):
    import subprocess
    import sys
    import time

    import httpx

    from anoncard import cards
    from tests.http_helpers import free_port

    key = cli(home, "terminals", "add", "--name", "till1", "--role", "till").stdout.strip()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "anoncard", "--home", str(home), "server", "--port", str(port),
                             "--threads", "2", "--unknown-card-limit", "1", "--unknown-card-window", "30"],
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {key}"}
        guesses = [{"card": cards.generate().code} for _ in range(2)]
        answers = [httpx.post(f"http://127.0.0.1:{port}/v1/balance", json=g, headers=headers) for g in guesses]
        assert [a.status_code for a in answers] == [404, 429]
        assert answers[1].headers["retry-after"] == "30" and "server" not in answers[1].headers
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert key.encode() not in err and b"Traceback" not in err
