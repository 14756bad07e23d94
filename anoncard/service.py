"""The façade terminals, readers and operators call.

Every public method takes the raw request mapping, passes it through the gate
(:func:`anoncard.policy.validate`) and only then touches the key ring and the store.
Time is the service's: operational time comes from the injected clock (so tests are
deterministic). An explicit ``at=`` (a date or datetime, coarsened to the day) dates an
offline replay or an import, only inside the window the policy's ``[time]`` section
declares around the clock; it never decides a coupon's issue day, expiry or validity,
and a retention purge takes none.

Points rules (see docs/threat_model.md for the why):

* a checkout is idempotent by its till document number: the same number with the
  same content returns the original receipt and credits nothing; with different
  content it is refused;
* a refund reverses what the checkout's own record says its lines earned (points
  under the programme of that day, coupon bonus points and discounts per category),
  cumulatively, so refunding a whole basket in parts reverses exactly what it
  earned, whatever the programme says today; a refund is never refused for lack of
  points - the balance may go negative, which blocks redemptions until it is earned
  back. So buy -> redeem -> refund never leaves a card ahead;
* a redemption costing more than the balance is refused.

Keys across processes. The database is the authority on key states; the ring file
holds the material. Every transaction starts by reading the database's key
generation (one primary-key SELECT inside the transaction already open); when it
moved, the service rebuilds its ring from the file and the database's states,
re-reading the file if it lacks a version the database knows, and refusing with a
KeyRingError if the file is older than the database. So a long-lived process never
tokenises under a key another process rotated away or retired, and a card it
presents after a rotation is re-linked to the new primary before any retirement can
purge it. Key operations (rotate, retire, restore, :meth:`Service.prepare`) run
under the ring file's lock (:func:`anoncard.keyring.key_lock`) and the database's
key-operation lock (``Storage.key_operation_lock``: on PostgreSQL an advisory lock, so
servers of different hosts, each with its own ring file, are served one at a time too),
which span the file write and the database transaction.

Opening writes nothing (the audit opens homes it must not change). The records a
process owes the event log at start - the policy and programme in force - are made
in its first write transaction; finishing what a crash left of a key operation is
:meth:`Service.prepare`, which ``init_home`` and every CLI command run, and which
every key operation runs first.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from . import arms, files, ranker, suggest
from . import coupons as coupon_codes
from . import recovery as recovery_codes
from .cards import CardSecret, generate
from .errors import (
    CouponError,
    InsightsRefused,
    KeyRingError,
    LedgerError,
    ModelError,
    OutputError,
    PolicyFileError,
    PolicyViolation,
    ProgrammeError,
    StoreError,
    UnknownCard,
)
from .keyring import PRIMARY, RETIRED, VERIFY_ONLY, KeyRing, key_lock
from .money import format_cents
from .policy import Policy, default_text
from .programme import DEFAULT_TOML, Programme
from .recovery import RecoveryCode
from .storage import Card, CouponRow, Document, GhostRow, Storage, database_url, open_storage
from .vocabulary import PRIVATE_LABEL

DB_NAME, KEYRING_NAME, PROGRAMME_NAME, POLICY_NAME = "anoncard.db", "keyring.json", "programme.toml", "policy.toml"
_STATE_ORDER = {PRIMARY: 0, VERIFY_ONLY: 1, RETIRED: 2}

When = date | datetime | None


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the till prints. ``points`` is this document's change to the balance.

    On a refund, ``spend`` is the returned lines' price (negative) and ``discount`` the part
    of it coupons took off at checkout (negative too): the till pays back the difference.
    """

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
class IssuedCard:
    """A new card and the recovery code printed on its detachable stub (``repr`` shows neither)."""

    card: CardSecret
    recovery: RecoveryCode

    def to_dict(self) -> dict:
        return {"card": self.card.code, "recovery": self.recovery.code}


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
    """``wal_cleared`` is False when a reader's open snapshot kept the WAL from being emptied:
    the purged rows' older copies stay in the WAL file until the next checkpoint."""

    version: int
    cards_purged: int
    wal_cleared: bool = True

    def to_dict(self) -> dict:
        out = {"version": self.version, "cards_purged": self.cards_purged}
        return out if self.wal_cleared else out | {"wal_cleared": False}


def init_home(home: Path, *, today: date | None = None) -> list[str]:
    """Create a home with a key ring, a programme and an empty database.

    Never overwrites an existing file. Returns the names of the files created.

    Raises:
        KeyRingError: the key ring is missing but the database was already used with one
            (a new ring would make every card unknown and break the event log's chain).
    """
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    created = []
    ring_path = home / KEYRING_NAME
    db_path = home / DB_NAME
    url = database_url(home)
    if not ring_path.exists():
        if url is not None or db_path.exists():
            _refuse_new_ring(home, ring_path)
        KeyRing.create((today or date.today()).isoformat()).save(ring_path)
        created.append(KEYRING_NAME)
    for name, text in ((PROGRAMME_NAME, DEFAULT_TOML), (POLICY_NAME, default_text())):
        if not (home / name).exists():
            (home / name).write_text(text, encoding="utf-8")
            created.append(name)
    if url is None and not db_path.exists():
        created.append(DB_NAME)
    with Service.open(home) as svc:
        svc.prepare()
    return created


def migrate_home(home: Path) -> dict:
    """Open the home's database, which applies every migration it lacks; what it is now.

    Raises:
        StoreError: the database cannot be opened, or its schema is newer than this anoncard.
    """
    store = open_storage(Path(home), DB_NAME)
    try:
        backend = "postgresql" if database_url(Path(home)) is not None else "sqlite"
        return {"database": store.describe(), "backend": backend, "schema_version": store.schema_version()}
    finally:
        store.close()


def _refuse_new_ring(home: Path, ring_path: Path) -> None:
    store = open_storage(home, DB_NAME)
    try:
        used = bool(store.key_states()) or bool(store.events())
        cards = store.count_cards()
    finally:
        store.close()
    if used:
        raise KeyRingError(
            f"key ring: {ring_path} is missing but {store.describe()} already holds {cards} cards and an event log "
            f"made with a key ring; restore {ring_path.name} from its export ('anoncard keys export') - a new key "
            "ring would make every card unknown"
        )


def event_payload(event_id: int, at: str, kind: str, detail: str) -> bytes:
    """The bytes of one event that its chain link covers."""
    return json.dumps([event_id, at, kind, detail], separators=(",", ":")).encode()


