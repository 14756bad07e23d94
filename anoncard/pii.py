"""Detectors for personal data hiding in string values.

Used twice: by the gate on every string a request carries (before anything is
stored) and by the audit on every free-text value already stored. A detector names
the *kind* of data it found and never returns or repeats the matched text, so no
error message or report can leak it.

Maintained libraries do the validation where they exist - python-stdnum (IBAN,
Luhn, German tax id), phonenumbers (Google's libphonenumber), email-validator - and
cheap pre-filters keep ordinary values (product categories, document numbers) off
the slow paths.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date

KINDS = (
    "email address",
    "phone number",
    "IBAN",
    "payment card number",
    "birth date",
    "IP address",
    "tax id",
    "postal address",
)

_EMAIL = re.compile(r"[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\"]+\.[A-Za-z]{2,}")
_PHONE_CANDIDATE = re.compile(r"\+?\(?\d[\d\s().\-/]{5,}\d")
_IBAN_CANDIDATE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:\s?[A-Za-z0-9]){11,30}")
_CARD_CANDIDATE = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
_TAX_CANDIDATE = re.compile(r"(?<!\d)\d{2}\s?\d{3}\s?\d{3}\s?\d{3}(?!\d)")
_DATES = (
    re.compile(r"(?<!\d)(?P<d>\d{1,2})[./](?P<m>\d{1,2})[./](?P<y>\d{4})(?!\d)"),
    re.compile(r"(?<!\d)(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?!\d)"),
    re.compile(r"(?<!\d)(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})(?!\d)"),
)
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Fa-f:])")
_STREET = re.compile(
    r"\b[\w.-]*(?:stra(?:ss|ß)e|str\.|weg|allee|platz|gasse|damm|ring|ufer|street|road|avenue)\s+\d+[a-z]?\b",
    re.IGNORECASE,
)
# a street address needs white space before its house number; without that the (slow,
# backtracking) street pattern cannot match and is not tried
_SPACE_DIGIT = re.compile(r"\s\d")
_MIN_AGE = 14  # a date at least this many years back may be a customer's birth date


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _email(text: str) -> bool:
    if "@" not in text:
        return False
    from email_validator import EmailNotValidError, validate_email

    for m in _EMAIL.finditer(text):
        try:
            validate_email(m.group(0), check_deliverability=False)
            return True
        except EmailNotValidError:
            continue
    return False


# where a dialled number starts with the trunk prefix 0 or with +: a digit run that starts
# otherwise (a till document number, say) is no phone number there
_TRUNK_ZERO = {"DE", "AT", "CH", "FR", "GB", "NL", "BE", "PL", "CZ", "DK", "SE", "FI", "IE", "PT", "LU"}


def _phone(text: str, region: str) -> bool:
    candidates = [m.group(0) for m in _PHONE_CANDIDATE.finditer(text) if len(_digits(m.group(0))) >= 7]
    if region in _TRUNK_ZERO:
        candidates = [c for c in candidates if c.lstrip("(")[:1] in ("0", "+")]
    if not candidates:
        return False
    import phonenumbers

    if any(True for _ in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)):
        return True
    # a number glued to letters ("tel0170...") escapes the matcher: try the digit runs that
    # start the way dialled numbers do (trunk prefix 0 or international +)
    for candidate in candidates:
        if candidate[0] in "0+" and len(_digits(candidate)) >= 9:
            try:
                if phonenumbers.is_valid_number(phonenumbers.parse(candidate, region)):
                    return True
            except phonenumbers.NumberParseException:
                continue
    return False


def _iban(text: str) -> bool:
    for m in _IBAN_CANDIDATE.finditer(text):
        from stdnum import iban  # only once a candidate is found: importing it costs

        candidate = m.group(0).replace(" ", "")
        # try the longest prefix that validates: an IBAN may be followed by other symbols
        for end in range(len(candidate), 14, -1):
            if iban.is_valid(candidate[:end]):
                return True
    return False


def _payment_card(text: str) -> bool:
    for m in _CARD_CANDIDATE.finditer(text):
        from stdnum import luhn

        digits = _digits(m.group(0))
        # major networks' first digit: 2/5 Mastercard, 3 Amex/Diners/JCB, 4 Visa, 6 Discover/Maestro/UnionPay
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn.is_valid(digits):
            return True
    return False


def _tax_id(text: str) -> bool:
    # only a value that *is* a tax id: 11-digit runs inside document numbers are common
    # and about one in twenty passes the check digit
    m = _TAX_CANDIDATE.fullmatch(text.strip())
    if m is None:
        return False
    from stdnum.de import idnr

    return idnr.is_valid(_digits(m.group(0)))


def _birth_date(text: str, today: date) -> bool:
    for pattern in _DATES:
        for m in pattern.finditer(text):
            y, mo, d = int(m.group("y")), int(m.group("m")), int(m.group("d"))
            try:
                when = date(y, mo, d)
            except ValueError:
                continue
            if 1900 <= when.year <= today.year - _MIN_AGE:
                return True
    return False


def _ip(text: str) -> bool:
    for pattern in (_IPV4, _IPV6):
        for m in pattern.finditer(text):
            try:
                ipaddress.ip_address(m.group(0))
                return True
            except ValueError:
                continue
    return False


def scan(text: str, *, region: str = "DE", today: date | None = None) -> list[str]:
    """The kinds of personal data ``text`` appears to contain (empty when none)."""
    if not isinstance(text, str) or not text:
        return []
    found = []
    if _email(text):
        found.append("email address")
    digits = sum(ch.isdigit() for ch in text)
    if digits:
        # each detector needs a least number of digits; most values never reach the slow ones
        if digits >= 13 and _payment_card(text):
            found.append("payment card number")
        if digits >= 2 and len(text) >= 15 and _iban(text):
            found.append("IBAN")
        if digits >= 11 and _tax_id(text):
            found.append("tax id")
        if digits >= 5 and _birth_date(text, today or date.today()):
            found.append("birth date")
        if digits >= 2 and _ip(text):
            found.append("IP address")
        if digits >= 7 and _phone(text, region) and "payment card number" not in found and "IBAN" not in found:
            found.append("phone number")
        if _SPACE_DIGIT.search(text) and _STREET.search(text):
            found.append("postal address")
    elif ":" in text and _ip(text):
        found.append("IP address")
    return found
