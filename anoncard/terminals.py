"""Terminals of a store server and their bearer keys.

Design overview. Every device that calls the server (a till, an entrance column, a
kiosk, the operator's laptop, the auditor's) is a *terminal* with a name and one role
(:data:`anoncard.protocol.ROLES`); the role decides which operations it reaches. Its
bearer key is 32 random bytes, written ``ak1_`` + base64url, and shown once when the
terminal is added; the database keeps only a keyed digest of it (HMAC-SHA256 under the
key ring's ``terminal-key`` sub-key), so a copy of the database authenticates nothing.
A revoked terminal stays in the table (its name is not reused) and is refused from then on.

Nothing links a terminal to a card: no stored row names a terminal next to a card, and
what the server counts per terminal (requests, unknown-card answers) stays in memory.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
from dataclasses import asdict, dataclass

from . import pii
from .errors import PolicyViolation, Unauthenticated
from .protocol import ROLES

KEY_PREFIX = "ak1_"
KEY_BYTES = 32
KEY_LENGTH = len(KEY_PREFIX) + 43  # base64url of 32 bytes, without padding
NAME_MAX = 48
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_KEY = re.compile(r"ak1_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class Terminal:
    name: str
    role: str
    created: str
    revoked: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def new_key() -> tuple[str, bytes]:
    """A fresh bearer key: its text (shown once) and its bytes."""
    raw = secrets.token_bytes(KEY_BYTES)
    return KEY_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), raw


def key_bytes(text: object) -> bytes | None:
    """The bytes of a well-formed bearer key, or None (never says what is wrong with it)."""
    if not isinstance(text, str) or len(text) != KEY_LENGTH or not _KEY.fullmatch(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text[len(KEY_PREFIX) :] + "=")
    except (ValueError, binascii.Error):
        return None
    return raw if len(raw) == KEY_BYTES else None


def check_name(name: object) -> str:
    """A terminal name, or PolicyViolation naming the rule."""
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX or not _NAME.fullmatch(name):
        raise PolicyViolation(
            f"field 'name': a terminal name is 1-{NAME_MAX} lower-case letters, digits, - and _ (e.g. store7-till3)",
            field="name",
        )
    if pii.scan(name):
        raise PolicyViolation("field 'name': looks like personal data; name the device, not a person", field="name")
    return name


def check_role(role: object) -> str:
    if role not in ROLES:
        raise PolicyViolation(f"field 'role': must be one of {', '.join(ROLES)}", field="role")
    return role  # type: ignore[return-value]


class Terminals:
    """Add, list, revoke and authenticate terminals of one open service."""

    def __init__(self, svc) -> None:
        self.svc = svc

    def _today(self) -> str:
        return self.svc.clock().date().isoformat()

    def add(self, name: object, role: object) -> tuple[Terminal, str]:
        """Add a terminal; returns it and its bearer key (the only time the key is seen).

        Raises:
            PolicyViolation: a bad name or role, or the name is taken (revoked names stay taken).
        """
        name, role = check_name(name), check_role(role)
        text, raw = new_key()
        day = self._today()
        with self.svc.store.transaction():
            if not self.svc.store.add_terminal(name, role, self.svc.ring.terminal_digest(raw), day):
                raise PolicyViolation("field 'name': a terminal of that name exists (or was revoked)", field="name")
            self.svc._record("terminal_added", {"name": name, "role": role})
        return Terminal(name, role, day), text

    def list(self) -> list[Terminal]:
        return [Terminal(t.name, t.role, t.created_day, t.revoked_day) for t in self.svc.store.terminals()]

    def revoke(self, name: object) -> Terminal:
        """Revoke a terminal's key at once.

        Raises:
            PolicyViolation: a bad name, no such terminal, or it is revoked already.
        """
        name = check_name(name)
        day = self._today()
        with self.svc.store.transaction():
            if not self.svc.store.revoke_terminal(name, day):
                raise PolicyViolation("field 'name': no active terminal of that name", field="name")
            self.svc._record("terminal_revoked", {"name": name})
        return next(t for t in self.list() if t.name == name)

    def authenticate(self, key: object) -> Terminal:
        """The active terminal holding this bearer key.

        The key is looked up by its keyed digest (which tells an attacker nothing about
        any key) and the stored digest is compared in constant time.

        Raises:
            Unauthenticated: no key, a malformed or unknown key, or a revoked terminal (one message for all).
        """
        raw = key_bytes(key)
        if raw is not None:
            digest = self.svc.ring.terminal_digest(raw)
            row = self.svc.store.find_terminal(digest)
            if row is not None and hmac.compare_digest(row.digest, digest) and row.revoked_day is None:
                return Terminal(row.name, row.role, "", None)
        raise Unauthenticated("authorization: a valid terminal key is required (Authorization: Bearer ak1_...)")
