"""The loyalty programme: earn rate, category multipliers, threshold gifts, rewards.

Design overview. A basket earns ``floor(sum(amount * multiplier) * points_per_euro)``
points, computed exactly with fractions (money in cents, never floats). At most one
threshold gift is handed over per basket: the largest whose threshold the basket
meets (Kaiser's model: a chocolate bar from 30 EUR, a jar of spread from 200 EUR).
Rewards cost points. ``point_value`` is the nominal value of one point and is used
only to report the effective reward rate.

The programme lives in ``programme.toml`` in the home; :data:`DEFAULT_TOML` is what
``anoncard init`` writes.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from . import files
from .errors import PolicyViolation, ProgrammeError
from .money import parse_cents

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

[departments]              # category = department: no three coupons from one department
dairy = "fresh"
bakery = "fresh"
fruit = "produce"
vegetables = "produce"
meat = "fresh"
fish = "fresh"
coffee = "grocery"
beverages = "drinks"
wine = "drinks"
frozen = "frozen"
snacks = "grocery"
household = "non-food"
"personal care" = "non-food"
baby = "non-food"
"pet food" = "non-food"
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
    departments: dict[str, str] = None  # type: ignore[assignment]
    rate_hundredths: int = 100  # points_per_euro * 100, exact (parsed from a two-place decimal)
    fingerprint: str = ""  # SHA-256 of the canonical programme, recorded in the event log when it changes

    @property
    def _rate(self) -> int:
        return self.rate_hundredths

    def offer_for(self, category: str) -> Offer | None:
        """The offer a coupon for ``category`` carries: the category's own, else the ``*`` default."""
        return (self.offers or {}).get(category) or (self.offers or {}).get("*")

    def department(self, category: str) -> str:
        return (self.departments or {}).get(category, category)

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
            offers = {str(o["category"]).lower(): _offer(o) for o in doc.get("offers", [])}
            departments = {str(k).lower(): str(v) for k, v in doc.get("departments", {}).items()}
        except KeyError as exc:
            raise ProgrammeError(f"programme: missing key {exc.args[0]!r}") from None
        if len({g.min_spend_cents for g in gifts}) != len(gifts):
            raise ProgrammeError("programme: two gifts share a threshold")
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
        return cls(
            rate, point_value, mult, gifts, rewards, coupon_rules, offers, departments, int(rate * 100), fingerprint
        )

    @classmethod
    def load(cls, path: Path) -> Programme:
        text = files.read_text(path, error=ProgrammeError, what="programme", missing=" (run 'anoncard init')")
        return cls.from_toml(text)

    @classmethod
    def default(cls) -> Programme:
        return cls.from_toml(DEFAULT_TOML)


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
