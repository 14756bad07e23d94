"""Retention of monthly cohorts: of the cards first seen in a month, how many come back.

Design overview. A release covers the last ``cohort_months`` (M) whole calendar months.
A card's cohort is the month of its first kept visit, if that month is in the window (a card
first seen before the window is in no cohort); it is *active* in a later month of the window
when it visited in it. Per cohort the release measures its size and, for every month +1,
+2, ... up to the window's end, how many of its cards were active. The cells form a fixed
triangle (cohort c has M - 1 - c later months), so the layout reveals nothing.

Sensitivity: a card is in one cohort, so adding or removing its whole history moves the
vector of sizes by 1 (L1) and the vector of active counts by at most M - 1 (one per later
month). Discrete Laplace noise (OpenDP) on both; the retention share is the ratio of two
released counts (post-processing), in percent, with an interval that joins their 97.5 % intervals.

The first kept visit is the first one the retention period left: in the window's oldest
months a cohort can hold cards whose earlier visits were purged.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import date, timedelta

from .errors import InsightsRefused
from .insights import Measurement, Release, _count, _laplace, _ratio
from .policy import InsightsRules
from .storage import VisitRow

SIZE_SHARE = 1 / 3  # of the epsilon: the cohorts' sizes; the rest goes to the active counts
NOT_RELEASED = {
    "per card": "the privacy unit is one card: no card's cohort or visits are ever released",
    "cohorts by category or store": "a cohort split further would be too thin for a useful interval",
}


@dataclass(frozen=True, slots=True)
class CohortBounds:
    """The layout that fixes the sensitivity: M months, so a card adds at most M - 1 actives."""

    months: int

    def sensitivities(self) -> dict[str, int]:
        return {"cohort sizes": 1, "active": max(self.months - 1, 1)}


def month_index(day: date) -> int:
    return day.year * 12 + day.month - 1


def month_start(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def window(months: int, ending: date | None, today: date) -> tuple[date, date]:
    """``(first, last)`` day of the ``months`` whole months ending with the last one before
    today, or with the month whose last day is ``ending``.

    Raises:
        InsightsRefused: ``ending`` is not a month's last day, or not before today.
    """
    if ending is None:
        ending = today.replace(day=1) - timedelta(days=1)
    if (ending + timedelta(days=1)).day != 1:
        raise InsightsRefused("field 'ending': must be the last day of a month (cohorts are months)", field="ending")
    if ending >= today:
        raise InsightsRefused(
            "field 'ending': must be before today (a month is released once it is over)", field="ending"
        )
    return month_start(month_index(ending) - months + 1), ending


def cells(months: int) -> list[tuple[int, int]]:
    """The fixed layout: (cohort, months after) for every cohort and later month of the window."""
    return [(c, k) for c in range(months) for k in range(1, months - c)]


def counts(first: date, months: int, first_visits: dict[int, str], visits: list[VisitRow]) -> tuple[list, list]:
    """``(sizes, active)``: per cohort its cards, per cell its cards active that month (pure)."""
    start = month_index(first)
    cohort: dict[int, int] = {}
    for card, day in first_visits.items():
        c = month_index(date.fromisoformat(day)) - start
        if 0 <= c < months:
            cohort[card] = c
    active: dict[int, set[int]] = defaultdict(set)
    for v in visits:
        if v.visits > 0 and v.card_id in cohort:
            k = month_index(date.fromisoformat(v.day)) - start - cohort[v.card_id]
            if 0 < k < months - cohort[v.card_id]:
                active[v.card_id].add(k)
    sizes = [0] * months
    for c in cohort.values():
        sizes[c] += 1
    index = {cell: i for i, cell in enumerate(cells(months))}
    act = [0] * len(index)
    for card, ks in active.items():
        for k in ks:
            act[index[(cohort[card], k)]] += 1
    return sizes, act


def release(
    first: date,
    last: date,
    first_visits: dict[int, str],
    visits: list[VisitRow],
    rules: InsightsRules,
    *,
    grouping: str = "chain",
) -> Release:
    """Release the retention curves of the window's cohorts, spending ``rules.cohorts_epsilon``."""
    months = month_index(last) - month_index(first) + 1
    sizes, active = counts(first, months, first_visits, visits)
    return release_counts(first, last, sizes, active, rules, grouping=grouping)


def release_counts(
    first: date, last: date, sizes: list[int], active: list[int], rules: InsightsRules, *, grouping: str = "chain"
) -> Release:
    """:func:`release` from the true counts (what :func:`counts` makes of the rows)."""
    budget = rules.budget("cohorts")
    if budget is None:
        raise ValueError("the policy declares no cohorts budget")
    epsilon = budget[0]
    months = month_index(last) - month_index(first) + 1
    if len(sizes) != months or len(active) != len(cells(months)):
        raise ValueError("the counts do not have the window's layout")
    bounds = CohortBounds(months)
    sens = bounds.sensitivities()
    measurements, noisy, scales = [], {}, {}
    for name, vector, share in (("cohort sizes", sizes, SIZE_SHARE), ("active", active, 1 - SIZE_SHARE)):
        scale = sens[name] / (epsilon * share)
        measure = _laplace(scale, max(len(vector), 2))
        padded = vector if len(vector) >= 2 else [*vector, 0]
        noisy[name] = list(measure(padded))[: len(vector)]
        scales[name] = scale
        measurements.append(Measurement(name, "discrete Laplace", sens[name], scale, float(measure.map(sens[name]))))
    figures = []
    start = month_index(first)
    for c in range(months):
        label = month_start(start + c).strftime("%Y-%m")
        figures.append(_count("cohort size", label, noisy["cohort sizes"][c], scales["cohort sizes"], "cards"))
    for i, (c, k) in enumerate(cells(months)):
        label = month_start(start + c).strftime("%Y-%m")
        size = (noisy["cohort sizes"][c], scales["cohort sizes"])
        share = _ratio(f"retention +{k}", label, (noisy["active"][i], scales["active"]), size, "percent")
        figures.append(replace(share, value=100 * share.value, low=100 * share.low, high=100 * share.high))
    notes = [
        f"cohort: the month of a card's first kept visit, within the {months} months; active: a visit in that month",
        f"a card adds 1 to one cohort's size and at most {months - 1} to the active counts: small cohorts get wide "
        "intervals",
    ]
    return Release(
        period=f"{months} months",
        first=first,
        last=last,
        grouping=grouping,
        bounds=bounds,
        figures=figures,
        measurements=measurements,
        not_released=dict(NOT_RELEASED),
        report="cohorts",
        notes=notes,
    )
