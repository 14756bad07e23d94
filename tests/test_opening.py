"""Opening a home writes nothing: the audit leaves the database byte-identical; startup records are an
explicit step; a long-lived process sees store statistics another process refreshed; init never makes
a new key ring for a database that was used with one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from anoncard import KeyRing, KeyRingError, Service, audit, init_home
from tests.cli_helpers import cli
from tests.conftest import DAY, basket, fixed_clock


def digests(home: Path) -> dict[str, str]:
    """SHA-256 of every file of the home (database, WAL and shared memory included)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.iterdir()) if p.is_file()}


@pytest.fixture
def used_home(home: Path) -> Path:
    with Service.open(home, clock=fixed_clock) as svc:
        codes = [s.code for s in svc.issue_cards({"count": 3})]
        for i, code in enumerate(codes):
            svc.checkout({"card": code, "txn": f"t{i}", "lines": basket(("dairy", "3.00"), ("coffee", "6.00"))})
    return home


def test_the_audit_leaves_the_database_byte_identical_after_a_programme_change(used_home):
    path = used_home / "programme.toml"
    path.write_text(path.read_text().replace('points_per_euro = "1"', 'points_per_euro = "2"'))
    before = digests(used_home)
    report = audit.run(used_home, today=DAY)
    assert report.passed
    assert cli(used_home, "audit", "--at", DAY.isoformat()).exit_code == 0
    assert digests(used_home) == before


def test_the_audit_leaves_the_database_byte_identical_when_the_ring_file_is_ahead(used_home):
    """A rotation that reached only the ring file (a crash): the audit reports it and repairs nothing."""
    ring = KeyRing.load(used_home / "keyring.json")
    ring.rotate("2015-03-09")
    ring.save(used_home / "keyring.json")
    before = digests(used_home)
    report = audit.run(used_home, today=DAY)
    keys = next(c for c in report.checks if c.key == "f")
    assert not keys.passed and "differ from the key ring" in keys.details[0]
    assert digests(used_home) == before


def test_opening_records_nothing_and_the_first_write_records_the_programme(used_home):
    path = used_home / "programme.toml"
    path.write_text(path.read_text().replace('points_per_euro = "1"', 'points_per_euro = "2"'))
    with Service.open(used_home, clock=fixed_clock) as svc:
        assert len(svc.store.events("programme_changed")) == 1
        (card,) = svc.issue_cards({"count": 1})
        assert len(svc.store.events("programme_changed")) == 2  # before the programme's first effect
        r = svc.checkout({"card": card.code, "txn": "t-new", "lines": basket(("dairy", "1.00"))})
        assert r.points == 2


def test_a_long_lived_process_sees_a_purge_done_by_another(used_home):
    with Service.open(used_home, clock=fixed_clock) as terminal:
        assert terminal.category_stats().shares == {}  # cached: nothing refreshed yet
        with Service.open(used_home, clock=fixed_clock) as nightly:
            nightly.purge()
        shares = terminal.category_stats().shares
        assert set(shares) == {"dairy", "coffee"} and all(v > 0 for v in shares.values())


def test_init_refuses_a_new_key_ring_for_a_used_database(used_home):
    ring = used_home / "keyring.json"
    ring.unlink()
    before = digests(used_home)
    result = cli(used_home, "init")
    assert result.exit_code == KeyRingError.exit_code
    assert "keyring.json is missing" in result.stderr and "restore keyring.json" in result.stderr
    assert not ring.exists()
    assert digests(used_home) == before
    with pytest.raises(KeyRingError, match="3 cards"):
        init_home(used_home, today=DAY)
    assert not ring.exists()


def test_init_on_an_initialised_home_changes_nothing(used_home):
    before = digests(used_home)
    assert init_home(used_home, today=DAY) == []
    assert digests(used_home) == before
