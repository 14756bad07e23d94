"""Insights without profiles: differentially private figures of a span of whole weeks.

The privacy unit is one card: every figure is computed from bounded per-card
contributions, so adding or removing one card's whole history moves each figure by at
most its stated sensitivity, and OpenDP's discrete Laplace mechanism adds noise scaled to
it. The bounds are chosen from the data itself, privately: a share of the release's
epsilon goes to OpenDP's private quantile (the 99th percentile of categories per card,
of spend per card and category, of visits and of spend per card), and the chosen bounds
are printed with the figures.

- K: a card counts in at most K categories per span (those it spent most on).
- C: a card's spend in one category counts up to C cents; S: its spend in the span up to
  S cents; V: its visits up to V; R: its printed and used coupons up to R each.

Pure composition: the epsilon of a release is the sum of its measurements' epsilons, as
OpenDP's ``map`` computes each one. Every release is recorded in the hash-chained event
log (mechanism, sensitivities, scales, epsilons); :func:`budget_problems` checks the
recorded releases against the policy's budget and replays each measurement's epsilon.

What is never released: any figure about one card, category pairs (a card touches K²
pairs), categories in a one-week span (one store's week by category is too thin for a
useful interval), and any grouping finer than the chain (the tills send no store, cluster
or region field).

The per-card computation (:func:`contributions`, :func:`totals`) is pure Python; OpenDP
is imported only when noise is drawn, so ``import anoncard`` never loads it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from .errors import InsightsRefused
from .policy import PERIODS, InsightsRules
from .storage import CouponUse, SpendRow, VisitRow

ALPHA = 0.05  # intervals are 95 %
QUANTILE = 0.99  # bounds at the 99th percentile of what cards give (less truncation bias than the 95th)
MECHANISM = "discrete Laplace (OpenDP make_laplace), pure epsilon-DP; privacy unit: one card"
# Shares of the figures' epsilon (after calibration): the category vectors carry most of it.
WEIGHTS = {
    "penetration": 3.0, "sales": 3.0, "active": 1.0, "new": 1.0, "lapsed": 1.0, "visits": 1.0, "spend": 1.0,
    "coupons": 1.0,
}  # fmt: skip
NOT_RELEASED = {
    "per card": "the privacy unit is one card: no figure about a single card is ever released",
    "category pairs": "a card touches up to K*K pairs, so their noise would swamp them; not released",
    "store, cluster or region": "the tills send no store, cluster or region field: the chain is the only grouping",
}
RELEASE_EVENT = "insights_release"


@dataclass(frozen=True, slots=True)
class Bounds:
    """Per-card contribution bounds of one release (chosen privately from the data)."""

    categories: int  # K
    category_spend: int  # C, cents
    visits: int  # V
    spend: int  # S, cents
    coupons: int  # R

    def sensitivities(self) -> dict[str, int]:
        """L1 sensitivity of each measured vector: the most one card's whole history can move it."""
        return {
            "penetration": self.categories,
            "sales": self.categories * self.category_spend,
            "active": 1,
            "new": 1,
            "lapsed": 1,
            "visits": self.visits,
            "spend": self.spend,
            "coupons": 2 * self.coupons,  # printed and used, each up to R
        }


@dataclass(frozen=True, slots=True)
class CardSpan:
    """What one card did in the span (before bounding)."""

    categories: dict[str, int]
    visits: int
    spend: int
    new: bool
    lapsed: bool
    coupons_printed: int
    coupons_used: int

    @property
    def active(self) -> bool:
        return self.visits > 0 or bool(self.categories)


@dataclass(frozen=True, slots=True)
class SpanData:
    """The per-card rows of one span, read in one transaction."""

    first: date
    last: date
    spend: list[SpendRow]
    visits: list[VisitRow]
    previous_visits: list[VisitRow]  # the span of the same length before: who lapsed
    first_visits: dict[int, str]
    coupons: list[CouponUse]


@dataclass(frozen=True, slots=True)
class Totals:
    """The contribution-bounded aggregates a release adds noise to (never released as such)."""

    penetration: dict[str, int]
    sales: dict[str, int]
    active: int
    new: int
    lapsed: int
    visits: int
    spend: int
    coupons: tuple[int, int]  # printed, used

    def vectors(self, categories: list[str]) -> dict[str, list[int]]:
        return {
            "penetration": [self.penetration[c] for c in categories],
            "sales": [self.sales[c] for c in categories],
            "active": [self.active],
            "new": [self.new],
            "lapsed": [self.lapsed],
            "visits": [self.visits],
            "spend": [self.spend],
            "coupons": list(self.coupons),
        }


