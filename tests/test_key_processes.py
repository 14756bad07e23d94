"""One authority for key state across processes: an ``anoncard serve`` process, a long-lived library
service and CLI processes that rotate and retire, alone and racing each other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from anoncard import KeyRing, Service
from anoncard.keyring import PRIMARY, RETIRED
from tests.cli_helpers import execute
from tests.conftest import basket, fixed_clock

REPO = Path(__file__).resolve().parent.parent


def anoncard(home: Path, *args: str) -> subprocess.CompletedProcess:
    """``anoncard --home HOME ARGS...`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "anoncard", "--home", str(home), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


class Serve:
    """A running ``anoncard serve``, fed one JSON line at a time through a pipe."""

    def __init__(self, home: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "anoncard", "--home", str(home), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.n = 0

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        return json.loads(line)

    def checkout(self, card: str) -> dict:
        self.n += 1
        return self.ask({"op": "checkout", "card": card, "txn": f"serve-{self.n}", "lines": basket(("dairy", "2.00"))})

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0, self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def serve_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    ok(anoncard(home, "init"))
    return home


def issue(home: Path, count: int) -> list[str]:
    codes = [line.split()[0] for line in ok(anoncard(home, "card", "issue", "--count", str(count))).splitlines()]
    assert len(codes) == count
    return codes


def db_states(home: Path) -> tuple[dict[int, str], dict[int, int]]:
    """Key states and cards per key version, as the database holds them (read by a plain connection)."""
    states = dict(execute(home, "SELECT version, state FROM key_versions"))
    cards = dict(execute(home, "SELECT key_version, count(*) FROM cards GROUP BY key_version"))
    return states, cards


def assert_file_and_database_agree(home: Path) -> dict[int, str]:
    ring = KeyRing.load(home / "keyring.json")
    file_states = {v.version: v.state for v in ring.versions}
    states, cards = db_states(home)
    assert states == file_states
    assert sorted(states) == list(range(1, len(states) + 1)), "a key version is missing"
    assert list(states.values()).count(PRIMARY) == 1
    assert all(v.material is None for v in ring.versions if v.state == RETIRED)
    assert all(v.material is not None for v in ring.versions if v.state != RETIRED)
    assert not [v for v, n in cards.items() if states[v] == RETIRED and n], "cards left under a retired key"
    return states


def test_a_serve_process_follows_rotation_and_retirement_by_the_cli(serve_home):
    home = serve_home
    cards = issue(home, 10)
    serve = Serve(home)
    try:
        assert all(serve.checkout(c)["ok"] for c in cards)
        ok(anoncard(home, "keys", "rotate"))
        seen, unseen = cards[:5], cards[5:]
        for code in seen:  # presented after the rotation: re-linked to the new primary at once
            r = serve.checkout(code)
            assert r["ok"] and r["result"]["relinked"], r
        (new,) = issue(home, 1)  # issued by the CLI under the new primary: known to the old process
        assert serve.checkout(new)["ok"]
        retired = json.loads(ok(anoncard(home, "keys", "retire", "--yes", "--json")))
        assert retired == {"version": 1, "cards_purged": 5}
        for code in [*seen, new]:
            r = serve.checkout(code)
            assert r["ok"] and not r["result"]["relinked"], r
        for code in unseen:
            assert serve.checkout(code)["error"]["code"] == "unknown_card"
    finally:
        serve.close()
    assert assert_file_and_database_agree(home) == {1: RETIRED, 2: PRIMARY}
    assert db_states(home)[1] == {2: 6}


def test_a_long_lived_library_service_never_uses_a_key_the_cli_retired(serve_home):
    home = serve_home
    with Service.open(home, clock=fixed_clock) as svc:
        (old,) = svc.issue_cards({"count": 1})
        ok(anoncard(home, "keys", "rotate"))
        ok(anoncard(home, "keys", "retire", "--yes"))  # the card issued above was never presented: purged
        (fresh,) = svc.issue_cards({"count": 1})
        assert svc.ring.primary.version == 2
        assert db_states(home)[1] == {2: 1}  # issued under the primary the database names
        assert svc.checkout({"card": fresh.code, "txn": "t1", "lines": basket(("dairy", "1.00"))}).points >= 0
        with pytest.raises(Exception, match="unknown card"):
            svc.balance({"card": old.code})
    assert_file_and_database_agree(home)


RACERS = ["rotate", "rotate", "retire", "rotate", "retire"]


def test_concurrent_rotate_and_retire_from_several_processes_lose_no_key_version(serve_home):
    """Several CLI processes rotate and retire at once while a serve process keeps presenting cards:
    afterwards ring file and database agree, every successful rotation added exactly one version, and
    the cards the serve process presents after the last rotation survive every retirement."""
    home = serve_home
    cards = issue(home, 6)
    ok(anoncard(home, "keys", "rotate"))
    serve = Serve(home)
    try:
        for round_ in range(2):
            before = assert_file_and_database_agree(home)
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "anoncard", "--home", str(home), "keys", op, *["--yes"] * (op == "retire")],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=REPO,
                )
                for op in RACERS
            ]
            answers = []
            while any(p.poll() is None for p in procs):
                answers += [serve.checkout(c) for c in cards[:3]]
            results = [(op, p.wait(), p.stdout.read(), p.stderr.read()) for op, p in zip(RACERS, procs, strict=True)]
            for p in procs:
                p.stdout.close()
                p.stderr.close()
            for op, code, out, err in results:  # a retirement may find nothing to retire; nothing else fails
                assert code == 0 or (op == "retire" and code == 6 and "rotate first" in err), (op, code, out, err)
            rotated = sum(1 for op, code, *_ in results if op == "rotate" and code == 0)
            retired = sum(1 for op, code, *_ in results if op == "retire" and code == 0)
            after = assert_file_and_database_agree(home)
            assert len(after) == len(before) + rotated, f"round {round_}: a key version was lost"
            assert list(after.values()).count(RETIRED) == list(before.values()).count(RETIRED) + retired
            assert all(a["ok"] or a["error"]["code"] == "unknown_card" for a in answers), answers
        # the serve process presents some cards after the last rotation; then every old key goes
        alive = [c for c in cards if serve.checkout(c)["ok"]] + issue(home, 2)
        ok(anoncard(home, "keys", "rotate"))
        kept, dropped = alive[::2], alive[1::2]
        assert all(serve.checkout(c)["ok"] for c in kept)
        while anoncard(home, "keys", "retire", "--yes").returncode == 0:
            pass
        states = assert_file_and_database_agree(home)
        primary = next(v for v, s in states.items() if s == PRIMARY)
        assert db_states(home)[1] == {primary: len(kept)}  # on the primary, none under an old key
        for code in kept:
            r = serve.checkout(code)
            assert r["ok"] and not r["result"]["relinked"], r
        for code in dropped:
            assert serve.checkout(code)["error"]["code"] == "unknown_card"
    finally:
        serve.close()


KEY_CHURN = """
import sys
from anoncard import Service
with Service.open(sys.argv[1]) as svc:
    svc.prepare()
    for i in range(10_000):
        if i % 3 == 2:
            print("retired", svc.retire_key().version, flush=True)
        else:
            print("rotated", svc.rotate_keys(), flush=True)
"""


def test_kill_during_key_operations_then_the_next_command_completes_them(serve_home):
    """A process rotates and retires through the service as fast as it can and is killed at a random
    moment; the next command finds file and database in agreement (or brings them there), with every
    acknowledged rotation kept and no card left under a retired key."""
    import random
    import signal
    import time

    home = serve_home
    issue(home, 3)
    for run in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", KEY_CHURN, str(home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
        )
        first = proc.stdout.readline()  # one operation done, however slow the machine is today
        time.sleep(random.Random(run).uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err.decode()
        done = (first + out).decode().split("\n")
        rotations = [int(line.split()[1]) for line in done if line.startswith("rotated")]
        listed = json.loads(ok(anoncard(home, "keys", "list", "--json")))  # the startup step completes
        states = assert_file_and_database_agree(home)
        assert {r["version"]: r["state"] for r in listed} == states
        assert max(states) >= max(rotations), "an acknowledged rotation was lost"
        assert max(states) <= max(rotations) + 1
