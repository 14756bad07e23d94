"""SQLite storage: schema, migrations, transactions. The only module with SQL.

Design overview. The database holds, per card, a keyed token and its key version -
nothing else about the card. Around it:

* ``txns``    - one row per till document (checkout, refund, redemption), keyed by an
  opaque reference derived from the document number, with a digest of its content
  (so a retry is recognised and a reuse with other content is refused), the day,
  the category-level lines and the receipt facts;
* ``ledger``  - append-only points entries, one per document; a balance is the sum;
* ``history`` - per card, day and category: spend and number of baskets;
* ``visits``  - per card and day: number of visits and spend;
* ``coupons`` - coupons printed for a card, keyed by a keyed digest of the id printed
  on the slip (never the id), for single use and the entrance's fatigue rules;
* ``key_versions`` - the states of the key ring's versions (never the material);
* ``generations`` - one row of counters: ``keys`` moves with every change of the key
  states, ``stats`` with every refresh of the store-wide category aggregates. A
  long-lived process reads them at the start of a transaction (one primary-key
  SELECT) and reloads what it caches when they moved.

The database enforces its own rules with triggers: ledger entries and documents
can never be updated, and can be deleted only when their card's key version is
retired (the purge that makes inactive profiles fade); a card's key version only
moves forward. All tables are STRICT.

Shared with PostgreSQL (``anoncard/postgres.py`` inherits these methods and runs the same
statement text, ``?`` written as ``%s``): the card, document, ledger, history, visit,
coupon, terminal, event, retention and statistics statements (upserts name the target
table in their ``DO UPDATE`` so both dialects read them alike; a new document is inserted
with ``ON CONFLICT (ref) DO NOTHING RETURNING id``). Kept apart: DDL, triggers and
migrations, PRAGMAs, transactions and locks, schema introspection, the integrity check,
backup, restore and checkpoint. A new method in portable SQL needs no second copy. The
concurrency contract both keep is in ``anoncard/storage.py``.

Schema creation and migrations use sqlite-utils, imported only when a migration
runs; the per-request hot path is plain sqlite3 with ``BEGIN IMMEDIATE`` write
transactions, WAL and a busy timeout.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from datetime import date, timedelta
from pathlib import Path

from . import files
from .errors import StoreError
from .storage import (
    Card,
    CouponRow,
    CouponUse,
    DiscountRow,
    Document,
    DocumentCoupon,
    Event,
    FoundCoupon,
    GhostRow,
    OfferRow,
    SpendRow,
    TerminalRow,
    TokenRow,
    VisitRow,
)

__all__ = ["Card", "CouponRow", "Document", "Store", "integrity_problems"]

_LOCK_RETRIES = 4

_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_delete_only_retired BEFORE DELETE ON ledger
WHEN (SELECT k.state FROM cards c JOIN key_versions k ON k.version = c.key_version
      WHERE c.id = OLD.card_id) IS NOT 'retired'
 AND (SELECT active FROM maintenance WHERE id = 1) IS NOT 1
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS txns_no_update BEFORE UPDATE ON txns
BEGIN SELECT RAISE(ABORT, 'till documents are immutable'); END;
CREATE TRIGGER IF NOT EXISTS txns_delete_only_retired BEFORE DELETE ON txns
WHEN (SELECT k.state FROM cards c JOIN key_versions k ON k.version = c.key_version
      WHERE c.id = OLD.card_id) IS NOT 'retired'
 AND (SELECT active FROM maintenance WHERE id = 1) IS NOT 1
BEGIN SELECT RAISE(ABORT, 'till documents are immutable'); END;
CREATE TRIGGER IF NOT EXISTS cards_key_forward BEFORE UPDATE OF key_version ON cards
WHEN NEW.key_version <= OLD.key_version
BEGIN SELECT RAISE(ABORT, 'a card is only re-linked to a newer key version'); END;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS coupons_single_use BEFORE UPDATE ON coupons
WHEN OLD.redeemed_txn IS NOT NULL OR NEW.redeemed_txn IS NULL OR NEW.id IS NOT OLD.id
  OR NEW.card_id IS NOT OLD.card_id OR NEW.category IS NOT OLD.category OR NEW.kind IS NOT OLD.kind
  OR NEW.value IS NOT OLD.value OR NEW.expires_day IS NOT OLD.expires_day OR NEW.issued_day IS NOT OLD.issued_day
BEGIN SELECT RAISE(ABORT, 'a coupon is redeemed once and never changed'); END;
CREATE TRIGGER IF NOT EXISTS txns_kind BEFORE INSERT ON txns
WHEN NEW.kind NOT IN ('checkout', 'refund', 'redeem')
BEGIN SELECT RAISE(ABORT, 'unknown document kind'); END;
"""