@dataclass(frozen=True, slots=True)
class Figure:
    """One released figure: the noisy value, its noise scale and its 95 % interval."""

    name: str
    category: str | None
    value: float
    low: float
    high: float
    scale: float | None  # Laplace scale; None for a ratio of two released figures
    unit: str


@dataclass(frozen=True, slots=True)
class Measurement:
    """One noisy measurement as the event log records it."""

    name: str
    mechanism: str
    sensitivity: int
    scale: float
    epsilon: float
    alpha: float | None = None  # the quantile, for a calibration


@dataclass
class Release:
    """A release: its span, bounds, figures, what was refused, and what it spent."""

    period: str
    first: date
    last: date
    grouping: str
    bounds: Bounds | Any  # Bounds, or the uplift's or the cohorts' own
    figures: list[Figure]
    measurements: list[Measurement]
    not_released: dict[str, str] = field(default_factory=dict)
    report: str = "figures"  # figures | uplift | cohorts: the budget each spends from
    notes: list[str] = field(default_factory=list)  # what a reader must know to read the figures

    @property
    def epsilon(self) -> float:
        """What the release spent: the sum over its measurements (pure composition)."""
        return sum(m.epsilon for m in self.measurements)

    def to_dict(self) -> dict:
        """What the event log records, with the figures, what was refused and the notes."""
        return {
            **self.event_detail(),
            "epsilon": round(self.epsilon, 6),
            "mechanism": MECHANISM,
            "interval": "95 %",
            "figures": [_finite(asdict(f)) for f in self.figures],
            "not_released": self.not_released,
            "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["figure", "category", "value", "low", "high", "noise_scale", "unit"])
        for f in self.figures:
            scale = "" if f.scale is None else f"{f.scale:.6g}"
            high = "" if math.isinf(f.high) else f"{f.high:.6g}"
            writer.writerow(
                [f.name, f.category or "", f"{f.value:.6g}", f"{f.low:.6g}", high, scale, f.unit]
            )
        return out.getvalue()

    def event_detail(self) -> dict:
        """What the event log records: span, bounds and every measurement - no figure."""
        return {
            "report": self.report,
            "period": self.period,
            "first_day": self.first.isoformat(),
            "last_day": self.last.isoformat(),
            "grouping": self.grouping,
            "epsilon": self.epsilon,
            "bounds": asdict(self.bounds),
            "measurements": [asdict(m) for m in self.measurements],
        }


def _finite(figure: dict) -> dict:
    """JSON has no infinity: an interval unbounded above (a denominator that may be 0) ends in null."""
    return {k: None if isinstance(v, float) and math.isinf(v) else v for k, v in figure.items()}


# -- spans ---------------------------------------------------------------------------


def span(period: str, ending: date | None, today: date) -> tuple[date, date]:
    """``(first, last)`` day of a span of whole weeks ending on a Sunday before today.

    Raises:
        InsightsRefused: ``ending`` is not a Sunday, or not before today (a span still
            running would be released again with more data, spending twice).
    """
    days = PERIODS[period]
    if ending is None:
        ending = today - timedelta(days=today.isoweekday())  # the last Sunday before today
    if ending.isoweekday() != 7:
        raise InsightsRefused("field 'ending': must be a Sunday (spans are whole weeks)", field="ending")
    if ending >= today:
        raise InsightsRefused(
            "field 'ending': must be before today (a span is released once it is over)", field="ending"
        )
    return ending - timedelta(days=days - 1), ending


# -- per-card contributions (pure) ---------------------------------------------------


def contributions(data: SpanData, categories: Iterable[str]) -> dict[int, CardSpan]:
    """Each card's span, from its rows; categories outside ``categories`` are dropped."""
    keep = set(categories)
    spent: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in data.spend:
        if r.category in keep:
            spent[r.card_id][r.category] += r.spend_cents
    visits: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for v in data.visits:
        visits[v.card_id][0] += v.visits
        visits[v.card_id][1] += v.spend_cents
    before = {v.card_id for v in data.previous_visits if v.visits > 0}
    coupons: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for c in data.coupons:
        coupons[c.card_id][0] += 1
        coupons[c.card_id][1] += int(c.redeemed)
    first, last = data.first.isoformat(), data.last.isoformat()
    cards = set(spent) | set(visits) | before | set(coupons)
    out = {}
    for card in cards:
        cats = {c: s for c, s in spent.get(card, {}).items() if s > 0}
        n_visits, spend = visits.get(card, (0, 0))
        seen = data.first_visits.get(card)
        printed, used = coupons.get(card, (0, 0))
        active = n_visits > 0 or bool(cats)
        out[card] = CardSpan(
            categories=cats,
            visits=n_visits,
            spend=spend,
            new=active and seen is not None and first <= seen <= last,
            lapsed=card in before and not active,
            coupons_printed=printed,
            coupons_used=used,
        )
    return out


def top_categories(card: CardSpan, k: int) -> dict[str, int]:
    """The card's K categories with the most spend (ties by name): the rest do not count."""
    ranked = sorted(card.categories.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:k])


