"""The one place that knows anoncard's operations, for every transport.

Design overview. The CLI, ``anoncard serve`` (JSON lines) and ``anoncard server`` (HTTP)
are thin transports over this module. It holds:

* the operation table: each :class:`Operation` names its policy request kind (the gate
  that checks its body), its handler, the roles that reach it, its HTTP method and path,
  whether it takes a till's own time (``at``) and whether it answers ``unknown_card``;
* the error envelope: ``{"error": {"code": ..., "message": ...}}`` and one HTTP status
  per error code (:data:`STATUS`);
* the size limit of a request (:data:`MAX_REQUEST_BYTES`) and bounded readers that never
  hold more than the limit in memory;
* time handling: :func:`parse_at` reads a strict ISO 8601 date or date and time. The
  bounds a till's own time must keep are the service's business; this module parses.

A new operation is added in the policy (its request kind), in :data:`OPERATIONS` and with
one handler; every transport then serves it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from .errors import AnonCardError, PolicyViolation, RequestTooLarge

MAX_REQUEST_BYTES = 1 << 20
"""The largest request any transport reads: a serve line, a ``--input`` document, an HTTP body."""

ROLES = ("till", "entrance", "kiosk", "operator", "auditor")

STATUS: dict[str, int] = {
    "policy_violation": 400,
    "card_error": 400,
    "usage_error": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "unknown_card": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "ledger_error": 409,
    "coupon_error": 409,
    "insights_refused": 409,
    "keyring_error": 409,
    "too_large": 413,
    "not_json": 415,
    "rate_limited": 429,
    "store_error": 503,
    "keyring_behind": 503,  # this server's key ring copy lacks the newest key: retry once it is copied
    "output_error": 503,  # an output (a backup) could not be written: a full disk, retry later
}
"""HTTP status per error code; any other code (a broken home, a bug) is a 500."""


def status(code: str) -> int:
    """The HTTP status of an error code (500 for a code that should never reach a client)."""
    return STATUS.get(code, 500)


def envelope(exc: AnonCardError) -> dict:
    """The error object every transport answers with; its message names field and rule, never a value."""
    return {"error": {"code": exc.code, "message": exc.message}}


def to_dict(result: object) -> dict:
    """A handler's result as the JSON object a transport sends."""
    return result.to_dict() if hasattr(result, "to_dict") else result  # type: ignore[return-value]


# -- reading requests ---------------------------------------------------------------


def too_large() -> RequestTooLarge:
    return RequestTooLarge(f"request: larger than {MAX_REQUEST_BYTES} bytes", field="input")


def _reject_constant(name: str) -> None:
    raise PolicyViolation(f"request: {name} is not allowed in JSON input", field="input")


def decode(data: bytes | str) -> object:
    """A JSON document, or PolicyViolation: not UTF-8, not JSON, NaN/Infinity, nested too
    deeply, or an integer too long for Python to read (over 4300 digits)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise PolicyViolation("request: not valid UTF-8 JSON", field="input") from None


def read_bounded(stream: IO[bytes], limit: int = MAX_REQUEST_BYTES) -> bytes:
    """All of ``stream``, or RequestTooLarge once more than ``limit`` bytes arrive (reads at most limit + 1)."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise too_large()
    return data


TOO_LONG = None
"""What :func:`bounded_lines` yields in place of a line over the limit."""


def bounded_lines(stream: IO[bytes], limit: int = MAX_REQUEST_BYTES, chunk: int = 1 << 16) -> Iterator[bytes | None]:
    """The lines of ``stream`` without their line ending; a line longer than ``limit`` bytes is
    yielded as :data:`TOO_LONG` and skipped in chunks, so memory stays bounded by the limit."""
    while True:
        line = stream.readline(limit + 2)  # the limit, and room for a CR LF ending
        if not line:
            return
        ended = line.endswith(b"\n")
        content = line[:-1] if ended else line
        if ended and content.endswith(b"\r"):
            content = content[:-1]
        if len(content) <= limit:
            yield content
            continue
        while not ended:  # the rest of the line over the limit: read past it, keep nothing
            rest = stream.readline(chunk)
            ended = not rest or rest.endswith(b"\n")
        yield TOO_LONG


