"""A refund reverses what the checkout earned, read from the checkout's own record.

Points per line under the programme of the checkout's day, the coupon bonus points and
discount of the category they applied to: returning a coupon's item gives back its bonus,
a later programme change alters nothing, and refunding everything in any number of parts
brings the balance back to where it was.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from anoncard import KeyRing, Programme, Service, Store, cards
from anoncard.errors import LedgerError
from anoncard.programme import DEFAULT_TOML
from tests.conftest import basket, clock_at, on

DAY = date(2015, 3, 2)
CATEGORIES = ["dairy", "coffee", "fruit", "bakery", "wine"]
# offers for coffee (30 bonus points), wine and frozen only, so the entrance offers coffee
ONLY_CATEGORY_OFFERS = DEFAULT_TOML.replace('category = "*"             # any category', 'category = "frozen"')
# programmes a store might switch between: another earn rate, other multipliers
PROGRAMMES = [
    DEFAULT_TOML,
    DEFAULT_TOML.replace('points_per_euro = "1"', 'points_per_euro = "3"'),
    DEFAULT_TOML.replace('fruit = "2"', 'fruit = "5"\ndairy = "1.5"'),
    DEFAULT_TOML.replace('points_per_euro = "1"', 'points_per_euro = "0.5"').replace(
        'vegetables = "2"', 'coffee = "4"'
    ),
]


def store(programme: str = DEFAULT_TOML) -> tuple[Service, str]:
    svc = Service(Store(":memory:"), KeyRing.create("2015-01-01"), Programme.from_toml(programme), clock=clock_at(DAY))
    (card,) = svc.issue_cards({"count": 1})
    for i in range(4):
        on(svc, DAY - timedelta(days=10 - i)).checkout(
            {"card": card.code, "txn": f"h{i}", "lines": basket(("coffee", "6.50"), ("dairy", "3.00"))}
        )
    on(svc, DAY).refresh_stats()
    return svc, card.code


def test_returning_the_coupons_item_gives_back_its_bonus_points():
    """The 30-point coffee coupon: returning the coffee reverses 1 + 30 points, not 1 of 31."""
    svc, code = store(ONLY_CATEGORY_OFFERS)
    coupon = next(c for c in svc.enter({"card": code}).coupons if c.category == "coffee")
    assert (coupon.kind, coupon.value) == ("points", 30)
    before = svc.balance({"card": code}).points
    lines = basket(("coffee", "1.00"), ("dairy", "29.00"))
    r = svc.checkout({"card": code, "txn": "c1", "lines": lines, "coupons": [coupon.code]})
    assert r.points == 30 + 30
    back = svc.refund({"txn": "c1", "refund_id": "r1", "lines": basket(("coffee", "1.00"))})
    assert back.points == -31
    rest = svc.refund({"txn": "c1"})
    assert rest.points == -29
    assert svc.balance({"card": code}).points == before


def test_a_refund_after_a_multiplier_change_reverses_what_the_checkout_earned():
    svc, code = store()
    before = svc.balance({"card": code}).points
    r = svc.checkout({"card": code, "txn": "c1", "lines": basket(("fruit", "10.00"), ("dairy", "10.00"))})
    assert r.points == 20 + 10  # fruit counts twice
    svc.programme = Programme.from_toml(DEFAULT_TOML.replace('fruit = "2"', 'fruit = "5"'))
    back = svc.refund({"txn": "c1", "refund_id": "r1", "lines": basket(("fruit", "10.00"))})
    assert back.points == -20
    svc.programme = Programme.from_toml(DEFAULT_TOML.replace('points_per_euro = "1"', 'points_per_euro = "4"'))
    assert svc.refund({"txn": "c1"}).points == -10
    assert svc.balance({"card": code}).points == before


def test_a_refund_gives_back_the_discount_of_its_lines_and_says_so():
    svc, code = store()
    coupon = next(c for c in svc.enter({"card": code}).coupons if c.kind == "percent")
    lines = basket((coupon.category, "10.00"), (coupon.category, "5.00"), ("wine", "4.00"))
    r = svc.checkout({"card": code, "txn": "c1", "lines": lines, "coupons": [coupon.code]})
    assert r.discount == "1.50"
    first = svc.refund({"txn": "c1", "refund_id": "r1", "lines": basket((coupon.category, "5.00"))})
    assert (first.spend, first.discount) == ("-5.00", "-0.50")
    assert "discount" in first.to_dict()
    assert svc.refund({"txn": "c1", "refund_id": "r1", "lines": basket((coupon.category, "5.00"))}).discount == "-0.50"
    rest = svc.refund({"txn": "c1"})
    assert rest.discount == "-1.00"
    untouched = svc.checkout({"card": code, "txn": "c2", "lines": basket(("wine", "4.00"))})
    assert "discount" not in svc.refund({"txn": "c2"}).to_dict() and untouched.discount is None


def test_the_checkout_record_holds_each_lines_multiplier_and_coupon_share():
    svc, code = store(ONLY_CATEGORY_OFFERS)
    coupon = next(c for c in svc.enter({"card": code}).coupons if c.category == "coffee")
    lines = basket(("coffee", "2.00"), ("coffee", "1.00"), ("fruit", "1.00"))
    svc.checkout({"card": code, "txn": "c1", "lines": lines, "coupons": [coupon.code]})
    doc = svc.store.find_document(svc.ring.reference("checkout", "c1"))
    assert json.loads(doc.lines) == [
        ["coffee", 100, 100, 10, 0],
        ["coffee", 200, 100, 20, 0],
        ["fruit", 100, 200, 0, 0],
    ]
    assert doc.points == 5 + 30


def test_a_checkout_recorded_without_line_points_is_refunded_as_before():
    """Documents written before lines carried what they earned: reversed in proportion to
    the points-weighted value returned, and a full refund still reverses all of it."""
    svc, code = store()
    card = svc.store.find_card(svc.ring.tokens(cards.decode(code)))
    before = svc.balance({"card": code}).points
    lines = [("dairy", 1000), ("fruit", 1000)]
    with svc.store.transaction():
        svc.store.add_document(
            ref=svc.ring.reference("checkout", "old"),
            kind="checkout",
            card_id=card.id,
            day=DAY.isoformat(),
            content=b"\x00" * 32,
            lines=json.dumps(lines),
            spend_cents=2000,
            points=30,
            balance_after=before + 30,
        )
    back = svc.refund({"txn": "old", "refund_id": "r1", "lines": basket(("fruit", "10.00"))})
    assert back.points == -(30 - 30 * 1000 * 100 // (1000 * 100 + 1000 * 200))
    assert svc.refund({"txn": "old"}).points == -10
    assert svc.balance({"card": code}).points == before


_LINE = st.tuples(st.sampled_from(CATEGORIES), st.integers(1, 4_000))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_refunding_everything_returns_the_balance_whatever_the_programme_did(data):
    """Checkouts with coupons and partial refunds, the programme changing between any two
    steps: refunding all that is left brings the balance back to what it was (no redemptions)."""
    svc, code = store()
    start = svc.balance({"card": code}).points
    left: dict[str, dict[str, int]] = {}
    steps = data.draw(st.lists(st.sampled_from(["checkout", "refund"]), min_size=1, max_size=12), label="steps")
    for n, step in enumerate(steps):
        svc.programme = Programme.from_toml(data.draw(st.sampled_from(PROGRAMMES), label="programme"))
        if step == "checkout" or not left:
            coupons = svc.enter({"card": code}).coupons if data.draw(st.booleans(), label="enter") else []
            pairs = data.draw(st.lists(_LINE, min_size=1, max_size=5), label="lines")
            pairs += [(c.category, data.draw(st.integers(1, 4_000), label="coupon line")) for c in coupons]
            request = {
                "card": code,
                "txn": f"c{n}",
                "lines": [{"category": c, "amount": f"{a / 100:.2f}"} for c, a in pairs],
            }
            if coupons:
                request["coupons"] = [c.code for c in coupons]
                event("a checkout redeemed coupons")
            svc.checkout(request)
            left[f"c{n}"] = {}
            for c, a in pairs:
                left[f"c{n}"][c] = left[f"c{n}"].get(c, 0) + a
        else:
            txn = data.draw(st.sampled_from(sorted(left)), label="refund of")
            open_lines = sorted(c for c, a in left[txn].items() if a)
            if not open_lines:
                continue
            category = data.draw(st.sampled_from(open_lines), label="category")
            cents = data.draw(st.integers(1, left[txn][category]), label="cents")
            svc.refund(
                {"txn": txn, "refund_id": f"r{n}", "lines": [{"category": category, "amount": f"{cents / 100:.2f}"}]}
            )
            left[txn][category] -= cents
            event("a partial refund")
    for txn, lines in left.items():
        svc.programme = Programme.from_toml(data.draw(st.sampled_from(PROGRAMMES), label="programme"))
        if any(lines.values()):
            svc.refund({"txn": txn})
        else:
            with pytest.raises(LedgerError, match="already fully refunded"):
                svc.refund({"txn": txn})
    assert svc.balance({"card": code}).points == start


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_what_a_refund_reverses_does_not_depend_on_the_programme_of_the_refund_day(data):
    """Two copies of one store refund the same lines, one under the checkout's programme,
    the other under whatever programme was loaded since: every refund reverses the same
    points and discount."""
    svc, code = store()
    coupons = svc.enter({"card": code}).coupons if data.draw(st.booleans(), label="enter") else []
    pairs = data.draw(st.lists(_LINE, min_size=1, max_size=5), label="lines")
    pairs += [(c.category, data.draw(st.integers(1, 4_000), label="coupon line")) for c in coupons]
    lines = [{"category": c, "amount": f"{a / 100:.2f}"} for c, a in pairs]
    svc.checkout({"card": code, "txn": "c1", "lines": lines, "coupons": [c.code for c in coupons]})
    twin = Service(Store(":memory:"), svc.ring, svc.programme, clock=svc.clock)
    svc.store.conn.backup(twin.store.conn)
    left: dict[str, int] = {}
    for c, a in pairs:
        left[c] = left.get(c, 0) + a
    n = 0
    while any(left.values()):
        n += 1
        twin.programme = Programme.from_toml(data.draw(st.sampled_from(PROGRAMMES[1:]), label="programme"))
        category = data.draw(st.sampled_from(sorted(c for c, a in left.items() if a)), label="category")
        cents = data.draw(st.integers(1, left[category]), label="cents")
        left[category] -= cents
        request = {"txn": "c1", "refund_id": f"r{n}", "lines": basket((category, f"{cents / 100:.2f}"))}
        mine, theirs = svc.refund(request), twin.refund(request)
        assert (mine.points, mine.discount) == (theirs.points, theirs.discount)
    assert svc.balance({"card": code}).points == twin.balance({"card": code}).points
