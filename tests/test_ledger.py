"""Ledger rules: idempotency, proportional refunds, never ahead, balance = sum of entries."""

from __future__ import annotations

import json
import sqlite3
from datetime import date

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, rule

from anoncard import KeyRing, LedgerError, Programme, Service, Store, cards
from tests.conftest import basket, fixed_clock

CATEGORIES = ["dairy", "fruit", "coffee", "wine"]  # fruit earns double in the default programme


def memory_service() -> Service:
    return Service(Store(":memory:"), KeyRing.create("2015-03-01"), Programme.default(), clock=fixed_clock)


def test_checkout_receipt_points_and_gifts():
    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    r = svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "20.00"), ("fruit", "10.99"))})
    assert (r.points, r.balance, r.spend, r.gift) == (41, 41, "30.99", "chocolate bar")
    r = svc.checkout({"card": card.code, "txn": "t2", "lines": basket(("wine", "200.00"))})
    assert (r.points, r.balance, r.gift) == (200, 241, "jar of hazelnut spread")
    r = svc.checkout({"card": card.code, "txn": "t3", "lines": basket(("dairy", "29.99"))})
    assert (r.points, r.gift) == (29, None)


def test_retry_returns_original_receipt_and_credits_nothing():
    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    request = {"card": card.code, "txn": "t1", "lines": basket(("dairy", "3.49"), ("coffee", "7.99"))}
    first = svc.checkout(request)
    again = svc.checkout({**request, "lines": list(reversed(request["lines"]))})  # same content, other order
    assert again.replayed and not first.replayed
    assert (again.points, again.balance, again.spend) == (first.points, first.balance, first.spend)
    assert svc.balance({"card": card.code}).points == first.balance


def test_same_txn_other_content_is_refused_and_changes_nothing():
    svc = memory_service()
    a, b = svc.issue_cards({"count": 2})
    svc.checkout({"card": a.code, "txn": "t1", "lines": basket(("dairy", "3.49"))})
    before = list(svc.store.conn.iterdump())
    with pytest.raises(LedgerError, match="'txn'.*different content"):
        svc.checkout({"card": a.code, "txn": "t1", "lines": basket(("dairy", "3.50"))})
    with pytest.raises(LedgerError, match="different content"):
        svc.checkout({"card": b.code, "txn": "t1", "lines": basket(("dairy", "3.49"))})
    assert list(svc.store.conn.iterdump()) == before


def test_partial_refunds_add_up_to_the_full_reversal():
    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    svc.checkout(
        {"card": card.code, "txn": "t1", "lines": basket(("dairy", "10.00"), ("fruit", "5.55"), ("coffee", "7.77"))}
    )
    assert svc.balance({"card": card.code}).points == 28  # 10 + 11.10 + 7.77 -> 28
    r1 = svc.refund({"txn": "t1", "refund_id": "r1", "lines": basket(("fruit", "5.55"))})
    assert r1.points == -(28 - int(28 * 1777 / 2887))
    r2 = svc.refund({"txn": "t1"})
    assert r1.points + r2.points == -28
    assert svc.balance({"card": card.code}).points == 0
    assert svc.refund({"txn": "t1"}).replayed
    with pytest.raises(LedgerError, match="exceeds what remains"):
        svc.refund({"txn": "t1", "refund_id": "r3", "lines": basket(("dairy", "0.01"))})


def test_full_refund_after_partial_refunds_of_everything_is_refused():
    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "10.00"))})
    svc.refund({"txn": "t1", "refund_id": "r1", "lines": basket(("dairy", "10.00"))})
    with pytest.raises(LedgerError, match="already fully refunded"):
        svc.refund({"txn": "t1"})


def test_refund_errors_name_the_rule():
    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "10.00"))})
    with pytest.raises(LedgerError, match="'txn': no checkout"):
        svc.refund({"txn": "nope"})
    with pytest.raises(LedgerError, match="'lines'.*exceeds"):
        svc.refund({"txn": "t1", "refund_id": "r1", "lines": basket(("dairy", "10.01"))})
    with pytest.raises(LedgerError, match="'lines'.*exceeds"):
        svc.refund({"txn": "t1", "refund_id": "r1", "lines": basket(("coffee", "1.00"))})


