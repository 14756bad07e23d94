"""The insights report a category manager opens: one HTML file, charts as inline SVG.

matplotlib draws each chart to SVG text embedded in the page, so the file opens offline
(no script, no CDN, no font download) and prints as it looks. Every bar carries its 95 %
interval; the page says what was not released and why, and how wide the intervals are
for a store this size. Needs the ``insights`` extra (matplotlib).
"""

from __future__ import annotations

import html as _html
import io
import math
import re

from .insights import Figure, Release

TOP = 20  # categories per chart: the largest by released penetration


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)  # RDF about the file: nothing a reader needs
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: inline in HTML


def _bars(figures: list[Figure], title: str, unit: str, scale: float = 1.0) -> str:
    from matplotlib.figure import Figure as Canvas

    figures = figures[::-1]  # largest on top
    names = [f.category or f.name for f in figures]
    values = [f.value / scale for f in figures]
    low = [max(f.value - f.low, 0) / scale for f in figures]
    high = [(f.high - f.value) / scale if not math.isinf(f.high) else 0 for f in figures]
    fig = Canvas(figsize=(7, 0.32 * len(figures) + 1.2))
    ax = fig.subplots()
    ax.barh(names, values, color="#4c72b0", xerr=[low, high], ecolor="#333333", capsize=2)
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_xlabel(f"{unit}; lines: 95 % interval")
    ax.set_xlim(left=0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    return _svg(fig)


def _row(f: Figure) -> str:
    high = "unbounded" if math.isinf(f.high) else f"{f.high:,.1f}"
    scale = "" if f.scale is None else f"{f.scale:,.1f}"
    return (
        f"<tr><td>{_html.escape(f.name)}</td><td>{f.value:,.1f}</td><td>{f.low:,.1f} – {high}</td>"
        f"<td>{scale}</td><td>{_html.escape(f.unit)}</td></tr>"
    )


_STYLE = """body { font-family: sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: .25em .6em; }
td:nth-child(n+2) { text-align: right; } .note { background: #fff6d5; padding: .6em; }
svg { max-width: 100%; height: auto; display: block; margin: 1em 0; }"""
ARM_COLOURS = {"targeted": "#4c72b0", "random": "#dd8452", "holdout": "#8c8c8c"}


def _page(release: Release, title: str, body: str) -> str:
    refused = "".join(
        f"<li><b>{_html.escape(what)}</b>: {_html.escape(why)}</li>" for what, why in release.not_released.items()
    )
    notes = "".join(f"<li>{_html.escape(n)}</li>" for n in release.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>anoncard {_html.escape(title)}</title>
<style>
{_STYLE}
</style></head><body>
<h1>{_html.escape(title)}</h1>
<p>Every figure is differentially private: one card's whole history changes it by a bounded amount, and noise
(discrete Laplace, OpenDP) hides that amount. Privacy budget spent: epsilon {release.epsilon:.3g}
(from the {_html.escape(release.report)} budget).</p>
{body}
{f"<h2>Reading the figures</h2><ul>{notes}</ul>" if notes else ""}
<h2>Not released</h2><ul>{refused}</ul>
</body></html>
"""


def _table(figures: list[Figure], group: str) -> str:
    rows = "".join(
        _row(f).replace("<tr><td>", f"<tr><td>{_html.escape(f.category or '')}</td><td>", 1) for f in figures
    )
    return (
        f"<table><tr><th>{group}</th><th>figure</th><th>value</th><th>95 % interval</th><th>noise scale</th>"
        f"<th>unit</th></tr>{rows}</table>"
    )


def _arm_chart(figures: list[Figure], title: str, unit: str, scale: float) -> str:
    """Bars with their 95 % intervals, one per arm or per difference; a zero line when any is negative."""
    from matplotlib.figure import Figure as Canvas

    figures = figures[::-1]
    names = [f.category or f.name for f in figures]
    values = [f.value / scale for f in figures]
    low = [(f.value - f.low) / scale for f in figures]
    high = [(f.high - f.value) / scale for f in figures]
    colours = [ARM_COLOURS.get((f.category or "").split(" ")[0], "#4c72b0") for f in figures]
    fig = Canvas(figsize=(7, 0.45 * len(figures) + 1.3))
    ax = fig.subplots()
    ax.barh(names, values, color=colours, xerr=[low, high], ecolor="#333333", capsize=3)
    if min(f.low for f in figures) < 0:
        ax.axvline(0, color="#333333", linewidth=0.8)
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_xlabel(f"{unit}; lines: 95 % interval")
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=9)
    return _svg(fig)


def _uplift_html(release: Release) -> str:
    visited = [f for f in release.figures if f.name == "spend per card: cards"]
    charts = _arm_chart(visited, "Cards that visited, by arm (intent to treat)", "cards", 1.0) if visited else ""
    for label, unit, scale in (("purchase rate", "percent", 1.0), ("spend per card", "euros", 100.0)):
        arms = [f for f in release.figures if f.name == label]
        diffs = [f for f in release.figures if f.name == f"uplift of {label}"]
        if arms:
            charts += _arm_chart(arms, f"{label.capitalize()} by arm", unit, scale)
        if diffs:
            charts += _arm_chart(diffs, f"Uplift of {label}: arm minus holdout", unit, scale)
    counts = [f for f in release.figures if f.name.endswith(": cards")]
    holdout = next((f for f in counts if f.category == "holdout"), None)
    wide = ""
    if holdout is not None:
        wide = (
            f"<p class=note>The holdout arm has about {holdout.value:,.0f} cards. An uplift compares arms, so its "
            "interval is as wide as the smallest arm's: at a small store it is wide, and an interval that holds 0 "
            "says the coupons' effect is not known, not that there is none.</p>"
        )
    b = release.bounds
    body = (
        f"<p>Intent to treat: every card counts in the arm it was drawn into. Bounds per card: spend up to "
        f"{b.spend / 100:,.2f} EUR in the period (chosen privately), purchase rate 0 to 100 %.</p>{wide}"
        f"{charts}<h2>Figures</h2>{_table(release.figures, 'arm')}"
    )
    return _page(release, f"Coupon uplift: {release.period}, {release.first} to {release.last}", body)


def _cohorts_chart(release: Release) -> str:
    from matplotlib import colormaps
    from matplotlib.figure import Figure as Canvas

    sizes = {f.category: f for f in release.figures if f.name == "cohort size"}
    curves: dict[str, list[Figure]] = {}
    for f in release.figures:
        if f.name.startswith("retention +"):
            curves.setdefault(f.category or "", []).append(f)
    shown = [c for c in sizes if curves.get(c) and sizes[c].value > 0]
    fig = Canvas(figsize=(7, 4.2))
    ax = fig.subplots()
    cmap = colormaps["viridis"]
    for i, cohort in enumerate(shown):
        points = sorted(curves[cohort], key=lambda f: int(f.name.split("+")[1]))
        xs = [int(f.name.split("+")[1]) for f in points]
        ys = [min(f.value, 100.0) for f in points]
        lo = [min(f.low, 100.0) for f in points]
        hi = [min(f.high, 100.0) for f in points]  # an unbounded end (a size that may be 0) is drawn at 100 %
        colour = cmap(i / max(len(shown) - 1, 1))
        ax.plot(xs, ys, marker="o", markersize=3, color=colour, label=f"{cohort} ({sizes[cohort].value:,.0f})")
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.12, linewidth=0)
    ax.set_ylim(0, 100)
    ax.set_title("Share of each monthly cohort active in later months", loc="left", fontsize=11)
    ax.set_xlabel("months after the cohort's first month; bands: 95 % interval")
    ax.set_ylabel("percent of the cohort")
    ax.spines[["top", "right"]].set_visible(False)
    if shown:
        ax.legend(fontsize=7, title="cohort (cards)", title_fontsize=7, ncol=2, frameon=False)
    return _svg(fig)


def _cohorts_html(release: Release) -> str:
    sizes = [f for f in release.figures if f.name == "cohort size"]
    body = (
        f"<p>A card's cohort is the month of its first kept visit; it is active in a month when it visited. "
        f"A card counts in one cohort, and in at most {release.bounds.months - 1} later months.</p>"
        "<p class=note>A small cohort's curve is mostly noise: its band shows how little is known.</p>"
        f"{_cohorts_chart(release)}<h2>Cohort sizes</h2>{_table(sizes, 'cohort')}"
        f"<h2>Retention</h2>{_table([f for f in release.figures if f.name != 'cohort size'], 'cohort')}"
    )
    return _page(release, f"Retention of monthly cohorts, {release.first} to {release.last}", body)


def html(release: Release) -> str:
    """The report as one self-contained HTML page (inline SVG, no script)."""
    if release.report == "uplift":
        return _uplift_html(release)
    if release.report == "cohorts":
        return _cohorts_html(release)
    pen = sorted((f for f in release.figures if f.name == "penetration"), key=lambda f: -f.value)[:TOP]
    sales = {f.category: f for f in release.figures if f.name == "sales"}
    totals = [f for f in release.figures if f.category is None]
    b = release.bounds
    charts = ""
    if pen:
        charts += _bars(pen, "Cards buying each category (penetration)", "cards")
        charts += _bars([sales[f.category] for f in pen], "Sales by category", "euros", scale=100)
    active = next((f for f in totals if f.name == "active cards"), None)
    wide = ""
    if active is not None and active.value > 0 and active.scale is not None:
        pen_scale = pen[0].scale if pen and pen[0].scale else None
        wide = (
            f"<p class=note>Noise does not shrink with the store: with about {active.value:,.0f} active cards, "
            f"the interval of a count is ±{active.high - active.value:,.0f} cards"
            + (f" and of a category's penetration ±{3.0 * pen_scale:,.0f}" if pen_scale else "")
            + ". A small store gets wide intervals; a chain of many thousand cards gets narrow ones.</p>"
        )
    refused = "".join(
        f"<li><b>{_html.escape(what)}</b>: {_html.escape(why)}</li>" for what, why in release.not_released.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>anoncard insights {release.first} to {release.last}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: .25em .6em; }}
td:nth-child(n+2) {{ text-align: right; }} .note {{ background: #fff6d5; padding: .6em; }}
svg {{ max-width: 100%; height: auto; display: block; margin: 1em 0; }}
</style></head><body>
<h1>Insights: {release.period}, {release.first} to {release.last} ({_html.escape(release.grouping)})</h1>
<p>Every figure is differentially private: one card's whole history changes it by a bounded amount, and noise
(discrete Laplace, OpenDP) hides that amount. Privacy budget spent: epsilon {release.epsilon:.3g}.
Bounds per card, chosen privately from the data: K = {b.categories} categories, C = {b.category_spend / 100:,.2f} EUR
per category, V = {b.visits} visits, S = {b.spend / 100:,.2f} EUR, R = {b.coupons} coupons.</p>
{wide}
<h2>Cards, visits, baskets, coupons</h2>
<table><tr><th>figure</th><th>value</th><th>95 % interval</th><th>noise scale</th><th>unit</th></tr>
{"".join(_row(f) for f in totals)}</table>
{charts}
<h2>Not released</h2><ul>{refused}</ul>
</body></html>
"""
