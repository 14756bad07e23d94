"""Backup under load restores to a consistent state; restore round trip; damaged backups refused."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3

import pytest

from anoncard import Service, StoreError, UnknownCard, audit
from tests.conftest import basket, fixed_clock


def load(home: str, codes: list[str], worker: int, n: int) -> None:
    with Service.open(home) as svc:
        for i in range(n):
            svc.checkout({"card": codes[i % len(codes)], "txn": f"load{worker}-{i}",
                          "lines": basket(("dairy", "2.49"), ("fruit", "1.99"))})  # fmt: skip


def consistent(home) -> None:
    conn = sqlite3.connect(home / "anoncard.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        bad = conn.execute(
            "SELECT count(*) FROM txns t WHERE (SELECT count(*) FROM ledger l WHERE l.txn_id = t.id) != 1"
        ).fetchone()[0]
        assert bad == 0
        for card_id, spend in conn.execute("SELECT card_id, sum(spend_cents) FROM txns GROUP BY card_id"):
            assert conn.execute("SELECT sum(spend_cents) FROM history WHERE card_id = ?", (card_id,)).fetchone() == (
                spend,
            )
    finally:
        conn.close()


def fresh_home_like(home, target):
    target.mkdir()
    for name in ("keyring.json", "programme.toml", "policy.toml"):
        shutil.copy2(home / name, target / name)
    return target


def test_backup_during_load_restores_consistently(home, tmp_path):
    with Service.open(home) as svc:
        codes = [s.code for s in svc.issue_cards({"count": 10})]
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=load, args=(str(home), codes, w, 150)) for w in range(2)]
    for w in writers:
        w.start()
    backups = []
    with Service.open(home) as svc:
        for i in range(3):
            path = tmp_path / f"backup-{i}.db"
            svc.backup(path)
            backups.append(path)
    for w in writers:
        w.join()
    assert all(w.exitcode == 0 for w in writers)
    for i, path in enumerate(backups):
        target = fresh_home_like(home, tmp_path / f"restored-{i}")
        with Service.open(target, clock=fixed_clock) as svc:
            svc.restore(path)
            balances = {c: svc.balance({"card": c}).points for c in codes}
            assert sum(balances.values()) == svc.store.ledger_sum()
        consistent(target)
        assert audit.run(target, today=fixed_clock().date()).checks[7].passed  # integrity


def test_round_trip_restores_the_balances_at_backup_time(home, tmp_path):
    with Service.open(home, clock=fixed_clock) as svc:
        codes = [s.code for s in svc.issue_cards({"count": 3})]
        for i, c in enumerate(codes):
            svc.checkout({"card": c, "txn": f"a{i}", "lines": basket(("dairy", f"{10 + i}.00"))})
        at_backup = {c: svc.balance({"card": c}).points for c in codes}
        svc.backup(tmp_path / "b.db")
        for i, c in enumerate(codes):
            svc.checkout({"card": c, "txn": f"b{i}", "lines": basket(("wine", "50.00"))})
        assert {c: svc.balance({"card": c}).points for c in codes} != at_backup
        svc.restore(tmp_path / "b.db")
        assert {c: svc.balance({"card": c}).points for c in codes} == at_backup
    consistent(home)
    assert audit.run(home, today=fixed_clock().date()).passed


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_a_damaged_backup_is_refused_and_changes_nothing(home, tmp_path, damage):
    with Service.open(home, clock=fixed_clock) as svc:
        (card,) = svc.issue_cards({"count": 1})
        svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "3.00"))})
        svc.backup(tmp_path / "b.db")
        bad = tmp_path / "bad.db"
        if damage == "garbage":
            bad.write_bytes(b"not a database at all" * 100)
        elif damage == "truncated":
            bad.write_bytes((tmp_path / "b.db").read_bytes()[:3000])
        before = list(svc.store.conn.iterdump())
        with pytest.raises(StoreError):
            svc.restore(bad)
        assert list(svc.store.conn.iterdump()) == before


def test_restore_purges_cards_of_keys_retired_since_the_backup(home, tmp_path):
    with Service.open(home, clock=fixed_clock) as svc:
        old = [s.code for s in svc.issue_cards({"count": 4})]
        for i, c in enumerate(old):
            svc.checkout({"card": c, "txn": f"o{i}", "lines": basket(("dairy", "3.00"))})
        svc.backup(tmp_path / "b.db")
        svc.rotate_keys()
        svc.checkout({"card": old[0], "txn": "seen", "lines": basket(("dairy", "3.00"))})  # re-linked
        svc.retire_key()
        info = svc.restore(tmp_path / "b.db")
        assert info["cards_purged_again"] == 4  # in the backup, all four were still on the retired key
        for c in old:
            with pytest.raises(UnknownCard):
                svc.balance({"card": c})
    assert audit.run(home, today=fixed_clock().date()).passed
