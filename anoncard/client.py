"""A terminal client for till integrators: the HTTP wire contract, with an offline outbox.

``TillClient`` sends each operation as ``POST /v1/<op>`` with the till's bearer key.
Checkouts and refunds that cannot be delivered (a network failure, a 5xx, a 429) are
queued in the till's :class:`~anoncard.outbox.Outbox` and replayed in order, each
carrying the sale's own time as ``"at"`` (the server accepts it only inside the window
its policy declares). Exactly-once crediting rests on the server: the document number
plus the content digest turn a replay of a credited checkout into ``"replayed": true``.

What is never queued: a checkout that redeems coupons, a reward redemption, a balance
or an entrance visit. They need the server's answer (a coupon or a reward is
single-use), so offline they raise :class:`Offline` and the till tells the customer.

Transport: the standard library's ``http.client`` - one keep-alive connection, a
timeout on every request, TLS verified against the system store or a CA file, and a
client certificate for mutual TLS. httpx would add connection pooling and HTTP/2 that a
till sending one request at a time does not use; with ``http.client`` a till integrator
gets no extra dependency, and ``import anoncard`` does not load it.

Failure classes on replay:

* 2xx: delivered, the row is deleted in the same step;
* any other 4xx (400, 404, 409, 413, 415: the request itself is refused): final, the
  row moves to the dead letters (without its card code) and the replay goes on;
* 401/403 (the till's key is wrong or revoked): the replay stops and the rows stay -
  they are not at fault, and dead-lettering them would lose sales;
* 429, 5xx, network failure: the replay stops (later rows wait, so order is kept) and
  the row is retried after an exponential backoff (or the server's Retry-After).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import cards
from .errors import (
    AnonCardError,
    CardError,
    CouponError,
    Forbidden,
    LedgerError,
    NotJson,
    Offline,
    PolicyViolation,
    RateLimited,
    RemoteError,
    RequestTooLarge,
    Unauthenticated,
    UnknownCard,
)
from .outbox import QUEUEABLE, Outbox, Queued, Status

TERMINAL_OPS = ("checkout", "refund", "redeem", "balance", "enter")
MAX_MESSAGE = 300  # a server message longer than this is cut: it is printed on the till
MAX_ANSWER_BYTES = 4 << 20  # an answer is a receipt or a card's balance: far below this





_REMOTE = {
    "policy_violation": PolicyViolation,
    "usage": PolicyViolation,
    "usage_error": PolicyViolation,
    "card_error": CardError,
    "unknown_card": UnknownCard,
    "ledger_error": LedgerError,
    "coupon_error": CouponError,
    "too_large": RequestTooLarge,
    "not_json": NotJson,
    "unauthenticated": Unauthenticated,
    "forbidden": Forbidden,
}
_HELD = (401, 403)  # the till's key, not the request: keep the rows, stop replaying
_RETRY = (429,)  # with 5xx and network failures: retry later


@dataclass(frozen=True, slots=True)
class Sent:
    """The outcome of a checkout or refund: delivered (``result`` is the receipt) or queued."""

    op: str
    document: str
    queued: bool
    result: dict | None = None
    seq: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict:
        if not self.queued:
            return dict(self.result or {})
        return {"queued": True, "op": self.op, "document": self.document, "seq": self.seq, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class FlushReport:
    """What one replay did: delivered and dead-lettered documents, and what is still queued."""

    delivered: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    remaining: int = 0
    replayed: list[str] = field(default_factory=list)  # delivered ones the server had credited before
    stopped: str | None = None  # why the replay stopped early (an error code), if it did
    refused: AnonCardError | None = None  # the server refused the till's key (401/403)

    def to_dict(self) -> dict:
        return {
            "delivered": self.delivered,
            "replayed": self.replayed,
            "dead": self.dead,
            "remaining": self.remaining,
            "stopped": self.stopped,
        }


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: ``base * 2**(attempts-1)`` seconds, at most ``cap``."""

    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempts: int, retry_after: float | None = None) -> timedelta:
        seconds = min(self.cap, self.base * 2 ** min(max(attempts - 1, 0), 64))  # a till offline for days: no overflow
        if retry_after is not None:
            seconds = max(seconds, min(retry_after, self.cap))
        return timedelta(seconds=seconds)


