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
from .service import Balance, Receipt, Retirement, Service, init_home
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
    "KeyRing",
    "KeyRingError",
    "LedgerError",
    "PolicyViolation",
    "Programme",
    "ProgrammeError",
    "Receipt",
    "Retirement",
    "Service",
    "Store",
    "StoreError",
    "UnknownCard",
    "init_home",
]
