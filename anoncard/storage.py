"""The storage interface: one Protocol, typed rows, the concurrency contract, backend choice.

Design overview. The service talks to storage only through :class:`Storage`; two
implementations stand behind it: :class:`anoncard.store.Store` (SQLite, one file, the
default for one store) and :class:`anoncard.postgres.PostgresStore` (PostgreSQL, for a
chain: several store servers in front of one database). Rows cross the boundary as the
frozen dataclasses below, never as tuples read by position.

SQL text is shared. ``PostgresStore`` inherits every method of ``Store`` whose SQL is
portable and runs the same statement text with the placeholder style adapted (``?`` to
``%s``). What differs between the dialects stays apart: DDL, triggers and migrations
(one numbered list per dialect), the transaction and locking statements, the event log's
append lock, the schema introspection, the integrity check, backup and restore.

The concurrency contract. Three operations read a value and write from it: a card's
balance (checkout, refund and redeem compute the new balance from the old), a coupon's
single use, and the event log's chain (read the last event, append id + 1 with its MAC).
They are correct under concurrent writers on both backends:

* SQLite has one writer: every write transaction starts with ``BEGIN IMMEDIATE``, so the
  read and the write of one transaction see no other writer in between.
* PostgreSQL runs READ COMMITTED and locks what it reads before it writes from it: the
  card row is locked (``SELECT ... FOR UPDATE``) when a write transaction finds a card or
  reads its balance, so two checkouts on one card queue on the row and the second reads
  the balance the first committed (a presentation that waited for a row another one
  re-linked to the primary key finds it no longer matching the old token, and looks
  again); a coupon is marked used by one ``UPDATE ... WHERE redeemed_txn IS NULL``,
  which a concurrent marker waits for and then finds nothing to update; the event log is
  appended under a transaction-scoped advisory lock, taken before the last event is read.
  Key operations also hold a session advisory lock, so operators on hosts with separate
  key ring files run them one at a time. A document number is unique by a unique index,
  inserted with ``ON CONFLICT DO NOTHING``: of two concurrent inserts one wins and the
  other sees a retry. A deadlock or serialisation failure (none is expected, as every
  transaction locks at most one card) rolls back and reaches the caller as a StoreError
  to retry, like a busy SQLite database.

Choosing the backend: a line ``database = "postgresql://..."`` in the home's
``database.toml`` (a home that names its database keeps it), else ``ANONCARD_DATABASE_URL``
(``postgresql://...``), else the SQLite file in the home. The key ring is a file of the
home on every server host, never in the database.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import StoreError

DATABASE_URL_ENV = "ANONCARD_DATABASE_URL"
DATABASE_FILE = "database.toml"


@dataclass(frozen=True, slots=True)
class Card:
    id: int
    key_version: int
    balance: int = 0


@dataclass(frozen=True, slots=True)
class Document:
    """A stored till document (checkout, refund or redemption) with its ledger points."""

    id: int
    kind: str
    card_id: int
    parent_id: int | None
    day: str
    content: bytes
    lines: str
    spend_cents: int
    discount_cents: int
    item: str | None
    balance_after: int
    points: int


@dataclass(frozen=True, slots=True)
class CouponRow:
    """A stored coupon. ``digest`` is the keyed digest of the printed id; ``sealed`` the id
    masked under a key of the ring (for a reprint)."""

    digest: bytes
    category: str
    kind: str
    value: int
    issued_day: str
    expires_day: str
    redeemed_txn: int | None
    sealed: bytes | None


@dataclass(frozen=True, slots=True)
class FoundCoupon:
    """A recorded coupon found by the keyed digest of its id."""

    card_id: int
    category: str
    kind: str
    value: int
    expires_day: str
    redeemed_txn: int | None


@dataclass(frozen=True, slots=True)
class DocumentCoupon:
    """A coupon a document used: what it offered."""

    category: str
    kind: str
    value: int


@dataclass(frozen=True, slots=True)
class SpendRow:
    """One card's spend in one category on one day (a row of ``history``), for insights."""

    card_id: int
    day: str
    category: str
    spend_cents: int
    baskets: int


