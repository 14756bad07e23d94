"""Accuracy of the insights releases: true vs released figures, per KPI.

1. The Complete Journey (2,469 households, 2017), as the store would hold it: each basket
   becomes history rows (card, day, category, spend) and a visit, sensitive categories left
   out as the checkout leaves them out. The year is cut into 13 spans of 4 weeks; each span
   is released once at epsilon 1 (the default policy) and compared with the unbounded truth.
2. A synthetic chain of 500,000 cards (one 4-week span, 60 categories of Zipf-like
   popularity), built as per-card spans directly.
3. Coupon uplift by arm (epsilon 0.5 per campaign period of 4 weeks) and the retention of
   monthly cohorts (epsilon 0.25 per release), on both. The Complete Journey has no coupon
   arms of ours: its households are drawn into 80/10/10 arms by the keyed hash, and the
   engine's pick is stood in for by each household's 3 most bought categories of the 4
   weeks before (holdout: a ghost; random arm: 3 drawn categories); a hit is a purchase of
   the category on the visit. Its true uplift is therefore about 0 (no coupon was printed);
   the synthetic chain has a planted effect.

Relative error = |released - true| / true, over every (span, category) with a true value
above 0 for the category KPIs, over spans (or runs) for the totals. Truncation and clamping
bias are part of the error: the truth is the unbounded one.

    .venv/bin/python benchmarks/insights.py --json benchmarks/results/insights.json \
        --markdown docs/insights-accuracy.md
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import asdict, replace
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import arms, cohorts, insights, uplift  # noqa: E402
from anoncard.insights import CardSpan, SpanData  # noqa: E402
from anoncard.keyring import KeyRing, KeyVersion  # noqa: E402
from anoncard.policy import Policy  # noqa: E402
from anoncard.programme import ARMS, Campaign  # noqa: E402
from anoncard.store import SpendRow, VisitRow  # noqa: E402
from anoncard.uplift import CardPeriod  # noqa: E402
from benchmarks.common import write_json  # noqa: E402

KPIS = ("penetration (top 30)", "sales (top 30)", "buying rate (top 30)", "penetration", "sales", "buying rate",
        "active cards", "new cards", "lapsed cards", "visits", "spend",
        "purchase frequency", "average basket")  # fmt: skip


def _truth(cards: dict[int, CardSpan], categories: list[str]) -> dict[tuple[str, str | None], float]:
    pen, sales = defaultdict(int), defaultdict(int)
    active = new = lapsed = visits = spend = 0
    for c in cards.values():
        for cat, cents in c.categories.items():
            pen[cat] += 1
            sales[cat] += cents
        active += c.active
        new += c.new
        lapsed += c.lapsed
        visits += c.visits
        spend += max(c.spend, 0)
    out: dict[tuple[str, str | None], float] = {}
    for cat in categories:
        out[("penetration", cat)] = pen[cat]
        out[("sales", cat)] = sales[cat]
        out[("buying rate", cat)] = sales[cat] / pen[cat] if pen[cat] else 0
    out |= {("active cards", None): active, ("new cards", None): new, ("lapsed cards", None): lapsed,
            ("visits", None): visits, ("spend", None): spend}  # fmt: skip
    out[("purchase frequency", None)] = visits / active if active else 0
    out[("average basket", None)] = spend / visits if visits else 0
    return out


TOP = 30  # the categories most cards buy: the ones a category manager reads first


def _errors(release: insights.Release, truth: dict, into: dict[str, list[float]]) -> None:
    by_pen = sorted((v, c) for (k, c), v in truth.items() if k == "penetration")
    top = {c for _, c in by_pen[-TOP:]}
    for f in release.figures:
        true = truth.get((f.name, f.category))
        if true:
            into[f.name].append(abs(f.value - true) / true)
            if f.category in top:
                into[f"{f.name} (top {TOP})"].append(abs(f.value - true) / true)


def _summary(errors: dict[str, list[float]]) -> dict[str, dict]:
    out = {}
    for kpi in KPIS:
        values = sorted(errors.get(kpi, []))
        if values:
            p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
            out[kpi] = {"median": statistics.median(values), "p90": p90, "n": len(values)}
    return out


UPLIFT_KPIS = ("arm size", "purchase rate by arm", "spend per card by arm")
UPLIFT_ABSOLUTE = ("uplift of purchase rate (points)", "uplift of spend per card (EUR)")
COHORT_KPIS = ("cohort size", "retention", "retention (cohorts of 500+ cards)")
RING = KeyRing([KeyVersion(1, "primary", "2017-01-01", bytes(range(32)))], bytes(range(1, 33)), bytes(range(2, 34)))
DRAWS = 10  # noise draws per synthetic release, for the p90


def _token(card: int) -> bytes:
    return hashlib.sha256(f"card {card}".encode()).digest()  # a stand-in token: the arm draw needs 32 bytes


def _uplift_errors(rows: dict[int, CardPeriod], r, errors: dict[str, list[float]], cover: list[bool]) -> None:
    """Released vs true (unclamped) per-arm figures; the uplifts' absolute error and whether
    each interval holds the true uplift."""
    true = {}
    for metric, label, per in (("rate", "purchase rate", 100.0), ("spend", "spend per card", 1.0)):
        for arm in ARMS:
            xs = [(x.rate if metric == "rate" else x.spend) for x in rows.values()
                  if x.arm == arm and (x.offers if metric == "rate" else x.visited)]  # fmt: skip
            true[(label, arm)] = statistics.fmean(xs) / per if xs else 0.0
            true[(f"{label}: cards", arm)] = len(xs)
        for arm in ("targeted", "random"):
            true[(f"uplift of {label}", f"{arm} - holdout")] = true[(label, arm)] - true[(label, "holdout")]
    for f in r.figures:
        t = true.get((f.name, f.category))
        if t is None:
            continue
        if f.name.startswith("uplift"):
            unit = "points" if "rate" in f.name else "EUR"
            scale = 1.0 if unit == "points" else 100.0
            errors[f"{f.name} ({unit})"].append(abs(f.value - t) / scale)
            cover.append(f.low <= t <= f.high)
        elif f.name.endswith(": cards"):
            if f.name.startswith("spend") and t:
                errors["arm size"].append(abs(f.value - t) / t)
        elif t:
            errors[f"{f.name} by arm"].append(abs(f.value - t) / t)


def _cohort_errors(sizes: list[int], active: list[int], months: int, r, errors: dict[str, list[float]]) -> None:
    cells = cohorts.cells(months)
    start = cohorts.month_index(r.first)
    label = [cohorts.month_start(start + c).strftime("%Y-%m") for c in range(months)]
    true = {("cohort size", label[c]): sizes[c] for c in range(months)}
    for i, (c, k) in enumerate(cells):
        true[(f"retention +{k}", label[c])] = 100 * active[i] / sizes[c] if sizes[c] else 0.0  # percent
    big = {label[c] for c in range(months) if sizes[c] >= 500}
    for f in r.figures:
        t = true.get((f.name, f.category))
        if not t:
            continue
        err = abs(f.value - t) / t
        if f.name == "cohort size":
            errors["cohort size"].append(err)
        else:
            errors["retention"].append(err)
            if f.category in big:
                errors["retention (cohorts of 500+ cards)"].append(err)


def _summary_of(errors: dict[str, list[float]], kpis: tuple[str, ...]) -> dict[str, dict]:
    out = {}
    for kpi in kpis:
        values = sorted(errors.get(kpi, []))
        if values:
            p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
            out[kpi] = {"median": statistics.median(values), "p90": p90, "n": len(values)}
    return out


def cj_uplift(baskets, categories: list[str], start: date, rules) -> dict:
    """13 campaign periods of 4 weeks, each released once at the policy's uplift epsilon."""
    campaign = Campaign(first_day=start, weeks=4, targeted=80, random=10, holdout=10)
    keep = set(categories)
    bought: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)  # (household, day) -> category -> cents
    for b in baskets:
        day = b.at.date().isoformat()
        for c, cents in b.lines:
            if c in keep:
                got = bought[(b.household, day)]
                got[c] = got.get(c, 0) + cents
    by_day: dict[str, list[int]] = defaultdict(list)
    for household, day in bought:
        by_day[day].append(household)
    popular = [c for c, _ in sorted(((c, sum(1 for d in bought.values() if c in d)) for c in categories),
                                    key=lambda x: -x[1])[:3]]  # fmt: skip
    errors: dict[str, list[float]] = defaultdict(list)
    cover: list[bool] = []
    for n in range(13):
        first, last = arms.period_span(campaign, n)
        f, lo = first.isoformat(), last.isoformat()
        before = (first - timedelta(days=28)).isoformat()
        taste: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for (h, day), got in bought.items():
            if before <= day < f:
                for c in got:
                    taste[h][c] += 1
        top = {h: [c for c, _ in sorted(t.items(), key=lambda x: (-x[1], x[0]))[:3]] for h, t in taste.items()}
        rows: dict[int, list] = {}
        for (h, day), got in bought.items():
            if not f <= day <= lo:
                continue
            row = rows.setdefault(h, [arms.arm(RING, campaign, _token(h), n), 0, 0, 0])
            if row[0] == "random":
                offers = arms.random_categories(RING, _token(h), date.fromisoformat(day), categories, 3)
            else:
                offers = top.get(h) or popular
            row[1] += len(offers)
            row[2] += sum(1 for c in offers if c in got)
            row[3] += sum(got.values())
        cards = {h: CardPeriod(a, o, hit, spend, True) for h, (a, o, hit, spend) in rows.items()}
        if not cards:
            continue
        r = uplift.release_rows(cards, rules, period=n, first=first, last=last)
        _uplift_errors(cards, r, errors, cover)
    return {"periods": 13, "errors": _summary_of(errors, UPLIFT_KPIS + UPLIFT_ABSOLUTE),
            "interval coverage": sum(cover) / len(cover) if cover else None}  # fmt: skip


