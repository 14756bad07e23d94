"""The till's durable outbox: checkouts and refunds waiting for the server, in order.

A till that cannot reach the server (a network failure, a 5xx, a 429) keeps the request
in a local SQLite file and replays it, oldest first, when the server is back. The
server's idempotency (the document number plus the content digest) makes a replay
exactly-once: a request that was credited before its answer was lost is answered
``"replayed": true`` and credits nothing again.

Design:

* one row per queued request: sequence, operation, body (JSON), the sale's own time,
  attempts, last error code, the earliest time of the next attempt;
* ``synchronous=FULL`` in WAL mode: a row is on disk before :meth:`Outbox.put`
  returns, so a till killed right after queueing loses nothing;
* a delivered row is deleted in the same transaction that records the delivery; a
  row whose replay the server refuses for good (a 4xx) moves to ``dead_letters`` in
  one transaction, without its card code, so an operator sees it and it is never
  retried;
* the body must hold the card code to be replayed. It is protected by the file
  being owner-only (0600, an existing file readable by others is refused), by
  deleting the row on delivery or dead-lettering, and by ``secure_delete`` plus a
  truncating WAL checkpoint, so a delivered code is overwritten in the database and
  gone from the WAL, not only unlinked from a page.

This is the till's own file, apart from the server's database (``anoncard.store``):
it holds nothing the server stores and is not covered by the server's policy audit.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .errors import OutboxError

QUEUEABLE = ("checkout", "refund")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('checkout', 'refund')),
    body TEXT NOT NULL,
    sale_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    op TEXT NOT NULL,
    document TEXT NOT NULL,
    body TEXT NOT NULL,
    sale_at TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at TEXT NOT NULL,
    status INTEGER NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Queued:
    """A request waiting in the outbox. ``body`` holds the card code: never log it."""

    seq: int
    op: str
    body: dict
    sale_at: str
    attempts: int
    last_error: str | None
    next_attempt_at: str

    @property
    def document(self) -> str:
        return document_number(self.op, self.body)

    def __repr__(self) -> str:  # the body (with its card code) stays out of tracebacks and logs
        return f"Queued(seq={self.seq}, op={self.op!r}, document={self.document!r}, attempts={self.attempts})"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A request the server refused for good on replay; ``body`` is without the card code."""

    seq: int
    op: str
    document: str
    body: dict
    sale_at: str
    attempts: int
    failed_at: str
    status: int
    code: str
    message: str

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class Status:
    """What the outbox holds: the queue's length and head, and the dead letters."""

    queued: int
    dead_letters: list[DeadLetter]
    oldest_sale: str | None
    last_error: str | None
    next_attempt_at: str | None

    def to_dict(self) -> dict:
        return {
            "queued": self.queued,
            "oldest_sale": self.oldest_sale,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at,
            "dead_letters": [d.to_dict() for d in self.dead_letters],
        }


def document_number(op: str, body: dict) -> str:
    """The document number that makes a request exactly-once (a refund's own id, else the txn)."""
    if op == "refund" and isinstance(body.get("refund_id"), str):
        return body["refund_id"]
    txn = body.get("txn")
    return f"{txn}#full" if op == "refund" else str(txn)


def _secure_file(path: Path) -> None:
    """Create ``path`` owner-only, or refuse an existing one that is a link, someone else's,
    or open to others (the file holds card codes)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            raise OutboxError("outbox: the path is not a regular file (a link or a directory)") from None
        if info.st_uid != os.getuid():
            raise OutboxError("outbox: the file belongs to another user") from None
        if info.st_mode & 0o077:
            raise OutboxError("outbox: the file is readable or writable by others; chmod 600 it") from None
        return
    except OSError:
        raise OutboxError("outbox: cannot create the file (is its directory there and writable?)") from None
    os.close(fd)


class Outbox:
    """The queue of one till, in one SQLite file (created 0600 if missing).

    Raises:
        OutboxError: the file is open to others, or is not an outbox database.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        _secure_file(self.path)
        try:
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA secure_delete=ON")
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            raise OutboxError("outbox: the file is not an anoncard outbox database") from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def put(self, op: str, body: dict, sale_at: datetime, *, error: str | None = None, retry_at: datetime) -> int:
        """Queue one request (on disk when this returns); its sequence number."""
        if op not in QUEUEABLE:
            raise ValueError(f"outbox: {op!r} cannot be queued")
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO outbox (op, body, sale_at, attempts, last_error, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (op, json.dumps(body, separators=(",", ":")), _iso(sale_at), 0 if error is None else 1, error,
                 _iso(retry_at)),
            )  # fmt: skip
            return int(cur.lastrowid)

    def pending(self) -> list[Queued]:
        """Every queued request, oldest first."""
        rows = self._conn.execute(
            "SELECT seq, op, body, sale_at, attempts, last_error, next_attempt_at FROM outbox ORDER BY seq"
        ).fetchall()
        return [Queued(s, op, json.loads(b), at, n, err, nxt) for s, op, b, at, n, err, nxt in rows]

    def count(self) -> int:
        return self._conn.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def delivered(self, seq: int) -> None:
        """The server answered 2xx: the row (and its card code) goes."""
        with self._tx() as c:
            c.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def retry_later(self, seq: int, error: str, retry_at: datetime) -> None:
        """A network failure, 5xx or 429: count the attempt and wait until ``retry_at``."""
        with self._tx() as c:
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE seq = ?",
                (error, _iso(retry_at), seq),
            )

    def hold(self, seq: int, error: str, now: datetime) -> None:
        """Record why delivery stopped (the till's key was refused) without spending an attempt;
        the row is due again at once, so the next request tells the till too."""
        with self._tx() as c:
            c.execute("UPDATE outbox SET last_error = ?, next_attempt_at = ? WHERE seq = ?", (error, _iso(now), seq))

    def dead(self, item: Queued, status: int, code: str, message: str, failed_at: datetime) -> None:
        """The server refused the replay for good: move it to the dead letters, without its card code."""
        body = {k: v for k, v in item.body.items() if k != "card"}
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO dead_letters"
                " (seq, op, document, body, sale_at, attempts, failed_at, status, code, message)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (item.seq, item.op, item.document, json.dumps(body, separators=(",", ":")), item.sale_at,
                 item.attempts + 1, _iso(failed_at), status, code, message),
            )  # fmt: skip
            c.execute("DELETE FROM outbox WHERE seq = ?", (item.seq,))

    def dead_letters(self) -> list[DeadLetter]:
        rows = self._conn.execute(
            "SELECT seq, op, document, body, sale_at, attempts, failed_at, status, code, message"
            " FROM dead_letters ORDER BY seq"
        ).fetchall()
        return [DeadLetter(r[0], r[1], r[2], json.loads(r[3]), *r[4:]) for r in rows]

    def status(self) -> Status:
        pending = self.pending()
        head = pending[0] if pending else None
        return Status(
            queued=len(pending),
            dead_letters=self.dead_letters(),
            oldest_sale=head.sale_at if head else None,
            last_error=head.last_error if head else None,
            next_attempt_at=head.next_attempt_at if head else None,
        )

    def dismiss(self, seq: int) -> bool:
        """An operator has dealt with a dead letter: drop it. False if there was none."""
        with self._tx() as c:
            return c.execute("DELETE FROM dead_letters WHERE seq = ?", (seq,)).rowcount == 1

    def scrub(self) -> None:
        """Fold the WAL into the database and truncate it, so deleted rows (zeroed by
        secure_delete) leave no copy of a card code in the WAL file."""
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")
