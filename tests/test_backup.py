"""Backups taken while terminals write are whole and consistent snapshots; restoring one gives a home
that passes its audit; a round trip restores the balances at backup time; a damaged backup is refused
and changes nothing; a restore re-purges the cards of keys retired since the backup."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import time
import traceback
from pathlib import Path

import pytest

from anoncard import Programme, Service, StoreError, UnknownCard, audit
from anoncard.money import parse_cents
from tests.cli_helpers import db_digest as digest
from tests.conftest import basket, fixed_clock
from tests.test_crash import consistency_problems

pytestmark = pytest.mark.sqlite_only(
    reason=(
    "the backups are SQLite files (page damage, truncation, the online backup API); "
    "PostgreSQL's pg_dump backups are in test_postgres.py"
    )
)

STRESS = os.environ.get("ANONCARD_STRESS") == "1"
BACKUPS = 6 if STRESS else 3  # taken under load
STEP = 150 if STRESS else 40  # checkouts the writers make between two backups
WRITERS = 2
CARDS = 10
DAY = fixed_clock().date()
CTX = multiprocessing.get_context("fork")
PROGRAMME = Programme.default()


def load_request(codes: list[str], worker: int, i: int) -> dict:
    amount = f"{1 + (7 * i + worker) % 40}.{(13 * i) % 100:02d}"
    return {"card": codes[(i + worker) % len(codes)], "txn": f"load{worker}-{i}",
            "lines": basket(("dairy", amount), ("fruit", "1.99"))}  # fmt: skip


def writer(home: str, codes: list[str], worker: int, done, stop, errors) -> None:
    """Check out until told to stop; ``done`` counts the checkouts that returned."""
    try:
        with Service.open(home, clock=fixed_clock) as svc:
            i = 0
            while not stop.is_set():
                svc.checkout(load_request(codes, worker, i))
                i += 1
                with done.get_lock():
                    done.value += 1
    except BaseException:  # noqa: BLE001 - any error in a writer fails the test
        errors.put(traceback.format_exc())


def fresh_home_like(home: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("keyring.json", "programme.toml", "policy.toml"):
        shutil.copy2(home / name, target / name)
    return target


def points_per_card(svc: Service, codes: list[str], txns: list[tuple[str, dict]]) -> dict[str, int]:
    """Each card's points from the documents of ``txns`` that this home holds, recomputed from their lines."""
    out = dict.fromkeys(codes, 0)
    for txn, request in txns:
        if svc.store.find_document(svc.ring.reference("checkout", txn)) is not None:
            lines = [(ln["category"], parse_cents(ln["amount"], "amount")) for ln in request["lines"]]
            out[request["card"]] += PROGRAMME.points_for(lines)
    return out


def test_backups_under_load_are_consistent_snapshots(home, tmp_path):
    with Service.open(home, clock=fixed_clock) as svc:
        codes = [s.code for s in svc.issue_cards({"count": CARDS})]
    done, stop, errors = CTX.Value("i", 0), CTX.Event(), CTX.Queue()
    writers = [CTX.Process(target=writer, args=(str(home), codes, w, done, stop, errors)) for w in range(WRITERS)]
    for w in writers:
        w.start()
    backups, at_backup = [], []
    try:
        with Service.open(home, clock=fixed_clock) as svc:
            for i in range(BACKUPS):
                deadline = time.monotonic() + 60
                while done.value < STEP * (i + 1) and time.monotonic() < deadline and errors.empty():
                    time.sleep(0.005)
                path = tmp_path / f"backup-{i}.db"
                before = done.value
                svc.backup(path)
                at_backup.append((before, done.value))
                backups.append(path)
        deadline = time.monotonic() + 60  # and they go on after the last one
        while done.value <= at_backup[-1][1] + WRITERS and time.monotonic() < deadline and errors.empty():
            time.sleep(0.005)
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=60)
    assert errors.empty(), errors.get()
    assert [w.exitcode for w in writers] == [0] * WRITERS
    total = done.value

    with Service.open(home, clock=fixed_clock) as svc:
        live = svc.store.counts()["txns"]
    assert live == total  # every checkout that returned is stored
    written = [(f"load{w}-{i}", load_request(codes, w, i)) for w in range(WRITERS) for i in range(total)]
    sizes = []
    for i, path in enumerate(backups):
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            refs = {r for (r,) in conn.execute("SELECT ref FROM txns")}
        finally:
            conn.close()
        target = fresh_home_like(home, tmp_path / f"restored-{i}")
        with Service.open(target, clock=fixed_clock) as svc:
            info = svc.restore(path)
            assert info == {"cards": CARDS, "cards_purged_again": 0}
            # a snapshot: each writer's checkouts in it are a prefix of what that writer did
            for w in range(WRITERS):
                present = [svc.ring.reference("checkout", f"load{w}-{j}") in refs for j in range(total)]
                n = present.index(False) if False in present else total
                assert not any(present[n:]), f"backup {i}: writer {w} has a gap at load{w}-{n}"
            sizes.append(len(refs))
            assert at_backup[i][0] <= len(refs) <= at_backup[i][1] + WRITERS  # taken while they wrote
            balances = {c: svc.balance({"card": c}).points for c in codes}
            assert balances == points_per_card(svc, codes, written)
            assert svc.store.counts()["txns"] == len(refs)
        assert consistency_problems(target / "anoncard.db") == []
        report = audit.run(target, today=DAY)
        assert report.passed, [(c.key, c.title, c.evidence, c.details) for c in report.checks if not c.passed]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] < total  # the writers kept going throughout


