"""The façade terminals, readers and operators call.

Every public method takes the raw request mapping, passes it through the gate
(:func:`anoncard.policy.validate`) and only then touches the key ring and the store.
Time is injected: each call takes ``at=`` (a date or datetime, coarsened to the day)
and otherwise asks the service's clock, so replays and tests are deterministic.

Points rules (see docs/threat_model.md for the why):

* a checkout is idempotent by its till document number: the same number with the
  same content returns the original receipt and credits nothing; with different
  content it is refused;
* a refund reverses points in proportion to the points-weighted value returned,
  cumulatively, so refunding a whole basket in parts reverses exactly what it
  earned; a refund is never refused for lack of points - the balance may go
  negative, which blocks redemptions until it is earned back. So buy -> redeem ->
  refund never leaves a card ahead;
* a redemption costing more than the balance is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from . import coupons as coupon_codes
from . import suggest
from .cards import CardSecret, generate
from .errors import CouponError, LedgerError, PolicyFileError, UnknownCard
from .keyring import PRIMARY, RETIRED, VERIFY_ONLY, KeyRing
from .money import format_cents
from .policy import Policy, default_text
from .programme import DEFAULT_TOML, Programme
from .store import Card, Document, Store

DB_NAME, KEYRING_NAME, PROGRAMME_NAME, POLICY_NAME = "anoncard.db", "keyring.json", "programme.toml", "policy.toml"
_STATE_ORDER = {PRIMARY: 0, VERIFY_ONLY: 1, RETIRED: 2}

When = date | datetime | None


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the till prints. ``points`` is this document's change to the balance."""

    kind: str
    txn: str
    points: int
    balance: int
    spend: str = "0.00"
    gift: str | None = None
    reward: str | None = None
    refund_id: str | None = None
    gift_to_return: str | None = None
    discount: str | None = None
    coupons: tuple[dict, ...] = ()
    replayed: bool = False
    relinked: bool = False

    def to_dict(self) -> dict:
        """The receipt as JSON-ready fields, without the empty ones (read field by field:
        ``dataclasses.asdict`` costs a terminal 10 us a receipt)."""
        out = {name: value for name in self.__slots__ if (value := getattr(self, name)) is not None}
        if self.coupons:
            out["coupons"] = [dict(c) for c in self.coupons]
        else:
            del out["coupons"]
        return out


@dataclass(frozen=True, slots=True)
class IssuedCoupon:
    """A coupon as the entrance column prints it. ``code`` goes into the QR code."""

    code: str
    category: str
    kind: str
    value: int
    expires: str
    text: str
    new: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Entrance:
    coupons: list[IssuedCoupon]
    relinked: bool = False

    def to_dict(self) -> dict:
        return {"coupons": [c.to_dict() for c in self.coupons], "relinked": self.relinked}


@dataclass(frozen=True, slots=True)
class Balance:
    points: int
    visits: int
    recent: list[dict] = field(default_factory=list)
    relinked: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Retirement:
    version: int
    cards_purged: int

    def to_dict(self) -> dict:
        return asdict(self)


def init_home(home: Path, *, today: date | None = None) -> list[str]:
    """Create a home with a key ring, a programme and an empty database.

    Never overwrites an existing file. Returns the names of the files created.
    """
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    created = []
    ring_path = home / KEYRING_NAME
    if not ring_path.exists():
        KeyRing.create((today or date.today()).isoformat()).save(ring_path)
        created.append(KEYRING_NAME)
    for name, text in ((PROGRAMME_NAME, DEFAULT_TOML), (POLICY_NAME, default_text())):
        if not (home / name).exists():
            (home / name).write_text(text, encoding="utf-8")
            created.append(name)
    db_path = home / DB_NAME
    if not db_path.exists():
        created.append(DB_NAME)
    Service.open(home).close()
    return created


def event_payload(event_id: int, at: str, kind: str, detail: str) -> bytes:
    """The bytes of one event that its chain link covers."""
    return json.dumps([event_id, at, kind, detail], separators=(",", ":")).encode()


