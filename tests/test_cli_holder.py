"""The card holder's commands: card export, card erase, card replace (and the stub printed at issue)."""

from __future__ import annotations

import json

import pytest

from anoncard import Service
from anoncard.selfservice import Holder
from tests.cli_helpers import assert_refused, assert_unchanged, cli, make_home, ok, snapshot
from tests.conftest import fixed_clock


@pytest.fixture
def shop(tmp_path):
    home = make_home(tmp_path / "home")
    card, stub = ok(cli(home, "card", "issue")).stdout.split()
    ok(cli(home, "checkout", "--card", card, "--txn", "t1", "--line", "dairy=42.00", "--line", "fish=7.50"))
    return home, card, stub


def test_card_export_prints_the_export_document(shop):
    home, card, _stub = shop
    doc = json.loads(ok(cli(home, "card", "export", "--card", card)).stdout)
    assert doc["format"] == "anoncard-export/1" and doc["balance"] == 49
    with Service.open(home, clock=fixed_clock) as svc:
        assert doc["tables"] == Holder(svc).export({"card": card})["tables"]
    assert card not in json.dumps(doc)


def test_card_erase_needs_yes_then_forgets_the_card(shop):
    home, card, stub = shop
    before = snapshot(home)
    result = cli(home, "card", "erase", "--card", card, "--json")
    assert_refused(result, exit_code=3, needles=("'confirm'",), as_json=True, code="policy_violation")
    assert card not in result.stderr
    assert_unchanged(home, before)
    done = json.loads(ok(cli(home, "card", "erase", "--card", card, "--yes", "--json")).stdout)
    assert (done["erased"], done["points_forfeited"], done["reward"]) == (True, 49, None)
    gone = cli(home, "balance", "--card", card)
    assert gone.exit_code == 4 and "unknown card" in gone.stderr
    refused = cli(home, "card", "replace", "--recovery", stub)  # the stub went with the card
    assert refused.exit_code == 4 and stub not in refused.stderr


def test_card_replace_prints_the_new_card_and_stub_and_works_once(shop):
    home, card, stub = shop
    result = ok(cli(home, "card", "replace", "--recovery", stub, "--history"))
    lines = result.stdout.splitlines()
    assert lines[0].startswith("new card: C1-") and lines[1].startswith("recovery: R1-")
    assert lines[2] == "balance moved: 49 points; history moved"
    new_card, new_stub = lines[0].split()[-1], lines[1].split()[-1]
    assert json.loads(ok(cli(home, "balance", "--card", new_card, "--json")).stdout)["points"] == 49
    assert cli(home, "balance", "--card", card).exit_code == 4
    before = snapshot(home)
    again = cli(home, "card", "replace", "--recovery", stub, "--json")
    assert_refused(again, exit_code=4, needles=("'recovery'", "unknown recovery code"), as_json=True,
                   code="unknown_card")  # fmt: skip
    assert stub not in again.stderr
    assert_unchanged(home, before)
    out = json.loads(ok(cli(home, "card", "replace", "--recovery", new_stub, "--json")).stdout)
    assert sorted(out) == ["card", "recovery"] and out["card"] != new_card


def test_a_mistyped_recovery_code_is_refused_without_echo(shop):
    home, _card, stub = shop
    wrong = stub[:-1] + ("0" if stub[-1] != "0" else "1")
    result = cli(home, "card", "replace", "--recovery", wrong)
    assert_refused(result, exit_code=4, needles=("'recovery'",), as_json=False, code="card_error")
    assert wrong not in result.stderr