class _Unreachable(Exception):
    """A network failure, a 5xx or a 429 (internal: the caller queues or raises Offline)."""

    def __init__(self, code: str, retry_after: float | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: Any


class _Transport:
    """One keep-alive HTTP(S) connection to the server, re-opened after a failure."""

    def __init__(
        self, server: str, key: str, *, timeout: float, cafile: Path | None, client_cert: tuple[Path, Path] | None
    ) -> None:
        parts = urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PolicyViolation("option 'server': must be an http:// or https:// URL with a host", field="server")
        if not isinstance(key, str) or not key or not key.isascii() or not key.isprintable() or " " in key:
            raise PolicyViolation("option 'key': must be a non-empty terminal key of printable ASCII without spaces",
                                  field="key")  # fmt: skip
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._timeout = timeout
        self._context = None
        if self._scheme == "https":
            try:
                self._context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
                if client_cert is not None:  # mutual TLS: the till's own certificate and key
                    self._context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
            except (OSError, ssl.SSLError):
                raise PolicyViolation("option 'ca-file'/'client-cert': cannot be read as PEM certificates and key",
                                      field="tls") from None  # fmt: skip
        self._conn = None

    def __repr__(self) -> str:  # never show the key
        return f"_Transport({getattr(self, '_host', '?')})"

    def _connect(self):
        import http.client

        if self._context is not None:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: dict | None = None) -> _Answer:
        """The server's answer, or _Unreachable (network failure, 5xx, 429).

        A request on a reused keep-alive connection that the server had closed is sent
        once more on a fresh one: every operation is idempotent by its document number
        (an entrance visit prints the coupons the card holds), so that is safe."""
        import http.client

        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        for fresh in (False, True):
            reused = self._conn is not None and not fresh
            if self._conn is None or fresh:
                self.close()
                self._conn = self._connect()
            try:
                self._conn.request(method, self._prefix + path, body=data, headers=self._headers)
                response = self._conn.getresponse()
                raw = response.read(MAX_ANSWER_BYTES + 1)
            except ssl.SSLCertVerificationError:
                self.close()
                raise _Unreachable("tls_error") from None  # a certificate that does not verify: nothing was sent
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and isinstance(exc, (ConnectionError, http.client.RemoteDisconnected)):
                    continue
                raise _Unreachable("network_error") from None
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            break
        status = response.status
        if len(raw) > MAX_ANSWER_BYTES:
            self.close()
            raise _Unreachable("bad_answer")
        retry_after = _seconds(response.getheader("Retry-After"))
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        if status >= 500 or status in _RETRY:
            raise _Unreachable(_code(parsed) or f"http_{status}", retry_after)
        if status // 100 == 2 and not isinstance(parsed, dict):
            raise _Unreachable("bad_answer")  # not the contract's answer: keep the request and retry
        return _Answer(status, parsed)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _code(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return code if isinstance(code, str) and code.isidentifier() else None
    return None


def _error(answer: _Answer) -> AnonCardError:
    """The library error for a non-2xx answer (its message is the server's: names the field and rule)."""
    err = answer.body.get("error") if isinstance(answer.body, dict) else None
    code = _code(answer.body) or f"http_{answer.status}"
    message = err.get("message") if isinstance(err, dict) else None
    if not isinstance(message, str) or not message:
        message = f"server: refused the request (HTTP {answer.status})"
    message = message[:MAX_MESSAGE]
    if answer.status in _HELD and code not in ("unauthenticated", "forbidden"):
        code = "unauthenticated" if answer.status == 401 else "forbidden"
    cls = _REMOTE.get(code)
    return cls(message) if cls is not None else RemoteError(message, code=code, status=answer.status)


class TillClient:
    """A till's connection to the store server, with its outbox.

    ``clock`` gives the till's time (the sale time of a queued request, and the
    backoff's now); inject a fixed one in tests. Before each checkout or refund at most
    ``replay_batch`` queued requests are replayed, so a cashier never waits for a long
    queue; the rest follow with later sales or ``flush()``. ``cafile`` verifies an https
    server against the store's CA; ``client_cert`` (certificate and key files) is the
    till's identity where the server requires mutual TLS.

    Raises (from the constructor):
        PolicyViolation: the server URL or key is malformed.
        OutboxError: the outbox file is open to others or is not an outbox.
    """

    def __init__(
        self,
        server: str,
        key: str,
        outbox: Path,
        *,
        clock: Callable[[], datetime] = datetime.now,
        timeout: float = 5.0,
        cafile: Path | None = None,
        client_cert: tuple[Path, Path] | None = None,
        backoff: Backoff | None = None,
        replay_batch: int = 20,
    ) -> None:
        self._http = _Transport(server, key, timeout=timeout, cafile=cafile, client_cert=client_cert)
        self.outbox = Outbox(outbox)
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.replay_batch = replay_batch

    def close(self) -> None:
        self._http.close()
        self.outbox.close()

    def __enter__(self) -> TillClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations that may be queued ------------------------------------------------

    def checkout(self, request: Mapping) -> Sent:
        """Credit a basket; queued if the server cannot be reached (unless it redeems coupons).

        Raises:
            CardError: the card code is malformed or fails its check character (checked
                at the till, before anything is sent or queued).
            PolicyViolation, CardError, UnknownCard, LedgerError, CouponError, RemoteError:
                the server refused it (nothing is queued).
            Offline: the server cannot be reached and the checkout redeems coupons.
            Unauthenticated: the server refused the till's key.
        """
        return self._send("checkout", request)

    def refund(self, request: Mapping) -> Sent:
        """Refund all or some lines of a checkout; queued (behind its checkout) when offline."""
        return self._send("refund", request)

    def _send(self, op: str, request: Mapping) -> Sent:
        body = _body(request)
        needs_server = op == "checkout" and bool(body.get("coupons"))
        if not isinstance(body.get("txn"), str) or not body["txn"]:
            raise PolicyViolation("field 'txn': required (a document number makes a retry count once)", field="txn")
        if op == "checkout":  # a typo in the card code is caught at the till, not as a dead letter later
            cards.decode(body.get("card"))
        sale_at = self.clock()
        if self.outbox.count():
            report = self.flush(limit=self.replay_batch)  # the sale at hand waits for a few, not for all
            if report.refused is not None:
                raise report.refused
        if self.outbox.count() and not needs_server:  # keep the order: behind what is already queued
            seq = self.outbox.put(op, body, sale_at, retry_at=sale_at)
            return Sent(op, _document(op, body), True, seq=seq, reason="queued behind earlier requests")
        try:
            answer = self._http.request("POST", f"/v1/{op}", body)
        except _Unreachable as exc:
            if needs_server:
                raise Offline(
                    "server: unreachable; a checkout with coupons needs the server's single-use check "
                    "- take the sale without the coupons or try again"
                ) from None
            retry_at = sale_at + self.backoff.delay(1, exc.retry_after)
            seq = self.outbox.put(op, body, sale_at, error=exc.code, retry_at=retry_at)
            return Sent(op, _document(op, body), True, seq=seq, reason=exc.code)
        if answer.status // 100 != 2:
            raise _error(answer)
        return Sent(op, _document(op, body), False, result=answer.body)

    # -- operations that need the server -------------------------------------------------

    def redeem(self, request: Mapping) -> dict:
        """Spend points on a reward. Never queued: a reward needs the server's balance check.

        Raises:
            Offline: the server cannot be reached.
            PolicyViolation, CardError, UnknownCard, LedgerError, RemoteError: refused.
        """
        return self._online("POST", "/v1/redeem", _body(request), "a reward redemption")

    def balance(self, request: Mapping) -> dict:
        """Points and recent activity of a card (Offline when the server cannot be reached)."""
        return self._online("POST", "/v1/balance", _body(request), "a balance")

    def enter(self, request: Mapping) -> dict:
        """The entrance column's coupons for a card (Offline when the server cannot be reached)."""
        return self._online("POST", "/v1/enter", _body(request), "an entrance visit")

    def coupon_public_key(self) -> dict:
        return self._online("GET", "/v1/coupons/public-key", None, "the coupon key")

    def _online(self, method: str, path: str, body: dict | None, what: str) -> dict:
        try:
            answer = self._http.request(method, path, body)
        except _Unreachable as exc:
            if exc.code == "rate_limited":
                wait = max(1, round(exc.retry_after or 1))
                raise RateLimited(f"server: too many requests from this till; try again in {wait} s",
                                  retry_after=wait) from None  # fmt: skip
            raise Offline(f"server: unreachable ({exc.code}); {what} needs the server and is not queued") from None
        if answer.status // 100 != 2:
            raise _error(answer)
        return answer.body

    # -- the outbox ----------------------------------------------------------------------

    def flush(self, *, force: bool = False, limit: int | None = None) -> FlushReport:
        """Replay the queue in order until it is empty, ``limit`` rows were sent, or the
        server fails again.

        A row not yet due (backoff) stops the replay unless ``force``. Never raises for
        a refused row: it becomes a dead letter and the replay goes on.
        """
        delivered: list[str] = []
        replayed: list[str] = []
        dead: list[str] = []
        stopped = refused = None
        pending = self.outbox.pending()
        for n, item in enumerate(pending):
            if limit is not None and n >= limit:
                stopped = "limit"
                break
            now = self.clock()
            if not force and _parse(item.next_attempt_at, now) > now:
                stopped = "backoff"
                break
            try:
                answer = self._http.request("POST", f"/v1/{item.op}", {**item.body, "at": item.sale_at})
            except _Unreachable as exc:
                retry_at = now + self.backoff.delay(item.attempts + 1, exc.retry_after)
                self.outbox.retry_later(item.seq, exc.code, retry_at)
                stopped = exc.code
                break
            if answer.status // 100 == 2:
                self.outbox.delivered(item.seq)
                delivered.append(item.document)
                if answer.body.get("replayed") is True:  # credited before its answer was lost: not again
                    replayed.append(item.document)
                continue
            err = _error(answer)
            if answer.status in _HELD:
                self.outbox.hold(item.seq, err.code, now)
                stopped, refused = err.code, err
                break
            self.outbox.dead(item, answer.status, err.code, err.message, now)
            dead.append(item.document)
        if delivered or dead:
            self.outbox.scrub()
        return FlushReport(delivered, dead, self.outbox.count(), replayed, stopped, refused)

    def status(self) -> Status:
        return self.outbox.status()

    def pending(self) -> list[Queued]:
        return self.outbox.pending()


def _body(request: Mapping) -> dict:
    if not isinstance(request, Mapping):
        raise PolicyViolation("request: must be a JSON object", field="input")
    if "at" in request:
        raise PolicyViolation("field 'at': set by the till's outbox for replays, not by the caller", field="at")
    return dict(request)


def _document(op: str, body: dict) -> str:
    from .outbox import document_number

    return document_number(op, body)


def _parse(value: str, now: datetime) -> datetime:
    when = datetime.fromisoformat(value)
    if (when.tzinfo is None) != (now.tzinfo is None):  # a clock changed between naive and aware: due now
        return now
    return when


__all__ = [
    "Backoff",
    "FlushReport",
    "Offline",
    "QUEUEABLE",
    "RemoteError",
    "Sent",
    "Status",
    "TillClient",
]
