"""Coupon uplift by arm: does a coupon change what a card buys and spends?

Design overview. Each card is drawn, per campaign period, into the targeted, random-category
or holdout arm (:mod:`anoncard.arms`). Intent to treat: a card counts in the arm it was drawn
into, whether or not it got anything (a capped card of the targeted arm counts there too).
One row per card and period:

* **purchase rate** - of the coupons the card got (targeted and random arms) or the ghost
  coupons recorded for it (holdout), the share whose category it bought while the coupon was
  valid; in basis points (0 to 10,000). Only cards with at least one coupon or ghost count.
* **net spend** - the card's spend in the period (its visits' totals: refunds subtracted,
  sensitive categories left out) less the coupon discounts of its documents, clamped to
  [0, S] cents. Every card that visited counts.

Per arm and figure: n, the sum and the sum of squares, each a vector over the three arms with
L1 sensitivity 1, B and B^2 (B = 10,000 for the rate, S for the spend): a card is in one arm,
so adding or removing its whole period moves each vector by at most that. S is four times
the median spend of a visiting card, found by OpenDP's private quantile (20 % of the
release's epsilon): the uplift compares clamped spend, alike in every arm.
Discrete Laplace noise (OpenDP) on each; the means, variances and the uplifts (targeted -
holdout, random - holdout) are post-processing, with normal 95 % intervals that add the
noise's variance to the sampling variance.

Comparing categories: the targeted arm's coupons and the holdout's ghosts are the same
engine's picks, so their purchase rates compare; the random arm's categories are others,
so its rate says what targeting adds over any coupon. Spend compares for all three.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from .insights import Figure, Measurement, Release, _choose, _count, _geometric, _laplace
from .policy import InsightsRules
from .programme import ARMS
from .storage import DiscountRow, GhostRow, OfferRow, SpendRow, VisitRow

RATE_SCALE = 10_000  # a card's purchase rate in basis points
# S = 4 x the private median of spend per visiting card: a median is found accurately even at a
# small store's epsilon (a high quantile is not: every candidate above the data scores alike), and
# a clamp at a few medians cuts only the heaviest spenders, alike in every arm
CALIBRATION_SHARE = 0.2
SPEND_BOUND_MEDIANS = 4
Z95 = 1.959964
# shares of the measured epsilon (after calibration), per figure: the arms' sizes decide what is shown
WEIGHTS = {"n": 2.0, "sum": 2.0, "squares": 1.0}
METRICS = ("rate", "spend")
NOT_RELEASED = {
    "per card": "the privacy unit is one card: no card's arm, coupons or purchases are ever released",
    "per category": "an arm's purchases by category would split thin arms thinner; only the arm's rate is released",
}


@dataclass(frozen=True, slots=True)
class UpliftBounds:
    """Per-card bounds of an uplift release."""

    spend: int  # S, cents: a card's spend in the period counts up to this
    rate: int = RATE_SCALE  # a card's purchase rate, basis points

    def sensitivities(self) -> dict[str, int]:
        return {
            "rate n": 1, "rate sum": self.rate, "rate squares": self.rate**2,
            "spend n": 1, "spend sum": self.spend, "spend squares": self.spend**2,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class CardPeriod:
    """One card in one campaign period: its arm, coupons (or ghosts), hits and spend."""

    arm: str
    offers: int
    hits: int
    spend: int
    visited: bool

    @property
    def rate(self) -> int:
        """Basis points of its coupons (or ghosts) whose category it bought while valid."""
        return round(RATE_SCALE * self.hits / self.offers) if self.offers else 0


@dataclass(frozen=True, slots=True)
class UpliftData:
    """The rows of one campaign period, read in one transaction, with each card's arm."""

    period: int
    first: date
    last: date
    arms: dict[int, str]  # card id -> arm, drawn from its token
    offers: list[OfferRow]
    ghosts: list[GhostRow]
    spend: list[SpendRow]
    visits: list[VisitRow]
    discounts: list[DiscountRow] = field(default_factory=list)  # coupon discounts: spend is net of them
    rotated: bool = False  # a key rotation fell inside the period


