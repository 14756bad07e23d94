"""The card holder's own rights, with no identity: see, take, erase, replace a lost card.

Design overview. An anonymous card has no account: the card code itself is the credential.
Presenting it (at the kiosk, on the store server's kiosk page, or through the CLI) gives:

* **access and portability** (GDPR Art. 15 and 20) - :meth:`Holder.export` returns every row
  the database links to the card, table by table and column by column, with what the policy
  says each table is kept for and until when, as a versioned JSON document
  (``anoncard-export/1``, see docs/export-format.md);
* **erasure** (Art. 17) - :meth:`Holder.erase` deletes the card and every row linked to it in
  one transaction (the triggers let exactly that card's ledger and documents go, see
  :mod:`anoncard.store` migration 7), recomputes the store-wide aggregates without it and
  checkpoints the WAL, so the bytes are gone from the file. The remaining points are forfeited,
  or first redeemed for a reward the holder picks. The event log records that an erasure
  happened, never which card. What an erased card leaves behind is only what was already
  anonymous: the card-free weekly totals of sensitive categories (``category_weeks``);
* **replacement of a lost card** - :meth:`Holder.replace` takes the recovery code from the
  card's stub, issues a new card with a new stub, moves the balance (and, if the holder wants,
  the documents, history and folded totals) to it, and erases the old card and its stub, all in
  one transaction. The new codes are delivered (``emit``) before that transaction commits: if
  delivery fails, nothing changed and the old stub still works.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

from . import cards
from . import recovery as recovery_codes
from .errors import LedgerError, OutputError, UnknownCard
from .service import IssuedCard, Service

FORMAT = "anoncard-export/1"

@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure did. ``points_forfeited`` is what was left after any reward."""

    reward: str | None
    points_redeemed: int
    points_forfeited: int
    wal_cleared: bool = True

    def to_dict(self) -> dict:
        return {"erased": True} | asdict(self)


@dataclass(frozen=True, slots=True)
class Replacement:
    """The new card (its code and its stub's recovery code) and what moved to it."""

    issued: IssuedCard
    balance: int
    history_moved: bool
    wal_cleared: bool = True

    def to_dict(self) -> dict:
        return self.issued.to_dict() | {
            "balance": self.balance,
            "history_moved": self.history_moved,
            "wal_cleared": self.wal_cleared,
        }


def _value(table: str, column: str, value: object) -> object:
    """A stored value as JSON: keyed digests and masked ids as hex (none is a secret or a code),
    a document's lines as the list they are."""
    if isinstance(value, bytes):
        return value.hex()
    if table == "txns" and column == "lines" and isinstance(value, str):
        return json.loads(value)
    return value


