"""Failures leave a state the next command accepts, and say so cleanly.

A full disk is made real, not mocked: the command runs in a child process whose file size
limit (RLIMIT_FSIZE) is small and which ignores SIGXFSZ, so writes past the limit fail with
EFBIG exactly as they fail with ENOSPC on a full disk. The limit binds root as well.

SQLite maps its shared-memory index (``-shm``, 32 KiB) by writing its last byte, so a limit
below that needs the index to exist already: :func:`held_open` keeps a connection open in
the test, as a long-lived terminal process would.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard import KeyRing, Service, Store
from anoncard.errors import KeyRingError, PolicyFileError, PolicyViolation, ProgrammeError, StoreError
from anoncard.policy import Policy
from anoncard.programme import Programme
from tests.cli_helpers import DB_NAME, assert_refused, assert_unchanged, cli, issue, ok, snapshot
from tests.conftest import DAY, fixed_clock

pytestmark = pytest.mark.sqlite_only(
    reason="a full disk and damaged pages under the SQLite file; a PostgreSQL server's disk is the server's"
)

ROOT = Path(__file__).resolve().parents[1]


def _limited(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def full_disk(home: Path, *args: str, limit: int, stdin: str | None = None, stdout=subprocess.PIPE):
    """``anoncard --home HOME ARGS`` in a child that cannot write past ``limit`` bytes of any file."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [sys.executable, "-m", "anoncard", "--home", str(home), *args],
        input=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_limited(limit),
        env=env,
        cwd=ROOT,
        timeout=120,
    )


@contextmanager
def held_open(home: Path) -> Iterator[None]:
    """Keep the database open (its -shm index mapped) while a child runs."""
    conn = sqlite3.connect(home / DB_NAME)
    try:
        conn.execute("SELECT count(*) FROM cards").fetchone()
        yield
    finally:
        conn.close()


def count_cards(home: Path) -> int:
    conn = sqlite3.connect(home / DB_NAME)
    try:
        return conn.execute("SELECT count(*) FROM cards").fetchone()[0]
    finally:
        conn.close()


def one_clean_line(stderr: str) -> None:
    assert stderr.startswith("Error: ") and stderr.count("\n") == 1, stderr  # no traceback


def still_works(home: Path) -> None:
    """The next command accepts the home: a card is issued and shops."""
    (code,) = issue(home)
    ok(cli(home, "checkout", "--card", code, "--txn", f"after-{code[-6:]}", "--line", "dairy=2.49"))


# -- card issue: no card is stored whose code was not delivered -------------------------------


def test_card_issue_on_a_full_disk_while_printing_the_codes_stores_no_card(home, tmp_path):
    codes_file = tmp_path / "codes.txt"
    codes_file.write_bytes(b"earlier runs\n".ljust(40_000, b"."))  # the disk fills while the codes are printed
    with codes_file.open("ab") as out:
        result = full_disk(home, "card", "issue", "--count", "300", limit=41_000, stdout=out)
    one_clean_line(result.stderr)
    assert result.returncode == 12 and "no card was stored" in result.stderr
    assert count_cards(home) == 0  # else ~270 cards exist whose codes nobody will ever see
    still_works(home)


def test_card_issue_whose_cards_cannot_be_stored_keeps_no_qr_file(home, tmp_path):
    qr_dir = tmp_path / "print-run"
    result = full_disk(home, "card", "issue", "--count", "300", "--qr-dir", str(qr_dir), limit=33_000)
    one_clean_line(result.stderr)
    assert result.returncode == 8 and "no card was stored" in result.stderr and "void" in result.stderr
    assert count_cards(home) == 0
    assert list(qr_dir.iterdir()) == []  # the files of cards that do not exist are gone
    still_works(home)


def test_card_issue_whose_qr_files_cannot_be_written_stores_no_card(home, tmp_path):
    qr_dir = tmp_path / "print-run"
    with held_open(home):
        result = full_disk(home, "card", "issue", "--count", "300", "--qr-dir", str(qr_dir), limit=300)
    one_clean_line(result.stderr)
    assert result.returncode == 12 and "'qr-dir'" in result.stderr
    assert count_cards(home) == 0
    assert list(qr_dir.iterdir()) == []  # all or none
    still_works(home)


# -- serve and the library: a full disk is a StoreError, the transaction rolled back ----------


