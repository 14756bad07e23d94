"""The closed category vocabulary: the only categories a till may send.

Design overview. The programme declares every category (``[categories]`` in
``programme.toml``: name -> department and flags). The gate looks each line's
category up here after normalising it (Unicode NFKC, case folded, runs of white
space collapsed); a category that is not declared is refused, so no free text - a
name, an e-mail address, an IBAN typed into the category field - can reach a card's
history.

A category flagged ``sensitive`` (health and pharmacy, baby and pregnancy, religious
diet, sexual health, nicotine replacement: what would let an Art. 9 GDPR inference
be drawn from a card's history) earns points like any other, but no per-card row
ever names it: the document records such a line under :data:`PRIVATE_LABEL` (so a
refund can still match it), the card's history and coupons never see it, and only
the store-wide, card-free daily totals count it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

# the label a document records a sensitive line under; it cannot be declared (a declared
# name starts with a letter or a digit), so a till cannot send it
PRIVATE_LABEL = "(private)"
FLAGS = ("sensitive",)
NAME = re.compile(r"[a-z0-9][a-z0-9 &/,.'()+-]*")
MAX_NAME = 48
_CACHE_LIMIT = 4096


def normalise(text: str) -> str:
    """The form a category is looked up and stored in: NFKC, case folded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    department: str
    sensitive: bool = False


class Vocabulary:
    """A programme's declared categories, looked up by their normalised form."""

    def __init__(self, categories: Iterable[Category]) -> None:
        self.categories: dict[str, Category] = {c.name: c for c in categories}
        # raw spelling -> category (None: not declared); tills send the same few spellings
        # all day, so a bounded cache saves the normalisation on the hot path
        self._seen: dict[str, Category | None] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.categories

    def __len__(self) -> int:
        return len(self.categories)

    def lookup(self, raw: str) -> Category | None:
        """The declared category ``raw`` names (after normalising), or None."""
        try:
            return self._seen[raw]
        except KeyError:
            pass
        found = self.categories.get(normalise(raw))
        if len(self._seen) < _CACHE_LIMIT:
            self._seen[raw] = found
        return found

    def department(self, name: str) -> str:
        category = self.categories.get(name)
        return category.department if category is not None else name

    def suggestible(self, name: str) -> bool:
        """May a coupon be printed for ``name``: declared and not sensitive."""
        category = self.categories.get(name)
        return category is not None and not category.sensitive

    @property
    def sensitive(self) -> frozenset[str]:
        return frozenset(n for n, c in self.categories.items() if c.sensitive)
