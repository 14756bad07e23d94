"""The minimisation gate: the one way a request gets into anoncard.

Design overview. Every external request - from the CLI, the library façade or a
long-lived terminal - is a plain mapping. :func:`validate` checks it against the
fields declared for its kind and turns it into a typed, frozen record; the service
and the store accept only those records. A field that is not declared is refused
by name before anything else happens, so the system cannot even be asked to keep
more than it declares. Each declared field states the customer value it serves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from . import cards
from .cards import CardSecret
from .errors import PolicyViolation
from .money import parse_cents

MAX_LINES = 200
MAX_LINE_CENTS = 1_000_000  # 10,000.00 EUR per line
MAX_ISSUE = 100_000
_CATEGORY = re.compile(r"[a-z0-9][a-z0-9 &/,.'()+-]{0,47}")
_DOCUMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
_NAME = re.compile(r"[a-z0-9][a-z0-9 _-]{0,47}")


@dataclass(frozen=True, slots=True)
class Line:
    category: str
    cents: int


@dataclass(frozen=True, slots=True)
class IssueRequest:
    count: int


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    card: CardSecret
    txn: str
    lines: tuple[Line, ...]


@dataclass(frozen=True, slots=True)
class RefundRequest:
    txn: str
    refund_id: str | None
    lines: tuple[Line, ...] | None


@dataclass(frozen=True, slots=True)
class BalanceRequest:
    card: CardSecret


@dataclass(frozen=True, slots=True)
class RedeemRequest:
    card: CardSecret
    txn: str
    reward: str


Record = IssueRequest | CheckoutRequest | RefundRequest | BalanceRequest | RedeemRequest

# kind -> field -> (required, purpose)
FIELDS: dict[str, dict[str, tuple[bool, str]]] = {
    "issue": {"count": (True, "how many new anonymous cards to print")},
    "checkout": {
        "card": (True, "finds the card's points and history without knowing who holds it"),
        "txn": (True, "makes a retried checkout count once; stored only as a keyed reference"),
        "lines": (True, "category and amount of each line: points, gifts and fitting coupons"),
    },
    "refund": {
        "txn": (True, "finds the checkout whose points are reversed"),
        "refund_id": (False, "makes a retried partial refund count once"),
        "lines": (False, "which lines are returned (all when absent)"),
    },
    "balance": {"card": (True, "shows the customer their points")},
    "redeem": {
        "card": (True, "finds the points to spend"),
        "txn": (True, "makes a retried redemption count once"),
        "reward": (True, "the reward chosen from the catalogue"),
    },
}


def validate(kind: str, request: object) -> Record:
    """Turn a raw request into its typed record, or refuse it.

    Raises:
        PolicyViolation: unknown kind, not a mapping, an undeclared or missing field,
            or a value breaking its rule; the message names the field and the rule.
        CardError: the card code is malformed or fails its check character.
    """
    spec = FIELDS.get(kind)
    if spec is None:
        raise PolicyViolation(f"unknown request kind {kind!r}", field="op")
    if not isinstance(request, Mapping):
        raise PolicyViolation(f"{kind} request: must be a JSON object")
    for name in request:
        if name not in spec:
            label = name if isinstance(name, str) and len(name) <= 40 else "<field>"
            raise PolicyViolation(
                f"field {label!r}: not allowed in a {kind} request (the policy keeps only what serves the customer)",
                field=label,
            )
    for name, (required, _purpose) in spec.items():
        if required and request.get(name) is None:
            raise PolicyViolation(f"field '{name}': required in a {kind} request", field=name)
    return _BUILDERS[kind](request)


def _document(value: object, name: str) -> str:
    if not isinstance(value, str) or not _DOCUMENT.fullmatch(value):
        raise PolicyViolation(
            f"field '{name}': must be 1-64 characters of letters, digits and . _ : / - (a till document number)",
            field=name,
        )
    return value


def _category(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise PolicyViolation(f"field '{name}': must be a string", field=name)
    norm = " ".join(value.split()).lower()
    if not _CATEGORY.fullmatch(norm):
        raise PolicyViolation(
            f"field '{name}': a product category is 1-48 letters, digits, spaces and & / , . ' ( ) + -",
            field=name,
        )
    return norm


def _lines(value: object, name: str = "lines") -> tuple[Line, ...]:
    if not isinstance(value, list | tuple):
        raise PolicyViolation(f"field '{name}': must be a list of {{category, amount}} lines", field=name)
    if not value:
        raise PolicyViolation(f"field '{name}': the basket is empty", field=name)
    if len(value) > MAX_LINES:
        raise PolicyViolation(f"field '{name}': at most {MAX_LINES} lines", field=name)
    out = []
    for i, line in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(line, Mapping):
            raise PolicyViolation(f"field '{where}': must be an object with category and amount", field=where)
        for key in line:
            if key not in ("category", "amount"):
                label = key if isinstance(key, str) and len(key) <= 40 else "<field>"
                raise PolicyViolation(
                    f"field '{where}.{label}': not allowed in a line (only category and amount)",
                    field=f"{where}.{label}",
                )
        if "category" not in line or "amount" not in line:
            raise PolicyViolation(f"field '{where}': needs category and amount", field=where)
        out.append(
            Line(
                _category(line["category"], f"{where}.category"),
                parse_cents(line["amount"], f"{where}.amount", maximum=MAX_LINE_CENTS),
            )
        )
    return tuple(out)


def _card(value: object) -> CardSecret:
    return cards.decode(value)


def _issue(r: Mapping) -> IssueRequest:
    n = r["count"]
    if isinstance(n, str) and n.isdigit():
        n = int(n)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_ISSUE:
        raise PolicyViolation(f"field 'count': must be a whole number from 1 to {MAX_ISSUE}", field="count")
    return IssueRequest(n)


def _checkout(r: Mapping) -> CheckoutRequest:
    return CheckoutRequest(_card(r["card"]), _document(r["txn"], "txn"), _lines(r["lines"]))


def _refund(r: Mapping) -> RefundRequest:
    lines = None if r.get("lines") is None else _lines(r["lines"])
    refund_id = None if r.get("refund_id") is None else _document(r["refund_id"], "refund_id")
    if lines is not None and refund_id is None:
        raise PolicyViolation(
            "field 'refund_id': required for a partial refund, so a retry is told apart from a second refund",
            field="refund_id",
        )
    return RefundRequest(_document(r["txn"], "txn"), refund_id, lines)


def _balance(r: Mapping) -> BalanceRequest:
    return BalanceRequest(_card(r["card"]))


def _redeem(r: Mapping) -> RedeemRequest:
    reward = r["reward"]
    if not isinstance(reward, str) or not _NAME.fullmatch(reward):
        raise PolicyViolation("field 'reward': must be a reward name from the catalogue", field="reward")
    return RedeemRequest(_card(r["card"]), _document(r["txn"], "txn"), reward)


_BUILDERS = {"issue": _issue, "checkout": _checkout, "refund": _refund, "balance": _balance, "redeem": _redeem}
