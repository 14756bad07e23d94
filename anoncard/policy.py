"""The minimisation gate: the one way a request gets into anoncard.

Design overview. The policy is a TOML file an auditor can read and fingerprint
(``policy.toml`` in the home; the default ships with the package). For each request
kind it lists every allowed field with its type, bounds, coarsening, purpose and
retention; for each stored table every column with its type and purpose.

:meth:`Policy.validate` checks a raw request mapping against it and turns it into a
typed, frozen record; the service and the store accept only those records. In order:
an undeclared field is refused (named when its name is one anoncard knows, else by its
position, so nothing a caller sent is repeated); a missing required field is refused; a
line's category must be one the programme's closed vocabulary declares
(:mod:`anoncard.vocabulary`); every free-text value (document numbers, reward names) is
scanned for personal data in its normalised form (:mod:`anoncard.pii`); then each value
must meet its type and bounds, and is coarsened as declared. Nothing is stored before
all of it passes. A policy whose field lacks a purpose, or names a type or field anoncard
cannot serve, is refused when loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path

from . import cards, files, pii, recovery
from .cards import CardSecret
from .errors import CardError, PolicyFileError, PolicyViolation
from .money import format_cents, parse_cents
from .recovery import RecoveryCode
from .vocabulary import NAME, PRIVATE_LABEL, Vocabulary

_CATEGORY = NAME  # the shape of a declared category (the audit checks stored ones against it)
_DOCUMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")
_NAME = re.compile(r"[a-z0-9][a-z0-9 _-]*")


@dataclass(frozen=True, slots=True)
class Line:
    """One basket line: a declared category and its cents. ``stored`` is how the line is
    recorded against a card: a sensitive category only as :data:`PRIVATE_LABEL`."""

    category: str
    cents: int
    sensitive: bool = False

    @property
    def stored(self) -> str:
        return PRIVATE_LABEL if self.sensitive else self.category


@dataclass(frozen=True, slots=True)
class IssueRequest:
    count: int


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    card: CardSecret
    txn: str
    lines: tuple[Line, ...]
    coupons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EnterRequest:
    card: CardSecret


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


@dataclass(frozen=True, slots=True)
class ExportRequest:
    card: CardSecret


@dataclass(frozen=True, slots=True)
class EraseRequest:
    card: CardSecret
    reward: str | None = None


@dataclass(frozen=True, slots=True)
class ReplaceRequest:
    recovery: RecoveryCode
    history: bool = False


@dataclass(frozen=True, slots=True)
class InsightsRequest:
    """A differentially private release of a period's figures: which period, ending on which
    day (the last complete period before today when absent), and which grouping."""

    period: str
    ending: date | None
    grouping: str
    report: str = "figures"  # figures | uplift | cohorts


Record = (
    IssueRequest | CheckoutRequest | EnterRequest | RefundRequest | BalanceRequest | RedeemRequest
    | ExportRequest | EraseRequest | ReplaceRequest | InsightsRequest
)  # fmt: skip

# The periods an insights release covers, in days (whole weeks, ending on a Sunday).
PERIODS = {"week": 7, "4weeks": 28, "quarter": 91}
# Groupings a release may be asked for. Only "chain" has data behind it: the tills send no
# store, cluster or region field, so anything finer would need a field that does not exist.
GROUPINGS = ("chain",)
# What an insights release reports: the span's figures, the coupon arms' uplift over one
# campaign period, or the retention curves of monthly cohorts.
REPORTS = ("figures", "uplift", "cohorts")


@dataclass(frozen=True, slots=True)
class InsightsRules:
    """The ``[insights]`` section: the privacy budget and the contribution bounds' limits."""

    purpose: str
    epsilon_per_period: float
    epsilon_per_year: float
    calibration_share: float
    max_categories: int
    max_coupons: int
    category_min_days: int
    groupings: tuple[str, ...]
    # the coupon arms' uplift: its purpose, what one release (one campaign period) spends, the year's cap,
    # and the fewest cards an arm needs (as released, noisy) before its uplift is shown
    uplift_purpose: str | None = None
    uplift_epsilon: float | None = None
    uplift_epsilon_per_year: float | None = None
    min_arm_cards: int = 20
    # cohort retention: what one release spends, the cap of one day's and one year's releases, how many months
    cohorts_epsilon: float | None = None
    cohorts_epsilon_per_year: float | None = None
    cohort_months: int = 12

    def budget(self, report: str) -> tuple[float, float, float] | None:
        """``(epsilon of one release, cap of the releases reading one day, cap of a year's)`` of a
        kind of release, or None when the policy declares none for it. Each kind has its own
        budget in the one ledger; a card's loss in a year is at most their sum
        (:attr:`epsilon_per_year_all`)."""
        if report == "figures":
            return self.epsilon_per_period, self.epsilon_per_period, self.epsilon_per_year
        if report == "uplift" and self.uplift_epsilon and self.uplift_epsilon_per_year:
            return self.uplift_epsilon, self.uplift_epsilon, self.uplift_epsilon_per_year
        if report == "cohorts" and self.cohorts_epsilon and self.cohorts_epsilon_per_year:
            return self.cohorts_epsilon, self.cohorts_epsilon_per_year, self.cohorts_epsilon_per_year
        return None

    @property
    def epsilon_per_year_all(self) -> float:
        """What one card can lose in a calendar year through every kind of release (pure composition)."""
        return self.epsilon_per_year + (self.uplift_epsilon_per_year or 0.0) + (self.cohorts_epsilon_per_year or 0.0)