def totals(cards: Mapping[int, CardSpan], categories: list[str], bounds: Bounds) -> Totals:
    """The bounded aggregates: each card's part is clamped on its own, so one card moves each
    vector by at most :meth:`Bounds.sensitivities` (L1)."""
    penetration = dict.fromkeys(categories, 0)
    sales = dict.fromkeys(categories, 0)
    active = new = lapsed = visits = spend = printed = used = 0
    for card in cards.values():
        for category, cents in top_categories(card, bounds.categories).items():
            penetration[category] += 1
            sales[category] += min(max(cents, 0), bounds.category_spend)
        active += card.active
        new += card.new
        lapsed += card.lapsed
        visits += min(max(card.visits, 0), bounds.visits)
        spend += min(max(card.spend, 0), bounds.spend)
        printed += min(card.coupons_printed, bounds.coupons)
        used += min(card.coupons_used, bounds.coupons)
    return Totals(penetration, sales, active, new, lapsed, visits, spend, (printed, used))


# -- noise (OpenDP) ------------------------------------------------------------------


def _laplace(scale: float, size: int):
    import opendp.prelude as dp

    dp.enable_features("contrib")
    # 64-bit: a chain's sales in cents pass 2**31 in a week
    if size == 1:
        return dp.m.make_laplace(dp.atom_domain(T="i64"), dp.absolute_distance(T="i64"), scale=scale)
    return dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i64"), size=size), dp.l1_distance(T="i64"), scale=scale
    )


def _quantile(candidates: list[int], alpha: float, scale: float):
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp.m.make_private_quantile(
        dp.vector_domain(dp.atom_domain(T=int)), dp.symmetric_distance(), dp.max_divergence(), candidates, alpha, scale
    )


def replay_epsilon(m: Mapping) -> float:
    """The epsilon OpenDP computes for a recorded measurement (its mechanism, scale and
    sensitivity), for the audit to compare with what the log says was spent."""
    if m["mechanism"] == "private quantile":
        return float(_quantile([0, 1], float(m["alpha"]), float(m["scale"])).map(int(m["sensitivity"])))
    return float(_laplace(float(m["scale"]), 2).map(int(m["sensitivity"])))


def _geometric(lo: int, hi: int, steps: int = 48) -> list[int]:
    ratio = (hi / lo) ** (1 / (steps - 1))
    return sorted({round(lo * ratio**i) for i in range(steps)})


def calibrate(cards: Mapping[int, CardSpan], rules: InsightsRules, epsilon: float, days: int) -> tuple[Bounds, list]:
    """Choose K, C, V and S privately: each the 99th percentile of what cards contribute, by
    OpenDP's private quantile over a fixed list of candidates, spending ``epsilon`` in all."""
    each = epsilon / 4
    weeks = days // 7
    chosen, measurements = {}, []
    values = {
        "categories": ([len(c.categories) for c in cards.values()], list(range(1, rules.max_categories + 1)), 1),
        "visits": ([c.visits for c in cards.values()], list(range(1, 14 * weeks + 1)), 1),
        "spend": ([c.spend for c in cards.values()], _geometric(100, 200_000 * weeks), 1),
    }
    for name in ("categories", "visits", "spend"):
        data, candidates, d_in = values[name]
        chosen[name], m = _choose(name, data, candidates, d_in, each)
        measurements.append(m)
    k = chosen["categories"]
    per_category = [s for c in cards.values() for s in top_categories(c, k).values()]
    chosen["category_spend"], m = _choose("category_spend", per_category, _geometric(100, 100_000 * weeks), k, each)
    measurements.append(m)
    bounds = Bounds(
        categories=k,
        category_spend=chosen["category_spend"],
        visits=chosen["visits"],
        spend=chosen["spend"],
        coupons=rules.max_coupons,
    )
    return bounds, measurements


