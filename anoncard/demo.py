"""A realistic store week, for ``anoncard demo`` and ``make demo``.

200 anonymous cards, about 1,500 checkouts over seven days with baskets drawn from
per-card tastes, retried requests, refunds, reward redemptions, one refused request
carrying personal data, and a key rotation midweek after which every card that
comes back is re-linked. The demo's programme measures its coupons: one-week campaign
periods, half the cards targeted, a quarter given random-category coupons and a quarter
held out (a store of 200 cards must hold out many to learn anything at all). The
baskets are deterministic for a given seed; the arms depend on the new key ring.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from pathlib import Path

from . import files
from .errors import LedgerError, PolicyViolation
from .money import format_cents
from .service import Service

# category -> (low, high) unit price in cents
CATEGORIES = {
    "dairy": (59, 449),
    "bakery": (89, 399),
    "fruit": (99, 399),
    "vegetables": (49, 349),
    "meat": (299, 1299),
    "fish": (349, 1499),
    "coffee": (399, 1199),
    "beverages": (79, 699),
    "frozen": (149, 599),
    "snacks": (99, 349),
    "household": (149, 899),
    "personal care": (99, 699),
    "wine": (399, 1999),
    "baby": (199, 1499),
    "pet food": (99, 1299),
}


def _basket(rng: random.Random, taste: list[float], big: bool) -> list[dict]:
    n = rng.randint(12, 40) if big else max(1, int(rng.lognormvariate(1.3, 0.6)))
    names = list(CATEGORIES)
    lines = []
    for cat in rng.choices(names, weights=taste, k=n):
        lo, hi = CATEGORIES[cat]
        lines.append({"category": cat, "amount": format_cents(rng.randint(lo, hi))})
    return lines


# The demo's [campaign]: periods of one week from a Monday, 50/25/25.
CAMPAIGN = """[campaign]
first_day = "2024-01-01"
weeks = 1
targeted = 50
random = 25
holdout = 25
"""


def prepare(home: Path) -> None:
    """Give the demo home's programme its campaign (before the service opens it)."""
    path = home / "programme.toml"
    text = path.read_text(encoding="utf-8")
    head, _, tail = text.partition("[campaign]")
    rest = tail.split("\n\n", 1)[1] if "\n\n" in tail else ""
    files.replace(path, f"{head}{CAMPAIGN}\n{rest}".encode(), field="into")


def last_week(today: date) -> date:
    """The Monday of the last whole week (Monday to Sunday) before ``today``: the demo's week,
    so the insights of the 4 weeks to last Sunday and the campaign period both hold all of it."""
    return today - timedelta(days=today.isoweekday() - 1 + 7)


def _clock_at(day: date) -> Callable[[], datetime]:
    noon = datetime.combine(day, time(12))
    return lambda: noon


