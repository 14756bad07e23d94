"""The gate in front of real storage: refused requests leave the database byte-identical."""

from __future__ import annotations

import contextlib
import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anoncard import CardError, PolicyViolation, Service
from anoncard.policy import NAMEABLE_FIELDS, Policy
from tests.cli_helpers import db_digest as files_digest
from tests.conftest import basket, fixed_clock

# The demographics columns of dunnhumby's "The Complete Journey", plus direct identifiers.
DEMOGRAPHICS = ["age", "income", "home_ownership", "marital_status", "household_size", "household_comp", "kids_count"]
IDENTIFIERS = ["name", "email", "phone", "birth_date", "address", "iban", "card_pan"]
SAMPLE = {
    "age": "45-54",
    "income": "50-74K",
    "home_ownership": "Homeowner",
    "marital_status": "Married",
    "household_size": "2",
    "household_comp": "2 Adults No Kids",
    "kids_count": "0",
    "name": "Erika Mustermann",
    "email": "erika@example.de",
    "phone": "+49 30 1234567",
    "birth_date": "1964-08-12",
    "address": "Heidestraße 17, 51147 Köln",
    "iban": "DE89 3704 0044 0532 0130 00",
    "card_pan": "4111 1111 1111 1111",
}


@pytest.fixture
def store_with_a_card(home):
    svc = Service.open(home, clock=fixed_clock, synchronous="NORMAL")
    (card,) = svc.issue_cards({"count": 1})
    svc.checkout({"card": card.code, "txn": "t0", "lines": basket(("dairy", "3.49"))})
    svc.store.checkpoint()
    yield svc, card.code
    svc.close()


def good_checkout(code: str) -> dict:
    return {"card": code, "txn": "t1", "lines": basket(("dairy", "3.49"), ("coffee", "7.99"))}


@pytest.mark.parametrize("field", DEMOGRAPHICS + IDENTIFIERS)
def test_hostile_field_in_a_checkout_is_refused_and_nothing_stored(home, store_with_a_card, field):
    svc, code = store_with_a_card
    before = files_digest(home)
    with pytest.raises(PolicyViolation, match=f"'{field}'") as info:
        svc.checkout({**good_checkout(code), field: SAMPLE[field]})
    assert SAMPLE[field] not in str(info.value)
    assert files_digest(home) == before


@pytest.mark.parametrize(
    "change, field, kind",
    [
        # a category is one the programme declares, or refused unseen (the closed vocabulary)
        ({"lines": basket(("erika@example.de", "1.00"))}, "lines[0].category", "not a category this programme"),
        ({"txn": "+49-30-1234567"}, "txn", "phone number"),
        ({"txn": "4111111111111111"}, "txn", "payment card number"),
        ({"lines": basket(("gift 4111 1111 1111 1111", "1.00"))}, "lines[0].category", "not a category this"),
        ({"txn": "DE89370400440532013000"}, "txn", "IBAN"),
        ({"lines": basket(("dairy", "1.00"), ("born 12.03.1975", "1.00"))}, "lines[1].category", "not a category"),
    ],
)
def test_personal_data_inside_allowed_values_is_refused(home, store_with_a_card, change, field, kind):
    svc, code = store_with_a_card
    before = files_digest(home)
    with pytest.raises(PolicyViolation, match=kind) as info:
        svc.checkout({**good_checkout(code), **change})
    assert info.value.field == field
    assert files_digest(home) == before


def test_a_luhn_valid_number_in_a_refund_or_redemption_is_refused(store_with_a_card):
    svc, code = store_with_a_card
    with pytest.raises(PolicyViolation, match="payment card"):
        svc.refund({"txn": "t0", "refund_id": "5555555555554444"})
    with pytest.raises(PolicyViolation, match="payment card"):
        svc.redeem({"card": code, "txn": "378282246310005", "reward": "coffee"})


