"""Money as integer cents, parsed from decimal strings; never floats."""

from __future__ import annotations

import re

from .errors import PolicyViolation

_MAX_DIGITS = 9  # whole euros; far above any basket, far below int-to-str limits
_DECIMAL = re.compile(rf"(0|[1-9][0-9]{{0,{_MAX_DIGITS - 1}}})(?:\.([0-9]{{1,2}}))?")


def parse_cents(value: object, field: str, *, maximum: int | None = None, allow_zero: bool = False) -> int:
    """Parse ``"3.49"`` (or an int of whole euros) into 349 cents.

    Raises:
        PolicyViolation: a float, a bool, anything not of the form ``123`` or ``123.4``
            / ``123.45`` (so no sign, exponent, NaN or third decimal), zero unless
            allowed, or above ``maximum``; the message names ``field`` and the rule.
    """
    if isinstance(value, (bool, float)):
        raise PolicyViolation(f"field '{field}': must be a decimal string such as \"3.49\", not a number", field=field)
    if isinstance(value, int):
        if not 0 <= value < 10**_MAX_DIGITS:
            raise PolicyViolation(
                f"field '{field}': must be a whole number of euros from 0 to {10**_MAX_DIGITS - 1}", field=field
            )
        value = str(value)
    if not isinstance(value, str):
        raise PolicyViolation(f"field '{field}': must be a decimal string such as \"3.49\"", field=field)
    m = _DECIMAL.fullmatch(value)
    if m is None:
        raise PolicyViolation(
            f"field '{field}': not an amount (digits, at most 2 decimals, no sign or exponent)",
            field=field,
        )
    cents = int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))
    if cents == 0 and not allow_zero:
        raise PolicyViolation(f"field '{field}': must be greater than 0", field=field)
    if maximum is not None and cents > maximum:
        raise PolicyViolation(f"field '{field}': must be at most {format_cents(maximum)}", field=field)
    return cents


def format_cents(cents: int) -> str:
    """349 -> ``"3.49"``; -349 -> ``"-3.49"``."""
    if not isinstance(cents, int) or isinstance(cents, bool):
        raise TypeError("cents must be an int")
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"
