"""The loyalty programme: earn rate, category multipliers, threshold gifts, rewards, and the
closed category vocabulary.

Design overview. A basket earns ``floor(sum(amount * multiplier) * points_per_euro)``
points, computed exactly with fractions (money in cents, never floats). At most one
threshold gift is handed over per basket: the largest whose threshold the basket
meets (Kaiser's model: a chocolate bar from 30 EUR, a jar of spread from 200 EUR).
Rewards cost points. ``point_value`` is the nominal value of one point and is used
only to report the effective reward rate. ``[categories]`` declares every category a
till may send, with its department and flags (:mod:`anoncard.vocabulary`); multipliers
and offers may name only declared, non-sensitive categories.

The programme lives in ``programme.toml`` in the home; :data:`DEFAULT_TOML` is what
``anoncard init`` writes.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from pathlib import Path

from . import files, pii
from .errors import PolicyViolation, ProgrammeError
from .money import parse_cents
from .vocabulary import FLAGS, MAX_NAME, NAME, Category, Vocabulary, normalise

DEFAULT_TOML = """\
# anoncard programme: what a basket earns and what points buy.
# Amounts are decimal strings in EUR; points are whole numbers.

[earn]
points_per_euro = "1"      # base earn rate
point_value = "0.01"       # nominal value of one point, for reporting the reward rate

[earn.category_multipliers]  # optional: category = multiplier (decimal string)
fruit = "2"
vegetables = "2"

[[gifts]]                  # handed over at the till; the largest gift met wins
name = "chocolate bar"
min_spend = "30.00"
value = "0.99"

[[gifts]]
name = "jar of hazelnut spread"
min_spend = "200.00"
value = "3.49"

[[rewards]]                # spent with 'anoncard redeem'
name = "coffee"
points = 150
value = "1.80"

[[rewards]]
name = "voucher-5"
points = 450
value = "5.00"

[[rewards]]
name = "tote-bag"
points = 800
value = "9.00"

[coupons]                  # printed at the entrance column, chosen from the card's history
valid_days = 1             # a coupon is for today's shop
per_visit = 3              # never more than this at one visit
per_week = 21              # nor more than this in seven days (three a visit, one visit a day)
rest_after = 10            # a category whose last 10 coupons were all ignored...
rest_days = 14             # ...rests this long
quiet_after = 20           # a card that ignored its last N coupons gets one at a time
discovery_weeks = 8        # the discovery slot offers what the card has not bought for this long

[campaign]                 # coupon arms, to measure whether coupons work (anoncard insights --report uplift)
first_day = "2024-01-01"   # a Monday: campaign periods are counted from it
weeks = 4                  # each period this many weeks; a card's arm is drawn afresh per period
targeted = 100             # percent of cards: the coupons the engine picks
random = 0                 # percent: as many coupons, of categories drawn at random (e.g. 10)
holdout = 0                # percent: no coupon; the engine's pick is only recorded, as a "ghost" (e.g. 10)

[[offers]]                 # the most specific offer for a suggested category is printed
category = "*"             # any category
kind = "percent"           # percent | amount (EUR) | points (bonus points)
value = "10"

[[offers]]
category = "coffee"
kind = "points"
value = "30"

[[offers]]
category = "wine"
kind = "amount"
value = "1.00"

