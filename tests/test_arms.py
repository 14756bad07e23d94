"""Coupon arms at the entrance: a keyed draw per card and campaign period; holdout cards get
nothing printed and a ghost recorded; the caps count ghosts as if printed."""

from __future__ import annotations

import math
import secrets
import sqlite3
from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard import Service, arms
from anoncard.errors import ProgrammeError
from anoncard.keyring import KeyRing
from anoncard.policy import Policy, default_text
from anoncard.programme import DEFAULT_TOML, Campaign, CouponRules, Programme
from anoncard.selfservice import Holder
from anoncard.store import SCHEMA_VERSION

from .conftest import basket, on

MEASURED = Campaign(first_day=date(2015, 3, 2), weeks=4, targeted=80, random=10, holdout=10)
RING = KeyRing.create("2015-03-02")


def _arm_of(campaign: Campaign) -> Programme:
    return replace(Programme.default(), campaign=campaign)


# -- the draw ----------------------------------------------------------------------------


def test_the_arm_is_fixed_by_key_token_and_period():
    tokens = [secrets.token_bytes(32) for _ in range(400)]
    first = [arms.arm(RING, MEASURED, t, 5) for t in tokens]
    assert first == [arms.arm(RING, MEASURED, t, 5) for t in tokens]  # deterministic
    other_ring = KeyRing.create("2015-03-02")
    assert first != [arms.arm(other_ring, MEASURED, t, 5) for t in tokens]  # the key decides
    assert first != [arms.arm(RING, MEASURED, t, 6) for t in tokens]  # drawn afresh each period
    assert {arms.arm(RING, Campaign(), t, 5) for t in tokens} == {"targeted"}  # 100/0/0 measures nothing


def test_shares_over_many_tokens_are_within_binomial_bounds():
    n = 20_000
    counts = {"targeted": 0, "random": 0, "holdout": 0}
    for _ in range(n):
        counts[arms.arm(RING, MEASURED, secrets.token_bytes(32), 3)] += 1
    for name, share in MEASURED.shares().items():
        p = share / 100
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[name] - n * p) < 5 * sd, (name, counts)


def test_campaign_periods_are_whole_weeks_from_the_first_day():
    c = Campaign(first_day=date(2024, 1, 1), weeks=4)
    assert arms.period_of(c, date(2024, 1, 28)) == 0
    assert arms.period_of(c, date(2024, 1, 29)) == 1
    assert arms.period_of(c, date(2023, 12, 31)) == -1
    assert arms.period_span(c, 1) == (date(2024, 1, 29), date(2024, 2, 25))


@given(st.binary(min_size=32, max_size=32), st.integers(0, 6), st.dates(date(2020, 1, 1), date(2030, 1, 1)))
def test_random_categories_are_distinct_allowed_and_the_same_per_card_and_day(token, k, day):
    pool = ["bread", "cheese", "coffee", "dairy", "eggs", "fruit", "meat", "milk"]
    got = arms.random_categories(RING, token, day, pool, k, {"coffee"})
    assert got == arms.random_categories(RING, token, day, reversed(pool), k, {"coffee"})
    assert len(got) == min(k, 7) and len(set(got)) == len(got)
    assert "coffee" not in got and set(got) <= set(pool)


def test_random_categories_are_drawn_uniformly():
    pool = [f"c{i}" for i in range(10)]
    counts = dict.fromkeys(pool, 0)
    n = 5_000
    for _ in range(n):
        (pick,) = arms.random_categories(RING, secrets.token_bytes(32), date(2026, 1, 5), pool, 1)
        counts[pick] += 1
    sd = math.sqrt(n * 0.1 * 0.9)
    assert all(abs(c - n / 10) < 5 * sd for c in counts.values()), counts


@pytest.mark.parametrize(
    ("lines", "rule"),
    [
        ('targeted = 80\nrandom = 10\nholdout = 5', "sum to 100"),
        ('first_day = "2024-01-02"', "Monday"),
        ("weeks = 0", "campaign.weeks"),
        ("holdout = -10\ntargeted = 110", "campaign."),
        ('split = "80/10/10"', "campaign.split is not a setting"),
    ],
)
def test_a_bad_campaign_is_refused_naming_the_key_and_the_rule(lines, rule):
    head, _, tail = DEFAULT_TOML.partition("[campaign]")
    body = tail.split("\n\n", 1)[1]
    with pytest.raises(ProgrammeError, match=rule):
        Programme.from_toml(f"{head}[campaign]\n{lines}\n\n{body}")


# -- at the entrance ---------------------------------------------------------------------