def cards(data: UpliftData) -> dict[int, CardPeriod]:
    """Each card's row for the period (pure): an offer is a hit when the card's history shows
    its category on a day from its issue to its expiry."""
    bought: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for r in data.spend:
        if r.spend_cents > 0:
            bought[r.card_id].add((r.day, r.category))
    spend: dict[int, int] = defaultdict(int)
    visited: set[int] = set()
    for v in data.visits:
        spend[v.card_id] += v.spend_cents
        if v.visits > 0:
            visited.add(v.card_id)
    for d in data.discounts:
        spend[d.card_id] -= d.cents
    offers: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
    for o in data.offers:  # coupons: the targeted and random arms'
        if data.arms.get(o.card_id, "targeted") != "holdout":
            offers[o.card_id].append((o.category, o.issued_day, o.expires_day))
    for g in data.ghosts:  # ghosts: the holdout's
        if data.arms.get(g.card_id) == "holdout":
            offers[g.card_id].append((g.category, g.issued_day, g.expires_day))
    out = {}
    for card in visited | set(offers):
        mine = offers.get(card, [])
        days = bought.get(card, set())
        hits = sum(1 for cat, d1, d2 in mine if any((d, cat) in days for d in _days(d1, d2)))
        out[card] = CardPeriod(data.arms.get(card, "targeted"), len(mine), hits, spend.get(card, 0), card in visited)
    return out


def _days(first: str, last: str) -> list[str]:
    """The days from ``first`` to ``last`` (a coupon's validity: a day or a few)."""
    a, b = date.fromisoformat(first), date.fromisoformat(last)
    return [(a + timedelta(days=i)).isoformat() for i in range(min((b - a).days, 366) + 1)]


def sums(rows: Mapping[int, CardPeriod], bounds: UpliftBounds) -> dict[str, list[int]]:
    """Per figure, the vector over the arms (targeted, random, holdout) of n, sum and sum of
    squares of the clamped per-card values: one card moves each by at most its sensitivity."""
    out = {f"{m} {s}": [0, 0, 0] for m in METRICS for s in WEIGHTS}
    for row in rows.values():
        i = ARMS.index(row.arm)
        if row.offers:
            x = min(max(row.rate, 0), bounds.rate)
            out["rate n"][i] += 1
            out["rate sum"][i] += x
            out["rate squares"][i] += x * x
        if row.visited:
            x = min(max(row.spend, 0), bounds.spend)
            out["spend n"][i] += 1
            out["spend sum"][i] += x
            out["spend squares"][i] += x * x
    return out


@dataclass(frozen=True, slots=True)
class ArmEstimate:
    n: float
    mean: float
    variance: float  # of the mean: sampling and noise
    scale_n: float


def _estimate(n: int, total: int, squares: int, scales: tuple[float, float, float], bound: int) -> ArmEstimate:
    """An arm's mean and the variance of that mean from its noisy n, sum and sum of squares
    (Laplace of scale b has variance 2 b^2). Values lie in [0, bound], so the mean is clipped
    to it and the spread to at most bound^2 / 4 (post-processing)."""
    bn, bs, _ = scales
    if n <= 0:
        return ArmEstimate(float(n), 0.0, math.inf, bn)
    mean = min(max(total / n, 0.0), float(bound))
    spread = min(max(squares / n - mean * mean, 0.0), bound * bound / 4)
    noise = (2 * bs * bs + mean * mean * 2 * bn * bn) / (n * n)
    return ArmEstimate(float(n), mean, spread / n + noise, bn)


def release(
    data: UpliftData, rules: InsightsRules, *, minimum: int | None = None, grouping: str = "chain"
) -> Release:
    """Release a campaign period's uplift, spending ``rules.uplift_epsilon``."""
    rows = cards(data)
    return release_rows(rows, rules, period=data.period, first=data.first, last=data.last, rotated=data.rotated,
                        minimum=minimum, grouping=grouping)  # fmt: skip


