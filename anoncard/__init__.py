"""anoncard - an anonymous loyalty card: it stores what you buy, not who you are."""

from __future__ import annotations

from .cards import CardSecret
from .errors import (
    AnonCardError,
    CardError,
    KeyRingError,
    LedgerError,
    PolicyViolation,
    ProgrammeError,
    StoreError,
    UnknownCard,
)
from .keyring import KeyRing
from .programme import Programme
from .recovery import RecoveryCode
from .selfservice import Erasure, Holder, Replacement
from .service import Balance, IssuedCard, Receipt, Retirement, Service, init_home
from .store import Store
from .vocabulary import Category, Vocabulary

__version__ = "0.1.0"

__all__ = [
    "Category",
    "Vocabulary",
    "AnonCardError",
    "Balance",
    "CardError",
    "CardSecret",
    "Erasure",
    "Holder",
    "IssuedCard",
    "KeyRing",
    "KeyRingError",
    "LedgerError",
    "PolicyViolation",
    "Programme",
    "ProgrammeError",
    "Receipt",
    "RecoveryCode",
    "Replacement",
    "Retirement",
    "Service",
    "Store",
    "StoreError",
    "UnknownCard",
    "init_home",
]