def test_round_trip_restores_the_state_at_backup_time(home, tmp_path):
    with Service.open(home, clock=fixed_clock) as svc:
        codes = [s.code for s in svc.issue_cards({"count": 4})]
        for i, c in enumerate(codes):
            svc.checkout({"card": c, "txn": f"a{i}", "lines": basket(("dairy", f"{10 + i}.00"), ("fruit", "3.00"))})
        svc.refund({"txn": "a0", "refund_id": "a0-r", "lines": basket(("fruit", "3.00"))})
        svc.checkout({"card": codes[3], "txn": "big", "lines": basket(("dairy", "200.00"))})
        svc.redeem({"card": codes[3], "txn": "a3-x", "reward": "coffee"})
        at_backup = {c: svc.balance({"card": c}) for c in codes}
        counts = svc.store.counts()
        svc.backup(tmp_path / "b.db")
        for i, c in enumerate(codes):
            svc.checkout({"card": c, "txn": f"b{i}", "lines": basket(("wine", "50.00"))})
        svc.refund({"txn": "a1"})
        assert {c: svc.balance({"card": c}) for c in codes} != at_backup
        svc.restore(tmp_path / "b.db")
        assert {c: svc.balance({"card": c}) for c in codes} == at_backup  # points, visits, recent documents
        assert {k: v for k, v in svc.store.counts().items() if k != "events"} == {
            k: v for k, v in counts.items() if k != "events"
        }
        # the documents after the backup are gone: sent again, they count anew; those before are replays
        assert not svc.checkout({"card": codes[0], "txn": "b0", "lines": basket(("wine", "50.00"))}).replayed
        assert svc.checkout(
            {"card": codes[0], "txn": "a0", "lines": basket(("dairy", "10.00"), ("fruit", "3.00"))}
        ).replayed
    assert consistency_problems(home / "anoncard.db") == []
    report = audit.run(home, today=DAY)
    assert report.passed, [(c.key, c.title, c.evidence) for c in report.checks if not c.passed]


def _damage(good: bytes, kind: str, path: Path) -> None:
    if kind == "garbage":
        path.write_bytes(os.urandom(len(good)))
    elif kind == "text":
        path.write_bytes(b"this is not a database\n" * 200)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "header-only":
        path.write_bytes(good[:100])
    elif kind == "one-page":
        path.write_bytes(good[:4096])
    elif kind == "half":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "minus-one-byte":
        path.write_bytes(good[:-1])
    elif kind == "garbage-pages":  # the header intact, every page after the first overwritten
        path.write_bytes(good[:4096] + os.urandom(len(good) - 4096))
    elif kind == "other-schema":
        path.write_bytes(good)
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
    elif kind == "not-anoncard":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (x)")
        conn.close()
    elif kind == "directory":
        path.mkdir()
    else:
        assert kind == "missing"