def cj_cohorts(visit_rows, first_visits, rules) -> dict:
    first, last = date(2017, 1, 1), date(2017, 12, 31)
    sizes, active = cohorts.counts(first, 12, first_visits, visit_rows)
    errors: dict[str, list[float]] = defaultdict(list)
    for _ in range(DRAWS):
        r = cohorts.release_counts(first, last, sizes, active, rules)
        _cohort_errors(sizes, active, 12, r, errors)
    return {"draws": DRAWS, "cohort sizes": sizes, "errors": _summary_of(errors, COHORT_KPIS)}


def _chain_rows(n_cards: int, seed: int) -> dict[int, CardPeriod]:
    """One 4-week period of a chain, with a planted effect: targeted cards buy a coupon's
    category 30 % of the time (holdout 25 %, random 12 %) and spend 3 % more."""
    rng = random.Random(seed)
    campaign = Campaign(first_day=date(2026, 11, 2), weeks=4, targeted=80, random=10, holdout=10)
    p = {"targeted": 0.30, "random": 0.12, "holdout": 0.25}
    lift = {"targeted": 1.03, "random": 1.01, "holdout": 1.0}
    rows = {}
    for card in range(n_cards):
        arm = arms.arm(RING, campaign, _token(card), 0)
        offers = 1 + int(rng.expovariate(1 / 4))
        hits = sum(1 for _ in range(offers) if rng.random() < p[arm])
        rows[card] = CardPeriod(arm, offers, hits, int(rng.lognormvariate(9.3, 0.8) * lift[arm]), True)
    return rows


