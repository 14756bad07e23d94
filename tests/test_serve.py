"""``anoncard serve`` on the protocol module: bounded lines, one dispatch table."""

from __future__ import annotations

import io
import json

from anoncard import Service, protocol, serve
from anoncard.protocol import Context


def answers(svc: Service, text: bytes) -> list[dict]:
    out = io.StringIO()
    serve.run(Context(svc), io.BytesIO(text), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_line_limit_is_exact(svc):
    card = svc.issue_cards({"count": 1})[0].code
    body = json.dumps({"op": "balance", "card": card}).encode()
    at_limit = body + b" " * (protocol.MAX_REQUEST_BYTES - len(body))
    got = answers(svc, at_limit + b"\n" + at_limit + b" \n" + at_limit + b"\r\n" + at_limit)
    assert [a["ok"] for a in got] == [True, False, True, True]
    assert got[1]["error"]["code"] == "too_large"


def test_serve_offers_the_terminal_operations_and_not_the_operators(svc):
    card = svc.issue_cards({"count": 1})[0].code
    lines = [
        {"op": "coupon_public_key"},
        {"op": "issue_cards", "count": 3},
        {"op": ["balance"], "card": card},
        {"op": "balance", "card": card, "at": "2015-03-01"},
        {"op": "checkout", "card": card, "txn": "t1", "lines": [{"category": "dairy", "amount": "1.00"}],
         "at": "2015-03-01T09:00:00"},
        {"op": "checkout", "card": card, "txn": "t2", "lines": [{"category": "dairy", "amount": "1.00"}],
         "at": "1 March"},
    ]  # fmt: skip
    got = answers(svc, b"\n".join(json.dumps(x).encode() for x in lines) + b"\n\n")
    assert len(got) == len(lines)
    assert got[0]["ok"] and len(got[0]["result"]["ed25519_public_key"]) == 44
    assert got[1]["error"]["message"].startswith("field 'op': must be one of checkout, refund, redeem, balance")
    assert got[2]["error"]["message"].startswith("field 'op'")
    assert got[3]["error"]["message"].startswith("field 'at': not allowed in a balance request")
    assert got[4]["ok"] and got[4]["result"]["points"] == 1
    assert got[5]["error"] == {"code": "policy_violation", "message": protocol.AT_RULE}
    assert svc.store.count_cards() == 1
