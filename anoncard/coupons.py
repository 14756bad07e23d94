"""Signed, single-use coupons that fit a QR code.

Design overview. A coupon code is ``K1`` followed by Crockford base 32 of
``payload || signature``, where the signature is Ed25519 over a domain label and the
payload. Any terminal holding the public key can check a coupon offline; only the
store server, which holds the private key, can mint one.

The payload (big-endian) carries::

    version (1) | key id (1) | coupon id (8) | expiry day (2, days since 2000-01-01)
    | kind (1) | value (4) | card binding (8) | category length (1) | category (UTF-8)

The *card binding* is an HMAC of the card secret and the coupon id under a key only
the server holds: it ties the coupon to the card that received it without exposing
the card's token, and it survives key rotation (the secret does not change). The
server also records each coupon, so redemption is single-use by one atomic update.

Verification follows the Fernet discipline: the signature is checked before
anything is parsed, and every forged, tampered or malformed code raises the same
opaque :class:`~anoncard.errors.CouponError`.
"""

from __future__ import annotations

import base64
import secrets
import struct
from dataclasses import dataclass
from datetime import date, timedelta

from .cards import _VALUE, ALPHABET
from .errors import CouponError

PREFIX = "K1"
VERSION = 1
EPOCH = date(2000, 1, 1)
KINDS = {"percent": 1, "amount": 2, "points": 3}
_KIND_NAMES = {v: k for k, v in KINDS.items()}
_LABEL = b"anoncard/coupon\x00"
_HEAD = struct.Struct(">BB8sHBI8sB")
_SIG = 64


@dataclass(frozen=True, slots=True)
class Coupon:
    """A coupon's content. ``value``: percent, cents off, or bonus points, by ``kind``."""

    id: bytes
    key_id: int
    expires: date
    kind: str
    value: int
    binding: bytes
    category: str

    def payload(self) -> bytes:
        cat = self.category.encode()
        days = (self.expires - EPOCH).days
        if not 0 <= days <= 0xFFFF:
            raise CouponError(f"coupon: the expiry must lie from {EPOCH} to {EPOCH + timedelta(days=0xFFFF)}")
        return (
            _HEAD.pack(VERSION, self.key_id, self.id, days, KINDS[self.kind], self.value, self.binding, len(cat)) + cat
        )

    def describe(self) -> str:
        if self.kind == "percent":
            return f"{self.value} % off {self.category}"
        if self.kind == "amount":
            return f"{self.value // 100}.{self.value % 100:02d} EUR off {self.category}"
        return f"{self.value} bonus points on {self.category}"


def new_id() -> bytes:
    return secrets.token_bytes(8)


_FROM_RFC = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ALPHABET)
_TO_RFC = str.maketrans(ALPHABET, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def _b32(data: bytes) -> str:
    """Crockford base 32, big-endian, unpadded (RFC 4648's bit order in Crockford's alphabet)."""
    return base64.b32encode(data).decode().rstrip("=").translate(_FROM_RFC)


def _unb32(text: str) -> bytes:
    if any(ch not in _VALUE for ch in text):
        raise CouponError("field 'coupons': not a valid coupon", field="coupons")
    canonical = "".join(ALPHABET[_VALUE[ch]] for ch in text).translate(_TO_RFC)
    try:
        raw = base64.b32decode(canonical + "=" * (-len(canonical) % 8))
    except ValueError:
        raise CouponError("field 'coupons': not a valid coupon", field="coupons") from None
    if _b32(raw) != canonical.translate(_FROM_RFC):  # non-canonical trailing bits
        raise CouponError("field 'coupons': not a valid coupon", field="coupons")
    return raw


def encode(coupon: Coupon, private_key) -> str:
    """Sign and encode; ``private_key`` is an Ed25519 private key (cryptography)."""
    payload = coupon.payload()
    return PREFIX + _b32(payload + private_key.sign(_LABEL + payload))


def verify(code: object, public_key) -> Coupon:
    """Check the signature, then parse.

    Raises:
        CouponError: one opaque error for anything forged, tampered or malformed.
    """
    from cryptography.exceptions import InvalidSignature

    invalid = CouponError("field 'coupons': not a valid coupon (forged, damaged or mistyped)", field="coupons")
    if not isinstance(code, str) or len(code) > 400:
        raise invalid
    text = code.strip().upper().replace("-", "").replace(" ", "")
    if not text.startswith(PREFIX):
        raise invalid
    try:
        raw = _unb32(text[len(PREFIX) :])
    except CouponError:
        raise invalid from None
    if len(raw) < _HEAD.size + _SIG:
        raise invalid
    payload, signature = raw[:-_SIG], raw[-_SIG:]
    try:
        public_key.verify(signature, _LABEL + payload)
    except InvalidSignature:
        raise invalid from None
    version, key_id, cid, days, kind, value, binding, n = _HEAD.unpack_from(payload)
    category = payload[_HEAD.size :]
    if version != VERSION or kind not in _KIND_NAMES or len(category) != n:
        raise invalid
    return Coupon(cid, key_id, EPOCH + timedelta(days=days), _KIND_NAMES[kind], value, binding, category.decode())


def benefit(coupon: Coupon, category_cents: int) -> tuple[int, int]:
    """``(discount cents, bonus points)`` this coupon gives on a basket's spend in its category."""
    if coupon.kind == "percent":
        return category_cents * coupon.value // 100, 0
    if coupon.kind == "amount":
        return min(coupon.value, category_cents), 0
    return 0, coupon.value