@dataclass(frozen=True, slots=True)
class VisitRow:
    """One card's visits and spend on one day (a row of ``visits``), for insights."""

    card_id: int
    day: str
    visits: int
    spend_cents: int


@dataclass(frozen=True, slots=True)
class CouponUse:
    """One coupon printed for a card: when, and whether a document used it, for insights."""

    card_id: int
    issued_day: str
    redeemed: bool


@dataclass(frozen=True, slots=True)
class GhostRow:
    """A ghost coupon: the engine's pick for a card in the holdout arm, recorded, never printed."""

    card_id: int
    category: str
    issued_day: str
    expires_day: str


@dataclass(frozen=True, slots=True)
class OfferRow:
    """A coupon printed for a card (its category and days), for the uplift release."""

    card_id: int
    category: str
    issued_day: str
    expires_day: str


@dataclass(frozen=True, slots=True)
class DiscountRow:
    """A card's coupon discounts over a span, in cents, for the uplift release."""

    card_id: int
    cents: int


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A card's id and its keyed token: what the uplift release draws each card's arm from."""

    card_id: int
    token: bytes


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the hash-chained event log."""

    id: int
    at: str
    kind: str
    detail: str
    mac: bytes


@dataclass(frozen=True, slots=True)
class TerminalRow:
    """A terminal as stored: never its key, only the keyed digest of it."""

    name: str
    role: str
    digest: bytes
    created_day: str
    revoked_day: str | None


class Storage(Protocol):
    """What the service needs of a database. Every write runs inside :meth:`transaction`."""

    on_begin: Callable[[], None] | None
    INTEGRITY_CHECK: str
    ORDER_COLUMNS: frozenset[str]

    def close(self) -> None: ...
    def describe(self) -> str: ...
    def schema_version(self) -> int: ...
    def transaction(self) -> AbstractContextManager[None]: ...
    def reading(self) -> AbstractContextManager[None]: ...
    def maintenance(self) -> AbstractContextManager[None]: ...
    def key_operation_lock(self) -> AbstractContextManager[None]: ...
    def backup(self, dest: str | Path) -> dict[str, int]: ...
    def restore_from(self, source: str | Path) -> None: ...
    def checkpoint(self) -> bool: ...
    def key_generation(self) -> int: ...
    def bump_key_generation(self, at_least: int = 0) -> int: ...
    def stats_generation(self) -> int: ...
    def bump_stats_generation(self, at_least: int = 0) -> None: ...
    def key_states(self) -> dict[int, str]: ...
    def set_key_state(self, version: int, state: str) -> None: ...
    def add_cards(self, tokens: list[bytes], key_version: int) -> None: ...
    def find_card(self, tokens: list[tuple[int, bytes]]) -> Card | None: ...
    def relink(self, card_id: int, token: bytes, key_version: int) -> None: ...
    def count_cards(self, key_version: int | None = None) -> int: ...
    def purge_key_version(self, key_version: int) -> int: ...
    def add_recovery(self, rows: list[tuple[bytes, bytes]]) -> None: ...
    def find_recovery(self, digest: bytes) -> int | None: ...
    def add_card(self, token: bytes, key_version: int) -> int: ...
    def card_rows(self, card_id: int) -> dict[str, list[dict[str, object]]]: ...
    def move_card(self, card_id: int, new_card_id: int) -> None: ...
    def carry(self, card_id: int, points: int, day: str) -> None: ...
    def erase_card(self, card_id: int) -> dict[str, int]: ...
    def add_terminal(self, name: str, role: str, digest: bytes, day: str) -> bool: ...
    def terminals(self) -> list[TerminalRow]: ...
    def find_terminal(self, digest: bytes) -> TerminalRow | None: ...
    def revoke_terminal(self, name: str, day: str) -> bool: ...
    def find_document(self, ref: bytes) -> Document | None: ...
    def children(self, parent_id: int) -> list[Document]: ...
    def lock_card(self, card_id: int) -> None: ...
    def balance(self, card_id: int) -> int: ...
    def add_document(self, **fields: object) -> int | None: ...
    def recent_documents(self, card_id: int, limit: int = 10) -> list[Document]: ...
    def ledger_sum(self) -> int: ...
    def add_history(self, card_id: int, day: str, spend: dict[str, int], *, basket: bool) -> None: ...
    def add_category_weeks(self, week: str, spend: dict[str, int]) -> None: ...
    def drop_category_weeks(self, cutoff: str) -> dict[str, int]: ...
    def visit_count(self, card_id: int) -> int: ...
    def counts(self) -> dict[str, int]: ...
    def balances(self) -> dict[int, int]: ...
    def compact_documents(self, cutoff: str) -> dict[str, int]: ...
    def fold_history(self, cutoff: str) -> dict[str, int]: ...
    def last_event(self) -> Event | None: ...
    def add_event(self, event_id: int, at: str, kind: str, detail: str, mac: bytes) -> None: ...
    def events(self, kind: str | None = None) -> list[Event]: ...
    def spend_rows(self, first: str, last: str) -> list[SpendRow]: ...
    def visit_rows(self, first: str, last: str) -> list[VisitRow]: ...
    def first_visit_days(self) -> dict[int, str]: ...
    def coupon_uses(self, first: str, last: str) -> list[CouponUse]: ...
    def count_events(self, kind: str, first: str, last: str) -> int: ...
    def discount_rows(self, first: str, last: str) -> list[DiscountRow]: ...
    def card_tokens(self) -> list[TokenRow]: ...
    def offer_rows(self, first: str, last: str) -> list[OfferRow]: ...
    def ghost_rows(self, first: str, last: str) -> list[GhostRow]: ...
    def card_ghosts(self, card_id: int, since: str) -> list[GhostRow]: ...
    def add_ghosts(self, rows: list[GhostRow]) -> None: ...
    def schema(self) -> dict[str, list[str]]: ...
    def distinct_values(self, table: str, column: str) -> list[object]: ...
    def count_before(self, table: str, column: str, day: str) -> int: ...
    def integrity_check(self) -> list[str]: ...
    def card_profile(self, card_id: int, *, max_days: int = 60, since: str = "") -> tuple[list, list, list]: ...
    def cards_with_visits(self) -> list[int]: ...
    def card_histories(self, card_ids: list[int]) -> list[tuple[list, list, list]]: ...
    def card_coupons(self, card_id: int, since: str) -> list[CouponRow]: ...
    def add_coupons(self, rows: list[tuple]) -> None: ...
    def find_coupon(self, digest: bytes) -> FoundCoupon | None: ...
    def redeem_coupon(self, digest: bytes, txn_id: int) -> bool: ...
    def coupons_of_document(self, txn_id: int) -> list[DocumentCoupon]: ...
    def refresh_category_stats(self, recent_days: int = 14) -> dict[str, int]: ...
    def category_stats(self) -> tuple[dict[str, int], dict[str, int], dict[str, dict[str, int]]]: ...