def _migrate_1(conn: sqlite3.Connection) -> None:
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    db["key_versions"].create(
        {"version": int, "state": str}, pk="version", not_null={"state"}, strict=True, if_not_exists=True
    )
    db["cards"].create(
        {"id": int, "token": bytes, "key_version": int},
        pk="id",
        not_null={"token", "key_version"},
        foreign_keys=[("key_version", "key_versions", "version")],
        strict=True,
        if_not_exists=True,
    )
    db["cards"].create_index(["token"], unique=True, if_not_exists=True)
    db["txns"].create(
        {
            "id": int,
            "ref": bytes,
            "kind": str,
            "card_id": int,
            "parent_id": int,
            "day": str,
            "content": bytes,
            "lines": str,
            "spend_cents": int,
            "discount_cents": int,
            "item": str,
            "balance_after": int,
        },
        pk="id",
        not_null={
            "ref",
            "kind",
            "card_id",
            "day",
            "content",
            "lines",
            "spend_cents",
            "discount_cents",
            "balance_after",
        },
        foreign_keys=[("card_id", "cards", "id"), ("parent_id", "txns", "id")],
        strict=True,
        if_not_exists=True,
    )
    db["txns"].create_index(["ref"], unique=True, if_not_exists=True)
    # refunds only: a partial index keeps checkouts from paying for it
    conn.execute("CREATE INDEX IF NOT EXISTS txns_parent ON txns (parent_id) WHERE parent_id IS NOT NULL")
    db["ledger"].create(
        {"id": int, "card_id": int, "txn_id": int, "points": int, "day": str},
        pk="id",
        not_null={"card_id", "points", "day"},
        foreign_keys=[("card_id", "cards", "id"), ("txn_id", "txns", "id")],
        strict=True,
        if_not_exists=True,
    )
    # by card, for balances (replaced by a covering index in migration 2)
    db["ledger"].create_index(["card_id", "txn_id"], unique=True, if_not_exists=True)
    # the per-checkout upserts: clustered on their key (WITHOUT ROWID), one B-tree each
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS history (
            card_id INTEGER NOT NULL REFERENCES cards(id), day TEXT NOT NULL, category TEXT NOT NULL,
            spend_cents INTEGER NOT NULL, baskets INTEGER NOT NULL,
            PRIMARY KEY (card_id, day, category)
        ) WITHOUT ROWID, STRICT;
        CREATE TABLE IF NOT EXISTS visits (
            card_id INTEGER NOT NULL REFERENCES cards(id), day TEXT NOT NULL,
            visits INTEGER NOT NULL, spend_cents INTEGER NOT NULL,
            PRIMARY KEY (card_id, day)
        ) WITHOUT ROWID, STRICT;
        """
    )
    db["affinity"].create(
        {"card_id": int, "category": str, "spend_cents": int, "baskets": int},
        pk=("card_id", "category"),
        not_null={"spend_cents", "baskets"},
        foreign_keys=[("card_id", "cards", "id")],
        strict=True,
        if_not_exists=True,
    )
    db["events"].create(
        {"id": int, "at": str, "kind": str, "detail": str, "mac": bytes},
        pk="id",
        not_null={"at", "kind", "detail", "mac"},
        strict=True,
        if_not_exists=True,
    )
    db["coupons"].create(
        {
            "id": bytes,
            "card_id": int,
            "category": str,
            "kind": str,
            "value": int,
            "issued_day": str,
            "expires_day": str,
            "redeemed_txn": int,
        },
        pk="id",
        not_null={"card_id", "category", "kind", "value", "issued_day", "expires_day"},
        foreign_keys=[("card_id", "cards", "id"), ("redeemed_txn", "txns", "id")],
        strict=True,
        if_not_exists=True,
    )
    db["coupons"].create_index(["card_id", "issued_day"], if_not_exists=True)
    db["category_stats"].create(
        {"category": str, "baskets": int, "share_ppm": int, "recent_ppm": int},
        pk="category",
        not_null={"baskets", "share_ppm", "recent_ppm"},
        strict=True,
        if_not_exists=True,
    )
    db["category_pairs"].create(
        {"a": str, "b": str, "baskets": int, "given_a_ppm": int},
        pk=("a", "b"),
        not_null={"baskets", "given_a_ppm"},
        strict=True,
        if_not_exists=True,
    )
    db["maintenance"].create({"id": int, "active": int}, pk="id", not_null={"active"}, strict=True, if_not_exists=True)
    conn.execute("INSERT OR IGNORE INTO maintenance (id, active) VALUES (1, 0)")
    conn.executescript(_TRIGGERS)


def _migrate_2(conn: sqlite3.Connection) -> None:
    """Balances read a covering index: a card's entries sit together, points included.

    Summing a card's points used to visit one table row per entry, scattered over the
    ledger in time order (hundreds of page reads for a card shopping every other day).
    The one-entry-per-document rule moves to its own index on the document.
    """
    conn.executescript(
        """
        CREATE UNIQUE INDEX IF NOT EXISTS ledger_one_per_document ON ledger (txn_id);
        CREATE INDEX IF NOT EXISTS ledger_card_points ON ledger (card_id, txn_id, points);
        DROP INDEX IF EXISTS idx_ledger_card_id_txn_id;
        """
    )


def _migrate_3(conn: sqlite3.Connection) -> None:
    """Store-wide weekly totals of sensitive categories, with no card: they count in the store's
    aggregates without ever entering a card's history."""
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS category_weeks (
            week TEXT NOT NULL, category TEXT NOT NULL, spend_cents INTEGER NOT NULL, baskets INTEGER NOT NULL,
            PRIMARY KEY (week, category)
        ) WITHOUT ROWID, STRICT;
        """
    )


def _migrate_5(conn: sqlite3.Connection) -> None:
    """Coupons are stored under a keyed digest of the id printed on the slip, never the id.

    Rows of older databases are keyed by the printed id itself, and the database holds no
    key to re-key them, so they are dropped: a coupon is valid for a day or so, and the
    rows serve only single use and the entrance's fatigue rules. What a customer loses
    is today's unused coupons (refused as not issued here) and the memory of ignored
    categories (up to ``rest_days`` of extra offers). The id sealed under a key of the
    ring lets the entrance reprint a held coupon.
    """
    columns = [row[1] for row in conn.execute("PRAGMA table_info(coupons)")]
    if "sealed" not in columns:
        conn.execute("DELETE FROM coupons")
        conn.execute("ALTER TABLE coupons ADD COLUMN sealed BLOB")
    conn.executescript(
        """
        DROP TRIGGER IF EXISTS coupons_single_use;
        CREATE TRIGGER coupons_single_use BEFORE UPDATE ON coupons
        WHEN OLD.redeemed_txn IS NOT NULL OR NEW.redeemed_txn IS NULL OR NEW.id IS NOT OLD.id
          OR NEW.card_id IS NOT OLD.card_id OR NEW.category IS NOT OLD.category OR NEW.kind IS NOT OLD.kind
          OR NEW.value IS NOT OLD.value OR NEW.expires_day IS NOT OLD.expires_day
          OR NEW.issued_day IS NOT OLD.issued_day OR NEW.sealed IS NOT OLD.sealed
        BEGIN SELECT RAISE(ABORT, 'a coupon is redeemed once and never changed'); END;
        """
    )


def _migrate_4(conn: sqlite3.Connection) -> None:
    """Generation counters: the database is the authority on key states, seen by every process.

    Every change of the key states bumps ``keys`` in the same transaction (the triggers make
    sure of it, whatever code changes them); every refresh of the category aggregates bumps
    ``stats``. Both only move forward, and so does each key version's state.
    """
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS generations (
            id INTEGER PRIMARY KEY CHECK (id = 1), keys INTEGER NOT NULL, stats INTEGER NOT NULL
        ) STRICT;
        INSERT OR IGNORE INTO generations (id, keys, stats) VALUES (1, 0, 0);
        CREATE TRIGGER IF NOT EXISTS generations_forward BEFORE UPDATE ON generations
        WHEN NEW.keys < OLD.keys OR NEW.stats < OLD.stats OR NEW.id IS NOT OLD.id
        BEGIN SELECT RAISE(ABORT, 'generations only move forward'); END;
        CREATE TRIGGER IF NOT EXISTS generations_no_delete BEFORE DELETE ON generations
        BEGIN SELECT RAISE(ABORT, 'the generations row is never deleted'); END;
        CREATE TRIGGER IF NOT EXISTS key_versions_new_generation AFTER INSERT ON key_versions
        BEGIN UPDATE generations SET keys = keys + 1 WHERE id = 1; END;
        CREATE TRIGGER IF NOT EXISTS key_versions_next_generation AFTER UPDATE OF state ON key_versions
        WHEN NEW.state IS NOT OLD.state
        BEGIN UPDATE generations SET keys = keys + 1 WHERE id = 1; END;
        CREATE TRIGGER IF NOT EXISTS key_versions_forward BEFORE UPDATE ON key_versions
        WHEN NEW.version IS NOT OLD.version
          OR instr('primary verify-only retired', NEW.state) < instr('primary verify-only retired', OLD.state)
        BEGIN SELECT RAISE(ABORT, 'a key state only moves forward: primary, verify-only, retired'); END;
        """
    )


