"""Recovery codes: round trip, every single typo and adjacent swap caught, never confused with a card code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard import cards, recovery
from anoncard.cards import ALPHABET
from anoncard.errors import CardError
from anoncard.keyring import KeyRing

values = st.integers(min_value=0, max_value=(1 << recovery.SECRET_BITS) - 1)


@given(values)
def test_a_code_round_trips_as_printed_and_as_typed_sloppily(value):
    code = recovery.RecoveryCode(value)
    printed = code.code
    assert printed.startswith("R1-") and len(printed.replace("-", "")) == recovery.CODE_SYMBOLS == 23
    assert recovery.decode(printed) == code
    sloppy = printed.lower().replace("-", " ").replace("1", "l").replace("0", "o")
    assert recovery.decode(sloppy) == code


@given(values, st.integers(min_value=3, max_value=22), st.integers(min_value=1, max_value=31))
def test_every_single_symbol_typo_is_caught(value, position, shift):
    compact = recovery.encode(recovery.RecoveryCode(value))
    pos = min(position, len(compact) - 1)
    wrong = compact[:pos] + ALPHABET[(ALPHABET.index(compact[pos]) + shift) % 32] + compact[pos + 1 :]
    with pytest.raises(CardError, match="field 'recovery'"):
        recovery.decode(wrong)


@given(values, st.integers(min_value=2, max_value=21))
def test_every_adjacent_transposition_is_caught(value, position):
    compact = recovery.encode(recovery.RecoveryCode(value))
    a, b = compact[position], compact[position + 1]
    if a == b:
        return
    with pytest.raises(CardError, match="field 'recovery'"):
        recovery.decode(compact[:position] + b + a + compact[position + 2 :])


@given(st.text(max_size=80))
def test_any_text_is_a_code_or_a_card_error_that_never_repeats_it(text):
    try:
        recovery.decode(text)
    except CardError as exc:
        assert exc.field == "recovery"
        if len(text) >= 4:
            assert text not in exc.message


def test_a_card_code_is_not_a_recovery_code_and_back():
    card = cards.generate().code
    with pytest.raises(CardError, match="expected prefix R1|23 symbols"):
        recovery.decode(card)
    with pytest.raises(CardError, match="field 'card'"):
        cards.decode(recovery.generate().code)


def test_the_stored_digest_is_keyed_and_the_code_hidden():
    code = recovery.generate()
    a, b = KeyRing.create("2015-03-02"), KeyRing.create("2015-03-02")
    assert len(a.recovery_digest(code)) == 32
    assert a.recovery_digest(code) != b.recovery_digest(code)  # another store's key: another digest
    assert a.recovery_digest(code) != a.primary.token(cards.CardSecret(code.value))  # its own sub-key
    assert "hidden" in repr(code) and str(code.value) not in repr(code)
    assert recovery.generate() != recovery.generate()
