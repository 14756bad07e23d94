"""kill -9 at random moments in a checkout stream: the database stays whole, nothing is half applied,
every acknowledged checkout is stored, and retrying the stream to its end counts each one exactly once."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from anoncard import KeyRing, Programme, Service, init_home
from anoncard.keyring import PRIMARY, RETIRED
from anoncard.money import parse_cents
from anoncard.postgres import PostgresStore
from anoncard.storage import database_url
from tests.conftest import fixed_clock
from tests.crash_stream import DAY, request

pytestmark = pytest.mark.sqlite_only(
    reason=(
    "kills a process writing a SQLite file and checks the file; PostgreSQL's SIGKILL test is in "
    "test_postgres.py"
    )
)

STRESS = os.environ.get("ANONCARD_STRESS") == "1"
RUNS = 50 if STRESS else 20
STREAM = 1500  # longer than a child gets through in 1 s here: most kills land mid-stream
CARDS = 12
SCRIPT = Path(__file__).with_name("crash_stream.py")
REPO = Path(__file__).resolve().parent.parent


def consistency_problems(db: Path) -> list[str]:
    """Everything that would show a half-applied or inconsistent write (empty when all is well).

    No retention purge runs in these tests, so every ledger entry must belong to a document.
    On PostgreSQL (the home ``db`` is in names its database) the same queries run there; its
    foreign keys are always enforced, and amcheck stands in for SQLite's integrity check.
    """
    url = database_url(db.parent)
    conn = sqlite3.connect(db) if url is None else psycopg.connect(url, autocommit=True)
    try:
        problems = []
        if url is None:
            check = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            fk = conn.execute("PRAGMA foreign_key_check").fetchall()
            if fk:
                problems.append(f"foreign_key_check: {fk[:5]}")
        else:
            store = PostgresStore(url)
            check = store.integrity_check()
            store.close()
        if check != ["ok"]:
            problems.append(f"integrity_check: {check[:5]}")
        not_one = [
            row
            for row in conn.execute("SELECT t.id, (SELECT count(*) FROM ledger l WHERE l.txn_id = t.id) FROM txns t")
            if row[1] != 1
        ]
        if not_one:
            problems.append(f"documents without exactly one ledger entry (id, entries): {not_one[:5]}")
        stray = conn.execute(
            "SELECT l.id FROM ledger l LEFT JOIN txns t ON t.id = l.txn_id"
            " WHERE t.id IS NULL OR t.card_id != l.card_id OR t.day != l.day"
        ).fetchall()
        if stray:
            problems.append(f"ledger entries without their document: {stray[:5]}")
        doc_spend = dict(
            conn.execute(
                "SELECT card_id, sum(spend_cents) FROM txns WHERE kind IN ('checkout', 'refund') GROUP BY card_id"
            )
        )
        hist_spend = dict(conn.execute("SELECT card_id, sum(spend_cents) FROM history GROUP BY card_id"))
        visit_spend = dict(conn.execute("SELECT card_id, sum(spend_cents) FROM visits GROUP BY card_id"))
        nonzero = {k: v for k, v in doc_spend.items() if v}
        if {k: v for k, v in hist_spend.items() if v} != nonzero:
            problems.append(f"history spend per card {hist_spend} != documents' spend {doc_spend}")
        if {k: v for k, v in visit_spend.items() if v} != nonzero:
            problems.append(f"visits spend per card {visit_spend} != documents' spend {doc_spend}")
        visits = dict(conn.execute("SELECT card_id, sum(visits) FROM visits GROUP BY card_id HAVING sum(visits) > 0"))
        checkouts = dict(conn.execute("SELECT card_id, count(*) FROM txns WHERE kind = 'checkout' GROUP BY card_id"))
        if visits != checkouts:
            problems.append(f"visits per card {visits} != checkouts per card {checkouts}")
        running: dict[int, int] = {}
        for card_id, txn_id, after, points in conn.execute(
            "SELECT t.card_id, t.id, t.balance_after, l.points FROM txns t JOIN ledger l ON l.txn_id = t.id"
            " ORDER BY t.card_id, t.id"
        ):
            running[card_id] = running.get(card_id, 0) + points
            if running[card_id] != after:
                problems.append(
                    f"card {card_id}: document {txn_id} says balance {after}, ledger sums to {running[card_id]}"
                )
                break
        misused = conn.execute(
            "SELECT c.card_id FROM coupons c JOIN txns t ON t.id = c.redeemed_txn"
            " WHERE t.card_id != c.card_id OR t.kind != 'checkout'"
        ).fetchall()
        if misused:
            problems.append(f"coupons redeemed by another card's or a non-checkout document: {misused[:5]}")
        return problems
    finally:
        conn.close()


def stream_points(codes: list[str], seed: int, n: int, programme: Programme) -> tuple[list[int], dict[str, int]]:
    """Points of each request of the stream, and each card's total if every one counts once."""
    points, totals = [], dict.fromkeys(codes, 0)
    for i in range(n):
        req = request(codes, seed, i)
        p = programme.points_for([(ln["category"], parse_cents(ln["amount"], "amount")) for ln in req["lines"]])
        points.append(p)
        totals[req["card"]] += p
    return points, totals