class Service:
    """anoncard's operations over one home (database, key ring, programme)."""

    def __init__(
        self,
        store: Store,
        ring: KeyRing,
        programme: Programme,
        policy: Policy | None = None,
        *,
        ring_path: Path | None = None,
        clock: Callable[[], datetime] = datetime.now,
        check_policy: bool = True,
    ) -> None:
        self.store, self.ring, self.programme = store, ring, programme
        self.policy = policy or Policy.default()
        self.ring_path = ring_path
        self.clock = clock
        self._stats: suggest.StoreStats | None = None
        self._reconcile_keys()
        self._check_policy(strict=check_policy)
        self._record_programme()

    @classmethod
    def open(
        cls,
        home: Path,
        *,
        clock: Callable[[], datetime] = datetime.now,
        synchronous: str = "FULL",
        check_policy: bool = True,
    ) -> Service:
        """Open an initialised home.

        ``check_policy=False`` opens a home whose policy file differs from the one last
        applied - only the audit does that, to report it.

        Raises:
            KeyRingError, ProgrammeError, PolicyFileError, StoreError: a file is missing
                or invalid, or the policy file was changed without ``policy apply``.
        """
        home = Path(home)
        ring_path = home / KEYRING_NAME
        ring = KeyRing.load(ring_path)
        programme = Programme.load(home / PROGRAMME_NAME)
        policy = Policy.load(home / POLICY_NAME)
        store = Store(home / DB_NAME, synchronous=synchronous)
        try:
            return cls(store, ring, programme, policy, ring_path=ring_path, clock=clock, check_policy=check_policy)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------

    def _day(self, at: When) -> str:
        """The stored form of a time: a calendar day, coarsened as the policy says."""
        when = self.clock() if at is None else at
        if isinstance(when, datetime):
            when = when.date()
        elif not isinstance(when, date):
            raise TypeError("at must be a date or datetime")
        return self.policy.coarsen(when).isoformat()

    def _validate(self, kind: str, request: Mapping):
        return self.policy.validate(kind, request, today=self.clock().date())

    def _record(self, kind: str, detail: dict) -> None:
        """Append an operator event to the hash-chained log (inside a transaction)."""
        last = self.store.last_event()
        event_id, previous = (1, bytes(32)) if last is None else (last[0] + 1, last[1])
        at = self.clock().isoformat(timespec="seconds")
        body = json.dumps(detail, sort_keys=True, separators=(",", ":"))
        mac = self.ring.event_mac(previous, event_payload(event_id, at, kind, body))
        self.store.add_event(event_id, at, kind, body, mac)

    def recorded_policy(self) -> str | None:
        """Fingerprint of the policy last applied, as the event log records it."""
        applied = self.store.events("policy_applied")
        return json.loads(applied[-1][3])["new"] if applied else None

    def _record_programme(self) -> None:
        """Earn rates, gifts and offers may change; every change is recorded in the event log."""
        changes = self.store.events("programme_changed")
        last = json.loads(changes[-1][3])["new"] if changes else None
        if last != self.programme.fingerprint:
            with self.store.transaction():
                self._record("programme_changed", {"old": last, "new": self.programme.fingerprint})

    def _check_policy(self, *, strict: bool) -> None:
        recorded = self.recorded_policy()
        if recorded is None:
            with self.store.transaction():
                self._record("policy_applied", {"old": None, "new": self.policy.fingerprint})
        elif recorded != self.policy.fingerprint and strict:
            raise PolicyFileError(
                f"policy: the policy file (fingerprint {self.policy.fingerprint[:12]}) is not the one last applied "
                f"({recorded[:12]}); change it only with 'anoncard policy apply FILE'"
            )

    def _resolve(self, secret: CardSecret) -> tuple[Card, bool]:
        """Find the card (inside a transaction); re-link it to the primary key if needed."""
        tokens = self.ring.tokens(secret)
        card = self.store.find_card(tokens)
        if card is None:
            raise UnknownCard("field 'card': unknown card (not issued here, or its key was retired)", field="card")
        primary_version, primary_token = tokens[0]
        if card.key_version != primary_version:
            self.store.relink(card.id, primary_token, primary_version)
            return Card(card.id, primary_version, card.balance), True
        return card, False

    def _reconcile_keys(self) -> None:
        """Bring the database's key states and the ring into agreement after any crash.

        A state only moves forward (primary -> verify-only -> retired), so the more
        advanced of the two records wins; a retirement the database finished but the
        ring file did not is completed by destroying the material.
        """
        stored = self.store.key_states()
        finish = [v.version for v in self.ring.versions if stored.get(v.version) == RETIRED and v.state == VERIFY_ONLY]
        for version in finish:
            self.ring.retire(version)
        if finish and self.ring_path is not None:
            self.ring.save(self.ring_path)
        wanted = {v.version: v.state for v in self.ring.versions}
        stale = {
            ver: st
            for ver, st in wanted.items()
            if ver not in stored or _STATE_ORDER[st] > _STATE_ORDER.get(stored[ver], -1)
        }
        if stale:
            with self.store.transaction():
                for ver, st in stale.items():
                    self.store.set_key_state(ver, st)

    @staticmethod
    def _content(kind: str, card_id: int, *parts: object) -> bytes:
        return hashlib.sha256(json.dumps([kind, card_id, *parts], separators=(",", ":")).encode()).digest()

    @staticmethod
    def _receipt(kind: str, txn: str, doc: Document, *, replayed: bool, relinked: bool = False, **extra) -> Receipt:
        return Receipt(
            kind=kind,
            txn=txn,
            points=doc.points,
            balance=doc.balance_after,
            spend=format_cents(doc.spend_cents),
            replayed=replayed,
            relinked=relinked,
            **extra,
        )

    # -- cards -----------------------------------------------------------------------

    def issue_cards(self, request: Mapping) -> list[CardSecret]:
        """Create ``count`` new cards; only their tokens are stored.

        Raises:
            PolicyViolation: count missing or out of range.
        """
        rec = self._validate("issue", request)
        secrets_ = [generate() for _ in range(rec.count)]
        primary = self.ring.primary
        with self.store.transaction():
            self.store.add_cards([primary.token(s) for s in secrets_], primary.version)
        return secrets_

    # -- checkout / refund / redeem ---------------------------------------------

    def checkout(self, request: Mapping, *, at: When = None) -> Receipt:
        """Credit a basket to a card, redeeming its coupons; returns the receipt.

        Raises:
            PolicyViolation, CardError: the gate refused the request.
            UnknownCard: no card matches under any live key.
            CouponError: a coupon is forged, expired, used, for another card, or its
                category is not in the basket (the whole checkout is refused).
            LedgerError: the document number was used with other content.
        """
        rec = self._validate("checkout", request)
        day = self._day(at)
        lines = sorted((ln.category, ln.cents) for ln in rec.lines)
        spend = sum(c for _, c in lines)
        points = self.programme.points_for(lines)
        gift = self.programme.gift_for(spend)
        per_category: dict[str, int] = {}
        for cat, cents in lines:
            per_category[cat] = per_category.get(cat, 0) + cents
        offers = [self._check_coupon(code, rec.card, day, per_category) for code in rec.coupons]
        discount = bonus = 0
        applied = []
        for c in offers:
            off, extra = coupon_codes.benefit(c, per_category[c.category])
            discount, bonus = discount + off, bonus + extra
            applied.append(_coupon_line(c.category, c.kind, c.value, off, extra))
        points += bonus
        ref = self.ring.reference("checkout", rec.txn)
        with self.store.transaction():
            card, relinked = self._resolve(rec.card)
            content = self._content("checkout", card.id, lines, sorted(c.id.hex() for c in offers))
            for c in offers:
                row = self.store.find_coupon(c.id)
                if row is None:
                    raise CouponError("field 'coupons': this coupon was not issued by this store", field="coupons")
                if row[0] != card.id:
                    raise CouponError("field 'coupons': this coupon was issued to another card", field="coupons")
            balance = card.balance + points
            txn_id = self.store.add_document(
                ref=ref,
                kind="checkout",
                card_id=card.id,
                day=day,
                content=content,
                lines=json.dumps(lines, separators=(",", ":")),
                spend_cents=spend,
                discount_cents=discount,
                points=points,
                balance_after=balance,
                item=gift.name if gift else None,
            )
            if txn_id is None:  # this document number is known: a retry, or a reuse
                doc = self.store.find_document(ref)
                self._same_content(doc, content, "txn")
                used = [
                    _coupon_line(cat, kind, value, *coupon_codes.benefit(
                        coupon_codes.Coupon(b"", 0, date.min, kind, value, b"", cat), _category_cents(doc, cat)))
                    for cat, kind, value in self.store.coupons_of_document(doc.id)
                ]  # fmt: skip
                return self._receipt(
                    "checkout", rec.txn, doc, replayed=True, relinked=relinked, gift=doc.item,
                    discount=format_cents(doc.discount_cents) if used else None, coupons=tuple(used),
                )  # fmt: skip
            for c in offers:
                if not self.store.redeem_coupon(c.id, txn_id):
                    raise CouponError(f"field 'coupons': the {c.category} coupon was already used", field="coupons")
            self.store.add_history(card.id, day, per_category, basket=True)
        return Receipt(
            "checkout",
            rec.txn,
            points,
            balance,
            format_cents(spend),
            gift=gift.name if gift else None,
            discount=format_cents(discount) if offers else None,
            coupons=tuple(applied),
            relinked=relinked,
        )

    def _check_coupon(self, code: str, secret: CardSecret, day: str, per_category: dict[str, int]):
        """Verify a coupon offline (signature, expiry, card binding, basket); no storage touched."""
        import hmac

        coupon = coupon_codes.verify(code, self.ring.coupon_public_key())
        if coupon.expires.isoformat() < day:
            raise CouponError(
                f"field 'coupons': the {coupon.category} coupon expired on {coupon.expires}", field="coupons"
            )
        if not hmac.compare_digest(coupon.binding, self.ring.binding(secret, coupon.id)):
            raise CouponError("field 'coupons': this coupon was issued to another card", field="coupons")
        if coupon.category not in per_category:
            raise CouponError(f"field 'coupons': the basket has no {coupon.category} for this coupon", field="coupons")
        return coupon

    @staticmethod
    def _same_content(doc: Document, content: bytes, name: str) -> None:
        if doc.content != content:
            raise LedgerError(
                f"field '{name}': this document number was already used with different content", field=name
            )

    def refund(self, request: Mapping, *, at: When = None) -> Receipt:
        """Return all or some lines of a checkout and reverse their points.

        Raises:
            PolicyViolation: the gate refused the request.
            LedgerError: unknown checkout, nothing left to refund, a line beyond what
                remains of the original, or a refund id reused with other content.
        """
        rec = self._validate("refund", request)
        self._day(at)  # refunds change the original day's history; validate `at` all the same
        refund_id = rec.refund_id or f"{rec.txn}#full"
        ref = self.ring.reference("refund", refund_id)
        with self.store.transaction():
            orig = self.store.find_document(self.ring.reference("checkout", rec.txn))
            if orig is None:
                raise LedgerError("field 'txn': no checkout with this transaction id", field="txn")
            orig_lines = [(c, a) for c, a in json.loads(orig.lines)]
            prior = self.store.children(orig.id)
            remaining: dict[str, int] = {}
            for cat, cents in orig_lines:
                remaining[cat] = remaining.get(cat, 0) + cents
            for doc in prior:
                for cat, cents in json.loads(doc.lines):
                    remaining[cat] -= cents
            if rec.lines is None:
                returned = sorted((c, a) for c, a in remaining.items() if a > 0)
            else:
                returned = sorted((ln.category, ln.cents) for ln in rec.lines)
            content = self._content("refund", orig.card_id, rec.txn, returned if rec.lines is not None else "all")
            doc = self.store.find_document(ref)
            if doc is not None:
                self._same_content(doc, content, "refund_id" if rec.refund_id else "txn")
                return self._receipt(
                    "refund", rec.txn, doc, replayed=True, refund_id=rec.refund_id, gift_to_return=doc.item
                )
            if not returned:
                raise LedgerError("field 'txn': this checkout is already fully refunded", field="txn")
            per_category: dict[str, int] = {}
            for cat, cents in returned:
                per_category[cat] = per_category.get(cat, 0) + cents
            kept_before = sum(remaining.values())
            for cat, cents in per_category.items():
                left = remaining.get(cat, 0)
                if cents > left:
                    raise LedgerError(
                        f"field 'lines': refund of {format_cents(cents)} in {cat!r} exceeds what remains of the "
                        f"original ({format_cents(max(left, 0))})",
                        field="lines",
                    )
                remaining[cat] = left - cents
            reversal = self._reversal(orig, orig_lines, remaining, prior)
            refunded = sum(per_category.values())
            balance = self.store.balance(orig.card_id) - reversal
            gift_back = self._gift_to_return(orig.item, kept_before, sum(remaining.values()))
            self.store.add_document(
                ref=ref,
                kind="refund",
                card_id=orig.card_id,
                parent_id=orig.id,
                day=orig.day,
                content=content,
                lines=json.dumps(returned, separators=(",", ":")),
                spend_cents=-refunded,
                points=-reversal,
                balance_after=balance,
                item=gift_back,
            )
            self.store.add_history(orig.card_id, orig.day, {c: -a for c, a in per_category.items()}, basket=False)
        return Receipt(
            "refund",
            rec.txn,
            -reversal,
            balance,
            format_cents(-refunded),
            refund_id=rec.refund_id,
            gift_to_return=gift_back,
        )

    def _gift_to_return(self, handed_over: str | None, kept_before: int, kept_after: int) -> str | None:
        """The gift the cashier asks back: only by the refund that takes the basket below its threshold."""
        gift = next((g for g in self.programme.gifts if g.name == handed_over), None)
        if gift is None or kept_after >= gift.min_spend_cents or kept_before < gift.min_spend_cents:
            return None
        return gift.name

    def _reversal(
        self, orig: Document, orig_lines: list[tuple[str, int]], remaining: dict[str, int], prior: list[Document]
    ) -> int:
        """Points this refund reverses: what the original earned, scaled by what is returned so far."""
        total = sum(self.programme.weight(c, a) for c, a in orig_lines)
        left = sum(self.programme.weight(c, a) for c, a in remaining.items())
        keep = orig.points * left // total if total else 0
        already = -sum(d.points for d in prior)
        return orig.points - keep - already

    def redeem(self, request: Mapping, *, at: When = None) -> Receipt:
        """Spend points on a reward from the catalogue.

        Raises:
            PolicyViolation, CardError: the gate refused the request or the reward is unknown.
            UnknownCard: no card matches.
            LedgerError: not enough points, or the document number was used with other content.
        """
        rec = self._validate("redeem", request)
        reward = self.programme.reward(rec.reward)
        day = self._day(at)
        ref = self.ring.reference("redeem", rec.txn)
        with self.store.transaction():
            card, relinked = self._resolve(rec.card)
            content = self._content("redeem", card.id, reward.name)
            doc = self.store.find_document(ref)
            if doc is not None:
                self._same_content(doc, content, "txn")
                return self._receipt("redeem", rec.txn, doc, replayed=True, relinked=relinked, reward=doc.item)
            balance = card.balance
            if reward.points > balance:
                raise LedgerError(
                    f"field 'reward': {reward.name!r} costs {reward.points} points, the card has {balance}",
                    field="reward",
                )
            self.store.add_document(
                ref=ref,
                kind="redeem",
                card_id=card.id,
                day=day,
                content=content,
                lines="[]",
                spend_cents=0,
                points=-reward.points,
                balance_after=balance - reward.points,
                item=reward.name,
            )
        return Receipt(
            "redeem", rec.txn, -reward.points, balance - reward.points, reward=reward.name, relinked=relinked
        )

    def balance(self, request: Mapping) -> Balance:
        """Points, visits and recent documents of the presented card.

        Raises:
            PolicyViolation, CardError: the gate refused the request.
            UnknownCard: no card matches.
        """
        rec = self._validate("balance", request)
        with self.store.transaction():
            card, relinked = self._resolve(rec.card)
            points = card.balance
            visits = self.store.visit_count(card.id)
            recent = [
                {"day": d.day, "kind": d.kind, "points": d.points, "spend": format_cents(d.spend_cents)}
                | ({"item": d.item} if d.item else {})
                for d in self.store.recent_documents(card.id)
            ]
        return Balance(points, visits, recent, relinked)

    # -- entrance ------------------------------------------------------------------------

    def category_stats(self) -> suggest.StoreStats:
        """Store-wide popularity and co-occurrence (cached; :meth:`refresh_stats` renews them)."""
        if self._stats is None:
            self._stats = suggest.StoreStats(*self.store.category_stats())
        return self._stats

    def refresh_stats(self) -> dict:
        """Recompute the store-wide category aggregates from the history kept, and prepare them
        here rather than in the next customer's ``enter``."""
        with self.store.transaction():
            counts = self.store.refresh_category_stats()
        self._stats = suggest.StoreStats(*self.store.category_stats())
        return counts

    def enter(self, request: Mapping, *, at: When = None) -> Entrance:
        """The entrance column: a few coupons that fit this card, within caps and fatigue rules.

        Returns the coupons the card still holds (reprinted) and the new ones.

        Raises:
            PolicyViolation, CardError: the gate refused the request.
            UnknownCard: no card matches.
        """
        rec = self._validate("enter", request)
        today_s = self._day(at)
        today = date.fromisoformat(today_s)
        rules = self.programme.coupons
        stats = self.category_stats()
        window = (today - timedelta(days=max(rules.rest_days, 7, rules.discovery_weeks * 7))).isoformat()
        with self.store.transaction():
            card, relinked = self._resolve(rec.card)
            recent = self.store.card_coupons(card.id, window)
            held = [c for c in recent if c[6] is None and c[5] >= today_s]
            finished = [c for c in recent if c[6] is not None or c[5] < today_s]
            week_ago = (today - timedelta(days=7)).isoformat()
            issued_week = sum(1 for c in recent if c[4] > week_ago)
            cap = min(rules.per_visit - len(held), rules.per_week - issued_week)
            last = finished[-rules.quiet_after :] if rules.quiet_after else []
            if rules.quiet_after and len(last) == rules.quiet_after and all(c[6] is None for c in last):
                cap = min(cap, 1 - len(held))  # a card that ignores everything gets one at a time
            picks = []
            if cap > 0:
                since = (today - timedelta(weeks=rules.discovery_weeks)).isoformat()
                history, affinity, visits = self.store.card_profile(card.id, since=since)
                picks = suggest.suggest(
                    history,
                    visits,
                    affinity=affinity,
                    today=today,
                    stats=stats,
                    k=cap,
                    exclude={c[1] for c in held} | _resting(finished, today, rules.rest_after, rules.rest_days),
                    department=self.programme.department,
                    discovery_weeks=rules.discovery_weeks,
                    allowed=None
                    if self.programme.offer_for("*")
                    else (lambda c: self.programme.offer_for(c) is not None),
                )
            expires = today + timedelta(days=max(rules.valid_days, 1) - 1)
            new = []
            for pick in picks:
                offer = self.programme.offer_for(pick.category)
                new.append(
                    (
                        coupon_codes.new_id(),
                        card.id,
                        pick.category,
                        offer.kind,
                        offer.value,
                        today_s,
                        expires.isoformat(),
                    )
                )
            self.store.add_coupons(new)
        printed = [self._print_coupon(rec.card, c[0], c[1], c[2], c[3], c[5], False) for c in held]
        printed += [self._print_coupon(rec.card, c[0], c[2], c[3], c[4], c[6], True) for c in new]
        return Entrance(printed, relinked)

    def _print_coupon(
        self, secret: CardSecret, cid: bytes, category: str, kind: str, value: int, expires: str, new: bool
    ) -> IssuedCoupon:
        coupon = coupon_codes.Coupon(
            cid,
            self.ring.coupon_key_id,
            date.fromisoformat(expires),
            kind,
            value,
            self.ring.binding(secret, cid),
            category,
        )
        code = coupon_codes.encode(coupon, self.ring.coupon_private_key())
        return IssuedCoupon(code, category, kind, value, expires, coupon.describe(), new)

    # -- keys --------------------------------------------------------------------------

    def _save_ring(self) -> None:
        if self.ring_path is not None:
            self.ring.save(self.ring_path)

    def list_keys(self) -> list[dict]:
        """Versions, states and how many cards each still links (never key material)."""
        return [
            {"version": v.version, "state": v.state, "created": v.created, "cards": self.store.count_cards(v.version)}
            for v in self.ring.versions
        ]

    def rotate_keys(self, *, at: When = None) -> int:
        """Add a new primary key version; the old primary becomes verify-only. Returns the new version."""
        new = self.ring.rotate(self._day(at))
        self._save_ring()
        with self.store.transaction():
            for v in self.ring.versions:
                self.store.set_key_state(v.version, v.state)
            self._record("key_rotated", {"primary": new.version})
        return new.version

    def retire_key(self) -> Retirement:
        """Destroy the oldest verify-only key and purge every card still linked only under it.

        The database purge commits first, then the key material is destroyed in the ring
        file; a crash in between is completed on the next open (see ``_reconcile_keys``).

        Raises:
            KeyRingError: there is no verify-only key.
        """
        version = self.ring.oldest_verify_only().version
        with self.store.transaction():
            self.store.set_key_state(version, RETIRED)
            purged = self.store.purge_key_version(version)
            self._record("key_retired", {"version": version, "cards_purged": purged})
        self.ring.retire(version)
        self._save_ring()
        return Retirement(version, purged)

    # -- backup ---------------------------------------------------------------------

    def backup(self, dest: Path) -> dict:
        """Copy the database to ``dest`` (consistent while terminals write). The key ring is
        not in it: keep the two apart (see docs/operations.md)."""
        return self.store.backup(dest)

    def restore(self, source: Path) -> dict:
        """Replace the database with a backup, then bring it in line with the key ring:
        cards under versions retired since the backup are purged again.

        Raises:
            StoreError: the backup is missing, damaged or of another schema version.
        """
        self.store.restore_from(source)
        self._stats = None
        self._reconcile_keys()
        purged = 0
        with self.store.transaction():
            for v in self.ring.versions:
                if v.state == RETIRED and self.store.count_cards(v.version):
                    purged += self.store.purge_key_version(v.version)
            self._record("restored", {"cards_purged_again": purged})
            recorded = self.recorded_policy()
            if recorded != self.policy.fingerprint:  # the policy in force now, not the backup's
                self._record("policy_applied", {"old": recorded, "new": self.policy.fingerprint})
        return {"cards": self.store.count_cards(), "cards_purged_again": purged}

    # -- policy and retention -------------------------------------------------------

    def apply_policy(self, text: str, path: Path | None = None) -> dict:
        """Adopt a new policy: validate it, record old and new fingerprints, write the file.

        Raises:
            PolicyFileError: the new policy is invalid (nothing changes).
        """
        new = Policy.from_toml(text)
        old = self.recorded_policy()
        with self.store.transaction():
            self._record("policy_applied", {"old": old, "new": new.fingerprint})
        if path is not None:
            tmp = Path(path).with_suffix(".toml.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        self.policy = new
        return {"old": old, "new": new.fingerprint}

    def purge(self, *, at: When = None) -> dict:
        """Apply the policy's retention: compact old documents, fold old history.

        Balances never change: the transaction is rolled back if one would.
        """
        today = date.fromisoformat(self._day(at))
        doc_cutoff = (today - timedelta(days=self.policy.documents_days)).isoformat()
        hist_cutoff = (today - timedelta(days=self.policy.history_days)).isoformat()
        with self.store.transaction():
            before = self.store.balances()
            with self.store.maintenance():
                counts = self.store.compact_documents(doc_cutoff) | self.store.fold_history(hist_cutoff)
            if self.store.balances() != before:
                raise LedgerError("retention purge would change a balance; nothing was purged")
            counts |= {"documents before": doc_cutoff, "history before": hist_cutoff}
            self._record("retention_purge", counts)
        counts |= {f"stats {k}": v for k, v in self.refresh_stats().items()}
        return counts


def _coupon_line(category: str, kind: str, value: int, discount: int, bonus: int) -> dict:
    return {
        "category": category,
        "kind": kind,
        "value": value,
        "discount": format_cents(discount),
        "bonus_points": bonus,
    }


def _category_cents(doc: Document, category: str) -> int:
    return sum(a for c, a in json.loads(doc.lines) if c == category)


def _resting(finished: list[tuple], today: date, rest_after: int, rest_days: int) -> set[str]:
    """Categories whose last ``rest_after`` finished coupons were all ignored, within ``rest_days``."""
    by_category: dict[str, list[tuple]] = {}
    for c in finished:
        by_category.setdefault(c[1], []).append(c)
    resting = set()
    for category, rows in by_category.items():
        last = rows[-rest_after:]
        ignored = rest_after > 0 and len(last) == rest_after and all(r[6] is None for r in last)
        if ignored and (today - date.fromisoformat(last[-1][5])).days < rest_days:
            resting.add(category)
    return resting
