"""The auditor's commands: policy show/apply, purge, audit with reports and exit codes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from tests.cli_helpers import copy_home, execute
from tests.pg_cluster import home_database


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli-audit") / "home"
    with home_database(home):
        args = ["demo", "--into", str(home), "--cards", "30", "--checkouts", "200", "--json"]
        result = CliRunner().invoke(main, args)
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
    home = tmp_path / "broken"
    copy_home(demo_home, home)
    execute(home, "ALTER TABLE cards ADD COLUMN customer_name TEXT")
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


def _shape(markdown: str) -> list[str]:
    """A report with what depends on the demo's random week masked (home, day, counts of stored values);
    the policy fingerprint, the schema's size, the key states and the event count stay as they are."""
    lines = [ln for ln in markdown.splitlines() if not ln.startswith(("- home:", "- day:"))]
    return [re.sub(r"\d+", "N", ln) if ln.startswith(("| c ", "| d ", "| e ")) else ln for ln in lines]


@pytest.mark.sqlite_only(reason="the example report is of a SQLite home (its integrity check is SQLite's)")
def test_the_example_report_in_the_docs_is_what_the_audit_writes_today(demo_home, tmp_path):
    example = (Path(__file__).resolve().parent.parent / "docs" / "audit-example.md").read_text()
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    retired = run(home, "keys", "retire", "--yes")  # as the example was made: a demo home, then a retirement
    assert retired.exit_code == 0, retired.output
    report = tmp_path / "report.md"
    assert run(home, "audit", "--report", str(report)).exit_code == 0
    assert _shape(example) == _shape(report.read_text())