def run(
    service: Service,
    *,
    seed: int = 2014,
    cards: int = 200,
    checkouts: int = 1500,
    start: date | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Play a store week on ``service`` (by default the last whole week) and return a summary."""
    rng = random.Random(seed)
    wall_clock = service.clock  # the week is played by moving the service's clock, day by day
    start = start or last_week(service.clock().date())
    codes = [s.code for s in service.issue_cards({"count": cards})]
    tastes = {c: [rng.random() ** 2 for _ in CATEGORIES] for c in codes}
    weekly_shopper = {c: rng.random() < 0.3 for c in codes}
    seen_after_rotation: set[str] = set()
    stats: Counter = Counter()
    gifts: Counter = Counter()
    rewards: Counter = Counter()
    done: list[tuple[str, str]] = []  # (txn, card) of checkouts, for refunds
    spend = points_earned = points_reversed = points_redeemed = gift_value = reward_value = 0
    relinked = 0
    coupon_value = 0
    last_day = None
    rotated_at = checkouts // 2
    for i in range(checkouts):
        day = start + timedelta(days=i * 7 // checkouts)
        if day != last_day:  # a new store day: the service's clock moves, the nightly job runs
            service.clock = _clock_at(day)
            service.refresh_stats()
            last_day = day
        if i == rotated_at:
            service.rotate_keys()
            stats["rotations"] += 1
        card = rng.choice(codes)
        big = weekly_shopper[card] and rng.random() < 0.35
        txn = f"store7-till{rng.randint(1, 6)}-{i:06d}"
        request = {"card": card, "txn": txn, "lines": _basket(rng, tastes[card], big)}
        if rng.random() < 0.6:  # most customers scan their card at the entrance column
            entrance = service.enter({"card": card})
            relinked += entrance.relinked
            printed = entrance.coupons
            stats["coupons printed"] += sum(c.new for c in printed)
            bought = {ln["category"] for ln in request["lines"]}
            use = [c.code for c in printed if c.category in bought]
            if use:
                request["coupons"] = use
        receipt = service.checkout(request)
        for c in receipt.coupons:
            stats["coupons redeemed"] += 1
            coupon_value += int(c["discount"].replace(".", ""))
        stats["checkouts"] += 1
        done.append((txn, card))
        spend += sum(int(ln["amount"].replace(".", "")) for ln in request["lines"])
        points_earned += receipt.points
        relinked += receipt.relinked
        if i >= rotated_at:
            seen_after_rotation.add(card)
        if receipt.gift:
            gifts[receipt.gift] += 1
            gift_value += next(g.value_cents for g in service.programme.gifts if g.name == receipt.gift)
        if rng.random() < 0.05:  # the till lost the answer and sends the request again
            again = service.checkout(request)
            assert again.replayed and again.points == receipt.points
            stats["retries"] += 1
        if rng.random() < 0.02 and done:  # a customer brings something back
            r_txn, _ = rng.choice(done)
            try:
                refund = service.refund({"txn": r_txn})
                points_reversed -= refund.points
                spend += int(refund.spend.replace(".", ""))
                stats["refunds"] += 1
            except LedgerError:
                stats["refunds already done"] += 1
        if rng.random() < 0.25:  # at the till: "would you like to use your points?"
            balance = service.balance({"card": card}).points
            affordable = [r for r in service.programme.rewards.values() if r.points <= balance]
            if affordable:
                reward = max(affordable, key=lambda r: r.points)
                service.redeem({"card": card, "txn": f"{txn}-r", "reward": reward.name})
                rewards[reward.name] += 1
                points_redeemed += reward.points
                reward_value += reward.value_cents
        if progress:
            progress(1)
    try:  # a till integration that sends more than the policy allows is refused
        service.checkout(
            {
                "card": codes[0],
                "txn": "store7-till1-bad",
                "email": "someone@example.org",
                "lines": [{"category": "dairy", "amount": "1.00"}],
            },
        )
    except PolicyViolation:
        stats["refused by the gate"] += 1
    service.clock = wall_clock
    net_points = points_earned - points_reversed
    point_value = service.programme.point_value_cents
    # coupon bonus points are in the receipts' points already; coupon_value holds the discounts
    earned_value = Fraction(net_points) * point_value + gift_value + coupon_value
    return {
        "cards issued": cards,
        "checkouts": stats["checkouts"],
        "retried checkouts (credited once)": stats["retries"],
        "refunds": stats["refunds"],
        "requests refused by the gate": stats["refused by the gate"],
        "spend (EUR, net of refunds)": format_cents(spend),
        "points issued": points_earned,
        "points reversed by refunds": points_reversed,
        "points redeemed": points_redeemed,
        "rewards redeemed": dict(rewards),
        "gifts handed out": dict(gifts),
        "gift value (EUR)": format_cents(gift_value),
        "coupons printed at the entrance": stats["coupons printed"],
        "coupons redeemed": stats["coupons redeemed"],
        "coupon discounts (EUR)": format_cents(coupon_value),
        "effective reward rate (points + gifts + coupons) / spend": (
            f"{float(earned_value / spend):.2%} (Kaiser's card: above 1 %)" if spend else "n/a"
        ),
        "key rotations": stats["rotations"],
        "cards re-linked to the new key": relinked,
        "cards seen after the rotation": len(seen_after_rotation),
        "ledger balance total": service.store.ledger_sum(),
        "database rows": service.store.counts(),
    }
