"""Recovery codes: the detachable stub that replaces a lost card.

A recovery code carries 100 random bits, written like a card code but with its own
prefix so the two are never confused::

    R1-7K3M-QX2D-...-9F   (prefix "R1", 20 data symbols, 1 check symbol)

It uses the card code's alphabet and check symbol (:mod:`anoncard.cards`): every
single-symbol typo and every adjacent transposition is caught before any lookup. The
database keeps only a keyed digest of it (:meth:`anoncard.keyring.KeyRing.recovery_digest`),
so a copy of the database cannot replace a card; a code works once.

Guessing is hopeless: with a million cards, one guess in about 2^80 hits a live code.
What a code cannot stop is someone who holds the stub itself (see docs/threat_model.md).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .cards import _VALUE, ALPHABET, _syndrome, check_symbol, format_code, normalise
from .errors import CardError

PREFIX = "R1"
SECRET_BITS = 100
DATA_SYMBOLS = SECRET_BITS // 5  # 20
CODE_SYMBOLS = len(PREFIX) + DATA_SYMBOLS + 1  # 23
_TO_INT_DIGITS = str.maketrans(ALPHABET, "0123456789abcdefghijklmnopqrstuv")


@dataclass(frozen=True, slots=True)
class RecoveryCode:
    """The random secret of a recovery stub. ``repr`` never shows it."""

    value: int

    def __post_init__(self) -> None:
        if not isinstance(self.value, int) or not 0 <= self.value < 1 << SECRET_BITS:
            raise ValueError("a recovery code is an integer of at most 100 bits")

    def __repr__(self) -> str:
        return "RecoveryCode(<hidden>)"

    def to_bytes(self) -> bytes:
        """Canonical 13-byte big-endian form, the input of the keyed digest."""
        return self.value.to_bytes(13, "big")

    @property
    def code(self) -> str:
        """The printable code with dashes, e.g. ``R1-XXXX-...``."""
        return format_code(encode(self))


def generate() -> RecoveryCode:
    """A fresh recovery code from the operating system's CSPRNG."""
    return RecoveryCode(secrets.randbits(SECRET_BITS))


def encode(code: RecoveryCode) -> str:
    """The compact code (no dashes): prefix, 20 data symbols, check symbol."""
    v = code.value
    body = PREFIX + "".join(ALPHABET[(v >> (5 * i)) & 31] for i in reversed(range(DATA_SYMBOLS)))
    return body + check_symbol(body)


def decode(text: object, field: str = "recovery") -> RecoveryCode:
    """Parse a recovery code as typed.

    Raises:
        CardError: not a string, wrong length or prefix, a symbol outside the alphabet,
            or a failed check symbol. The message names the field, never the code.
    """
    if not isinstance(text, str):
        raise CardError(f"field '{field}': must be a recovery code string", field=field)
    if len(text) > 64:
        raise CardError(f"field '{field}': too long for a recovery code", field=field)
    compact = normalise(text)
    if len(compact) != CODE_SYMBOLS:
        raise CardError(f"field '{field}': a recovery code has {CODE_SYMBOLS} symbols, not {len(compact)}", field=field)
    if any(ch not in _VALUE for ch in compact):
        raise CardError(f"field '{field}': holds a character outside the code alphabet", field=field)
    if not compact.startswith(PREFIX):
        raise CardError(f"field '{field}': not a recovery code (expected prefix {PREFIX})", field=field)
    if _syndrome([_VALUE[c] for c in compact]) != 0:
        raise CardError(f"field '{field}': check character does not match (typo?)", field=field)
    return RecoveryCode(int(compact[len(PREFIX) : -1].translate(_TO_INT_DIGITS), 32))