def synthetic_uplift(rules, n_cards: int, seed: int) -> dict:
    rows = _chain_rows(n_cards, seed)
    errors: dict[str, list[float]] = defaultdict(list)
    cover: list[bool] = []
    for _ in range(DRAWS):
        r = uplift.release_rows(rows, rules, period=0, first=date(2026, 11, 2), last=date(2026, 11, 29))
        _uplift_errors(rows, r, errors, cover)
    return {"cards": n_cards, "draws": DRAWS, "bounds": asdict(r.bounds),
            "errors": _summary_of(errors, UPLIFT_KPIS + UPLIFT_ABSOLUTE),
            "interval coverage": sum(cover) / len(cover)}  # fmt: skip


def _chain_cohorts(n_cards: int, seed: int) -> tuple[list[int], list[int]]:
    """Cards first seen evenly over 12 months; active in month +k with 55 % x 0.95^(k-1)."""
    rng = random.Random(seed)
    months = 12
    sizes = [0] * months
    index = {cell: i for i, cell in enumerate(cohorts.cells(months))}
    active = [0] * len(index)
    for _ in range(n_cards):
        c = rng.randrange(months)
        sizes[c] += 1
        for k in range(1, months - c):
            if rng.random() < 0.55 * 0.95 ** (k - 1):
                active[index[(c, k)]] += 1
    return sizes, active


