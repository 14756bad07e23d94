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


def html(release: Release) -> str:
    """The report as one self-contained HTML page (inline SVG, no script)."""
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
