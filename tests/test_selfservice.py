"""The card holder's rights: export every row of a card, erase it (bytes gone), replace a lost card."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

import pytest

from anoncard import Service, audit
from anoncard.errors import CardError, LedgerError, OutputError, PolicyViolation, UnknownCard
from anoncard.keyring import KeyRing
from anoncard.selfservice import FORMAT, Holder
from anoncard.storage import Storage
from anoncard.store import CARD_TABLES, SCHEMA_VERSION
from tests.cli_helpers import RULE_ERRORS, db_files
from tests.conftest import DAY, basket, fixed_clock, on

# Tables that hold no row of any one card (store-wide, card-free, or about the installation).
CARD_FREE = {"key_versions", "events", "category_stats", "category_pairs", "category_weeks", "terminals",
             "maintenance", "generations", "erasure"}  # fmt: skip


@pytest.fixture
def shop(svc):
    """Two cards with stubs and a week of shopping, a refund, coupons, a folded total and a redemption."""
    mine, other = svc.issue_cards_with_stubs({"count": 2})
    for i in range(5):
        on(svc, DAY - timedelta(days=6 - i))
        svc.checkout({"card": mine.card.code, "txn": f"m{i}", "lines": basket(("dairy", "80.00"), ("fish", "14.99"))})
        svc.checkout({"card": other.card.code, "txn": f"o{i}", "lines": basket(("dairy", "3.00"), ("coffee", "7.00"))})
    on(svc, DAY)
    svc.refund({"txn": "m0", "refund_id": "m0-r", "lines": basket(("fish", "14.99"))})
    svc.redeem({"card": mine.card.code, "reward": "coffee", "txn": "m-redeem"})
    svc.refresh_stats()
    svc.enter({"card": mine.card.code})
    # (no coupons for the other card: the discovery coupon could offer it fish, a category only mine buys)
    with svc.store.transaction():  # a folded total, as a retention purge leaves after history_days
        svc.store.conn.execute(
            "INSERT INTO affinity (card_id, category, spend_cents, baskets) VALUES (1, 'bakery', 1234, 3)"
        )
    return mine, other


def _rows(store: Storage, table: str, where: str, value: int) -> list[dict]:
    cur = store.conn.execute(f"SELECT * FROM {table} WHERE {where} = ?", (value,))
    names = [d[0] for d in cur.description]
    out = []
    for row in cur:
        r = {n: v for n, v in zip(names, row, strict=True) if n not in store.ORDER_COLUMNS}
        out.append({k: v.hex() if isinstance(v, bytes) else json.loads(v) if k == "lines" else v for k, v in r.items()})
    return out


def _card_id(svc: Service, code: str) -> int:
    from anoncard.cards import decode

    return svc.store.find_card(svc.ring.tokens(decode(code))).id


def test_the_export_holds_every_row_the_database_links_to_the_card_and_nothing_of_another(svc, shop):
    mine, other = shop
    doc = Holder(svc).export({"card": mine.card.code})
    assert doc["format"] == FORMAT == "anoncard-export/1"
    assert doc["balance"] == svc.balance({"card": mine.card.code}).points
    mine_id, other_id = _card_id(svc, mine.card.code), _card_id(svc, other.card.code)
    schema = svc.store.schema()
    linked = {t: c for t, c in CARD_TABLES}
    for table, columns in schema.items():  # every table: linked to a card by a column, or card-free
        if table in CARD_FREE:
            assert "card_id" not in columns or table == "erasure", table
            assert table not in doc["tables"]
            continue
        assert table in linked, f"{table} holds card rows the export does not know"
        expected = _rows(svc.store, table, linked[table], mine_id)
        assert sorted(doc["tables"][table], key=json.dumps) == sorted(expected, key=json.dumps), table
    assert all(doc["tables"][t] for t in ("cards", "txns", "ledger", "history", "visits", "affinity", "coupons",
                                          "recovery"))  # fmt: skip
    text = json.dumps(doc)
    for table, column in CARD_TABLES:  # nothing of the other card
        for row in _rows(svc.store, table, column, other_id):
            for key in ("token", "ref", "content", "digest", "sealed"):
                if key in row:
                    assert row[key] not in text
    assert all(r.get("card_id", mine_id) == mine_id for rows in doc["tables"].values() for r in rows)
    assert mine.card.code not in text and mine.recovery.code not in text  # the secrets are never stored


def test_the_export_says_what_the_policy_keeps_each_table_for_and_until_when(svc, shop):
    mine, _ = shop
    doc = Holder(svc).export({"card": mine.card.code})
    r = doc["retention"]
    assert set(r) == {t for t, _ in CARD_TABLES}
    assert r["txns"]["purpose"] == svc.policy.storage["txns"].purpose
    assert r["txns"]["kept"] == svc.policy.storage["txns"].retention.replace("retention.documents_days", "120 days")
    assert r["txns"]["kept"].startswith("120 days, then compacted")
    first = (DAY - timedelta(days=6)).isoformat()
    assert r["txns"]["first_until"] == (DAY - timedelta(days=6) + timedelta(days=svc.policy.documents_days)).isoformat()
    assert r["history"]["last_until"] == (DAY - timedelta(days=2) + timedelta(days=svc.policy.history_days)).isoformat()
    assert min(row["day"] for row in doc["tables"]["history"]) == first
    assert r["cards"]["first_until"] is None and r["affinity"]["last_until"] is None  # until the key is retired


def test_erasure_leaves_no_byte_of_the_card_and_the_audit_passes(home, svc, shop):
    mine, other = shop
    token = KeyRing.load(home / "keyring.json").primary.token(mine.card)
    ref = svc.ring.reference("checkout", "m1")
    stub = svc.ring.recovery_digest(mine.recovery)
    data = db_files(home)
    assert token in data and ref in data and stub in data and b"fish" in data and b"bakery" in data
    done = Holder(svc).erase({"card": mine.card.code, "confirm": True})
    assert (done.reward, done.points_redeemed, done.wal_cleared) == (None, 0, True)
    assert done.points_forfeited > 0
    data = db_files(home)
    for needle in (token, ref, stub, b"fish", b"bakery"):  # fish and bakery: only this card bought them
        assert needle not in data
    with pytest.raises(UnknownCard):
        svc.balance({"card": mine.card.code})
    assert svc.balance({"card": other.card.code}).points > 0  # the other card is untouched
    assert svc.category_stats().shares.keys() == {"dairy", "coffee"}
    assert svc.store.conn.execute("SELECT card_id, new_card_id FROM erasure").fetchall() == [(None, None)]
    erased = svc.store.events("card_erased")
    assert [json.loads(e.detail) for e in erased] == [{"points": "forfeited"}]  # that it happened, never which card
    report = audit.run(home, today=DAY)
    assert report.passed, [c.details for c in report.checks if not c.passed]


def test_erasure_can_redeem_the_points_first_and_refuses_a_reward_beyond_them(svc, shop):
    mine, _ = shop
    before = svc.store.counts()
    points = svc.balance({"card": mine.card.code}).points
    assert 150 < points < 800
    with pytest.raises(LedgerError, match="'reward'.*nothing was erased"):
        Holder(svc).erase({"card": mine.card.code, "confirm": True, "reward": "tote-bag"})
    with pytest.raises(PolicyViolation, match="'reward'.*unknown reward"):
        Holder(svc).erase({"card": mine.card.code, "confirm": True, "reward": "no-such-reward"})
    assert svc.store.counts() == before
    done = Holder(svc).erase({"card": mine.card.code, "confirm": True, "reward": "coffee"})
    assert (done.reward, done.points_redeemed, done.points_forfeited) == ("coffee", 150, points - 150)
    assert [json.loads(e.detail) for e in svc.store.events("card_erased")] == [{"points": "redeemed"}]


@pytest.mark.parametrize("request_", [{"confirm": False}, {"confirm": "yes"}, {}])
def test_erasure_needs_a_confirmation_and_changes_nothing_without(svc, shop, request_):
    mine, _ = shop
    before = svc.store.counts()
    with pytest.raises(PolicyViolation, match="'confirm'"):
        Holder(svc).erase({"card": mine.card.code, **request_})
    assert svc.store.counts() == before


def test_replacement_moves_balance_and_history_and_the_stub_works_once(svc, shop):
    mine, other = shop
    holder = Holder(svc)
    before = holder.export({"card": mine.card.code})
    r = holder.replace({"recovery": mine.recovery.code, "history": True})
    assert (r.balance, r.history_moved) == (before["balance"], True)
    with pytest.raises(UnknownCard):
        svc.balance({"card": mine.card.code})  # the old card is revoked
    with pytest.raises(UnknownCard, match="'recovery'"):
        holder.replace({"recovery": mine.recovery.code})  # the stub is burnt
    after = holder.export({"card": r.issued.card.code})
    assert after["balance"] == before["balance"]
    for table in ("txns", "ledger", "history", "visits", "affinity"):  # moved unchanged, but for the card
        strip = [{k: v for k, v in row.items() if k != "card_id"} for row in before["tables"][table]]
        assert strip == [{k: v for k, v in row.items() if k != "card_id"} for row in after["tables"][table]], table
    assert after["tables"]["coupons"] == []  # bound to the old card's secret: they go with it
    svc.refund({"txn": "m1"})  # a document of the old card still refunds, on the new card
    assert svc.balance({"card": r.issued.card.code}).points < before["balance"]
    again = holder.replace({"recovery": r.issued.recovery.code})  # the new stub works
    assert again.balance == svc.balance({"card": again.issued.card.code}).points
    assert svc.balance({"card": other.card.code}).points > 0
    assert [json.loads(e.detail) for e in svc.store.events("card_replaced")] == [{"history": True}, {"history": False}]


def test_replacement_without_history_carries_the_balance_and_erases_the_rest(home, svc, shop):
    mine, _ = shop
    points = svc.balance({"card": mine.card.code}).points
    token = KeyRing.load(home / "keyring.json").primary.token(mine.card)
    r = Holder(svc).replace({"recovery": mine.recovery.code})
    doc = Holder(svc).export({"card": r.issued.card.code})
    assert doc["balance"] == points == r.balance
    assert [(e["txn_id"], e["points"]) for e in doc["tables"]["ledger"]] == [(None, points)]
    assert all(not doc["tables"][t] for t in ("txns", "history", "visits", "affinity", "coupons"))
    data = db_files(home)
    assert token not in data and b"fish" not in data and b"bakery" not in data
    assert audit.run(home, today=DAY).passed


def test_a_replacement_whose_new_codes_cannot_be_delivered_changes_nothing(svc, shop):
    mine, _ = shop
    before = svc.store.counts()

    def broken(issued):
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="nothing changed"):
        Holder(svc).replace({"recovery": mine.recovery.code}, emit=broken)
    assert svc.store.counts() == before
    assert Holder(svc).replace({"recovery": mine.recovery.code}).balance > 0  # the stub still works


@pytest.mark.parametrize("bad", ["R1-XXXX", 12, "C1-0000-0000-0000-0000-0000-0000-000"])
def test_a_malformed_recovery_code_is_refused_by_the_gate(svc, bad):
    with pytest.raises(CardError, match="'recovery'"):
        Holder(svc).replace({"recovery": bad})


def test_the_erasure_flag_lets_one_card_go_and_no_other(svc, shop):
    mine, other = shop
    store = svc.store
    mine_id, other_id = _card_id(svc, mine.card.code), _card_id(svc, other.card.code)
    with pytest.raises(RULE_ERRORS, match="append-only"), store.transaction():
        store.conn.execute("UPDATE ledger SET points = points + 1 WHERE card_id = ?", (mine_id,))
    with pytest.raises(RULE_ERRORS, match="append-only"), store.transaction():
        store.conn.execute("UPDATE erasure SET card_id = ? WHERE id = 1", (mine_id,))
        store.conn.execute("DELETE FROM ledger WHERE card_id = ?", (other_id,))  # not the card being erased
    with pytest.raises(RULE_ERRORS, match="immutable"), store.transaction():
        store.conn.execute("UPDATE erasure SET card_id = ?, new_card_id = ? WHERE id = 1", (mine_id, other_id))
        store.conn.execute("UPDATE txns SET card_id = ?, spend_cents = 0 WHERE card_id = ?", (other_id, mine_id))
    with pytest.raises(RULE_ERRORS, match="never deleted"), store.transaction():
        store.conn.execute("DELETE FROM erasure")


@pytest.mark.sqlite_only(reason="SQLite migration 7 over a schema-6 file; PostgreSQL migration 2 in test_postgres.py")
def test_a_schema_6_database_migrates_and_its_cards_have_no_stub(home):
    with Service.open(home, clock=fixed_clock) as svc:
        (card,) = svc.issue_cards({"count": 1})
        svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "40.00"))})
    conn = sqlite3.connect(home / "anoncard.db")
    conn.executescript("DROP TABLE recovery; DROP TABLE erasure; PRAGMA user_version = 6;")
    conn.close()
    with Service.open(home, clock=fixed_clock) as svc:
        assert svc.store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 7
        doc = Holder(svc).export({"card": card.code})
        assert doc["tables"]["recovery"] == [] and doc["balance"] == 40
        assert Holder(svc).erase({"card": card.code, "confirm": True}).points_forfeited == 40
    assert audit.run(home, today=DAY).passed
