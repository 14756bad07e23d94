"""Retention: old documents are compacted and old history folded, balances never change."""

from __future__ import annotations

import contextlib
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anoncard import KeyRing, LedgerError, Programme, Service, Store
from tests.conftest import basket, fixed_clock, on

START = date(2014, 1, 1)


def memory_service() -> Service:
    return Service(Store(":memory:"), KeyRing.create("2014-01-01"), Programme.default(), clock=fixed_clock)


def spend_by_card_and_category(svc: Service) -> dict:
    conn = svc.store.conn
    totals: dict = {}
    for table in ("history", "affinity"):
        for card, cat, cents in conn.execute(f"SELECT card_id, category, spend_cents FROM {table}"):
            totals[card, cat] = totals.get((card, cat), 0) + cents
    return totals


@settings(max_examples=25, deadline=None)
@given(
    visits=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 800), st.sampled_from(["dairy", "fruit", "coffee"]),
                  st.integers(1, 20_000), st.sampled_from(["keep", "refund", "redeem"])),
        min_size=1, max_size=25,
    ),
    purge_offsets=st.lists(st.integers(0, 900), min_size=1, max_size=3),
)  # fmt: skip
def test_purge_never_changes_a_balance_or_a_total(visits, purge_offsets):
    svc = memory_service()
    codes = [s.code for s in svc.issue_cards({"count": 3})]
    for i, (card, offset, cat, cents, then) in enumerate(sorted(visits, key=lambda v: v[1])):
        day = START + timedelta(days=offset)
        on(svc, day).checkout({"card": codes[card], "txn": f"t{i}", "lines": basket((cat, f"{cents / 100:.2f}"))})
        if then == "refund":
            svc.refund({"txn": f"t{i}"})
        elif then == "redeem":
            with contextlib.suppress(LedgerError):
                svc.redeem({"card": codes[card], "txn": f"r{i}", "reward": "coffee"})
    balances = {c: svc.balance({"card": c}).points for c in codes}
    totals = spend_by_card_and_category(svc)
    for offset in sorted(purge_offsets):
        today = START + timedelta(days=offset)
        on(svc, today).purge()
        assert {c: svc.balance({"card": c}).points for c in codes} == balances
        assert {k: v for k, v in spend_by_card_and_category(svc).items() if v} == {k: v for k, v in totals.items() if v}
        cutoff = (today - timedelta(days=svc.policy.documents_days)).isoformat()
        assert svc.store.count_before("txns", "day", cutoff) == 0
        hist_cutoff = (today - timedelta(days=svc.policy.history_days)).isoformat()
        assert svc.store.count_before("history", "day", hist_cutoff) == 0
        assert svc.store.count_before("visits", "day", hist_cutoff) == 0
        # at most one carried entry per card
        carried = svc.store.conn.execute(
            "SELECT count(*), count(DISTINCT card_id) FROM ledger WHERE txn_id IS NULL"
        ).fetchone()
        assert carried[0] == carried[1]


def test_purge_is_recorded_and_old_documents_can_no_longer_be_refunded():
    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    on(svc, START).checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "50.00"))})
    counts = on(svc, START + timedelta(days=200)).purge()
    assert counts["documents compacted"] == 1 and counts["carried entries"] == 1
    assert svc.balance({"card": card.code}).points == 50
    with pytest.raises(LedgerError, match="no checkout"):
        svc.refund({"txn": "t1"})
    assert [e.kind for e in svc.store.events()] == ["policy_applied", "programme_changed", "retention_purge"]


def test_compaction_is_impossible_outside_a_purge():
    import sqlite3

    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    on(svc, START).checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "50.00"))})
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        svc.store.conn.execute("DELETE FROM ledger")
    assert svc.store.conn.execute("SELECT active FROM maintenance").fetchone()[0] == 0
