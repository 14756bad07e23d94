"""`anoncard insights`: text, JSON, CSV and an HTML report that opens offline (and renders)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from anoncard import Service, init_home
from tests.pg_cluster import copy_database, give_own_database

from .cli_helpers import cli, ok

TODAY = date.today()


@pytest.fixture(scope="module")
def shop_home(tmp_path_factory) -> Path:
    """A home with four weeks of baskets that ended last Sunday."""
    home = tmp_path_factory.mktemp("insights") / "home"
    give_own_database(home)
    sunday = TODAY - timedelta(days=TODAY.isoweekday())
    first = sunday - timedelta(days=27)
    init_home(home, today=first)
    now = [datetime.combine(first, datetime.min.time())]
    with Service.open(home, clock=lambda: now[0], synchronous="NORMAL") as svc:
        codes = [s.code for s in svc.issue_cards({"count": 40})]
        n = 0
        for d in range(28):
            now[0] = datetime.combine(first + timedelta(days=d), datetime.min.time()).replace(hour=11)
            for i, code in enumerate(codes):
                if (i + d) % 4 == 0:
                    n += 1
                    second = ("milk", "coffee")[i % 2]
                    lines = [{"category": "bread", "amount": "2.49"}, {"category": second, "amount": "3.99"}]
                    svc.checkout({"card": code, "txn": f"doc-{n}", "lines": lines})
    return home


def copy_home(source: Path, dest: Path) -> None:
    """A copy of the shop with its own database (on PostgreSQL, a copy of the shop's): each test
    spends its own privacy budget."""
    shutil.copytree(source, dest)
    copy_database(source, dest)


def test_insights_writes_json_csv_and_html_and_spends_once(shop_home, tmp_path):
    home = tmp_path / "home"
    copy_home(shop_home, home)
    out_csv, out_html = tmp_path / "figures.csv", tmp_path / "report.html"
    result = ok(cli(home, "insights", "--period", "4weeks", "--json", "--csv", str(out_csv), "--html", str(out_html)))
    doc = json.loads(result.stdout)
    assert doc["epsilon"] == pytest.approx(1.0)
    assert doc["bounds"]["categories"] >= 1
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert {r["figure"] for r in rows} >= {"penetration", "sales", "active cards", "average basket"}
    assert len(rows) == len(doc["figures"])
    page = out_html.read_text()
    assert "<svg" in page and "95 % interval" in page
    assert not re.search(r"<script|<link|<img|(src|href)=[\"']?https?:|url\((?!#)", page)  # offline: nothing to fetch
    # the same span again: refused, exit code of InsightsRefused, nothing recorded
    again = cli(home, "insights", "--period", "4weeks", "--json")
    assert again.exit_code == 23
    assert json.loads(again.stdout)["error"]["code"] == "insights_refused"
    audit = ok(cli(home, "audit"))
    assert re.search(r"pass  i insights releases stay within the privacy budget: 1 releases", audit.stdout)


def test_insights_text_names_bounds_and_what_is_not_released(shop_home, tmp_path):
    home = tmp_path / "home"
    copy_home(shop_home, home)
    out = ok(cli(home, "insights", "--period", "week")).stdout
    assert "bounds per card (chosen privately): K = " in out
    assert "categories in this span: figures by category need a span of 28 days" in out
    assert "per card: the privacy unit is one card" in out


def test_a_region_grouping_is_refused_naming_the_field(shop_home, tmp_path):
    home = tmp_path / "home"
    copy_home(shop_home, home)
    result = cli(home, "insights", "--grouping", "north-west")
    assert result.exit_code == 3
    assert "field 'grouping'" in result.stderr and "north-west" not in result.stderr


def test_the_report_renders_in_headless_chromium(shop_home, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is needed to render the insights report in CI")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    home = tmp_path / "home"
    copy_home(shop_home, home)
    page = tmp_path / "report.html"
    ok(cli(home, "insights", "--html", str(page)))
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,1400",
         f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # a blank page compresses to a few kilobytes; charts do not