# What this code can serve: kind -> field -> (type, required by the code). A policy may
# leave out a field the code does not require (that use is then refused); it can never
# add a field the code does not know.
SERVED: dict[str, dict[str, tuple[str, bool]]] = {
    "issue": {"count": ("count", True)},
    "checkout": {
        "card": ("card_code", True),
        "txn": ("document_id", True),
        "lines": ("lines", True),
        "coupons": ("coupon_codes", False),
    },
    "enter": {"card": ("card_code", True)},
    "refund": {"txn": ("document_id", True), "refund_id": ("document_id", False), "lines": ("lines", False)},
    "balance": {"card": ("card_code", True)},
    "redeem": {"card": ("card_code", True), "txn": ("document_id", True), "reward": ("reward_name", True)},
    "export": {"card": ("card_code", True)},
    "erase": {"card": ("card_code", True), "confirm": ("flag", True), "reward": ("reward_name", False)},
    "replace": {"recovery": ("recovery_code", True), "history": ("flag", False)},
    "insights": {
        "period": ("period", False),
        "ending": ("day", False),
        "grouping": ("grouping", False),
        "report": ("insights_report", False),
    },
}
LINE_ITEMS = {"category": "category", "amount": "amount"}
COLUMN_TYPES = {
    "integer", "blob32", "blob16", "blob8", "offer_kind", "day", "timestamp", "category", "lines_json", "name",
    "json", "key_state", "document_kind",
}  # fmt: skip
TIME_RESOLUTIONS = ("day", "week", "month")
# The explicit-time window ([time]): its defaults, and the bounds a policy may set.
REPLAY_DAYS, FUTURE_SKEW_SECONDS = 7, 300
MAX_FUTURE_SKEW_SECONDS = 3600
_SCANNED = {"document_id", "reward_name"}
# Personal-data field names a till integration might send: refused, and named in the error so
# the integrator sees what to drop (direct identifiers, and the demographic columns of
# dunnhumby's "The Complete Journey", a real retailer's customer table).
PERSONAL_FIELDS = frozenset({
    "name", "first_name", "last_name", "surname", "email", "e_mail", "mail", "phone", "mobile", "telephone",
    "birth_date", "birthday", "date_of_birth", "dob", "address", "street", "postcode", "zip", "city", "iban",
    "bic", "card_pan", "pan", "credit_card", "tax_id", "ip", "ip_address", "customer_id", "loyalty_id", "gender",
    "age", "income", "marital_status", "home_ownership", "household_size", "household_comp", "kids_count",
})  # fmt: skip
# What point-of-sale systems send besides (store, till, product and time fields, and the
# transaction columns of "The Complete Journey"): refused too, and worth naming.
TILL_FIELDS = frozenset({
    "store", "store_id", "till", "till_id", "terminal", "terminal_id", "cashier", "time", "timestamp",
    "transaction_timestamp", "sku", "ean", "gtin", "product", "product_id", "quantity", "price", "total",
    "basket_id", "household_id", "sales_value", "retail_disc", "coupon_disc", "coupon_match_disc", "week",
    "payment", "location",
})  # fmt: skip
# Every field name anoncard declares anywhere (requests, lines, the serve envelope) plus the
# names above: the only names an error may repeat. Any other name a caller sends
# (a card code used as a key, say) is described by its position instead.
NAMEABLE_FIELDS = frozenset(
    {name for fields in SERVED.values() for name in fields}
    | set(LINE_ITEMS)
    | {"op", "at"}
    | PERSONAL_FIELDS
    | TILL_FIELDS
)


@dataclass(frozen=True, slots=True)
class FieldRule:
    name: str
    type: str
    required: bool
    purpose: str
    retention: str
    coarsen: str | None = None
    min: int | None = None
    max: int | None = None
    max_length: int | None = None
    max_items: int | None = None
    items: tuple[FieldRule, ...] = ()


