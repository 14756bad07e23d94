"""A hostile file system: planted links in every output path, directories others can write to,
and owner-only modes from the first byte."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard import files
from anoncard.errors import KeyRingError, PolicyViolation, StoreError
from tests.cli_helpers import KEYRING_NAME, assert_refused, assert_unchanged, cli, issue, ok, snapshot

VICTIM_TEXT = b"the file an attacker wants overwritten\n"
LINKS = ("to-a-file", "dangling", "to-a-directory")


@pytest.fixture
def shop(home: Path) -> tuple[Path, str]:
    """A home with one card that has shopped enough for the entrance to print coupons."""
    (code,) = issue(home)
    for i in range(3):
        ok(cli(home, "checkout", "--card", code, "--txn", f"h{i}", "--line", "dairy=2.49", "--line", "coffee=6.99"))
    return home, code


def plant(link: Path, kind: str, lair: Path) -> Path:
    """Plant a link at ``link``; the file or directory it points to (which must stay untouched)."""
    lair.mkdir(exist_ok=True)
    if kind == "to-a-file":
        target = lair / "victim"
        target.write_bytes(VICTIM_TEXT)
        target.chmod(0o666)  # the attacker's own file, readable by them once written into
    elif kind == "dangling":
        target = lair / "not-yet"
    else:
        target = lair / "a-directory"
        target.mkdir()
    link.symlink_to(target)
    return target


def assert_untouched(target: Path, kind: str) -> None:
    if kind == "to-a-file":
        assert target.read_bytes() == VICTIM_TEXT, "written through the planted link"
    elif kind == "dangling":
        assert not target.exists() and not target.is_symlink(), "created through the dangling link"
    else:
        assert list(target.iterdir()) == [], "written into the linked directory"


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- QR directories --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["card", "enter"])
def test_a_qr_dir_that_is_a_link_to_a_directory_is_refused(shop, tmp_path, command):
    home, code = shop
    lair = tmp_path / "lair"
    lair.mkdir()
    qr_dir = tmp_path / "print-run"
    qr_dir.symlink_to(lair)
    before = snapshot(home)
    args = ["card", "issue", "--count", "2"] if command == "card" else ["enter", "--card", code]
    result = cli(home, *args, "--qr-dir", str(qr_dir), "--json")
    assert_refused(result, exit_code=3, needles=("'qr-dir'", "link"), as_json=True, code="policy_violation")
    assert list(lair.iterdir()) == []  # no card secret, no coupon in the attacker's directory
    assert_unchanged(home, before)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o757], ids=oct)
@pytest.mark.parametrize("command", ["card", "enter"])
def test_a_qr_dir_others_can_write_to_is_refused(shop, tmp_path, command, mode):
    home, code = shop
    qr_dir = tmp_path / "shared-print-run"
    qr_dir.mkdir()
    qr_dir.chmod(mode)
    before = snapshot(home)
    args = ["card", "issue", "--count", "2"] if command == "card" else ["enter", "--card", code]
    result = cli(home, *args, "--qr-dir", str(qr_dir))
    assert_refused(result, exit_code=3, needles=("'qr-dir'", "write"), as_json=False, code="policy_violation")
    assert entries(qr_dir) == []
    assert_unchanged(home, before)


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a directory to another user needs root")
def test_a_qr_dir_of_another_user_is_refused(shop, tmp_path):
    home, _code = shop
    qr_dir = tmp_path / "theirs"
    qr_dir.mkdir(mode=0o700)
    os.chown(qr_dir, 4242, 4242)
    before = snapshot(home)
    result = cli(home, "card", "issue", "--count", "2", "--qr-dir", str(qr_dir))
    assert_refused(result, exit_code=3, needles=("'qr-dir'", "another user"), as_json=False, code="policy_violation")
    assert entries(qr_dir) == []
    assert_unchanged(home, before)


@pytest.mark.parametrize("kind", LINKS)
def test_enter_refuses_a_link_planted_under_a_coupon_file_name(shop, tmp_path, kind):
    home, code = shop
    qr_dir = tmp_path / "spool"
    qr_dir.mkdir(mode=0o700)
    target = plant(qr_dir / "coupon-01.png", kind, tmp_path / "lair")
    before = snapshot(home)
    result = cli(home, "enter", "--card", code, "--qr-dir", str(qr_dir))
    assert_refused(result, exit_code=3, needles=("'qr-dir'", "link"), as_json=False, code="policy_violation")
    assert_untouched(target, kind)
    assert_unchanged(home, before)  # refused before any coupon was stored


def test_enter_replaces_its_own_spool_files_owner_only(shop, tmp_path):
    home, code = shop
    qr_dir = tmp_path / "spool"
    first = json.loads(ok(cli(home, "enter", "--card", code, "--qr-dir", str(qr_dir), "--json")).stdout)
    again = json.loads(ok(cli(home, "enter", "--card", code, "--qr-dir", str(qr_dir), "--json")).stdout)
    assert [c["code"] for c in again["coupons"]] == [c["code"] for c in first["coupons"]]  # held ones, reprinted
    names = entries(qr_dir)
    assert names == [f"coupon-{i:02d}.png" for i in range(1, len(first["coupons"]) + 1)]  # no temporary left
    assert all(stat.S_IMODE((qr_dir / n).stat().st_mode) == 0o600 for n in names)


@pytest.mark.parametrize("kind", LINKS)
def test_a_print_run_refuses_a_link_planted_under_any_of_its_names(tmp_path, kind):
    from anoncard import qr

    qr_dir = tmp_path / "run"
    qr_dir.mkdir(mode=0o700)
    target = plant(qr_dir / "card-000003.png", kind, tmp_path / "lair")
    with pytest.raises(PolicyViolation, match="'qr-dir'"):
        qr.write_run(["C1-AAAA", "C1-BBBB", "C1-CCCC", "C1-DDDD"], qr_dir, "card-", "png")
    assert_untouched(target, kind)
    assert entries(qr_dir) == ["card-000003.png"]  # all or none: the two written before are gone


@pytest.mark.parametrize("kind", LINKS)
def test_card_issue_refuses_a_qr_dir_holding_a_planted_link(home, tmp_path, kind):
    qr_dir = tmp_path / "run"
    qr_dir.mkdir(mode=0o700)
    target = plant(qr_dir / "card-000001.png", kind, tmp_path / "lair")
    before = snapshot(home)
    result = cli(home, "card", "issue", "--count", "2", "--qr-dir", str(qr_dir))
    assert_refused(result, exit_code=3, needles=("'qr-dir'",), as_json=False, code="policy_violation")
    assert_untouched(target, kind)
    assert_unchanged(home, before)


# -- backup, report, export --------------------------------------------------------------------


OUTPUTS = {  # command, the option it names, exit code and error code of its refusal
    "backup": (["backup"], "anoncard.db", "dest", 8, "store_error"),
    "report": (["audit", "--report"], "audit.md", "report", 3, "policy_violation"),
    "export": (["keys", "export"], "keyring.json", "dest", 3, "policy_violation"),
}


@pytest.mark.parametrize("kind", LINKS)
@pytest.mark.parametrize("which", sorted(OUTPUTS))
def test_an_output_path_that_is_a_planted_link_is_refused(home, tmp_path, which, kind):
    args, name, field, exit_code, code = OUTPUTS[which]
    issue(home, 2)
    out = tmp_path / "out"
    out.mkdir()
    dest = out / name
    target = plant(dest, kind, tmp_path / "lair")
    before = snapshot(home)
    result = cli(home, *args, str(dest), "--json")
    if kind == "to-a-directory":  # the option's type refuses it before anoncard runs
        needles, exit_code, code = ("is a directory",), 2, "usage_error"
    else:
        needles = (f"'{field}'", "exists")
    assert_refused(result, exit_code=exit_code, needles=needles, as_json=True, code=code)
    assert_untouched(target, kind)
    assert dest.is_symlink()  # the link itself is left for the operator to look at
    assert entries(out) == [name]  # and no temporary file beside it
    assert_unchanged(home, before)


@pytest.mark.parametrize("suffix", ["-journal", "-wal", "-shm"])
def test_a_backup_never_opens_journal_names_next_to_its_destination(home, tmp_path, suffix):
    issue(home, 3)
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "anoncard.db"
    target = plant(out / f"anoncard.db{suffix}", "to-a-file", tmp_path / "lair")
    ok(cli(home, "backup", str(dest)))
    assert_untouched(target, "to-a-file")
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert entries(out) == sorted(["anoncard.db", f"anoncard.db{suffix}"])


def test_a_backup_into_a_directory_others_can_write_to_is_refused(home, tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    out.chmod(0o777)
    result = cli(home, "backup", str(out / "anoncard.db"))
    assert result.exit_code == 8 and "'dest'" in result.stderr and "sticky" in result.stderr
    assert entries(out) == []
    out.chmod(0o1777)  # sticky, like /tmp: nobody else can rename or delete our file there
    ok(cli(home, "backup", str(out / "anoncard.db")))
    assert stat.S_IMODE((out / "anoncard.db").stat().st_mode) == 0o600


def test_every_output_is_owner_only_from_its_first_byte_whatever_the_umask(home, tmp_path):
    (code,) = issue(home)
    ok(cli(home, "checkout", "--card", code, "--txn", "t1", "--line", "dairy=2.49", "--line", "coffee=6.99"))
    old = os.umask(0)  # a careless shell: nothing but the modes anoncard asks for protects the files
    try:
        out = tmp_path / "out"
        out.mkdir(mode=0o700)
        ok(cli(home, "card", "issue", "--count", "2", "--qr-dir", str(out / "cards")))
        ok(cli(home, "enter", "--card", code, "--qr-dir", str(out / "coupons")))
        ok(cli(home, "backup", str(out / "backup.db")))
        ok(cli(home, "keys", "export", str(out / "keyring.json")))
        for suffix in (".md", ".html", ".json"):
            ok(cli(home, "audit", "--report", str(out / f"audit{suffix}")))
        ok(cli(home, "keys", "rotate"))
    finally:
        os.umask(old)
    made = [p for p in out.rglob("*")] + [home / KEYRING_NAME]
    assert len(made) >= 10
    for path in made:
        want = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == want, path.name


# -- the helper module itself ----------------------------------------------------------------


def test_replace_refuses_a_link_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "policy.toml"
    files.replace(path, b"old", field="policy")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    files.replace(path, b"new", field="policy")
    assert path.read_bytes() == b"new" and entries(tmp_path) == ["policy.toml"]
    link = tmp_path / "linked.toml"
    target = plant(link, "to-a-file", tmp_path / "lair")
    with pytest.raises(PolicyViolation, match="'policy'"):
        files.replace(link, b"through the link?", field="policy")
    assert_untouched(target, "to-a-file")


def test_a_key_ring_saved_over_a_planted_link_is_refused(tmp_path):
    from anoncard import KeyRing

    path = tmp_path / "keyring.json"
    target = plant(path, "to-a-file", tmp_path / "lair")
    with pytest.raises(KeyRingError, match="link"):
        KeyRing.create("2015-03-02").save(path)
    assert_untouched(target, "to-a-file")


def test_an_exclusive_create_that_fails_leaves_nothing(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    with files.Directory(d, field="report") as out:
        out.create("a", b"x")
        with pytest.raises(PolicyViolation, match="exists"):
            out.create("a", b"y")
    assert (d / "a").read_bytes() == b"x"
    with pytest.raises(PolicyViolation, match="does not exist"):
        files.create(tmp_path / "missing" / "a", b"x", field="report")


@given(st.binary(max_size=64))
def test_read_text_gives_text_or_the_callers_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("read") / "file.toml"
    path.write_bytes(data)
    try:
        text = files.read_text(path, error=KeyRingError, what="key ring")
    except KeyRingError as exc:
        assert exc.message == f"key ring: {path} is not UTF-8 text"
    else:
        assert text.encode("utf-8") == data


@pytest.mark.parametrize("kind", LINKS)
def test_the_library_refuses_every_planted_link_at_a_backup_destination(svc, tmp_path, kind):
    out = tmp_path / "out"
    out.mkdir()
    target = plant(out / "anoncard.db", kind, tmp_path / "lair")
    with pytest.raises(StoreError, match="'dest'.*exists"):
        svc.backup(out / "anoncard.db")
    assert_untouched(target, kind)
    assert entries(out) == ["anoncard.db"]