def database_url(home: Path) -> str | None:
    """The PostgreSQL URL this home uses (its ``database.toml``, else ``ANONCARD_DATABASE_URL``),
    or None for the home's SQLite file.

    Raises:
        StoreError: ``database.toml`` is unreadable or names something other than a
            ``postgresql://`` URL (the value is never echoed: it may hold a password).
    """
    url = None
    path = Path(home) / DATABASE_FILE
    if path.exists():
        try:
            url = tomllib.loads(path.read_text(encoding="utf-8")).get("database")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            raise StoreError(f"{DATABASE_FILE}: cannot be read as TOML") from None
        if not isinstance(url, str):
            raise StoreError(f"{DATABASE_FILE}: field 'database' must be a postgresql:// URL string")
    else:
        url = os.environ.get(DATABASE_URL_ENV) or None
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise StoreError(f"field 'database': must be a postgresql:// URL ({DATABASE_URL_ENV} or {DATABASE_FILE})")
    return url


def open_storage(home: Path, db_name: str, *, synchronous: str = "FULL") -> Storage:
    """The home's database: PostgreSQL when a URL is configured, else the SQLite file
    ``db_name`` in the home. psycopg is imported only for PostgreSQL.

    Raises:
        StoreError: the database cannot be opened or migrated.
    """
    url = database_url(home)
    if url is not None:
        from .postgres import PostgresStore

        return PostgresStore(url)
    from .store import Store

    return Store(Path(home) / db_name, synchronous=synchronous)

