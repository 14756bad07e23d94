"""Which categories to offer a card at the entrance, from its token's history only.

Design overview. The engine sees one card's category history (days, baskets) and
two store-wide aggregates that hold no card at all: each category's share of
baskets and how often categories are bought together. It never sees a product, a
store, a clock time or anything about the person.

* **Habit** - the chance that the card's next basket holds a category, estimated as
  the time-decayed share of the card's visits that held it, shrunk towards the
  store-wide share (so a card with two visits is not judged on two visits).
* **Discovery** - one slot for a category the card has not bought for
  ``discovery_weeks``: its own long-term habit (a seasonal or occasional buy), plus
  complements - what cards that buy this card's habits also buy.
* **Diversity** - never more than two offers from one department; never a category
  the card already holds a coupon for, or one resting after being ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

HALF_LIFE_DAYS = 45.0
PRIOR_VISITS = 1.5
COMPLEMENT_WEIGHT = 0.5
MAX_PER_DEPARTMENT = 2


@dataclass(frozen=True, slots=True)
class Suggestion:
    category: str
    reason: str  # "habit" or "discovery"
    score: float


def habit_scores(
    history: Iterable[tuple[str, str, int]],
    visits: Iterable[tuple[str, int]],
    today: date,
    shares: dict[str, int],
    *,
    half_life: float = HALF_LIFE_DAYS,
    prior: float = PRIOR_VISITS,
) -> tuple[dict[str, float], dict[str, date]]:
    """``(score by category, last day bought)``: decayed visit share, shrunk to the store share."""
    decay: dict[str, float] = {}

    def weight(day: str) -> float:
        w = decay.get(day)
        if w is None:
            age = (today - date.fromisoformat(day)).days
            w = decay[day] = 0.5 ** (max(age, 0) / half_life)
        return w

    total = sum(n * weight(d) for d, n in visits)
    bought: dict[str, float] = {}
    last: dict[str, date] = {}
    for day, category, baskets in history:
        if baskets <= 0:
            continue
        bought[category] = bought.get(category, 0.0) + baskets * weight(day)
        d = date.fromisoformat(day)
        if category not in last or d > last[category]:
            last[category] = d
    denominator = total + prior
    scores = {c: prior * ppm / 1e6 / denominator for c, ppm in shares.items()}
    for category, w in bought.items():
        scores[category] = (min(w, total) + prior * shares.get(category, 0) / 1e6) / denominator
    return scores, last


def suggest(
    history: Iterable[tuple[str, str, int]],
    visits: Iterable[tuple[str, int]],
    *,
    today: date,
    shares: dict[str, int],
    pairs: dict[str, dict[str, int]],
    k: int = 3,
    exclude: Iterable[str] = (),
    department: Callable[[str], str] = lambda c: c,
    discovery_weeks: int = 8,
    allowed: Callable[[str], bool] = lambda c: True,
) -> list[Suggestion]:
    """Up to ``k`` categories for this card: ``k - 1`` habits and one discovery."""
    if k <= 0:
        return []
    scores, last = habit_scores(history, visits, today, shares)
    excluded = set(exclude)
    ranked = sorted((c for c in scores if c not in excluded and allowed(c)), key=lambda c: (-scores[c], c))
    per_department: dict[str, int] = {}
    chosen: list[Suggestion] = []

    def take(category: str, reason: str, score: float) -> bool:
        dep = department(category)
        if per_department.get(dep, 0) >= MAX_PER_DEPARTMENT:
            return False
        per_department[dep] = per_department.get(dep, 0) + 1
        chosen.append(Suggestion(category, reason, score))
        return True

    habits = k - 1 if k > 1 else k
    for category in ranked:
        if len(chosen) >= habits:
            break
        take(category, "habit", scores[category])
    if k > 1:
        horizon = discovery_weeks * 7
        taken = {s.category for s in chosen}
        anchors = ranked[:10]
        weight = sum(scores[a] for a in anchors) or 1.0

        def complement(c: str) -> float:
            return sum(scores[a] * pairs.get(a, {}).get(c, 0) / 1e6 for a in anchors) / weight

        fresh = [c for c in ranked if c not in taken and (c not in last or (today - last[c]).days > horizon)]
        fresh.sort(key=lambda c: -(scores[c] + COMPLEMENT_WEIGHT * complement(c)))
        for category in fresh:
            if take(category, "discovery", scores[category] + COMPLEMENT_WEIGHT * complement(category)):
                break
    for category in ranked:  # fill what department limits or a missing discovery left open
        if len(chosen) >= k:
            break
        if category not in {s.category for s in chosen}:
            take(category, "habit", scores[category])
    return chosen[:k]
