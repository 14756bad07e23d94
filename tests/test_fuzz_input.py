"""Hostile input through the CLI's stdin and through the library: always a clean error, storage untouched."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anoncard import AnonCardError, Service
from cli.main import main
from tests.conftest import basket, fixed_clock

STRESS = os.environ.get("ANONCARD_STRESS") == "1"
EXAMPLES = 300 if STRESS else 40
KINDS = ["checkout", "refund", "balance", "redeem", "enter"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz") / "home"
    CliRunner().invoke(main, ["--home", str(home), "init"])
    with Service.open(home, clock=fixed_clock) as svc:
        code = svc.issue_cards({"count": 1})[0].code
        svc.checkout({"card": code, "txn": "t1", "lines": basket(("dairy", "3.49"))})
        svc.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return home, code


def digest(home) -> str:
    h = hashlib.sha256()
    for name in ("anoncard.db", "anoncard.db-wal"):
        p = home / name
        h.update(p.read_bytes() if p.exists() else b"-")
    return h.hexdigest()


def refused_cleanly(home, kind: str, body: bytes | str) -> None:
    before = digest(home)
    result = CliRunner().invoke(main, ["--home", str(home), kind, "--input", "-"], input=body)
    assert result.exit_code not in (0, 1), result.output  # 1 would be an unexpected exception
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.output
    assert digest(home) == before


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(kind=st.sampled_from(KINDS), value=json_values)
def test_random_json_structures(shop, kind, value):
    home, _code = shop
    refused_cleanly(home, kind, json.dumps(value))


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(kind=st.sampled_from(KINDS), text=st.text(min_size=65, max_size=5000))
def test_huge_and_unicode_strings_in_every_field(shop, kind, text):
    """Longer than any field allows (card codes and document numbers stop at 64): always refused."""
    home, code = shop
    for field in ("card", "txn", "refund_id", "reward"):
        body = {"card": code, "txn": "t9", "lines": [{"category": "dairy", "amount": "1.00"}], field: text}
        if kind != "checkout":
            body.pop("lines")
        refused_cleanly(home, kind, json.dumps(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"card": NaN}',
        b'{"card": Infinity, "txn": -Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"card": "' + b"x" * (2 << 20) + b'"}',
        b"\xff\xfe\x00garbage",
        b"",
        b"null",
        b'"just a string"',
    ],
    ids=["nan", "infinity", "deep-array", "deep-object", "3MB", "not-utf8", "empty", "null", "string"],
)
@pytest.mark.parametrize("kind", KINDS)
def test_pathological_bodies(shop, kind, body):
    home, _code = shop
    refused_cleanly(home, kind, body)


@settings(max_examples=EXAMPLES, deadline=None)
@given(value=json_values)
def test_the_library_refuses_with_its_own_errors(value):
    from anoncard import KeyRing, Programme, Store

    svc = Service(Store(":memory:"), KeyRing.create("2015-03-01"), Programme.default(), clock=fixed_clock)
    for kind in ("checkout", "refund", "balance", "redeem", "enter"):
        before = list(svc.store.conn.iterdump())
        with pytest.raises(AnonCardError):
            getattr(svc, kind)(value)
        assert list(svc.store.conn.iterdump()) == before
