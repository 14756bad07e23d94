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
import unicodedata
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
# "max(at)example.de", "max [at] example [dot] de", "max at example dot de"
_AT = re.compile(r"\s*[(\[{<]\s*(?:at|@)\s*[)\]}>]\s*|\s+at\s+")
_DOT = re.compile(r"\s*[(\[{<]\s*(?:dot|punkt)\s*[)\]}>]\s*|\s+(?:dot|punkt)\s+")
# separators people write inside numbers: white space, . - / and, in phone numbers, , and '
_SEP = r"[ ./-]{0,3}"
_PHONE_CANDIDATE = re.compile(r"\+?\(?\d[\d\s().,'\-/]{5,}\d")
_IBAN_CANDIDATE = re.compile(rf"(?<![a-z0-9])[a-z]{{2}}\d{{2}}(?:{_SEP}[a-z0-9]){{11,30}}")
_CARD_CANDIDATE = re.compile(rf"(?<!\d)\d(?:{_SEP}\d){{12,18}}(?!\d)")
_TAX_CANDIDATE = re.compile(r"(?<![a-z0-9])\d{2}[ ./-]?\d{3}[ ./-]?\d{3}[ ./-]?\d{3}(?![a-z0-9])")
_TAX_WORD = re.compile(r"(?:steuer|tax|idnr|id-nr|identifikationsnummer|tin)[a-z-]{0,4}\W{0,3}$")
_SSN_CANDIDATE = re.compile(r"(?<![a-z0-9])\d{3}-\d{2}-\d{4}(?![a-z0-9])")
_MONTHS = {
    "jan": 1, "feb": 2, "mar": 3, "mär": 3, "maer": 3, "mrz": 3, "apr": 4, "may": 5, "mai": 5, "jun": 6, "jul": 7,
    "aug": 8, "sep": 9, "oct": 10, "okt": 10, "nov": 11, "dec": 12, "dez": 12,
}  # fmt: skip
_MONTH = r"(?P<mon>jan|feb|mar|mär|maer|mrz|apr|may|mai|jun|jul|aug|sep|oct|okt|nov|dec|dez)[a-zä]*\.?"
_DSEP = r"\s?[./-]\s?"
_DATES = (
    re.compile(rf"(?<!\d)(?P<d>\d{{1,2}}){_DSEP}(?P<m>\d{{1,2}}){_DSEP}(?P<y>\d{{4}})(?!\d)"),
    re.compile(rf"(?<!\d)(?P<y>\d{{4}}){_DSEP}(?P<m>\d{{1,2}}){_DSEP}(?P<d>\d{{1,2}})(?!\d)"),
    re.compile(rf"(?<!\d)(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\.?[\s./-]?{_MONTH}[\s./-]?,?\s?(?P<y>\d{{4}})(?!\d)"),
    re.compile(rf"(?<![a-z]){_MONTH}[\s./-]?(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?[\s./-]?(?P<y>\d{{4}})(?!\d)"),
)
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Fa-f:])")
# German (word + house number, "Hauptstr.5" too) and English (house number first) forms
_STREET = re.compile(
    r"\b[\w.-]*(?:stra(?:ss|ß)e|str\.|weg|allee|platz|gasse|damm|ring|ufer|chaussee|steig|pfad|promenade"
    r"|street|road|avenue)\s+\d+[a-z]?\b"
    r"|\b[\w-]*str\.\s*\d+[a-z]?\b"
    r"|\b\d+[a-z]?,?\s+(?:[a-z][\w'.-]*\s+){1,3}(?:street|st|road|rd|avenue|ave|lane|ln|drive|dr|boulevard|blvd"
    r"|way|close|court|ct|place|pl|square|sq|terrace|crescent|grove|gardens|row|mews)\b"
    r"|\bp\.?\s?o\.?\s?box\s*\d+",
    re.IGNORECASE,
)
# a street address needs white space before its house number or "str." before it; without
# either the (slow, backtracking) street pattern cannot match and is not tried
_SPACE_DIGIT = re.compile(r"\s\d|\d[a-z]?,?\s|str\.|box", re.IGNORECASE)
_MIN_AGE = 14  # a date at least this many years back may be a customer's birth date
# letters of other scripts that look like Latin ones (homoglyphs): scanned as the Latin letter
_CONFUSABLES = str.maketrans(
    "АВСЕНІЈКМОРЅТХУаеіјорсѕхуԁԛԝΑΒΕΖΗΙΚΜΝΟΡΤΥΧαοικνρτυχ",
    "ABCEHIJKMOPSTXYaeijopcsxydqwABEZHIKMNOPTYXaoiknptux",
)


