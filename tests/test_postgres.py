"""The PostgreSQL backend's own properties: its triggers refuse what must never happen, its
migrations are numbered and idempotent, backup and restore go through pg_dump/pg_restore,
and a server killed with SIGKILL under load loses no acknowledged checkout and leaves none
half applied. (The whole suite also runs on PostgreSQL; these are what only it has.)"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import psycopg
import pytest

from anoncard import Service
from anoncard.errors import StoreError
from anoncard.postgres import PG_SCHEMA_VERSION, PostgresStore
from tests.conftest import fixed_clock

pytestmark = pytest.mark.postgres_only

CTX = multiprocessing.get_context("fork")


@pytest.fixture
def shop(home: Path, database: str) -> tuple[Path, list[str]]:
    with Service.open(home, clock=fixed_clock) as svc:
        codes = [c.code for c in svc.issue_cards({"count": 4})]
        svc.checkout({"card": codes[0], "txn": "t1", "lines": [{"category": "dairy", "amount": "30.00"}]})
    return home, codes


@pytest.mark.parametrize(
    ("statement", "rule"),
    [
        ("UPDATE ledger SET points = points + 1000", "ledger entries are append-only"),
        ("DELETE FROM ledger", "ledger entries are append-only"),
        ("TRUNCATE ledger CASCADE", "ledger entries are append-only"),
        ("UPDATE txns SET spend_cents = 0", "till documents are immutable"),
        ("DELETE FROM txns", "till documents are immutable"),
        ("UPDATE events SET detail = '{}'", "the event log is append-only"),
        ("DELETE FROM events", "the event log is append-only"),
        ("TRUNCATE events", "the event log is append-only"),
        ("UPDATE cards SET key_version = key_version - 1", "a card is only re-linked to a newer key version"),
        ("UPDATE generations SET keys = keys - 1", "generations only move forward"),
        ("UPDATE key_versions SET version = version + 100", "a key state only moves forward"),
        ("INSERT INTO txns (ref, kind, card_id, day, content, lines, spend_cents, discount_cents, balance_after)"
         " SELECT '\\x01', 'gift', id, '2015-03-02', '\\x02', '[]', 0, 0, 0 FROM cards LIMIT 1",
         "unknown document kind"),
    ],
)  # fmt: skip
def test_the_database_refuses_what_must_never_happen(shop, database, statement, rule):
    home, _codes = shop
    with psycopg.connect(database) as conn:
        before = conn.execute("SELECT count(*), coalesce(sum(points), 0) FROM ledger").fetchone()
        with pytest.raises(psycopg.IntegrityError, match=rule):
            conn.execute(statement)
        conn.rollback()
        assert conn.execute("SELECT count(*), coalesce(sum(points), 0) FROM ledger").fetchone() == before


def test_migrations_are_numbered_idempotent_and_refuse_a_newer_schema(database):
    store = PostgresStore(database)
    assert store.schema_version() == PG_SCHEMA_VERSION
    store.close()
    again = PostgresStore(database)  # opening a migrated database changes nothing
    assert again.schema_version() == PG_SCHEMA_VERSION
    again.conn.execute(f"COMMENT ON TABLE generations IS 'anoncard schema {PG_SCHEMA_VERSION + 1}'")
    again.close()
    with pytest.raises(StoreError, match="newer than this anoncard"):
        PostgresStore(database)


def test_no_url_or_password_reaches_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ANONCARD_DATABASE_URL", f"postgresql://anoncard:s3cret-pw@/nosuchdb?host={tmp_path}")
    with pytest.raises(StoreError) as caught:
        PostgresStore(os.environ["ANONCARD_DATABASE_URL"])
    assert "s3cret" not in caught.value.message
    assert "nosuchdb" in caught.value.message


def test_backup_and_restore_go_through_pg_dump_and_pg_restore(shop, tmp_path):
    home, codes = shop
    dest = tmp_path / "backups" / "shop.dump"
    dest.parent.mkdir(mode=0o700)
    with Service.open(home, clock=fixed_clock) as svc:
        info = svc.backup(dest)
        assert info["bytes"] == dest.stat().st_size > 0
        assert dest.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
        svc.checkout({"card": codes[0], "txn": "t2", "lines": [{"category": "dairy", "amount": "50.00"}]})
        after = svc.balance({"card": codes[0]}).points
        with pytest.raises(StoreError, match="exists"):
            svc.backup(dest)  # never replaces a file
        restored = svc.restore(dest)
        assert restored["cards"] == 4
        assert svc.balance({"card": codes[0]}).points < after  # t2 is gone: the content at backup time
        receipt = svc.checkout({"card": codes[0], "txn": "t2", "lines": [{"category": "dairy", "amount": "50.00"}]})
        assert receipt.balance == after and not receipt.replayed


def test_a_damaged_backup_is_refused_and_changes_nothing(shop, tmp_path):
    home, codes = shop
    bad = tmp_path / "bad.dump"
    bad.write_bytes(b"PGDMP" + os.urandom(400))
    with Service.open(home, clock=fixed_clock) as svc:
        before = svc.balance({"card": codes[0]}).points
        with pytest.raises(StoreError, match="not a readable pg_dump backup"):
            svc.restore(bad)
        assert svc.balance({"card": codes[0]}).points == before


def test_the_audit_checks_the_schema_through_information_schema_and_integrity_through_amcheck(shop):
    from anoncard import audit

    home, _codes = shop
    report = audit.run(home, today=fixed_clock().date())
    assert report.passed, report.to_markdown()
    titles = {c.key: c.title for c in report.checks}
    assert titles["h"] == "PostgreSQL integrity check (amcheck)"


# -- a server killed under load ----------------------------------------------------------

WRITERS, PER_WRITER = (8, 200) if os.environ.get("ANONCARD_STRESS") == "1" else (4, 40)


def _writer(home: str, codes: list[str], w: int, acks: str) -> None:
    """Checkouts ``w-0`` .. ``w-N``, each retried until the server acknowledges it; an
    acknowledged one is appended to ``acks`` at once."""
    svc = None
    with open(acks, "a", buffering=1) as out:
        for i in range(PER_WRITER):
            request = {"card": codes[(w + i) % len(codes)], "txn": f"w{w}-{i}",
                       "lines": [{"category": "dairy", "amount": f"{1 + i % 7}.00"}]}  # fmt: skip
            for _attempt in range(600):
                try:
                    if svc is None:
                        svc = Service.open(Path(home), clock=fixed_clock)
                    receipt = svc.checkout(request)
                    out.write(f"{request['txn']} {receipt.points}\n")
                    break
                except StoreError:
                    time.sleep(0.05)
            else:
                os._exit(3)
    os._exit(0)


def test_sigkill_of_postgres_under_load_loses_no_acknowledged_checkout(shop, database, pg_cluster, tmp_path):
    home, codes = shop
    acks = tmp_path / "acks.txt"
    acks.touch()
    procs = [CTX.Process(target=_writer, args=(str(home), codes, w, str(acks))) for w in range(WRITERS)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 60
    while len(acks.read_text().splitlines()) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    acked_before_kill = set(acks.read_text().split()[::2])
    assert acked_before_kill, "no checkout was acknowledged before the kill"
    os.kill(pg_cluster.postmaster_pid(), signal.SIGKILL)
    time.sleep(0.5)
    pg_cluster.restart_after_crash()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    lines = [ln.split() for ln in acks.read_text().splitlines()]
    acked = {txn: int(points) for txn, points in lines}
    assert len(acked) == len(lines) == WRITERS * PER_WRITER  # each acknowledged once
    assert acked_before_kill <= set(acked)
    with Service.open(home, clock=fixed_clock) as svc:
        for txn in acked:  # every acknowledged checkout is there, whole
            ref = svc.ring.reference("checkout", txn)
            doc = svc.store.find_document(ref)
            assert doc is not None and doc.points == acked[txn]
    with psycopg.connect(database) as conn:
        assert conn.execute(
            "SELECT count(*) FROM txns t WHERE (SELECT count(*) FROM ledger l WHERE l.txn_id = t.id) != 1"
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM txns").fetchone() == (WRITERS * PER_WRITER + 1,)
        visits = dict(conn.execute("SELECT card_id, sum(visits)::int FROM visits GROUP BY card_id"))
        checkouts = dict(conn.execute("SELECT card_id, count(*)::int FROM txns GROUP BY card_id"))
        assert visits == checkouts  # no history without its document, no document without its history
        for card_id, after, running in conn.execute(
            "SELECT t.card_id, t.balance_after, sum(l.points) OVER (PARTITION BY t.card_id ORDER BY t.id)"
            " FROM txns t JOIN ledger l ON l.txn_id = t.id"
        ):
            assert after == running, card_id  # every receipt's balance is the ledger's, in order


def test_anoncard_migrate_reports_the_schema_of_either_backend(home, database):
    from tests.cli_helpers import cli, ok

    out = json.loads(ok(cli(home, "migrate", "--json")).stdout)
    assert out == {"database": out["database"], "backend": "postgresql", "schema_version": PG_SCHEMA_VERSION}
    assert "postgresql://" not in out["database"]  # the URL (and any password in it) is not shown


def test_a_schema_2_database_gains_the_ghosts_table(shop, database):
    """PostgreSQL migration 3 (SQLite's 8) over a database of the schema before it."""
    home, codes = shop
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP TABLE ghosts")
        conn.execute("COMMENT ON TABLE generations IS 'anoncard schema 2'")
    with Service.open(home, clock=fixed_clock) as svc:
        assert svc.store.schema_version() == PG_SCHEMA_VERSION >= 3
        assert svc.store.schema()["ghosts"] == ["card_id", "issued_day", "category", "expires_day"]
        assert svc.balance({"card": codes[0]}).points == 30