def stored_prefix(db: Path, ring: KeyRing, n: int) -> int:
    """How many of the stream's documents are stored; fails unless they are exactly s-0 .. s-(k-1)."""
    conn = sqlite3.connect(db)
    try:
        stored = {ref for (ref,) in conn.execute("SELECT ref FROM txns")}
    finally:
        conn.close()
    present = [ring.reference("checkout", f"s-{i}") in stored for i in range(n)]
    k = present.index(False) if False in present else n
    assert not any(present[k:]), f"stored documents are not a prefix of the stream: gap at s-{k}"
    assert len(stored) == k, f"{len(stored) - k} stored documents are not from the stream"
    return k


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """An initialised home with cards, copied for each run (init takes longer than a run)."""
    base = tmp_path_factory.mktemp("crash")
    home = base / "home"
    init_home(home, today=DAY)
    with Service.open(home, clock=fixed_clock) as svc:
        codes = [s.code for s in svc.issue_cards({"count": CARDS})]
    codes_file = base / "codes.txt"
    codes_file.write_text("\n".join(codes))
    return home, codes, codes_file


def test_kill_at_random_moments_then_retry_the_stream(template, tmp_path):
    source, codes, codes_file = template
    programme = Programme.load(source / "programme.toml")
    ring = KeyRing.load(source / "keyring.json")
    mid_stream = 0
    for run in range(RUNS):
        home = tmp_path / f"home-{run}"
        shutil.copytree(source, home)
        db = home / "anoncard.db"
        rng = random.Random(run)
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(home), str(codes_file), str(STREAM), str(run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        time.sleep(rng.uniform(0.05, 1.0))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        printed = out.split()
        assert proc.returncode in (-signal.SIGKILL, 0), f"run {run}: the stream failed by itself:\n{err}"
        assert printed == [f"s-{i}" for i in range(len(printed))], f"run {run}: output out of order"
        if proc.returncode == 0:
            assert len(printed) == STREAM, f"run {run}: exited early\n{err}"
        mid_stream += 0 < len(printed) < STREAM

        # whole, nothing half applied, every acknowledged checkout stored (at most one more in flight)
        assert consistency_problems(db) == [], f"run {run}, killed after {len(printed)} receipts"
        k = stored_prefix(db, ring, STREAM)
        assert len(printed) <= k <= len(printed) + 1, f"run {run}: {len(printed)} printed, {k} stored"

        # the till retries the whole stream: acknowledged ones are replays, the rest count now, once
        points, expected = stream_points(codes, run, STREAM, programme)
        with Service.open(home, clock=fixed_clock, synchronous="NORMAL") as svc:
            for i in range(STREAM):
                r = svc.checkout(request(codes, run, i))
                assert r.replayed == (i < k), f"run {run}: s-{i} replayed={r.replayed}, {k} were stored"
                assert r.points == points[i], f"run {run}: s-{i}"
            balances = {c: svc.balance({"card": c}).points for c in codes}
            txns = svc.store.counts()["txns"]
        assert balances == expected, f"run {run}"
        assert txns == STREAM, f"run {run}"
        assert consistency_problems(db) == [], f"run {run}, after the retries"
        shutil.rmtree(home)
    # the kills did land in the middle of the stream, not only before or after it
    assert mid_stream >= RUNS // 4, f"only {mid_stream} of {RUNS} kills landed mid-stream"


# -- the key ring file under kill -9 -------------------------------------------------------------------

RING_RUNS = 30 if STRESS else 6
RING_CHURN = """
import sys
from anoncard.keyring import KeyRing
from tests.pg_cluster import give_own_database
path = sys.argv[1]
for i in range(100_000):
    ring = KeyRing.load(path)
    ring.rotate(f"d{i}")
    if len(ring.versions) % 3 == 0:
        ring.retire(ring.oldest_verify_only().version)
    ring.save(path)
    print(ring.primary.version, flush=True)
"""


def test_kill_during_key_ring_writes_never_loses_the_primary(tmp_path):
    """A process rotates and retires as fast as it can and is killed at a random moment: the ring file
    always loads (mode 0600, valid), has exactly one primary, and holds every save that returned."""
    path = tmp_path / "keyring.json"
    KeyRing.create("d0").save(path)
    for run in range(RING_RUNS):
        rng = random.Random(f"ring/{run}")
        proc = subprocess.Popen(
            [sys.executable, "-c", RING_CHURN, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
        )
        first = proc.stdout.readline()  # started and saved once, however slow the machine is today
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err.decode()
        saved = [int(v) for v in (first + out).split()]
        assert saved, err.decode()
        ring = KeyRing.load(path)  # readable, and private
        states = [v.state for v in ring.versions]
        assert states.count(PRIMARY) == 1 and states[-1] == PRIMARY, states
        assert ring.primary.material is not None
        # every save that returned is in the file; at most the one in flight is added
        assert saved[-1] <= ring.primary.version <= saved[-1] + 1, (saved[-1], ring.primary.version)
        assert all(v.material is None for v in ring.versions if v.state == RETIRED)