def normalise(text: str) -> str:
    """The form values are scanned in: NFKC, every kind of decimal digit as 0-9, look-alike
    letters of other scripts as Latin, invisible format characters removed, case folded,
    runs of white space as one space."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        text = "".join(
            str(d) if (d := unicodedata.decimal(ch, None)) is not None else ch
            for ch in text
            if unicodedata.category(ch) != "Cf"
        ).translate(_CONFUSABLES)
    return " ".join(text.casefold().split())


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _email(text: str) -> bool:
    variants = [text]
    if "at" in text or "(" in text or "[" in text:
        variants.append(_DOT.sub(".", _AT.sub("@", text)))
    if not any("@" in v for v in variants):
        return False
    from email_validator import EmailNotValidError, validate_email

    for variant in variants:
        for m in _EMAIL.finditer(variant):
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
    # a number glued to letters ("tel0170...") or written with separators the matcher does not
    # take ("030,123'45'67") escapes it: try the digit runs that start the way dialled numbers do
    for candidate in candidates:
        digits = _digits(candidate)
        if candidate.lstrip("(")[0] == "+":
            dialled = "+" + digits
        elif digits.startswith("00"):
            dialled = "+" + digits[2:]
        elif digits.startswith("0"):
            dialled = digits
        else:
            continue
        if len(digits) >= 9:
            try:
                if phonenumbers.is_valid_number(phonenumbers.parse(dialled, region)):
                    return True
            except phonenumbers.NumberParseException:
                continue
    return False


def _iban(text: str) -> bool:
    for m in _IBAN_CANDIDATE.finditer(text):
        from stdnum import iban  # only once a candidate is found: importing it costs

        candidate = re.sub(r"[ ./-]", "", m.group(0))
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
    """A German tax id (IdNr) standing as a word of its own, or after a word that names it; a
    US social security number written as one. 11-digit runs glued into document numbers
    ("cj-31198570044") are common and about one in twenty passes the check digit: those pass."""
    from stdnum.de import idnr

    for m in _TAX_CANDIDATE.finditer(text):
        before, after = text[: m.start()], text[m.end() :]
        alone = (not before or before[-1] == " ") and (not after or after[0] in " ,;")
        if (alone or _TAX_WORD.search(before)) and idnr.is_valid(_digits(m.group(0))):
            return True
    for m in _SSN_CANDIDATE.finditer(text):
        before, after = text[: m.start()], text[m.end() :]
        if (not before or before[-1] == " " or _TAX_WORD.search(before)) and (not after or after[0] in " ,;"):
            from stdnum.us import ssn

            if ssn.is_valid(m.group(0)):
                return True
    return False


def _birth_date(text: str, today: date) -> bool:
    for pattern in _DATES:
        for m in pattern.finditer(text):
            y, d = int(m.group("y")), int(m.group("d"))
            mon = m.groupdict().get("mon")
            # 03/12/1975 may be day/month or month/day: either reading counts
            readings = [(_MONTHS[mon], d)] if mon else [(int(m.group("m")), d), (d, int(m.group("m")))]
            for mo, dd in readings:
                try:
                    when = date(y, mo, dd)
                except ValueError:
                    continue
                if 1900 <= when.year <= today.year - _MIN_AGE:
                    return True
    return False


def _ipv4(candidate: str) -> bool:
    octets = candidate.split(".")
    return len(octets) == 4 and all(o.isdigit() and int(o) <= 255 for o in octets)  # 010.000.000.001 too


def _ip(text: str) -> bool:
    if any(_ipv4(m.group(0)) for m in _IPV4.finditer(text)):
        return True
    for m in _IPV6.finditer(text):
        try:
            ipaddress.ip_address(m.group(0))
            return True
        except ValueError:
            continue
    return False


def scan(text: str, *, region: str = "DE", today: date | None = None) -> list[str]:
    """The kinds of personal data ``text`` appears to contain (empty when none).

    The text is scanned in its :func:`normalise` d form, so full-width digits, a Kelvin
    sign for a K, look-alike letters, tabs and doubled spaces hide nothing."""
    if not isinstance(text, str) or not text:
        return []
    if text.isascii():
        return _scan(normalise(text), region, today)
    readings = [normalise(text)]
    if any(unicodedata.category(ch) == "Cf" for ch in text):
        # an invisible character may join two tokens or separate them: scan both readings
        readings.append(normalise("".join(" " if unicodedata.category(ch) == "Cf" else ch for ch in text)))
    # a compatibility form may hide a boundary that its normal form removes (a circled ideograph
    # after a house number becomes a letter): the text as written is scanned too
    readings.append(text.lower())
    found: list[str] = []
    for reading in dict.fromkeys(readings):
        found += [kind for kind in _scan(reading, region, today) if kind not in found]
    return found


def _scan(text: str, region: str, today: date | None) -> list[str]:
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
        if digits >= 9 and _tax_id(text):
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
