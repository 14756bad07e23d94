"""The policy file: validated on load, fingerprinted canonically, changed only through apply."""

from __future__ import annotations

from datetime import date

import pytest

from anoncard import PolicyViolation, Service
from anoncard.errors import PolicyFileError
from anoncard.policy import Policy, default_text
from tests.conftest import basket, clock_at, fixed_clock

TEXT = default_text()


def test_fingerprint_ignores_comments_and_layout_but_not_content():
    p = Policy.from_toml(TEXT)
    reformatted = "\n".join(line for line in TEXT.splitlines() if not line.lstrip().startswith("#"))
    assert Policy.from_toml(reformatted).fingerprint == p.fingerprint
    changed = TEXT.replace("history_days = 400", "history_days = 401")
    assert Policy.from_toml(changed).fingerprint != p.fingerprint
    assert len(p.fingerprint) == 64


@pytest.mark.parametrize(
    "old, new, rule",
    [
        ('purpose = "how many cards to print"\n', "", "requests.issue.fields.count.purpose is missing"),
        ('purpose = "the reward chosen from the catalogue"\n', 'purpose = ""\n', "purpose is missing"),
        ('type = "reward_name"', 'type = "text"', "type must be 'reward_name'"),
        ("[requests.balance.fields.card]", "[requests.balance.fields.email]", "not a field anoncard can serve"),
        ('max = "10000.00"', 'max = "-1"', "max"),
        ("history_days = 400", "history_days = 0", "must be set"),
        ('time_resolution = "day"', 'time_resolution = "hour"', "time_resolution"),
        ('columns.version = { type = "integer"', 'columns.version = { type = "anything"', "columns.version.type"),
        ("[retention]", "[marketing]\n[retention]", "unknown section"),
    ],
)
def test_invalid_policies_are_refused_naming_the_entry(old, new, rule):
    assert old in TEXT
    with pytest.raises(PolicyFileError, match=rule.replace("(", r"\(").replace("[", r"\[")):
        Policy.from_toml(TEXT.replace(old, new, 1))


def test_dropping_an_optional_field_refuses_that_use(home):
    text = TEXT.replace(
        '[requests.refund.fields.refund_id]\ntype = "document_id"\nrequired = false\nmax_length = 64\n'
        'purpose = "make a retried partial refund count once"\n'
        'retention = "stored only as a keyed 16-byte reference, for retention.documents_days"\n',
        "",
    )
    assert text != TEXT
    with Service.open(home, clock=fixed_clock) as svc:
        svc.apply_policy(text, home / "policy.toml")
        with pytest.raises(PolicyViolation, match="'refund_id': not allowed"):
            svc.refund({"txn": "t1", "refund_id": "r1"})


def test_apply_records_old_and_new_fingerprints(home):
    new_text = TEXT.replace("documents_days = 120", "documents_days = 90")
    with Service.open(home, clock=fixed_clock) as svc:
        old = svc.policy.fingerprint
        change = svc.apply_policy(new_text, home / "policy.toml")
        assert change == {"old": old, "new": Policy.from_toml(new_text).fingerprint}
        assert svc.recorded_policy() == change["new"]
    with Service.open(home, clock=fixed_clock) as svc:
        assert svc.policy.documents_days == 90


def test_an_invalid_new_policy_changes_nothing(home):
    before = (home / "policy.toml").read_text()
    with Service.open(home, clock=fixed_clock) as svc:
        n_events = len(svc.store.events())
        with pytest.raises(PolicyFileError):
            svc.apply_policy("not = [valid", home / "policy.toml")
        assert len(svc.store.events()) == n_events
    assert (home / "policy.toml").read_text() == before


def test_a_policy_edited_by_hand_stops_the_service(home):
    path = home / "policy.toml"
    path.write_text(path.read_text().replace("documents_days = 120", "documents_days = 3650"))
    with pytest.raises(PolicyFileError, match="policy apply"):
        Service.open(home, clock=fixed_clock)


def test_week_resolution_coarsens_stored_days(home):
    with Service.open(home, clock=clock_at(date(2015, 3, 5))) as svc:  # a Thursday
        svc.apply_policy(TEXT.replace('time_resolution = "day"', 'time_resolution = "week"'), home / "policy.toml")
        (card,) = svc.issue_cards({"count": 1})
        svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "1.00"))})
        days = {d for (d,) in svc.store.conn.execute("SELECT day FROM history")}
        assert days == {"2015-03-02"}  # the Monday of that week


def test_markdown_names_every_field_and_column():
    p = Policy.default()
    md = p.to_markdown()
    assert p.fingerprint in md
    for kind, fields in p.requests.items():
        assert f"### {kind}" in md
        for name in fields:
            assert f"| {name} |" in md
    for table, spec in p.storage.items():
        for column in spec.columns:
            assert f"| {column} |" in md, (table, column)