def _choose(
    name: str, data: list[int], candidates: list[int], d_in: int, epsilon: float, alpha: float = QUANTILE
) -> tuple[int, Measurement]:
    # the scale that makes this quantile cost ``epsilon`` when one card adds ``d_in`` values
    scale = 2 * max(alpha, 1 - alpha) * d_in / epsilon
    measure = _quantile(candidates, alpha, scale)
    spent = float(measure.map(d_in))
    if spent > epsilon * (1 + 1e-9):
        raise AssertionError(f"calibration of {name} would spend {spent} > {epsilon}")
    clipped = [min(max(v, candidates[0]), candidates[-1]) for v in data] or [candidates[0]]
    return int(measure(clipped)), Measurement(f"bound {name}", "private quantile", d_in, scale, spent, alpha)


def release(data: SpanData, categories: list[str], rules: InsightsRules, *, period: str, grouping: str) -> Release:
    """Release a span's figures, spending ``rules.epsilon_per_period``.

    ``categories`` is the fixed, public list of categories (the programme's, not the data's):
    every one gets a figure, bought or not, so the list itself reveals nothing.
    """
    cards = contributions(data, categories)
    return release_cards(cards, categories, rules, first=data.first, last=data.last, period=period, grouping=grouping)


def release_cards(
    cards: Mapping[int, CardSpan],
    categories: list[str],
    rules: InsightsRules,
    *,
    first: date,
    last: date,
    period: str,
    grouping: str,
) -> Release:
    """:func:`release` from each card's span (what :func:`contributions` makes of the rows)."""
    days = (last - first).days + 1
    by_category = days >= rules.category_min_days
    epsilon = rules.epsilon_per_period
    bounds, measurements = calibrate(cards, rules, epsilon * rules.calibration_share, days)
    true = totals(cards, categories, bounds)
    vectors = true.vectors(categories)
    weights = {k: w for k, w in WEIGHTS.items() if by_category or k not in ("penetration", "sales")}
    budget = epsilon * (1 - rules.calibration_share)
    sensitivity = bounds.sensitivities()
    noisy: dict[str, list[int]] = {}
    scales: dict[str, float] = {}
    for name, weight in weights.items():
        share = budget * weight / sum(weights.values())
        scale = sensitivity[name] / share
        measure = _laplace(scale, len(vectors[name]))
        spent = float(measure.map(sensitivity[name]))
        noisy[name] = list(measure(vectors[name])) if len(vectors[name]) > 1 else [measure(vectors[name][0])]
        scales[name] = scale
        measurements.append(Measurement(name, "discrete Laplace", sensitivity[name], scale, spent))
    figures = _figures(noisy, scales, categories if by_category else [])
    not_released = dict(NOT_RELEASED)
    if not by_category:
        not_released["categories in this span"] = (
            f"figures by category need a span of {rules.category_min_days} days or more: one store's week by "
            "category is too thin for a useful interval"
        )
    return Release(
        period=period,
        first=first,
        last=last,
        grouping=grouping,
        bounds=bounds,
        figures=figures,
        measurements=measurements,
        not_released=not_released,
    )


def half_width(scale: float, alpha: float = ALPHA) -> float:
    """Half the width of the interval holding Laplace noise of ``scale`` with probability 1 - alpha."""
    return scale * math.log(1 / alpha)


def _count(name: str, category: str | None, value: int, scale: float, unit: str) -> Figure:
    h = half_width(scale)
    # a count is never negative: the value and its interval are clipped at 0 (post-processing)
    return Figure(name, category, float(max(value, 0)), max(value - h, 0.0), max(value + h, 0.0), scale, unit)


def _ratio(name: str, category: str | None, num: tuple[int, float], den: tuple[int, float], unit: str) -> Figure:
    """A ratio of two released figures (post-processing, no budget). Its interval joins the
    two figures' 97.5 % intervals, so it holds with 95 % at least (union bound)."""
    (n, ns), (d, ds) = num, den
    hn, hd = half_width(ns, ALPHA / 2), half_width(ds, ALPHA / 2)
    value = max(n, 0) / d if d > 0 else 0.0
    low = max(n - hn, 0) / (d + hd) if d + hd > 0 else 0.0
    high = (n + hn) / (d - hd) if d - hd > 0 else math.inf
    return Figure(name, category, value, min(low, value), max(high, value), None, unit)


