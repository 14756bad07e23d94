from __future__ import annotations

import pytest

from anoncard import Programme, ProgrammeError
from anoncard.errors import PolicyViolation
from anoncard.programme import DEFAULT_TOML


def test_default_programme_follows_kaiser():
    p = Programme.default()
    assert p.points_per_euro == 1
    assert [(g.name, g.min_spend_cents) for g in p.gifts] == [
        ("chocolate bar", 3000),
        ("jar of hazelnut spread", 20000),
    ]
    assert p.gift_for(2999) is None
    assert p.gift_for(3000).name == "chocolate bar"
    assert p.gift_for(20000).name == "jar of hazelnut spread"
    # a reward returns at least 1 % of the spend that earned its points
    for r in p.rewards.values():
        assert r.value_cents * 100 >= r.points * 100


def test_multipliers_apply_per_category():
    p = Programme.default()
    assert p.points_for([("fruit", 1000), ("dairy", 1000)]) == 30
    assert p.points_for([("dairy", 199)]) == 1


def test_unknown_reward_lists_the_catalogue():
    with pytest.raises(PolicyViolation, match="'reward'.*coffee"):
        Programme.default().reward("caviar")


@pytest.mark.parametrize(
    "change, rule",
    [
        (('points_per_euro = "1"', 'points_per_euro = "-1"'), "earn.points_per_euro"),
        (('min_spend = "30.00"', 'min_spend = "30.005"'), "gifts.min_spend"),
        (("points = 150", "points = 0"), "positive integer"),
        (('min_spend = "200.00"', 'min_spend = "30.00"'), "share a threshold"),
        (("[[gifts]]", "[[gifts]"), "not valid TOML"),
        (('name = "coffee"\n', ""), "missing key"),
    ],
)
def test_invalid_programme_names_the_rule(change, rule):
    old, new = change
    assert old in DEFAULT_TOML
    with pytest.raises(ProgrammeError, match=rule):
        Programme.from_toml(DEFAULT_TOML.replace(old, new, 1))


def test_a_programme_change_is_recorded_in_the_event_log(home):
    import json

    from anoncard import Service

    with Service.open(home) as svc:
        first = svc.store.events("programme_changed")
        assert [json.loads(e.detail)["old"] for e in first] == [None]
    path = home / "programme.toml"
    path.write_text(path.read_text().replace('points_per_euro = "1"', 'points_per_euro = "2"'))
    with Service.open(home) as svc:
        assert len(svc.store.events("programme_changed")) == 1  # opening writes nothing
        svc.prepare()  # the startup step of a process that writes records it
        changes = [json.loads(e.detail) for e in svc.store.events("programme_changed")]
        assert len(changes) == 2 and changes[1]["old"] == changes[0]["new"] != changes[1]["new"]
        assert changes[1]["new"] == svc.programme.fingerprint
    with Service.open(home) as svc:  # unchanged: nothing new recorded
        svc.prepare()
        assert len(svc.store.events("programme_changed")) == 2
