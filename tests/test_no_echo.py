"""Errors name the field and the rule, never the value: nothing a caller sent comes back in an
error unless it is from a closed set (field names anoncard declares, option names, choices)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anoncard import AnonCardError, Service, init_home, pii
from anoncard.cards import CardSecret, generate
from cli.main import main
from tests.conftest import DAY, fixed_clock
from tests.pg_cluster import give_own_database
from tests.test_hostile_values import HOSTILE

WINDOW = 8
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def leaked(secret: str, *outputs: object) -> str | None:
    """The first run of ``WINDOW`` characters of ``secret`` (or of its normalised form) found in
    any output, compared as written and case folded."""
    text = "\n".join(str(o) for o in outputs)
    folded = text.casefold()
    for form, haystack in ((secret, text), (secret.casefold(), folded), (pii.normalise(secret), folded)):
        for i in range(len(form) - WINDOW + 1):
            if form[i : i + WINDOW] in haystack:
                return form[i : i + WINDOW]
    return None


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("no-echo") / "home"
    give_own_database(home)
    init_home(home, today=DAY)
    with Service.open(home, clock=fixed_clock) as svc:
        code = svc.issue_cards({"count": 1})[0].code
        svc.checkout({"card": code, "txn": "t1", "lines": [{"category": "dairy", "amount": "3.49"}]})
    return home


def cli(home: Path, *args: str, input: str | None = None):
    return CliRunner().invoke(main, ["--home", str(home), *args], input=input)


# -- the defects, one by one ----------------------------------------------------------------------

CODE = generate().code


@pytest.mark.parametrize("key", [CODE, "erika@example.de", "DE89370400440532013000"])
def test_a_json_key_is_never_echoed(shop, key):
    """The base commit echoed any key of up to 40 characters: a card code whole, an e-mail address."""
    body = json.dumps({"card": CODE, "txn": "t2", "lines": [{"category": "dairy", "amount": "1"}], key: 1})
    result = cli(shop, "checkout", "--input", "-", "--json", input=body)
    assert result.exit_code == 3
    assert result.stderr == "Error: field #4 of the request: not allowed in a checkout request " \
                            "(the policy keeps only what serves the customer)\n"  # fmt: skip
    assert leaked(key, result.stdout, result.stderr) is None
    line = {"category": "dairy", "amount": "1", key: 1}
    result = cli(shop, "checkout", "--input", "-", input=json.dumps({"card": CODE, "txn": "t2", "lines": [line]}))
    assert "field #3 of lines[0]" in result.stderr and leaked(key, result.stderr) is None


def test_known_personal_data_field_names_are_still_named(shop):
    body = json.dumps({"card": CODE, "txn": "t2", "lines": [{"category": "dairy", "amount": "1"}], "email": "x"})
    assert "field 'email': not allowed" in cli(shop, "checkout", "--input", "-", input=body).stderr


@pytest.mark.parametrize(
    "args",
    [
        ["checkout", "--card", CODE, "--txn", "t2", "--line", CODE],  # a card code as a line
        ["checkout", "--card", CODE, "--txn", "t2", "--line", f"dairy={CODE}"],  # ... as an amount
        ["checkout", "--card", CODE, "--txn", "t2", "--line", f"{CODE}=1.00"],  # ... as a category
        ["card", "issue", "--count", "1", CODE],  # an extra argument
        ["card", "issue", "--count", CODE],  # a bad integer
        ["card", "issue", "--qr-format", CODE],  # a bad choice
        ["enter", "--card", CODE, "--qr-format", CODE],
        [CODE],  # no such command
        [f"--{CODE}"],  # no such option
        ["balance", f"--{CODE}=1"],
        ["demo", "--cards", CODE],
        ["checkout", "--at", CODE],
    ],
)
def test_a_card_code_typed_in_the_wrong_place_is_never_echoed(shop, args):
    for as_json in ([], ["--json"]):
        result = cli(shop, *args, *as_json)
        assert result.exit_code in (2, 3, 4), (result.exit_code, result.output)
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
        assert leaked(CODE, result.stdout, result.stderr) is None, result.stderr


def test_usage_errors_name_the_option_and_the_rule(shop):
    assert cli(shop, "card", "issue", "--count", "many").stderr.startswith(
        "Error: Invalid value for '--count': must be a whole number"
    )
    assert "must be one of png, svg" in cli(shop, "card", "issue", "--qr-format", "jpeg").stderr
    assert "unexpected extra arguments" in cli(shop, "keys", "list", "surplus").stderr
    assert "No such option '--email'" in cli(shop, "checkout", "--email", "a@b.de").stderr
    data = json.loads(cli(shop, "card", "issue", "--count", "x", "--json").stdout)
    assert data["error"]["code"] == "usage_error"


# -- the property: no error output holds 8 characters of a secret ---------------------------------

card_codes = st.integers(0, 2**130 - 1).map(lambda n: CardSecret(n).code)
luhn_numbers = st.text("0123456789", min_size=15, max_size=15).map(
    lambda body: next(f"4{body}"[:15] + d for d in "0123456789" if pii._payment_card(f"4{body}"[:15] + d))
)
grouped = st.tuples(luhn_numbers, st.sampled_from([".", "-", "/", " ", "\t", "  "])).map(
    lambda t: t[1].join(t[0][i : i + 4] for i in range(0, 16, 4))
)
emails = st.from_regex(r"[a-z]{3,10}\.[a-z]{3,10}@[a-z]{4,10}\.(de|com|org)", fullmatch=True)
flagged = st.sampled_from([v for v in HOSTILE if pii.scan(v, today=DAY) and len(v) >= WINDOW]) | grouped | emails
secrets = card_codes | flagged
KINDS = ["checkout", "refund", "balance", "redeem", "enter"]
PLACES = ["key", "card", "txn", "refund_id", "reward", "coupons", "lines", "category", "amount", "line key", "op",
          "at", "whole"]  # fmt: skip


def skeleton(kind: str) -> dict:
    lines = [{"category": "dairy", "amount": "3.49"}]
    return {
        "checkout": {"card": CODE, "txn": "ne-1", "lines": lines},
        "refund": {"txn": "no-such", "refund_id": "ne-r1", "lines": lines},
        "balance": {"card": CODE},
        "redeem": {"card": CODE, "txn": "ne-2", "reward": "coffee"},
        "enter": {"card": CODE},
    }[kind]


def place(kind: str, where: str, secret: str) -> object:
    request = skeleton(kind)
    if where == "whole":
        return secret
    if where == "key":
        request[secret] = "x"
    elif where in ("category", "amount"):
        request["lines"] = [{"category": "dairy", "amount": "1.00", where: secret}]
    elif where == "line key":
        request["lines"] = [{"category": "dairy", "amount": "1.00", secret: "1"}]
    elif where == "coupons":
        request["coupons"] = [secret]
    else:
        request[where] = secret
    return request


@given(flagged)
def test_every_generated_value_is_one_a_detector_flags(value):
    assert pii.scan(value, today=DAY)


@pytest.fixture(scope="module")
def lib(shop):
    svc = Service.open(shop, clock=fixed_clock)
    yield svc
    svc.close()


@SETTINGS
@given(secret=secrets, kind=st.sampled_from(KINDS), where=st.sampled_from(PLACES))
def test_library_errors_never_hold_a_secret(lib, secret, kind, where):
    if where in ("op", "at"):
        where = "key"
    with pytest.raises(AnonCardError) as info:
        getattr(lib, kind)(place(kind, where, secret))
    exc = info.value
    assert leaked(secret, str(exc), repr(exc), exc.args, exc.message, exc.field) is None


@SETTINGS
@given(secret=secrets, kind=st.sampled_from(KINDS), where=st.sampled_from(PLACES), as_json=st.booleans())
def test_cli_json_errors_never_hold_a_secret(shop, secret, kind, where, as_json):
    if where in ("op", "at"):
        where = "key"
    body = json.dumps(place(kind, where, secret), ensure_ascii=False)
    result = cli(shop, kind, "--input", "-", *(["--json"] if as_json else []), input=body)
    assert result.exit_code != 0
    assert leaked(secret, result.stdout, result.stderr) is None


FLAG_PLACES = [
    ["checkout", "--card", "S", "--txn", "ne-1", "--line", "dairy=1.00"],
    ["checkout", "--card", CODE, "--txn", "S", "--line", "dairy=1.00"],
    ["checkout", "--card", CODE, "--txn", "ne-1", "--line", "S"],
    ["checkout", "--card", CODE, "--txn", "ne-1", "--line", "S=1.00"],
    ["checkout", "--card", CODE, "--txn", "ne-1", "--line", "dairy=S"],
    ["checkout", "--card", CODE, "--txn", "ne-1", "--line", "dairy=1.00", "--coupon", "S"],
    ["checkout", "--card", CODE, "--txn", "ne-1", "--line", "dairy=1.00", "--at", "S"],
    ["refund", "--txn", "S"],
    ["refund", "--txn", "no-such", "--refund-id", "S", "--line", "dairy=1.00"],
    ["redeem", "--card", CODE, "--txn", "ne-2", "--reward", "S"],
    ["balance", "--card", "S"],
    ["enter", "--card", CODE, "--qr-format", "S"],
    ["card", "issue", "--count", "S"],
    ["keys", "list", "S"],
    ["S"],
    ["--S"],
]


@SETTINGS
@given(secret=secrets, args=st.sampled_from(FLAG_PLACES), as_json=st.booleans())
def test_cli_flag_errors_never_hold_a_secret(shop, secret, args, as_json):
    argv = [a.replace("S", secret) if a in ("S", "--S", "S=1.00", "dairy=S") else a for a in args]
    result = cli(shop, *argv, *(["--json"] if as_json else []))
    assert result.exit_code != 0, result.output
    assert leaked(secret, result.stdout, result.stderr) is None, (argv, result.stderr)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(st.tuples(secrets, st.sampled_from(KINDS), st.sampled_from(PLACES)), min_size=1, max_size=8))
def test_serve_error_lines_never_hold_a_secret(shop, cases):
    lines = []
    for secret, kind, where in cases:
        if where == "op":
            request: object = {**skeleton(kind), "op": secret}
        elif where == "at":
            request = {**skeleton(kind), "op": kind, "at": secret}
        else:
            request = place(kind, where, secret)
            if isinstance(request, dict):
                request = {"op": kind, **request}
        lines.append(json.dumps(request, ensure_ascii=False))
    result = cli(shop, "serve", input="\n".join(lines) + "\n")
    answers = result.stdout.splitlines()
    assert len(answers) == len(lines)
    for (secret, _kind, _where), answer in zip(cases, answers, strict=True):
        assert json.loads(answer)["ok"] is False
        assert leaked(secret, answer) is None, answer
