"""The till's commands through the CLI: checkout, refund, balance, redeem, and the demo.

Bad input is refused with ``Error: ...`` naming the field or rule, a non-zero exit
code, a JSON error object under ``--json``, and storage left exactly as it was.
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from anoncard import cards
from tests.cli_helpers import (
    assert_refused,
    assert_unchanged,
    cli,
    copy_home,
    issue,
    make_home,
    ok,
    snapshot,
    transposed,
    typo,
)

NEVER_ISSUED = cards.generate().code


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A home with two cards; the first holds checkout ``t1`` (dairy 3.49, coffee 7.99), checkout ``t9``
    (wine 50.00) with a partial refund ``r0`` of wine 10.00, and checkout ``t8`` (dairy 1.00), fully refunded."""
    home = make_home(tmp_path_factory.mktemp("cli-checkout") / "home")
    code, other = issue(home, 2)
    ok(cli(home, "checkout", "--card", code, "--txn", "t1", "--line", "dairy=3.49", "--line", "coffee=7.99"))
    ok(cli(home, "checkout", "--card", code, "--txn", "t9", "--line", "wine=50.00"))
    ok(cli(home, "refund", "--txn", "t9", "--refund-id", "r0", "--line", "wine=10.00"))
    ok(cli(home, "checkout", "--card", code, "--txn", "t8", "--line", "dairy=1.00"))
    ok(cli(home, "refund", "--txn", "t8"))
    return home, code, other


@pytest.fixture
def store(template, tmp_path):
    """A private copy of the template home, so no test can leak state into another."""
    home, code, other = template
    return copy_home(home, tmp_path / "home"), code, other


def checkout_line(amount: str) -> list[str]:
    return ["checkout", "--card", "CODE", "--txn", "t2", "--line", f"dairy={amount}"]


def one_line(amount: object) -> dict:
    return {"card": "CODE", "txn": "t2", "lines": [{"category": "dairy", "amount": amount}]}


