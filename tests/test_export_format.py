"""docs/export-format.md says what the export holds: its top-level fields, every table and every column."""

from __future__ import annotations

import re
from pathlib import Path

from anoncard.selfservice import FORMAT, Holder
from anoncard.store import CARD_TABLES

DOC = (Path(__file__).resolve().parent.parent / "docs" / "export-format.md").read_text(encoding="utf-8")


def _documented_tables() -> dict[str, list[str]]:
    found = re.findall(r"^### `(\w+)`\ncolumns: (.+)$", DOC, flags=re.M)
    return {table: re.findall(r"`(\w+)`", columns) for table, columns in found}


def test_the_document_names_every_table_and_column_of_the_export_in_order(svc):
    (issued,) = svc.issue_cards_with_stubs({"count": 1})
    doc = Holder(svc).export({"card": issued.card.code})
    schema = svc.store.schema()  # less what only keeps an order (PostgreSQL's coupon sequence)
    exported = {t: [c for c in schema[t] if c not in svc.store.ORDER_COLUMNS] for t in doc["tables"]}
    assert _documented_tables() == exported
    assert set(doc["tables"]) == {t for t, _ in CARD_TABLES}


def test_the_document_names_the_version_and_every_top_level_and_retention_field(svc):
    (issued,) = svc.issue_cards_with_stubs({"count": 1})
    doc = Holder(svc).export({"card": issued.card.code})
    assert f"# The card holder's export: `{FORMAT}`" in DOC and doc["format"] == FORMAT
    top = re.findall(r"^- `(\w+)`:", DOC, flags=re.M)
    assert top == list(doc)
    retention_fields = re.findall(r"^  - `(\w+)`(?:, `(\w+)`)?:", DOC, flags=re.M)
    named = [name for pair in retention_fields for name in pair if name]
    assert named == list(doc["retention"]["cards"])
