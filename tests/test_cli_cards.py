"""Cards and keys through the CLI: card issue (codes, QR files, preview), keys list/rotate/retire,
help texts, and a key ring that others may read."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import click
import pytest

from anoncard import cards, qr, recovery
from cli.main import main
from tests.cli_helpers import (
    KEYRING_NAME,
    assert_refused,
    assert_unchanged,
    cli,
    copy_home,
    issue,
    make_home,
    ok,
    snapshot,
)

CODE_FORMAT = re.compile(r"C1(-[0-9A-HJKMNP-TV-Z]{4}){6}-[0-9A-HJKMNP-TV-Z]{3}")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_home(tmp_path_factory.mktemp("cli-cards") / "home")


@pytest.fixture
def home(template, tmp_path):
    return copy_home(template, tmp_path / "home")


def keys(home) -> list[dict]:
    return json.loads(ok(cli(home, "keys", "list", "--json")).stdout)


# -- card issue ----------------------------------------------------------------------------


def test_card_issue_prints_distinct_valid_codes_one_per_line(home):
    result = ok(cli(home, "card", "issue", "--count", "5"))
    pairs = [line.split("  ") for line in result.stdout.splitlines()]
    codes = [card for card, _stub in pairs]
    assert len(codes) == 5 == len(set(codes))
    for code in codes:
        assert CODE_FORMAT.fullmatch(code), code
        assert cards.decode(code).code == code
    stubs = [stub for _card, stub in pairs]  # each line: the card code, then its stub's recovery code
    assert len(set(stubs)) == 5 and all(recovery.decode(s).code == s for s in stubs)
    as_json = json.loads(ok(cli(home, "card", "issue", "--count", "2", "--json")).stdout)
    assert [sorted(row) for row in as_json] == [["card", "recovery"], ["card", "recovery"]]
    assert all(CODE_FORMAT.fullmatch(row["card"]) for row in as_json)
    assert keys(home)[0]["cards"] == 7
    # every printed code is a card of this home
    for code in [*codes, *(row["card"] for row in as_json)]:
        assert json.loads(ok(cli(home, "balance", "--card", code, "--json")).stdout)["points"] == 0


@pytest.mark.parametrize("count", ["0", "-1", "100001"])
def test_card_issue_refuses_a_count_out_of_range(home, count):
    before = snapshot(home)
    result = cli(home, "card", "issue", "--count", count, "--json")
    assert_refused(result, exit_code=3, needles=("'count'", "from 1 to 100000"), as_json=True, code="policy_violation")
    assert_unchanged(home, before)


@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("png", b"\x89PNG\r\n\x1a\n")])
def test_card_issue_writes_one_qr_file_per_card(home, tmp_path, fmt, magic):
    qr_dir = tmp_path / "print-run"
    result = ok(cli(home, "card", "issue", "--count", "3", "--qr-dir", str(qr_dir), "--qr-format", fmt))
    codes = [line.split()[0] for line in result.stdout.splitlines()]
    assert len(codes) == 3 and all(CODE_FORMAT.fullmatch(c) for c in codes)
    files = sorted(qr_dir.iterdir())
    assert [p.name for p in files] == [f"card-{i:06d}.{fmt}" for i in (1, 2, 3)]
    for code, path in zip(codes, files, strict=True):
        data = path.read_bytes()
        assert data.startswith(magic)
        if fmt == "svg":
            assert b"<svg" in data
        assert data == qr.render(code, fmt)  # the file is the QR code of the code printed on that line
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds a card secret
    assert len({p.read_bytes() for p in files}) == 3


def test_card_issue_json_names_each_cards_qr_file(home, tmp_path):
    qr_dir = tmp_path / "qr"
    rows = json.loads(
        ok(cli(home, "card", "issue", "--count", "2", "--qr-dir", str(qr_dir), "--qr-format", "svg", "--json")).stdout
    )
    assert [row["qr"] for row in rows] == [str(qr_dir / "card-000001.svg"), str(qr_dir / "card-000002.svg")]
    for row in rows:
        assert Path(row["qr"]).read_bytes() == qr.render(row["card"], "svg")


def test_card_issue_preview_draws_each_code_in_the_terminal(home):
    result = ok(cli(home, "card", "issue", "--count", "2", "--preview"))
    lines = result.stdout.splitlines()
    heads = [line for line in lines if line and CODE_FORMAT.fullmatch(line.split()[0])]
    assert len(heads) == 2
    assert lines[0] == heads[0]
    for head in heads:
        drawing = qr.terminal(head.split()[0])
        assert "█" in drawing and len(drawing.splitlines()) >= 15
        assert f"{head}\n{drawing}" in result.stdout


def test_card_issue_with_an_unusable_qr_dir_stores_no_card(home, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    before = snapshot(home)
    result = cli(home, "card", "issue", "--count", "3", "--qr-dir", str(blocker / "sub"))
    assert result.exit_code != 0
    assert_unchanged(home, before)  # else 3 cards exist whose codes nobody will ever see
    assert result.stderr.startswith("Error: ")  # not a NotADirectoryError traceback


def test_card_issue_never_overwrites_an_earlier_print_run(home, tmp_path):
    qr_dir = tmp_path / "run"
    ok(cli(home, "card", "issue", "--count", "2", "--qr-dir", str(qr_dir)))
    first = {p.name: p.read_bytes() for p in qr_dir.iterdir()}
    before = snapshot(home)
    result = cli(home, "card", "issue", "--count", "2", "--qr-dir", str(qr_dir))
    assert result.exit_code == 3
    assert (
        result.stderr == "Error: field 'qr-dir': already holds card-*.png files from an earlier run; "
        "use an empty directory\n"
    )
    assert_unchanged(home, before)
    assert {p.name: p.read_bytes() for p in qr_dir.iterdir()} == first
    ok(cli(home, "card", "issue", "--count", "1", "--qr-dir", str(qr_dir), "--qr-format", "svg"))  # other format


def test_a_bad_option_value_is_an_error_object_too(home):
    result = cli(home, "card", "issue", "--count", "abc", "--json")
    assert result.exit_code != 0
    assert result.stderr.startswith("Error: ")  # click prints "Usage: ..." first
    assert "error" in json.loads(result.stdout)  # and nothing on stdout


# -- keys ----------------------------------------------------------------------------------


def test_keys_list_rotate_retire(home):
    old_seen, old_unseen = issue(home, 2)
    listed = ok(cli(home, "keys", "list"))
    assert re.fullmatch(r"v1  primary      created \d{4}-\d\d-\d\d  cards 2\n", listed.stdout)
    assert [(k["version"], k["state"], k["cards"]) for k in keys(home)] == [(1, "primary", 2)]

    rotated = json.loads(ok(cli(home, "keys", "rotate", "--json")).stdout)
    assert rotated == {"primary": 2}
    assert [(k["version"], k["state"], k["cards"]) for k in keys(home)] == [(1, "verify-only", 2), (2, "primary", 0)]
    assert ok(cli(home, "keys", "rotate")).stdout == "new primary key: v3\n"
    (new,) = issue(home)
    # a card seen after the rotation is re-linked to the primary key
    seen = json.loads(ok(cli(home, "balance", "--card", old_seen, "--json")).stdout)
    assert seen["relinked"] is True
    assert [(k["version"], k["state"], k["cards"]) for k in keys(home)] == [
        (1, "verify-only", 1),
        (2, "verify-only", 0),
        (3, "primary", 2),
    ]

    retired = json.loads(ok(cli(home, "keys", "retire", "--yes", "--json")).stdout)
    assert retired == {"version": 1, "cards_purged": 1}
    assert [(k["version"], k["state"]) for k in keys(home)] == [(1, "retired"), (2, "verify-only"), (3, "primary")]
    ring = json.loads((home / KEYRING_NAME).read_text())
    assert [k["material"] is None for k in ring["keys"]] == [True, False, False]  # v1's material is destroyed
    assert stat.S_IMODE((home / KEYRING_NAME).stat().st_mode) == 0o600
    # the card not seen since the rotation is gone for good; the others still work
    gone = cli(home, "balance", "--card", old_unseen, "--json")
    assert_refused(gone, exit_code=4, needles=("'card'", "unknown card"), as_json=True, code="unknown_card")
    for code in (old_seen, new):
        assert json.loads(ok(cli(home, "balance", "--card", code, "--json")).stdout)["relinked"] is False
    text = ok(cli(home, "keys", "retire", "--yes"))
    assert text.stdout == "retired key v2; purged 0 cards and their histories\n"
    before = snapshot(home)
    nothing = cli(home, "keys", "retire", "--yes")
    assert_refused(nothing, exit_code=6, needles=("no verify-only key", "rotate first"), as_json=False,
                   code="keyring_error")  # fmt: skip
    assert_unchanged(home, before)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_keys_retire_without_yes_is_refused_and_changes_nothing(home, as_json):
    issue(home, 1)
    ok(cli(home, "keys", "rotate"))
    before = snapshot(home)
    result = cli(home, "keys", "retire", *(["--json"] if as_json else []))
    assert_refused(result, exit_code=3, needles=("'yes'", "--yes"), as_json=as_json, code="policy_violation")
    assert_unchanged(home, before)
    assert [k["state"] for k in keys(home)] == ["verify-only", "primary"]


# -- help ----------------------------------------------------------------------------------


def leaf_commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out += leaf_commands(command, (*path, name))
        else:
            out.append((*path, name))
    return out


def test_top_level_help_lists_every_command():
    result = ok(cli("unused", "--help"))
    listed = re.findall(r"^  (\S+)", result.stdout.split("Commands:")[1], flags=re.M)
    for name in ("init", "card", "checkout", "refund", "balance", "redeem", "keys", "demo"):
        assert name in listed, name
    assert sorted(listed) == sorted(main.commands)


COMMANDS = leaf_commands(main)


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_command_help_has_an_example(path):
    result = ok(cli("unused", *path, "--help"))
    assert "Example" in result.stdout
    example = result.stdout.split("Example", 1)[1]
    # the example runs this very command (global options such as --home may come first)
    assert re.search(r"anoncard(?: --\S+ \S+)* " + re.escape(" ".join(path)) + r"\b", example), example


@pytest.mark.parametrize("name", sorted(n for n, c in main.commands.items() if isinstance(c, click.Group)))
def test_every_group_help_has_an_example_of_one_of_its_commands(name):
    example = ok(cli("unused", name, "--help")).stdout.split("Example", 1)[1]
    assert re.search(rf"anoncard {name} ({'|'.join(main.commands[name].commands)})\b", example), example


def test_the_required_commands_are_all_there():
    assert {("init",), ("card", "issue"), ("checkout",), ("refund",), ("balance",), ("redeem",), ("keys", "list"),
            ("keys", "rotate"), ("keys", "retire"), ("demo",)} <= set(COMMANDS)  # fmt: skip


# -- a key ring others may read ------------------------------------------------------------


@pytest.fixture(scope="module")
def card_home(tmp_path_factory):
    """A card with 200 points from checkout ``t1``, and a verify-only key, so every command below can succeed."""
    home = make_home(tmp_path_factory.mktemp("cli-ring") / "home")
    (code,) = issue(home)
    ok(cli(home, "checkout", "--card", code, "--txn", "t1", "--line", "wine=200.00"))
    ok(cli(home, "keys", "rotate"))
    return home, code


RING_COMMANDS = [
    ["init"],
    ["keys", "list"],
    ["keys", "rotate"],
    ["keys", "retire", "--yes"],
    ["card", "issue", "--count", "2"],
    ["checkout", "--card", "CODE", "--txn", "t2", "--line", "dairy=1.00"],
    ["refund", "--txn", "t1"],
    ["balance", "--card", "CODE"],
    ["redeem", "--card", "CODE", "--reward", "coffee", "--txn", "r1"],
    ["enter", "--card", "CODE"],
    ["coupons", "public-key"],
    ["purge"],
]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604], ids=oct)
@pytest.mark.parametrize("args", RING_COMMANDS, ids=[" ".join(a[:2]) for a in RING_COMMANDS])
def test_a_key_ring_others_may_read_is_refused_by_every_command(card_home, tmp_path, args, mode):
    home = copy_home(card_home[0], tmp_path / "home")
    ring = home / KEYRING_NAME
    ring.chmod(mode)
    before = snapshot(home)
    result = cli(home, *[a.replace("CODE", card_home[1]) for a in args], "--json")
    needles = (f"mode {mode:04o}", f"chmod 600 {ring}")
    assert_refused(result, exit_code=6, needles=needles, as_json=True, code="keyring_error")
    assert_unchanged(home, before)
    assert stat.S_IMODE(ring.stat().st_mode) == mode  # nothing "fixed" it silently
    ring.chmod(0o600)
    ok(cli(home, *[a.replace("CODE", card_home[1]) for a in args]))  # the same command works once it is 0600