[categories]               # the only categories a till may send: name = { department, flags }
# The department keeps the entrance from printing three coupons of one kind. A category
# flagged "sensitive" earns points, but never enters a card's history, never gets a
# coupon, and is counted only in store-wide totals (health, baby and pregnancy,
# religious diet, sexual health: what a history must not let anyone infer).
dairy = { department = "fresh" }
milk = { department = "fresh" }
cheese = { department = "fresh" }
eggs = { department = "fresh" }
yoghurt = { department = "fresh" }
bakery = { department = "fresh" }
bread = { department = "fresh" }
meat = { department = "fresh" }
poultry = { department = "fresh" }
fish = { department = "fresh" }
deli = { department = "fresh" }
"ready meals" = { department = "fresh" }
fruit = { department = "produce" }
vegetables = { department = "produce" }
salad = { department = "produce" }
herbs = { department = "produce" }
flowers = { department = "produce" }
coffee = { department = "grocery" }
tea = { department = "grocery" }
cereals = { department = "grocery" }
"pasta & rice" = { department = "grocery" }
"canned goods" = { department = "grocery" }
baking = { department = "grocery" }
"spices & sauces" = { department = "grocery" }
"jam & spreads" = { department = "grocery" }
"oil & vinegar" = { department = "grocery" }
snacks = { department = "grocery" }
sweets = { department = "grocery" }
chocolate = { department = "grocery" }
nuts = { department = "grocery" }
beverages = { department = "drinks" }
"soft drinks" = { department = "drinks" }
water = { department = "drinks" }
juice = { department = "drinks" }
beer = { department = "drinks" }
wine = { department = "drinks" }
spirits = { department = "drinks" }
frozen = { department = "frozen" }
"ice cream" = { department = "frozen" }
"frozen pizza" = { department = "frozen" }
household = { department = "non-food" }
cleaning = { department = "non-food" }
"paper goods" = { department = "non-food" }
"personal care" = { department = "non-food" }
cosmetics = { department = "non-food" }
candles = { department = "non-food" }
stationery = { department = "non-food" }
"pet food" = { department = "pets" }
"pet care" = { department = "pets" }
tobacco = { department = "kiosk" }
newspapers = { department = "kiosk" }
pharmacy = { department = "health", flags = ["sensitive"] }
"pain relief" = { department = "health", flags = ["sensitive"] }
"cold & flu" = { department = "health", flags = ["sensitive"] }
"vitamins & supplements" = { department = "health", flags = ["sensitive"] }
"first aid" = { department = "health", flags = ["sensitive"] }
"incontinence" = { department = "health", flags = ["sensitive"] }
"feminine hygiene" = { department = "health", flags = ["sensitive"] }
"diabetic foods" = { department = "health", flags = ["sensitive"] }
"gluten free" = { department = "health", flags = ["sensitive"] }
"condoms & sexual health" = { department = "health", flags = ["sensitive"] }
"pregnancy tests" = { department = "health", flags = ["sensitive"] }
"nicotine replacement" = { department = "health", flags = ["sensitive"] }
baby = { department = "baby", flags = ["sensitive"] }
"baby food" = { department = "baby", flags = ["sensitive"] }
"infant formula" = { department = "baby", flags = ["sensitive"] }
nappies = { department = "baby", flags = ["sensitive"] }
kosher = { department = "world food", flags = ["sensitive"] }
halal = { department = "world food", flags = ["sensitive"] }
"""


@dataclass(frozen=True, slots=True)
class Gift:
    name: str
    min_spend_cents: int
    value_cents: int


@dataclass(frozen=True, slots=True)
class Reward:
    name: str
    points: int
    value_cents: int


@dataclass(frozen=True, slots=True)
class Offer:
    kind: str  # percent | amount | points
    value: int  # percent, cents, or points


@dataclass(frozen=True, slots=True)
class CouponRules:
    valid_days: int = 1
    per_visit: int = 3
    per_week: int = 21
    rest_after: int = 10
    rest_days: int = 14
    quiet_after: int = 20
    discovery_weeks: int = 8


ARMS = ("targeted", "random", "holdout")


@dataclass(frozen=True, slots=True)
class Campaign:
    """``[campaign]``: the split of cards into coupon arms, per campaign period.

    Periods are ``weeks`` long, counted from ``first_day`` (a Monday). Each card is drawn into
    one arm per period by a keyed hash of its token (:mod:`anoncard.arms`); the shares are
    whole percents summing to 100. The default (100/0/0) measures nothing: holding out cards
    is the operator's decision, made in the programme.
    """

    first_day: date = date(2024, 1, 1)
    weeks: int = 4
    targeted: int = 100
    random: int = 0
    holdout: int = 0

    @property
    def measures(self) -> bool:
        """Whether any card is drawn into the random or holdout arm."""
        return self.random > 0 or self.holdout > 0

    def shares(self) -> dict[str, int]:
        return {"targeted": self.targeted, "random": self.random, "holdout": self.holdout}


@dataclass(frozen=True, slots=True)
class Programme:
    """A loaded programme. Build one with :meth:`from_toml` or :meth:`load`."""

    points_per_euro: Fraction
    point_value_cents: Fraction
    multipliers: dict[str, int]  # hundredths: "1.5" -> 150
    gifts: tuple[Gift, ...]
    rewards: dict[str, Reward]
    coupons: CouponRules = CouponRules()
    offers: dict[str, Offer] = None  # type: ignore[assignment]
    campaign: Campaign = Campaign()
    vocabulary: Vocabulary = None  # type: ignore[assignment]
    rate_hundredths: int = 100  # points_per_euro * 100, exact (parsed from a two-place decimal)
    fingerprint: str = ""  # SHA-256 of the canonical programme, recorded in the event log when it changes

    @property
    def _rate(self) -> int:
        return self.rate_hundredths

    def offer_for(self, category: str) -> Offer | None:
        """The offer a coupon for ``category`` carries: the category's own, else the ``*`` default."""
        return (self.offers or {}).get(category) or (self.offers or {}).get("*")

    def department(self, category: str) -> str:
        return self.vocabulary.department(category)

    def weight(self, category: str, cents: int) -> int:
        """Points-weighted value of one line, in hundredths of a cent (integers only)."""
        return cents * self.multipliers.get(category, 100)

    def points_for(self, lines: list[tuple[str, int]] | tuple[tuple[str, int], ...]) -> int:
        """Points a basket of ``(category, cents)`` lines earns."""
        total = sum(self.weight(c, a) for c, a in lines)
        return total * self._rate // 1_000_000

    def gift_for(self, spend_cents: int) -> Gift | None:
        """The largest gift whose threshold ``spend_cents`` meets, if any."""
        met = [g for g in self.gifts if spend_cents >= g.min_spend_cents]
        return max(met, key=lambda g: g.min_spend_cents) if met else None

    def reward(self, name: str) -> Reward:
        """Raises PolicyViolation naming field ``reward`` when the catalogue has no such reward."""
        try:
            return self.rewards[name]
        except KeyError:
            known = ", ".join(sorted(self.rewards)) or "none"
            raise PolicyViolation(f"field 'reward': unknown reward (catalogue: {known})", field="reward") from None

    @classmethod
    def from_toml(cls, text: str) -> Programme:
        """Parse and validate a programme.

        Raises:
            ProgrammeError: invalid TOML, or a value breaking its rule (named).
        """
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProgrammeError(f"programme: not valid TOML ({exc})") from None
        except RecursionError:
            raise ProgrammeError("programme: not valid TOML (nested too deeply)") from None
        try:
            earn = doc.get("earn", {})
            rate = _fraction(earn.get("points_per_euro", "1"), "earn.points_per_euro")
            point_value = _fraction(earn.get("point_value", "0.01"), "earn.point_value") * 100
            mult = {
                str(k).lower(): int(_fraction(v, f"earn.category_multipliers.{k}") * 100)
                for k, v in earn.get("category_multipliers", {}).items()
            }
            gifts = tuple(
                Gift(str(g["name"]), _cents(g["min_spend"], "gifts.min_spend"), _cents(g["value"], "gifts.value"))
                for g in doc.get("gifts", [])
            )
            rewards = {}
            for r in doc.get("rewards", []):
                pts = r["points"]
                if not isinstance(pts, int) or isinstance(pts, bool) or pts <= 0:
                    raise ProgrammeError(f"programme: rewards.points of {r.get('name')!r} must be a positive integer")
                rewards[str(r["name"])] = Reward(str(r["name"]), pts, _cents(r["value"], "rewards.value"))
            rules = doc.get("coupons", {})
            known = set(CouponRules.__dataclass_fields__)
            for key, value in rules.items():
                if key not in known or not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ProgrammeError(f"programme: coupons.{key} must be one of {sorted(known)}, a whole number")
            coupon_rules = CouponRules(**rules)
            campaign = _campaign(doc.get("campaign", {}))
            offers = {str(o["category"]).lower(): _offer(o) for o in doc.get("offers", [])}
            vocabulary = _vocabulary(doc)
        except KeyError as exc:
            raise ProgrammeError(f"programme: missing key {exc.args[0]!r}") from None
        _refer_to_declared(vocabulary, mult, "earn.category_multipliers")
        _refer_to_declared(vocabulary, {k: v for k, v in offers.items() if k != "*"}, "offers")
        if len({g.min_spend_cents for g in gifts}) != len(gifts):
            raise ProgrammeError("programme: two gifts share a threshold")
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
        return cls(
            rate,
            point_value,
            mult,
            gifts,
            rewards,
            coupon_rules,
            offers,
            campaign,
            vocabulary,
            int(rate * 100),
            fingerprint,
        )

    @classmethod
    def load(cls, path: Path) -> Programme:
        text = files.read_text(path, error=ProgrammeError, what="programme", missing=" (run 'anoncard init')")
        return cls.from_toml(text)

    @classmethod
    def default(cls) -> Programme:
        return cls.from_toml(DEFAULT_TOML)


