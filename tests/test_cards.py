from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard import cards
from anoncard.cards import ALPHABET, CardSecret
from anoncard.errors import CardError

secrets_ = st.integers(min_value=0, max_value=(1 << cards.SECRET_BITS) - 1).map(CardSecret)


@given(secrets_)
def test_code_round_trip(secret):
    assert cards.decode(secret.code) == secret
    assert cards.decode(cards.encode(secret)) == secret


@given(secrets_, st.sampled_from(["lower", "spaces", "aliases"]))
def test_code_is_read_as_people_type_it(secret, style):
    code = secret.code
    if style == "lower":
        typed = code.lower()
    elif style == "spaces":
        typed = code.replace("-", " ")
    else:
        typed = code.replace("0", "O").replace("1", "I")
    assert cards.decode(typed) == secret


@given(secrets_, st.data())
def test_every_single_symbol_typo_is_detected(secret, data):
    compact = cards.encode(secret)
    i = data.draw(st.integers(0, len(compact) - 1))
    wrong = data.draw(st.sampled_from([c for c in ALPHABET if c != compact[i]]))
    with pytest.raises(CardError):
        cards.decode(compact[:i] + wrong + compact[i + 1 :])


@given(secrets_, st.data())
def test_every_adjacent_transposition_is_detected(secret, data):
    compact = cards.encode(secret)
    candidates = [i for i in range(len(compact) - 1) if compact[i] != compact[i + 1]]
    i = data.draw(st.sampled_from(candidates))
    swapped = compact[:i] + compact[i + 1] + compact[i] + compact[i + 2 :]
    with pytest.raises(CardError):
        cards.decode(swapped)


def test_exhaustive_typos_for_one_code():
    compact = cards.encode(cards.generate())
    for i, original in enumerate(compact):
        for wrong in ALPHABET:
            if wrong != original:
                with pytest.raises(CardError):
                    cards.decode(compact[:i] + wrong + compact[i + 1 :])


@pytest.mark.parametrize(
    "text, rule",
    [
        ("", "symbols"),
        ("C1-ABC", "symbols"),
        ("X" * 65, "too long"),
        ("C1" + "U" * 27, "outside the card alphabet"),
        (12345, "string"),
    ],
)
def test_malformed_codes_name_the_rule(text, rule):
    with pytest.raises(CardError, match=rule) as info:
        cards.decode(text)
    assert info.value.field == "card"


def test_unknown_version_prefix_is_refused():
    compact = cards.encode(cards.generate())
    body = "C2" + compact[2:-1]
    with pytest.raises(CardError, match="version"):
        cards.decode(body + cards.check_symbol(body))


def test_secret_has_at_least_128_bits_and_hides_in_repr():
    assert cards.SECRET_BITS >= 128
    secret = cards.generate()
    assert cards.encode(secret) not in repr(secret)
    assert str(secret.value) not in repr(secret)
    assert len({cards.generate() for _ in range(1000)}) == 1000


def test_code_fits_qr_alphanumeric_mode():
    import qrcode

    q = qrcode.QRCode()
    q.add_data(cards.generate().code)
    q.make(fit=True)
    assert q.data_list[0].mode == qrcode.util.MODE_ALPHA_NUM
