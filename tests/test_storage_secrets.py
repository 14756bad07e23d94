"""The database never holds a card secret or a card code, in any common encoding."""

from __future__ import annotations

import base64
import sqlite3

import pytest

from anoncard import Service, cards
from tests.conftest import basket, fixed_clock

pytestmark = pytest.mark.sqlite_only(
    reason=(
    "reads the SQLite file and its WAL byte by byte"
    )
)


def forms(secret: cards.CardSecret) -> list[bytes]:
    raw = secret.to_bytes()
    compact = cards.encode(secret)
    out = [
        raw,
        raw.hex().encode(),
        raw.hex().upper().encode(),
        base64.b32encode(raw).rstrip(b"="),
        base64.b64encode(raw).rstrip(b"="),
        compact.encode(),
        compact.lower().encode(),
        secret.code.encode(),
        compact[2:-1].encode(),  # the data symbols alone
        str(secret.value).encode(),
    ]
    return out + [f.decode("latin-1").encode("utf-16-le") for f in out]


def test_no_secret_in_database_or_wal(home):
    svc = Service.open(home, clock=fixed_clock)
    issued = svc.issue_cards({"count": 20})
    for i, s in enumerate(issued):
        svc.checkout(
            {"card": s.code, "txn": f"store1-till1-{i:04d}", "lines": basket(("dairy", "3.49"), ("fruit", "30"))}
        )
        svc.checkout(
            {
                "card": cards.format_code(cards.encode(s)).lower(),
                "txn": f"store1-till1-{i:04d}",
                "lines": basket(("fruit", "30"), ("dairy", "3.49")),
            }
        )
    svc.rotate_keys()
    for s in issued[:10]:
        svc.balance({"card": s.code})
    # read the files while the connection is open: the WAL holds the recent pages
    db_bytes = (home / "anoncard.db").read_bytes()
    wal = home / "anoncard.db-wal"
    wal_bytes = wal.read_bytes() if wal.exists() else b""
    assert len(db_bytes) > 0 and len(wal_bytes) > 0
    for s in issued:
        for form in forms(s):
            assert form not in db_bytes
            assert form not in wal_bytes
    # and no till document number reaches the file either (they name store and till)
    assert b"store1-till1" not in db_bytes + wal_bytes
    svc.close()
    db_bytes = (home / "anoncard.db").read_bytes()
    for s in issued:
        for form in forms(s):
            assert form not in db_bytes


def test_database_holds_only_token_and_key_version_per_card(home):
    with Service.open(home, clock=fixed_clock) as svc:
        svc.issue_cards({"count": 3})
    conn = sqlite3.connect(home / "anoncard.db")
    columns = [r[1] for r in conn.execute("PRAGMA table_info(cards)")]
    assert columns == ["id", "token", "key_version"]
    assert {len(t) for (t,) in conn.execute("SELECT token FROM cards")} == {32}