def _migrate_6(conn: sqlite3.Connection) -> None:
    """Terminals of a store server: a name, a role and a keyed digest of the bearer key.

    Nothing here links a terminal to a card: no other table names a terminal.
    """
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS terminals (
            name TEXT PRIMARY KEY, role TEXT NOT NULL, digest BLOB NOT NULL UNIQUE,
            created_day TEXT NOT NULL, revoked_day TEXT
        ) STRICT;
        CREATE TRIGGER IF NOT EXISTS terminals_revoke_only BEFORE UPDATE ON terminals
        WHEN OLD.revoked_day IS NOT NULL OR NEW.revoked_day IS NULL OR NEW.name IS NOT OLD.name
          OR NEW.role IS NOT OLD.role OR NEW.digest IS NOT OLD.digest OR NEW.created_day IS NOT OLD.created_day
        BEGIN SELECT RAISE(ABORT, 'a terminal is only ever revoked, once'); END;
        CREATE TRIGGER IF NOT EXISTS terminals_no_delete BEFORE DELETE ON terminals
        BEGIN SELECT RAISE(ABORT, 'a terminal is revoked, never deleted'); END;
        """
    )


def _migrate_7(conn: sqlite3.Connection) -> None:
    """Card holders' own rights: a recovery stub per card, and erasure of one card.

    ``recovery`` keeps, per card, the keyed digest of the code on its detachable stub (never
    the code); the row is deleted when the code is used, so it works once. ``erasure`` is one
    row naming the card being erased (and, for a replacement, the card its documents move
    to), set only inside that transaction: the triggers let the ledger and the documents of
    that one card be deleted, or moved to that one new card unchanged otherwise, and nothing
    else. Cards issued before this migration have no stub.
    """
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS recovery (
            card_id INTEGER PRIMARY KEY REFERENCES cards(id), digest BLOB NOT NULL UNIQUE
        ) STRICT;
        CREATE TABLE IF NOT EXISTS erasure (
            id INTEGER PRIMARY KEY CHECK (id = 1), card_id INTEGER, new_card_id INTEGER
        ) STRICT;
        INSERT OR IGNORE INTO erasure (id, card_id, new_card_id) VALUES (1, NULL, NULL);
        CREATE TRIGGER IF NOT EXISTS erasure_no_delete BEFORE DELETE ON erasure
        BEGIN SELECT RAISE(ABORT, 'the erasure row is never deleted'); END;
        DROP TRIGGER IF EXISTS ledger_no_update;
        CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
        WHEN OLD.card_id IS NOT (SELECT card_id FROM erasure WHERE id = 1)
          OR NEW.card_id IS NOT (SELECT new_card_id FROM erasure WHERE id = 1)
          OR NEW.id IS NOT OLD.id OR NEW.txn_id IS NOT OLD.txn_id OR NEW.points IS NOT OLD.points
          OR NEW.day IS NOT OLD.day
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
        DROP TRIGGER IF EXISTS txns_no_update;
        CREATE TRIGGER txns_no_update BEFORE UPDATE ON txns
        WHEN OLD.card_id IS NOT (SELECT card_id FROM erasure WHERE id = 1)
          OR NEW.card_id IS NOT (SELECT new_card_id FROM erasure WHERE id = 1)
          OR NEW.id IS NOT OLD.id OR NEW.ref IS NOT OLD.ref OR NEW.kind IS NOT OLD.kind
          OR NEW.parent_id IS NOT OLD.parent_id OR NEW.day IS NOT OLD.day OR NEW.content IS NOT OLD.content
          OR NEW.lines IS NOT OLD.lines OR NEW.spend_cents IS NOT OLD.spend_cents
          OR NEW.discount_cents IS NOT OLD.discount_cents OR NEW.item IS NOT OLD.item
          OR NEW.balance_after IS NOT OLD.balance_after
        BEGIN SELECT RAISE(ABORT, 'till documents are immutable'); END;
        DROP TRIGGER IF EXISTS ledger_delete_only_retired;
        CREATE TRIGGER ledger_delete_only_retired BEFORE DELETE ON ledger
        WHEN (SELECT k.state FROM cards c JOIN key_versions k ON k.version = c.key_version
              WHERE c.id = OLD.card_id) IS NOT 'retired'
         AND (SELECT active FROM maintenance WHERE id = 1) IS NOT 1
         AND OLD.card_id IS NOT (SELECT card_id FROM erasure WHERE id = 1)
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
        DROP TRIGGER IF EXISTS txns_delete_only_retired;
        CREATE TRIGGER txns_delete_only_retired BEFORE DELETE ON txns
        WHEN (SELECT k.state FROM cards c JOIN key_versions k ON k.version = c.key_version
              WHERE c.id = OLD.card_id) IS NOT 'retired'
         AND (SELECT active FROM maintenance WHERE id = 1) IS NOT 1
         AND OLD.card_id IS NOT (SELECT card_id FROM erasure WHERE id = 1)
        BEGIN SELECT RAISE(ABORT, 'till documents are immutable'); END;
        """
    )


def _migrate_8(conn: sqlite3.Connection) -> None:
    """Ghost coupons: what the entrance would have printed for a card in the holdout arm.

    One row per card, day and category (the card id is part of the key, so an erasure, an
    export and a retired key version reach them as they reach coupons). No coupon id, no
    offer: the category and the days are what the uplift release compares and what the
    caps and fatigue rules count.
    """
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS ghosts (
            card_id INTEGER NOT NULL REFERENCES cards(id), issued_day TEXT NOT NULL, category TEXT NOT NULL,
            expires_day TEXT NOT NULL,
            PRIMARY KEY (card_id, issued_day, category)
        ) WITHOUT ROWID, STRICT;
        CREATE INDEX IF NOT EXISTS ghosts_issued_day ON ghosts (issued_day);
        """
    )


# Numbered migrations, applied in ascending order above the database's user_version;
# the schema version is the highest number.
_MIGRATIONS = {
    1: _migrate_1, 2: _migrate_2, 3: _migrate_3, 4: _migrate_4, 5: _migrate_5, 6: _migrate_6, 7: _migrate_7,
    8: _migrate_8,
}  # fmt: skip
SCHEMA_VERSION = max(_MIGRATIONS)


def _private_file(path: str) -> None:
    """Create the database file readable by its owner only; SQLite gives its WAL and
    shared-memory files the database file's permissions. An existing file is left as it is."""
    if path == ":memory:" or path.startswith("file:"):
        return
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _storage_failure(exc: sqlite3.DatabaseError) -> bool:
    """A failure of the storage itself - a full disk, an I/O error, a lock, a damaged page -
    rather than a constraint or trigger refusing a write (IntegrityError) or a misuse."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def integrity_problems(path: str | Path) -> list[str]:
    """SQLite's integrity check of a database file opened read-only: ``[]`` when it passes,
    else the problems (for a file too damaged to open, why it cannot be opened)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [f"the database cannot be opened: {exc}"]
    try:
        result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [f"the check could not run: {exc}"]
    finally:
        conn.close()
    return [] if result == ["ok"] else result


# Every table that holds rows of one card, with the column that names it: what a card
# holder's export shows and what an erasure deletes (children before parents).
CARD_TABLES: tuple[tuple[str, str], ...] = (
    ("coupons", "card_id"),
    ("ghosts", "card_id"),
    ("recovery", "card_id"),
    ("ledger", "card_id"),
    ("txns", "card_id"),
    ("history", "card_id"),
    ("visits", "card_id"),
    ("affinity", "card_id"),
    ("cards", "id"),
)
# What each of those tables is read in order of, for an export that reads the same every time.
_CARD_ORDER = {
    "coupons": "issued_day, id", "ghosts": "issued_day, category", "recovery": "card_id", "ledger": "id", "txns": "id",
    "history": "day, category", "visits": "day", "affinity": "category", "cards": "id",
}  # fmt: skip


_DOC_COLUMNS = (
    "t.id, t.kind, t.card_id, t.parent_id, t.day, t.content, t.lines, t.spend_cents, t.discount_cents, t.item,"
    " t.balance_after, l.points"
)


