"""Which categories to offer a card at the entrance, from its token's history only.

Design overview. The engine sees one card's category history (days, baskets per
category, visits per day) and store-wide aggregates that hold no card at all: each
category's share of baskets (over the history kept, and over the last two weeks)
and how often categories are bought on the same day. It never sees a product, a
store, a clock time or anything about the person.

* **Habits** - the offers should make it likely that *at least one* fits the next
  basket, so habits are chosen greedily by coverage: the first is the category on
  most of the card's recent visits (time-decayed), the next the one on most of the
  visits the first does not cover, and so on. A small prior from the store-wide
  share keeps cards with little history sensible.
* **Restocking** - a category the card bought moments ago is less likely in this
  basket: its cupboard is full. Today's earlier basket, or a gap under a quarter (or
  half) of the card's own interval between buys, scales the category down.
* **Discovery** - the last slot may go to a category the card has not bought for
  ``discovery_weeks``: its own occasional buys first (ranked by share, restocking and
  the store-wide trend: what is in season now); a card with none gets complements
  (what is bought on the same days as this card's habits), weighted by the trend.
  It is printed only when its odds of adding a hit, weighted by ``DISCOVERY_WEIGHT``,
  beat those of the next habit: a discovery nobody buys is a coupon thrown away.
* **Diversity** - never more than two offers from one department; never a category
  the card already holds a coupon for, or one resting after being ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ranker import Model

HALF_LIFE_DAYS = 90.0
PRIOR_VISITS = 8.0
COMPLEMENT_WEIGHT = 0.5
MAX_PER_DEPARTMENT = 2
OLD_AGE_DAYS = 400  # undated totals are history older than the policy's horizon
# restocking: the odds of a category bought today, bought on one day only, or bought
# within a fraction of the card's usual interval, relative to its share (measured on
# the Complete Journey year: 0.5-0.65 today, 0.67 within a quarter, 0.87 within half)
RESTOCK_TODAY = 0.55
RESTOCK_ONCE = 0.85
RESTOCK_BY_GAP = ((0.25, 0.67), (0.5, 0.87))
# a discovery is printed instead of the last habit when its odds of adding a hit, counted
# this many times, beat the habit's: something new is worth more to the customer than a
# reminder of what they buy anyway, but not a likely coupon thrown away (the engine without
# caps on weeks 41-53 of the Complete Journey year, hit@3 / discovery: weight 1 -> 0.597 /
# 0.028, 2.5 -> 0.589 / 0.058, 3 -> 0.586 / 0.066, always -> 0.553 / 0.094)
DISCOVERY_WEIGHT = 3.0


@dataclass(frozen=True, slots=True)
class Suggestion:
    category: str
    reason: str  # "habit" or "discovery"
    score: float


class StoreStats:
    """Store-wide, card-free aggregates (parts per million), prepared for fast look-ups."""

    TOP_PAIRS = 40  # complements looked at per anchor category

    def __init__(self, shares: dict[str, int], recent: dict[str, int], pairs: dict[str, dict[str, int]]) -> None:
        self.shares, self.recent, self.pairs = shares, recent, pairs
        self.top_pairs = {a: sorted(bs.items(), key=lambda kv: -kv[1])[: self.TOP_PAIRS] for a, bs in pairs.items()}
        self.by_popularity = sorted(shares, key=lambda c: (-shares[c], c))
        self.trends = {c: (recent.get(c, 0) + 50) / (ppm + 50) for c, ppm in shares.items()}
        self.by_season = sorted(shares, key=lambda c: (-shares[c] * self.trends[c], c))

    def trend(self, category: str) -> float:
        """Share of the last two weeks over the long-run share: above 1 is in season."""
        return self.trends.get(category, 1.0)


class Profile:
    """One card's decayed history, computed once per entrance."""

    def __init__(
        self,
        history: Iterable[tuple[str, str, int]],
        visits: Iterable[tuple[str, int]],
        today: date,
        *,
        affinity: Iterable[tuple[str, int]] = (),
        half_life: float = HALF_LIFE_DAYS,
    ) -> None:
        self.today = today
        self.weight: dict[str, float] = {}
        for day, n in visits:
            age = (today - date.fromisoformat(day)).days
            self.weight[day] = self.weight.get(day, 0.0) + n * 0.5 ** (max(age, 0) / half_life)
        self.total = sum(self.weight.values())
        self.days: dict[str, set[str]] = {}
        self.mass: dict[str, float] = {}
        last: dict[str, str] = {}
        weight = self.weight
        for day, category, baskets in history:  # one row per (day, category)
            if baskets <= 0 or day not in weight:
                continue
            days = self.days.get(category)
            if days is None:
                self.days[category] = {day}
                self.mass[category] = weight[day]
                last[category] = day
            else:
                days.add(day)
                self.mass[category] += weight[day]
                if day > last[category]:  # ISO days compare as strings
                    last[category] = day
        self.last = {c: date.fromisoformat(d) for c, d in last.items()}
        self.restock = {c: _restock(today, self.last[c], days) for c, days in self.days.items()}
        # undated totals folded from expired history: long-term taste, weighted as very old
        old = 0.5 ** (OLD_AGE_DAYS / half_life)
        for category, baskets in affinity:
            self.mass[category] = self.mass.get(category, 0.0) + baskets * old
        self.total += max((b for _c, b in affinity), default=0) * old

    def share(self, category: str, prior: float, store_share: float) -> float:
        """Decayed share of visits holding the category, shrunk towards the store share."""
        return (self.mass.get(category, 0.0) + prior * store_share) / (self.total + prior)


