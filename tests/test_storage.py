"""The storage interface: choosing the backend, psycopg only when PostgreSQL is used, ``anoncard
migrate``, and the PostgreSQL schema's rule for distribution by card id (Citus)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anoncard import StoreError, init_home
from anoncard.storage import database_url
from anoncard.store import SCHEMA_VERSION
from tests.cli_helpers import cli, ok

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.sqlite_only(reason="about the SQLite default: no database URL anywhere")
def test_sqlite_never_imports_psycopg(tmp_path):
    code = (
        "import sys; from pathlib import Path; import anoncard; from anoncard import Service, init_home;"
        f"init_home(Path({str(tmp_path / 'home')!r}));"
        f"Service.open(Path({str(tmp_path / 'home')!r})).close();"
        "print(sorted(m for m in sys.modules if m.startswith('psycopg')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "ANONCARD_DATABASE_URL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.sqlite_only(reason="about the SQLite default")
def test_migrate_reports_the_sqlite_schema(home):
    out = json.loads(ok(cli(home, "migrate", "--json")).stdout)
    assert out == {"database": str(home / "anoncard.db"), "backend": "sqlite", "schema_version": SCHEMA_VERSION}


@pytest.mark.parametrize(
    "text",
    ['database = "mysql://root:hunter2@db/x"\n', "database = 7\n", "database = [\n", 'database = "hunter2"\n'],
)
def test_a_bad_database_setting_is_refused_without_echo(tmp_path, text):
    home = tmp_path / "home"
    home.mkdir()
    (home / "database.toml").write_text(text)
    with pytest.raises(StoreError) as caught:
        database_url(home)
    assert "hunter2" not in caught.value.message and "mysql" not in caught.value.message
    assert "database" in caught.value.message
    with pytest.raises(StoreError):
        init_home(home)  # a home is not made on a setting it cannot use
    assert sorted(p.name for p in home.iterdir()) == ["database.toml"]


def test_the_environment_names_the_database_unless_the_home_does(tmp_path, monkeypatch):
    monkeypatch.setenv("ANONCARD_DATABASE_URL", "postgresql://a@/from-env?host=/nowhere")
    home = tmp_path / "home"
    home.mkdir()
    assert database_url(home) == "postgresql://a@/from-env?host=/nowhere"
    (home / "database.toml").write_text('database = "postgresql://a@/from-home?host=/nowhere"\n')
    assert database_url(home) == "postgresql://a@/from-home?host=/nowhere"
    monkeypatch.delenv("ANONCARD_DATABASE_URL")
    (home / "database.toml").unlink()
    assert database_url(home) is None


@pytest.mark.postgres_only
def test_every_per_card_table_carries_the_card_id_in_its_keys(database):
    """Distribution by card id (Citus) needs the card id in every primary key and unique
    constraint of a per-card table; the only exceptions are the four lookups by what a
    terminal presents, which docs/scaling.md turns into tables of their own."""
    import psycopg

    from anoncard.postgres import CONTROL_TABLES, GLOBAL_LOOKUPS

    with psycopg.connect(database) as conn:
        with_card = {t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND column_name = 'card_id'")}  # fmt: skip
        per_card = with_card - CONTROL_TABLES | {"cards"}
        keys = conn.execute(
            "SELECT t.relname, i.indisprimary, array_agg(a.attname ORDER BY k.ord)"
            " FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
            " CROSS JOIN LATERAL unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum"
            " WHERE n.nspname = current_schema() AND (i.indisunique OR i.indisprimary)"
            " GROUP BY t.relname, i.indexrelid, i.indisprimary"
        ).fetchall()
    assert per_card >= {"cards", "txns", "ledger", "history", "visits", "affinity", "coupons", "recovery"}
    exceptions = set()
    for table, primary, columns in keys:
        if table not in per_card:
            continue
        card_column = "id" if table == "cards" else "card_id"
        if card_column in columns:
            continue
        assert not primary, f"{table}: primary key {columns} lacks {card_column}"
        exceptions.add((table, tuple(columns)))
    assert exceptions == {(t, (c,)) for t, c in GLOBAL_LOOKUPS}
