"""The audit passes on a clean store and fails, naming what is wrong, on each kind of damage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from anoncard import Service, audit, demo, init_home
from anoncard.keyring import KeyRing
from anoncard.storage import database_url
from tests.cli_helpers import dump, execute
from tests.conftest import clock_at, fixed_clock
from tests.pg_cluster import copy_database, give_own_database

TODAY = fixed_clock().date()
PG_UNGUARD_EVENTS = "ALTER TABLE events DISABLE TRIGGER events_append_only"


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo") / "home"
    give_own_database(home)
    init_home(home)
    with Service.open(home, clock=fixed_clock, synchronous="NORMAL") as svc:
        demo.run(svc, cards=40, checkouts=300)
    return home


@pytest.fixture
def copy(demo_home, tmp_path):
    target = tmp_path / "home"
    shutil.copytree(demo_home, target)
    copy_database(demo_home, target)
    return target


def failed(report) -> dict[str, list[str]]:
    return {c.key: c.details for c in report.checks if not c.passed}


def test_demo_home_passes(demo_home):
    report = audit.run(demo_home, today=TODAY)
    assert report.passed, report.to_markdown()
    assert [c.key for c in report.checks] == list("abcdefghij")


def test_an_undeclared_column_fails_the_schema_check(copy):
    sql = "ALTER TABLE cards ADD COLUMN customer_name TEXT;"
    if shutil.which("sqlite3") and database_url(copy) is None:
        subprocess.run(["sqlite3", str(copy / "anoncard.db"), sql], check=True)
    else:  # the same statement through Python's sqlite3, or on PostgreSQL
        execute(copy, sql)
    report = audit.run(copy, today=TODAY)
    assert not report.passed
    assert failed(report) == {"b": ["column cards.customer_name is not declared in the policy"]}


def test_an_undeclared_table_fails(copy):
    execute(copy, "CREATE TABLE loyalty_profiles (id INTEGER, email TEXT)")
    assert failed(audit.run(copy, today=TODAY)) == {"b": ["table loyalty_profiles is not declared in the policy"]}


def test_an_email_written_behind_the_gate_fails_the_pii_check(copy):
    execute(
        copy,
        "UPDATE history SET category = 'erika@example.de'"
        " WHERE (card_id, day, category) = (SELECT card_id, day, category FROM history LIMIT 1)",
    )
    problems = failed(audit.run(copy, today=TODAY))
    assert "c" in problems
    assert problems["c"] == ["history.category: a stored value looks like email address"]
    assert "erika" not in json.dumps(problems)  # the report says where, never what
    assert "d" in problems  # and it is not a category either


def test_an_edited_past_event_breaks_the_chain(copy):
    edit = """UPDATE events SET detail = '{"primary":7}' WHERE kind = 'key_rotated'"""
    execute(copy, f"DROP TRIGGER events_no_update; {edit}", f"{PG_UNGUARD_EVENTS}; {edit}")
    problems = failed(audit.run(copy, today=TODAY))
    assert list(problems) == ["g"]
    assert "(key_rotated) does not match its chain link" in problems["g"][0]


def test_a_deleted_event_is_noticed(copy):
    delete = "DELETE FROM events WHERE id = 1"
    execute(copy, f"DROP TRIGGER events_no_delete; {delete}", f"{PG_UNGUARD_EVENTS}; {delete}")
    problems = failed(audit.run(copy, today=TODAY))
    assert "event 1 is missing" in problems["g"][0]


def test_tokens_left_under_a_retired_key_fail(copy):
    # retire v1 in the key ring and the key table, but leave its cards in place
    ring = KeyRing.load(copy / "keyring.json")
    ring.retire(1)
    ring.save(copy / "keyring.json")
    execute(copy, "UPDATE key_versions SET state = 'retired' WHERE version = 1")
    ((left,),) = execute(copy, "SELECT count(*) FROM cards WHERE key_version = 1")
    assert left > 0
    problems = failed(audit.run(copy, today=TODAY))
    assert problems == {"f": [f"{left} cards still linked under retired key v1"]}


def test_retired_material_left_in_the_ring_fails(copy):
    path = copy / "keyring.json"
    doc = json.loads(path.read_text())
    doc["keys"][0]["state"] = "retired"  # material kept: the file lies
    path.write_text(json.dumps(doc))
    os.chmod(path, 0o600)
    problems = failed(audit.run(copy, today=TODAY))
    assert "key v1 is retired but its material is still in the key ring" in problems["f"]


def test_a_policy_file_changed_without_apply_fails(copy):
    path = copy / "policy.toml"
    path.write_text(path.read_text().replace("documents_days = 120", "documents_days = 3650"))
    problems = failed(audit.run(copy, today=TODAY))
    assert list(problems) == ["a"]


def test_retention_fails_when_time_passes_and_passes_after_purge(copy):
    later = TODAY.replace(year=TODAY.year + 2)
    problems = failed(audit.run(copy, today=later))
    assert list(problems) == ["e"]
    with Service.open(copy, clock=clock_at(later)) as svc:
        svc.purge()
    assert audit.run(copy, today=later).passed


def test_reports_render(demo_home):
    report = audit.run(demo_home, today=TODAY)
    md = report.to_markdown()
    assert md.startswith("# anoncard audit: PASS")
    assert "| check | result | evidence |" in md
    assert md.count("| pass |") == 10
    assert "<table>" in report.to_html()
    assert json.loads(report.to_json())["passed"] is True


def test_audit_never_writes(demo_home):
    sqlite = database_url(demo_home) is None
    before = (demo_home / "anoncard.db").read_bytes() if sqlite else dump(demo_home)
    audit.run(demo_home, today=TODAY)
    assert ((demo_home / "anoncard.db").read_bytes() if sqlite else dump(demo_home)) == before


def test_a_key_ring_copy_left_by_an_interrupted_write_fails(copy):
    stale = copy / ".keyring.json.0badf00d.tmp"
    stale.write_bytes((copy / "keyring.json").read_bytes())
    os.chmod(stale, 0o600)
    problems = failed(audit.run(copy, today=TODAY))
    assert list(problems) == ["f"]
    assert problems["f"][0].startswith(".keyring.json.0badf00d.tmp is a copy of the key ring left by an interrupted")