def _figures(noisy: dict[str, list[int]], scales: dict[str, float], categories: list[str]) -> list[Figure]:
    out = []
    for i, category in enumerate(categories):
        pen, sales = noisy["penetration"][i], noisy["sales"][i]
        out.append(_count("penetration", category, pen, scales["penetration"], "cards"))
        out.append(_count("sales", category, sales, scales["sales"], "cents"))
        out.append(
            _ratio("buying rate", category, (sales, scales["sales"]), (pen, scales["penetration"]), "cents per buyer")
        )
    for name in ("active", "new", "lapsed"):
        out.append(_count(f"{name} cards", None, noisy[name][0], scales[name], "cards"))
    visits, spend, active = noisy["visits"][0], noisy["spend"][0], noisy["active"][0]
    out.append(_count("visits", None, visits, scales["visits"], "visits"))
    out.append(_count("spend", None, spend, scales["spend"], "cents"))
    out.append(
        _ratio("purchase frequency", None, (visits, scales["visits"]), (active, scales["active"]), "visits per card")
    )
    out.append(_ratio("average basket", None, (spend, scales["spend"]), (visits, scales["visits"]), "cents per visit"))
    printed, used = noisy["coupons"]
    out.append(_count("coupons printed", None, printed, scales["coupons"], "coupons"))
    out.append(_count("coupons redeemed", None, used, scales["coupons"], "coupons"))
    return out


# -- the budget ----------------------------------------------------------------------


def budget_problems(
    releases: list[tuple[int, dict]], rules: InsightsRules | None, extra: dict | None = None
) -> list[str]:
    """What breaks the budget among the recorded releases (and ``extra``, one about to be made).

    Each kind of release (``report``: figures, uplift, cohorts) has its own budget in the one
    ledger (:meth:`InsightsRules.budget`): each day a release covers may be covered by releases
    of its kind spending at most the kind's cap per day in all (for figures
    ``epsilon_per_period``); the releases of a kind of spans ending in one calendar year may
    spend at most its yearly cap.
    """
    items = [(f"release {event_id}", d) for event_id, d in releases]
    if extra is not None:
        items.append(("this release", extra))
    if not items:
        return []
    if rules is None:
        return ["the log records insights releases but the policy declares no [insights] budget"]
    problems = []
    slack = 1e-9
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for _, d in items:
        by_kind[d.get("report", "figures")].append(d)
    for kind in sorted(by_kind, key=lambda k: (k != "figures", k)):
        budget = rules.budget(kind)
        if budget is None:
            problems.append(f"the log records {kind} releases but the policy declares no budget for them")
            continue
        _, per_day_cap, per_year_cap = budget
        per_day: dict[date, float] = defaultdict(float)
        per_year: dict[int, float] = defaultdict(float)
        for d in by_kind[kind]:
            first, last = date.fromisoformat(d["first_day"]), date.fromisoformat(d["last_day"])
            for i in range((last - first).days + 1):
                per_day[first + timedelta(days=i)] += float(d["epsilon"])
            per_year[last.year] += float(d["epsilon"])
        over_days = sorted(day for day, e in per_day.items() if e > per_day_cap + slack)
        what = "releases" if kind == "figures" else f"{kind} releases"
        if over_days:
            problems.append(
                f"{len(over_days)} days (first {over_days[0]}) are covered by {what} spending more than "
                f"epsilon {per_day_cap} per period"
            )
        for year, e in sorted(per_year.items()):
            if e > per_year_cap + slack:
                problems.append(f"{what} of {year} spend epsilon {e:.4g}, more than {per_year_cap} a year")
    return problems


def replay_problems(releases: list[tuple[int, dict]]) -> list[str]:
    """Replay every recorded measurement with OpenDP: its epsilon must be what the log says,
    and the release's epsilon the sum of its measurements' (pure composition)."""
    problems = []
    for event_id, d in releases:
        total = 0.0
        for m in d["measurements"]:
            eps = replay_epsilon(m)
            total += eps
            if not math.isclose(eps, float(m["epsilon"]), rel_tol=1e-9):
                problems.append(
                    f"release {event_id}: {m['name']} records epsilon {m['epsilon']}, its noise gives {eps}"
                )
        if not math.isclose(total, float(d["epsilon"]), rel_tol=1e-9):
            problems.append(f"release {event_id}: records epsilon {d['epsilon']}, its measurements sum to {total}")
    return problems