def test_redeem_more_than_balance_is_refused_and_retry_counts_once():
    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    with pytest.raises(LedgerError, match="'reward'.*costs 150 points, the card has 0"):
        svc.redeem({"card": card.code, "txn": "r1", "reward": "coffee"})
    svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("wine", "160.00"))})
    first = svc.redeem({"card": card.code, "txn": "r1", "reward": "coffee"})
    again = svc.redeem({"card": card.code, "txn": "r1", "reward": "coffee"})
    assert (first.balance, again.balance, again.replayed) == (10, 10, True)
    assert svc.balance({"card": card.code}).points == 10


def test_buy_redeem_refund_goes_negative_and_blocks_redemption():
    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("wine", "150.00"))})
    svc.redeem({"card": card.code, "txn": "r1", "reward": "coffee"})
    refund = svc.refund({"txn": "t1"})
    assert refund.balance == -150
    with pytest.raises(LedgerError, match="the card has -150"):
        svc.redeem({"card": card.code, "txn": "r2", "reward": "coffee"})


def test_refund_below_threshold_asks_for_the_gift_back():
    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "25.00"), ("coffee", "6.00"))})
    r = svc.refund({"txn": "t1", "refund_id": "r1", "lines": basket(("coffee", "6.00"))})
    assert r.gift_to_return == "chocolate bar"


@pytest.mark.parametrize("table", ["ledger", "txns"])
def test_database_refuses_to_change_entries(table):
    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "3.00"))})
    column = "points" if table == "ledger" else "spend_cents"
    with pytest.raises(sqlite3.IntegrityError, match="append-only|immutable"):
        svc.store.conn.execute(f"UPDATE {table} SET {column} = 1000")
    with pytest.raises(sqlite3.IntegrityError, match="append-only|immutable"):
        svc.store.conn.execute(f"DELETE FROM {table}")


class LedgerMachine(RuleBasedStateMachine):
    """Random checkouts, refunds, redemptions and retries of any of them."""

    requests = Bundle("requests")
    checkouts = Bundle("checkouts")

    @initialize()
    def setup(self):
        self.svc = memory_service()
        self.codes = [s.code for s in self.svc.issue_cards({"count": 3})]
        self.expected = dict.fromkeys(self.codes, 0)  # from receipts of first-time requests
        self.redeemed = dict.fromkeys(self.codes, 0)
        self.card_of_txn: dict[str, str] = {}
        self.n = 0

    def _next(self, prefix):
        self.n += 1
        return f"{prefix}{self.n}"

    def _apply(self, op, request):
        fn = getattr(self.svc, op)
        before = {c: self.svc.balance({"card": c}).points for c in self.codes}
        try:
            receipt = fn(request)
        except LedgerError:
            after = {c: self.svc.balance({"card": c}).points for c in self.codes}
            assert after == before  # a refused request changes nothing
            return False
        card = request.get("card") or self.card_of_txn[request["txn"]]
        if receipt.replayed:
            assert self.svc.balance({"card": card}).points == before[card]
        else:
            self.expected[card] += receipt.points
            if op == "redeem":
                self.redeemed[card] -= receipt.points
        return True

    @rule(
        target=checkouts,
        card=st.integers(0, 2),
        lines=st.lists(st.tuples(st.sampled_from(CATEGORIES), st.integers(1, 9_999)), min_size=1, max_size=5),
    )
    def checkout(self, card, lines):
        txn = self._next("t")
        code = self.codes[card]
        request = {"card": code, "txn": txn, "lines": [{"category": c, "amount": f"{a / 100:.2f}"} for c, a in lines]}
        self.card_of_txn[txn] = code
        return multiple(("checkout", request)) if self._apply("checkout", request) else multiple()

    @rule(target=requests, item=checkouts)
    def keep(self, item):
        return item

    @rule(target=requests, item=checkouts, part=st.booleans(), data=st.data())
    def refund(self, item, part, data):
        request = {"txn": item[1]["txn"]}
        if part:
            line = data.draw(st.sampled_from(item[1]["lines"]))
            request = {**request, "refund_id": self._next("r"), "lines": [line]}
        return multiple(("refund", request)) if self._apply("refund", request) else multiple()

    @rule(target=requests, card=st.integers(0, 2), reward=st.sampled_from(["coffee", "voucher-5"]))
    def redeem(self, card, reward):
        request = {"card": self.codes[card], "txn": self._next("x"), "reward": reward}
        return multiple(("redeem", request)) if self._apply("redeem", request) else multiple()

    @rule(item=requests)
    def retry(self, item):
        op, request = item
        before = {c: self.svc.balance({"card": c}).points for c in self.codes}
        receipt = getattr(self.svc, op)(request)  # it succeeded once, so a retry must too
        assert receipt.replayed
        assert {c: self.svc.balance({"card": c}).points for c in self.codes} == before

    @invariant()
    def balances_match(self):
        if not hasattr(self, "svc"):
            return
        conn = self.svc.store.conn
        entries = dict(conn.execute("SELECT card_id, sum(points) FROM ledger GROUP BY card_id"))  # raw SQL
        for code in self.codes:
            card = self.svc.store.find_card(self.svc.ring.tokens(cards.decode(code)))
            balance = self.svc.balance({"card": code}).points
            assert balance == entries.get(card.id, 0) == card.balance == self.expected[code]
        assert conn.execute("SELECT sum(points) FROM ledger").fetchone()[0] in (None, sum(self.expected.values()))

    @invariant()
    def never_ahead(self):
        """Balance plus redeemed points never exceed what the kept goods would earn."""
        if not hasattr(self, "svc"):
            return
        conn = self.svc.store.conn
        kept: dict[int, int] = {}
        for doc_id, card_id, lines in conn.execute("SELECT id, card_id, lines FROM txns WHERE kind = 'checkout'"):
            left: dict[str, int] = {}
            for c, a, *_ in json.loads(lines):
                left[c] = left.get(c, 0) + a
            for (child,) in conn.execute("SELECT lines FROM txns WHERE parent_id = ?", (doc_id,)):
                for c, a in json.loads(child):
                    left[c] -= a
            kept[card_id] = kept.get(card_id, 0) + self.svc.programme.points_for(list(left.items()))
        for code in self.codes:
            card = self.svc.store.find_card(self.svc.ring.tokens(cards.decode(code)))
            assert self.expected[code] + self.redeemed[code] <= kept.get(card.id, 0)


LedgerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_ledger_machine = LedgerMachine.TestCase


REWARDS = {"coffee": 150, "voucher-5": 450, "tote-bag": 800}
_lines = st.lists(st.tuples(st.sampled_from(CATEGORIES), st.integers(1, 30_000)), min_size=1, max_size=4)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("buy"), _lines),
        st.tuples(st.just("redeem"), st.sampled_from(sorted(REWARDS))),
        # refund: which basket, which line (None: the whole rest), how many cents of it
        st.tuples(
            st.just("refund"), st.tuples(st.integers(0, 5), st.none() | st.integers(0, 3), st.integers(1, 30_000))
        ),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=80, deadline=None)
@given(ops=_ops, retry=st.lists(st.booleans(), min_size=14, max_size=14))
@example(  # the plain case: buy, spend the points at once, bring the goods back
    ops=[("buy", [("wine", 20_000)]), ("redeem", "coffee"), ("refund", (0, None, 1))],
    retry=[False, True, True] + [False] * 11,
)
@example(ops=[("buy", [("fruit", 9_000), ("dairy", 5_000)]), ("redeem", "coffee"), ("refund", (0, 1, 9_000)),
              ("refund", (0, 0, 2_500)), ("redeem", "coffee")], retry=[True] * 14)  # fmt: skip