@pytest.mark.parametrize(
    "kind",
    ["garbage", "text", "empty", "header-only", "one-page", "half", "minus-one-byte", "garbage-pages",
     "other-schema", "not-anoncard", "directory", "missing"],
)  # fmt: skip
def test_a_damaged_backup_is_refused_and_changes_nothing(home, tmp_path, kind):
    with Service.open(home, clock=fixed_clock) as svc:
        codes = [s.code for s in svc.issue_cards({"count": 3})]
        for i in range(30):
            svc.checkout({"card": codes[i % 3], "txn": f"t{i}", "lines": basket(("dairy", f"{i + 1}.00"))})
        svc.backup(tmp_path / "good.db")
        for i in range(3):
            svc.checkout({"card": codes[i], "txn": f"after{i}", "lines": basket(("fruit", "2.00"))})
        good = (tmp_path / "good.db").read_bytes()
        assert len(good) > 3 * 4096
        bad = tmp_path / "bad.db"
        _damage(good, kind, bad)
        dump, files = list(svc.store.conn.iterdump()), digest(home)
        balances = {c: svc.balance({"card": c}).points for c in codes}
        with pytest.raises(StoreError):
            svc.restore(bad)
        assert list(svc.store.conn.iterdump()) == dump
        assert digest(home) == files  # not a byte of the database (or its WAL) written
        assert {c: svc.balance({"card": c}).points for c in codes} == balances
        svc.checkout({"card": codes[0], "txn": "still-works", "lines": basket(("dairy", "1.00"))})
    assert consistency_problems(home / "anoncard.db") == []


@pytest.mark.parametrize("when", ["before-rotation", "after-rotation"])
def test_restore_purges_the_cards_of_keys_retired_since_the_backup(home, tmp_path, when):
    """Six cards on key v1. "after-rotation": v2 is primary and cards 0-2 were re-linked to it
    before the backup. Then card 3 is seen (re-linked after the backup) and v1 is retired.
    The restored database has cards 3-5 (or all six) on v1: they are purged again."""
    with Service.open(home, clock=fixed_clock) as svc:
        codes = [s.code for s in svc.issue_cards({"count": 6})]
        for i, c in enumerate(codes):
            svc.checkout({"card": c, "txn": f"o{i}", "lines": basket(("dairy", f"{3 + i}.00"))})
        if when == "after-rotation":
            svc.rotate_keys()
            for i in range(3):
                assert svc.balance({"card": codes[i]}).relinked
        survivors = codes[:3] if when == "after-rotation" else []
        at_backup = {c: svc.balance({"card": c}).points for c in survivors}
        svc.backup(tmp_path / "b.db")
        if when == "before-rotation":
            svc.rotate_keys()
        assert svc.balance({"card": codes[3]}).relinked
        retired = svc.retire_key()
        assert retired.cards_purged == (2 if when == "after-rotation" else 5)
        info = svc.restore(tmp_path / "b.db")
        assert info == {"cards": len(survivors), "cards_purged_again": 6 - len(survivors)}
        for c in codes:
            if c in survivors:
                assert svc.balance({"card": c}).points == at_backup[c]
            else:
                with pytest.raises(UnknownCard):
                    svc.balance({"card": c})
                with pytest.raises(UnknownCard):
                    svc.checkout({"card": c, "txn": f"late-{c[-6:]}", "lines": basket(("dairy", "1.00"))})
        key_states = svc.store.key_states()
    assert key_states == {1: "retired", 2: "primary"}
    conn = sqlite3.connect(home / "anoncard.db")
    try:  # nothing of the purged cards is left anywhere
        cards = {r for (r,) in conn.execute("SELECT id FROM cards")}
        for table in ("txns", "ledger", "history", "visits", "affinity", "coupons"):
            held = {r for (r,) in conn.execute(f"SELECT DISTINCT card_id FROM {table}")}
            assert held <= cards, table
        assert conn.execute("SELECT count(*) FROM cards WHERE key_version = 1").fetchone() == (0,)
    finally:
        conn.close()
    assert consistency_problems(home / "anoncard.db") == []
    report = audit.run(home, today=DAY)
    assert report.passed, [(c.key, c.title, c.evidence) for c in report.checks if not c.passed]


def test_backup_refuses_to_overwrite(home, tmp_path):
    with Service.open(home, clock=fixed_clock) as svc:
        (tmp_path / "exists.db").write_bytes(b"keep me")
        with pytest.raises(StoreError):
            svc.backup(tmp_path / "exists.db")
    assert (tmp_path / "exists.db").read_bytes() == b"keep me"
