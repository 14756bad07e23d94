"""Backup, restore and key ring export through the CLI, as an operator runs them: files written 0600 and
never overwritten, restore asks for --yes, and a lost home comes back from a database backup plus a key
ring kept apart."""

from __future__ import annotations

import json
import shutil
import stat

import pytest

from anoncard import KeyRing
from tests.cli_helpers import KEYRING_NAME, assert_refused, assert_unchanged, cli, issue, make_home, ok, snapshot


def balances(home, codes) -> dict[str, int]:
    return {c: json.loads(ok(cli(home, "balance", "--card", c, "--json")).stdout)["points"] for c in codes}


@pytest.fixture
def shop(tmp_path):
    """Three cards with purchases; a rotation, after which the first card was seen (re-linked)."""
    home = make_home(tmp_path / "home")
    codes = issue(home, 3)
    for i, code in enumerate(codes):
        ok(
            cli(
                home,
                "checkout",
                "--card",
                code,
                "--txn",
                f"a{i}",
                "--line",
                f"dairy={10 + i}.00",
                "--line",
                "fruit=2.00",
            )
        )
    ok(cli(home, "keys", "rotate"))
    ok(cli(home, "checkout", "--card", codes[0], "--txn", "a9", "--line", "wine=40.00"))
    return home, codes


def test_backup_and_restore_round_trip(shop, tmp_path):
    home, codes = shop
    at_backup = balances(home, codes)
    dest = tmp_path / "backups" / "anoncard.db"
    dest.parent.mkdir()
    result = ok(cli(home, "backup", str(dest)))
    assert result.stdout == f"backup written: {dest} ({dest.stat().st_size} bytes)\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600  # a copy of pseudonymous histories: owner only

    # the store goes on: a new checkout and a refund
    ok(cli(home, "checkout", "--card", codes[1], "--txn", "b1", "--line", "coffee=7.99"))
    ok(cli(home, "refund", "--txn", "a2"))
    assert balances(home, codes) != at_backup

    before = snapshot(home)
    refused = cli(home, "restore", str(dest), "--json")
    assert_refused(refused, exit_code=3, needles=("'yes'", "--yes"), as_json=True, code="policy_violation")
    assert_unchanged(home, before)

    restored = json.loads(ok(cli(home, "restore", str(dest), "--yes", "--json")).stdout)
    assert restored == {"cards": 3, "cards_purged_again": 0}
    assert balances(home, codes) == at_backup
    # what happened after the backup is gone; sent again, it counts anew (it is not a replay)
    again = json.loads(ok(cli(home, "checkout", "--card", codes[1], "--txn", "b1", "--line", "coffee=7.99",
                              "--json")).stdout)  # fmt: skip
    assert again["replayed"] is False and again["balance"] == at_backup[codes[1]] + 7
    ok(cli(home, "audit"))


def test_backup_never_overwrites_a_file(shop, tmp_path):
    home, _codes = shop
    dest = tmp_path / "old-backup.db"
    dest.write_bytes(b"yesterday's backup")
    result = cli(home, "backup", str(dest), "--json")
    assert result.exit_code != 0 and result.stderr.startswith("Error: ")
    assert "error" in json.loads(result.stdout)
    assert dest.read_bytes() == b"yesterday's backup"


def test_a_damaged_backup_is_refused_and_the_home_is_unchanged(shop, tmp_path):
    home, codes = shop
    dest = tmp_path / "b.db"
    ok(cli(home, "backup", str(dest)))
    damaged = tmp_path / "damaged.db"
    good = dest.read_bytes()
    damaged.write_bytes(good[: len(good) // 2])
    before = snapshot(home)
    result = cli(home, "restore", str(damaged), "--yes")
    assert result.exit_code == 8, (result.exit_code, result.stderr)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert_unchanged(home, before)
    assert balances(home, codes)  # the home still works


def test_keys_export_writes_the_ring_0600_and_never_overwrites(shop, tmp_path):
    home, _codes = shop
    dest = tmp_path / "offline" / "keyring.json"
    dest.parent.mkdir()
    result = ok(cli(home, "keys", "export", str(dest)))
    assert result.stdout == f"key ring exported to {dest} (mode 0600); store it apart from backups\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    exported, live = KeyRing.load(dest), KeyRing.load(home / KEYRING_NAME)
    assert exported.to_json() == live.to_json()
    assert [v.state for v in exported.versions] == ["verify-only", "primary"]

    # a second export to the same place is refused: an older copy is never silently replaced
    ok(cli(home, "keys", "rotate"))
    first = dest.read_bytes()
    again = cli(home, "keys", "export", str(dest), "--json")
    assert_refused(again, exit_code=3, needles=("'dest'", "exists"), as_json=True, code="policy_violation")
    assert dest.read_bytes() == first


def test_a_lost_home_comes_back_from_the_database_backup_and_the_exported_ring(shop, tmp_path):
    home, codes = shop
    at_backup = balances(home, codes)
    ok(cli(home, "backup", str(tmp_path / "anoncard-backup.db")))
    ok(cli(home, "keys", "export", str(tmp_path / "keyring-export.json")))

    # the server's disk dies; a new home gets the exported ring, the programme and the policy...
    new = tmp_path / "new-home"
    new.mkdir(mode=0o700)
    shutil.copy2(tmp_path / "keyring-export.json", new / KEYRING_NAME)
    for name in ("programme.toml", "policy.toml"):
        shutil.copy2(home / name, new / name)
    shutil.rmtree(home)
    # ...and the database backup
    restored = json.loads(ok(cli(new, "restore", str(tmp_path / "anoncard-backup.db"), "--yes", "--json")).stdout)
    assert restored == {"cards": 3, "cards_purged_again": 0}
    assert balances(new, codes) == at_backup  # every card, re-linked or not, is recognised
    ok(cli(new, "audit"))