class Service:
    """anoncard's operations over one home (database, key ring, programme)."""

    def __init__(
        self,
        store: Storage,
        ring: KeyRing,
        programme: Programme,
        policy: Policy | None = None,
        *,
        ring_path: Path | None = None,
        clock: Callable[[], datetime] = datetime.now,
        check_policy: bool = True,
        model_path: Path | None = None,
    ) -> None:
        self.store, self.ring, self.programme = store, ring, programme
        self.model_path = model_path
        self._model: tuple[tuple, ranker.Model | None] = ((), None)  # (the file's identity, its model)
        self.policy = policy or Policy.default()
        self.ring_path = ring_path
        self.clock = clock
        self._stats: suggest.StoreStats | None = None
        self._stats_generation = -1
        self._file_ring = ring  # the ring file as last read; ``self.ring`` is it under the database's states
        self._key_generation: int | None = None  # the generation ``self.ring`` was built at
        self._recorded = False  # the startup records are made (first write transaction)
        self._in_key_operation = False
        self._check_policy(strict=check_policy)
        store.on_begin = self._begin

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
        store = open_storage(home, DB_NAME, synchronous=synchronous)
        try:
            return cls(
                store,
                ring,
                programme,
                policy,
                ring_path=ring_path,
                clock=clock,
                check_policy=check_policy,
                model_path=home / ranker.MODEL_NAME,
            )
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

    def _today(self) -> date:
        """The service clock's calendar day: operational time, never a request's."""
        return self.clock().date()

    def _day(self, at: When) -> str:
        """The stored form of a time: a calendar day, coarsened as the policy says.

        ``at`` is an explicit time (a replay or an import); it must lie in the policy's
        ``[time]`` window around the clock (PolicyViolation naming field 'at' otherwise).
        """
        day = self._today() if at is None else self.policy.explicit_time(at, self.clock()).date()
        return self.policy.coarsen(day).isoformat()

    @staticmethod
    def _no_explicit_time(at: When, why: str) -> None:
        if at is not None:
            raise PolicyViolation(f"field 'at': {why}; an explicit time is not accepted here", field="at")

    def _validate(self, kind: str, request: Mapping):
        return self.policy.validate(kind, request, today=self.clock().date(), categories=self.programme.vocabulary)

    def _record(self, kind: str, detail: dict) -> None:
        """Append an operator event to the hash-chained log (inside a transaction)."""
        last = self.store.last_event()
        event_id, previous = (1, bytes(32)) if last is None else (last.id + 1, last.mac)
        at = self.clock().isoformat(timespec="seconds")
        body = json.dumps(detail, sort_keys=True, separators=(",", ":"))
        mac = self.ring.event_mac(previous, event_payload(event_id, at, kind, body))
        self.store.add_event(event_id, at, kind, body, mac)

    def recorded_policy(self) -> str | None:
        """Fingerprint of the policy last applied, as the event log records it."""
        applied = self.store.events("policy_applied")
        return json.loads(applied[-1].detail)["new"] if applied else None

    def _startup_records(self) -> None:
        """Inside this process's first write transaction: record the policy in force if the log
        has none yet, and the programme if it changed (earn rates, gifts and offers may change;
        every change is recorded in the event log)."""
        self._recorded = True
        if self.recorded_policy() is None:
            self._record("policy_applied", {"old": None, "new": self.policy.fingerprint})
        changes = self.store.events("programme_changed")
        last = json.loads(changes[-1].detail)["new"] if changes else None
        if last != self.programme.fingerprint:
            self._record("programme_changed", {"old": last, "new": self.programme.fingerprint})

    def _check_policy(self, *, strict: bool) -> None:
        recorded = self.recorded_policy()
        if recorded is not None and recorded != self.policy.fingerprint and strict:
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

    # -- keys across processes -------------------------------------------------------

    def _begin(self) -> None:
        """Run by the store right after every BEGIN: check the key generation (one SELECT) and
        rebuild the ring if another process changed the key states; make the startup records
        in the first write transaction."""
        if self._in_key_operation:
            return
        generation = self.store.key_generation()
        if generation != self._key_generation:
            stored = self.store.key_states()
            if not stored:  # a database no key state has reached yet: the ring's states are the first
                for v in self._file_ring.versions:
                    self.store.set_key_state(v.version, v.state)  # the database moves the generation
                generation = self.store.key_generation()
                stored = self.store.key_states()
            self.ring = self._ring_under(stored)
            self._key_generation = generation
        if not self._recorded:
            self._startup_records()

    def _ring_under(self, stored: dict[int, str]) -> KeyRing:
        """The ring under the database's states; the file is read again if it lacks one of them.
        Material of a version the database retired is dropped from this process's memory too."""
        try:
            ring = self._file_ring.with_states(stored)
        except KeyRingError:
            if self.ring_path is None:
                raise
            self._reload_ring_file()
            ring = self._file_ring.with_states(stored)
        for v in self._file_ring.versions:
            if stored.get(v.version) == RETIRED and v.state == VERIFY_ONLY:
                self._file_ring.retire(v.version)
        return ring

    def _reload_ring_file(self) -> None:
        if self.ring_path is None:
            return
        fresh = KeyRing.load(self.ring_path)
        if not fresh.same_installation(self._file_ring):
            raise KeyRingError(
                f"key ring: {self.ring_path} now holds another installation's keys; restore this home's key ring"
            )
        self._file_ring = fresh

    def prepare(self) -> Service:
        """The start of a process that writes: finish what a crash left of a key operation and
        make the startup records. Returns the service.

        Raises:
            KeyRingError: the key ring file is older than the database, or another ring.
        """
        with key_lock(self.ring_path), self.store.key_operation_lock():
            self._reconcile_keys()
        return self

    def _reconcile_keys(self) -> None:
        """Under the key lock: bring the database's key states and the ring file into agreement
        after any crash, from a fresh read of the file.

        A state only moves forward (primary -> verify-only -> retired), so the more advanced
        of the two records wins: a rotation that reached only the file is recorded, and a
        retirement the database finished but the file did not is completed by destroying
        the material. A version the database knows but the file lacks is refused.
        """
        self._reload_ring_file()
        ring = self._file_ring
        self._in_key_operation = True
        try:
            with self.store.transaction():
                stored = self.store.key_states()
                if set(stored) - {v.version for v in ring.versions}:
                    ring.with_states(stored)  # raises: the file is older than the database
                finish = [
                    v.version for v in ring.versions if stored.get(v.version) == RETIRED and v.state == VERIFY_ONLY
                ]
                stale = {
                    v.version: v.state
                    for v in ring.versions
                    if v.version not in stored or _STATE_ORDER[v.state] > _STATE_ORDER[stored[v.version]]
                }
                for version, state in stale.items():
                    self.store.set_key_state(version, state)  # each change moves the key generation
                if not self._recorded:
                    self._startup_records()
        finally:
            self._in_key_operation = False
        if finish:
            for version in finish:
                ring.retire(version)
            self._save_ring(ring)
        self._refresh_ring()

    def _refresh_ring(self) -> None:
        """Rebuild ``self.ring`` from the ring file as last read and the database's states now."""
        self._key_generation = None
        with self.store.transaction():
            pass

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

    def issue_cards(
        self,
        request: Mapping,
        *,
        qr_dir: Path | None = None,
        qr_format: str = "png",
        emit: Callable[[list[CardSecret], list[Path]], None] | None = None,
    ) -> list[CardSecret]:
        """Create ``count`` new cards; only their tokens are stored. The card secrets of
        :meth:`issue_cards_with_stubs` (whose recovery codes are not delivered: use that
        method where the stubs are printed)."""
        relay = None if emit is None else (lambda issued, written: emit([c.card for c in issued], written))
        return [c.card for c in self.issue_cards_with_stubs(request, qr_dir=qr_dir, qr_format=qr_format, emit=relay)]

    def issue_cards_with_stubs(
        self,
        request: Mapping,
        *,
        qr_dir: Path | None = None,
        qr_format: str = "png",
        emit: Callable[[list[IssuedCard], list[Path]], None] | None = None,
    ) -> list[IssuedCard]:
        """Create ``count`` new cards, each with the recovery code of its detachable stub; only
        their tokens and the keyed digests of the recovery codes are stored.

        The codes are the only copies of the card secrets, so they are delivered before the
        cards are stored: first every QR file (``qr_dir``: ``card-000001.png`` on, durable),
        then ``emit`` (which prints the codes), then one transaction stores the cards. If any
        step fails no card is stored and the QR files are removed: a card never exists whose
        code nobody received. (A code printed for a run that then failed is void.)

        Raises:
            PolicyViolation: count missing or out of range; the QR directory is refused.
            OutputError: a QR file or the codes could not be written (no card stored).
            StoreError: the database could not be written (no card stored).
        """
        rec = self._validate("issue", request)
        issued = [IssuedCard(generate(), recovery_codes.generate()) for _ in range(rec.count)]
        from . import qr  # only print runs pay for the QR library

        written = [] if qr_dir is None else qr.write_run([c.card.code for c in issued], qr_dir, "card-", qr_format)
        try:
            if emit is not None:
                try:
                    emit(issued, written)
                except OSError as exc:
                    raise OutputError(
                        f"output: the card codes could not be written ({exc.strerror or type(exc).__name__});"
                        " no card was stored"
                    ) from None
            with self.store.transaction():  # the primary as the database says, checked at its start
                primary = self.ring.primary
                tokens = [primary.token(c.card) for c in issued]
                self.store.add_cards(tokens, primary.version)
                digest = self.ring.recovery_digest
                self.store.add_recovery([(t, digest(c.recovery)) for t, c in zip(tokens, issued, strict=True)])
        except StoreError as exc:
            qr.remove(written)
            raise StoreError(f"{exc.message}; no card was stored, any code shown for this run is void") from None
        except BaseException:
            qr.remove(written)
            raise
        return issued

    # -- checkout / refund / redeem ---------------------------------------------

    def checkout(self, request: Mapping, *, at: When = None) -> Receipt:
        """Credit a basket to a card, redeeming its coupons; returns the receipt.

        ``at`` dates an offline replay (within the policy's ``[time]`` window); a checkout
        that redeems coupons takes none: coupons are checked against the service's clock.

        Raises:
            PolicyViolation, CardError: the gate refused the request, or ``at`` is outside
                the window (or given with coupons).
            UnknownCard: no card matches under any live key.
            CouponError: a coupon is forged, expired, used, for another card, or its
                category is not in the basket (the whole checkout is refused).
            LedgerError: the document number was used with other content.
        """
        rec = self._validate("checkout", request)
        if rec.coupons:
            self._no_explicit_time(at, "a checkout that redeems coupons is dated by the server's clock")
        day = self._day(at)
        # what the card's rows may hold: a sensitive category only under the neutral label
        lines = sorted((ln.stored, ln.cents) for ln in rec.lines)
        spend = sum(c for _, c in lines)
        gift = self.programme.gift_for(spend)
        per_category: dict[str, int] = {}
        for cat, cents in lines:
            per_category[cat] = per_category.get(cat, 0) + cents
        today = self._today()
        offers = [self._check_coupon(code, rec.card, today, per_category) for code in rec.coupons]
        discount = bonus = 0
        applied = []
        benefits: dict[str, tuple[int, int]] = {}
        for c in offers:
            off, extra = coupon_codes.benefit(c, per_category[c.category])
            discount, bonus = discount + off, bonus + extra
            was = benefits.get(c.category, (0, 0))
            benefits[c.category] = (was[0] + extra, was[1] + off)
            applied.append(_coupon_line(c.category, c.kind, c.value, off, extra))
        record = earned_lines(self.programme, lines, benefits)
        points = self.programme.points_for(lines) + bonus
        digests = [self.ring.coupon_digest(c.id) for c in offers]
        ref = self.ring.reference("checkout", rec.txn)
        with self.store.transaction():
            card, relinked = self._resolve(rec.card)
            # the coupons by their keyed digests: a digest of the printed ids would let a slip find its document
            content = self._content("checkout", card.id, lines, sorted(d.hex() for d in digests))
            for digest in digests:
                row = self.store.find_coupon(digest)
                if row is None:
                    raise CouponError("field 'coupons': this coupon was not issued by this store", field="coupons")
                if row.card_id != card.id:
                    raise CouponError("field 'coupons': this coupon was issued to another card", field="coupons")
            balance = card.balance + points
            txn_id = self.store.add_document(
                ref=ref,
                kind="checkout",
                card_id=card.id,
                day=day,
                content=content,
                lines=json.dumps(record, separators=(",", ":")),
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
                    for cat, kind, value in ((u.category, u.kind, u.value)
                                             for u in self.store.coupons_of_document(doc.id))
                ]  # fmt: skip
                return self._receipt(
                    "checkout", rec.txn, doc, replayed=True, relinked=relinked, gift=doc.item,
                    discount=format_cents(doc.discount_cents) if used else None, coupons=tuple(used),
                )  # fmt: skip
            for c, digest in zip(offers, digests, strict=True):
                if not self.store.redeem_coupon(digest, txn_id):
                    raise CouponError(f"field 'coupons': the {c.category} coupon was already used", field="coupons")
            history = {c: a for c, a in per_category.items() if c != PRIVATE_LABEL}
            self.store.add_history(card.id, day, history, basket=True)
            sensitive: dict[str, int] = {}
            for ln in rec.lines:
                if ln.sensitive:
                    sensitive[ln.category] = sensitive.get(ln.category, 0) + ln.cents
            if sensitive:  # counted store-wide, by week, with no card
                self.store.add_category_weeks(_week(day), sensitive)
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

    def _check_coupon(self, code: str, secret: CardSecret, today: date, per_category: dict[str, int]):
        """Verify a coupon offline (signature, expiry by the service's clock, card binding,
        basket); no storage touched."""
        import hmac

        coupon = coupon_codes.verify(code, self.ring.coupon_public_key())
        if coupon.expires < today:
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
        """Return all or some lines of a checkout and reverse what they earned.

        The reversal is read from the checkout's own record (points per line under the
        programme of that day, coupon bonus and discount per category), never from today's
        programme; checkouts recorded before lines carried their points are reversed in
        proportion to the points-weighted value returned, as then.

        Raises:
            PolicyViolation: the gate refused the request, or ``at`` is outside the window.
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
            self.store.lock_card(orig.card_id)  # before reading what earlier refunds returned
            orig_rows = json.loads(orig.lines)
            orig_lines = [(r[0], r[1]) for r in orig_rows]
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
                returned = sorted((ln.stored, ln.cents) for ln in rec.lines)
            content = self._content("refund", orig.card_id, rec.txn, returned if rec.lines is not None else "all")
            doc = self.store.find_document(ref)
            if doc is not None:
                self._same_content(doc, content, "refund_id" if rec.refund_id else "txn")
                return self._receipt(
                    "refund", rec.txn, doc, replayed=True, refund_id=rec.refund_id, gift_to_return=doc.item,
                    discount=format_cents(doc.discount_cents) if doc.discount_cents else None,
                )  # fmt: skip
            if not returned:
                raise LedgerError("field 'txn': this checkout is already fully refunded", field="txn")
            per_category: dict[str, int] = {}
            for cat, cents in returned:
                per_category[cat] = per_category.get(cat, 0) + cents
            kept_before = sum(remaining.values())
            left_before = dict(remaining)
            for cat, cents in per_category.items():
                left = remaining.get(cat, 0)
                if cents > left:
                    raise LedgerError(
                        f"field 'lines': refund of {format_cents(cents)} in {cat!r} exceeds what remains of the "
                        f"original ({format_cents(max(left, 0))})",
                        field="lines",
                    )
                remaining[cat] = left - cents
            if all(len(r) == len(_RECORD_FIELDS) for r in orig_rows):
                reversal, discount_back = reverse_recorded(orig_rows, orig.points, left_before, remaining)
            else:  # recorded before lines carried their points
                reversal, discount_back = self._reversal(orig, orig_lines, remaining, prior), 0
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
                discount_cents=-discount_back,
                points=-reversal,
                balance_after=balance,
                item=gift_back,
            )
            self.store.add_history(
                orig.card_id, orig.day, {c: -a for c, a in per_category.items() if c != PRIVATE_LABEL}, basket=False
            )
        return Receipt(
            "refund",
            rec.txn,
            -reversal,
            balance,
            format_cents(-refunded),
            refund_id=rec.refund_id,
            gift_to_return=gift_back,
            discount=format_cents(-discount_back) if discount_back else None,
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
        """Points this refund reverses from a checkout recorded without per-line points: what
        the original earned, scaled by the points-weighted value returned so far (today's
        programme weighs it)."""
        total = sum(self.programme.weight(c, a) for c, a in orig_lines)
        left = sum(self.programme.weight(c, a) for c, a in remaining.items())
        keep = orig.points * left // total if total else 0
        already = -sum(d.points for d in prior)
        return orig.points - keep - already

    def redeem(self, request: Mapping, *, at: When = None) -> Receipt:
        """Spend points on a reward from the catalogue, dated by the service's clock (never
        queued offline, so ``at`` is refused).

        Raises:
            PolicyViolation, CardError: the gate refused the request, the reward is unknown,
                or ``at`` was given.
            UnknownCard: no card matches.
            LedgerError: not enough points, or the document number was used with other content.
        """
        rec = self._validate("redeem", request)
        self._no_explicit_time(at, "a redemption needs the server and is dated by its clock")
        reward = self.programme.reward(rec.reward)
        day = self._day(None)
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

    # -- insights ------------------------------------------------------------------------

    def insights(self, request: Mapping):
        """Release a span's differentially private figures (:mod:`anoncard.insights`), or with
        ``report`` the coupon arms' uplift over a campaign period (:mod:`anoncard.uplift`) or the
        retention of monthly cohorts (:mod:`anoncard.cohorts`), and record the release in the
        event log: the budget (each kind's own) is checked before computing and again under the
        write lock, so of two releases racing for the same budget one is refused.

        Needs the ``insights`` extra (OpenDP); ``import anoncard`` never loads it.

        Raises:
            PolicyViolation: the request breaks the gate (period, ending, grouping).
            InsightsRefused: the policy declares no budget (for this kind), the span is not over
                or not whole weeks (months, a campaign period), the programme holds no cards out
                (uplift), or the release would spend more than the budget declares.
        """
        from . import insights

        record = self._validate("insights", request)
        rules = self.policy.insights
        if rules is None:
            raise InsightsRefused("insights: the policy declares no [insights] budget, so nothing is released")
        if record.report == "uplift":
            return self._uplift(record, rules)
        if record.report == "cohorts":
            return self._cohorts(record, rules)
        first, last = insights.span(record.period, record.ending, self._today())
        days = (last - first).days + 1
        categories = sorted(
            c for c in self.programme.vocabulary.categories if c not in self.programme.vocabulary.sensitive
        )
        planned = {"first_day": first.isoformat(), "last_day": last.isoformat(), "epsilon": rules.epsilon_per_period}
        with self.store.reading():  # one snapshot; tills go on while the noise is drawn
            self._refuse_past_budget(planned, rules)  # refused before any computing
            data = insights.SpanData(
                first=first,
                last=last,
                spend=self.store.spend_rows(first.isoformat(), last.isoformat()),
                visits=self.store.visit_rows(first.isoformat(), last.isoformat()),
                previous_visits=self.store.visit_rows(
                    (first - timedelta(days=days)).isoformat(), (first - timedelta(days=1)).isoformat()
                ),
                first_visits=self.store.first_visit_days(),
                coupons=self.store.coupon_uses(first.isoformat(), last.isoformat()),
            )
        result = insights.release(data, categories, rules, period=record.period, grouping=record.grouping)
        return self._keep_release(planned, rules, result)

    def _uplift(self, record, rules):
        """The coupon arms' uplift over one campaign period (:mod:`anoncard.uplift`)."""
        from . import uplift

        campaign = self.programme.campaign
        budget = rules.budget("uplift")
        if budget is None:
            raise InsightsRefused(
                "insights: the policy declares no uplift budget (uplift_epsilon); nothing was released"
            )
        if campaign.holdout == 0:
            raise InsightsRefused(
                "insights: the programme holds no cards out (campaign.holdout = 0), so there is no arm to compare "
                "with; nothing was released"
            )
        today = self._today()
        ending = record.ending
        number = arms.period_of(campaign, today) - 1 if ending is None else arms.period_of(campaign, ending)
        first, last = arms.period_span(campaign, number)
        if record.ending is not None and record.ending != last:
            raise InsightsRefused(
                f"field 'ending': must be the last day of a campaign period ({campaign.weeks} weeks from "
                f"campaign.first_day)",
                field="ending",
            )
        if last >= today:
            raise InsightsRefused(
                "field 'ending': must be before today (a campaign period is released once it is over)", field="ending"
            )
        planned = {"report": "uplift", "first_day": first.isoformat(), "last_day": last.isoformat(),
                   "epsilon": budget[0]}  # fmt: skip
        a, b = first.isoformat(), last.isoformat()
        with self.store.reading():
            self._refuse_past_budget(planned, rules)
            data = uplift.UpliftData(
                period=number,
                first=first,
                last=last,
                arms={t.card_id: arms.arm(self.ring, campaign, t.token, number) for t in self.store.card_tokens()},
                offers=self.store.offer_rows(a, b),
                ghosts=self.store.ghost_rows(a, b),
                spend=self.store.spend_rows(a, b),
                visits=self.store.visit_rows(a, b),
                discounts=self.store.discount_rows(a, b),
                rotated=self.store.count_events("key_rotated", a, b) > 0,
            )
        result = uplift.release(data, rules, grouping=record.grouping)
        return self._keep_release(planned, rules, result)

    def _cohorts(self, record, rules):
        """The retention curves of monthly cohorts (:mod:`anoncard.cohorts`)."""
        from . import cohorts

        budget = rules.budget("cohorts")
        if budget is None:
            raise InsightsRefused(
                "insights: the policy declares no cohorts budget (cohorts_epsilon); nothing was released"
            )
        first, last = cohorts.window(rules.cohort_months, record.ending, self._today())
        planned = {"report": "cohorts", "first_day": first.isoformat(), "last_day": last.isoformat(),
                   "epsilon": budget[0]}  # fmt: skip
        with self.store.reading():
            self._refuse_past_budget(planned, rules)
            first_visits = self.store.first_visit_days()
            visits = self.store.visit_rows(first.isoformat(), last.isoformat())
        result = cohorts.release(first, last, first_visits, visits, rules, grouping=record.grouping)
        return self._keep_release(planned, rules, result)

    def _keep_release(self, planned: dict, rules, result):
        """Record a computed release, checking the budget again under the write lock: of two
        releases racing for the same budget, one is refused (and what it computed never shown)."""
        from . import insights

        with self.store.transaction():
            self._refuse_past_budget(planned, rules)
            self._record(insights.RELEASE_EVENT, result.event_detail())
        return result

    def _refuse_past_budget(self, planned: dict, rules) -> None:
        from . import insights

        events = self.store.events(insights.RELEASE_EVENT)
        recorded = [(e.id, json.loads(e.detail)) for e in events]
        problems = insights.budget_problems(recorded, rules, planned)
        if problems:
            raise InsightsRefused(f"insights: the privacy budget is spent: {problems[0]}; nothing was released")

    # -- entrance ------------------------------------------------------------------------

    def category_stats(self) -> suggest.StoreStats:
        """Store-wide popularity and co-occurrence, cached until a refresh by any process
        (:meth:`refresh_stats`, a purge, a retirement) moves the stats generation."""
        generation = self.store.stats_generation()
        if self._stats is None or generation != self._stats_generation:
            self._stats = suggest.StoreStats(*self.store.category_stats())
            self._stats_generation = generation
        return self._stats

    def refresh_stats(self) -> dict:
        """Recompute the store-wide category aggregates from the history kept, and prepare them
        here rather than in the next customer's ``enter``."""
        with self.store.transaction():
            counts = self.store.refresh_category_stats()
        self._stats = None
        self.category_stats()
        return counts

    def suggestion_model(self) -> ranker.Model | None:
        """The fitted suggestion model in the home, reread when the file changes (a nightly fit
        in another process); ``None`` without one - the entrance then uses the built-in engine.
        A file this version cannot read counts as none here (the audit reports it)."""
        if self.model_path is None:
            return None
        try:
            st = self.model_path.stat()
        except OSError:
            self._model = ((), None)
            return None
        identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        if identity != self._model[0]:
            try:
                model = ranker.decode(self.model_path.read_bytes())
            except (OSError, ModelError):
                model = None
            self._model = (identity, model)
        return self._model[1]

    def fit_suggestions(self, *, seed: int = 0, discovery_target: float | None = None) -> dict:
        """Fit the suggestion model on the store's own history (the nightly job) and write it
        beside the database; the entrance uses it from its next visit on.

        ``discovery_target`` sets the model's discovery slot: the smallest weight that discovers
        on that share of the held-out visits. The default, 0, is *habits first* (no discovery
        slot): on the Complete Journey it is the operating point where the model beats the
        built-in engine (docs/suggestions.md); 0.07 is the programme's discovery target.

        Raises:
            ModelError: the ``suggest`` extra is missing, too little history, or no home to write to.
            OutputError: the file could not be written (the old one is unchanged).
        """
        from . import fit  # the fit needs the suggest extra; the entrance does not

        if self.model_path is None:
            raise ModelError("fitting the suggestion model needs a home to write it to")
        rules = self.programme.coupons
        stats = self.category_stats()
        with self.store.reading():
            ids = self.store.cards_with_visits()
        rng = random.Random(seed)
        if len(ids) > fit.MAX_CARDS:
            ids = sorted(rng.sample(ids, fit.MAX_CARDS))
        start = time.perf_counter()
        report = fit.fit(
            self._fit_histories(ids),
            stats,
            today=self._today(),
            usable=self._suggestible,
            seed=seed,
            discovery_weeks=rules.discovery_weeks,
            department=self.programme.department,
            discovery_target=0.0 if discovery_target is None else discovery_target,
            clock=time.perf_counter,
        )
        files.replace(self.model_path, report.model.encode(), field="model", error=ModelError)
        return {
            **report.model.describe(),
            "seconds": round(time.perf_counter() - start, 1),
            "seconds_features": report.seconds_features,
            "seconds_boosting": report.seconds_boosting,
            "validation": report.validation,
        }

    def _fit_histories(self, ids: list[int]) -> Iterator[tuple[list, list, list]]:
        for i in range(0, len(ids), 500):
            with self.store.reading():
                chunk = self.store.card_histories(ids[i : i + 500])
            yield from chunk

    def enter(self, request: Mapping, *, at: When = None) -> Entrance:
        """The entrance column: a few coupons that fit this card, within caps and fatigue rules.

        Returns the coupons the card still holds (reprinted) and the new ones. Coupons are
        issued by the service's clock only (``at`` is refused): the printed, signed expiry
        is the real last valid day, whatever the policy's time resolution; the stored days
        are coarsened. Under week or month resolution the stored expiry cannot tell the
        real one, so a held coupon is not reprinted (it still counts against the caps).

        Raises:
            PolicyViolation, CardError: the gate refused the request, or ``at`` was given.
            UnknownCard: no card matches.
        """
        rec = self._validate("enter", request)
        self._no_explicit_time(at, "the entrance issues coupons by the server's clock")
        real_today = self._today()
        today_s = self.policy.coarsen(real_today).isoformat()
        today = date.fromisoformat(today_s)
        rules = self.programme.coupons
        stats = self.category_stats()
        window = (today - timedelta(days=max(rules.rest_days, 7, rules.discovery_weeks * 7))).isoformat()
        expires = real_today + timedelta(days=max(rules.valid_days, 1) - 1)
        with self.store.transaction():
            card, relinked = self._resolve(rec.card)
            token = self.ring.primary.token(rec.card)  # the card's stored token, after any re-link
            arm = self._arm(token, real_today)
            # ghosts count as coupons printed and never used, so the caps treat every arm alike
            recent = _with_ghosts(self.store.card_coupons(card.id, window), self.store.card_ghosts(card.id, window))
            held = [c for c in recent if c.redeemed_txn is None and c.expires_day >= today_s]
            finished = [c for c in recent if c.redeemed_txn is not None or c.expires_day < today_s]
            week_ago = (today - timedelta(days=7)).isoformat()
            issued_week = sum(1 for c in recent if c.issued_day > week_ago)
            cap = min(rules.per_visit - len(held), rules.per_week - issued_week)
            last = finished[-rules.quiet_after :] if rules.quiet_after else []
            if rules.quiet_after and len(last) == rules.quiet_after and all(c.redeemed_txn is None for c in last):
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
                    exclude={c.category for c in held} | _resting(finished, today, rules.rest_after, rules.rest_days),
                    department=self.programme.department,
                    discovery_weeks=rules.discovery_weeks,
                    allowed=self._suggestible,
                    model=self.suggestion_model(),
                )
            chosen = [pick.category for pick in picks]
            stored_expiry = self.policy.coarsen(expires).isoformat()
            if arm == "random":  # as many coupons, of categories drawn at random
                resting = {c.category for c in held} | _resting(finished, today, rules.rest_after, rules.rest_days)
                pool = [c for c in self.programme.vocabulary.categories if self._suggestible(c)]
                chosen = arms.random_categories(self.ring, token, real_today, pool, len(chosen), resting)
            elif arm == "holdout":  # nothing printed: the engine's pick is recorded as a ghost
                self.store.add_ghosts([GhostRow(card.id, c, today_s, stored_expiry) for c in chosen])
                chosen = []
            printed = []
            if self.policy.time_resolution == "day":
                for c in held:
                    if c.sealed is not None:
                        cid = self.ring.unseal_coupon_id(c.sealed, c.digest)
                        day = date.fromisoformat(c.expires_day)
                        printed.append(self._print_coupon(rec.card, cid, c.category, c.kind, c.value, day, False))
            new = []
            for category in chosen:
                offer = self.programme.offer_for(category)
                cid = coupon_codes.new_id()
                digest = self.ring.coupon_digest(cid)
                sealed = self.ring.seal_coupon_id(cid, digest)
                new.append((digest, card.id, category, offer.kind, offer.value, today_s, stored_expiry, sealed))
                # signed before the rows are written: a coupon that cannot be printed is never recorded
                printed.append(self._print_coupon(rec.card, cid, category, offer.kind, offer.value, expires, True))
            self.store.add_coupons(new)
        return Entrance(printed, relinked)

    def _arm(self, token: bytes, day: date) -> str:
        """The card's coupon arm on ``day`` (:mod:`anoncard.arms`): targeted unless the programme's
        campaign holds cards out, which the policy must give a purpose for.

        Raises:
            ProgrammeError: the programme splits cards into arms but the policy declares no
                ``uplift_purpose``.
        """
        campaign = self.programme.campaign
        if not campaign.measures:
            return "targeted"
        if self.policy.insights is None or self.policy.insights.uplift_purpose is None:
            raise ProgrammeError(
                "programme: campaign.random and campaign.holdout hold cards out of targeted coupons, which needs "
                "a purpose in the policy ([insights] uplift_purpose)"
            )
        return arms.arm(self.ring, campaign, token, arms.period_of(campaign, day))

    def _suggestible(self, category: str) -> bool:
        """A coupon may be printed for a declared, non-sensitive category that has an offer
        (history kept from before a category was declared sensitive is never suggested)."""
        return self.programme.vocabulary.suggestible(category) and self.programme.offer_for(category) is not None

    def _print_coupon(
        self, secret: CardSecret, cid: bytes, category: str, kind: str, value: int, expires: date, new: bool
    ) -> IssuedCoupon:
        coupon = coupon_codes.Coupon(
            cid,
            self.ring.coupon_key_id,
            expires,
            kind,
            value,
            self.ring.binding(secret, cid),
            category,
        )
        code = coupon_codes.encode(coupon, self.ring.coupon_private_key())
        return IssuedCoupon(code, category, kind, value, expires.isoformat(), coupon.describe(), new)

    # -- keys --------------------------------------------------------------------------

    def _save_ring(self, ring: KeyRing) -> None:
        if self.ring_path is not None:
            ring.save(self.ring_path)

    @contextmanager
    def _key_operation(self) -> Iterator[KeyRing]:
        """Hold the key lock, bring file and database into agreement, and yield the ring file's
        keys for the operation to change; afterwards ``self.ring`` follows the database."""
        with key_lock(self.ring_path), self.store.key_operation_lock():
            self._reconcile_keys()
            try:
                yield self._file_ring
            finally:
                self._refresh_ring()

    def export_keys(self, dest: Path) -> None:
        """Write the key ring, as file and database agree on it, to the new file ``dest`` (mode 0600,
        durable), for a backup kept apart from the database's.

        Raises:
            KeyRingError: the key ring file is older than the database, or another ring.
            PolicyViolation: ``dest`` exists (as a file or a link) or its directory is refused.
            OutputError: the copy could not be written (nothing is left behind).
        """
        with self._key_operation() as ring:
            files.create(dest, ring.to_json().encode("utf-8"), field="dest")

    def list_keys(self) -> list[dict]:
        """Versions, states and how many cards each still links (never key material)."""
        with self.store.transaction():
            count = self.store.count_cards
            return [
                {"version": v.version, "state": v.state, "created": v.created, "cards": count(v.version)}
                for v in self.ring.versions
            ]

    def rotate_keys(self, *, at: When = None) -> int:
        """Add a new primary key version; the old primary becomes verify-only. Returns the new version.

        Under the key lock: the ring file is written first, then the database records the new
        states and moves the key generation, so every process switches to the new primary at
        its next transaction. A crash in between leaves a version only the file knows, which
        no process uses and the next key operation (or :meth:`prepare`) records.

        Raises:
            KeyRingError: the key ring file is older than the database.
        """
        day = self._day(at)
        with self._key_operation() as ring:
            new = ring.rotate(day)
            self._save_ring(ring)
            with self.store.transaction():
                for v in ring.versions:
                    self.store.set_key_state(v.version, v.state)  # moves the key generation
                self._record("key_rotated", {"primary": new.version})
        return new.version

    def retire_key(self) -> Retirement:
        """Destroy the oldest verify-only key and purge every card still linked only under it.

        Under the key lock: the database purge commits first (with the key generation moved, so
        no process presents a card under that version again), then the key material is destroyed
        in the ring file; a crash in between is completed by the next key operation or
        :meth:`prepare`. The store-wide category aggregates are recomputed without the purged
        cards, and the WAL is checkpointed so their rows leave no copy in either file
        (``wal_cleared`` is False when a reader's open snapshot kept the checkpoint from finishing).

        Raises:
            KeyRingError: there is no verify-only key, or the key ring file is older than the database.
        """
        with self._key_operation() as ring:
            version = ring.oldest_verify_only().version
            with self.store.transaction():
                self.store.set_key_state(version, RETIRED)  # moves the key generation
                purged = self.store.purge_key_version(version)
                self.store.refresh_category_stats()
                self._record("key_retired", {"version": version, "cards_purged": purged})
            ring.retire(version)
            self._save_ring(ring)
        self._stats = None
        return Retirement(version, purged, self.store.checkpoint())

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
        with key_lock(self.ring_path), self.store.key_operation_lock():
            keys_before, stats_before = self.store.key_generation(), self.store.stats_generation()
            self.store.restore_from(source)
            self._stats, self._recorded = None, False
            self._reconcile_keys()
            purged = 0
            with self.store.transaction():
                for v in self._file_ring.versions:
                    if v.state == RETIRED and self.store.count_cards(v.version):
                        purged += self.store.purge_key_version(v.version)
                # the backup's counters may be behind what other processes saw: move past both
                self.store.bump_key_generation(at_least=keys_before)
                self.store.bump_stats_generation(at_least=stats_before)
                self._record("restored", {"cards_purged_again": purged})
                recorded = self.recorded_policy()
                if recorded != self.policy.fingerprint:  # the policy in force now, not the backup's
                    self._record("policy_applied", {"old": recorded, "new": self.policy.fingerprint})
            self._refresh_ring()
        self.store.checkpoint()  # cards purged again leave no copy in the WAL
        return {"cards": self.store.count_cards(), "cards_purged_again": purged}

    # -- policy and retention -------------------------------------------------------

    def apply_policy(self, text: str, path: Path | None = None) -> dict:
        """Adopt a new policy: validate it, write the file, then record old and new fingerprints.

        The file is written first (private temporary file, rename) and the event recorded
        after, because opening a home compares the file's fingerprint with the last one
        recorded: if recording fails, the previous file is put back (from a hard link kept
        beside it, which needs no free space), so the home opens as before. Only a crash
        between the rename and the commit leaves a file newer than the log; the next command
        then says so, and running ``policy apply`` again with the same file records it.

        Raises:
            PolicyFileError: the new policy is invalid (nothing changes).
            OutputError, StoreError: the file or the event could not be written (nothing changes).
        """
        new = Policy.from_toml(text)
        old = self.recorded_policy()
        if path is None:
            with self.store.transaction():
                self._record("policy_applied", {"old": old, "new": new.fingerprint})
            self.policy = new
            return {"old": old, "new": new.fingerprint}
        path = Path(path)
        with files.Directory(path.parent, field="policy", error=PolicyFileError) as home:
            keep = home.keep(path.name)
            try:
                home.replace(path.name, text.encode("utf-8"))
                try:
                    with self.store.transaction():
                        self._record("policy_applied", {"old": old, "new": new.fingerprint})
                except BaseException:
                    home.put_back(keep, path.name)
                    raise
            finally:
                home.drop(keep)
        self.policy = new
        return {"old": old, "new": new.fingerprint}

    def purge(self) -> dict:
        """Apply the policy's retention as of the service's clock: compact old documents, fold
        old history. It takes no explicit time: one in the future would destroy data before
        its retention ends, one in the past would keep it beyond.

        Balances never change: the transaction is rolled back if one would.
        """
        today = date.fromisoformat(self._day(None))
        doc_cutoff = (today - timedelta(days=self.policy.documents_days)).isoformat()
        hist_cutoff = (today - timedelta(days=self.policy.history_days)).isoformat()
        with self.store.transaction():
            before = self.store.balances()
            with self.store.maintenance():
                counts = self.store.compact_documents(doc_cutoff) | self.store.fold_history(hist_cutoff)
                counts |= self.store.drop_category_weeks(hist_cutoff)
            if self.store.balances() != before:
                raise LedgerError("retention purge would change a balance; nothing was purged")
            counts |= {"documents before": doc_cutoff, "history before": hist_cutoff}
            self._record("retention_purge", counts)
        counts |= {f"stats {k}": v for k, v in self.refresh_stats().items()}
        if not self.store.checkpoint():  # what was folded or compacted leaves no copy, unless a reader holds it
            counts["wal cleared"] = False
        return counts