def _campaign(doc: object) -> Campaign:
    """``[campaign]`` as a :class:`Campaign`, or ProgrammeError naming the key and the rule."""
    if not isinstance(doc, dict):
        raise ProgrammeError("programme: [campaign] must be a table")
    known = set(Campaign.__dataclass_fields__)
    for key in doc:
        if key not in known:
            raise ProgrammeError(f"programme: campaign.{key} is not a setting (known: {', '.join(sorted(known))})")
    first = doc.get("first_day", "2024-01-01")
    try:
        if not isinstance(first, str):
            raise ValueError
        first_day = date.fromisoformat(first)
    except ValueError:
        raise ProgrammeError("programme: campaign.first_day must be a day (YYYY-MM-DD)") from None
    if first_day.isoweekday() != 1:
        raise ProgrammeError("programme: campaign.first_day must be a Monday (periods are whole weeks)")
    values = {}
    for key, default, low, high in (("weeks", 4, 1, 52), ("targeted", 100, 0, 100), ("random", 0, 0, 100),
                                    ("holdout", 0, 0, 100)):  # fmt: skip
        value = doc.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ProgrammeError(f"programme: campaign.{key} must be a whole number from {low} to {high}")
        values[key] = value
    if values["targeted"] + values["random"] + values["holdout"] != 100:
        raise ProgrammeError("programme: campaign.targeted, campaign.random and campaign.holdout must sum to 100")
    return Campaign(first_day=first_day, **values)