def synthetic_cohorts(rules, n_cards: int, seed: int) -> dict:
    months = 12
    sizes, active = _chain_cohorts(n_cards, seed)
    errors: dict[str, list[float]] = defaultdict(list)
    first, last = date(2026, 1, 1), date(2026, 12, 31)
    for _ in range(DRAWS):
        r = cohorts.release_counts(first, last, sizes, active, rules)
        _cohort_errors(sizes, active, months, r, errors)
    return {"cards": n_cards, "draws": DRAWS, "errors": _summary_of(errors, COHORT_KPIS)}


def complete_journey(rules) -> dict:
    from benchmarks.completejourney import is_sensitive, load

    baskets, departments = load()
    categories = sorted(c for c in departments if not is_sensitive(c))
    spend: list[SpendRow] = []
    visits: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    history: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for b in baskets:
        day = b.at.date().isoformat()
        kept = [(c, cents) for c, cents in b.lines if not is_sensitive(c)]
        for c, cents in kept:
            history[(b.household, day, c)][0] += cents
            history[(b.household, day, c)][1] += 1
        visits[(b.household, day)][0] += 1
        visits[(b.household, day)][1] += sum(cents for _, cents in kept)
    spend = [SpendRow(h, d, c, s, n) for (h, d, c), (s, n) in history.items()]
    visit_rows = [VisitRow(h, d, n, s) for (h, d), (n, s) in visits.items()]
    first_visits: dict[int, str] = {}
    for v in visit_rows:
        if v.card_id not in first_visits or v.day < first_visits[v.card_id]:
            first_visits[v.card_id] = v.day
    days = sorted({v.day for v in visit_rows})
    start = date.fromisoformat(days[0])
    start += timedelta(days=(7 - start.weekday()) % 7)  # the first Monday
    errors: dict[str, list[float]] = defaultdict(list)
    spans, ks, p95s = [], [], []
    for n in range(13):
        first = start + timedelta(weeks=4 * n)
        last = first + timedelta(days=27)
        f, lo = first.isoformat(), last.isoformat()
        prev = (first - timedelta(days=28)).isoformat()
        data = SpanData(
            first, last,
            [r for r in spend if f <= r.day <= lo],
            [v for v in visit_rows if f <= v.day <= lo],
            [v for v in visit_rows if prev <= v.day < f],
            first_visits, [],
        )  # fmt: skip
        if not data.visits:
            continue
        cards = insights.contributions(data, categories)
        truth = _truth(cards, categories)
        r = insights.release_cards(cards, categories, rules, first=first, last=last, period="4weeks", grouping="chain")
        _errors(r, truth, errors)
        counts = sorted(len(c.categories) for c in cards.values() if c.active)
        p95s.append(counts[int(0.95 * (len(counts) - 1))])
        ks.append(r.bounds.categories)
        spans.append({"first": f, "last": lo, "active": truth[("active cards", None)], "bounds": asdict(r.bounds)})
    return {
        "uplift": cj_uplift(baskets, categories, start, rules),
        "cohorts": cj_cohorts(visit_rows, first_visits, rules),
        "households": len({b.household for b in baskets}),
        "categories": len(categories),
        "spans": len(spans),
        "K chosen (per span)": ks,
        "true p95 of categories per card (per span)": p95s,
        "errors": _summary(errors),
    }


