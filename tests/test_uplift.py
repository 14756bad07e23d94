"""The coupon arms' uplift and the cohorts' retention: bounded per-card rows, OpenDP noise, the
budget they spend from, and what is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard import audit, cohorts, insights, uplift
from anoncard.errors import InsightsRefused, PolicyViolation
from anoncard.policy import Policy, default_text
from anoncard.programme import ARMS, Campaign
from anoncard.store import VisitRow
from anoncard.uplift import CardPeriod, UpliftBounds

from .conftest import basket, on

RULES = Policy.default().insights
BOUNDS = UpliftBounds(spend=20_000)
MEASURED = Campaign(first_day=date(2015, 3, 2), weeks=4, targeted=80, random=10, holdout=10)

card_periods = st.builds(
    CardPeriod,
    arm=st.sampled_from(ARMS),
    offers=st.integers(0, 30),
    hits=st.integers(0, 30),
    spend=st.integers(-5_000, 500_000),
    visited=st.booleans(),
)


def _l1(a: list[int], b: list[int]) -> int:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True))


@given(st.dictionaries(st.integers(1, 10_000), card_periods, max_size=30), card_periods)
def test_one_cards_whole_period_moves_each_uplift_sum_at_most_its_sensitivity(rows, extra):
    newcomer = max(rows, default=0) + 1
    without = uplift.sums(rows, BOUNDS)
    with_it = uplift.sums({**rows, newcomer: extra}, BOUNDS)
    for name, bound in BOUNDS.sensitivities().items():
        assert _l1(without[name], with_it[name]) <= bound, name


first_days = st.dates(date(2014, 1, 1), date(2014, 12, 31)).map(lambda d: d.isoformat())
visit_days = st.lists(st.dates(date(2014, 1, 1), date(2014, 12, 31)), max_size=40)


@given(st.dictionaries(st.integers(1, 50), first_days, max_size=20), st.lists(st.tuples(st.integers(1, 50), visit_days),
       max_size=20), first_days, visit_days)  # fmt: skip
def test_one_cards_whole_history_moves_the_cohort_counts_at_most_their_sensitivity(firsts, visits, extra_first, days):
    rows = [VisitRow(card, d.isoformat(), 1, 100) for card, ds in visits for d in ds]
    newcomer = 51
    extra = [VisitRow(newcomer, d.isoformat(), 1, 100) for d in days]
    first, months = date(2014, 1, 1), 12
    sens = cohorts.CohortBounds(months).sensitivities()
    sizes, active = cohorts.counts(first, months, firsts, rows)
    sizes2, active2 = cohorts.counts(first, months, {**firsts, newcomer: extra_first}, rows + extra)
    assert _l1(sizes, sizes2) <= sens["cohort sizes"] == 1
    assert _l1(active, active2) <= sens["active"] == 11


def test_a_card_active_every_month_counts_once_per_month():
    visits = [VisitRow(1, date(2014, m, d).isoformat(), 1, 100) for m in range(1, 13) for d in (3, 17)]
    sizes, active = cohorts.counts(date(2014, 1, 1), 12, {1: "2014-01-03"}, visits)
    assert sizes == [1] + [0] * 11
    assert sum(active) == 11 and len(active) == 66


def test_a_cards_row_counts_ghosts_for_the_holdout_coupons_for_the_others_and_spend_net_of_discounts():
    from anoncard.store import DiscountRow, GhostRow, OfferRow, SpendRow

    data = uplift.UpliftData(
        period=0, first=date(2015, 3, 2), last=date(2015, 3, 29), arms={1: "targeted", 2: "holdout"},
        offers=[OfferRow(1, "coffee", "2015-03-03", "2015-03-03"), OfferRow(1, "tea", "2015-03-03", "2015-03-03"),
                OfferRow(2, "milk", "2015-03-03", "2015-03-03")],
        ghosts=[GhostRow(2, "coffee", "2015-03-04", "2015-03-05"), GhostRow(1, "milk", "2015-03-04", "2015-03-04")],
        spend=[SpendRow(1, "2015-03-03", "coffee", 500, 1), SpendRow(2, "2015-03-05", "coffee", 400, 1),
               SpendRow(2, "2015-03-03", "milk", 100, 1)],
        visits=[VisitRow(1, "2015-03-03", 1, 900), VisitRow(2, "2015-03-05", 1, 400),
                VisitRow(2, "2015-03-03", 1, 100)],
        discounts=[DiscountRow(1, 50)],
    )  # fmt: skip
    rows = uplift.cards(data)
    assert rows[1] == CardPeriod("targeted", 2, 1, 850, True)  # its coupons, not the ghost; spend less discount
    assert rows[2] == CardPeriod("holdout", 1, 1, 500, True)  # its ghost (bought the next day, still valid)
    assert rows[1].rate == 5_000 and rows[2].rate == 10_000


def test_a_large_budget_releases_arms_close_to_the_truth():
    rules = replace(RULES, uplift_epsilon=1000.0, uplift_epsilon_per_year=1000.0)
    rows = {}
    for card in range(1, 3001):
        arm = ARMS[card % 10 // 8 + (card % 10 == 9)]  # 8 targeted, 1 random, 1 holdout in every 10
        hits = 2 if arm == "targeted" else 1
        rows[card] = CardPeriod(arm, 4, hits, 6_000 if arm == "targeted" else 5_000, True)
    r = uplift.release_rows(rows, rules, period=3, first=date(2015, 3, 2), last=date(2015, 3, 29))
    got = {(f.name, f.category): f for f in r.figures}
    assert abs(got[("purchase rate: cards", "holdout")].value - 300) <= 3
    assert got[("purchase rate", "targeted")].value == pytest.approx(50.0, abs=0.5)  # percent
    assert got[("purchase rate", "holdout")].value == pytest.approx(25.0, abs=0.5)
    assert got[("uplift of purchase rate", "targeted - holdout")].value == pytest.approx(25.0, abs=1)
    spend = got[("uplift of spend per card", "targeted - holdout")]
    assert spend.low <= 1_000 <= spend.high and spend.value == pytest.approx(1_000, abs=50)
    assert r.epsilon == pytest.approx(1000.0)
    assert r.report == "uplift" and "per card" in r.not_released


def test_an_arm_too_small_gets_no_uplift_and_the_reason():
    rows = {c: CardPeriod("targeted" if c > 5 else "holdout", 2, 1, 4_000, True) for c in range(1, 400)}
    rules = replace(RULES, uplift_epsilon=1000.0, uplift_epsilon_per_year=1000.0)
    r = uplift.release_rows(rows, rules, period=3, first=date(2015, 3, 2), last=date(2015, 3, 29))
    assert not [f for f in r.figures if f.name.startswith("uplift")]
    reason = r.not_released["uplift of spend per card, targeted - holdout"]
    assert "holdout arm has fewer than 20 cards" in reason


# -- through the service -------------------------------------------------------------


def _campaign_month(svc, cards: int = 60) -> list[str]:
    """Four weeks from 2015-03-02 of cards entering and shopping, under an 80/10/10 split."""
    svc.programme = replace(svc.programme, campaign=MEASURED)
    codes = [s.code for s in svc.issue_cards({"count": cards})]
    n = 0
    for d in range(28):
        on(svc, date(2015, 3, 2) + timedelta(days=d))
        if d % 7 == 0:
            svc.refresh_stats()
        for i, code in enumerate(codes):
            if (i + d) % 5 == 0:
                svc.enter({"card": code})
                n += 1
                lines = basket(("bread", "2.50"), ("milk", "1.20"), ("coffee", "6.99"))
                svc.checkout({"card": code, "txn": f"doc-{n}", "lines": lines})
    return codes


def test_an_uplift_release_is_recorded_under_its_own_budget_and_audited(svc, home):
    _campaign_month(svc)
    on(svc, date(2015, 4, 1))
    r = svc.insights({"report": "uplift"})
    assert (r.first, r.last, r.period) == (date(2015, 3, 2), date(2015, 3, 29), "campaign period 0")
    assert r.epsilon == pytest.approx(RULES.uplift_epsilon)
    assert {f.category for f in r.figures if f.name == "spend per card: cards"} == set(ARMS)
    (event,) = svc.store.events(insights.RELEASE_EVENT)
    detail = json.loads(event.detail)
    assert detail["report"] == "uplift" and "figures" not in detail
    svc.insights({"period": "4weeks", "ending": "2015-03-29"})  # the figures spend from their own budget
    before = svc.store.events()
    with pytest.raises(InsightsRefused, match="uplift releases spending more than epsilon 0.5"):
        svc.insights({"report": "uplift", "ending": "2015-03-29"})
    assert svc.store.events() == before
    (check,) = [c for c in audit.run(home).checks if c.key == "i"]
    assert check.passed, check.details


def test_the_audit_fails_when_the_log_shows_more_uplift_spent_than_declared(svc, home):
    _campaign_month(svc, cards=20)
    on(svc, date(2015, 4, 1))
    svc.insights({"report": "uplift"})
    (event,) = svc.store.events(insights.RELEASE_EVENT)
    with svc.store.transaction():
        svc._record(insights.RELEASE_EVENT, json.loads(event.detail))
    (check,) = [c for c in audit.run(home).checks if c.key == "i"]
    assert not check.passed
    assert "uplift releases spending more than epsilon 0.5" in check.details[0]


def test_the_uplift_year_budget_refuses_a_release_past_it(svc):
    svc.programme = replace(svc.programme, campaign=MEASURED)
    text = default_text().replace("uplift_epsilon_per_year = 6.5", "uplift_epsilon_per_year = 1.0")
    svc.policy = Policy.from_toml(text)
    on(svc, date(2015, 8, 1))
    svc.insights({"report": "uplift", "ending": "2015-03-29"})
    svc.insights({"report": "uplift", "ending": "2015-04-26"})
    with pytest.raises(InsightsRefused, match="uplift releases of 2015 spend epsilon 1.5, more than 1.0 a year"):
        svc.insights({"report": "uplift", "ending": "2015-05-24"})
    assert len(svc.store.events(insights.RELEASE_EVENT)) == 2


@pytest.mark.parametrize(
    ("request_", "field", "rule"),
    [
        ({"report": "uplift", "period": "4weeks"}, "period", "leave period out"),
        ({"report": "uplift", "ending": "2015-03-22"}, "ending", "last day of a campaign period"),
        ({"report": "uplift", "ending": "2015-04-26"}, "ending", "before today"),
        ({"report": "cohorts", "ending": "2015-02-27"}, "ending", "last day of a month"),
        ({"report": "profiles"}, "report", "figures, uplift, cohorts"),
    ],
)
def test_bad_uplift_and_cohort_requests_are_refused_by_field_and_record_nothing(svc, request_, field, rule):
    svc.programme = replace(svc.programme, campaign=MEASURED)
    on(svc, date(2015, 4, 1))
    before = svc.store.events()
    with pytest.raises((PolicyViolation, InsightsRefused), match=rule) as info:
        svc.insights(request_)
    assert info.value.field == field
    assert "profiles" not in info.value.message and "2015-0" not in info.value.message
    assert svc.store.events() == before


def test_no_holdout_no_uplift(svc):
    on(svc, date(2015, 4, 1))
    with pytest.raises(InsightsRefused, match="campaign.holdout = 0"):
        svc.insights({"report": "uplift"})
    assert not svc.store.events(insights.RELEASE_EVENT)


def test_a_rotation_inside_the_period_is_said(svc):
    codes = _campaign_month(svc, cards=10)
    on(svc, date(2015, 3, 20))
    svc.rotate_keys()
    svc.enter({"card": codes[0]})
    on(svc, date(2015, 4, 1))
    r = svc.insights({"report": "uplift"})
    assert any("key rotation fell inside this period" in n for n in r.notes)


def test_cohort_curves_are_released_once_and_their_budget_holds(svc, home):
    codes = [s.code for s in svc.issue_cards({"count": 30})]
    n = 0
    for month in range(1, 7):
        for i, code in enumerate(codes):
            if i < 5 * month and (i + month) % 2 == 0:
                n += 1
                on(svc, date(2015, month, 10))
                svc.checkout({"card": code, "txn": f"c-{n}", "lines": basket(("bread", "2.50"))})
    on(svc, date(2015, 7, 2))
    r = svc.insights({"report": "cohorts"})
    assert (r.first, r.last) == (date(2014, 7, 1), date(2015, 6, 30))
    assert r.bounds.months == 12 and r.epsilon == pytest.approx(RULES.cohorts_epsilon)
    names = {f.name for f in r.figures}
    assert {"cohort size", "retention +1", "retention +11"} <= names
    assert len([f for f in r.figures if f.name.startswith("retention")]) == 66
    for _ in range(3):  # four releases of the same months fit the cohorts' cap (1.0); the fifth does not
        svc.insights({"report": "cohorts"})
    with pytest.raises(InsightsRefused, match="cohorts releases spending more than epsilon 1.0"):
        svc.insights({"report": "cohorts"})
    (check,) = [c for c in audit.run(home).checks if c.key == "i"]
    assert check.passed, check.details


def test_a_policy_without_uplift_or_cohort_budgets_refuses_them(svc):
    text = "\n".join(ln for ln in default_text().splitlines() if not ln.startswith(("uplift_", "cohorts_")))
    svc.policy = Policy.from_toml(text)
    svc.programme = replace(svc.programme, campaign=MEASURED)
    on(svc, date(2015, 4, 1))
    with pytest.raises(InsightsRefused, match="no uplift budget"):
        svc.insights({"report": "uplift"})
    with pytest.raises(InsightsRefused, match="no cohorts budget"):
        svc.insights({"report": "cohorts"})


def test_the_policy_declares_the_budgets_in_pairs_and_the_purpose_with_the_uplift():
    from anoncard.errors import PolicyFileError

    with pytest.raises(PolicyFileError, match="declared together"):
        Policy.from_toml(default_text().replace("uplift_epsilon_per_year = 6.5", ""))
    with pytest.raises(PolicyFileError, match="uplift_purpose"):
        Policy.from_toml("\n".join(ln for ln in default_text().splitlines() if not ln.startswith("uplift_purpose")))
    rules = Policy.default().insights
    assert rules.epsilon_per_year_all == pytest.approx(13.0 + 6.5 + 1.0)


def test_policy_show_names_each_budget_and_the_purpose_of_holding_cards_out():
    text = Policy.default().to_markdown()
    assert "| coupon uplift (per period) | epsilon 0.5 | 6.5 |" in text
    assert "| cohort retention | epsilon 0.25 | 1.0 |" in text
    assert "A card loses at most epsilon 20.5 in a calendar year" in text
    assert "Coupon arms (targeted, random-category, holdout): tell whether coupons change" in text
    assert "### ghosts" in text
