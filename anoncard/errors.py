"""One exception hierarchy for the whole library.

Every error anoncard raises derives from :class:`AnonCardError`. Each carries a
stable machine-readable ``code`` (used by the CLI's ``--json`` error object) and
an ``exit_code`` for the command line. Messages name the field and the rule that
was broken; they never contain a card secret, a card code or key material.
"""

from __future__ import annotations


class AnonCardError(Exception):
    """Base class of every anoncard error.

    Attributes:
        code: stable identifier for machines, e.g. ``"policy_violation"``.
        field: the request field the error is about, or ``None``.
        exit_code: the process exit status the CLI uses for it.
    """

    code = "anoncard_error"
    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class PolicyViolation(AnonCardError):
    """A request was refused by the data-minimisation gate (unknown field, bad value)."""

    code = "policy_violation"
    exit_code = 3


class CardError(AnonCardError):
    """A card code is malformed, fails its check character, or is not known."""

    code = "card_error"
    exit_code = 4


class UnknownCard(CardError):
    """A well-formed card code that matches no card under any live key."""

    code = "unknown_card"


class LedgerError(AnonCardError):
    """A points operation was refused (idempotency conflict, insufficient points, bad refund)."""

    code = "ledger_error"
    exit_code = 5


class KeyRingError(AnonCardError):
    """The key ring file is missing, unreadable, too open, or an operation on it is not allowed."""

    code = "keyring_error"
    exit_code = 6


class KeyRingBehind(KeyRingError):
    """This host's key ring file lacks a key version the database already uses: another server
    of the chain rotated, and the new ring has not been copied here yet. A state of the server,
    not of the request: a terminal retries later (HTTP 503), and the request counts once."""

    code = "keyring_behind"


class ProgrammeError(AnonCardError):
    """The programme file (earn rate, gifts, rewards) is invalid."""

    code = "programme_error"
    exit_code = 7


class StoreError(AnonCardError):
    """The database is missing, of an unknown schema version, or could not be written."""

    code = "store_error"
    exit_code = 8


class PolicyFileError(AnonCardError):
    """The policy file is invalid (a field without a purpose, an unknown type, a bad bound)."""

    code = "policy_file_error"
    exit_code = 9


class AuditFailed(AnonCardError):
    """An audit ran and at least one check failed (the report says which)."""

    code = "audit_failed"
    exit_code = 10


class CouponError(AnonCardError):
    """A coupon is forged, damaged, expired, used, for another card, or does not fit the basket."""

    code = "coupon_error"
    exit_code = 11


class ModelError(AnonCardError):
    """The suggestion model file is not one this version wrote, or cannot be fitted or read."""

    code = "model_error"
    exit_code = 24


class OutputError(AnonCardError):
    """An output (a QR file, a report, a backup, an export, the standard output) could not be
    written - a full disk, for example. What was written of it is removed; nothing is recorded
    as if it had been written."""

    code = "output_error"
    exit_code = 12
class RequestTooLarge(PolicyViolation):
    """A request (a serve line, a ``--input`` document, an HTTP body) is over the size limit."""

    code = "too_large"


class NotJson(PolicyViolation):
    """An HTTP request body is not declared as JSON (``Content-Type: application/json``)."""

    code = "not_json"


class Unauthenticated(AnonCardError):
    """No terminal key, a malformed or unknown one, or a revoked one."""

    code = "unauthenticated"
    exit_code = 13


class Forbidden(AnonCardError):
    """The terminal's role does not reach this operation."""

    code = "forbidden"
    exit_code = 14


class RateLimited(AnonCardError):
    """Too many answers of one kind (unknown cards) for one terminal; ``retry_after`` is in seconds."""

    code = "rate_limited"
    exit_code = 15

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InternalError(AnonCardError):
    """A defect answered as a 500 in the error envelope (the traceback goes to the log, not the client)."""

    code = "internal_error"


class Offline(AnonCardError):
    """The server cannot be reached (or is unavailable) and the request cannot be queued."""

    code = "offline"
    exit_code = 20


class OutboxError(AnonCardError):
    """The outbox file cannot be used: readable by others, not a database, or not writable."""

    code = "outbox_error"
    exit_code = 21


class RemoteError(AnonCardError):
    """The server refused a request with an error code this client has no class for."""

    exit_code = 22

    def __init__(self, message: str, *, code: str, status: int, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code
        self.status = status


class InsightsRefused(AnonCardError):
    """An insights release was refused: the privacy budget is spent, or the figure asked for
    is one that is never released (per card, category pairs, a finer grouping)."""

    code = "insights_refused"
    exit_code = 23