def test_serve_answers_a_full_disk_with_an_error_line_and_keeps_serving(home):
    (code,) = issue(home)
    requests = [
        {"op": "checkout", "card": code, "txn": "t1", "lines": [{"category": "dairy", "amount": "3.49"}]},
        {"op": "checkout", "card": code, "txn": "t2", "lines": [{"category": "wine", "amount": "40.00"}]},
        {"op": "balance", "card": code},
        {"op": "checkout", "card": code, "txn": "t3", "lines": [{"category": "coffee", "amount": "7.99"}]},
        {"op": "balance", "card": code},
    ]
    result = full_disk(home, "serve", limit=33_000, stdin="".join(json.dumps(r) + "\n" for r in requests))
    assert result.returncode == 0 and result.stderr == ""
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == len(requests)  # every request answered, the process alive to the end
    failed = [a for a in answers if not a["ok"]]
    assert failed and all(a["error"]["code"] == "store_error" for a in failed)
    assert all("rolled back" in a["error"]["message"] for a in failed)
    pairs = list(zip(requests, answers, strict=True))
    balances = [a["result"]["points"] for r, a in pairs if r["op"] == "balance"]
    credited = sum(a["result"]["points"] for r, a in pairs if r["op"] == "checkout" and a["ok"])
    assert balances == [credited, credited]  # a failed checkout left nothing behind
    # the next command sees exactly the checkouts that were answered ok
    assert json.loads(ok(cli(home, "balance", "--card", code, "--json")).stdout)["points"] == credited
    still_works(home)


LIBRARY_SCRIPT = """
import json, sys
from anoncard import Service
from anoncard.errors import StoreError
home, code = sys.argv[1], sys.argv[2]
with Service.open(home) as svc:
    out = []
    for i in range(3):
        try:
            svc.checkout({"card": code, "txn": f"lib{i}", "lines": [{"category": "wine", "amount": "40.00"}]})
            out.append("ok")
        except StoreError as exc:
            out.append(type(exc).__name__)
    out.append(svc.balance({"card": code}).points)
print(json.dumps(out))
"""


