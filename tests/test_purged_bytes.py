"""Purged means gone from the file: after a retirement and after a retention purge, what was deleted is
in neither the database file nor its WAL, although another connection to the file is open."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from anoncard import KeyRing, Programme, Service
from anoncard.policy import Policy
from anoncard.store import Store
from tests.conftest import DAY, basket, fixed_clock, on

pytestmark = pytest.mark.sqlite_only(
    reason=(
    "SQLite's secure_delete and WAL bytes; what PostgreSQL can promise is in docs/scaling.md"
    )
)


def file_bytes(home: Path) -> bytes:
    db = home / "anoncard.db"
    wal = home / "anoncard.db-wal"
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@pytest.fixture
def other_connection(home: Path):
    """A second connection to the database, open (and idle) through the whole test."""
    conn = sqlite3.connect(home / "anoncard.db")
    conn.execute("SELECT count(*) FROM cards").fetchone()
    yield conn
    conn.close()


def test_a_retired_card_leaves_no_bytes_with_another_connection_open(home, other_connection):
    with Service.open(home, clock=fixed_clock) as svc:
        gone, kept = svc.issue_cards({"count": 2})
        token = KeyRing.load(home / "keyring.json").primary.token(gone)
        ref = svc.ring.reference("checkout", "gone-1")
        svc.checkout({"card": gone.code, "txn": "gone-1", "lines": basket(("fish", "14.99"), ("dairy", "1.00"))})
        svc.checkout({"card": kept.code, "txn": "kept-1", "lines": basket(("dairy", "2.00"))})
        svc.refresh_stats()  # the store-wide aggregates name the rare category too
        assert token in file_bytes(home) and b"fish" in file_bytes(home) and ref in file_bytes(home)
        svc.rotate_keys()
        svc.checkout({"card": kept.code, "txn": "kept-2", "lines": basket(("dairy", "2.00"))})
        retired = svc.retire_key()
        assert (retired.cards_purged, retired.wal_cleared) == (1, True)
        data = file_bytes(home)
        assert token not in data
        assert b"fish" not in data
        assert ref not in data
        assert svc.category_stats().shares.keys() == {"dairy"}
    assert other_connection.execute("SELECT count(*) FROM cards").fetchone()[0] == 1


def test_a_retention_purge_leaves_no_bytes_with_another_connection_open(home, other_connection):
    old_day = DAY - timedelta(days=Policy.default().documents_days + 10)
    with Service.open(home, clock=fixed_clock) as svc:
        (card,) = svc.issue_cards({"count": 1})
        ref = svc.ring.reference("checkout", "old-1")
        on(svc, old_day).checkout({"card": card.code, "txn": "old-1", "lines": basket(("dairy", "1.00"))})
        on(svc, DAY).checkout({"card": card.code, "txn": "new-1", "lines": basket(("dairy", "1.00"))})
        assert ref in file_bytes(home)
        counts = svc.purge()
        assert counts["documents compacted"] == 1 and "wal cleared" not in counts
        assert ref not in file_bytes(home)
    assert other_connection.execute("SELECT count(*) FROM txns").fetchone()[0] == 1


def test_a_reader_holding_a_snapshot_keeps_the_wal_and_the_retirement_says_so(home, tmp_path):
    """A reader inside a transaction pins the WAL frames it may still read: the checkpoint cannot
    empty the WAL, and the retirement reports it instead of claiming the bytes are gone."""
    store = Store(home / "anoncard.db", busy_timeout_ms=100)
    ring = KeyRing.load(home / "keyring.json")
    programme, policy = Programme.load(home / "programme.toml"), Policy.load(home / "policy.toml")
    with Service(store, ring, programme, policy, ring_path=home / "keyring.json", clock=fixed_clock) as svc:
        svc.issue_cards({"count": 1})
        svc.rotate_keys()
        reader = sqlite3.connect(home / "anoncard.db")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM cards").fetchone()
        try:
            retired = svc.retire_key()
        finally:
            reader.rollback()
            reader.close()
        assert (retired.cards_purged, retired.wal_cleared) == (1, False)
        assert retired.to_dict() == {"version": 1, "cards_purged": 1, "wal_cleared": False}
        assert svc.store.checkpoint()  # once the reader is gone, the next checkpoint completes
