"""A backup cut short is refused even when the bytes lost were zeros (the integrity check cannot see them)."""

from __future__ import annotations

import sqlite3

import pytest

from anoncard import Service
from anoncard.errors import StoreError
from tests.conftest import basket, fixed_clock

pytestmark = pytest.mark.sqlite_only(
    reason=(
    "a SQLite backup file cut short of a page"
    )
)


def test_a_backup_cut_short_of_a_whole_page_is_refused(home, tmp_path):
    with Service.open(home, clock=fixed_clock) as svc:
        (card,) = svc.issue_cards({"count": 1})
        svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "4.00"))})
        svc.backup(tmp_path / "good.db")
        conn = sqlite3.connect(tmp_path / "good.db")
        conn.execute("CREATE TABLE spare (x INTEGER)")  # an empty page at the end of the file
        conn.close()
        cut = tmp_path / "cut.db"
        data = (tmp_path / "good.db").read_bytes()
        assert data[-1] == 0
        cut.write_bytes(data[:-1])
        with pytest.raises(StoreError, match="truncated"):
            svc.restore(cut)
        assert svc.balance({"card": card.code}).points == 4
