"""Insights: bounded per-card contributions, OpenDP noise, the budget and its audit."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard import audit, insights
from anoncard.errors import InsightsRefused, PolicyViolation
from anoncard.insights import Bounds, CardSpan, SpanData
from anoncard.policy import Policy
from anoncard.store import SpendRow, VisitRow

from .conftest import basket, on

CATS = ["bread", "cheese", "coffee", "dairy", "eggs", "fruit", "meat", "milk"]
BOUNDS = Bounds(categories=3, category_spend=5_000, visits=6, spend=20_000, coupons=4)
RULES = Policy.default().insights

card_spans = st.builds(
    CardSpan,
    categories=st.dictionaries(st.sampled_from(CATS), st.integers(-10_000, 100_000), max_size=len(CATS)),
    visits=st.integers(0, 40),
    spend=st.integers(-10_000, 500_000),
    new=st.booleans(),
    lapsed=st.booleans(),
    coupons_printed=st.integers(0, 20),
    coupons_used=st.integers(0, 20),
)


def _l1(a: list[int], b: list[int]) -> int:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True))


@given(st.dictionaries(st.integers(1, 10_000), card_spans, max_size=30), card_spans)
def test_one_cards_whole_history_moves_each_figure_at_most_its_sensitivity(cards, extra):
    """Neighbouring datasets (one card's whole span added) differ by at most the sensitivity
    each measurement's noise is scaled to."""
    newcomer = max(cards, default=0) + 1
    without = insights.totals(cards, CATS, BOUNDS).vectors(CATS)
    with_it = insights.totals({**cards, newcomer: extra}, CATS, BOUNDS).vectors(CATS)
    for name, bound in BOUNDS.sensitivities().items():
        assert _l1(without[name], with_it[name]) <= bound, name


def test_a_card_with_300_categories_counts_k_times_at_most():
    day = "2026-11-02"
    rows = [SpendRow(1, day, f"cat{i:03d}", 100 + i, 1) for i in range(300)]
    data = SpanData(date(2026, 11, 2), date(2026, 11, 29), rows, [VisitRow(1, day, 1, 50_000)], [], {}, [])
    categories = [f"cat{i:03d}" for i in range(300)]
    cards = insights.contributions(data, categories)
    assert len(cards[1].categories) == 300
    bounds = replace(BOUNDS, categories=15)
    t = insights.totals(cards, categories, bounds)
    assert sum(t.penetration.values()) == 15
    assert sum(t.sales.values()) <= 15 * bounds.category_spend
    # the K kept are the ones it spent most on
    assert {c for c, n in t.penetration.items() if n} == {f"cat{i:03d}" for i in range(285, 300)}


def test_lapsed_and_new_cards():
    data = SpanData(
        date(2026, 11, 2),
        date(2026, 11, 29),
        [SpendRow(1, "2026-11-03", "bread", 300, 1)],
        [VisitRow(1, "2026-11-03", 1, 300)],
        [VisitRow(2, "2026-10-20", 1, 900), VisitRow(1, "2026-10-21", 1, 100)],
        {1: "2026-10-21", 3: "2026-11-05"},
        [],
    )
    data = replace(data, visits=[*data.visits, VisitRow(3, "2026-11-05", 2, 700)])
    t = insights.totals(insights.contributions(data, CATS), CATS, BOUNDS)
    assert (t.active, t.new, t.lapsed, t.visits) == (2, 1, 1, 3)


def test_a_large_budget_releases_figures_close_to_the_truth():
    """With epsilon 1000 the noise is tiny: the figures are the bounded truth, inside their intervals."""
    rules = replace(RULES, epsilon_per_period=1000.0, epsilon_per_year=1000.0)
    first = date(2026, 11, 2)
    spend, visits = [], []
    for card in range(1, 401):
        day = (first + timedelta(days=card % 28)).isoformat()
        spend += [SpendRow(card, day, "bread", 250, 1), SpendRow(card, day, "milk", 120, 1)]
        visits.append(VisitRow(card, day, 1, 370))
    data = SpanData(first, first + timedelta(days=27), spend, visits, [], {}, [])
    r = insights.release(data, CATS, rules, period="4weeks", grouping="chain")
    got = {(f.name, f.category): f for f in r.figures}
    assert r.bounds.categories >= 2
    assert abs(got[("penetration", "bread")].value - 400) <= 10
    assert abs(got[("active cards", None)].value - 400) <= 5
    assert got[("penetration", "coffee")].value <= 10
    for f in r.figures:
        assert f.low <= f.value <= f.high
    assert sum(m.epsilon for m in r.measurements) == pytest.approx(1000.0)
    assert r.to_csv().splitlines()[0] == "figure,category,value,low,high,noise_scale,unit"


def test_a_week_releases_no_category_figures_and_says_why():
    first = date(2026, 11, 23)
    data = SpanData(first, first + timedelta(days=6), [SpendRow(1, "2026-11-24", "bread", 100, 1)], [], [], {}, [])
    r = insights.release(data, CATS, RULES, period="week", grouping="chain")
    assert not [f for f in r.figures if f.category is not None]
    assert "categories in this span" in r.not_released
    assert {"per card", "category pairs", "store, cluster or region"} <= set(r.not_released)
    assert r.epsilon == pytest.approx(RULES.epsilon_per_period)


def test_spans_are_whole_weeks_that_are_over():
    today = date(2026, 12, 1)  # a Tuesday
    assert insights.span("4weeks", None, today) == (date(2026, 11, 2), date(2026, 11, 29))
    assert insights.span("quarter", date(2026, 11, 29), today)[0] == date(2026, 8, 31)  # a Monday, 13 weeks
    with pytest.raises(InsightsRefused, match="Sunday"):
        insights.span("week", date(2026, 11, 28), today)
    with pytest.raises(InsightsRefused, match="before today"):
        insights.span("week", date(2026, 12, 6), today)


# -- through the service -------------------------------------------------------------


def _shop(svc, start: date, days: int, cards: int = 12) -> None:
    codes = [s.code for s in svc.issue_cards({"count": cards})]
    n = 0
    for d in range(days):
        on(svc, start + timedelta(days=d))
        for i, code in enumerate(codes):
            if (i + d) % 3 == 0:
                n += 1
                svc.checkout({"card": code, "txn": f"doc-{n}", "lines": basket(("bread", "2.50"), ("milk", "1.20"))})


def test_a_release_is_recorded_and_a_second_one_of_the_same_days_is_refused(svc, home):
    _shop(svc, date(2015, 3, 2), 28)
    on(svc, date(2015, 4, 1))
    r = svc.insights({"period": "4weeks", "ending": "2015-03-29"})
    assert (r.first, r.last) == (date(2015, 3, 2), date(2015, 3, 29))
    (event,) = svc.store.events(insights.RELEASE_EVENT)
    detail = json.loads(event.detail)
    assert detail["epsilon"] == pytest.approx(1.0)
    assert {m["name"] for m in detail["measurements"]} >= {"penetration", "sales", "active", "bound categories"}
    assert "figures" not in detail  # the log records what was spent, not what was released
    before = svc.store.events()
    with pytest.raises(InsightsRefused, match="budget is spent"):
        svc.insights({"period": "week", "ending": "2015-03-15"})
    assert svc.store.events() == before
    report = audit.run(home)
    (check,) = [c for c in report.checks if c.key == "i"]
    assert check.passed, check.details


def test_the_year_budget_refuses_the_fourteenth_release(svc):
    on(svc, date(2015, 12, 30))
    for n in range(13):
        ending = date(2015, 1, 4) + timedelta(weeks=4 * n)  # 13 spans of 4 weeks in 2015
        svc.insights({"period": "4weeks", "ending": ending.isoformat()})
    with pytest.raises(InsightsRefused, match="a year"):
        svc.insights({"period": "week", "ending": "2015-12-27"})


def test_the_audit_fails_when_the_log_shows_more_spent_than_declared(svc, home):
    on(svc, date(2015, 4, 1))
    svc.insights({"period": "4weeks", "ending": "2015-03-29"})
    (event,) = svc.store.events(insights.RELEASE_EVENT)
    with svc.store.transaction():  # a second release of the same days, past the gate's check
        svc._record(insights.RELEASE_EVENT, json.loads(event.detail))
    (check,) = [c for c in audit.run(home).checks if c.key == "i"]
    assert not check.passed
    assert "more than epsilon 1.0 per period" in check.details[0]


def test_the_audit_replays_the_noise_and_fails_on_a_scale_that_does_not_match(svc, home):
    on(svc, date(2015, 4, 1))
    svc.insights({"period": "4weeks", "ending": "2015-03-29"})
    (event,) = svc.store.events(insights.RELEASE_EVENT)
    detail = json.loads(event.detail)
    detail["first_day"], detail["last_day"] = "2015-01-05", "2015-02-01"
    detail["measurements"][-1]["scale"] *= 0.5  # less noise than the epsilon it records
    with svc.store.transaction():
        svc._record(insights.RELEASE_EVENT, detail)
    (check,) = [c for c in audit.run(home).checks if c.key == "i"]
    assert not check.passed
    assert any("its noise gives" in d for d in check.details)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"period": "day"}, "period"),
        ({"period": "4weeks", "grouping": "north-west"}, "grouping"),
        ({"period": "4weeks", "ending": "29.11.2026"}, "ending"),
        ({"period": "4weeks", "card": "x"}, "card"),
        ({"period": "4weeks", "ending": "2015-03-28"}, "ending"),
    ],
)
def test_bad_requests_are_refused_by_field_and_record_nothing(svc, request_, field):
    on(svc, date(2015, 4, 1))
    before = svc.store.events()
    with pytest.raises((PolicyViolation, InsightsRefused)) as info:
        svc.insights(request_)
    assert info.value.field == field
    for value in request_.values():
        if value not in ("4weeks", "x"):
            assert str(value) not in info.value.message
    assert svc.store.events() == before


