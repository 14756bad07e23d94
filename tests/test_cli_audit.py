"""The auditor's commands: policy show/apply, purge, audit with reports and exit codes."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from cli.main import main


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli-audit") / "home"
    result = CliRunner().invoke(main, ["demo", "--into", str(home), "--cards", "30", "--checkouts", "200", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["checkouts"] == 200
    return home


def run(home, *args, input=None):
    return CliRunner().invoke(main, ["--home", str(home), *args], input=input)


def test_audit_passes_on_a_demo_home_and_writes_reports(demo_home, tmp_path):
    for suffix in (".md", ".html", ".json"):
        report = tmp_path / f"report{suffix}"
        result = run(demo_home, "audit", "--report", str(report))
        assert result.exit_code == 0, result.output
        assert "audit passed" in result.output
        assert report.stat().st_size > 500
    assert json.loads((tmp_path / "report.json").read_text())["passed"] is True
    assert (tmp_path / "report.md").read_text().startswith("# anoncard audit: PASS")


def test_audit_fails_with_its_own_exit_code_and_names_the_check(demo_home, tmp_path):
    import shutil

    home = tmp_path / "broken"
    shutil.copytree(demo_home, home)
    sqlite3.connect(home / "anoncard.db").executescript("ALTER TABLE cards ADD COLUMN customer_name TEXT;")
    result = run(home, "audit", "--json")
    assert result.exit_code == 10
    assert "Error: audit failed: b every table and column is declared" in result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is False
    assert [c["key"] for c in report["checks"] if not c["passed"]] == ["b"]


def test_policy_show_markdown_and_json(demo_home):
    md = run(demo_home, "policy", "show")
    assert md.exit_code == 0
    assert md.output.startswith("# Data-minimisation policy")
    data = json.loads(run(demo_home, "policy", "show", "--json").output)
    assert len(data["fingerprint"]) == 64
    assert data["fingerprint"] in md.output


def test_policy_apply_and_purge(tmp_path):
    home = tmp_path / "home"
    assert run(home, "init").exit_code == 0
    text = (home / "policy.toml").read_text().replace("documents_days = 120", "documents_days = 30")
    new = tmp_path / "new.toml"
    new.write_text(text)
    result = run(home, "policy", "apply", str(new), "--json")
    assert result.exit_code == 0, result.output
    change = json.loads(result.output)
    assert change["old"] != change["new"]
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('purpose = "how many cards to print"\n', ""))
    result = run(home, "policy", "apply", str(bad))
    assert result.exit_code == 9
    assert "Error: policy: requests.issue.fields.count.purpose is missing" in result.stderr
    result = run(home, "purge", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output)["documents compacted"] == 0
    assert run(home, "audit").exit_code == 0
