"""Key rotation: re-link on presentation, retire purges the cards not seen since."""

from __future__ import annotations

import pytest

from anoncard import KeyRing, KeyRingError, Service, UnknownCard
from anoncard.keyring import RETIRED
from tests.conftest import basket, fixed_clock


def test_rotate_present_half_retire(home):
    with Service.open(home, clock=fixed_clock) as svc:
        codes = [s.code for s in svc.issue_cards({"count": 10})]
        for i, code in enumerate(codes):
            svc.checkout({"card": code, "txn": f"t{i}", "lines": basket(("dairy", f"{10 + i}.00"))})
        before = {c: svc.balance({"card": c}).points for c in codes}
        # the balance look-ups above did not re-link anything: still all on v1
        assert [k["cards"] for k in svc.list_keys()] == [10]
        assert svc.rotate_keys() == 2

    seen, unseen = codes[:5], codes[5:]
    with Service.open(home, clock=fixed_clock) as svc:
        for i, code in enumerate(seen):
            r = svc.checkout({"card": code, "txn": f"u{i}", "lines": basket(("coffee", "5.00"))})
            assert r.relinked
            assert r.balance == before[code] + 5
        again = svc.checkout({"card": seen[0], "txn": "u-again", "lines": basket(("coffee", "1.00"))})
        assert not again.relinked
        assert {k["version"]: k["cards"] for k in svc.list_keys()} == {1: 5, 2: 5}

        retired = svc.retire_key()
        assert (retired.version, retired.cards_purged) == (1, 5)

    with Service.open(home, clock=fixed_clock) as svc:
        for code in seen:
            assert svc.balance({"card": code}).points >= before[code] + 5
        for code in unseen:
            with pytest.raises(UnknownCard, match="'card'"):
                svc.balance({"card": code})
        conn = svc.store.conn
        assert conn.execute("SELECT count(*) FROM cards").fetchone()[0] == 5
        # nothing of the unseen half is left: every row belongs to a card on the new key
        for table in ("txns", "ledger", "history", "visits"):
            orphans = conn.execute(
                f"SELECT count(*) FROM {table} WHERE card_id NOT IN (SELECT id FROM cards WHERE key_version = 2)"
            ).fetchone()[0]
            assert orphans == 0, table
        assert svc.store.key_states() == {1: RETIRED, 2: "primary"}
    ring = KeyRing.load(home / "keyring.json")
    assert ring.versions[0].material is None


def test_retire_without_verify_only_key_is_refused(svc):
    with pytest.raises(KeyRingError, match="rotate first"):
        svc.retire_key()


def test_interrupted_retirement_is_completed_by_the_startup_step(home):
    """The database purge committed but the ring file still holds the material."""
    with Service.open(home, clock=fixed_clock) as svc:
        (card,) = svc.issue_cards({"count": 1})
        svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "3.00"))})
        svc.rotate_keys()
        with svc.store.transaction():  # the first half of retire_key, then a crash
            svc.store.set_key_state(1, RETIRED)
            svc.store.purge_key_version(1)
    assert KeyRing.load(home / "keyring.json").versions[0].material is not None
    with Service.open(home, clock=fixed_clock) as svc:
        # without the startup step, the database's word already holds: v1 is not used
        with pytest.raises(UnknownCard):
            svc.balance({"card": card.code})
        assert svc.ring.versions[0].state == RETIRED and svc.ring.versions[0].material is None
        assert KeyRing.load(home / "keyring.json").versions[0].material is not None  # opening wrote nothing
        svc.prepare()
    assert KeyRing.load(home / "keyring.json").versions[0].material is None


def test_rotation_that_reached_only_the_ring_file_is_recorded_by_the_startup_step(home):
    ring = KeyRing.load(home / "keyring.json")
    ring.rotate("2015-03-09")
    ring.save(home / "keyring.json")
    with Service.open(home, clock=fixed_clock) as svc:
        (card,) = svc.issue_cards({"count": 1})  # the version only the file knows is not used yet
        assert svc.store.key_states() == {1: "primary"}
        assert svc.list_keys()[0]["cards"] == 1
        svc.prepare()
        assert svc.store.key_states() == {1: "verify-only", 2: "primary"}
        assert svc.balance({"card": card.code}).relinked
