"""A table of hostile category and document-number values - personal data written with the
separators people use, homoglyphs, mixed scripts, other encodings - sent through every door:
CLI flags, JSON on stdin, ``anoncard serve`` and the library. Each is refused, and not one
byte of the database (or its WAL) changes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from anoncard import AnonCardError, Service, cards, init_home
from cli.main import main
from tests.conftest import DAY, fixed_clock
from tests.pg_cluster import give_own_database

HOSTILE = [
    # payment card numbers
    "4111.1111.1111.1111", "4111-1111-1111-1111", "4111/1111/1111/1111", "4111\t1111\t1111\t1111",
    "4111  1111  1111  1111", "5555.5555.5555.4444", "3782-822463-10005", "\uff14" + "\uff11" * 15,
    "\u0664" + "\u0661" * 15, "4111\u200b1111\u200b1111\u200b1111",
    # IBANs
    "DE89.3704.0044.0532.0130.00", "DE89-3704-0044-0532-0130-00", "DE89/3704/0044/0532/0130/00",
    "DE89\t3704\t0044\t0532\t0130\t00", "DE89  3704  0044  0532  0130  00", "S\u212a3112000000198742637541",
    "SK31 1200 0000 1987 4263 7541", "D\u041589370400440532013000", "gb82-west-1234-5698-7654-32",
    "\uff24\uff25\uff18\uff19370400440532013000",
    # birth dates
    "01-02-1980", "1980/02/01", "1980.02.01", "1 feb 1980", "1-feb-1980", "12. M\u00e4rz 1975", "February 1, 1980",
    "born-01.02.1980", "dob:1980-02-01", "03/12/1975",
    # phone numbers
    "+49,30,1234567", "030'123'45'67", "0151-23456789", "030.1234.5678", "0049-30-1234567", "tel:+49-30-1234567",
    "+44 20 7946 0958",
    # tax ids
    "tax-id:65929970489", "steuer-id 65929970489", "idnr.65929970489", "my id 65929970489", "ssn 536-90-4399",
    # postal addresses
    "Hauptstra\u00dfe 12", "Hauptstr. 5", "hauptstr.5", "Unter den Linden allee 7", "221b Baker Street",
    "10 Downing St", "Heidestra\u00dfe 17, 51147 K\u00f6ln", "PO Box 123",
    # IP addresses
    "192.168.0.1", "10.0.0.1", "010.000.000.001", "2001:db8::1", "fe80::1",
    # e-mail addresses, plain and disguised
    "max(at)example.de", "max[at]example[dot]de", "max at example dot de", "erika@example.de", "ERIKA@EXAMPLE.DE",
    "erika@ex\u0430mple.de",
    # names and demographics (a category field is not a free-text field)
    "Erika Mustermann", "2 Adults No Kids", "erika.mustermann@web.de", "tel.0170-1234567",
    # homoglyphs and invisible characters around ordinary words, other encodings of them
    "d\u0430iry", "c\u043ef\u0435\u0435", "dairy\u202e", "\ufeffdairy", "caf\u00e9", "caf\u0065\u0301",
]  # fmt: skip
assert len(HOSTILE) >= 60


def files(home: Path) -> bytes:
    return b"".join((home / n).read_bytes() for n in ("anoncard.db", "anoncard.db-wal") if (home / n).exists())


def digest(home: Path) -> str:
    return hashlib.sha256(files(home)).hexdigest()


def make_home(path: Path) -> tuple[Path, str]:
    give_own_database(path)
    init_home(path, today=DAY)
    with Service.open(path, clock=fixed_clock) as svc:
        code = svc.issue_cards({"count": 1})[0].code
        svc.checkout({"card": code, "txn": "t1", "lines": [{"category": "dairy", "amount": "3.49"}]})
        svc.store.checkpoint()
    return path, code


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A home with an issued card: a value the gate let through would be stored."""
    return make_home(tmp_path_factory.mktemp("hostile-values") / "home")


def requests(code: str, value: str) -> list[dict]:
    """The value as a line's category, as a checkout's document number, as a refund's id."""
    return [
        {"card": code, "txn": "hv-1", "lines": [{"category": value, "amount": "1.00"}]},
        {"card": code, "txn": value, "lines": [{"category": "dairy", "amount": "1.00"}]},
    ]


def not_stored(home: Path, value: str, before: str) -> None:
    assert digest(home) == before
    data = files(home)
    for form in {value, value.lower(), " ".join(value.split())}:
        assert form.encode("utf-8", "surrogatepass") not in data


def refused(result, value: str) -> None:
    assert result.exit_code in (3, 4), (result.exit_code, result.output)
    assert result.stderr.startswith("Error: "), result.stderr
    assert value not in result.stderr and value not in result.stdout


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v) for v in HOSTILE])
def test_cli_flags(shop, value):
    home, code = shop
    before = digest(home)
    as_line = ["checkout", "--card", code, "--txn", "hv-1", "--line", f"{value}=1.00", "--json"]
    as_txn = ["checkout", "--card", code, "--txn", value, "--line", "dairy=1.00", "--json"]
    as_refund = ["refund", "--txn", "t1", "--refund-id", value, "--line", "dairy=1.00"]
    for args in (as_line, as_txn, as_refund):
        refused(CliRunner().invoke(main, ["--home", str(home), *args]), value)
    not_stored(home, value, before)


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v) for v in HOSTILE])
def test_cli_json_stdin(shop, value):
    home, code = shop
    before = digest(home)
    for request in requests(code, value):
        for ensure_ascii in (True, False):
            body = json.dumps(request, ensure_ascii=ensure_ascii)
            result = CliRunner().invoke(main, ["--home", str(home), "checkout", "--input", "-"], input=body)
            refused(result, value)
    not_stored(home, value, before)


def test_serve(shop):
    home, code = shop
    before = digest(home)
    lines = [json.dumps({"op": "checkout", **r}) for v in HOSTILE for r in requests(code, v)]
    lines += [json.dumps({"op": "refund", "txn": "t1", "refund_id": v, "lines": [{"category": "dairy", "amount": "1"}]})
              for v in HOSTILE]  # fmt: skip
    result = CliRunner().invoke(main, ["--home", str(home), "serve"], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == len(lines)
    assert all(a["ok"] is False and a["error"]["code"] in ("policy_violation", "card_error") for a in answers)
    for value in HOSTILE:
        assert value not in result.stdout
        not_stored(home, value, before)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    home, code = make_home(tmp_path_factory.mktemp("hostile-values-lib") / "home")
    svc = Service.open(home, clock=fixed_clock)
    yield svc, home, code
    svc.close()


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v) for v in HOSTILE])
def test_library(lib, value):
    svc, home, code = lib
    before = digest(home)
    calls = [(svc.checkout, r) for r in requests(code, value)]
    calls.append((svc.refund, {"txn": "t1", "refund_id": value, "lines": [{"category": "dairy", "amount": "1.00"}]}))
    for call, request in calls:
        with pytest.raises(AnonCardError) as info:
            call(request)
        assert value not in f"{info.value} {info.value!r} {info.value.args} {info.value.field}"
    not_stored(home, value, before)


def test_the_table_holds_no_valid_card_code():
    """Card codes are their own property test (tests/test_no_echo.py); here only personal data."""
    for value in HOSTILE:
        with pytest.raises(AnonCardError):
            cards.decode(value)