def test_a_full_disk_in_the_library_is_a_store_error_and_the_service_goes_on(home):
    (code,) = issue(home)
    result = subprocess.run(
        [sys.executable, "-c", LIBRARY_SCRIPT, str(home), code],
        capture_output=True,
        text=True,
        preexec_fn=_limited(33_000),
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    assert "StoreError" in outcomes[:3]
    assert outcomes[3] == 40 * outcomes[:3].count("ok")  # the balance holds only what committed


# -- policy apply: the home opens after a failure ---------------------------------------------


def _new_policy_text(home: Path) -> str:
    text = (home / "policy.toml").read_text(encoding="utf-8")
    changed = text.replace("days = 120", "days = 90", 1)
    assert changed != text
    return changed


def test_policy_apply_on_a_full_disk_leaves_a_home_the_next_command_accepts(home, tmp_path):
    new = tmp_path / "policy-2027.toml"
    new.write_text(_new_policy_text(home), encoding="utf-8")
    old = (home / "policy.toml").read_bytes()
    with held_open(home):
        result = full_disk(home, "policy", "apply", str(new), limit=10_000)  # room for the event, not the file
    assert result.returncode != 0
    one_clean_line(result.stderr)
    assert (home / "policy.toml").read_bytes() == old
    assert sorted(p.name for p in home.iterdir() if p.name.endswith(".tmp")) == []
    still_works(home)  # the recorded fingerprint is still the file's
    ok(cli(home, "audit"))
    ok(cli(home, "policy", "apply", str(new)))  # with room again it applies
    still_works(home)


def test_policy_apply_puts_the_old_file_back_when_its_event_cannot_be_recorded(home, tmp_path):
    new_text = _new_policy_text(home)
    old = (home / "policy.toml").read_bytes()
    svc = Service(
        Store(home / DB_NAME, busy_timeout_ms=10),
        KeyRing.load(home / "keyring.json"),
        Programme.load(home / "programme.toml"),
        Policy.load(home / "policy.toml"),
        ring_path=home / "keyring.json",
        clock=fixed_clock,
    )
    writer = sqlite3.connect(home / DB_NAME, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # another writer holds the database: the record fails
        with pytest.raises(StoreError, match="locked"):
            svc.apply_policy(new_text, home / "policy.toml")
        writer.execute("ROLLBACK")
    finally:
        writer.close()
        svc.close()
    assert (home / "policy.toml").read_bytes() == old  # put back: the home opens as before
    assert sorted(p.name for p in home.iterdir() if p.name.startswith(".")) == []
    with Service.open(home, clock=fixed_clock) as again:
        assert again.policy.fingerprint == Policy.from_toml(old.decode()).fingerprint


# -- backup on a full disk --------------------------------------------------------------------


def test_a_backup_on_a_full_disk_leaves_nothing_behind_and_says_so(home, tmp_path):
    issue(home, 50)
    out = tmp_path / "backups"
    out.mkdir()
    assert (home / DB_NAME).stat().st_size > 40_000
    result = full_disk(home, "backup", str(out / "anoncard.db"), limit=40_000)
    assert result.returncode == 8
    one_clean_line(result.stderr)
    assert list(out.iterdir()) == []  # no half backup, and none readable by others
    ok(cli(home, "backup", str(out / "anoncard.db")))  # the destination name is free for the retry


# -- a damaged database page ------------------------------------------------------------------


@pytest.mark.parametrize("table", ["txns", "events", "sqlite_schema"])
def test_audit_of_a_damaged_page_fails_its_integrity_check_with_a_report(home, tmp_path, table):
    codes = issue(home, 40)
    for i, code in enumerate(codes):
        ok(cli(home, "checkout", "--card", code, "--txn", f"t{i}", "--line", "dairy=3.49"))
    conn = sqlite3.connect(home / DB_NAME)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = (
        1
        if table == "sqlite_schema"
        else conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with (home / DB_NAME).open("r+b") as fh:  # a disk error scrambles one page
        fh.seek((root - 1) * page_size + (100 if root == 1 else 0))
        fh.write(b"\xff" * 32 + b"scrambled" * 40)
    report = tmp_path / "audit.json"
    result = cli(home, "audit", "--report", str(report), "--at", "2015-03-02")
    assert result.exit_code == 10, (result.exit_code, result.stderr, result.exception)
    assert result.stderr.startswith("Error: audit failed: ") and "h SQLite integrity check" in result.stderr
    doc = json.loads(report.read_text())
    assert doc["passed"] is False
    integrity = next(c for c in doc["checks"] if c["key"] == "h")
    assert integrity["passed"] is False and integrity["details"]
    assert [c["key"] for c in doc["checks"]] == list("abcdefghij")


# -- files anoncard reads ---------------------------------------------------------------------


BROKEN = {
    "a directory": lambda p: p.mkdir(),
    "not UTF-8": lambda p: p.write_bytes(b"\xff\xfe not text \x80"),
    "nested too deeply": lambda p: p.write_text(("a = " if p.suffix == ".toml" else "") + "[" * 50_000),
}
HOME_FILES = {"keyring.json": (6, "keyring_error"), "programme.toml": (7, "programme_error"),
              "policy.toml": (9, "policy_file_error")}  # fmt: skip


@pytest.mark.parametrize("how", sorted(BROKEN))
@pytest.mark.parametrize("name", sorted(HOME_FILES))
def test_a_broken_home_file_is_a_clean_error_naming_it(home, name, how):
    issue(home)
    path = home / name
    path.unlink()
    BROKEN[how](path)
    if path.is_file():
        path.chmod(0o600)
    before = snapshot(home) if name != "keyring.json" or path.is_file() else None
    exit_code, code = HOME_FILES[name]
    result = cli(home, "balance", "--card", "C1-0000", "--json")
    needle = name.split(".")[0].replace("keyring", "key ring")
    assert_refused(result, exit_code=exit_code, needles=(needle,), as_json=True, code=code)
    if before is not None:
        assert_unchanged(home, before)


LOADERS = [(KeyRing.load, KeyRingError), (Programme.load, ProgrammeError), (Policy.load, PolicyFileError)]


@pytest.mark.parametrize(("loader", "error"), LOADERS)
def test_loaders_raise_their_own_error_class_for_unreadable_files(tmp_path, loader, error):
    for how, make in BROKEN.items():
        path = tmp_path / f"{how.replace(' ', '-')}{'.json' if error is KeyRingError else '.toml'}"
        make(path)
        if path.is_file():
            path.chmod(0o600)
        with pytest.raises(error) as caught:
            loader(path)
        assert "\\xff" not in caught.value.message and "[[[" not in caught.value.message  # never the content


def test_policy_apply_of_a_file_that_is_not_utf8_is_refused_cleanly(home, tmp_path):
    new = tmp_path / "new.toml"
    new.write_bytes(b'[requests]\nname = "\xff\xfe"\n')
    before = snapshot(home)
    result = cli(home, "policy", "apply", str(new))
    assert_refused(result, exit_code=9, needles=("policy", "UTF-8"), as_json=False, code="policy_file_error")
    assert_unchanged(home, before)


@pytest.mark.parametrize("command", ["checkout", "balance", "refund", "redeem", "enter"])
def test_a_missing_input_file_is_refused_naming_input(home, tmp_path, command):
    before = snapshot(home)
    result = cli(home, command, "--input", str(tmp_path / "no-such-request.json"), "--json")
    assert_refused(result, exit_code=3, needles=("'input'",), as_json=True, code="policy_violation")
    assert "no-such-request" not in result.stderr  # the value is not echoed
    assert_unchanged(home, before)


@pytest.mark.parametrize("count", ["²", "٣", "12\u0663", "1" * 5000, " 3", "3.0", "-1"])
def test_issue_refuses_a_count_that_is_not_ascii_digits(svc, count):
    with pytest.raises(PolicyViolation, match="'count'"):
        svc.issue_cards({"count": count})
    assert svc.store.count_cards() == 0


DIGIT_LIKE = st.characters(categories=["Nd", "No", "Nl", "Zs", "Pd"])  # digits of any script, "²", spaces, dashes


@given(st.text(DIGIT_LIKE, max_size=8) | st.text(max_size=12))
def test_the_gate_reads_a_count_string_as_a_whole_number_or_refuses_it(value):
    policy = Policy.default()
    try:
        rec = policy.validate("issue", {"count": value}, today=DAY)
    except PolicyViolation as exc:
        assert exc.field == "count"
    else:
        assert value.isascii() and value.isdigit() and rec.count == int(value) and rec.count >= 1