def _coupon_line(category: str, kind: str, value: int, discount: int, bonus: int) -> dict:
    return {
        "category": category,
        "kind": kind,
        "value": value,
        "discount": format_cents(discount),
        "bonus_points": bonus,
    }


# A checkout's record, one row per line: its category and cents, the category's points
# multiplier (hundredths) of that day's programme, and the coupon bonus points and discount
# cents that fell to the line. With the document's points it says what each line earned.
_RECORD_FIELDS = ("category", "cents", "multiplier", "bonus_points", "discount_cents")


def _shares(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` by cumulative floors: the shares add up to
    ``total`` exactly."""
    whole = sum(weights)
    out, done, acc = [], 0, 0
    for w in weights:
        acc += w
        upto = total * acc // whole if whole else 0
        out.append(upto - done)
        done = upto
    return out


def earned_lines(
    programme: Programme, lines: list[tuple[str, int]], benefits: Mapping[str, tuple[int, int]]
) -> list[list]:
    """The record of a basket of ``(category, cents)`` lines (see ``_RECORD_FIELDS``); a
    category's coupon ``benefits[category] = (bonus points, discount cents)`` are shared by
    its lines in proportion to their cents."""
    rows = [[c, a, programme.multipliers.get(c, 100), 0, 0] for c, a in lines]
    for category, (bonus, discount) in benefits.items():
        mine = [r for r in rows if r[0] == category]
        cents = [r[1] for r in mine]
        for r, b, d in zip(mine, _shares(bonus, cents), _shares(discount, cents), strict=True):
            r[3], r[4] = b, d
    return rows


def _kept(rows: list[list], base: int, left: Mapping[str, int]) -> tuple[int, int]:
    """``(points, discount cents)`` a checkout still stands for while ``left`` cents per
    category are kept: its base points in proportion to the points-weighted value kept (the
    multipliers of its day), so never more than the kept goods alone would have earned; the
    bonus and discount of a category in proportion to its cents kept."""
    cents: dict[str, int] = {}
    weight: dict[str, int] = {}
    bonus: dict[str, int] = {}
    discount: dict[str, int] = {}
    for category, c, multiplier, b, d in rows:
        cents[category] = cents.get(category, 0) + c
        weight[category] = multiplier  # one multiplier per category and day
        bonus[category] = bonus.get(category, 0) + b
        discount[category] = discount.get(category, 0) + d
    total = sum(weight[k] * cents[k] for k in cents)
    kept_weight = sum(weight[k] * left.get(k, cents[k]) for k in cents)
    points = base * kept_weight // total if total else 0
    points += sum(bonus[k] * left.get(k, cents[k]) // cents[k] for k in cents if cents[k])
    off = sum(discount[k] * left.get(k, cents[k]) // cents[k] for k in cents if cents[k])
    return points, off


def reverse_recorded(
    rows: list[list], points: int, left_before: Mapping[str, int], left_after: Mapping[str, int]
) -> tuple[int, int]:
    """``(points, discount cents)`` a refund reverses, read from the checkout's record and its
    ``points``: the difference of what the kept goods stand for before and after it. So
    refunding everything, in any number of parts, reverses exactly what the checkout earned,
    whatever the programme says today."""
    base = points - sum(r[3] for r in rows)
    before, after = _kept(rows, base, left_before), _kept(rows, base, left_after)
    return before[0] - after[0], before[1] - after[1]


def _week(day: str) -> str:
    """The Monday of ``day``'s week: store-wide totals of sensitive categories are kept by week."""
    d = date.fromisoformat(day)
    return (d - timedelta(days=d.weekday())).isoformat()


def _category_cents(doc: Document, category: str) -> int:
    return sum(row[1] for row in json.loads(doc.lines) if row[0] == category)


def _with_ghosts(coupons: list[CouponRow], ghosts: list[GhostRow]) -> list[CouponRow]:
    """A card's coupons and ghost coupons as one list, oldest first: a ghost is a coupon that was
    never printed, so never used and never reprinted (no sealed id)."""
    if not ghosts:
        return coupons
    as_rows = [CouponRow(b"", g.category, "ghost", 0, g.issued_day, g.expires_day, None, None) for g in ghosts]
    return sorted([*coupons, *as_rows], key=lambda c: c.issued_day)  # stable: same-day order kept


def _resting(finished: list[CouponRow], today: date, rest_after: int, rest_days: int) -> set[str]:
    """Categories whose last ``rest_after`` finished coupons were all ignored, within ``rest_days``."""
    by_category: dict[str, list[CouponRow]] = {}
    for c in finished:
        by_category.setdefault(c.category, []).append(c)
    resting = set()
    for category, rows in by_category.items():
        last = rows[-rest_after:]
        ignored = rest_after > 0 and len(last) == rest_after and all(r.redeemed_txn is None for r in last)
        if ignored and (today - date.fromisoformat(last[-1].expires_day)).days < rest_days:
            resting.add(category)
    return resting
