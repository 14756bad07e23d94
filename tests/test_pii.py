"""PII detectors: what a retail DPO expects to be caught, and ordinary values left alone."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard import pii
from anoncard.pii import KINDS, scan

TODAY = date(2026, 11, 22)


@pytest.mark.parametrize(
    "text, kind",
    [
        ("a@b.de", "email address"),
        ("contact: hans.mueller+shop@example.org please", "email address"),
        ("+49 30 1234567", "phone number"),
        ("030-12345678", "phone number"),
        ("0151 23456789", "phone number"),
        ("tel01701234567", "phone number"),
        ("DE89 3704 0044 0532 0130 00", "IBAN"),
        ("iban=DE89370400440532013000", "IBAN"),
        ("GB82WEST12345698765432", "IBAN"),
        ("4111 1111 1111 1111", "payment card number"),
        ("pan-5555555555554444-x", "payment card number"),
        ("378282246310005", "payment card number"),
        ("12.03.1975", "birth date"),
        ("born 1975-03-12", "birth date"),
        ("03/12/1975", "birth date"),
        ("192.168.0.1", "IP address"),
        ("2001:db8::1", "IP address"),
        ("65929970489", "tax id"),
        ("Hauptstraße 12", "postal address"),
        ("Unter den Linden allee 7", "postal address"),
    ],
)
def test_detects(text, kind):
    assert kind in scan(text, today=TODAY)


@pytest.mark.parametrize(
    "text",
    [
        "dairy",
        "soft drinks",
        "frzn meat/meat dinners",
        "beers/ales",
        "salad & dressing",
        "baby foods (jar)",
        "store7-till3-000123",
        "s7:t3:0001",
        "bench-3-1234",
        "2015-03-02",  # a recent day is not a birth date
        "2026-11-22T10:00:00",
        "coffee",
        "voucher-5",
        "1234567890123",  # 13 digits, not Luhn-valid
        "cj-31198570044",  # an 11-digit basket number that passes the tax id check digit
        "4111111111111112",  # fails Luhn
        "DE89370400440532013001",  # fails the IBAN check
    ],
)
def test_leaves_ordinary_values_alone(text):
    assert scan(text, today=TODAY) == []


def luhn_complete(prefix: str) -> str:
    digits = [int(d) for d in prefix + "0"]
    for i in range(len(digits) - 2, -1, -2):
        digits[i] = digits[i] * 2 - 9 if digits[i] * 2 > 9 else digits[i] * 2
    return prefix + str((10 - sum(digits) % 10) % 10)


@given(
    first=st.sampled_from("3456"),
    body=st.text("0123456789", min_size=14, max_size=14),
    before=st.text("abcdefgh -/", max_size=8),
    after=st.text("abcdefgh -/", max_size=8),
)
def test_any_luhn_valid_card_number_is_found_anywhere(first, body, before, after):
    pan = luhn_complete(first + body)
    assert "payment card number" in scan(f"{before}{pan}{after}", today=TODAY)


@given(
    user=st.from_regex(r"[a-z][a-z0-9._]{0,10}[a-z0-9]", fullmatch=True),
    domain=st.from_regex(r"[a-z]{2,10}\.(de|com|org|net)", fullmatch=True),
)
def test_any_plain_email_address_is_found(user, domain):
    if ".." in user:
        return
    assert "email address" in scan(f"x {user}@{domain} y", today=TODAY)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2012, 12, 31)), st.sampled_from(["%d.%m.%Y", "%Y-%m-%d"]))
def test_dates_old_enough_to_be_birth_dates_are_found(day, fmt):
    assert "birth date" in scan(day.strftime(fmt), today=TODAY)


@given(st.text(max_size=60))
def test_never_raises_and_never_returns_the_text(text):
    found = scan(text, today=TODAY)
    assert set(found) <= set(KINDS)


_STREET_WORDS = st.sampled_from(["straße", "Strasse", "str.", "weg", "Allee", "platz", "ring", "street", "Road"])


def test_a_compatibility_character_after_the_house_number_hides_no_address():
    """NFKC turns a circled ideograph into a letter, which removed the boundary after the number."""
    assert "postal address" in scan("Hauptstraße\u00a00\u3244")


@given(
    st.text(max_size=20),
    _STREET_WORDS,
    st.text(alphabet=" \t\n\u00a0\u2003", min_size=1, max_size=3),
    st.integers(0, 9999),
    st.text(max_size=20),
)
def test_street_pre_filter_never_hides_an_address(before, word, space, number, after):
    """The cheap check (white space before a digit) holds wherever the street pattern matches."""
    text = f"{before}Haupt{word}{space}{number}{after}"
    assert bool(pii._STREET.search(text)) <= bool(pii._SPACE_DIGIT.search(text))
    if pii._STREET.search(text):
        assert "postal address" in scan(text)


@given(st.text(max_size=60))
def test_street_pre_filter_holds_for_any_text(text):
    assert bool(pii._STREET.search(text)) <= bool(pii._SPACE_DIGIT.search(text))


# -- normalised first, with the separators people write --------------------------------------------

SEPARATED = [
    ("4111.1111.1111.1111", "payment card number"),
    ("4111-1111-1111-1111", "payment card number"),
    ("4111/1111/1111/1111", "payment card number"),
    ("4111\t1111\t1111\t1111", "payment card number"),
    ("4111  1111  1111  1111", "payment card number"),
    ("4111 - 1111 - 1111 - 1111", "payment card number"),
    ("\uff14" + "\uff11" * 15, "payment card number"),  # full-width digits
    ("\u0664" + "\u0661" * 15, "payment card number"),  # Arabic-Indic digits
    ("4111\u200b1111\u200b1111\u200b1111", "payment card number"),
    ("DE89.3704.0044.0532.0130.00", "IBAN"),
    ("DE89-3704-0044-0532-0130-00", "IBAN"),
    ("DE89/3704/0044/0532/0130/00", "IBAN"),
    ("DE89\t3704\t0044\t0532\t0130\t00", "IBAN"),
    ("DE89  3704  0044  0532  0130  00", "IBAN"),
    ("S\u212a3112000000198742637541", "IBAN"),  # a Kelvin sign for the K of SK
    ("D\u041589370400440532013000", "IBAN"),  # a Cyrillic E
    ("01-02-1980", "birth date"),
    ("1980/02/01", "birth date"),
    ("1980.02.01", "birth date"),
    ("1 feb 1980", "birth date"),
    ("1-feb-1980", "birth date"),
    ("12. M\u00e4rz 1975", "birth date"),
    ("February 1, 1980", "birth date"),
    ("+49,30,1234567", "phone number"),
    ("030'123'45'67", "phone number"),
    ("030.1234.5678", "phone number"),
    ("0049-30-1234567", "phone number"),
    ("my id 65929970489 thanks", "tax id"),
    ("steuer-id:65929970489", "tax id"),
    ("taxid-65929970489", "tax id"),
    ("ssn 536-90-4399", "tax id"),
    ("Hauptstr. 5", "postal address"),
    ("hauptstr.5", "postal address"),
    ("221b Baker Street", "postal address"),
    ("10 Downing St", "postal address"),
    ("Heidestra\u00dfe 17, 51147 K\u00f6ln", "postal address"),
    ("PO Box 123", "postal address"),
    ("010.000.000.001", "IP address"),
    ("fe80::1", "IP address"),
    ("max(at)example.de", "email address"),
    ("max [at] example [dot] de", "email address"),
    ("max at example dot de", "email address"),
    ("ERIKA@EXAMPLE.DE", "email address"),
]


@pytest.mark.parametrize("text, kind", SEPARATED, ids=[repr(t) for t, _ in SEPARATED])
def test_detects_what_people_really_write(text, kind):
    assert kind in scan(text, today=TODAY)


@pytest.mark.parametrize("text", ["t-2026.11.22-0001", "till3-20261122-000123", "spring2026", "cj-1234567890",
                                  "s7-t3-000124", "R-77", "hx-r1"])  # fmt: skip
def test_document_numbers_stay_clean(text):
    assert scan(text, today=TODAY) == []


SEPARATORS = st.sampled_from([" ", ".", "-", "/", "\t", "  ", " - "])


@given(first=st.sampled_from("3456"), body=st.text("0123456789", min_size=14, max_size=14), data=st.data())
def test_a_card_number_grouped_by_any_separator_is_found(first, body, data):
    pan = luhn_complete(first + body)
    groups = [pan[i : i + 4] for i in range(0, len(pan), 4)]
    text = groups[0] + "".join(data.draw(SEPARATORS) + g for g in groups[1:])
    assert "payment card number" in scan(f"ref {text}", today=TODAY)


@given(sep=SEPARATORS, iban=st.sampled_from(["DE89370400440532013000", "GB82WEST12345698765432",
                                              "SK3112000000198742637541", "FR1420041010050500013M02606"]))  # fmt: skip
def test_an_iban_grouped_by_any_separator_is_found(sep, iban):
    text = sep.join(iban[i : i + 4] for i in range(0, len(iban), 4))
    assert "IBAN" in scan(text, today=TODAY)


@given(
    day=st.dates(min_value=date(1900, 1, 1), max_value=date(2012, 12, 31)),
    fmt=st.sampled_from(["%d-%m-%Y", "%Y/%m/%d", "%Y.%m.%d", "%d.%m.%Y", "%d %b %Y", "%d-%b-%Y", "%B %d, %Y"]),
)
def test_birth_dates_in_any_common_form_are_found(day, fmt):
    assert "birth date" in scan(day.strftime(fmt), today=TODAY)


def test_normalise_folds_width_digits_homoglyphs_case_and_space():
    assert pii.normalise("\uff24\uff25\u0668\u0669\t\u0410B  c\u200b") == "de89 ab c"


@pytest.mark.parametrize("text", ["Hauptstraße\xa00\xadÀ", "max\u200b@example.de", "Haupt\u00adstraße 5"])
def test_an_invisible_character_neither_joins_nor_splits_personal_data_away(text):
    """A soft hyphen or zero-width space may hide a word boundary or split a token: both readings are scanned."""
    assert scan(text)