@pytest.mark.parametrize("kind", ["checkout", "refund"])
@pytest.mark.parametrize("line", [{"category": None, "amount": "1.00"}, {"category": "fruit", "amount": None}])
def test_a_line_with_a_null_category_or_amount_is_refused(home, store_with_a_card, kind, line):
    svc, code = store_with_a_card
    before = files_digest(home)
    request = {"card": code, "txn": "t1"} if kind == "checkout" else {"txn": "t0", "refund_id": "r1"}
    request["lines"] = [*basket(("dairy", "1.00")), line]
    with pytest.raises(PolicyViolation, match=r"field 'lines\[1\]': needs category and amount"):
        getattr(svc, kind)(request)
    assert files_digest(home) == before


KINDS = ["checkout", "refund", "balance", "redeem", "issue", "enter", "export", "erase", "replace", "insights"]
DECLARED = {kind: set(Policy.default().requests[kind]) for kind in KINDS}
LINE_FIELDS = {"category", "amount"}


def test_every_request_kind_of_the_policy_is_in_the_property_test():
    assert set(KINDS) == set(Policy.default().requests)


def valid_request(kind: str, code: str, stub: str | None = None) -> dict:
    """A request of ``kind`` that the service accepts as it stands (each one is checked below)."""
    from anoncard import recovery

    return {
        "export": {"card": code},
        "erase": {"card": code, "confirm": True},
        "replace": {"recovery": stub or recovery.generate().code, "history": True},
        "checkout": good_checkout(code),
        "refund": {"txn": "t0", "refund_id": "r1", "lines": basket(("dairy", "1.00"))},
        "balance": {"card": code},
        "redeem": {"card": code, "txn": "r1", "reward": "coffee"},
        "issue": {"count": 1},
        "enter": {"card": code},
        "insights": {"period": "week"},
    }[kind]


def call_of(svc: Service, kind: str):
    from anoncard.selfservice import Holder

    holder = Holder(svc)
    named = {"issue": svc.issue_cards, "export": holder.export, "erase": holder.erase, "replace": holder.replace}
    return named.get(kind) or getattr(svc, kind)


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(KINDS),
    extra=st.text(min_size=1, max_size=24),
    value=st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30), st.lists(st.text(max_size=5))),
    in_line=st.booleans(),
)
def test_any_extra_field_is_refused_and_the_file_is_byte_identical(
    home, store_with_a_card, kind, extra, value, in_line
):
    """An undeclared field, at the top of the request or inside a basket line, is refused before anything
    is written - by name if anoncard knows the name, else by its position, so what a caller sent as a key
    is never repeated: the database file and its WAL are byte-identical afterwards."""
    svc, code = store_with_a_card
    request = copy.deepcopy(valid_request(kind, code))
    if in_line and "lines" in request:
        if extra in LINE_FIELDS:
            return
        request["lines"][-1][extra] = value
        named = extra if extra in NAMEABLE_FIELDS else f"#{len(request['lines'][-1])}"
        field = f"lines[{len(request['lines']) - 1}].{named}"
    else:
        if extra in DECLARED[kind]:
            return
        request[extra] = value
        field = extra if extra in NAMEABLE_FIELDS else f"#{len(request)}"
    before = files_digest(home)
    with pytest.raises(PolicyViolation, match="not allowed") as info:
        call_of(svc, kind)(request)
    assert info.value.field == field
    assert files_digest(home) == before


@pytest.mark.parametrize("kind", KINDS)
def test_the_property_tests_requests_are_accepted_without_the_extra_field(home, kind):
    """So the refusals above are the extra field's doing, not a flaw in the request itself."""
    with Service.open(home, clock=fixed_clock, synchronous="NORMAL") as svc:
        (issued,) = svc.issue_cards_with_stubs({"count": 1})
        card = issued.card
        svc.checkout({"card": card.code, "txn": "t0", "lines": basket(("dairy", "3.49"))})
        svc.checkout({"card": card.code, "txn": "t-big", "lines": basket(("wine", "160.00"))})
        call_of(svc, kind)(copy.deepcopy(valid_request(kind, card.code, issued.recovery.code)))


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=12,
    )
)
def test_random_json_is_refused_cleanly_and_stores_nothing(home, store_with_a_card, value):
    svc, _code = store_with_a_card
    before = files_digest(home)
    with contextlib.suppress(PolicyViolation, CardError):
        svc.checkout(value)
    assert files_digest(home) == before
