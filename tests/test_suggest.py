"""The suggestion engine on hand-made histories: coverage, discovery, diversity, exclusions."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from anoncard import KeyRing, Programme, Service, Store
from anoncard.suggest import StoreStats, suggest
from tests.conftest import basket, fixed_clock, on

TODAY = date(2026, 11, 22)
STATS = StoreStats(
    shares={"milk": 400_000, "bread": 350_000, "beer": 200_000, "cheese": 300_000, "candles": 20_000,
            "baking": 50_000, "soda": 250_000},
    recent={"baking": 300_000},
    pairs={"milk": {"baking": 200_000, "cheese": 300_000}, "bread": {"baking": 150_000}},
)  # fmt: skip


def days_ago(n: int) -> str:
    return (TODAY - timedelta(days=n)).isoformat()


def card(visits: dict[int, list[str]]) -> tuple[list, list]:
    history = [(days_ago(d), c, 1) for d, cats in visits.items() for c in cats]
    return history, [(days_ago(d), 1) for d in visits]


def test_habits_cover_the_visits_not_the_marginals():
    # milk and cheese always come together; beer is on the other visits: milk + beer cover everything
    history, visits = card({1: ["milk", "cheese"], 3: ["beer"], 5: ["milk", "cheese"], 7: ["beer"], 9: ["milk"]})
    picks = suggest(history, visits, today=TODAY, stats=STATS, discovery=False, k=2)
    assert [p.category for p in picks] == ["milk", "beer"]


def test_one_discovery_slot_for_something_not_bought_lately():
    history, visits = card({1: ["milk", "bread"], 3: ["milk"], 5: ["bread"], 100: ["cheese"]})
    picks = suggest(history, visits, today=TODAY, stats=STATS)
    assert [p.reason for p in picks] == ["habit", "habit", "discovery"]
    assert picks[2].category == "cheese"  # the card's own occasional buy, not bought for 100 days


def test_a_discovery_nobody_would_buy_does_not_push_out_a_likely_habit():
    # beer is on every visit milk and bread miss; the candles were bought once, long ago
    history, visits = card({1: ["milk"], 2: ["bread"], 3: ["beer"], 4: ["milk"], 5: ["bread"], 6: ["beer"],
                            150: ["candles"]})  # fmt: skip
    picks = suggest(history, visits, today=TODAY, stats=STATS)
    assert sorted(p.category for p in picks) == ["beer", "bread", "milk"]
    assert {p.reason for p in picks} == {"habit"}


def test_a_card_without_occasional_buys_discovers_a_complement_in_season():
    history, visits = card({1: ["milk", "bread"], 3: ["milk"], 5: ["bread"]})
    picks = suggest(history, visits, today=TODAY, stats=STATS)
    assert [(p.category, p.reason) for p in picks][2] == ("baking", "discovery")  # with milk and bread, in season


def test_what_was_bought_today_or_just_now_is_ranked_down():
    # milk and bread are equally frequent; milk was in this morning's basket
    history, visits = card({0: ["milk"], 7: ["bread", "milk"], 14: ["bread", "milk"], 21: ["bread", "milk"]})
    picks = suggest(history, visits, today=TODAY, stats=STATS, discovery=False, k=1)
    assert [p.category for p in picks] == ["bread"]
    # a week later the cupboard is empty again: the likelier milk comes first
    later = TODAY + timedelta(days=7)
    picks = suggest(history, visits, today=later, stats=STATS, discovery=False, k=1)
    assert [p.category for p in picks] == ["milk"]


def test_no_three_from_one_department_and_nothing_excluded():
    history, visits = card({1: ["milk", "cheese", "soda"], 2: ["milk", "cheese", "soda"], 3: ["bread"]})
    fresh = {"milk", "cheese", "soda"}
    picks = suggest(history, visits, today=TODAY, stats=STATS, discovery=False,
                    department=lambda c: "fresh" if c in fresh else c)  # fmt: skip
    assert sum(p.category in fresh for p in picks) == 2
    picks = suggest(history, visits, today=TODAY, stats=STATS, exclude={"milk", "bread"})
    assert not {"milk", "bread"} & {p.category for p in picks}


def test_a_new_card_gets_popular_categories():
    picks = suggest([], [], today=TODAY, stats=STATS, discovery=False)
    assert [p.category for p in picks] == ["milk", "bread", "cheese"]


def test_folded_totals_nudge_a_tie():
    history, visits = card({1: ["milk"], 2: ["bread"]})
    plain = suggest(history, visits, today=TODAY, stats=STATS, discovery=False, k=3)
    nudged = suggest(history, visits, today=TODAY, stats=STATS, discovery=False, k=3, affinity=[("candles", 500)])
    assert "candles" not in [p.category for p in plain]
    assert "candles" in [p.category for p in nudged]


@given(
    st.dictionaries(st.integers(0, 300), st.lists(st.sampled_from(sorted(STATS.shares)), min_size=1, max_size=4),
                    max_size=30),
    st.integers(0, 3),
    st.sets(st.sampled_from(sorted(STATS.shares))),
)  # fmt: skip
def test_always_k_distinct_allowed_categories(visits, k, exclude):
    history, days = card(visits)
    picks = suggest(history, days, today=TODAY, stats=STATS, k=k, exclude=exclude)
    names = [p.category for p in picks]
    assert len(names) == len(set(names)) == min(k, len(set(STATS.shares) - exclude))
    assert not set(names) & exclude


def test_the_entrance_reads_a_bounded_window_of_history():
    svc = Service(Store(":memory:"), KeyRing.create("2026-01-01"), Programme.default(), clock=fixed_clock)
    (code,) = (s.code for s in svc.issue_cards({"count": 1}))
    start = date(2026, 1, 1)
    for i in range(150):
        on(svc, start + timedelta(days=i)).checkout({"card": code, "txn": f"t{i}", "lines": basket(("dairy", "1.00"))})
    card_id = svc.store.find_card(svc.ring.tokens(__import__("anoncard").cards.decode(code))).id
    history, _aff, visits = svc.store.card_profile(card_id)
    assert len(visits) == 60 and len(history) == 60
    assert min(d for d, _n in visits) == (start + timedelta(days=90)).isoformat()
    history, _aff, visits = svc.store.card_profile(card_id, since=(start + timedelta(days=10)).isoformat())
    assert len(visits) == 140