def release_rows(
    rows: Mapping[int, CardPeriod],
    rules: InsightsRules,
    *,
    period: int,
    first: date,
    last: date,
    rotated: bool = False,
    minimum: int | None = None,
    grouping: str = "chain",
) -> Release:
    """:func:`release` from each card's row (what :func:`cards` makes of the period's rows)."""
    budget = rules.budget("uplift")
    if budget is None:
        raise ValueError("the policy declares no uplift budget")
    epsilon = budget[0]
    minimum = rules.min_arm_cards if minimum is None else minimum
    weeks = max(((last - first).days + 1) // 7, 1)
    calibration = epsilon * CALIBRATION_SHARE
    spent_cards = [r.spend for r in rows.values() if r.visited]
    median, m = _choose("median spend", spent_cards, _geometric(100, 200_000 * weeks), 1, calibration, alpha=0.5)
    measurements = [m]
    bounds = UpliftBounds(spend=SPEND_BOUND_MEDIANS * median)
    vectors = sums(rows, bounds)
    sensitivity = bounds.sensitivities()
    rest = epsilon - calibration
    total_weight = len(METRICS) * sum(WEIGHTS.values())
    noisy: dict[str, list[int]] = {}
    scales: dict[str, float] = {}
    for name, vector in vectors.items():
        share = rest * WEIGHTS[name.split()[1]] / total_weight
        scale = sensitivity[name] / share
        measure = _laplace(scale, len(vector))
        noisy[name] = list(measure(vector))
        scales[name] = scale
        spent = float(measure.map(sensitivity[name]))
        measurements.append(Measurement(name, "discrete Laplace", sensitivity[name], scale, spent))
    figures, refused = _figures(noisy, scales, minimum, bounds)
    notes = [
        "intent to treat: a card counts in the arm it was drawn into, whether or not it was given a coupon",
        "purchase rate: of a card's coupons (holdout: ghost coupons, the engine's picks never printed), the share "
        "whose category it bought while valid; the random arm's categories differ from the engine's picks",
        "spend per card: what its visits spent in the period (refunds subtracted, sensitive categories left out) "
        "less its coupon discounts",
        "intervals are normal approximations (sampling and noise variance); they are wide for small arms",
    ]
    if rotated:
        notes.append(
            "a key rotation fell inside this period: cards re-linked to the new key were drawn into an arm afresh "
            "for the rest of it, which mixes the arms a little"
        )
    return Release(
        period=f"campaign period {period}",
        first=first,
        last=last,
        grouping=grouping,
        bounds=bounds,
        figures=figures,
        measurements=measurements,
        not_released={**NOT_RELEASED, **refused},
        report="uplift",
        notes=notes,
    )


_LABELS = {"rate": ("purchase rate", "percent", 100.0), "spend": ("spend per card", "cents", 1.0)}


def _figures(
    noisy: dict[str, list[int]], scales: dict[str, float], minimum: int, bounds: UpliftBounds
) -> tuple[list[Figure], dict]:
    figures: list[Figure] = []
    refused: dict[str, str] = {}
    for metric in METRICS:
        label, unit, per = _LABELS[metric]
        estimates = {}
        for i, arm in enumerate(ARMS):
            n, total, squares = (noisy[f"{metric} {s}"][i] for s in WEIGHTS)
            sc = tuple(scales[f"{metric} {s}"] for s in WEIGHTS)
            est = _estimate(n, total, squares, sc, bounds.rate if metric == "rate" else bounds.spend)  # type: ignore[arg-type]
            estimates[arm] = est
            figures.append(_count(f"{label}: cards", arm, n, scales[f"{metric} n"], "cards"))
            bound = bounds.rate if metric == "rate" else bounds.spend
            if est.n >= minimum:  # a mean of values in [0, bound] lies there: the interval is clipped to it
                h = Z95 * math.sqrt(est.variance)
                low, high = max(est.mean - h, 0.0) / per, min(est.mean + h, bound) / per
                figures.append(Figure(label, arm, est.mean / per, low, high, None, unit))
        hold = estimates["holdout"]
        for arm in ("targeted", "random"):
            est = estimates[arm]
            key = f"uplift of {label}, {arm} - holdout"
            small = [a for a, e in (("holdout", hold), (arm, est)) if e.n < minimum]
            if small:
                refused[key] = (
                    f"the {' and '.join(small)} arm has fewer than {minimum} cards (as released): too small for an "
                    "interval that says anything"
                )
                continue
            diff = est.mean - hold.mean
            h = Z95 * math.sqrt(est.variance + hold.variance)
            low, high = max(diff - h, -bound) / per, min(diff + h, bound) / per
            figures.append(Figure(f"uplift of {label}", f"{arm} - holdout", diff / per, low, high, None, unit))
    return figures, refused

