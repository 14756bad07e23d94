"""``--at`` is read as strict ISO 8601 by every command; what Python's own parser also takes is refused."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from cli.main import main


def an_hour_ago() -> str:
    return (datetime.now() - timedelta(hours=1)).isoformat(timespec="seconds")


@pytest.mark.parametrize("at", ["2026-W47-1", "20261122", "2026-326", "2026-11-22T10", "٢٠٢٦-١١-٢٢"])
def test_a_loose_date_is_refused_by_name_without_echoing_it(home, at):
    card = CliRunner().invoke(main, ["--home", str(home), "card", "issue"]).output.split()[0]
    r = CliRunner().invoke(main, ["--home", str(home), "checkout", "--card", card, "--txn", "t1",
                                  "--line", "dairy=1.00", "--at", at])  # fmt: skip
    assert r.exit_code == 3, r.output
    assert r.stderr.startswith("Error: field 'at': must be an ISO 8601 date") and at not in r.stderr
    ok = CliRunner().invoke(main, ["--home", str(home), "checkout", "--card", card, "--txn", "t1",
                                   "--line", "dairy=1.00", "--at", an_hour_ago()])  # fmt: skip
    assert ok.exit_code == 0, ok.output
