"""Card secrets and card codes.

A card carries nothing but a random secret of 130 bits. It is written as a card
code a person can type and a QR code can hold in alphanumeric mode::

    C1-7K3M-QX2D-...-9FT   (prefix "C1", 26 data symbols, 1 check symbol)

* The alphabet is Crockford's base 32 (no I, L, O, U); on input ``I``/``L`` are
  read as ``1`` and ``O`` as ``0``, case and dashes/spaces are ignored.
* ``C`` marks a card, ``1`` is the code format version.
* The check symbol makes the weighted sum of all symbols, with weights the powers
  of a primitive element ``a`` of GF(32), equal to zero. Changing one symbol by
  ``e`` changes the sum by ``a^k e != 0``; swapping neighbours ``x, y`` changes it
  by ``a^k (a + 1)(x + y) != 0`` when ``x != y``. So every single-symbol typo and
  every adjacent transposition is caught before any lookup.

The secret never leaves this module except as the input of a keyed token
(:func:`anoncard.keyring.KeyRing.tokens`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .errors import CardError

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {ch: i for i, ch in enumerate(ALPHABET)}
_VALUE.update({"I": 1, "L": 1, "O": 0})
PREFIX = "C1"
SECRET_BITS = 130
DATA_SYMBOLS = SECRET_BITS // 5  # 26
CODE_SYMBOLS = len(PREFIX) + DATA_SYMBOLS + 1  # 29
_GROUP = 4
_POLY = 0b100101  # x^5 + x^2 + 1, primitive over GF(2)
_A = 2  # the element x, a generator of GF(32)*


def _gf_mul(x: int, y: int) -> int:
    product = 0
    while y:
        if y & 1:
            product ^= x
        y >>= 1
        x <<= 1
        if x & 0b100000:
            x ^= _POLY
    return product


_MUL_A = [_gf_mul(v, _A) for v in range(32)]


def _syndrome(values: list[int]) -> int:
    """Horner evaluation of sum(a^(n-1-i) * v_i) over GF(32)."""
    acc = 0
    for v in values:
        acc = _MUL_A[acc] ^ v
    return acc


def check_symbol(body: str) -> str:
    """The check symbol that makes ``body + symbol`` a valid code body (prefix included)."""
    return ALPHABET[_MUL_A[_syndrome([_VALUE[c] for c in body])]]


@dataclass(frozen=True, slots=True)
class CardSecret:
    """The random secret a card carries. ``repr`` never shows it."""

    value: int

    def __post_init__(self) -> None:
        if not isinstance(self.value, int) or not 0 <= self.value < 1 << SECRET_BITS:
            raise ValueError("a card secret is an integer of at most 130 bits")

    def __repr__(self) -> str:
        return "CardSecret(<hidden>)"

    def to_bytes(self) -> bytes:
        """Canonical 17-byte big-endian form, the input of the card token HMAC."""
        return self.value.to_bytes(17, "big")

    @property
    def code(self) -> str:
        """The printable card code with dashes, e.g. ``C1-XXXX-…``."""
        return format_code(encode(self))


def generate() -> CardSecret:
    """A fresh secret from the operating system's CSPRNG."""
    return CardSecret(secrets.randbits(SECRET_BITS))


def encode(secret: CardSecret) -> str:
    """The compact card code (no dashes): prefix, 26 data symbols, check symbol."""
    v = secret.value
    data = "".join(ALPHABET[(v >> (5 * i)) & 31] for i in reversed(range(DATA_SYMBOLS)))
    body = PREFIX + data
    return body + check_symbol(body)


def format_code(compact: str) -> str:
    """Group a compact code for people: ``C1-XXXX-XXXX-…``."""
    rest = compact[len(PREFIX) :]
    groups = [rest[i : i + _GROUP] for i in range(0, len(rest), _GROUP)]
    return "-".join([compact[: len(PREFIX)], *groups])


_NORMALISE = str.maketrans({"-": None, " ": None, "I": "1", "L": "1", "O": "0"})
_TO_INT_DIGITS = str.maketrans(ALPHABET, "0123456789abcdefghijklmnopqrstuv")


def normalise(text: str) -> str:
    """Upper-case, drop dashes and spaces, map Crockford aliases; no validation."""
    return text.upper().translate(_NORMALISE)


def decode(text: object) -> CardSecret:
    """Parse a card code as typed or scanned.

    Raises:
        CardError: the value is not a string, has the wrong length or prefix, holds a
            symbol outside the alphabet, or fails the check symbol. The message
            never repeats the code.
    """
    if not isinstance(text, str):
        raise CardError("field 'card': must be a card code string", field="card")
    if len(text) > 64:
        raise CardError("field 'card': too long for a card code", field="card")
    compact = normalise(text)
    if len(compact) != CODE_SYMBOLS:
        raise CardError(
            f"field 'card': a card code has {CODE_SYMBOLS} symbols, not {len(compact)}",
            field="card",
        )
    if any(ch not in _VALUE for ch in compact):
        raise CardError("field 'card': holds a character outside the card alphabet", field="card")
    if not compact.startswith(PREFIX):
        raise CardError(f"field 'card': unknown card code version (expected prefix {PREFIX})", field="card")
    if _syndrome([_VALUE[c] for c in compact]) != 0:
        raise CardError("field 'card': check character does not match (typo?)", field="card")
    return CardSecret(int(compact[len(PREFIX) : -1].translate(_TO_INT_DIGITS), 32))