def _add_days(day: str | None, days: int) -> str | None:
    return None if day is None else (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def retention(svc: Service, rows: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per table: its purpose and retention as the policy says, and the days its first and last
    row leave the database (``None`` where the policy keeps them until the key is retired)."""
    p = svc.policy
    dated = {  # table -> (day column, days kept)
        "txns": ("day", p.documents_days),
        "ledger": ("day", p.documents_days),
        "history": ("day", p.history_days),
        "visits": ("day", p.history_days),
        "coupons": ("issued_day", p.documents_days),
        "ghosts": ("issued_day", p.documents_days),
    }
    out = {}
    for table, table_rows in rows.items():
        rule = p.storage.get(table)
        kept = rule.retention if rule else ""
        kept = kept.replace("retention.documents_days", f"{p.documents_days} days")
        kept = kept.replace("retention.history_days", f"{p.history_days} days")
        entry: dict[str, Any] = {
            "purpose": rule.purpose if rule else "",
            "kept": kept,
            "rows": len(table_rows),
            "first_until": None,
            "last_until": None,
        }
        if table in dated and table_rows:
            column, days = dated[table]
            if table == "ledger":  # a carried entry stays until the card goes
                days_seen = sorted(r[column] for r in table_rows if r.get("txn_id") is not None)
            else:
                days_seen = sorted(r[column] for r in table_rows)
            if days_seen:
                entry["first_until"] = _add_days(days_seen[0], days)
                entry["last_until"] = _add_days(days_seen[-1], days)
        out[table] = entry
    return out


class Holder:
    """The card holder's operations over one open service."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def export(self, request: Mapping) -> dict:
        """Everything stored under the presented card, as an ``anoncard-export/1`` document.

        Raises:
            PolicyViolation, CardError: the gate refused the request.
            UnknownCard: no card matches.
        """
        svc = self.svc
        rec = svc._validate("export", request)
        with svc.store.transaction():  # presenting a card re-links it to the primary key, as anywhere
            card, _relinked = svc._resolve(rec.card)
            rows = svc.store.card_rows(card.id)
            visits = svc.store.visit_count(card.id)
        tables = {t: [{c: _value(t, c, v) for c, v in r.items()} for r in rs] for t, rs in rows.items()}
        return {
            "format": FORMAT,
            "exported_on": svc._today().isoformat(),
            "policy_fingerprint": svc.policy.fingerprint,
            "balance": card.balance,
            "visits": visits,
            "tables": tables,
            "retention": retention(svc, rows),
        }

    def erase(self, request: Mapping) -> Erasure:
        """Forget the presented card: delete it and every row linked to it, the bytes included.

        The remaining points are forfeited, or first redeemed for ``reward``. Store-wide
        aggregates are recomputed without the card; the card-free weekly totals stay.

        Raises:
            PolicyViolation, CardError: the gate refused the request (``confirm`` not true).
            UnknownCard: no card matches.
            PolicyViolation: the reward is not in the catalogue.
            LedgerError: the reward costs more than the balance (nothing is erased).
        """
        svc = self.svc
        rec = svc._validate("erase", request)
        reward = None if rec.reward is None else svc.programme.reward(rec.reward)
        with svc.store.transaction():
            card, _relinked = svc._resolve(rec.card)
            spent = 0 if reward is None else reward.points
            if spent > card.balance:
                raise LedgerError(
                    f"field 'reward': {reward.name!r} costs {reward.points} points, the card has {card.balance}; "
                    "nothing was erased",
                    field="reward",
                )
            svc.store.erase_card(card.id)
            svc.store.refresh_category_stats()
            svc._record("card_erased", {"points": "forfeited" if reward is None else "redeemed"})
        svc._stats = None
        return Erasure(
            reward=None if reward is None else reward.name,
            points_redeemed=spent,
            points_forfeited=card.balance - spent,
            wal_cleared=svc.store.checkpoint(),
        )

    def replace(self, request: Mapping, *, emit: Callable[[IssuedCard], None] | None = None) -> Replacement:
        """Replace a lost card with the recovery code from its stub.

        In one transaction: a new card with a new stub, the old card's balance (and with
        ``history`` its documents, history and folded totals) moved to it, the old card and its
        stub erased. ``emit`` delivers the new codes before that transaction commits; if it
        fails, nothing changed.

        Raises:
            PolicyViolation, CardError: the gate refused the request.
            UnknownCard: no card holds this recovery code (never issued here, used already,
                or its card was erased or retired).
            OutputError: the new codes could not be delivered (nothing changed).
        """
        svc = self.svc
        rec = svc._validate("replace", request)
        issued = IssuedCard(cards.generate(), recovery_codes.generate())
        digest = svc.ring.recovery_digest(rec.recovery)
        day = svc._day(None)
        with svc.store.transaction():
            old = svc.store.find_recovery(digest)
            if old is None:
                raise UnknownCard(
                    "field 'recovery': unknown recovery code (not issued here, used already, or its card was erased)",
                    field="recovery",
                )
            primary = svc.ring.primary
            token = primary.token(issued.card)
            new = svc.store.add_card(token, primary.version)
            balance = svc.store.balance(old)
            if rec.history:
                svc.store.move_card(old, new)
            elif balance:
                svc.store.carry(new, balance, day)
            svc.store.erase_card(old)
            svc.store.add_recovery([(token, svc.ring.recovery_digest(issued.recovery))])
            if not rec.history:
                svc.store.refresh_category_stats()
            svc._record("card_replaced", {"history": rec.history})
            if emit is not None:
                try:
                    emit(issued)
                except OSError as exc:
                    raise OutputError(
                        f"output: the new card's codes could not be written ({exc.strerror or type(exc).__name__});"
                        " nothing changed, the old recovery code still works"
                    ) from None
        svc._stats = None
        return Replacement(issued, balance, rec.history, svc.store.checkpoint())