# (id, args, stdin, exit code, substrings stderr must hold, JSON error code)
CASES = [
    ("unknown card", ["checkout", "--card", NEVER_ISSUED, "--txn", "t2", "--line", "dairy=1.00"], None, 4,
     ("'card'", "unknown card"), "unknown_card"),
    ("code too short", ["checkout", "--card", "C1-7K3M-QX2D", "--txn", "t2", "--line", "dairy=1.00"], None, 4,
     ("'card'", "29 symbols, not 10"), "card_error"),
    ("code too long", ["checkout", "--card", "CODE-X", "--txn", "t2", "--line", "dairy=1.00"], None, 4,
     ("'card'", "29 symbols, not 30"), "card_error"),
    ("code outside alphabet", ["checkout", "--card", "BADCHAR", "--txn", "t2", "--line", "dairy=1.00"], None, 4,
     ("'card'", "outside the card alphabet"), "card_error"),
    ("one-symbol typo", ["checkout", "--card", "TYPO", "--txn", "t2", "--line", "dairy=1.00"], None, 4,
     ("'card'", "check character"), "card_error"),
    ("neighbours swapped", ["checkout", "--card", "SWAP", "--txn", "t2", "--line", "dairy=1.00"], None, 4,
     ("'card'", "check character"), "card_error"),
    ("amount -1", checkout_line("-1"), None, 3, ("'lines[0].amount'", "not an amount"), "policy_violation"),
    ("amount 0", checkout_line("0"), None, 3, ("'lines[0].amount'", "greater than 0"), "policy_violation"),
    ("amount NaN", checkout_line("NaN"), None, 3, ("'lines[0].amount'", "not an amount"), "policy_violation"),
    ("amount 1e309", checkout_line("1e309"), None, 3, ("'lines[0].amount'", "not an amount"), "policy_violation"),
    ("amount 3.499", checkout_line("3.499"), None, 3, ("'lines[0].amount'", "at most 2 decimals"),
     "policy_violation"),
    ("amount empty", checkout_line(""), None, 3, ("'lines[0].amount'", "not an amount"), "policy_violation"),
    ("amount above max", checkout_line("10000.01"), None, 3, ("'lines[0].amount'", "at most 10000.00"),
     "policy_violation"),
    ("second line bad", [*checkout_line("1.00"), "--line", "coffee=1,99"], None, 3,
     ("'lines[1].amount'", "not an amount"), "policy_violation"),
    ("JSON float amount", ["checkout", "--input", "-"], one_line(3.49), 3,
     ("'lines[0].amount'", "not a number"), "policy_violation"),
    ("JSON 1e309 amount", ["checkout", "--input", "-"], json.dumps(one_line(0)).replace(": 0}", ": 1e309}"), 3,
     ("'lines[0].amount'", "not a number"), "policy_violation"),
    ("JSON NaN constant", ["checkout", "--input", "-"], json.dumps(one_line(0)).replace(": 0}", ": NaN}"), 3,
     ("NaN is not allowed",), "policy_violation"),
    ("empty basket (JSON)", ["checkout", "--input", "-"], {"card": "CODE", "txn": "t2", "lines": []}, 3,
     ("'lines'", "basket is empty"), "policy_violation"),
    ("no lines (flags)", ["checkout", "--card", "CODE", "--txn", "t2"], None, 3,
     ("'lines'", "required"), "policy_violation"),
    ("txn reused, other content", ["checkout", "--card", "CODE", "--txn", "t1", "--line", "dairy=3.49"], None, 5,
     ("'txn'", "different content"), "ledger_error"),
    ("txn reused, other card", ["checkout", "--card", "OTHER", "--txn", "t1", "--line", "dairy=3.49",
                                "--line", "coffee=7.99"], None, 5, ("'txn'", "different content"), "ledger_error"),
    ("refund unknown txn", ["refund", "--txn", "never-sold"], None, 5, ("'txn'", "no checkout"), "ledger_error"),
    ("refund beyond the line", ["refund", "--txn", "t1", "--refund-id", "r1", "--line", "dairy=3.50"], None, 5,
     ("'lines'", "exceeds what remains", "(3.49)"), "ledger_error"),
    ("refund a category not bought", ["refund", "--txn", "t1", "--refund-id", "r1", "--line", "wine=1.00"], None, 5,
     ("'lines'", "exceeds what remains"), "ledger_error"),
    ("refund beyond an earlier refund", ["refund", "--txn", "t9", "--refund-id", "r1", "--line", "wine=40.01"],
     None, 5, ("'lines'", "exceeds what remains", "(40.00)"), "ledger_error"),
    ("refund of a refunded checkout", ["refund", "--txn", "t8", "--refund-id", "r1", "--line", "dairy=0.01"],
     None, 5, ("'lines'", "(0.00)"), "ledger_error"),
    ("refund id reused, other content", ["refund", "--txn", "t9", "--refund-id", "r0", "--line", "wine=20.00"],
     None, 5, ("'refund_id'", "different content"), "ledger_error"),
    ("refund partial without id", ["refund", "--txn", "t1", "--line", "dairy=1.00"], None, 3,
     ("'refund_id'", "required for a partial refund"), "policy_violation"),
    ("refund amount 0", ["refund", "--txn", "t1", "--refund-id", "r1", "--line", "dairy=0"], None, 3,
     ("'lines[0].amount'", "greater than 0"), "policy_violation"),
    ("refund amount NaN", ["refund", "--txn", "t1", "--refund-id", "r1", "--line", "dairy=NaN"], None, 3,
     ("'lines[0].amount'", "not an amount"), "policy_violation"),
    ("refund empty lines (JSON)", ["refund", "--input", "-"], {"txn": "t1", "refund_id": "r1", "lines": []}, 3,
     ("'lines'", "basket is empty"), "policy_violation"),
]  # fmt: skip


