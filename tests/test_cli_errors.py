"""Bad input through the CLI: `Error: ...` naming the field or rule, non-zero exit, storage untouched."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from anoncard import cards
from cli.main import main
from tests.pg_cluster import give_own_database


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli") / "home"
    give_own_database(home)
    runner = CliRunner()
    assert runner.invoke(main, ["--home", str(home), "init"]).exit_code == 0
    code = runner.invoke(main, ["--home", str(home), "card", "issue"]).output.split()[0]
    ok = runner.invoke(main, ["--home", str(home), "checkout", "--card", code, "--txn", "t1", "--line", "dairy=3.49"])
    assert ok.exit_code == 0, ok.output
    return home, code


def dump(home) -> list[str]:
    conn = sqlite3.connect(home / "anoncard.db")
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def typo(code: str) -> str:
    i = code.index("-") + 2
    return code[:i] + ("A" if code[i] != "A" else "B") + code[i + 1 :]


UNKNOWN = cards.generate().code
CASES = [
    (
        "unknown card",
        ["checkout", "--card", UNKNOWN, "--txn", "t2", "--line", "dairy=1.00"],
        None,
        4,
        "'card': unknown",
    ),
    ("malformed code", ["checkout", "--card", "C1-ABC", "--txn", "t2", "--line", "dairy=1.00"], None, 4, "'card'"),
    ("typo in code", ["checkout", "--card", "TYPO", "--txn", "t2", "--line", "dairy=1.00"], None, 4, "check character"),
    ("amount -1", ["checkout", "--card", "CODE", "--txn", "t2", "--line", "dairy=-1"], None, 3, "'lines[0].amount'"),
    ("amount 0", ["checkout", "--card", "CODE", "--txn", "t2", "--line", "dairy=0"], None, 3, "greater than 0"),
    ("amount NaN", ["checkout", "--card", "CODE", "--txn", "t2", "--line", "dairy=NaN"], None, 3, "'lines[0].amount'"),
    ("amount 1e309", ["checkout", "--card", "CODE", "--txn", "t2", "--line", "dairy=1e309"], None, 3, "not an amount"),
    ("amount 3.499", ["checkout", "--card", "CODE", "--txn", "t2", "--line", "dairy=3.499"], None, 3, "2 decimals"),
    ("amount empty", ["checkout", "--card", "CODE", "--txn", "t2", "--line", "dairy="], None, 3, "'lines[0].amount'"),
    ("empty basket", ["checkout", "--input", "-"], {"card": "CODE", "txn": "t2", "lines": []}, 3, "basket is empty"),
    ("txn reused", ["checkout", "--card", "CODE", "--txn", "t1", "--line", "dairy=9.99"], None, 5, "different content"),
    ("refund unknown txn", ["refund", "--txn", "nope"], None, 5, "'txn': no checkout"),
    ("refund beyond", ["refund", "--txn", "t1", "--refund-id", "r1", "--line", "dairy=3.50"], None, 5, "exceeds"),
    (
        "extra field",
        ["checkout", "--input", "-"],
        {"card": "CODE", "txn": "t3", "email": "a@b.de", "lines": [{"category": "dairy", "amount": "1.00"}]},
        3,
        "'email': not allowed",
    ),  # fmt: skip
    ("NaN in JSON", ["checkout", "--input", "-"], '{"card": "CODE", "txn": "t4", "lines": NaN}', 3, "NaN"),
    ("not JSON", ["checkout", "--input", "-"], "{card", 3, "not valid"),
    ("unknown reward", ["redeem", "--card", "CODE", "--txn", "r9", "--reward", "caviar"], None, 3, "'reward'"),
    ("too few points", ["redeem", "--card", "CODE", "--txn", "r9", "--reward", "coffee"], None, 5, "costs 150"),
    ("retire unconfirmed", ["keys", "retire"], None, 3, "--yes"),
]


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("name, args, stdin, exit_code, rule", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(store, name, args, stdin, exit_code, rule, as_json):
    home, code = store
    args = [a.replace("CODE", code).replace("TYPO", typo(code)) for a in args]
    if isinstance(stdin, dict):
        stdin = json.dumps(stdin).replace("CODE", code)
    elif isinstance(stdin, str):
        stdin = stdin.replace("CODE", code)
    before = dump(home)
    result = CliRunner().invoke(main, ["--home", str(home), *args, *(["--json"] if as_json else [])], input=stdin)
    assert result.exit_code == exit_code, result.output
    assert result.stderr.startswith("Error: ")
    assert rule in result.stderr
    assert code not in result.stderr  # a card code is never echoed
    if as_json:
        error = json.loads(result.stdout)["error"]
        assert error["code"] and rule in error["message"]
    assert dump(home) == before


def test_key_ring_readable_by_others_is_refused(tmp_path):
    home = tmp_path / "home"
    runner = CliRunner()
    runner.invoke(main, ["--home", str(home), "init"])
    (home / "keyring.json").chmod(0o644)
    result = runner.invoke(main, ["--home", str(home), "keys", "list"])
    assert result.exit_code == 6
    assert "mode 0644" in result.stderr and "chmod 600" in result.stderr
