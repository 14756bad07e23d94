"""``anoncard till``: the terminal commands against a server, the key kept off the command line, the
outbox's status, flush and dead letters, and the offline refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from anoncard import Service
from anoncard.cards import encode, generate
from cli.main import main
from tests.cli_helpers import assert_refused
from tests.till_helpers import ServerProcess, add_till, free_port, make_pki


@pytest.fixture
def cards(home: Path) -> list[str]:
    with Service.open(home) as svc:
        return [s.code for s in svc.issue_cards({"count": 2})]


CODE = encode(generate())  # a well-formed card code no server knows


@pytest.fixture
def key(home: Path) -> str:
    return add_till(home)


def till(url: str | None, outbox: Path, key: str | None, *args: str, input: str | None = None) -> Result:
    """``anoncard till --server URL --outbox OUTBOX ARGS...`` with the key (if any) in ANONCARD_TILL_KEY."""
    env = {"ANONCARD_TILL_KEY": key, "ANONCARD_SERVER": None, "ANONCARD_TILL_OUTBOX": None}
    server = ["--server", url] if url else []
    return CliRunner(env=env).invoke(main, ["till", *server, "--outbox", str(outbox), *args], input=input)


def test_checkout_balance_and_enter_through_the_server_with_the_key_from_the_environment_and_roles_kept(
    home, cards, key, tmp_path
):
    outbox = tmp_path / "outbox.db"
    with ServerProcess(home) as server:
        r = till(server.url, outbox, key, "checkout", "--card", cards[0], "--txn", "c-1", "--line", "dairy=3.49",
                 "--line", "coffee=7.99")  # fmt: skip
        assert r.exit_code == 0, r.output
        assert r.stdout == "c-1: spend 11.48 EUR, points +11, balance 11\n"
        lines = [{"category": "dairy", "amount": "3.49"}, {"category": "coffee", "amount": "7.99"}]
        request = json.dumps({"card": cards[0], "txn": "c-1", "lines": lines})
        again = till(server.url, outbox, key, "checkout", "--json", "--input", "-", input=request)
        assert again.exit_code == 0 and json.loads(again.stdout)["replayed"] is True
        b = till(server.url, outbox, key, "balance", "--card", cards[0])
        assert b.exit_code == 0 and b.stdout.startswith("points 11, visits 1\n")
        forbidden = till(server.url, outbox, key, "enter", "--card", cards[0], "--json")
        assert forbidden.exit_code == 14 and json.loads(forbidden.stdout)["error"]["code"] == "forbidden"
        entrance = add_till(home, "store7-entrance", "entrance")
        e = till(server.url, outbox, entrance, "enter", "--card", cards[0], "--json")
        assert e.exit_code == 0 and "coupons" in json.loads(e.stdout)


def test_the_key_comes_from_a_file_and_without_one_the_command_says_where_to_put_it(home, cards, key, tmp_path):
    outbox = tmp_path / "outbox.db"
    key_file = tmp_path / "till.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    with ServerProcess(home) as server:
        r = till(server.url, outbox, None, "--key-file", str(key_file), "balance", "--card", cards[1])
        assert r.exit_code == 0 and r.stdout.startswith("points 0")
        missing = till(server.url, outbox, None, "balance", "--card", cards[1], "--json")
        assert_refused(missing, exit_code=3, needles=("--key-file FILE or ANONCARD_TILL_KEY",), as_json=True,
                       code="policy_violation")  # fmt: skip
        wrong = till(server.url, outbox, "ak1_not-the-key", "balance", "--card", cards[1])
        assert wrong.exit_code == 13 and wrong.stderr.startswith("Error: ") and "not-the-key" not in wrong.output


def test_offline_a_checkout_is_queued_status_shows_it_and_flush_delivers_it(home, cards, key, tmp_path):
    outbox = tmp_path / "outbox.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    r = till(url, outbox, key, "checkout", "--card", cards[0], "--txn", "q-1", "--line", "wine=20.00")
    assert r.exit_code == 0, r.output
    assert r.stdout == "q-1: queued offline (network_error); sent when the server is back\n"
    status = json.loads(till(None, outbox, None, "status", "--json").stdout)
    assert (status["queued"], status["last_error"], status["dead_letters"]) == (1, "network_error", [])
    assert cards[0] not in json.dumps(status)
    down = till(url, outbox, key, "flush")
    assert down.exit_code == 20 and "1 requests still queued" in down.stderr
    with ServerProcess(home, port):
        flushed = till(url, outbox, key, "flush", "--json")
        assert flushed.exit_code == 0, flushed.output
        want = {"delivered": ["q-1"], "replayed": [], "dead": [], "remaining": 0, "stopped": None}
        assert json.loads(flushed.stdout) == want
        assert till(url, outbox, key, "balance", "--card", cards[0]).stdout.startswith("points 20, visits 1")
    assert till(None, outbox, None, "status").stdout == "queued 0\ndead letters 0\n"


def test_a_dead_letter_is_listed_and_dismissed(home, cards, key, tmp_path):
    outbox = tmp_path / "outbox.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ServerProcess(home, port):
        sold = till(url, outbox, key, "checkout", "--card", cards[0], "--txn", "x-1", "--line", "dairy=1.00")
        assert sold.exit_code == 0, sold.output
    reuse = till(url, outbox, key, "checkout", "--card", cards[0], "--txn", "x-1", "--line", "dairy=2.00")
    assert reuse.exit_code == 0 and "queued offline" in reuse.stdout
    with ServerProcess(home, port):
        assert till(url, outbox, key, "flush").stdout == "delivered 0, dead letters 1, still queued 0\n"
    status = till(None, outbox, None, "status")
    assert "#1 checkout x-1" in status.stdout and "HTTP 409 ledger_error" in status.stdout
    assert till(None, outbox, None, "dismiss", "1").stdout == "dead letter #1 dismissed\n"
    assert till(None, outbox, None, "dismiss", "1").exit_code == 3
    assert till(None, outbox, None, "status").stdout == "queued 0\ndead letters 0\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("redeem", "--card", CODE, "--reward", "coffee", "--txn", "r-1"), "a reward redemption needs the server"),
        (("checkout", "--card", CODE, "--txn", "k-1", "--line", "dairy=1.00", "--coupon", "K1-X"), "coupons"),
        (("balance", "--card", CODE), "a balance needs the server"),
    ],
)
def test_what_needs_the_server_is_refused_offline_with_exit_20_and_not_queued(tmp_path, args, needle):
    outbox = tmp_path / "outbox.db"
    r = till(f"http://127.0.0.1:{free_port()}", outbox, "ak1_unused", *args, "--json")
    assert_refused(r, exit_code=20, needles=("server: unreachable", needle), as_json=True, code="offline")
    assert json.loads(till(None, outbox, None, "status", "--json").stdout)["queued"] == 0


def test_importing_anoncard_does_not_load_the_http_client():
    lazy = ("anoncard.client", "http.client")
    script = f"import sys, anoncard, cli.main\nprint([m for m in {lazy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_till_command_speaks_mutual_tls_with_the_store_ca(home, cards, key, tmp_path):
    pki = make_pki(tmp_path)
    outbox = tmp_path / "outbox.db"
    tls = ["--ca-file", str(pki["ca"]), "--client-cert", str(pki["till_cert"]), "--client-key", str(pki["till_key"])]
    with ServerProcess(home, tls=(pki["server_cert"], pki["server_key"]), client_ca=pki["ca"]) as server:
        r = till(server.url, outbox, key, *tls, "checkout", "--card", cards[0], "--txn", "m-1", "--line", "wine=5.00")
        assert r.exit_code == 0 and r.stdout == "m-1: spend 5.00 EUR, points +5, balance 5\n", r.output
        half = till(server.url, outbox, key, *tls[:4], "balance", "--card", cards[0])
        assert half.exit_code == 3 and "give --client-cert and --client-key together" in half.stderr