def test_region_is_refused_naming_the_missing_till_field(svc):
    with pytest.raises(PolicyViolation, match="tills send no store, cluster or region field"):
        svc.insights({"period": "4weeks", "grouping": "region"})


def test_import_anoncard_loads_no_insights_dependency():
    code = (
        "import sys, anoncard, cli.main, anoncard.insights, anoncard.audit; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('opendp', 'polars', 'matplotlib')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_policy_without_a_budget_releases_nothing(svc):
    from anoncard.policy import default_text

    head, _, tail = default_text().partition("[insights]\n")
    svc.policy = Policy.from_toml(head + tail.split("\n\n", 1)[1])
    assert svc.policy.insights is None
    on(svc, date(2015, 4, 1))
    with pytest.raises(InsightsRefused, match="no \\[insights\\] budget"):
        svc.insights({"period": "4weeks"})
    assert not svc.store.events(insights.RELEASE_EVENT)


def test_an_insights_section_with_a_year_below_the_period_is_refused():
    from anoncard.errors import PolicyFileError
    from anoncard.policy import default_text

    text = default_text().replace("epsilon_per_year = 13.0", "epsilon_per_year = 0.5")
    with pytest.raises(PolicyFileError, match="epsilon_per_year"):
        Policy.from_toml(text)


def test_release_time_is_the_servers_clock(svc):
    on(svc, datetime(2015, 3, 30, 9, 0))
    r = svc.insights({"period": "week"})
    assert r.last == date(2015, 3, 29)


def test_a_chains_sums_in_cents_beyond_32_bits_are_released():
    """A chain's weekly sales pass 2**31 cents (21 million euros): the noise is 64-bit."""
    noisy = insights._laplace(10.0, 2)([3 * 2**31, 5 * 2**32])
    assert abs(noisy[0] - 3 * 2**31) < 10_000 and abs(noisy[1] - 5 * 2**32) < 10_000


def test_of_two_releases_racing_for_the_same_days_one_is_refused(svc, home, monkeypatch):
    """The noise is drawn outside the write lock (tills go on); the budget is checked again
    under it, so a release made meanwhile by another process wins and this one is refused."""
    from anoncard import Service

    on(svc, date(2015, 4, 1))
    other = Service.open(home, clock=svc.clock, synchronous="NORMAL")
    real = insights.release

    def release_while_another_process_releases(*args, **kwargs):
        result = real(*args, **kwargs)
        assert not svc.store.conn.in_transaction  # no lock held while computing
        monkeypatch.setattr(insights, "release", real)  # the other process draws its own noise
        other.insights({"period": "4weeks", "ending": "2015-03-29"})
        return result

    monkeypatch.setattr(insights, "release", release_while_another_process_releases)
    try:
        with pytest.raises(InsightsRefused, match="budget is spent"):
            svc.insights({"period": "week", "ending": "2015-03-22"})
    finally:
        other.close()
    assert len(svc.store.events(insights.RELEASE_EVENT)) == 1