def _regular(svc: Service, n: int) -> list[str]:
    """``n`` cards with the same two weeks of history (so the engine picks the same for each)."""
    codes = [c.code for c in svc.issue_cards({"count": n})]
    for d in range(14):
        on(svc, date(2015, 3, 2) + timedelta(days=d))
        for i, code in enumerate(codes):
            lines = basket(("bread", "2.50"), ("milk", "1.20"), ("coffee", "6.99"), ("cheese", "3.10"))
            svc.checkout({"card": code, "txn": f"h{d}-{i}", "lines": lines})
    svc.refresh_stats()
    on(svc, date(2015, 3, 16))
    return codes


def test_a_holdout_card_gets_nothing_printed_and_the_engines_pick_is_recorded_as_a_ghost(svc):
    a, b = _regular(svc, 2)
    svc.programme = _arm_of(replace(MEASURED, targeted=0, random=0, holdout=100))
    held_out = svc.enter({"card": a})
    assert held_out.to_dict() == {"coupons": [], "relinked": False}  # the same answer as "nothing today"
    ghosts = svc.store.ghost_rows("2015-03-16", "2015-03-16")
    assert ghosts and {g.card_id for g in ghosts} == {1}
    assert not svc.store.offer_rows("2015-03-16", "2015-03-16")
    svc.programme = _arm_of(replace(MEASURED, targeted=100, random=0, holdout=0))
    targeted = svc.enter({"card": b})
    assert sorted(c.category for c in targeted.coupons) == sorted(g.category for g in ghosts)


def test_a_random_card_gets_as_many_coupons_of_drawn_categories(svc):
    a, b = _regular(svc, 2)
    svc.programme = _arm_of(replace(MEASURED, targeted=0, random=100, holdout=0))
    drawn = svc.enter({"card": a}).coupons
    svc.programme = _arm_of(replace(MEASURED, targeted=100, random=0, holdout=0))
    picked = svc.enter({"card": b}).coupons
    assert len(drawn) == len(picked) > 0
    assert all(svc._suggestible(c.category) for c in drawn)
    assert not svc.store.ghost_rows("2015-01-01", "2016-01-01")


def test_the_caps_count_ghosts_as_if_printed(svc):
    (a,) = _regular(svc, 1)
    rules = replace(CouponRules(), per_visit=3, per_week=4)
    svc.programme = replace(_arm_of(replace(MEASURED, targeted=0, random=0, holdout=100)), coupons=rules)
    svc.enter({"card": a})
    assert len(svc.store.card_ghosts(1, "2015-03-16")) == 3
    svc.enter({"card": a})  # the same day: the three ghosts are held, so nothing more
    assert len(svc.store.card_ghosts(1, "2015-03-16")) == 3
    on(svc, date(2015, 3, 17))
    svc.enter({"card": a})  # the week's cap of 4 leaves one
    on(svc, date(2015, 3, 18))
    svc.enter({"card": a})  # and then none
    assert len(svc.store.card_ghosts(1, "2015-03-16")) == 4


def test_measuring_needs_a_purpose_in_the_policy(svc):
    (a,) = _regular(svc, 1)
    svc.programme = _arm_of(MEASURED)
    svc.policy = Policy.from_toml(
        "\n".join(ln for ln in default_text().splitlines() if not ln.startswith(("uplift_", "cohorts_")))
    )
    with pytest.raises(ProgrammeError, match="uplift_purpose"):
        svc.enter({"card": a})
    assert not svc.store.ghost_rows("2015-01-01", "2016-01-01")


def test_ghosts_go_with_an_erased_card_and_are_in_its_export(svc):
    (a,) = _regular(svc, 1)
    svc.programme = _arm_of(replace(MEASURED, targeted=0, random=0, holdout=100))
    svc.enter({"card": a})
    assert Holder(svc).export({"card": a})["tables"]["ghosts"]
    Holder(svc).erase({"card": a, "confirm": True})
    assert not svc.store.ghost_rows("2015-01-01", "2016-01-01")


def test_ghosts_are_purged_with_the_documents_retention(svc):
    (a,) = _regular(svc, 1)
    svc.programme = _arm_of(replace(MEASURED, targeted=0, random=0, holdout=100))
    svc.enter({"card": a})
    on(svc, date(2015, 3, 16) + timedelta(days=svc.policy.documents_days + 1))
    counts = svc.purge()
    assert counts["ghosts dropped"] > 0
    assert not svc.store.ghost_rows("2015-01-01", "2016-01-01")


@pytest.mark.sqlite_only(reason="SQLite migration 8 over a schema-7 file; PostgreSQL migration 3 in test_postgres.py")
def test_a_schema_7_database_gains_the_ghosts_table(home):
    db = home / "anoncard.db"
    Service.open(home, synchronous="NORMAL").close()
    conn = sqlite3.connect(db)
    conn.executescript("DROP TABLE ghosts; PRAGMA user_version = 7;")
    conn.close()
    with Service.open(home, synchronous="NORMAL") as svc:
        assert svc.store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 8
        assert svc.store.schema()["ghosts"] == ["card_id", "issued_day", "category", "expires_day"]
        assert svc.store.card_ghosts(1, "2015-01-01") == []