def substitute(text: str, code: str, other: str) -> str:
    return (
        text.replace("BADCHAR", code[:-1] + "U")
        .replace("TYPO", typo(code))
        .replace("SWAP", transposed(code))
        .replace("OTHER", other)
        .replace("CODE", code)
    )


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize(
    "args, stdin, exit_code, needles, error_code", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_and_changes_nothing(store, args, stdin, exit_code, needles, error_code, as_json):
    home, code, other = store
    args = [substitute(a, code, other) for a in args]
    if isinstance(stdin, dict):
        stdin = json.dumps(stdin)
    if stdin is not None:
        stdin = substitute(stdin, code, other)
    before = snapshot(home)
    result = cli(home, *args, *(["--json"] if as_json else []), input=stdin)
    assert_refused(result, exit_code=exit_code, needles=needles, as_json=as_json, code=error_code)
    for c in (code, other):  # a card code is never echoed
        assert c not in result.stderr and c.replace("-", "") not in result.stderr
    assert_unchanged(home, before)


def test_typo_helpers_make_codes_that_fail_their_check():
    code = cards.generate().code
    for bad in (typo(code), transposed(code)):
        assert bad != code and len(bad) == len(code)
        with pytest.raises(cards.CardError, match="check character"):
            cards.decode(bad)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize(
    "request_, field",
    [
        (
            {"card": "CODE", "txn": "t3", "email": "a@b.de", "lines": [{"category": "dairy", "amount": "1.00"}]},
            "'email'",
        ),
        (
            {"card": "CODE", "txn": "t3", "lines": [{"category": "dairy", "amount": "1.00", "email": "a@b.de"}]},
            "'lines[0].email'",
        ),
    ],  # fmt: skip
    ids=["request", "line"],
)
def test_a_request_with_an_email_field_is_refused_with_nothing_stored(store, request_, field, as_json):
    home, code, _ = store
    request_ = copy.deepcopy(request_)
    before = snapshot(home)
    stdin = json.dumps(request_).replace("CODE", code)
    result = cli(home, "checkout", "--input", "-", *(["--json"] if as_json else []), input=stdin)
    assert_refused(result, exit_code=3, needles=(field, "not allowed"), as_json=as_json, code="policy_violation")
    assert "a@b.de" not in result.stderr and "a@b.de" not in result.stdout  # personal data is never echoed
    assert_unchanged(home, before)
    # and the same basket without the field goes through: it was the email that was refused
    (request_ if "email" in request_ else request_["lines"][0]).pop("email")
    ok(cli(home, "checkout", "--input", "-", input=json.dumps(request_).replace("CODE", code)))


# -- happy paths -------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path):
    home = make_home(tmp_path / "home")
    (code,) = issue(home)
    return home, code


def points(home, code) -> int:
    data = json.loads(ok(cli(home, "balance", "--card", code, "--json")).stdout)
    return data["points"]


def test_checkout_with_flags_prints_a_receipt(fresh):
    home, code = fresh
    result = ok(cli(home, "checkout", "--card", code, "--txn", "till3-0001", "--line", "dairy=3.49",
                    "--line", "coffee=7.99"))  # fmt: skip
    assert result.stdout == "till3-0001: spend 11.48 EUR, points +11, balance 11\n"
    assert result.stderr == ""
    assert points(home, code) == 11


def test_checkout_from_json_on_stdin_prints_a_receipt_with_the_gift(fresh):
    home, code = fresh
    request = {"card": code, "txn": "till3-0002", "lines": [{"category": "Fruit", "amount": "10.00"},
                                                            {"category": "wine", "amount": "25.50"}]}  # fmt: skip
    result = ok(cli(home, "checkout", "--input", "-", input=json.dumps(request)))
    # fruit earns double: 20 + 25.5 = 45.5 -> 45 points; 35.50 EUR meets the 30 EUR gift
    assert result.stdout == "till3-0002: spend 35.50 EUR, points +45, balance 45\nhand over: chocolate bar\n"
    assert points(home, code) == 45


def test_checkout_json_receipt_and_a_retry_that_credits_nothing(fresh):
    home, code = fresh
    args = ["checkout", "--card", code, "--txn", "t1", "--line", "dairy=3.49", "--line", "coffee=7.99"]
    first = json.loads(ok(cli(home, *args, "--json")).stdout)
    assert first == {"kind": "checkout", "txn": "t1", "points": 11, "balance": 11, "spend": "11.48",
                     "replayed": False, "relinked": False}  # fmt: skip
    # the same lines in another order are the same content: a retry
    retry = ok(cli(home, "checkout", "--card", code, "--txn", "t1", "--line", "coffee=7.99", "--line", "dairy=3.49"))
    assert "already recorded" in retry.stdout
    assert retry.stdout.startswith("t1: spend 11.48 EUR, points +11, balance 11\n")
    again = json.loads(ok(cli(home, *args, "--json")).stdout)
    assert again == {**first, "replayed": True}
    assert points(home, code) == 11
    balance = json.loads(ok(cli(home, "balance", "--card", code, "--json")).stdout)
    assert balance["visits"] == 1 and [d["kind"] for d in balance["recent"]] == ["checkout"]


def test_full_refund_reverses_the_points(fresh):
    home, code = fresh
    ok(cli(home, "checkout", "--card", code, "--txn", "t1", "--line", "dairy=3.49", "--line", "coffee=7.99"))
    result = ok(cli(home, "refund", "--txn", "t1"))
    assert result.stdout == "t1: refunded 11.48 EUR, points -11, balance 0\n"
    assert points(home, code) == 0
    retry = ok(cli(home, "refund", "--txn", "t1", "--json"))
    assert json.loads(retry.stdout)["replayed"] is True
    assert points(home, code) == 0


def test_partial_refunds_reverse_exactly_what_the_basket_earned(fresh):
    home, code = fresh
    # fruit earns double: 2 * 10.00 + 5.00 -> 25 points (below the 30 EUR gift threshold)
    ok(cli(home, "checkout", "--card", code, "--txn", "t1", "--line", "dairy=5.00", "--line", "fruit=10.00"))
    assert points(home, code) == 25
    part = json.loads(ok(cli(home, "refund", "--txn", "t1", "--refund-id", "r1", "--line", "fruit=10.00",
                             "--json")).stdout)  # fmt: skip
    # the points-weighted share of the fruit is 20 of 25, not 10.00 of 15.00
    assert part == {"kind": "refund", "txn": "t1", "points": -20, "balance": 5, "spend": "-10.00", "refund_id": "r1",
                    "replayed": False, "relinked": False}  # fmt: skip
    # a retry of the same partial refund counts once
    retry = ok(cli(home, "refund", "--txn", "t1", "--refund-id", "r1", "--line", "fruit=10.00"))
    assert "already recorded" in retry.stdout
    assert points(home, code) == 5
    # the rest, in the human format; then nothing is left to refund
    rest = ok(cli(home, "refund", "--txn", "t1", "--refund-id", "r2", "--line", "dairy=5.00"))
    assert rest.stdout == "t1: refunded 5.00 EUR, points -5, balance 0\n"
    assert points(home, code) == 0
    before = snapshot(home)
    beyond = cli(home, "refund", "--txn", "t1", "--refund-id", "r3", "--line", "dairy=0.01")
    assert_refused(beyond, exit_code=5, needles=("'lines'", "(0.00)"), as_json=False, code="ledger_error")
    full = cli(home, "refund", "--txn", "t1", "--json")
    assert_refused(full, exit_code=5, needles=("'txn'", "already fully refunded"), as_json=True, code="ledger_error")
    assert_unchanged(home, before)


def gift_basket(home, code):
    """35.00 EUR (chocolate bar from 30.00), then a refund of 5.00 that keeps it at the threshold exactly."""
    receipt = ok(
        cli(home, "checkout", "--card", code, "--txn", "t1", "--line", "dairy=10.00", "--line", "coffee=25.00")
    )
    assert receipt.stdout == "t1: spend 35.00 EUR, points +35, balance 35\nhand over: chocolate bar\n"
    at_threshold = json.loads(
        ok(cli(home, "refund", "--txn", "t1", "--refund-id", "r1", "--line", "dairy=5.00", "--json")).stdout
    )
    assert at_threshold["points"] == -5 and "gift_to_return" not in at_threshold  # 30.00 still meets 30.00


def test_a_refund_below_the_gift_threshold_asks_for_the_gift_back(fresh):
    home, code = fresh
    gift_basket(home, code)
    below = ok(cli(home, "refund", "--txn", "t1", "--refund-id", "r2", "--line", "dairy=0.01"))
    assert below.stdout == (
        "t1: refunded 0.01 EUR, points -1, balance 29\nbasket is now below the threshold of: chocolate bar\n"
    )


def test_a_retried_refund_repeats_the_original_receipt_with_the_gift_to_return(fresh):
    home, code = fresh
    gift_basket(home, code)
    args = ["refund", "--txn", "t1", "--refund-id", "r2", "--line", "dairy=0.01", "--json"]
    first = json.loads(ok(cli(home, *args)).stdout)
    assert first["gift_to_return"] == "chocolate bar"
    # a till that lost the first response retries; it must learn the same thing
    retry = json.loads(ok(cli(home, *args)).stdout)
    assert retry == {**first, "replayed": True}


def test_the_gift_is_asked_back_once(fresh):
    home, code = fresh
    gift_basket(home, code)
    first = json.loads(
        ok(cli(home, "refund", "--txn", "t1", "--refund-id", "r2", "--line", "dairy=0.01", "--json")).stdout
    )
    assert first["gift_to_return"] == "chocolate bar"
    later = json.loads(
        ok(cli(home, "refund", "--txn", "t1", "--refund-id", "r3", "--line", "dairy=1.00", "--json")).stdout
    )
    assert "gift_to_return" not in later  # the basket was already below the threshold


def test_redeem_is_refused_without_enough_points_and_succeeds_with_them(fresh):
    home, code = fresh
    ok(cli(home, "checkout", "--card", code, "--txn", "t0", "--line", "dairy=3.49"))
    before = snapshot(home)
    refused = cli(home, "redeem", "--card", code, "--reward", "coffee", "--txn", "r1")
    assert_refused(refused, exit_code=5, needles=("'reward'", "costs 150 points, the card has 3"), as_json=False,
                   code="ledger_error")  # fmt: skip
    assert_unchanged(home, before)
    for i in range(2):
        receipt = ok(cli(home, "checkout", "--card", code, "--txn", f"w{i}", "--line", "wine=100.00"))
        assert "hand over: chocolate bar" in receipt.stdout
    assert points(home, code) == 203
    result = ok(cli(home, "redeem", "--card", code, "--reward", "coffee", "--txn", "r1"))
    assert result.stdout == "r1: redeemed coffee, points -150, balance 53\n"
    retry = json.loads(ok(cli(home, "redeem", "--card", code, "--reward", "coffee", "--txn", "r1", "--json")).stdout)
    assert retry["replayed"] is True and retry["balance"] == 53
    assert points(home, code) == 53
    unknown = cli(home, "redeem", "--card", code, "--reward", "caviar", "--txn", "r2", "--json")
    assert_refused(unknown, exit_code=3, needles=("'reward'",), as_json=True, code="policy_violation")
    assert points(home, code) == 53


# -- the demo ------------------------------------------------------------------------------


def test_demo_plays_a_store_week_and_its_summary_adds_up(tmp_path):
    home = tmp_path / "home"
    result = ok(cli(home, "demo", "--json", "--checkouts", "200", "--cards", "30"))
    summary = json.loads(result.stdout)
    assert summary["checkouts"] == 200
    assert summary["cards issued"] == 30
    assert summary["ledger balance total"] == (
        summary["points issued"] - summary["points reversed by refunds"] - summary["points redeemed"]
    )
    assert summary["database rows"]["txns"] == summary["database rows"]["ledger"]
    assert re.fullmatch(r"\d+\.\d\d", summary["spend (EUR, net of refunds)"])
    assert not home.exists()  # the demo plays in a temporary home, never in --home
