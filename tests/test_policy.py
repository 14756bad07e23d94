"""The gate: only declared fields pass, as typed records; everything else is refused by name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard import cards, policy
from anoncard.errors import AnonCardError, CardError, PolicyViolation

CODE = cards.generate().code
VALID = {
    "issue": {"count": 3},
    "checkout": {"card": CODE, "txn": "s7-t3-000123", "lines": [{"category": "Dairy", "amount": "3.49"}]},
    "refund": {"txn": "s7-t3-000123", "refund_id": "R-1", "lines": [{"category": "dairy", "amount": "1.00"}]},
    "balance": {"card": CODE},
    "redeem": {"card": CODE, "txn": "s7-t3-000124", "reward": "coffee"},
}
REQUESTS = policy.Policy.default().requests
HOSTILE = ["email", "name", "phone", "birth_date", "address", "iban", "card_pan", "age", "income", "at", "store"]


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_requests_become_typed_records(kind):
    expected = {
        "issue": policy.IssueRequest,
        "checkout": policy.CheckoutRequest,
        "refund": policy.RefundRequest,
        "balance": policy.BalanceRequest,
        "redeem": policy.RedeemRequest,
    }[kind]
    assert type(policy.validate(kind, VALID[kind])) is expected


def test_checkout_record_is_coarsened():
    rec = policy.validate("checkout", {**VALID["checkout"], "lines": [{"category": "  Soft   DRINKS ", "amount": "3"}]})
    assert rec.lines == (policy.Line("soft drinks", 300),)
    assert rec.card == cards.decode(CODE)


@pytest.mark.parametrize("kind", sorted(VALID))
@pytest.mark.parametrize("field", HOSTILE)
def test_hostile_fields_are_refused_by_name(kind, field):
    with pytest.raises(PolicyViolation, match=f"'{field}'.*not allowed") as info:
        policy.validate(kind, {**VALID[kind], field: "x"})
    assert info.value.field == field


@given(
    kind=st.sampled_from(sorted(VALID)),
    extra=st.text(min_size=1, max_size=30),
    value=st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3)),
)
def test_any_undeclared_field_is_refused(kind, extra, value):
    if extra in REQUESTS[kind]:
        return
    with pytest.raises(PolicyViolation, match="not allowed"):
        policy.validate(kind, {**VALID[kind], extra: value})


@given(extra=st.text(min_size=1, max_size=20).filter(lambda s: s not in ("category", "amount")))
def test_undeclared_field_inside_a_line_is_refused(extra):
    request = {**VALID["checkout"], "lines": [{"category": "dairy", "amount": "1.00", extra: "x"}]}
    with pytest.raises(PolicyViolation, match=r"lines\[0\]"):
        policy.validate("checkout", request)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"lines": []}, "lines"),
        ({"lines": "dairy=3"}, "lines"),
        ({"lines": [{"category": "dairy"}]}, "lines[0]"),
        ({"lines": [{"category": "a@b.de", "amount": "1"}]}, "lines[0].category"),
        ({"lines": [{"category": "", "amount": "1"}]}, "lines[0].category"),
        ({"lines": [{"category": "dairy", "amount": "10000.01"}]}, "lines[0].amount"),
        ({"lines": [{"category": "dairy", "amount": "1"}] * 201}, "lines"),
        ({"txn": ""}, "txn"),
        ({"txn": "x" * 65}, "txn"),
        ({"txn": "till 3"}, "txn"),
        ({"txn": None}, "txn"),
    ],
)
def test_bad_checkout_values_name_the_field(change, field):
    with pytest.raises(PolicyViolation) as info:
        policy.validate("checkout", {**VALID["checkout"], **change})
    assert info.value.field == field
    assert f"'{field}'" in str(info.value)


def test_partial_refund_needs_an_id():
    with pytest.raises(PolicyViolation, match="'refund_id'"):
        policy.validate("refund", {"txn": "t1", "lines": [{"category": "dairy", "amount": "1"}]})
    assert policy.validate("refund", {"txn": "t1"}).lines is None


@pytest.mark.parametrize("count", [0, -1, "x", 1.5, True, 100_001])
def test_issue_count_bounds(count):
    with pytest.raises(PolicyViolation, match="'count'"):
        policy.validate("issue", {"count": count})


def test_not_a_mapping_and_unknown_kind():
    with pytest.raises(PolicyViolation, match="JSON object"):
        policy.validate("checkout", ["card"])
    with pytest.raises(PolicyViolation, match="not allowed by the policy"):
        policy.validate("transfer", {})


def test_every_declared_field_states_its_purpose():
    for kind, fields in REQUESTS.items():
        for name, rule in fields.items():
            assert len(rule.purpose) > 15, (kind, name)
            assert rule.retention, (kind, name)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=10,
    )
)
def test_random_json_never_crashes_the_gate(value):
    for kind in VALID:
        try:
            policy.validate(kind, value)
        except AnonCardError as exc:
            assert isinstance(exc, PolicyViolation | CardError)
            assert CODE not in str(exc)