def synthetic(rules, n_cards: int, seed: int) -> dict:
    rng = random.Random(seed)
    categories = [f"category {i:02d}" for i in range(60)]
    weights = [1 / (i + 1) ** 0.8 for i in range(60)]
    first = date(2026, 11, 2)
    cards: dict[int, CardSpan] = {}
    for card in range(n_cards):
        k = min(1 + int(rng.expovariate(1 / 6)), 60)
        chosen = set(rng.choices(categories, weights, k=k))
        cats = {c: int(rng.lognormvariate(7.0, 0.9)) for c in chosen}
        n_visits = 1 + int(rng.expovariate(1 / 3))
        cards[card] = CardSpan(cats, n_visits, sum(cats.values()), rng.random() < 0.05, False, 0, 0)
    for card in range(n_cards, n_cards + n_cards // 10):  # lapsed: came before, not in this span
        cards[card] = CardSpan({}, 0, 0, False, True, 0, 0)
    truth = _truth(cards, categories)
    errors: dict[str, list[float]] = defaultdict(list)
    r = insights.release_cards(
        cards, categories, rules, first=first, last=first + timedelta(days=27), period="4weeks", grouping="chain"
    )
    _errors(r, truth, errors)
    counts = sorted(len(c.categories) for c in cards.values() if c.active)
    return {
        "cards": n_cards,
        "categories": len(categories),
        "K chosen": r.bounds.categories,
        "true p95 of categories per card": counts[int(0.95 * (len(counts) - 1))],
        "bounds": asdict(r.bounds),
        "errors": _summary(errors),
    }


def markdown(result: dict) -> str:
    cj, syn = result["complete_journey"], result["synthetic"]
    out = [
        "# Insights accuracy: true vs released figures",
        "",
        f"Made by `{result['command']}` ({result['seconds']:.0f} s). Every release is epsilon = "
        f"{result['epsilon']} per 4 weeks (pure DP, discrete Laplace from OpenDP, privacy unit one card; 10 % of it "
        "chooses the bounds by private quantiles). Relative error = |released - true| / true against the *unbounded* "
        "truth, so truncation (K) and clamping bias count as error.",
        "",
        f"- The Complete Journey: {cj['households']:,} households, {cj['categories']} non-sensitive categories, "
        f"{cj['spans']} spans of 4 weeks (one release each). K chosen per span: {cj['K chosen (per span)']}; the "
        f"true 95th percentile of categories per card: {cj['true p95 of categories per card (per span)']}.",
        f"- Synthetic chain: {syn['cards']:,} cards, {syn['categories']} categories, one span; K chosen "
        f"{syn['K chosen']} (true p95 {syn['true p95 of categories per card']}); bounds {syn['bounds']}.",
        "",
        "| KPI | Complete Journey median | p90 | n | 500k chain median | p90 | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for kpi in KPIS:
        a, b = cj["errors"].get(kpi), syn["errors"].get(kpi)

        def cell(x):
            return f"{100 * x['median']:.2f} % | {100 * x['p90']:.2f} % | {x['n']}" if x else "- | - | -"

        out.append(f"| {kpi} | {cell(a)} | {cell(b)} |")
    out += [
        "",
        "Rows marked (top 30) cover the 30 categories most cards bought in each span. The other category rows cover "
        "every (span, category) with a true value above 0, including categories a handful of "
        "cards buy, where the noise (scale K / epsilon-share) is larger than the figure: at a single store of 2,469 "
        "households most category figures are wide, and the report shows those intervals. The chain's figures are "
        "accurate because the noise does not grow with the number of cards.",
        "",
        *_markdown_uplift_cohorts(result),
    ]
    return "\n".join(out)


def _markdown_uplift_cohorts(result: dict) -> list[str]:
    cj, su, sc = result["complete_journey"], result["synthetic_uplift"], result["synthetic_cohorts"]
    rules = Policy.default().insights

    def cell(x, unit="%"):
        if not x:
            return "- | - | -"
        if unit == "%":
            return f"{100 * x['median']:.2f} % | {100 * x['p90']:.2f} % | {x['n']}"
        return f"{x['median']:.2f} {unit} | {x['p90']:.2f} {unit} | {x['n']}"

    out = [
        "## Coupon uplift by arm and cohort retention",
        "",
        f"Uplift: epsilon {rules.uplift_epsilon} per campaign period of 4 weeks (80/10/10 arms), "
        f"20 % of it for the spend clamp (four private medians); cohorts: epsilon {rules.cohorts_epsilon} per release "
        "of 12 months. Per-arm figures and cohort figures: relative error against the unclamped truth. The uplifts "
        "(arm minus holdout) are near 0 on the Complete Journey (no coupon of ours was printed), so their error is "
        "absolute: percentage points of purchase rate, euros of spend per card.",
        "",
        f"- The Complete Journey: {cj['uplift']['periods']} campaign periods, one release each; the engine's pick "
        "stood in for by a household's 3 most bought categories of the 4 weeks before. The uplift intervals held "
        f"the true uplift in {100 * cj['uplift']['interval coverage']:.0f} % of the releases. Cohorts: one "
        f"window of 2017 ({DRAWS} noise draws); cohort sizes {cj['cohorts']['cohort sizes']} (almost every household"
        " is first seen in January).",
        f"- Synthetic chain: {su['cards']:,} cards, one period ({DRAWS} noise draws), planted effect (purchase rate "
        "30 % targeted, 25 % holdout, 12 % random; spend +3 % targeted); spend clamp "
        f"{su['bounds']['spend'] / 100:,.2f} EUR. The uplift intervals held the true uplift in "
        f"{100 * su['interval coverage']:.0f} % of the releases. Cohorts: {sc['cards']:,} cards first seen evenly "
        "over 12 months.",
        "",
        "| KPI | Complete Journey median | p90 | n | 500k chain median | p90 | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for kpi in UPLIFT_KPIS:
        out.append(f"| {kpi} | {cell(cj['uplift']['errors'].get(kpi))} | {cell(su['errors'].get(kpi))} |")
    for kpi in UPLIFT_ABSOLUTE:
        unit = "pt" if "points" in kpi else "EUR"
        a, b = cj["uplift"]["errors"].get(kpi), su["errors"].get(kpi)
        out.append(f"| {kpi}, absolute | {cell(a, unit)} | {cell(b, unit)} |")
    for kpi in COHORT_KPIS:
        out.append(f"| {kpi} | {cell(cj['cohorts']['errors'].get(kpi))} | {cell(sc['errors'].get(kpi))} |")
    cu, sue = cj["uplift"]["errors"], su["errors"]
    rate, spend = "uplift of purchase rate (points)", "uplift of spend per card (EUR)"
    out += [
        "",
        f"At the Complete Journey's size an arm of 10 % is about 240 households: the uplift is off by a median "
        f"{cu[rate]['median']:.1f} points of purchase rate and {cu[spend]['median']:.0f} EUR of spend per card "
        f"(p90 {cu[rate]['p90']:.0f} points, {cu[spend]['p90']:.0f} EUR), so a single store learns little from one "
        f"period. The chain's arms of 50,000 cards and more get it to {sue[rate]['p90']:.2f} points and "
        f"{sue[spend]['p90']:.2f} EUR (p90). Spend per card by arm is off by about "
        f"{100 * sue['spend per card by arm']['median']:.0f} % at the chain: that is the clamp at four medians "
        "(truncation, alike in every arm, so the uplift keeps its sign and most of its size). A cohort of a few "
        "dozen cards gets a retention curve that is mostly noise (a card adds to up to 11 months of it); the "
        "large cohorts' curves are accurate.",
        "",
    ]
    return out


def chain_pages(rules, n_cards: int, seed: int, into: Path) -> None:
    """The uplift and cohort HTML reports of the synthetic chain (for the screenshots)."""
    from anoncard import files, report

    into.mkdir(parents=True, exist_ok=True)
    r = uplift.release_rows(_chain_rows(n_cards, seed), rules, period=0, first=date(2026, 11, 2),
                            last=date(2026, 11, 29))  # fmt: skip
    files.replace(into / "uplift-chain.html", report.html(r).encode(), field="pages")
    sizes, active = _chain_cohorts(n_cards, seed)
    c = cohorts.release_counts(date(2026, 1, 1), date(2026, 12, 31), sizes, active, rules)
    files.replace(into / "cohorts-chain.html", report.html(c).encode(), field="pages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--cards", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--pages", type=Path, help="Only write the chain's uplift and cohort HTML reports here.")
    args = parser.parse_args()
    rules = replace(Policy.default().insights, max_categories=128)
    if args.pages is not None:
        chain_pages(rules, args.cards, args.seed, args.pages)
        return
    started = time.perf_counter()
    result = {
        "command": "python benchmarks/insights.py " + " ".join(sys.argv[1:]),
        "epsilon": rules.epsilon_per_period,
        "complete_journey": complete_journey(rules),
        "synthetic": synthetic(rules, args.cards, args.seed),
        "synthetic_uplift": synthetic_uplift(rules, args.cards, args.seed),
        "synthetic_cohorts": synthetic_cohorts(rules, args.cards, args.seed),
    }
    result["seconds"] = time.perf_counter() - started
    write_json(args.json, result)
    text = markdown(result)
    if args.markdown is not None:
        args.markdown.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
