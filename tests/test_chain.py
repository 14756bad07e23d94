"""A chain: several store servers, each with its own home and a copy of the key ring, in front of one
database. A key rotation reaches the database at once and the other hosts' ring copies a moment later;
meanwhile those servers ask terminals to retry (HTTP 503), and no checkout is lost or counted twice."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from anoncard import Programme, Service, audit
from anoncard.client import Backoff, TillClient
from anoncard.errors import KeyRingBehind, UnknownCard
from tests.http_helpers import add_terminals, live_server
from tests.test_crash import consistency_problems
from tests.till_helpers import REPO, ServerProcess, add_till, expected_points, stream_request

STRESS = os.environ.get("ANONCARD_STRESS") == "1"
TILLS, PER_TILL, ROUNDS = (8, 500, 3) if STRESS else (4, 60, 1)
CARDS = 20


def checkout(code: str, txn: str) -> dict:
    return {"card": code, "txn": txn, "lines": [{"category": "dairy", "amount": "12.50"}]}


def test_a_server_whose_key_ring_copy_is_behind_asks_terminals_to_retry(home, tmp_path):
    """Another server rotated: the database names a key this host's ring file lacks. The server answers
    503 keyring_behind (not a refusal), the till keeps the sale in its outbox, and once the new ring is
    copied here the replay counts it once, re-linked to the new key."""
    key = add_terminals(home, till1="till")["till1"]
    with Service.open(home) as svc:
        (card,) = svc.issue_cards({"count": 1})
    ring = home / "keyring.json"
    with live_server(home) as url, TillClient(url, key, tmp_path / "outbox.db", backoff=Backoff(base=0.01)) as till:
        assert not till.checkout(checkout(card.code, "t1")).queued
        behind = ring.read_bytes()
        with Service.open(home) as other:  # the rotation, as the server of another host makes it
            assert other.rotate_keys() == 2
        current = ring.read_bytes()
        ring.write_bytes(behind)  # this host's copy has not been replaced yet
        answer = httpx.post(f"{url}/v1/checkout", json=checkout(card.code, "t2"),
                            headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "keyring_behind"
        assert card.code not in answer.text
        sent = till.checkout(checkout(card.code, "t3"))
        assert sent.queued and sent.reason == "keyring_behind"  # kept for a retry, not refused
        ring.write_bytes(current)  # the copy arrives
        report = till.flush(force=True)
        assert report.remaining == 0 and report.dead == [], report
        again = till.checkout(checkout(card.code, "t2"))
        assert not again.queued and again.result["replayed"] is False  # the 503 stored nothing
    with Service.open(home) as svc:
        assert svc.store.counts()["txns"] == 3
        assert {v["version"]: v["cards"] for v in svc.list_keys()} == {1: 0, 2: 1}  # re-linked to v2
        receipt = svc.checkout(checkout(card.code, "t3"))
        assert receipt.replayed and receipt.balance == 2 * receipt.points  # t1, then t3 from the outbox
        assert svc.balance({"card": card.code}).points == 3 * receipt.points


# -- two store servers while keys rotate and retire ----------------------------------------------------


def anoncard(home: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "anoncard", "--home", str(home), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def copy_ring(source: Path, dest: Path, tmp: Path) -> None:
    """What the deployment does after a key operation: export the ring on the host that made it and
    put it in place on another host, atomically (the server there reads it at its next request)."""
    export = tmp / f"ring-{time.monotonic_ns()}.json"
    anoncard(source, "keys", "export", str(export))
    os.replace(export, dest / "keyring.json")


def second_host(home: Path, tmp: Path) -> Path:
    """Another server host's home: the programme, the policy and a copy of the key ring; the database
    is the same one (``ANONCARD_DATABASE_URL``)."""
    other = tmp / "host-b"
    other.mkdir(mode=0o700)
    for name in ("programme.toml", "policy.toml"):
        shutil.copy2(home / name, other / name)
    copy_ring(home, other, tmp)
    return other


class Till(threading.Thread):
    """A till sending its stream to the two servers in turn; a request that fails (a 503, or no
    answer) is sent again with the same document number, to the other server; an acknowledged one
    is sometimes sent again too, and must come back as a replay of the same receipt."""

    def __init__(self, t: int, urls: list[str], key: str, codes: list[str], stop: threading.Event) -> None:
        super().__init__()
        self.t, self.urls, self.codes, self.stop = t, urls, codes, stop
        self.headers = {"Authorization": f"Bearer {key}"}
        self.acked: dict[str, tuple[int, int]] = {}  # txn -> (points, balance)
        self.retried: dict[str, int] = {}  # error code -> retries
        self.problems: list[str] = []

    def send(self, client: httpx.Client, request: dict, i: int) -> dict:
        for attempt in range(2000):
            url = self.urls[(i + attempt) % len(self.urls)]
            try:
                answer = client.post(f"{url}/v1/checkout", json=request, headers=self.headers)
            except httpx.TransportError:
                self.retried["no_answer"] = self.retried.get("no_answer", 0) + 1
                time.sleep(0.02)
                continue
            if answer.status_code == 200:
                return answer.json()
            code = answer.json()["error"]["code"]
            if answer.status_code != 503:
                raise AssertionError(f"{request['txn']}: HTTP {answer.status_code} {code}")
            self.retried[code] = self.retried.get(code, 0) + 1
            time.sleep(0.02)
        raise AssertionError(f"{request['txn']}: never acknowledged")

    def request(self, i: int) -> dict:
        """The i-th checkout of this till: rebuilt the same every time; every card, again and again."""
        return {**stream_request(self.codes, f"till{self.t}", i), "card": self.codes[(self.t * 7 + i) % CARDS]}

    def run(self) -> None:
        rng = random.Random(self.t)
        try:
            with httpx.Client(timeout=30) as client:
                i = 0
                while i < PER_TILL or not self.stop.is_set():
                    r = self.send(client, self.request(i), i)
                    assert not r["replayed"], i
                    self.acked[self.request(i)["txn"]] = (r["points"], r["balance"])
                    if rng.random() < 0.2:  # an acknowledged document number again: the original receipt
                        j = rng.randrange(i + 1)
                        again = self.send(client, self.request(j), j + 1)
                        assert again["replayed"], j
                        assert (again["points"], again["balance"]) == self.acked[self.request(j)["txn"]], j
                    i += 1
        except BaseException as exc:  # noqa: BLE001 - any failure at all is what this test looks for
            self.problems.append(repr(exc))
            self.stop.set()

    def requests(self) -> list[dict]:
        return [self.request(i) for i in range(len(self.acked))]


def cards_under_old_keys(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM cards WHERE key_version < (SELECT max(version) FROM key_versions)"
        ).fetchone()[0]


@pytest.mark.postgres_only
def test_two_store_servers_take_checkouts_while_keys_rotate_and_retire(home, database, tmp_path):
    """Two ``anoncard server`` processes, each over its own home with a copy of the key ring, share one
    database; tills send to both. The operator rotates on host A, copies the ring to host B, retires
    once every card was presented again, copies again. Every acknowledged checkout is stored once,
    balances are exact, every card is still found after the retirements (re-linked), the audit passes."""
    with Service.open(home) as svc:
        codes = [s.code for s in svc.issue_cards({"count": CARDS})]
    key = add_till(home)
    host_b = second_host(home, tmp_path)
    servers = [ServerProcess(home).start(), ServerProcess(host_b).start()]
    stop = threading.Event()
    tills = [Till(t, [s.url for s in servers], key, codes, stop) for t in range(TILLS)]
    retirements = []
    try:
        for till in tills:
            till.start()
        for _round in range(ROUNDS):
            time.sleep(0.5)
            anoncard(home, "keys", "rotate")
            time.sleep(0.5)  # host B's copy is still the old ring: its server asks the tills to retry
            copy_ring(home, host_b, tmp_path)
            deadline = time.monotonic() + 120
            while cards_under_old_keys(database) and time.monotonic() < deadline and not stop.is_set():
                time.sleep(0.05)  # the tills present every card again: each is re-linked
            assert cards_under_old_keys(database) == 0, "a card was not re-linked"
            retirements.append(json.loads(anoncard(home, "keys", "retire", "--yes", "--json")))
            copy_ring(home, host_b, tmp_path)
        stop.set()
        for till in tills:
            till.join(timeout=600)
    finally:
        stop.set()
        for server in servers:
            server.kill()
    assert [t.problems for t in tills] == [[]] * TILLS
    assert all(len(t.acked) >= PER_TILL for t in tills)
    retried = {code for t in tills for code in t.retried}
    assert "keyring_behind" in retried, "host B was never behind: the window was not exercised"
    assert [r["cards_purged"] for r in retirements] == [0] * ROUNDS  # every card was seen since the rotation

    sent = [r for t in tills for r in t.requests()]
    want = expected_points(Programme.load(home / "programme.toml"), sent)
    for h in (home, host_b):
        with Service.open(h) as svc:
            assert {c: svc.balance({"card": c}).points for c in codes} == {c: want.get(c, 0) for c in codes}
            for t in tills:  # every acknowledged checkout is stored, with the points its receipt said
                for txn, (points, _balance) in t.acked.items():
                    doc = svc.store.find_document(svc.ring.reference("checkout", txn))
                    assert doc is not None and doc.points == points, txn
            assert svc.store.counts()["txns"] == len(sent)  # nothing twice
            keys = {v["version"]: (v["state"], v["cards"]) for v in svc.list_keys()}
        assert keys[ROUNDS + 1] == ("primary", CARDS) and all(s == "retired" for s, _n in list(keys.values())[:-1])
    assert (home / "keyring.json").read_bytes() == (host_b / "keyring.json").read_bytes()
    assert consistency_problems(home / "anoncard.db") == []
    report = audit.run(home)
    assert report.passed, report.to_markdown()


def rotate_at_once(svc: Service, barrier: threading.Barrier, outcomes: dict, name: str) -> None:
    barrier.wait(timeout=30)
    try:
        outcomes[name] = svc.rotate_keys()
    except KeyRingBehind:
        outcomes[name] = "behind"


@pytest.mark.postgres_only
def test_operators_rotating_on_two_hosts_at_once_never_fork_the_key_ring(home, tmp_path):
    """Each host has its own ring file and its own file lock. Two rotations started at the same moment
    on two hosts run one after the other (the database's key-operation lock); the second finds its
    ring behind and is refused, instead of adding the same version with other key material. After
    the winner's ring is copied over, a card re-linked by either host is found by both."""
    host_b = second_host(home, tmp_path)
    with Service.open(home) as svc:
        (card,) = svc.issue_cards({"count": 1})
    for round_ in range(4):
        services = {"a": Service.open(home), "b": Service.open(host_b)}
        barrier, outcomes = threading.Barrier(2), {}
        threads = [threading.Thread(target=rotate_at_once, args=(svc, barrier, outcomes, name))
                   for name, svc in services.items()]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for svc in services.values():
            svc.close()
        assert sorted(map(str, outcomes.values())) == sorted([str(round_ + 2), "behind"]), outcomes
        winner = home if outcomes["a"] != "behind" else host_b
        copy_ring(winner, host_b if winner == home else home, tmp_path)
        for h in (host_b, home) if round_ % 2 else (home, host_b):  # re-linked by one, found by the other
            with Service.open(h) as svc:
                assert svc.balance({"card": card.code}).points == 0
    assert (home / "keyring.json").read_bytes() == (host_b / "keyring.json").read_bytes()


@pytest.mark.postgres_only
def test_a_card_presented_while_another_server_re_links_it_is_found(home, database):
    """Server A re-links a card to the new primary key; server B presents the same card meanwhile.
    B's look-up under the new token misses (not committed yet), its look-up under the old token
    waits for A's row lock and then no longer matches: B must look again, not answer unknown_card."""
    with Service.open(home) as svc:
        (card,) = svc.issue_cards({"count": 1})
        svc.rotate_keys()
        (version, token), _old = svc.ring.tokens(card)
    relinking = psycopg.connect(database)  # server A's transaction, between its re-link and its commit
    relinking.execute("UPDATE cards SET token = %s, key_version = %s", (token, version))
    found: dict = {}

    def present() -> None:
        with Service.open(home) as server_b:
            try:
                found["points"] = server_b.balance({"card": card.code}).points
            except UnknownCard as exc:
                found["error"] = exc.message

    thread = threading.Thread(target=present)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive(), found  # waiting for the card row A holds
    relinking.commit()
    relinking.close()
    thread.join(timeout=30)
    assert found == {"points": 0}