class Store:
    """One SQLite database. Use :meth:`transaction` around every write."""

    # the order coupons were issued in (SQLite's rowid)
    _COUPON_ORDER = "rowid"
    # columns that only keep an order, not shown in a card holder's export
    ORDER_COLUMNS: frozenset[str] = frozenset()
    INTEGRITY_CHECK = "SQLite integrity check"

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 10_000) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self.path = str(path)
        # called right after every BEGIN, inside the transaction (the service checks its key ring there)
        self.on_begin: Callable[[], None] | None = None
        try:
            _private_file(self.path)
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=busy_timeout_ms / 1000)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA secure_delete=ON")  # purged rows are overwritten, not left in free pages
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"database {self.path}: {exc}") from None

    def close(self) -> None:
        self.conn.close()

    def schema_version(self) -> int:
        """The highest migration applied (SQLite's ``user_version``)."""
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def describe(self) -> str:
        """The database, for messages: the file's path."""
        return self.path

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"database schema version {version} is newer than this anoncard ({SCHEMA_VERSION})")
        if version == SCHEMA_VERSION:
            return
        # sqlite-utils commits each DDL statement itself, so migrations run under a file
        # lock instead of one transaction; every step is idempotent (IF NOT EXISTS).
        with self._migration_lock():
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for number in sorted(n for n in _MIGRATIONS if n > version):
                _MIGRATIONS[number](self.conn)
                self.conn.execute(f"PRAGMA user_version={number}")

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.path == ":memory:":
            yield
            return
        import fcntl

        with os.fdopen(os.open(f"{self.path}.migrate-lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction that takes the write lock up front (``BEGIN IMMEDIATE``).

        Taking the lock first means a transaction never fails half way for lack of it. The
        busy timeout waits for other writers; beyond it, a few bounded retries with backoff;
        only then does "database is locked" reach the caller, as a StoreError.

        Whatever fails inside - a full disk, an I/O error, a damaged page, the commit itself -
        the transaction is rolled back and the caller gets a StoreError (a rule the database
        enforces with a constraint or trigger stays a ``sqlite3.IntegrityError``); the
        connection stays usable for the next transaction.
        """
        for attempt in range(_LOCK_RETRIES + 1):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.DatabaseError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise StoreError(f"database {self.path}: {exc}") from None
                if attempt == _LOCK_RETRIES:
                    raise StoreError(f"database {self.path}: still locked by another writer; try again") from None
                time.sleep(0.05 * 2**attempt)
        try:
            if self.on_begin is not None:
                self.on_begin()
            yield
            self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._rollback()
            if not _storage_failure(exc):  # a rule the database enforces, or a bug: the caller's
                raise
            raise StoreError(f"database {self.path}: {exc}; the transaction was rolled back") from None
        except BaseException:
            self._rollback()
            raise

    @contextmanager
    def reading(self) -> Iterator[None]:
        """A read-only transaction: several SELECTs see one snapshot, and the write lock is not
        taken (under WAL, writers go on meanwhile). Nothing written in it is kept.

        Raises:
            StoreError: the database cannot be read.
        """
        try:
            self.conn.execute("BEGIN")
            yield
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"database {self.path}: {exc}") from None
        finally:
            self._rollback()

    def _rollback(self) -> None:
        # after a failed COMMIT (a full disk) SQLite may have rolled back already
        if self.conn.in_transaction:
            with suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def backup(self, dest: str | Path) -> dict[str, int]:
        """A consistent copy of the database while terminals keep writing (SQLite online backup).

        The copy is made in a private temporary file beside ``dest`` (mode 0600 before SQLite
        opens it; no journal while it is written), checked, made durable, and only then given
        its name with a hard link that never replaces a file nor follows a planted link.

        Raises:
            StoreError: ``dest`` exists (as a file or a link), its directory is missing or
                open to others without the sticky bit, or the copy failed (a full disk, a
                failed integrity check); nothing is left behind.
        """
        dest = Path(dest)
        with files.Directory(dest.parent, field="dest", error=StoreError) as d:
            tmp = files.temp_name(dest.name)
            d.create(tmp, b"", durable=False)
            try:
                size = self._copy_into(str(dest.parent / tmp))
                fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d.fd)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                d.publish(tmp, dest.name)
            except OSError as exc:
                raise StoreError(f"backup: the copy could not be written ({exc.strerror}); nothing was kept") from None
            finally:
                d.remove(tmp)
        return {"bytes": size}

    def _copy_into(self, path: str) -> int:
        """Copy the database into the empty file ``path``; its size. Raises StoreError."""
        try:
            target = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"backup: cannot open the copy ({exc})") from None
        try:
            target.execute("PRAGMA journal_mode=OFF")  # no journal file beside the copy while it fills
            self.conn.backup(target)  # one step: a single read snapshot of the source
            target.execute("PRAGMA journal_mode=DELETE")  # the copy opens without WAL files
            check = target.execute("PRAGMA integrity_check").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(f"backup: the copy could not be written ({exc}); nothing was kept") from None
        finally:
            target.close()
        if check != "ok":
            raise StoreError(f"backup: the copy failed its integrity check ({check}); nothing was kept")
        return os.stat(path).st_size

    def restore_from(self, source: str | Path) -> None:
        """Replace this database's content with a backup, under the write lock.

        Raises:
            StoreError: the source is missing, damaged, or of a newer (or no) schema version.
        """
        source = Path(source)
        if not source.is_file():
            raise StoreError(f"restore: {source} not found")
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            check = src.execute("PRAGMA integrity_check").fetchone()[0]
            version = src.execute("PRAGMA user_version").fetchone()[0]
            page_size = src.execute("PRAGMA page_size").fetchone()[0]
            if check != "ok":
                raise StoreError(f"restore: {source} failed its integrity check")
            if source.stat().st_size % page_size:  # cut short: the check passes when the lost bytes were zeros
                raise StoreError(f"restore: {source} is truncated (not a whole number of pages)")
            if not 1 <= version <= SCHEMA_VERSION:
                raise StoreError(f"restore: {source} has schema version {version}, expected 1 to {SCHEMA_VERSION}")
            src.backup(self.conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"restore: {source}: {exc}") from None
        finally:
            src.close()
        self._migrate()  # a backup from an older anoncard is brought up to this schema

    def key_operation_lock(self) -> AbstractContextManager[None]:
        """Nothing to add on SQLite: the database is a file of the home, so the ring file's lock
        (:func:`anoncard.keyring.key_lock`) already covers every process that can write it."""
        return nullcontext()

    def checkpoint(self) -> bool:
        """Copy every WAL frame into the database file and truncate the WAL to zero bytes, so rows
        just deleted (secure_delete zeroes them in the pages) leave no older copy in either file.

        Call outside a transaction. Idle connections do not stand in the way; a reader inside a
        transaction holds its snapshot, and after the busy timeout this gives up and returns False
        (the frames stay in the WAL until the next checkpoint). True when the WAL is empty.
        """
        busy, _log, _done = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    # -- key versions -----------------------------------------------------------

    def key_generation(self) -> int:
        """The counter every change of the key states moves (one primary-key read)."""
        return self.conn.execute("SELECT keys FROM generations WHERE id = 1").fetchone()[0]

    def bump_key_generation(self, at_least: int = 0) -> int:
        """Move the key generation on, to above ``at_least`` too; returns the new value. Changes of
        key states move it by themselves (triggers); a restore, which replaces the content whole,
        calls this with the generation from before, so every process sees that the states moved."""
        self.conn.execute("UPDATE generations SET keys = CASE WHEN keys > ? THEN keys ELSE ? END + 1 WHERE id = 1",
            (at_least, at_least),)
        return self.key_generation()

    def stats_generation(self) -> int:
        """The counter every refresh of the category aggregates moves."""
        return self.conn.execute("SELECT stats FROM generations WHERE id = 1").fetchone()[0]

    def bump_stats_generation(self, at_least: int = 0) -> None:
        self.conn.execute("UPDATE generations SET stats = CASE WHEN stats > ? THEN stats ELSE ? END + 1 WHERE id = 1",
            (at_least, at_least),)

    def key_states(self) -> dict[int, str]:
        return dict(self.conn.execute("SELECT version, state FROM key_versions"))

    def set_key_state(self, version: int, state: str) -> None:
        self.conn.execute(
            "INSERT INTO key_versions (version, state) VALUES (?, ?) "
            "ON CONFLICT(version) DO UPDATE SET state = excluded.state",
            (version, state),
        )

    # -- cards -------------------------------------------------------------------

    def add_cards(self, tokens: list[bytes], key_version: int) -> None:
        self.conn.executemany(
            "INSERT INTO cards (token, key_version) VALUES (?, ?)", [(t, key_version) for t in tokens]
        )

    def find_card(self, tokens: list[tuple[int, bytes]]) -> Card | None:
        """The card whose stored token is one of ``(version, token)`` under that version,
        with its balance (one query: the hot path of every checkout)."""
        for version, token in tokens:
            row = self.conn.execute(
                "SELECT id, key_version, (SELECT coalesce(sum(points), 0) FROM ledger WHERE card_id = cards.id)"
                " FROM cards WHERE token = ?",
                (token,),
            ).fetchone()
            if row is not None and row[1] == version:
                return Card(*row)
        return None

    def relink(self, card_id: int, token: bytes, key_version: int) -> None:
        self.conn.execute("UPDATE cards SET token = ?, key_version = ? WHERE id = ?", (token, key_version, card_id))

    def count_cards(self, key_version: int | None = None) -> int:
        if key_version is None:
            return self.conn.execute("SELECT count(*) FROM cards").fetchone()[0]
        return self.conn.execute("SELECT count(*) FROM cards WHERE key_version = ?", (key_version,)).fetchone()[0]

    def purge_key_version(self, key_version: int) -> int:
        """Delete every card under ``key_version`` (which must be retired) and all it held."""
        where = "card_id IN (SELECT id FROM cards WHERE key_version = ?)"
        self.conn.execute(f"DELETE FROM coupons WHERE {where}", (key_version,))
        self.conn.execute(f"DELETE FROM ghosts WHERE {where}", (key_version,))
        self.conn.execute(f"DELETE FROM recovery WHERE {where}", (key_version,))
        for table in ("ledger", "txns", "history", "visits", "affinity"):
            if table == "txns":  # refunds point at their checkout: children first
                self.conn.execute(f"DELETE FROM txns WHERE parent_id IS NOT NULL AND {where}", (key_version,))
            self.conn.execute(f"DELETE FROM {table} WHERE {where}", (key_version,))
        return self.conn.execute("DELETE FROM cards WHERE key_version = ?", (key_version,)).rowcount

    # -- card holders: recovery stubs, export, erasure, replacement -------------------

    def add_recovery(self, rows: list[tuple[bytes, bytes]]) -> None:
        """Store the keyed digest of each new card's recovery code: rows of ``(token, digest)``."""
        self.conn.executemany(
            "INSERT INTO recovery (card_id, digest) SELECT id, ? FROM cards WHERE token = ?",
            [(digest, token) for token, digest in rows],
        )

    def find_recovery(self, digest: bytes) -> int | None:
        """The card whose unused recovery code has this keyed digest."""
        row = self.conn.execute("SELECT card_id FROM recovery WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else row[0]

    def add_card(self, token: bytes, key_version: int) -> int:
        """Insert one card; its id."""
        return self.conn.execute(
            "INSERT INTO cards (token, key_version) VALUES (?, ?) RETURNING id", (token, key_version)
        ).fetchall()[0][0]

    def card_rows(self, card_id: int) -> dict[str, list[dict[str, object]]]:
        """Every row the database links to one card, per table of :data:`CARD_TABLES`, each row
        by its column names (the export a card holder takes away)."""
        out: dict[str, list[dict[str, object]]] = {}
        for table, column in CARD_TABLES:
            cur = self.conn.execute(
                f"SELECT * FROM {table} WHERE {column} = ? ORDER BY {_CARD_ORDER[table]}", (card_id,)
            )
            names = [d[0] for d in cur.description]
            out[table] = [
                {n: v for n, v in zip(names, row, strict=True) if n not in self.ORDER_COLUMNS} for row in cur
            ]
        return out

    @contextmanager
    def _erasing(self, card_id: int, new_card_id: int | None) -> Iterator[None]:
        """Inside a transaction: let the triggers delete this card's ledger and documents, or move
        them to ``new_card_id`` unchanged otherwise."""
        self.conn.execute("UPDATE erasure SET card_id = ?, new_card_id = ? WHERE id = 1", (card_id, new_card_id))
        try:
            yield
        finally:
            self.conn.execute("UPDATE erasure SET card_id = NULL, new_card_id = NULL WHERE id = 1")

    def move_card(self, card_id: int, new_card_id: int) -> None:
        """Move one card's documents, ledger, history, visits and folded totals to a new card (which
        holds none yet), in the caller's transaction. Coupons stay: they are bound to the old card."""
        with self._erasing(card_id, new_card_id):
            for table in ("txns", "ledger", "history", "visits", "affinity"):
                self.conn.execute(f"UPDATE {table} SET card_id = ? WHERE card_id = ?", (new_card_id, card_id))

    def carry(self, card_id: int, points: int, day: str) -> None:
        """A carried ledger entry (no document): a balance brought over from a replaced card."""
        self.conn.execute(
            "INSERT INTO ledger (card_id, txn_id, points, day) VALUES (?, NULL, ?, ?)", (card_id, points, day)
        )

    def erase_card(self, card_id: int) -> dict[str, int]:
        """Delete the card and every row linked to it (see :data:`CARD_TABLES`), in the caller's
        transaction; rows deleted per table. Checkpoint afterwards so no copy stays in the WAL."""
        counts = {}
        with self._erasing(card_id, None):
            for table, column in CARD_TABLES:
                n = 0
                if table == "txns":  # refunds point at their checkout: children first
                    n = self.conn.execute(
                        "DELETE FROM txns WHERE parent_id IS NOT NULL AND card_id = ?", (card_id,)
                    ).rowcount
                counts[table] = n + self.conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (card_id,)).rowcount
        return counts

    # -- terminals ------------------------------------------------------------------

    def add_terminal(self, name: str, role: str, digest: bytes, day: str) -> bool:
        """Record a terminal; False when the name is taken (revoked names stay taken)."""
        cur = self.conn.execute(
            "INSERT INTO terminals (name, role, digest, created_day) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (name, role, digest, day),
        )
        return cur.rowcount == 1

    def terminals(self) -> list[TerminalRow]:
        """Every terminal, by name."""
        rows = self.conn.execute(
            "SELECT name, role, digest, created_day, revoked_day FROM terminals ORDER BY name"
        ).fetchall()
        return [TerminalRow(*r) for r in rows]

    def find_terminal(self, digest: bytes) -> TerminalRow | None:
        """The terminal whose key has this digest."""
        row = self.conn.execute(
            "SELECT name, role, digest, created_day, revoked_day FROM terminals WHERE digest = ?", (digest,)
        ).fetchone()
        return None if row is None else TerminalRow(*row)

    def revoke_terminal(self, name: str, day: str) -> bool:
        """Revoke a terminal's key; False when there is no such terminal or it is revoked already."""
        cur = self.conn.execute(
            "UPDATE terminals SET revoked_day = ? WHERE name = ? AND revoked_day IS NULL", (day, name)
        )
        return cur.rowcount == 1

    # -- documents and ledger ---------------------------------------------------

    def find_document(self, ref: bytes) -> Document | None:
        row = self.conn.execute(
            f"SELECT {_DOC_COLUMNS} FROM txns t JOIN ledger l ON l.card_id = t.card_id AND l.txn_id = t.id"
            " WHERE t.ref = ?",
            (ref,),
        ).fetchone()
        return None if row is None else Document(*row)

    def children(self, parent_id: int) -> list[Document]:
        rows = self.conn.execute(
            f"SELECT {_DOC_COLUMNS} FROM txns t JOIN ledger l ON l.card_id = t.card_id AND l.txn_id = t.id"
            " WHERE t.parent_id = ? ORDER BY t.id",
            (parent_id,),
        )
        return [Document(*r) for r in rows]

    def lock_card(self, card_id: int) -> None:
        """Hold the card's row for this transaction: SQLite's write transaction holds the whole
        database already (``BEGIN IMMEDIATE``)."""

    def balance(self, card_id: int) -> int:
        return self.conn.execute(
            "SELECT coalesce(sum(points), 0) FROM ledger WHERE card_id = ?", (card_id,)
        ).fetchone()[0]

    def add_document(
        self,
        *,
        ref: bytes,
        kind: str,
        card_id: int,
        day: str,
        content: bytes,
        lines: str,
        spend_cents: int,
        points: int,
        balance_after: int,
        item: str | None = None,
        parent_id: int | None = None,
        discount_cents: int = 0,
    ) -> int | None:
        """Insert a document and its ledger entry (the caller holds the transaction); returns its
        id, or None when a document with this reference exists (a retry, or a reuse)."""
        row = self.conn.execute(
            "INSERT INTO txns (ref, kind, card_id, parent_id, day, content, lines, spend_cents, discount_cents,"
            " item, balance_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ref) DO NOTHING RETURNING id",
            (ref, kind, card_id, parent_id, day, content, lines, spend_cents, discount_cents, item, balance_after),
        ).fetchone()
        if row is None:
            return None
        self.conn.execute(
            "INSERT INTO ledger (card_id, txn_id, points, day) VALUES (?, ?, ?, ?)", (card_id, row[0], points, day)
        )
        return row[0]

    def recent_documents(self, card_id: int, limit: int = 10) -> list[Document]:
        rows = self.conn.execute(
            f"SELECT {_DOC_COLUMNS} FROM ledger l JOIN txns t ON t.id = l.txn_id WHERE l.card_id = ?"
            " ORDER BY l.txn_id DESC LIMIT ?",
            (card_id, limit),
        )
        return [Document(*r) for r in rows]

    def ledger_sum(self) -> int:
        return self.conn.execute("SELECT coalesce(sum(points), 0) FROM ledger").fetchone()[0]

    # -- history -----------------------------------------------------------------

    def add_history(self, card_id: int, day: str, spend: dict[str, int], *, basket: bool) -> None:
        """Add spend per category for one card and day; ``basket`` counts a new visit."""
        n = 1 if basket else 0
        self.conn.executemany(
            "INSERT INTO history (card_id, day, category, spend_cents, baskets) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(card_id, day, category) DO UPDATE SET"
            " spend_cents = history.spend_cents + excluded.spend_cents, baskets = history.baskets + excluded.baskets",
            [(card_id, day, c, cents, n) for c, cents in spend.items()],
        )
        self.conn.execute(
            "INSERT INTO visits (card_id, day, visits, spend_cents) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(card_id, day) DO UPDATE SET"
            " visits = visits.visits + excluded.visits, spend_cents = visits.spend_cents + excluded.spend_cents",
            (card_id, day, n, sum(spend.values())),
        )

    def add_category_weeks(self, week: str, spend: dict[str, int]) -> None:
        """Add spend per category to the store-wide, card-free totals of one week."""
        self.conn.executemany(
            "INSERT INTO category_weeks (week, category, spend_cents, baskets) VALUES (?, ?, ?, 1)"
            " ON CONFLICT(week, category) DO UPDATE SET"
            " spend_cents = category_weeks.spend_cents + excluded.spend_cents, baskets = category_weeks.baskets + 1",
            [(week, c, cents) for c, cents in spend.items()],
        )

    def drop_category_weeks(self, cutoff: str) -> dict[str, int]:
        """Delete the store-wide weekly totals of weeks that began before ``cutoff``."""
        dropped = self.conn.execute("DELETE FROM category_weeks WHERE week < ?", (cutoff,)).rowcount
        return {"category weeks dropped": dropped}

    def visit_count(self, card_id: int) -> int:
        return self.conn.execute(
            "SELECT coalesce(sum(visits), 0) FROM visits WHERE card_id = ?", (card_id,)
        ).fetchone()[0]

    def counts(self) -> dict[str, int]:
        """Row counts per table, for summaries and audits."""
        tables = ("cards", "txns", "ledger", "history", "visits", "affinity", "coupons", "ghosts", "events")
        return {t: self.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}

    # -- retention -----------------------------------------------------------------

    @contextmanager
    def maintenance(self) -> Iterator[None]:
        """Inside a transaction: let the ledger compact (the triggers check this flag)."""
        self.conn.execute("UPDATE maintenance SET active = 1 WHERE id = 1")
        try:
            yield
        finally:
            self.conn.execute("UPDATE maintenance SET active = 0 WHERE id = 1")

    def balances(self) -> dict[int, int]:
        return dict(self.conn.execute("SELECT card_id, sum(points) FROM ledger GROUP BY card_id"))

    def compact_documents(self, cutoff: str) -> dict[str, int]:
        """Fold documents dated before ``cutoff`` into one carried ledger entry per card.

        Needs :meth:`maintenance`. Balances do not change: each card's entries (old carried
        entries included) become one entry with their sum.
        """
        # a coupon goes with the document that used it (a replayed checkout may be dated
        # before the coupon's issue day), else the document's deletion would break the key
        coupons = self.conn.execute(
            "DELETE FROM coupons WHERE issued_day < ? OR redeemed_txn IN (SELECT id FROM txns WHERE day < ?)",
            (cutoff, cutoff),
        ).rowcount
        ghosts = self.conn.execute("DELETE FROM ghosts WHERE issued_day < ?", (cutoff,)).rowcount
        old_docs = "SELECT id FROM txns WHERE day < ?"
        carried = self.conn.execute(
            "SELECT card_id, sum(points) FROM ledger"
            f" WHERE txn_id IN ({old_docs}) OR (txn_id IS NULL AND card_id IN"
            "   (SELECT card_id FROM txns WHERE day < ?))"
            " GROUP BY card_id",
            (cutoff, cutoff),
        ).fetchall()
        self.conn.execute(
            f"DELETE FROM ledger WHERE txn_id IN ({old_docs})"
            " OR (txn_id IS NULL AND card_id IN (SELECT card_id FROM txns WHERE day < ?))",
            (cutoff, cutoff),
        )
        self.conn.execute("DELETE FROM txns WHERE day < ? AND parent_id IS NOT NULL", (cutoff,))
        documents = self.conn.execute("DELETE FROM txns WHERE day < ?", (cutoff,)).rowcount
        self.conn.executemany(
            "INSERT INTO ledger (card_id, txn_id, points, day) VALUES (?, NULL, ?, ?)",
            [(card_id, points, cutoff) for card_id, points in carried],
        )
        return {
            "documents compacted": documents,
            "carried entries": len(carried),
            "coupons dropped": coupons,
            "ghosts dropped": ghosts,
        }

    def fold_history(self, cutoff: str) -> dict[str, int]:
        """Fold dated history before ``cutoff`` into undated per-card totals; drop old visits."""
        self.conn.execute(
            "INSERT INTO affinity (card_id, category, spend_cents, baskets)"
            " SELECT card_id, category, sum(spend_cents), sum(baskets) FROM history WHERE day < ?"
            " GROUP BY card_id, category"
            " ON CONFLICT(card_id, category) DO UPDATE SET"
            " spend_cents = affinity.spend_cents + excluded.spend_cents, baskets = affinity.baskets + excluded.baskets",
            (cutoff,),
        )
        history = self.conn.execute("DELETE FROM history WHERE day < ?", (cutoff,)).rowcount
        visits = self.conn.execute("DELETE FROM visits WHERE day < ?", (cutoff,)).rowcount
        return {"history rows folded": history, "visit rows dropped": visits}

    # -- event log ---------------------------------------------------------------------

    def last_event(self) -> Event | None:
        row = self.conn.execute("SELECT id, at, kind, detail, mac FROM events ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else Event(*row)

    def add_event(self, event_id: int, at: str, kind: str, detail: str, mac: bytes) -> None:
        self.conn.execute(
            "INSERT INTO events (id, at, kind, detail, mac) VALUES (?, ?, ?, ?, ?)", (event_id, at, kind, detail, mac)
        )

    def events(self, kind: str | None = None) -> list[Event]:
        """The events in order, optionally of one kind."""
        if kind is None:
            rows = self.conn.execute("SELECT id, at, kind, detail, mac FROM events ORDER BY id").fetchall()
        else:
            rows = self.conn.execute(
                "SELECT id, at, kind, detail, mac FROM events WHERE kind = ? ORDER BY id", (kind,)
            ).fetchall()
        return [Event(*r) for r in rows]

    def count_events(self, kind: str, first: str, last: str) -> int:
        """How many events of ``kind`` the log records from day ``first`` to ``last`` (inclusive)."""
        return self.conn.execute(
            # "~" sorts after every timestamp of the day ``last``
            "SELECT count(*) FROM events WHERE kind = ? AND at >= ? AND at < ?", (kind, first, f"{last}~")
        ).fetchone()[0]

    # -- insights: per-card rows that only the differentially private release reads ------

    def spend_rows(self, first: str, last: str) -> list[SpendRow]:
        """Category history of every card from day ``first`` to ``last`` (inclusive)."""
        rows = self.conn.execute(
            "SELECT card_id, day, category, spend_cents, baskets FROM history WHERE day >= ? AND day <= ?"
            " ORDER BY card_id, day, category",
            (first, last),
        )
        return [SpendRow(*r) for r in rows]

    def visit_rows(self, first: str, last: str) -> list[VisitRow]:
        """Visits of every card from day ``first`` to ``last`` (inclusive)."""
        rows = self.conn.execute(
            "SELECT card_id, day, visits, spend_cents FROM visits WHERE day >= ? AND day <= ? ORDER BY card_id, day",
            (first, last),
        )
        return [VisitRow(*r) for r in rows]

    def first_visit_days(self) -> dict[int, str]:
        """The first day each card's kept visits show (older ones are gone with their retention)."""
        rows = self.conn.execute("SELECT card_id, MIN(day) FROM visits GROUP BY card_id")
        return {card_id: day for card_id, day in rows}

    def coupon_uses(self, first: str, last: str) -> list[CouponUse]:
        """Coupons printed from day ``first`` to ``last`` (inclusive) and whether each was used."""
        rows = self.conn.execute(
            "SELECT card_id, issued_day, redeemed_txn FROM coupons WHERE issued_day >= ? AND issued_day <= ?"
            " ORDER BY card_id, issued_day",
            (first, last),
        )
        return [CouponUse(card_id, day, txn is not None) for card_id, day, txn in rows]

    def discount_rows(self, first: str, last: str) -> list[DiscountRow]:
        """Per card, the coupon discounts of its documents from day ``first`` to ``last`` (refunds
        give theirs back), for the uplift's net spend."""
        rows = self.conn.execute(
            "SELECT card_id, sum(discount_cents) FROM txns WHERE day >= ? AND day <= ? GROUP BY card_id"
            " ORDER BY card_id",
            (first, last),
        )
        return [DiscountRow(card_id, cents) for card_id, cents in rows]

    def card_tokens(self) -> list[TokenRow]:
        """Every card's id and token (the uplift release draws the arms from the tokens)."""
        rows = self.conn.execute("SELECT id, token FROM cards ORDER BY id")
        return [TokenRow(card_id, token) for card_id, token in rows]

    def offer_rows(self, first: str, last: str) -> list[OfferRow]:
        """Coupons printed from day ``first`` to ``last`` (inclusive): card, category and days."""
        rows = self.conn.execute(
            "SELECT card_id, category, issued_day, expires_day FROM coupons WHERE issued_day >= ? AND issued_day <= ?"
            " ORDER BY card_id, issued_day, category",
            (first, last),
        )
        return [OfferRow(*r) for r in rows]

    def ghost_rows(self, first: str, last: str) -> list[GhostRow]:
        """Ghost coupons recorded from day ``first`` to ``last`` (inclusive)."""
        rows = self.conn.execute(
            "SELECT card_id, category, issued_day, expires_day FROM ghosts WHERE issued_day >= ? AND issued_day <= ?"
            " ORDER BY card_id, issued_day, category",
            (first, last),
        )
        return [GhostRow(*r) for r in rows]

    # -- read-only inspection for the audit -------------------------------------------

    def schema(self) -> dict[str, list[str]]:
        """Every table and its columns, as SQLite itself reports them (via sqlite-utils)."""
        import sqlite_utils

        db = sqlite_utils.Database(self.conn)
        return {t.name: [c.name for c in t.columns] for t in db.tables if not t.name.startswith("sqlite_")}

    def distinct_values(self, table: str, column: str) -> list[object]:
        """Distinct non-null values of one column (names come from :meth:`schema`, never from input)."""
        return [
            v for (v,) in self.conn.execute(f'SELECT DISTINCT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL')
        ]

    def count_before(self, table: str, column: str, day: str) -> int:
        return self.conn.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}" < ?', (day,)).fetchone()[0]

    def integrity_check(self) -> list[str]:
        """``["ok"]``, or SQLite's list of problems (a page too damaged to check is one)."""
        try:
            return [r[0] for r in self.conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            return [f"the check could not run: {exc}"]

    # -- coupons and suggestions ----------------------------------------------------

    def card_profile(self, card_id: int, *, max_days: int = 60, since: str = "") -> tuple[list, list, list]:
        """A card's recent dated history ``(day, category, baskets)``, its undated totals
        ``(category, baskets)`` and its visits ``(day, visits)``.

        Only the card's last ``max_days`` visit days are read (never less than from ``since``
        on): older days weigh little, and the entrance must answer at once even for a card
        that shops every day. (On the Complete Journey year, 60 days instead of 120 change
        hit@3 by -0.04 points and halve the work for the heaviest shoppers.)
        """
        visits = self.conn.execute(
            "SELECT day, visits FROM visits WHERE card_id = ? ORDER BY day DESC LIMIT ?", (card_id, max_days)
        ).fetchall()
        start = ""
        if len(visits) == max_days:
            start = visits[-1][0]  # the oldest visit day read
            if since and since < start:
                start = since
                visits = self.conn.execute(
                    "SELECT day, visits FROM visits WHERE card_id = ? AND day >= ?", (card_id, start)
                ).fetchall()
        history = self.conn.execute(
            "SELECT day, category, baskets FROM history WHERE card_id = ? AND day >= ?", (card_id, start)
        ).fetchall()
        affinity = self.conn.execute("SELECT category, baskets FROM affinity WHERE card_id = ?", (card_id,)).fetchall()
        return history, affinity, visits

    def cards_with_visits(self) -> list[int]:
        """The ids of cards with at least one visit kept, ascending."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT card_id FROM visits ORDER BY card_id")]

    def card_histories(self, card_ids: list[int]) -> list[tuple[list, list, list]]:
        """For each card of ``card_ids`` (in that order): its whole dated history ``(day,
        category, baskets)``, its undated totals ``(category, baskets)`` and its visits ``(day,
        visits)`` - what the nightly fit of the suggestion model learns from."""
        if not card_ids:
            return []
        marks = ", ".join("?" * len(card_ids))
        out: dict[int, tuple[list, list, list]] = {i: ([], [], []) for i in card_ids}
        history = (
            f"SELECT card_id, day, category, baskets FROM history WHERE card_id IN ({marks})"
            " ORDER BY card_id, day, category"
        )
        for card_id, day, category, baskets in self.conn.execute(history, card_ids):
            out[card_id][0].append((day, category, baskets))
        affinity = (
            f"SELECT card_id, category, baskets FROM affinity WHERE card_id IN ({marks}) ORDER BY card_id, category"
        )
        for card_id, category, baskets in self.conn.execute(affinity, card_ids):
            out[card_id][1].append((category, baskets))
        visits = f"SELECT card_id, day, visits FROM visits WHERE card_id IN ({marks}) ORDER BY card_id, day"
        for card_id, day, n in self.conn.execute(visits, card_ids):
            out[card_id][2].append((day, n))
        return [out[i] for i in card_ids]

    def card_coupons(self, card_id: int, since: str) -> list[CouponRow]:
        """A card's coupons issued since a day, oldest first."""
        rows = self.conn.execute(
            "SELECT id, category, kind, value, issued_day, expires_day, redeemed_txn, sealed FROM coupons"
            f" WHERE card_id = ? AND issued_day >= ? ORDER BY issued_day, {self._COUPON_ORDER}",
            (card_id, since),
        )
        return [CouponRow(*r) for r in rows]

    def add_coupons(self, rows: list[tuple]) -> None:
        """Rows of ``(digest, card_id, category, kind, value, issued_day, expires_day, sealed)``."""
        self.conn.executemany(
            "INSERT INTO coupons (id, card_id, category, kind, value, issued_day, expires_day, sealed)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def card_ghosts(self, card_id: int, since: str) -> list[GhostRow]:
        """A card's ghost coupons recorded since a day, oldest first."""
        rows = self.conn.execute(
            "SELECT card_id, category, issued_day, expires_day FROM ghosts WHERE card_id = ? AND issued_day >= ?"
            " ORDER BY issued_day, category",
            (card_id, since),
        )
        return [GhostRow(*r) for r in rows]

    def add_ghosts(self, rows: list[GhostRow]) -> None:
        """Record ghost coupons; one already recorded for the card, day and category stays as it is."""
        self.conn.executemany(
            "INSERT INTO ghosts (card_id, issued_day, category, expires_day) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (card_id, issued_day, category) DO NOTHING",
            [(g.card_id, g.issued_day, g.category, g.expires_day) for g in rows],
        )

    def find_coupon(self, digest: bytes) -> FoundCoupon | None:
        """A recorded coupon, by the keyed digest of its id."""
        row = self.conn.execute(
            "SELECT card_id, category, kind, value, expires_day, redeemed_txn FROM coupons WHERE id = ?",
            (digest,),
        ).fetchone()
        return None if row is None else FoundCoupon(*row)

    def redeem_coupon(self, digest: bytes, txn_id: int) -> bool:
        """Mark a coupon used by a document; False if it was used already (atomic)."""
        cur = self.conn.execute(
            "UPDATE coupons SET redeemed_txn = ? WHERE id = ? AND redeemed_txn IS NULL", (txn_id, digest)
        )
        return cur.rowcount == 1

    def coupons_of_document(self, txn_id: int) -> list[DocumentCoupon]:
        rows = self.conn.execute(
            f"SELECT category, kind, value FROM coupons WHERE redeemed_txn = ? ORDER BY {self._COUPON_ORDER}", (txn_id,)
        )
        return [DocumentCoupon(*r) for r in rows]

    def refresh_category_stats(self, recent_days: int = 14) -> dict[str, int]:
        """Recompute store-wide, card-free aggregates: category popularity (over the history
        kept and over the last ``recent_days`` of it) and same-day co-occurrence; moves the
        stats generation, so other processes drop what they cached."""
        self.bump_stats_generation()
        total = self.conn.execute("SELECT coalesce(sum(visits), 0) FROM visits").fetchone()[0]
        self.conn.execute("DELETE FROM category_stats")
        self.conn.execute("DELETE FROM category_pairs")
        if total == 0:
            return {"baskets": 0, "categories": 0, "pairs": 0}
        (latest,) = self.conn.execute("SELECT max(day) FROM visits").fetchone()
        since = (date.fromisoformat(latest) - timedelta(days=recent_days)).isoformat()
        recent_total = self.conn.execute("SELECT sum(visits) FROM visits WHERE day > ?", (since,)).fetchone()[0]
        self.conn.execute(
            "INSERT INTO category_stats (category, baskets, share_ppm, recent_ppm)"
            " SELECT category, sum(baskets), sum(baskets) * 1000000 / ?,"
            "  coalesce(sum(CASE WHEN day > ? THEN baskets END), 0) * 1000000 / ?"
            " FROM history GROUP BY category",
            (total, since, recent_total),
        )
        self.conn.execute(
            "INSERT INTO category_pairs (a, b, baskets, given_a_ppm)"
            " SELECT h1.category, h2.category, count(*), count(*) * 1000000 / s.baskets"
            " FROM history h1 JOIN history h2 ON h2.card_id = h1.card_id AND h2.day = h1.day"
            "  AND h2.category != h1.category"
            " JOIN category_stats s ON s.category = h1.category"
            " GROUP BY h1.category, h2.category, s.baskets"
        )
        categories = self.conn.execute("SELECT count(*) FROM category_stats").fetchone()[0]
        pairs = self.conn.execute("SELECT count(*) FROM category_pairs").fetchone()[0]
        return {"baskets": total, "categories": categories, "pairs": pairs}

    def category_stats(self) -> tuple[dict[str, int], dict[str, int], dict[str, dict[str, int]]]:
        """``(share_ppm by category, recent_ppm by category, given_a_ppm by a then b)``."""
        shares = dict(self.conn.execute("SELECT category, share_ppm FROM category_stats"))
        recent = dict(self.conn.execute("SELECT category, recent_ppm FROM category_stats"))
        pairs: dict[str, dict[str, int]] = {}
        for a, b, ppm in self.conn.execute("SELECT a, b, given_a_ppm FROM category_pairs"):
            pairs.setdefault(a, {})[b] = ppm
        return shares, recent, pairs
