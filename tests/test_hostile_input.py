"""Hostile input through the CLI's stdin and through the library: always a clean error, never a
traceback or a foreign exception, and not one byte of the database (or its WAL) written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anoncard import AnonCardError, Service, init_home
from anoncard.cards import generate
from cli.main import MAX_INPUT_BYTES, main
from tests.conftest import DAY, fixed_clock
from tests.pg_cluster import give_own_database

STRESS = os.environ.get("ANONCARD_STRESS") == "1"
EXAMPLES = 300 if STRESS else 40
KINDS = ["checkout", "refund", "balance", "redeem", "enter"]
REFUSALS = {3, 4, 5, 11}  # exit codes of PolicyViolation, CardError/UnknownCard, LedgerError, CouponError
REPO = Path(__file__).resolve().parent.parent
FIXTURE_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def digest(home: Path) -> str:
    h = hashlib.sha256()
    for name in ("anoncard.db", "anoncard.db-wal"):
        path = home / name
        h.update(path.read_bytes() if path.exists() else b"<none>")
        h.update(b"|")
    return h.hexdigest()


def make_home(path: Path) -> tuple[Path, str]:
    """A home with one card that has bought something; the WAL folded into the database."""
    give_own_database(path)
    init_home(path, today=DAY)
    with Service.open(path, clock=fixed_clock) as svc:
        code = svc.issue_cards({"count": 1})[0].code
        svc.checkout({"card": code, "txn": "t1", "lines": [{"category": "dairy", "amount": "3.49"}]})
        svc.store.checkpoint()
    return path, code


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """For the CLI: (home, a card code that is well formed but was never issued)."""
    home, _issued = make_home(tmp_path_factory.mktemp("hostile-cli") / "home")
    return home, generate().code


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """For the library: (open service, its home, a well-formed card code never issued)."""
    home, _issued = make_home(tmp_path_factory.mktemp("hostile-lib") / "home")
    svc = Service.open(home, clock=fixed_clock)
    yield svc, home, generate().code
    svc.close()


def cli(home: Path, kind: str, body: bytes):
    return CliRunner().invoke(main, ["--home", str(home), kind, "--input", "-"], input=body)


def refused_by_cli(home: Path, kind: str, body: bytes | str) -> str:
    """Run the command on ``body``; assert a clean refusal and an untouched database; return stderr."""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    before = digest(home)
    result = cli(home, kind, body)
    assert isinstance(result.exception, SystemExit), (result.exception, result.output[-2000:])  # no traceback
    assert result.exit_code in REFUSALS, (result.exit_code, result.output[-2000:])
    assert result.stderr.startswith("Error: "), result.stderr[-2000:]
    assert "Traceback" not in result.output
    assert result.stdout == ""  # nothing printed as if it had been accepted
    assert digest(home) == before
    return result.stderr


def refused_by_library(svc: Service, home: Path, kind: str, request: object) -> AnonCardError:
    before = digest(home)
    with pytest.raises(AnonCardError) as info:  # any other exception escapes and fails the test
        getattr(svc, kind)(request)
    assert type(info.value) is not AnonCardError  # a specific error, with its own code and exit status
    assert digest(home) == before
    return info.value


# -- strategies ---------------------------------------------------------------------------------------

FIELDS = ["card", "txn", "lines", "coupons", "refund_id", "reward", "category", "amount", "op", "at", "count"]
SPECIAL = [
    "", " ", "\x00", "\u202e", "\ufeff", "NaN", "Infinity", "-1", "1e5", "0.001", "3.49", "1,00", "٣.٤٩",
    "dairy", "DAIRY ", "coffee", "tote-bag", "a@b.de", "0170 1234567", "+49 30 1234567", "DE89370400440532013000",
    "4111 1111 1111 1111", "01.02.1980", "192.168.0.1", "::1", "Hauptstrasse 5", "C1-", "K1" + "0" * 120,
    "../../etc/passwd", "'; DROP TABLE txns; --", "x" * 65, "ÿ" * 300,
]  # fmt: skip
chars = (
    st.characters()
    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=[])  # lone surrogates
    | st.sampled_from("0123456789@.:-/ +")
)
hostile_text = st.text(chars, max_size=80) | st.sampled_from(SPECIAL)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | hostile_text
keys = st.sampled_from(FIELDS) | st.text(chars, max_size=12)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5), max_leaves=25
)
# what only a library caller can pass: bytes, tuples, sets, non-string keys, NaN, objects
python_values = st.recursive(
    scalars | st.binary(max_size=20) | st.sampled_from([float("nan"), float("inf"), -float("inf"), object(), 1j]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.frozensets(scalars, max_size=3)
        | st.dictionaries(keys | st.integers() | st.none() | st.tuples(), inner, max_size=4)
    ),
    max_leaves=25,
)


def skeleton(kind: str, unknown: str) -> dict:
    """A request that passes the gate and is then refused (unknown card, unknown checkout):
    mutated, it reaches every validation step without any chance of being stored."""
    lines = [{"category": "dairy", "amount": "3.49"}, {"category": "fruit", "amount": "1.00"}]
    return {
        "checkout": {"card": unknown, "txn": "hx-1", "lines": lines, "coupons": []},
        "refund": {"txn": "no-such-checkout", "refund_id": "hx-r1", "lines": lines},
        "balance": {"card": unknown},
        "redeem": {"card": unknown, "txn": "hx-2", "reward": "coffee"},
        "enter": {"card": unknown},
    }[kind]


@st.composite
def near_valid(draw, kind: str, unknown: str, values=json_values) -> dict:
    request = skeleton(kind, unknown)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["set", "set", "drop", "line"]))
        lines = request.get("lines")
        if how == "drop" and request:
            request.pop(draw(st.sampled_from(sorted(request))))
        elif how == "line" and isinstance(lines, list) and lines and isinstance(lines[0], dict):
            line = dict(lines[0])
            line[draw(st.sampled_from(["category", "amount"]) | keys)] = draw(values)
            request["lines"] = [line, *lines[1:]]
        else:
            request[draw(st.sampled_from(sorted(request) or FIELDS) | keys)] = draw(values)
    return request


# -- through the CLI ------------------------------------------------------------------------------------


@FIXTURE_SETTINGS
@given(kind=st.sampled_from(KINDS), value=json_values)
def test_cli_random_json_structures(shop, kind, value):
    home, _unknown = shop
    refused_by_cli(home, kind, json.dumps(value))


@FIXTURE_SETTINGS
@given(data=st.data())
def test_cli_mutated_requests(shop, data):
    home, unknown = shop
    kind = data.draw(st.sampled_from(KINDS))
    refused_by_cli(home, kind, json.dumps(data.draw(near_valid(kind, unknown))))


@FIXTURE_SETTINGS
@given(
    kind=st.sampled_from(KINDS),
    field=st.sampled_from(FIELDS),
    text=st.text(chars, min_size=65, max_size=6000),
    escaped=st.booleans(),
)
def test_cli_huge_and_unicode_strings(shop, kind, field, text, escaped):
    """Longer than any field allows (64 at most), in any field, with any code points, sent as \\u
    escapes or as raw UTF-8 (lone surrogates then make the body invalid UTF-8): refused."""
    home, unknown = shop
    request = skeleton(kind, unknown)
    request[field] = text
    refused_by_cli(home, kind, json.dumps(request, ensure_ascii=escaped))


@FIXTURE_SETTINGS
@given(kind=st.sampled_from(KINDS), body=st.binary(max_size=300))
def test_cli_random_bytes(shop, kind, body):
    home, _unknown = shop
    refused_by_cli(home, kind, body)


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


PATHOLOGICAL = {
    "nan": b'{"card": NaN}',
    "nan-bare": b"NaN",
    "infinity-amount": b'{"card": "C1", "txn": "t", "lines": [{"category": "dairy", "amount": Infinity}]}',
    "minus-infinity": b'{"txn": -Infinity, "refund_id": "r"}',
    "nan-nested": b'{"lines": [[[NaN]]]}',
    "overflow-float": b'{"txn": 1e999}',
    "deep-array": _deep(100_000),
    "deep-array-unclosed": b"[" * 100_000,
    "deep-object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "deep-in-field": b'{"card": "x", "txn": "t", "lines": ' + _deep(100_000) + b"}",
    "3MiB-string": b'{"card": "' + b"x" * (3 << 20) + b'"}',
    "5MiB-whitespace": b" " * (5 << 20) + b"{}",
    "size-plus-one": b"{}" + b" " * (MAX_INPUT_BYTES - 1),
    "latin-1": '{"txn": "caf\u00e9", "refund_id": "r\u00e9"}'.encode("latin-1"),
    "utf-16": json.dumps({"card": "C1", "txn": "t"}).encode("utf-16"),
    "utf-8-bom": b'\xef\xbb\xbf{"card": "x"}',
    "overlong": b'{"txn": "\xc0\xaf"}',
    "cesu-surrogate": b'{"txn": "\xed\xa0\x80"}',
    "ff-fe": b"\xff\xfe\x00garbage",
    "nul": b"\x00",
    "empty": b"",
    "null": b"null",
    "string": b'"just a string"',
    "array": b"[]",
    "object": b"{}",
    "number": b"1",
    "trailing": b'{"card": "x"} {"card": "y"}',
    "duplicate-keys": b'{"txn": "a", "txn": "b", "card": "x", "card": "y"}',
}


NOT_JSON = "request: not valid UTF-8 JSON"
CONSTANT = "is not allowed in JSON input"
TOO_BIG = f"request: larger than {MAX_INPUT_BYTES} bytes"
# why each is refused, where the CLI's reading of the body (not the gate behind it) must refuse it
REASON = {
    "nan": CONSTANT, "nan-bare": CONSTANT, "infinity-amount": CONSTANT, "minus-infinity": CONSTANT,
    "nan-nested": CONSTANT, "deep-array": NOT_JSON, "deep-array-unclosed": NOT_JSON, "deep-object": NOT_JSON,
    "deep-in-field": NOT_JSON, "3MiB-string": TOO_BIG, "5MiB-whitespace": TOO_BIG, "size-plus-one": TOO_BIG,
    "latin-1": NOT_JSON, "utf-16": NOT_JSON, "utf-8-bom": NOT_JSON, "overlong": NOT_JSON, "cesu-surrogate": NOT_JSON,
    "ff-fe": NOT_JSON, "nul": NOT_JSON, "empty": NOT_JSON, "trailing": NOT_JSON,
}  # fmt: skip


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
@pytest.mark.parametrize("kind", KINDS)
def test_cli_pathological_bodies(shop, kind, name):
    home, _unknown = shop
    stderr = refused_by_cli(home, kind, PATHOLOGICAL[name])
    if name in REASON:
        assert REASON[name] in stderr, stderr
    assert (TOO_BIG in stderr) == (len(PATHOLOGICAL[name]) > MAX_INPUT_BYTES), stderr


@pytest.mark.parametrize("kind", KINDS)
def test_cli_size_limit_is_exact(shop, kind):
    """A body of exactly the limit is read and judged on its content; one byte more is refused by size."""
    home, unknown = shop
    body = json.dumps(skeleton(kind, unknown)).encode()
    at_limit = body + b" " * (MAX_INPUT_BYTES - len(body))
    assert "larger than" not in refused_by_cli(home, kind, at_limit)
    assert "larger than" in refused_by_cli(home, kind, at_limit + b" ")


def run_cli_process(home: Path, kind: str, body: bytes, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "anoncard", "--home", str(home), kind, "--input", "-"],
        input=body,
        capture_output=True,
        cwd=REPO,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("kind", "name"),
    [("checkout", "3MiB-string"), ("refund", "deep-array"), ("balance", "cesu-surrogate"),
     ("redeem", "nan-nested"), ("enter", "deep-object")],
)  # fmt: skip
def test_cli_process_real_stdin(shop, kind, name):
    """The same through a real process and pipe: what an operator would see on the terminal."""
    home, _unknown = shop
    before = digest(home)
    proc = run_cli_process(home, kind, PATHOLOGICAL[name])
    assert proc.returncode in REFUSALS, proc.stderr[-2000:]
    assert proc.stderr.startswith(b"Error: ") and b"Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stdout == b""
    assert digest(home) == before


@pytest.mark.parametrize("body", [b"1" * 5000, b'{"txn": ' + b"9" * 5000 + b"}"], ids=["bare", "in-field"])
def test_cli_huge_integer_literal(shop, body):
    home, _unknown = shop
    refused_by_cli(home, "refund", body)


def test_cli_refuses_a_long_string_at_once(shop):
    """A refused document number of 200 kB must be refused in seconds, not minutes."""
    home, _unknown = shop
    body = json.dumps({"txn": "a" * 100_000 + "@" + "b" * 100_000}).encode()
    start = time.monotonic()
    try:
        proc = run_cli_process(home, "refund", body, timeout=5)
    except subprocess.TimeoutExpired:
        proc = None
    assert proc is not None, f"still busy after {time.monotonic() - start:.1f} s"
    assert proc.returncode in REFUSALS and proc.stderr.startswith(b"Error: ")


# -- through the library ----------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None)
@given(kind=st.sampled_from(KINDS), value=python_values)
def test_library_random_values(lib, kind, value):
    svc, home, _unknown = lib
    refused_by_library(svc, home, kind, value)


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_library_mutated_requests(lib, data):
    svc, home, unknown = lib
    kind = data.draw(st.sampled_from(KINDS))
    refused_by_library(svc, home, kind, data.draw(near_valid(kind, unknown, python_values)))


@settings(max_examples=EXAMPLES, deadline=None)
@given(kind=st.sampled_from(KINDS), field=st.sampled_from(FIELDS), text=st.text(chars, min_size=65, max_size=6000))
def test_library_huge_and_unicode_strings(lib, kind, field, text):
    svc, home, unknown = lib
    request = skeleton(kind, unknown)
    request[field] = text
    refused_by_library(svc, home, kind, request)


@pytest.mark.parametrize("kind", KINDS)
def test_library_pathological_values(lib, kind):
    svc, home, unknown = lib
    deep_list: list = []
    for _ in range(100_000):
        deep_list = [deep_list]
    deep_dict: dict = {}
    for _ in range(100_000):
        deep_dict = {"card": deep_dict}
    big = "x" * (3 << 20)
    for field in FIELDS:
        for value in (deep_list, deep_dict, big, float("nan"), b"\xff" * 100, "\udcff" * 10):
            request = skeleton(kind, unknown)
            request[field] = value
            refused_by_library(svc, home, kind, request)
    for value in (deep_list, deep_dict, None, "", b"{}", [skeleton(kind, unknown)], 42):
        refused_by_library(svc, home, kind, value)


def test_library_huge_integer_amount(lib):
    svc, home, unknown = lib
    request = skeleton("checkout", unknown)
    request["lines"] = [{"category": "dairy", "amount": 10**5000}]
    refused_by_library(svc, home, "checkout", request)