@dataclass(frozen=True, slots=True)
class ColumnRule:
    type: str
    purpose: str


@dataclass(frozen=True, slots=True)
class TableRule:
    purpose: str
    retention: str
    columns: dict[str, ColumnRule]


def _text(doc: Mapping, key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or len(value.strip()) < 3:
        raise PolicyFileError(f"policy: {where}.{key} is missing (every entry must say why it is there)")
    return value


def _int(doc: Mapping, key: str, where: str, default: int | None = None) -> int | None:
    value = doc.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PolicyFileError(f"policy: {where}.{key} must be a whole number >= 0")
    return value


def _field(name: str, doc: object, where: str, expected_type: str, required_by_code: bool) -> FieldRule:
    if not isinstance(doc, Mapping):
        raise PolicyFileError(f"policy: {where} must be a table")
    known = {"type", "required", "purpose", "retention", "coarsen", "min", "max", "max_length", "max_items", "items"}
    for key in doc:
        if key not in known:
            raise PolicyFileError(f"policy: {where}.{key} is not a field attribute anoncard knows")
    if doc.get("type") != expected_type:
        raise PolicyFileError(f"policy: {where}.type must be {expected_type!r}")
    required = doc.get("required", False)
    if not isinstance(required, bool):
        raise PolicyFileError(f"policy: {where}.required must be true or false")
    if required_by_code and not required:
        raise PolicyFileError(f"policy: {where} is required by anoncard")
    lo = hi = None
    if expected_type == "amount":
        try:
            lo = parse_cents(doc.get("min", "0.01"), f"{where}.min")
            hi = parse_cents(doc.get("max", "10000.00"), f"{where}.max")
        except PolicyViolation as exc:
            raise PolicyFileError(f"policy: {exc.message}") from None
    elif expected_type == "count":
        lo, hi = _int(doc, "min", where, 1), _int(doc, "max", where, 100_000)
    if lo is not None and hi is not None and lo > hi:
        raise PolicyFileError(f"policy: {where}.min is above {where}.max")
    items: tuple[FieldRule, ...] = ()
    if expected_type == "lines":
        raw = doc.get("items")
        if not isinstance(raw, Mapping) or set(raw) != set(LINE_ITEMS):
            raise PolicyFileError(f"policy: {where}.items must declare exactly {sorted(LINE_ITEMS)}")
        items = tuple(_field(k, raw[k], f"{where}.items.{k}", LINE_ITEMS[k], True) for k in LINE_ITEMS)
    return FieldRule(
        name=name,
        type=expected_type,
        required=required,
        purpose=_text(doc, "purpose", where),
        retention=_text(doc, "retention", where),
        coarsen=doc.get("coarsen"),
        min=lo,
        max=hi,
        max_length=_int(doc, "max_length", where, 48 if expected_type != "document_id" else 64),
        max_items=_int(doc, "max_items", where, 200),
        items=items,
    )


class Policy:
    """A loaded, validated policy. Build with :meth:`from_toml`, :meth:`load` or :meth:`default`."""

    def __init__(self, doc: Mapping) -> None:
        self.doc = doc
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        self.fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
        for key in doc:
            if key not in ("policy", "retention", "time", "requests", "storage", "insights"):
                raise PolicyFileError(f"policy: unknown section [{key}]")
        head = doc.get("policy", {})
        self.title = _text(head, "title", "policy")
        self.phone_region = str(head.get("phone_region", "DE"))
        self.time_resolution = head.get("time_resolution", "day")
        if self.time_resolution not in TIME_RESOLUTIONS:
            raise PolicyFileError(f"policy: policy.time_resolution must be one of {', '.join(TIME_RESOLUTIONS)}")
        ret = doc.get("retention", {})
        self.documents_days = _int(ret, "documents_days", "retention")
        self.history_days = _int(ret, "history_days", "retention")
        if not self.documents_days or not self.history_days:
            raise PolicyFileError("policy: retention.documents_days and retention.history_days must be set and > 0")
        self.replay_days, self.future_skew_seconds = _time_window(doc.get("time", {}), self)
        self.insights = _insights_rules(doc.get("insights"))
        self.requests: dict[str, dict[str, FieldRule]] = {}
        self.request_purpose: dict[str, str] = {}
        for kind, spec in doc.get("requests", {}).items():
            served = SERVED.get(kind)
            if served is None:
                raise PolicyFileError(f"policy: requests.{kind} is not a request kind anoncard serves")
            self.request_purpose[kind] = _text(spec, "purpose", f"requests.{kind}")
            fields = spec.get("fields", {})
            for name in fields:
                if name not in served:
                    raise PolicyFileError(f"policy: requests.{kind}.fields.{name} is not a field anoncard can serve")
            for name, (_t, needed) in served.items():
                if needed and name not in fields:
                    raise PolicyFileError(f"policy: requests.{kind}.fields.{name} is required by anoncard")
            self.requests[kind] = {
                name: _field(name, fields[name], f"requests.{kind}.fields.{name}", *served[name]) for name in fields
            }
        self.storage: dict[str, TableRule] = {}
        for table, spec in doc.get("storage", {}).items():
            where = f"storage.{table}"
            columns = {}
            for col, cspec in spec.get("columns", {}).items():
                if not isinstance(cspec, Mapping) or cspec.get("type") not in COLUMN_TYPES:
                    raise PolicyFileError(f"policy: {where}.columns.{col}.type must be one of {sorted(COLUMN_TYPES)}")
                columns[col] = ColumnRule(cspec["type"], _text(cspec, "purpose", f"{where}.columns.{col}"))
            self.storage[table] = TableRule(_text(spec, "purpose", where), _text(spec, "retention", where), columns)

    @classmethod
    def from_toml(cls, text: str) -> Policy:
        """Raises PolicyFileError naming the entry that breaks a rule."""
        try:
            return cls(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise PolicyFileError(f"policy: not valid TOML ({exc})") from None
        except RecursionError:
            raise PolicyFileError("policy: not valid TOML (nested too deeply)") from None
        except (AttributeError, TypeError) as exc:
            raise PolicyFileError(f"policy: malformed ({exc})") from None

    @classmethod
    def load(cls, path: Path) -> Policy:
        text = files.read_text(path, error=PolicyFileError, what="policy", missing=" (run 'anoncard init')")
        return cls.from_toml(text)

    @classmethod
    def default(cls) -> Policy:
        return _default()

    # -- the gate --------------------------------------------------------------

    def coarsen(self, day: date) -> date:
        """A day coarsened to the policy's time resolution."""
        if self.time_resolution == "week":
            return day - timedelta(days=day.weekday())
        if self.time_resolution == "month":
            return day.replace(day=1)
        return day

    def explicit_time(self, at: object, now: datetime) -> datetime:
        """An explicit time (a replay, an import, an offline till's queue) checked against the
        window ``[time]`` declares around the service's clock ``now``: no older than
        ``replay_days``, no further ahead than ``future_skew_seconds``. A date means its noon.

        Raises:
            PolicyViolation: naming field 'at' and the rule, never the value.
        """
        if isinstance(at, datetime):
            when = at
        elif isinstance(at, date):
            when = datetime.combine(at, datetime.min.time()).replace(hour=12, tzinfo=now.tzinfo)
        else:
            raise PolicyViolation("field 'at': must be an ISO date or date and time", field="at")
        refused = PolicyViolation(
            f"field 'at': an explicit time may be at most {self.replay_days} days before and "
            f"{self.future_skew_seconds} seconds after the server's clock (policy [time])",
            field="at",
        )
        try:  # in the clock's terms: its time zone, or local time for a naive clock
            if when.tzinfo is not None:
                when = when.astimezone(now.tzinfo) if now.tzinfo else when.astimezone().replace(tzinfo=None)
            elif now.tzinfo is not None:
                when = when.replace(tzinfo=now.tzinfo)
        except (OverflowError, ValueError):
            raise refused from None
        earliest = now - timedelta(days=self.replay_days)
        latest = now + timedelta(seconds=self.future_skew_seconds)
        exact = isinstance(at, datetime)  # a day is inside when any of it is
        lo, hi = (earliest, latest) if exact else (earliest.date(), latest.date())
        if not lo <= (when if exact else when.date()) <= hi:
            raise refused
        return when

    def validate(
        self, kind: str, request: object, *, today: date | None = None, categories: Vocabulary | None = None
    ) -> Record:
        """Turn a raw request into its typed record, or refuse it.

        ``categories`` is the programme's vocabulary (the default programme's when not
        given): a line whose category it does not declare is refused.

        Raises:
            PolicyViolation: unknown kind, not a mapping, an undeclared or missing field,
                an undeclared category, personal data in a value, or a value breaking its
                rule; the message names the field and the rule, never the value.
            CardError: the card code is malformed or fails its check character.
        """
        fields = self.requests.get(kind)
        if fields is None:
            raise PolicyViolation("field 'op': this request kind is not allowed by the policy", field="op")
        if not isinstance(request, Mapping):
            raise PolicyViolation(f"{kind} request: must be a JSON object")
        _only_declared(request, fields, f"a {kind} request", "the request")
        for name, rule in fields.items():
            if rule.required and request.get(name) is None:
                raise PolicyViolation(f"field '{name}': required in a {kind} request", field=name)
        vocabulary = categories if categories is not None else _default_vocabulary()
        values = {name: self._value(rule, request.get(name), name, today, vocabulary) for name, rule in fields.items()}
        return _BUILDERS[kind](values)

    def _value(self, rule: FieldRule, value: object, where: str, today: date | None, vocabulary: Vocabulary) -> object:
        if value is None:
            return None
        if rule.type in (*_SCANNED, "category") and isinstance(value, str) and len(value) > 4 * rule.max_length:
            # hopelessly long (even allowing for spaces a category loses when normalised): refused
            # before the PII scan and the normalisation, whose costs grow with the length
            raise PolicyViolation(f"field '{where}': at most {rule.max_length} characters", field=where)
        if rule.type == "category":
            # the closed vocabulary: only what the programme declares, looked up in its normal
            # form (NFKC, case folded, single spaces); everything else is refused unseen
            found = vocabulary.lookup(value) if isinstance(value, str) else None
            if found is None or len(found.name) > rule.max_length:
                raise PolicyViolation(f"field '{where}': not a category this programme declares", field=where)
            return found
        if rule.type in _SCANNED and isinstance(value, str):
            self._scan(value, where, today)
        if rule.type == "card_code":
            return cards.decode(value)
        if rule.type == "recovery_code":
            return recovery.decode(value, where)
        if rule.type == "flag":
            if not isinstance(value, bool):
                raise PolicyViolation(f"field '{where}': must be true or false", field=where)
            return value
        if rule.type == "period":
            if value not in PERIODS:
                raise PolicyViolation(f"field '{where}': must be one of {', '.join(PERIODS)}", field=where)
            return value
        if rule.type == "insights_report":
            if value not in REPORTS:
                raise PolicyViolation(f"field '{where}': must be one of {', '.join(REPORTS)}", field=where)
            return value
        if rule.type == "grouping":
            if value not in GROUPINGS:
                raise PolicyViolation(
                    f"field '{where}': must be one of {', '.join(GROUPINGS)} (the tills send no store, cluster or "
                    "region field, so no finer grouping exists)",
                    field=where,
                )
            if self.insights is None or value not in self.insights.groupings:
                raise PolicyViolation(f"field '{where}': a grouping the policy does not declare", field=where)
            return value
        if rule.type == "day":
            try:
                if not isinstance(value, str) or len(value) != 10:
                    raise ValueError
                return date.fromisoformat(value)
            except ValueError:
                raise PolicyViolation(f"field '{where}': must be a day as YYYY-MM-DD", field=where) from None
        if rule.type == "count":
            if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
                value = int(value)  # ASCII digits only: "²" and "٣" are digits to str.isdigit
            if not isinstance(value, int) or isinstance(value, bool) or not rule.min <= value <= rule.max:
                raise PolicyViolation(
                    f"field '{where}': must be a whole number from {rule.min} to {rule.max}", field=where
                )
            return value
        if rule.type == "amount":
            cents = parse_cents(value, where, maximum=rule.max)
            if cents < rule.min:
                raise PolicyViolation(f"field '{where}': must be at least {format_cents(rule.min)}", field=where)
            return cents
        if rule.type == "lines":
            return self._lines(rule, value, where, today, vocabulary)
        if rule.type == "coupon_codes":
            # verified by signature at checkout; the codes themselves are random-looking
            if not isinstance(value, list | tuple) or not all(isinstance(c, str) and len(c) <= 400 for c in value):
                raise PolicyViolation(f"field '{where}': must be a list of coupon codes", field=where)
            if len(value) > rule.max_items:
                raise PolicyViolation(f"field '{where}': at most {rule.max_items} coupons", field=where)
            if len(set(value)) != len(value):
                raise PolicyViolation(f"field '{where}': the same coupon twice", field=where)
            return tuple(value)
        return _string(rule, value, where)

    def _scan(self, value: str, where: str, today: date | None) -> None:
        found = pii.scan(value, region=self.phone_region, today=today)
        if found:
            raise PolicyViolation(
                f"field '{where}': looks like personal data ({', '.join(found)}); the policy keeps none", field=where
            )

    def _lines(
        self, rule: FieldRule, value: object, where: str, today: date | None, vocabulary: Vocabulary
    ) -> tuple[Line, ...]:
        if not isinstance(value, list | tuple):
            raise PolicyViolation(f"field '{where}': must be a list of {{category, amount}} lines", field=where)
        if not value:
            raise PolicyViolation(f"field '{where}': the basket is empty", field=where)
        if len(value) > rule.max_items:
            raise PolicyViolation(f"field '{where}': at most {rule.max_items} lines", field=where)
        items = {r.name: r for r in rule.items}
        out = []
        for i, line in enumerate(value):
            at = f"{where}[{i}]"
            if not isinstance(line, Mapping):
                raise PolicyViolation(f"field '{at}': must be an object with category and amount", field=at)
            _only_declared(line, items, "a line", at, prefix=f"{at}.")
            if line.get("category") is None or line.get("amount") is None:
                raise PolicyViolation(f"field '{at}': needs category and amount", field=at)
            category = self._value(items["category"], line["category"], f"{at}.category", today, vocabulary)
            cents = self._value(items["amount"], line["amount"], f"{at}.amount", today, vocabulary)
            out.append(Line(category.name, cents, category.sensitive))
        return tuple(out)

    # -- for people ----------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, "policy": self.doc}

    def to_markdown(self) -> str:
        """The policy in words an auditor reads."""
        out = [
            f"# Data-minimisation policy: {self.title}",
            "",
            f"Fingerprint (SHA-256 of the canonical policy): `{self.fingerprint}`",
            "",
            f"- Every stored time is a calendar **{self.time_resolution}**; no clock time is kept.",
            f"- Till documents are kept **{self.documents_days} days**, then compacted into one carried "
            "points entry per card.",
            f"- Dated category history is kept **{self.history_days} days**, then folded into undated totals.",
            "- Time is the server's clock. An explicit time (offline replays, imports) is accepted only from "
            f"**{self.replay_days} days** before it to **{self.future_skew_seconds} seconds** after it, and "
            "never decides a coupon's validity; a purge applies retention as of the server's clock only.",
            "- Cards live until their key version is retired; then they and all they held are purged.",
            "- A line's category must be one the programme declares ([categories] in programme.toml); a category "
            "flagged sensitive earns points but never enters a card's history or coupons.",
            "- Every free-text value is scanned for personal data (" + ", ".join(pii.KINDS) + ") and refused if found.",
            "- Any field not listed below is refused by name before anything is stored.",
            "",
            "## Requests",
        ]
        for kind, fields in self.requests.items():
            out += ["", f"### {kind}", "", self.request_purpose[kind], ""]
            out += ["| field | type | required | bounds | purpose | retention |", "|---|---|---|---|---|---|"]
            for rule in fields.values():
                out.append(_row(rule, rule.name))
                out += [_row(item, f"{rule.name}[].{item.name}") for item in rule.items]
        out += self._insights_markdown()
        out += ["", "## Storage", ""]
        for table, spec in self.storage.items():
            out += [f"### {table}", "", f"{spec.purpose}. Retention: {spec.retention}.", ""]
            out += ["| column | type | purpose |", "|---|---|---|"]
            out += [f"| {c} | {r.type} | {r.purpose} |" for c, r in spec.columns.items()]
            out.append("")
        return "\n".join(out)


    def _insights_markdown(self) -> list[str]:
        """The ``[insights]`` budgets (pure epsilon-DP, privacy unit one card), as an auditor checks them."""
        r = self.insights
        if r is None:
            return ["", "## Insights", "", "No [insights] section: no figure is ever released."]
        out = ["", "## Insights", "", f"{r.purpose}.", "", "| release | one release | a calendar year |",
               "|---|---|---|", f"| figures | epsilon {r.epsilon_per_period} | {r.epsilon_per_year} |"]  # fmt: skip
        if r.uplift_epsilon is not None:
            out.append(f"| coupon uplift (per period) | epsilon {r.uplift_epsilon} | {r.uplift_epsilon_per_year} |")
        if r.cohorts_epsilon is not None:
            out.append(f"| cohort retention | epsilon {r.cohorts_epsilon} | {r.cohorts_epsilon_per_year} |")
        out += ["", f"A card loses at most epsilon {r.epsilon_per_year_all:g} in a calendar year through all of them."]
        if r.uplift_purpose is not None:
            out += ["", f"Coupon arms (targeted, random-category, holdout): {r.uplift_purpose}."]
        return out


def _row(rule: FieldRule, name: str) -> str:
    bounds = []
    if rule.type == "amount":
        bounds.append(f"{format_cents(rule.min)} to {format_cents(rule.max)} EUR")
    elif rule.type == "count":
        bounds.append(f"{rule.min} to {rule.max}")
    elif rule.type == "lines":
        bounds.append(f"at most {rule.max_items} lines")
    elif rule.type == "coupon_codes":
        bounds.append(f"at most {rule.max_items} coupons")
    elif rule.type in _SCANNED:
        bounds.append(f"at most {rule.max_length} characters")
    if rule.coarsen:
        bounds.append(f"coarsened: {rule.coarsen}")
    return (
        f"| {name} | {rule.type} | {'yes' if rule.required else 'no'} | {'; '.join(bounds)} | {rule.purpose} "
        f"| {rule.retention} |"
    )


_INSIGHTS_KEYS = {
    "purpose", "epsilon_per_period", "epsilon_per_year", "calibration_share", "max_categories", "max_coupons",
    "category_min_days", "groupings", "uplift_purpose", "uplift_epsilon", "uplift_epsilon_per_year", "min_arm_cards",
    "cohorts_epsilon", "cohorts_epsilon_per_year", "cohort_months",
}  # fmt: skip


def _insights_rules(doc: object) -> InsightsRules | None:
    """``[insights]``: absent means no release is ever made."""
    if doc is None:
        return None
    if not isinstance(doc, Mapping):
        raise PolicyFileError("policy: [insights] must be a table")
    for key in doc:
        if key not in _INSIGHTS_KEYS:
            raise PolicyFileError(f"policy: insights.{key} is not a setting anoncard knows")

    def positive(key: str, default: float | None = None) -> float:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1000:
            raise PolicyFileError(f"policy: insights.{key} must be a number above 0 and at most 1000")
        return float(value)

    per_period, per_year = positive("epsilon_per_period"), positive("epsilon_per_year")
    if per_year < per_period:
        raise PolicyFileError("policy: insights.epsilon_per_year must be at least insights.epsilon_per_period")
    share = positive("calibration_share", 0.1)
    if share >= 0.5:
        raise PolicyFileError("policy: insights.calibration_share must be below 0.5")
    groupings = doc.get("groupings", ["chain"])
    if not isinstance(groupings, list) or not groupings or any(g not in GROUPINGS for g in groupings):
        raise PolicyFileError(f"policy: insights.groupings must list some of {', '.join(GROUPINGS)}")
    pairs = {}
    for kind in ("uplift", "cohorts"):
        each, year = f"{kind}_epsilon", f"{kind}_epsilon_per_year"
        if (each in doc) != (year in doc):
            raise PolicyFileError(f"policy: insights.{each} and insights.{year} are declared together")
        pairs[kind] = (positive(each), positive(year)) if each in doc else (None, None)
        if pairs[kind][0] is not None and pairs[kind][1] < pairs[kind][0]:
            raise PolicyFileError(f"policy: insights.{year} must be at least insights.{each}")
    if pairs["uplift"][0] is not None and "uplift_purpose" not in doc:
        raise PolicyFileError(
            "policy: insights.uplift_epsilon needs insights.uplift_purpose (why coupons are measured)"
        )
    return InsightsRules(
        purpose=_text(doc, "purpose", "insights"),
        epsilon_per_period=per_period,
        epsilon_per_year=per_year,
        calibration_share=share,
        max_categories=_int(doc, "max_categories", "insights", 64) or 64,
        max_coupons=_int(doc, "max_coupons", "insights", 8) or 8,
        category_min_days=_int(doc, "category_min_days", "insights", 28) or 28,
        groupings=tuple(groupings),
        uplift_purpose=_text(doc, "uplift_purpose", "insights") if "uplift_purpose" in doc else None,
        uplift_epsilon=pairs["uplift"][0],
        uplift_epsilon_per_year=pairs["uplift"][1],
        min_arm_cards=_int(doc, "min_arm_cards", "insights", 20) or 20,
        cohorts_epsilon=pairs["cohorts"][0],
        cohorts_epsilon_per_year=pairs["cohorts"][1],
        cohort_months=min(_int(doc, "cohort_months", "insights", 12) or 12, 13),
    )


def _time_window(doc: object, policy: Policy) -> tuple[int, int]:
    """``(replay_days, future_skew_seconds)`` from ``[time]``, within their bounds.

    A replay older than the retention periods would plant rows already due for purging,
    so the window stays below both.
    """
    if not isinstance(doc, Mapping):
        raise PolicyFileError("policy: [time] must be a table")
    for key in doc:
        if key not in ("replay_days", "future_skew_seconds"):
            raise PolicyFileError(f"policy: time.{key} is not a setting anoncard knows")
    days = _int(doc, "replay_days", "time", REPLAY_DAYS)
    skew = _int(doc, "future_skew_seconds", "time", FUTURE_SKEW_SECONDS)
    limit = min(policy.documents_days, policy.history_days)
    if days >= limit:
        raise PolicyFileError(f"policy: time.replay_days must be below the retention periods ({limit} days)")
    if skew > MAX_FUTURE_SKEW_SECONDS:
        raise PolicyFileError(f"policy: time.future_skew_seconds must be at most {MAX_FUTURE_SKEW_SECONDS}")
    return days, skew


def _only_declared(mapping: Mapping, allowed: Mapping, what: str, whole: str, prefix: str = "") -> None:
    """Refuse the first undeclared field: by name if the name is one anoncard knows (or a
    personal-data name), else by its position, so a value sent as a key is never repeated."""
    for position, name in enumerate(mapping, 1):
        if name in allowed:
            continue
        if isinstance(name, str) and name in NAMEABLE_FIELDS:
            raise PolicyViolation(
                f"field '{prefix}{name}': not allowed in {what} (the policy keeps only what serves the customer)",
                field=f"{prefix}{name}",
            )
        raise PolicyViolation(
            f"field #{position} of {whole}: not allowed in {what} (the policy keeps only what serves the customer)",
            field=f"{prefix}#{position}",
        )


def _is_card_code(value: str) -> bool:
    try:
        cards.decode(value)
    except CardError:
        return False
    return True


def _string(rule: FieldRule, value: object, where: str) -> str:
    if not isinstance(value, str):
        raise PolicyViolation(f"field '{where}': must be a string", field=where)
    limit = rule.max_length
    if rule.type == "document_id":
        if not 1 <= len(value) <= limit or not _DOCUMENT.fullmatch(value):
            raise PolicyViolation(
                f"field '{where}': must be 1-{limit} characters of letters, digits and . _ : / - "
                "(a till document number)",
                field=where,
            )
        if value[:2].upper() == cards.PREFIX and _is_card_code(value):
            # a till that puts the card into the document number would print it on every receipt
            raise PolicyViolation(f"field '{where}': a document number never holds a card code", field=where)
        return value
    if not 1 <= len(value) <= limit or not _NAME.fullmatch(value):
        raise PolicyViolation(f"field '{where}': must be a reward name from the catalogue", field=where)
    return value


def _issue(v: dict) -> IssueRequest:
    return IssueRequest(v["count"])


def _checkout(v: dict) -> CheckoutRequest:
    return CheckoutRequest(v["card"], v["txn"], v["lines"], v.get("coupons") or ())


def _enter(v: dict) -> EnterRequest:
    return EnterRequest(v["card"])


def _refund(v: dict) -> RefundRequest:
    lines, refund_id = v.get("lines"), v.get("refund_id")
    if lines is not None and refund_id is None:
        raise PolicyViolation(
            "field 'refund_id': required for a partial refund, so a retry is told apart from a second refund",
            field="refund_id",
        )
    return RefundRequest(v["txn"], refund_id, lines)


def _balance(v: dict) -> BalanceRequest:
    return BalanceRequest(v["card"])


def _redeem(v: dict) -> RedeemRequest:
    return RedeemRequest(v["card"], v["txn"], v["reward"])


def _export(v: dict) -> ExportRequest:
    return ExportRequest(v["card"])


def _erase(v: dict) -> EraseRequest:
    if v["confirm"] is not True:
        raise PolicyViolation(
            "field 'confirm': erasing a card deletes its data for good; confirm with true", field="confirm"
        )
    return EraseRequest(v["card"], v.get("reward"))


def _replace(v: dict) -> ReplaceRequest:
    return ReplaceRequest(v["recovery"], bool(v.get("history")))
def _insights(v: dict) -> InsightsRequest:
    report = v.get("report") or "figures"
    period = v.get("period")
    if report != "figures" and period is not None:
        raise PolicyViolation(
            f"field 'period': the {report} report has its own span (a campaign period, or the cohorts' months); "
            "leave period out",
            field="period",
        )
    return InsightsRequest(period or ("4weeks" if report == "figures" else report), v.get("ending"),
                           v.get("grouping") or "chain", report)  # fmt: skip


_BUILDERS = {
    "issue": _issue,
    "checkout": _checkout,
    "enter": _enter,
    "refund": _refund,
    "balance": _balance,
    "redeem": _redeem,
    "export": _export,
    "erase": _erase,
    "replace": _replace,
    "insights": _insights,
}


def default_text() -> str:
    """The text of the policy that ships with anoncard (what ``init`` writes)."""
    from importlib import resources

    return resources.files("anoncard").joinpath("policy.toml").read_text(encoding="utf-8")


@cache
def _default() -> Policy:
    return Policy.from_toml(default_text())


@cache
def _default_vocabulary() -> Vocabulary:
    from .programme import Programme

    return Programme.default().vocabulary


def validate(
    kind: str, request: object, *, today: date | None = None, categories: Vocabulary | None = None
) -> Record:
    """Validate against the default policy (see :meth:`Policy.validate`)."""
    return _default().validate(kind, request, today=today, categories=categories)
