"""The ring under the database's key states: the database decides, the file only supplies material."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard import KeyRing, KeyRingError, Service
from anoncard.keyring import PRIMARY, RETIRED, VERIFY_ONLY
from tests.conftest import basket, fixed_clock


def churn(steps: list[bool]) -> list[KeyRing]:
    """A ring after each step (True rotates, False retires the oldest verify-only key if any)."""
    ring = KeyRing.create("d0")
    out = [KeyRing.from_json(ring.to_json())]
    for i, rotate in enumerate(steps):
        if rotate:
            ring.rotate(f"d{i}")
        elif any(v.state == VERIFY_ONLY for v in ring.versions):
            ring.retire(ring.oldest_verify_only().version)
        out.append(KeyRing.from_json(ring.to_json()))
    return out


@given(st.lists(st.booleans(), max_size=12), st.data())
def test_a_ring_in_the_middle_of_any_key_operation_follows_the_database(steps, data):
    """A rotation writes the file first (the file may be one rotation ahead); a retirement writes the
    database first (the database may be one retirement ahead). Either way the ring a process uses has
    exactly the database's versions and states, and material only for live versions."""
    history = churn(steps)
    i = data.draw(st.integers(0, len(steps)), label="step")
    if i == len(steps):
        file_ring, db_ring = history[i], history[i]
    elif steps[i]:
        file_ring, db_ring = history[i + 1], history[i]
    else:
        file_ring, db_ring = history[i], history[i + 1]
    states = {v.version: v.state for v in db_ring.versions}
    view = file_ring.with_states(states)
    assert {v.version: v.state for v in view.versions} == states
    assert view.primary.version == db_ring.primary.version
    for v in view.versions:
        assert (v.material is None) == (v.state == RETIRED)
        if v.material is not None:
            assert v.material == next(f.material for f in file_ring.versions if f.version == v.version)
    assert view.same_installation(file_ring)


@given(st.lists(st.booleans(), min_size=1, max_size=12).filter(any))
def test_a_file_older_than_the_database_is_refused(steps):
    history = churn(steps)
    newest = history[-1]
    states = {v.version: v.state for v in newest.versions}
    first = history[0]  # one version only: lacks the newer ones
    with pytest.raises(KeyRingError, match="older than the database"):
        first.with_states(states)


def test_a_restored_older_ring_file_is_refused_and_nothing_is_written(home, tmp_path):
    old = tmp_path / "keyring-old.json"
    shutil.copy2(home / "keyring.json", old)
    with Service.open(home, clock=fixed_clock) as svc:
        (card,) = svc.issue_cards({"count": 1})
        svc.rotate_keys()
        svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "1.00"))})
    shutil.copy2(old, home / "keyring.json")  # an operator restores an old export
    with Service.open(home, clock=fixed_clock) as svc:
        before = svc.store.counts()
        with pytest.raises(KeyRingError, match="v2 that the key ring file lacks"):
            svc.checkout({"card": card.code, "txn": "t2", "lines": basket(("dairy", "1.00"))})
        with pytest.raises(KeyRingError, match="older than the database"):
            svc.prepare()
        assert svc.store.counts() == before
        assert svc.store.key_states() == {1: VERIFY_ONLY, 2: PRIMARY}


def test_a_ring_file_of_another_installation_is_refused(home, tmp_path):
    with Service.open(home, clock=fixed_clock) as svc:
        svc.issue_cards({"count": 1})
        other = KeyRing.create("2015-03-02")
        other.rotate("2015-03-03")
        other.save(home / "keyring.json")
        with pytest.raises(KeyRingError, match="another installation"):
            svc.prepare()


def test_keys_export_after_an_interrupted_retirement_holds_no_retired_material(home, tmp_path):
    from tests.cli_helpers import cli

    with Service.open(home, clock=fixed_clock) as svc:
        svc.issue_cards({"count": 1})
        svc.rotate_keys()
        with svc.store.transaction():  # retire_key's database half, then a crash
            svc.store.set_key_state(1, RETIRED)
            svc.store.purge_key_version(1)
    dest = tmp_path / "export.json"
    assert cli(home, "keys", "export", str(dest)).exit_code == 0
    exported = KeyRing.load(dest)
    assert [(v.version, v.state, v.material is None) for v in exported.versions] == [
        (1, RETIRED, True),
        (2, PRIMARY, False),
    ]
    assert KeyRing.load(home / "keyring.json").versions[0].material is None


def _as_schema_2(db) -> None:
    """Turn a current database back into what schema version 2 wrote (no generation counters)."""
    import sqlite3

    conn = sqlite3.connect(db)
    conn.executescript(
        """
        DROP TRIGGER generations_forward;
        DROP TRIGGER generations_no_delete;
        DROP TABLE generations;
        PRAGMA user_version = 2;
        """
    )
    conn.close()


@pytest.mark.sqlite_only(reason="migrates an older SQLite file")
def test_a_schema_2_database_and_backup_gain_the_generations_and_follow_key_changes(home, tmp_path):
    from anoncard.store import SCHEMA_VERSION

    with Service.open(home, clock=fixed_clock) as svc:
        (card,) = svc.issue_cards({"count": 1})
        svc.backup(tmp_path / "old.db")
    _as_schema_2(home / "anoncard.db")
    _as_schema_2(tmp_path / "old.db")
    with Service.open(home, clock=fixed_clock) as terminal, Service.open(home, clock=fixed_clock) as operator:
        assert terminal.store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert terminal.balance({"card": card.code}).points == 0
        operator.rotate_keys()
        assert terminal.balance({"card": card.code}).relinked  # saw the rotation at once
        before = operator.store.key_generation()
        operator.restore(tmp_path / "old.db")  # the backup's counters start again from 0
        assert operator.store.key_generation() > before
        assert terminal.balance({"card": card.code}).relinked  # the restored card is re-linked again
        assert terminal.store.key_states() == {1: VERIFY_ONLY, 2: PRIMARY}


def test_the_database_moves_the_generation_with_every_key_state_change_and_only_forward(home):
    import sqlite3

    from anoncard.store import Store

    store = Store(home / "anoncard.db")  # no service on it: the triggers alone keep the rules
    try:
        start = store.key_generation()
        with store.transaction():
            store.set_key_state(2, PRIMARY)
            store.set_key_state(1, VERIFY_ONLY)
        assert store.key_generation() == start + 2
        with store.transaction():
            store.set_key_state(1, VERIFY_ONLY)  # no change: the generation stays
        assert store.key_generation() == start + 2
        with pytest.raises(sqlite3.IntegrityError, match="only moves forward"), store.transaction():
            store.set_key_state(1, PRIMARY)
        with store.transaction():
            store.set_key_state(1, RETIRED)
        with pytest.raises(sqlite3.IntegrityError, match="only moves forward"), store.transaction():
            store.set_key_state(1, VERIFY_ONLY)
        with pytest.raises(sqlite3.IntegrityError, match="only move forward"), store.transaction():
            store.conn.execute("UPDATE generations SET keys = 0")
        assert store.key_generation() == start + 3
        assert store.key_states() == {1: RETIRED, 2: PRIMARY}
    finally:
        store.close()