# -- time ---------------------------------------------------------------------------

ISO_8601 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
AT_RULE = "field 'at': must be an ISO 8601 date or date and time, such as 2026-11-22 or 2026-11-22T14:05:00+01:00"


def parse_at(value: object) -> datetime:
    """A till's own time, strictly ISO 8601 (``YYYY-MM-DD``, optionally ``THH:MM[:SS[.ffffff]]``
    and a ``Z`` or ``+HH:MM`` offset). An offset is converted to the server's local time,
    which is what its clock reads.

    Raises:
        PolicyViolation: not a string of that form, or not a real date and time (the value is not echoed).
    """
    if not isinstance(value, str) or len(value) > 40 or not ISO_8601.fullmatch(value):
        raise PolicyViolation(AT_RULE, field="at")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise PolicyViolation(AT_RULE, field="at") from None
    if when.tzinfo is not None:
        when = when.astimezone().replace(tzinfo=None)
    return when


# -- the operation table --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler reaches: one open service (used by one thread at a time) and its home."""

    svc: Any  # anoncard.service.Service; typed loosely so this module imports no storage
    home: Path | None = None


Handler = Callable[[Context, dict, "datetime | None"], object]


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation: what checks its body, what runs it, who may call it, where it lives.

    ``kind`` is the policy request kind of its body (the gate is the one validator), or
    ``None`` for an operation whose body is checked by its handler (operator and auditor
    operations with no policy kind). ``at`` says whether the body may carry a till's own
    time; ``card`` whether it answers ``unknown_card`` (counted per terminal); ``recovery``
    whether that answer is about a recovery code (counted per terminal under a tighter
    budget); ``serve`` whether ``anoncard serve`` offers it.
    """

    name: str
    method: str
    path: str
    roles: frozenset[str]
    handler: Handler
    summary: str
    kind: str | None = None
    at: bool = False
    card: bool = False
    recovery: bool = False
    serve: bool = False
    body: Mapping[str, dict] | None = None  # the fields of a body with no policy kind (JSON Schema each)


def _checkout(ctx: Context, body: dict, at: datetime | None) -> object:
    return ctx.svc.checkout(body, at=at)


def _refund(ctx: Context, body: dict, at: datetime | None) -> object:
    # A refund is dated by the checkout it returns goods from; ``at`` is parsed (and so
    # refused when malformed) for a replayed refund, but its day is the checkout's.
    return ctx.svc.refund(body, at=at)  # bounded by the policy's window like a checkout's


def _redeem(ctx: Context, body: dict, at: datetime | None) -> object:
    return ctx.svc.redeem(body)


def _balance(ctx: Context, body: dict, at: datetime | None) -> object:
    return ctx.svc.balance(body)


def _enter(ctx: Context, body: dict, at: datetime | None) -> object:
    return ctx.svc.enter(body)  # coupons are issued by the server's clock only


def _holder(ctx: Context):
    from .selfservice import Holder

    return Holder(ctx.svc)


def _card_export(ctx: Context, body: dict, at: datetime | None) -> object:
    return _holder(ctx).export(body)


def _card_erase(ctx: Context, body: dict, at: datetime | None) -> object:
    return _holder(ctx).erase(body)


def _card_replace(ctx: Context, body: dict, at: datetime | None) -> object:
    return _holder(ctx).replace(body)


def _coupon_public_key(ctx: Context, body: dict, at: datetime | None) -> object:
    _only(body, {}, "a coupon key request")
    ring = ctx.svc.ring
    return {"ed25519_public_key": ring.coupon_public_key_text(), "key_id": ring.coupon_key_id}


def _issue_cards(ctx: Context, body: dict, at: datetime | None) -> object:
    issued = ctx.svc.issue_cards_with_stubs(body)
    return {"cards": [c.card.code for c in issued], "recovery": [c.recovery.code for c in issued]}


def _keys_list(ctx: Context, body: dict, at: datetime | None) -> object:
    _only(body, {}, "a keys request")
    return {"keys": ctx.svc.list_keys()}


def _keys_rotate(ctx: Context, body: dict, at: datetime | None) -> object:
    _only(body, {}, "a key rotation")
    return {"primary": ctx.svc.rotate_keys()}


def _keys_retire(ctx: Context, body: dict, at: datetime | None) -> object:
    _only(body, {"confirm"}, "a key retirement")
    if body.get("confirm") is not True:
        raise PolicyViolation(
            "field 'confirm': retiring a key purges data for good; confirm with true", field="confirm"
        )
    return ctx.svc.retire_key()


def _purge(ctx: Context, body: dict, at: datetime | None) -> object:
    _only(body, {}, "a purge request")
    return ctx.svc.purge()


def _backup(ctx: Context, body: dict, at: datetime | None) -> object:
    _only(body, {}, "a backup request")
    if ctx.home is None:
        raise PolicyViolation("request: a backup needs the server's home", field="input")
    folder = ctx.home / "backups"
    folder.mkdir(mode=0o700, exist_ok=True)
    name = f"anoncard-{ctx.svc.clock().strftime('%Y%m%dT%H%M%S%f')}.db"
    info = ctx.svc.backup(folder / name)
    return {"backup": f"backups/{name}", **info}


def _terminals(ctx: Context):
    from .terminals import Terminals

    return Terminals(ctx.svc)


def _terminals_list(ctx: Context, body: dict, at: datetime | None) -> object:
    _only(body, {}, "a terminals request")
    return {"terminals": [t.to_dict() for t in _terminals(ctx).list()]}


def _terminals_add(ctx: Context, body: dict, at: datetime | None) -> object:
    _only(body, {"name", "role"}, "a new terminal")
    terminal, key = _terminals(ctx).add(body.get("name"), body.get("role"))
    return {**terminal.to_dict(), "key": key}


def _terminals_revoke(ctx: Context, body: dict, at: datetime | None) -> object:
    _only(body, {"name"}, "a revocation")
    return _terminals(ctx).revoke(body.get("name")).to_dict()


def _policy(ctx: Context, body: dict, at: datetime | None) -> object:
    _only(body, {}, "a policy request")
    return ctx.svc.policy.to_dict()


def _audit(ctx: Context, body: dict, at: datetime | None) -> object:
    _only(body, {}, "an audit request")
    if ctx.home is None:
        raise PolicyViolation("request: an audit needs the server's home", field="input")
    from . import audit

    return audit.run(ctx.home, today=ctx.svc.clock().date()).to_dict()


def _insights(ctx: Context, body: dict, at: datetime | None) -> object:
    return ctx.svc.insights(body)  # spans end before the server's today; no explicit time


def _only(body: Mapping, allowed: set[str] | dict, what: str) -> None:
    """Refuse a field an operation without a policy kind does not take, by name (never its value)."""
    for name in body:
        if name not in allowed:
            label = name if isinstance(name, str) and len(name) <= 40 else "<field>"
            raise PolicyViolation(f"field '{label}': not allowed in {what}", field=label)


_TILL, _ENTRANCE, _KIOSK = frozenset({"till"}), frozenset({"entrance"}), frozenset({"kiosk"})
_OPERATOR, _AUDITOR = frozenset({"operator"}), frozenset({"auditor"})
_NAME_SCHEMA = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$", "minLength": 1, "maxLength": 48}

OPERATIONS: tuple[Operation, ...] = (
    Operation("checkout", "POST", "/v1/checkout", _TILL, _checkout, "Credit a basket to a card",
              kind="checkout", at=True, card=True, serve=True),
    Operation("refund", "POST", "/v1/refund", _TILL, _refund, "Refund a checkout or some of its lines",
              kind="refund", at=True, serve=True),
    Operation("redeem", "POST", "/v1/redeem", _TILL, _redeem, "Spend points on a reward",
              kind="redeem", card=True, serve=True),
    Operation("balance", "POST", "/v1/balance", _TILL | _KIOSK, _balance, "Points and recent activity of a card",
              kind="balance", card=True, serve=True),
    Operation("enter", "POST", "/v1/enter", _ENTRANCE, _enter, "Entrance column: coupons for this card",
              kind="enter", card=True, serve=True),
    Operation("export", "POST", "/v1/card/export", _KIOSK, _card_export,
              "Everything stored under a card, for its holder (anoncard-export/1)", kind="export", card=True),
    Operation("erase", "POST", "/v1/card/erase", _KIOSK, _card_erase,
              "Erase a card and everything stored under it, at its holder's request", kind="erase", card=True),
    Operation("replace", "POST", "/v1/card/replace", _TILL | _KIOSK, _card_replace,
              "Replace a lost card with the recovery code from its stub", kind="replace", card=True, recovery=True),
    Operation("coupon_public_key", "GET", "/v1/coupons/public-key", _TILL | _ENTRANCE, _coupon_public_key,
              "The public key that verifies coupons offline", serve=True),
    Operation("issue_cards", "POST", "/v1/cards", _OPERATOR, _issue_cards, "Issue new anonymous cards",
              kind="issue"),
    Operation("keys_list", "GET", "/v1/keys", _OPERATOR, _keys_list, "Key versions and their states"),
    Operation("keys_rotate", "POST", "/v1/keys/rotate", _OPERATOR, _keys_rotate, "Add a new primary key",
              body={}),
    Operation("keys_retire", "POST", "/v1/keys/retire", _OPERATOR, _keys_retire,
              "Destroy the oldest verify-only key and purge the cards linked only under it",
              body={"confirm": {"type": "boolean", "const": True}}),
    Operation("purge", "POST", "/v1/purge", _OPERATOR, _purge, "Apply the policy's retention", body={}),
    Operation("backup", "POST", "/v1/backup", _OPERATOR, _backup, "Back up the database on the server host",
              body={}),
    Operation("terminals_list", "GET", "/v1/terminals", _OPERATOR, _terminals_list, "Terminals and their roles"),
    Operation("terminals_add", "POST", "/v1/terminals", _OPERATOR, _terminals_add,
              "Add a terminal; its key is shown once",
              body={"name": _NAME_SCHEMA, "role": {"type": "string", "enum": list(ROLES)}}),
    Operation("terminals_revoke", "POST", "/v1/terminals/revoke", _OPERATOR, _terminals_revoke,
              "Revoke a terminal's key", body={"name": _NAME_SCHEMA}),
    Operation("insights", "POST", "/v1/insights", _OPERATOR, _insights,
              "Differentially private figures of a span (spends privacy budget)", kind="insights"),
    Operation("policy", "GET", "/v1/policy", _AUDITOR, _policy, "The policy and its fingerprint"),
    Operation("audit", "GET", "/v1/audit", _AUDITOR, _audit, "Verify what is stored against the policy"),
)  # fmt: skip

BY_NAME: dict[str, Operation] = {op.name: op for op in OPERATIONS}
SERVE_OPS: dict[str, Operation] = {op.name: op for op in OPERATIONS if op.serve}


def run(op: Operation, ctx: Context, request: object) -> object:
    """Run one operation on a decoded request: ``at`` is taken out (where the operation
    takes it) and parsed, everything else goes to the handler and its gate.

    Raises:
        AnonCardError: whatever the gate, the service or the handler refuses.
    """
    if not isinstance(request, dict):
        raise PolicyViolation("request: must be a JSON object", field="input")
    when = None
    if op.at and "at" in request:
        request = dict(request)
        when = parse_at(request.pop("at"))
    return op.handler(ctx, request, when)
