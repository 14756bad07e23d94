"""Schema migrations: a database written by an older anoncard opens, and restores, as the current schema."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from anoncard import Service
from anoncard.store import SCHEMA_VERSION, Store
from tests.conftest import basket, fixed_clock

pytestmark = pytest.mark.sqlite_only(
    reason=(
    "SQLite's own migrations, file modes and constraints; PostgreSQL's are in test_postgres.py"
    )
)


def _indexes(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ledger'"))
    finally:
        conn.close()


def _as_schema_1(db: Path) -> None:
    """Turn a current database back into what schema version 1 wrote."""
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        DROP INDEX ledger_one_per_document;
        DROP INDEX ledger_card_points;
        CREATE UNIQUE INDEX idx_ledger_card_id_txn_id ON ledger (card_id, txn_id);
        PRAGMA user_version = 1;
        """
    )
    conn.close()


def _shop(home: Path) -> tuple[str, int]:
    with Service.open(home, clock=fixed_clock, synchronous="NORMAL") as svc:
        (card,) = svc.issue_cards({"count": 1})
        for i in range(3):
            svc.checkout({"card": card.code, "txn": f"t{i}", "lines": basket(("dairy", "40.00"))})
        return card.code, svc.balance({"card": card.code}).points


def test_a_schema_1_database_is_migrated_on_open(home):
    code, points = _shop(home)
    db = home / "anoncard.db"
    _as_schema_1(db)
    assert "idx_ledger_card_id_txn_id" in _indexes(db)

    with Service.open(home, clock=fixed_clock, synchronous="NORMAL") as svc:
        assert svc.store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert svc.balance({"card": code}).points == points
        plan = svc.store.conn.execute("EXPLAIN QUERY PLAN SELECT sum(points) FROM ledger WHERE card_id = 1").fetchall()
        assert "COVERING INDEX ledger_card_points" in plan[0][3]
        receipt = svc.checkout({"card": code, "txn": "t9", "lines": basket(("dairy", "1.00"))})
        assert receipt.balance == points + 1
    indexes = _indexes(db)
    assert "idx_ledger_card_id_txn_id" not in indexes
    assert {"ledger_one_per_document", "ledger_card_points"} <= set(indexes)


def test_one_ledger_entry_per_document_is_still_enforced(home):
    _shop(home)
    store = Store(home / "anoncard.db")
    try:
        txn_id, card_id = store.conn.execute("SELECT id, card_id FROM txns LIMIT 1").fetchone()
        with pytest.raises(sqlite3.IntegrityError, match="ledger.txn_id"):
            store.conn.execute(
                "INSERT INTO ledger (card_id, txn_id, points, day) VALUES (?, ?, 5, '2015-03-02')", (card_id, txn_id)
            )
    finally:
        store.close()


def test_a_schema_1_backup_restores_as_the_current_schema(home, tmp_path):
    code, points = _shop(home)
    with Service.open(home, clock=fixed_clock, synchronous="NORMAL") as svc:
        svc.backup(tmp_path / "old.db")
    _as_schema_1(tmp_path / "old.db")
    with Service.open(home, clock=fixed_clock, synchronous="NORMAL") as svc:
        svc.checkout({"card": code, "txn": "after-backup", "lines": basket(("dairy", "5.00"))})
        svc.restore(tmp_path / "old.db")
        assert svc.store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert svc.balance({"card": code}).points == points
    assert "ledger_card_points" in _indexes(home / "anoncard.db")


def test_database_files_are_readable_by_their_owner_only(tmp_path):
    from anoncard import init_home

    old = os.umask(0o022)  # the usual umask: new files would be world-readable
    try:
        home = tmp_path / "home"
        init_home(home)
        with Service.open(home) as svc:
            (card,) = svc.issue_cards({"count": 1})
            svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "4.00"))})
            files = sorted(p for p in home.iterdir() if p.name.startswith("anoncard.db"))
            assert {p.name for p in files} >= {"anoncard.db", "anoncard.db-wal", "anoncard.db-shm"}
            loose = {p.name: oct(p.stat().st_mode & 0o777) for p in files if p.stat().st_mode & 0o077}
            assert loose == {}
    finally:
        os.umask(old)


def test_coupons_of_an_older_database_are_dropped_as_they_were_keyed_by_the_printed_id(home):
    """Schema 5 stores a coupon under a keyed digest; the database has no key to re-key the
    rows of schema 2, which hold the id printed on the slip, so they go (they live a day)."""
    from datetime import timedelta

    from anoncard import coupons as cc
    from anoncard.errors import CouponError

    with Service.open(home, clock=fixed_clock, synchronous="NORMAL") as svc:
        (card,) = svc.issue_cards({"count": 1})
        for i in range(4):
            svc.clock = lambda i=i: fixed_clock() - timedelta(days=10 - i)
            svc.checkout({"card": card.code, "txn": f"h{i}", "lines": basket(("dairy", "4.00"), ("coffee", "6.00"))})
        svc.clock = fixed_clock
        svc.refresh_stats()
        printed = svc.enter({"card": card.code}).coupons
        ids = {cc.verify(c.code, svc.ring.coupon_public_key()).id: None for c in printed}
        ids = {cid: svc.ring.coupon_digest(cid) for cid in ids}
        coupon = printed[0]
    db = home / "anoncard.db"
    conn = sqlite3.connect(db)
    conn.executescript(  # what schema 2 wrote: the printed id as the key, no sealed id
        """
        DROP TRIGGER coupons_single_use;
        ALTER TABLE coupons DROP COLUMN sealed;
        PRAGMA user_version = 2;
        """
    )
    for cid, digest in ids.items():
        conn.execute("UPDATE coupons SET id = ? WHERE id = ?", (cid, digest))
    assert conn.execute("SELECT count(*) FROM coupons").fetchone()[0] == len(ids)
    conn.commit()
    conn.close()
    with Service.open(home, clock=fixed_clock, synchronous="NORMAL") as svc:
        assert svc.store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert svc.store.counts()["coupons"] == 0
        assert "sealed" in svc.store.schema()["coupons"]
        with pytest.raises(CouponError, match="not issued by this store"):
            svc.checkout({"card": card.code, "txn": "c1", "lines": basket(("dairy", "4.00"), ("coffee", "6.00")),
                          "coupons": [coupon.code]})  # fmt: skip
        fresh = svc.enter({"card": card.code}).coupons
        assert fresh and all(c.new for c in fresh)
        trigger = svc.store.conn.execute("SELECT sql FROM sqlite_master WHERE name = 'coupons_single_use'").fetchone()
        assert "sealed" in trigger[0]