def _cents(value: object, name: str) -> int:
    try:
        return parse_cents(value, name, allow_zero=True)
    except PolicyViolation as exc:
        raise ProgrammeError(f"programme: {exc.message}") from None


def _fraction(value: object, name: str) -> Fraction:
    cents = _cents(value, name)
    if cents <= 0:
        raise ProgrammeError(f"programme: field '{name}': must be greater than 0")
    return Fraction(cents, 100)


def _offer(doc: dict) -> Offer:
    kind = doc["kind"]
    where = f"offers.{doc.get('category')}"
    if kind == "amount":
        return Offer(kind, _cents(doc["value"], f"{where}.value"))
    if kind in ("percent", "points"):
        value = doc["value"]
        if (
            not isinstance(value, str)
            or not value.isdigit()
            or not 0 < int(value) <= (100 if kind == "percent" else 10_000)
        ):
            raise ProgrammeError(f"programme: {where}.value must be a whole number in range for {kind}")
        return Offer(kind, int(value))
    raise ProgrammeError(f"programme: {where}.kind must be percent, amount or points")


def _vocabulary(doc: dict) -> Vocabulary:
    """The ``[categories]`` table as a vocabulary, or ProgrammeError naming the entry and the rule.

    An entry is named by its position (``categories entry #3``) unless its name has the
    shape of a category, so a name holding personal data is never repeated."""
    if "departments" in doc:
        raise ProgrammeError(
            "programme: [departments] is now part of [categories]: write each category as "
            'name = { department = "..." }'
        )
    table = doc.get("categories")
    if not isinstance(table, dict) or not table:
        raise ProgrammeError(
            "programme: [categories] is missing or empty: declare every category a till may send "
            '(name = { department = "...", flags = ["sensitive"] })'
        )
    out = []
    for i, (name, spec) in enumerate(table.items(), 1):
        shaped = len(name) <= MAX_NAME and NAME.fullmatch(name) is not None and not pii.scan(name)
        where = f"categories.{name}" if shaped else f"categories entry #{i}"
        if not shaped:
            raise ProgrammeError(
                f"programme: {where}: a category name is 1-{MAX_NAME} lower-case letters, digits, spaces and "
                "& / , . ' ( ) + - (and no personal data)"
            )
        if normalise(name) != name:
            raise ProgrammeError(f"programme: {where}: write the name in its normal form (single spaces)")
        if not isinstance(spec, dict):
            raise ProgrammeError(f'programme: {where}: must be a table such as {{ department = "fresh" }}')
        unknown = set(spec) - {"department", "flags"}
        if unknown:
            raise ProgrammeError(f"programme: {where}: only department and flags may be given")
        department = spec.get("department")
        if (
            not isinstance(department, str)
            or len(department) > MAX_NAME
            or NAME.fullmatch(department) is None
            or pii.scan(department)
        ):
            raise ProgrammeError(f"programme: {where}.department: must be a department name such as \"fresh\"")
        flags = spec.get("flags", [])
        if not isinstance(flags, list) or not all(isinstance(f, str) and f in FLAGS for f in flags):
            raise ProgrammeError(f"programme: {where}.flags: must be a list of {', '.join(FLAGS)}")
        out.append(Category(name, department, "sensitive" in flags))
    return Vocabulary(out)


def _refer_to_declared(vocabulary: Vocabulary, entries: dict, where: str) -> None:
    """Multipliers and offers name declared categories, and never a sensitive one (a bonus or a
    coupon for it would nudge, and a coupon would tie it to a card)."""
    for name in entries:
        category = vocabulary.categories.get(name)
        if category is None:
            raise ProgrammeError(f"programme: {where}: names a category that [categories] does not declare")
        if category.sensitive:
            raise ProgrammeError(f"programme: {where}.{name}: a sensitive category gets no multiplier or offer")
