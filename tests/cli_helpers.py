"""Helpers shared by the tests: run a command against a home, issue cards, snapshot storage."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import psycopg
from click.testing import CliRunner, Result

from anoncard.cards import ALPHABET
from anoncard.storage import database_url
from cli.main import main
from tests.pg_cluster import copy_database, give_own_database

DB_NAME = "anoncard.db"
# what a rule the database enforces (constraint, trigger) raises, on either backend
RULE_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)
KEYRING_NAME = "keyring.json"


def db_files(home: Path) -> bytes:
    """The bytes of the database and its WAL, as a thief of the disk would read them (on
    PostgreSQL, whose files are the server's: the database's logical content)."""
    url = database_url(home)
    if url is not None:
        return _pg_content(url)
    return b"".join((home / n).read_bytes() for n in (DB_NAME, f"{DB_NAME}-wal") if (home / n).exists())


def db_digest(home: Path) -> str:
    """A digest of the database: equal before and after means nothing was stored (a WAL file
    that a new connection creates empty counts as no WAL)."""
    return hashlib.sha256(db_files(home)).hexdigest()


def cli(home: Path, *args: str, input: str | bytes | None = None) -> Result:
    """Run ``anoncard --home HOME ARGS...`` in-process, stdout and stderr kept apart."""
    return CliRunner().invoke(main, ["--home", str(home), *args], input=input)


def ok(result: Result) -> Result:
    """Assert a command succeeded, showing its output when it did not."""
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def make_home(home: Path) -> Path:
    give_own_database(home)
    ok(cli(home, "init"))
    return home


def issue(home: Path, count: int = 1) -> list[str]:
    """Issue ``count`` cards through the CLI; their codes, in order (each line: card code, recovery code)."""
    codes = [line.split()[0] for line in ok(cli(home, "card", "issue", "--count", str(count))).stdout.splitlines()]
    assert len(codes) == count
    return codes


def copy_home(template: Path, dest: Path) -> Path:
    """A private copy of a prepared home (modes kept, so the key ring stays 0600)."""
    shutil.copytree(template, dest)
    copy_database(template, dest)
    return dest


def execute(home: Path, sqlite_sql: str, pg_sql: str | None = None) -> list[tuple]:
    """Run statements on the home's database behind anoncard's back (as an intruder or a
    damaged disk would), in its dialect: ``pg_sql`` on PostgreSQL when the two differ.
    The rows of the last statement, if it returns any."""
    url = database_url(home)
    if url is None:
        conn = sqlite3.connect(home / DB_NAME)
        try:
            rows: list[tuple] = []
            for statement in filter(str.strip, sqlite_sql.split(";")):
                rows = conn.execute(statement).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()
    with psycopg.connect(url) as pg:
        cur = pg.execute(pg_sql or sqlite_sql)
        return cur.fetchall() if cur.description else []


def _pg_content(url: str) -> bytes:
    """Every value of every table of a PostgreSQL database, bytes as they are, the rest as text."""
    out = []
    with psycopg.connect(url) as pg:
        tables = [t for (t,) in pg.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            " ORDER BY table_name")]  # fmt: skip
        for t in tables:
            for row in pg.execute(f'SELECT * FROM "{t}" ORDER BY 1'):
                out += [bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row]
    return b"\x00".join(out)


def dump(home: Path) -> list[str]:
    """The database's full logical content (schema and rows) as SQL text (on PostgreSQL: every
    table's name, columns and rows in order, bytes in hex as SQLite's dump writes them)."""
    url = database_url(home)
    if url is not None:
        with psycopg.connect(url) as pg:
            tables = [t for (t,) in pg.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                " ORDER BY table_name")]  # fmt: skip
            out = []
            for t in tables:
                cur = pg.execute(f'SELECT * FROM "{t}" ORDER BY 1')
                out.append(f"{t} {[c.name for c in cur.description]}")
                out += [repr(tuple(v.hex() if isinstance(v, bytes) else v for v in r)) for r in cur.fetchall()]
            return out
    conn = sqlite3.connect(home / DB_NAME)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def snapshot(home: Path) -> tuple[dict[str, bytes], list[str]]:
    """Every file of the home, byte for byte (main DB and key ring included), then the logical dump.

    The bytes are read before the dump, so the dump's own connection cannot hide a change.
    """
    files = {p.name: p.read_bytes() for p in sorted(home.iterdir()) if p.is_file()}
    assert KEYRING_NAME in files and (DB_NAME in files or database_url(home) is not None)
    return files, dump(home)


def assert_unchanged(home: Path, before: tuple[dict[str, bytes], list[str]]) -> None:
    files_before, dump_before = before
    files_after, dump_after = snapshot(home)
    assert dump_after == dump_before, "the database's logical content changed"
    assert files_after.get(DB_NAME) == files_before.get(DB_NAME), "the main database file's bytes changed"
    assert files_after == files_before, "a file in the home changed"


def assert_refused(result: Result, *, exit_code: int, needles: tuple[str, ...], as_json: bool, code: str) -> None:
    """An orderly refusal: exit code, ``Error: ...`` on stderr naming the rule, JSON error object with --json."""
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback, no crash
    assert result.exit_code == exit_code, (result.exit_code, result.stderr)
    assert result.stderr.startswith("Error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    if as_json:
        data = json.loads(result.stdout)
        assert data == {"error": {"code": code, "message": result.stderr[len("Error: ") :].rstrip("\n")}}
    else:
        assert result.stdout == ""


def typo(code: str, position: int = 5) -> str:
    """``code`` with one symbol (counted in the grouped code) replaced by another alphabet symbol."""
    ch = code[position]
    assert ch in ALPHABET, "pick a position holding a data symbol, not a dash"
    return code[:position] + ALPHABET[(ALPHABET.index(ch) + 1) % len(ALPHABET)] + code[position + 1 :]


def transposed(code: str) -> str:
    """``code`` with the first pair of different neighbouring data symbols swapped."""
    for i in range(3, len(code) - 1):
        a, b = code[i], code[i + 1]
        if "-" not in (a, b) and a != b:
            return code[:i] + b + a + code[i + 2 :]
    raise AssertionError("no two different neighbours")  # pragma: no cover


def home_with_a_customer(path: Path) -> tuple[Path, str]:
    """A home with one card that has bought something, the WAL folded into the database: a value
    the gate let through would show in the file."""
    from anoncard import Service, init_home
    from tests.conftest import DAY, fixed_clock

    give_own_database(path)
    init_home(path, today=DAY)
    with Service.open(path, clock=fixed_clock) as svc:
        code = svc.issue_cards({"count": 1})[0].code
        svc.checkout({"card": code, "txn": "t1", "lines": [{"category": "dairy", "amount": "3.49"}]})
        svc.store.checkpoint()
    return path, code