def _restock(today: date, last: date, days: set[str]) -> float:
    """How much buying the category lately lowers its odds in today's basket."""
    gap = (today - last).days
    if gap <= 0:
        return RESTOCK_TODAY
    if len(days) < 2:
        return RESTOCK_ONCE
    first = min(days)
    interval = (last - date.fromisoformat(first)).days / (len(days) - 1)
    for fraction, factor in RESTOCK_BY_GAP:
        if gap < fraction * interval:
            return factor
    return 1.0


def suggest(
    history: Iterable[tuple[str, str, int]],
    visits: Iterable[tuple[str, int]],
    *,
    today: date,
    stats: StoreStats,
    affinity: Iterable[tuple[str, int]] = (),
    k: int = 3,
    exclude: Iterable[str] = (),
    department: Callable[[str], str] = lambda c: c,
    discovery_weeks: int = 8,
    discovery: bool = True,
    allowed: Callable[[str], bool] | None = None,
    prior: float = PRIOR_VISITS,
    model: Model | None = None,
) -> list[Suggestion]:
    """Up to ``k`` categories for this card: habits by coverage, and at most one discovery.

    With a fitted ``model`` (:mod:`anoncard.ranker`) the model ranks and chooses the set;
    without one, the built-in engine below does."""
    if model is not None:
        return model.choose(
            history, visits, today=today, stats=stats, affinity=affinity, k=k, exclude=exclude,
            department=department, discovery_weeks=discovery_weeks, allowed=allowed,
            discovery_weight=None if discovery else 0.0,
        )  # fmt: skip
    if k <= 0:
        return []
    profile = Profile(history, visits, today, affinity=affinity)
    excluded = set(exclude)

    def usable(category: str) -> bool:
        return category not in excluded and (allowed is None or allowed(category))

    # the card's own categories are few; the store's are many: those are looked at lazily
    own = sorted((c for c in profile.mass if usable(c)), key=lambda c: -profile.mass[c])
    by_popularity = [c for c in stats.by_popularity if c not in profile.mass and usable(c)]
    dep = _Lazy(department)
    per_department: dict[str, int] = {}
    chosen: list[Suggestion] = []
    taken: set[str] = set()

    def fits(category: str) -> bool:
        return category not in taken and per_department.get(dep[category], 0) < MAX_PER_DEPARTMENT

    def take(category: str, reason: str, score: float) -> None:
        per_department[dep[category]] = per_department.get(dep[category], 0) + 1
        chosen.append(Suggestion(category, reason, score))
        taken.add(category)

    share = _Lazy(lambda c: profile.share(c, prior, stats.shares.get(c, 0) / 1e6))
    habits = k - 1 if discovery and k > 1 else k
    uncovered = set(profile.weight)
    denominator = profile.total + prior
    # own categories go by decayed mass, which bounds any coverage gain (branch and bound)
    top_share = max(stats.shares.values(), default=0) / 1e6
    cutoff = today.toordinal() - discovery_weeks * 7

    def unbought(category: str) -> bool:
        last = profile.last.get(category)
        return fits(category) and (last is None or last.toordinal() < cutoff)

    def next_habit(eligible: Callable[[str], bool], *, bought_lately: bool = False) -> tuple[str | None, float]:
        """The category adding most coverage of the visits not yet covered (its odds, restocking
        included); ``bought_lately`` looks only at what the card bought within ``discovery_weeks``."""
        left = sum(profile.weight[d] for d in uncovered)
        frac = left / denominator if profile.total else 1.0
        best, best_key = None, (-1.0, -1.0, "")
        # the card's own categories: coverage of the visits not yet covered, plus the prior
        for c in own:
            if profile.mass[c] + prior * frac * top_share < best_key[0]:
                break  # no category further down can gain more (branch and bound)
            if eligible(c):
                gain = sum(profile.weight[d] for d in profile.days.get(c, set()) & uncovered)
                gain += prior * frac * stats.shares.get(c, 0) / 1e6
                gain *= profile.restock.get(c, 1.0)
                key = (round(gain, 12), share[c], c)  # once every visit is covered, the likeliest next
                if key > best_key:
                    best, best_key = c, key
        # any other category gains only its prior: the most popular one that fits stands for all
        for c in () if bought_lately else by_popularity:
            if eligible(c):
                gain = prior * frac * stats.shares.get(c, 0) / 1e6
                key = (round(gain, 12), share[c], c)
                if key > best_key:
                    best, best_key = c, key
                break
        return best, best_key[0] / denominator

    while len(chosen) < habits:
        best, gain = next_habit(fits)
        if best is None:
            break
        take(best, "habit", gain)
        uncovered -= profile.days.get(best, set())

    if discovery and len(chosen) < k:
        # the card's own occasional buys first: likelier than anything it never bought
        own_old = [c for c in own if unbought(c)]
        if own_old:
            scores = {c: share[c] * profile.restock.get(c, 1.0) * stats.trend(c) ** 0.5 for c in own_old}
        else:
            # anchors: the likeliest ten, and a category the card never bought is as likely as it is popular
            complement = _complements({c: share[c] for c in (*own, *by_popularity[:10])}, stats)
            never = set(by_popularity)
            pool = [c for c in complement if c in never]
            # without complements a category scores its popularity times its trend, the same
            # order for every card: the first of that order stands for all the others
            pool += next(([c] for c in stats.by_season if c in never and c not in complement and unbought(c)), [])
            scores = {
                c: (share[c] + COMPLEMENT_WEIGHT * complement.get(c, 0.0)) * stats.trend(c) for c in pool if unbought(c)
            }
        # the discovery's odds of adding a hit (it is about as likely on the visits the habits
        # miss as on any) against those of the next habit bought lately
        left = sum(profile.weight[d] for d in uncovered) / denominator if profile.total else 1.0
        habit, habit_gain = next_habit(lambda c: fits(c) and not unbought(c), bought_lately=True)
        if scores:
            best = max(scores, key=lambda c: (scores[c], c))
            if habit is None or DISCOVERY_WEIGHT * scores[best] * left >= habit_gain:
                take(best, "discovery", scores[best])
        if len(chosen) < k and habit is not None:
            take(habit, "habit", habit_gain)
    if len(chosen) < k:  # department limits or no discovery candidate left a slot open
        for c in sorted((*own, *by_popularity), key=lambda c: (-share[c], c)):
            if len(chosen) >= k:
                break
            if fits(c):
                take(c, "habit", share[c])
    return chosen


def _complements(share: dict[str, float], stats: StoreStats) -> dict[str, float]:
    """What is bought on the same days as this card's ten likeliest categories, store-wide."""
    anchors = sorted(share, key=lambda c: -share[c])[:10]
    weight = sum(share[a] for a in anchors) or 1.0
    complement: dict[str, float] = {}
    for a in anchors:
        for c, ppm in stats.top_pairs.get(a, ()):
            complement[c] = complement.get(c, 0.0) + share[a] * ppm / 1e6 / weight
    return complement


class _Lazy(dict):
    """A dict that computes (once) the value of a key it does not hold yet."""

    def __init__(self, compute: Callable[[str], object]) -> None:
        super().__init__()
        self.compute = compute

    def __missing__(self, key: str):
        value = self[key] = self.compute(key)
        return value