def test_buy_redeem_refund_never_leaves_the_card_ahead(ops, retry):
    """Any sequence of buys, redemptions and (partial or full) refunds, each possibly retried: the balance
    plus the points spent on rewards never exceed what the goods still kept would earn; a redemption
    succeeds exactly when the balance covers it; refunding everything leaves balance + redeemed <= 0."""
    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    code = card.code
    kept: list[dict[str, int]] = []  # per basket: cents per category not yet refunded (kept by this test)
    redeemed = 0
    n = 0

    def send(op: str, request: dict, again: bool):
        r = getattr(svc, op)(request)
        if again:  # the till lost the answer and retries: the same receipt, nothing moves
            before = svc.balance({"card": code}).points
            r2 = getattr(svc, op)(request)
            assert r2.replayed and (r2.points, r2.balance) == (r.points, r.balance)
            assert svc.balance({"card": code}).points == before
        return r

    def earned_by_kept() -> int:
        return sum(svc.programme.points_for([(c, v) for c, v in b.items() if v]) for b in kept)

    def check():
        balance = svc.balance({"card": code}).points
        assert balance + redeemed <= earned_by_kept()

    for step, (op, arg) in enumerate(ops):
        n += 1
        balance = svc.balance({"card": code}).points
        if op == "buy":
            lines = [{"category": c, "amount": f"{a // 100}.{a % 100:02d}"} for c, a in arg]
            send("checkout", {"card": code, "txn": f"b{len(kept)}", "lines": lines}, retry[step])
            basket_: dict[str, int] = {}
            for c, a in arg:
                basket_[c] = basket_.get(c, 0) + a
            kept.append(basket_)
        elif op == "redeem":
            request = {"card": code, "txn": f"x{n}", "reward": arg}
            if balance >= REWARDS[arg]:
                r = send("redeem", request, retry[step])
                assert r.points == -REWARDS[arg]
                redeemed += REWARDS[arg]
                event("a reward was redeemed")
            else:
                with pytest.raises(LedgerError, match="'reward'"):
                    svc.redeem(request)
                assert svc.balance({"card": code}).points == balance
        elif kept:
            i, line, cents = arg
            i %= len(kept)
            if line is None:
                request = {"txn": f"b{i}"}
                if not any(kept[i].values()):  # nothing left: a replay of the full refund, or refused
                    try:
                        assert svc.refund(request).replayed
                    except LedgerError as exc:
                        assert "already fully refunded" in exc.message
                    assert svc.balance({"card": code}).points == balance
                    continue
                send("refund", request, retry[step])
                kept[i] = dict.fromkeys(kept[i], 0)
            else:
                category = sorted(kept[i])[line % len(kept[i])]
                cents = min(cents, kept[i][category])
                if cents == 0:
                    continue
                amount = f"{cents // 100}.{cents % 100:02d}"
                request = {"txn": f"b{i}", "refund_id": f"r{n}", "lines": [{"category": category, "amount": amount}]}
                send("refund", request, retry[step])
                kept[i][category] -= cents
                if redeemed:
                    event("a partial refund after a redemption")
        check()
    # the customer brings everything back: not a point of what was redeemed is left to the good
    for i, b in enumerate(kept):
        if any(b.values()):
            svc.refund({"txn": f"b{i}"})
            kept[i] = dict.fromkeys(b, 0)
    check()
    assert svc.balance({"card": code}).points == -redeemed


@given(st.lists(st.integers(1, 99_999), min_size=1, max_size=8))
def test_points_never_exceed_the_earn_rate(amounts):
    programme = Programme.default()
    lines = [("dairy", a) for a in amounts]
    assert programme.points_for(lines) == sum(amounts) // 100


def test_day_is_coarsened_from_at():
    svc = memory_service()
    (card,) = svc.issue_cards({"count": 1})
    from datetime import datetime

    svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "1.00"))}, at=datetime(2015, 2, 27, 18, 42))
    svc.checkout({"card": card.code, "txn": "t2", "lines": basket(("dairy", "1.00"))}, at=date(2015, 2, 28))
    days = [r[0] for r in svc.store.conn.execute("SELECT day FROM visits ORDER BY day")]
    assert days == ["2015-02-27", "2015-02-28"]
    times = svc.store.conn.execute("SELECT count(*) FROM txns WHERE day LIKE '%:%'").fetchone()[0]
    assert times == 0


def test_receipt_to_dict_keeps_every_set_field_in_order_and_copies_coupons():
    from anoncard.service import Receipt

    line = {"category": "dairy", "kind": "percent", "value": 10, "discount": "0.24", "bonus_points": 0}
    receipt = Receipt("checkout", "t1", 9, 53, "9.48", discount="0.24", coupons=(line,))
    out = receipt.to_dict()
    assert list(out) == ["kind", "txn", "points", "balance", "spend", "discount", "coupons", "replayed", "relinked"]
    assert out["coupons"] == [line] and out["coupons"][0] is not line
    bare = Receipt("redeem", "t2", -150, 16, reward="coffee").to_dict()
    assert bare == {"kind": "redeem", "txn": "t2", "points": -150, "balance": 16, "spend": "0.00",
                    "reward": "coffee", "replayed": False, "relinked": False}  # fmt: skip
