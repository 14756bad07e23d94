"""The store server's HTTP contract, over real sockets (uvicorn on 127.0.0.1, a free port)."""

from __future__ import annotations

import http.client
import json
from dataclasses import replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest

from anoncard import Service, cards, protocol
from tests.cli_helpers import db_digest as digest
from tests.http_helpers import add_terminals, live_server

ROLES = {"till": "till", "entrance": "entrance", "kiosk": "kiosk", "operator": "operator", "auditor": "auditor"}


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def shop(home):
    """A home with one terminal per role and a card with points."""
    keys = add_terminals(home, **ROLES, spare="till")
    with Service.open(home) as svc:
        card = svc.issue_cards({"count": 1})[0].code
        svc.checkout({"card": card, "txn": "seed", "lines": [{"category": "dairy", "amount": "200.00"}]})
        svc.checkout({"card": card, "txn": "to-refund", "lines": [{"category": "dairy", "amount": "1.00"}]})
    return home, keys, card


def basket(txn: str, card: str, amount: str = "3.49") -> dict:
    return {"card": card, "txn": txn, "lines": [{"category": "dairy", "amount": amount}]}


# on PostgreSQL one psycopg connection of this test is collected unclosed (not yet traced to its owner)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_every_operation_answers_its_role(shop):
    home, keys, card = shop
    with live_server(home) as url, httpx.Client(base_url=url) as c:
        till, op, aud = auth(keys["till"]), auth(keys["operator"]), auth(keys["auditor"])
        r = c.post("/v1/checkout", json=basket("t1", card), headers=till)
        assert (r.status_code, r.json()["points"], r.json()["replayed"]) == (200, 3, False)
        again = c.post("/v1/checkout", json=basket("t1", card), headers=till)
        assert again.status_code == 200 and again.json()["replayed"] is True
        assert again.json()["balance"] == r.json()["balance"]
        reuse = c.post("/v1/checkout", json=basket("t1", card, "9.99"), headers=till)
        assert reuse.status_code == 409 and reuse.json()["error"]["code"] == "ledger_error"
        an_hour_ago = (datetime.now() - timedelta(hours=1)).isoformat(timespec="seconds")
        offline = c.post("/v1/checkout", json={**basket("t2", card), "at": an_hour_ago}, headers=till)
        assert offline.status_code == 200
        bad_at = c.post("/v1/checkout", json={**basket("t3", card), "at": "yesterday"}, headers=till)
        assert bad_at.status_code == 400 and "yesterday" not in bad_at.text
        refund = c.post("/v1/refund", json={"txn": "t1"}, headers=till)
        assert refund.status_code == 200 and refund.json()["points"] == -3
        redeem = c.post("/v1/redeem", json={"card": card, "reward": "coffee", "txn": "r1"}, headers=till)
        assert redeem.status_code == 200 and redeem.json()["points"] == -150
        poor = c.post("/v1/redeem", json={"card": card, "reward": "tote-bag", "txn": "r2"}, headers=till)
        assert poor.status_code == 409
        balance = c.post("/v1/balance", json={"card": card}, headers=auth(keys["kiosk"]))
        assert balance.status_code == 200 and balance.json()["points"] == redeem.json()["balance"]
        enter = c.post("/v1/enter", json={"card": card}, headers=auth(keys["entrance"]))
        assert enter.status_code == 200 and enter.json()["coupons"]
        key = c.get("/v1/coupons/public-key", headers=auth(keys["entrance"]))
        assert key.status_code == 200 and len(key.json()["ed25519_public_key"]) == 44
        issued = c.post("/v1/cards", json={"count": 3}, headers=op)
        assert issued.status_code == 200 and len(issued.json()["cards"]) == 3
        unknown = c.post("/v1/balance", json={"card": cards.generate().code}, headers=till)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_card"
        assert c.get("/v1/keys", headers=op).json()["keys"][0]["state"] == "primary"
        assert c.post("/v1/keys/retire", json={"confirm": True}, headers=op).status_code == 409  # nothing to retire
        assert c.post("/v1/keys/rotate", headers=op).json() == {"primary": 2}
        assert c.post("/v1/keys/retire", json={}, headers=op).status_code == 400
        # the till's thread reopens its service with the rotated ring: the card is re-linked
        relinked = c.post("/v1/balance", json={"card": card}, headers=till)
        assert relinked.status_code == 200 and relinked.json()["relinked"] is True
        retired = c.post("/v1/keys/retire", json={"confirm": True}, headers=op)
        assert retired.status_code == 200 and retired.json() == {"version": 1, "cards_purged": 3}
        assert c.post("/v1/purge", headers=op).status_code == 200
        backup = c.post("/v1/backup", headers=op)
        assert backup.status_code == 200 and (home / backup.json()["backup"]).stat().st_size == backup.json()["bytes"]
        names = [t["name"] for t in c.get("/v1/terminals", headers=op).json()["terminals"]]
        assert names == sorted(["auditor", "entrance", "kiosk", "operator", "spare", "till"])
        added = c.post("/v1/terminals", json={"name": "store7-till4", "role": "till"}, headers=op)
        assert added.status_code == 200 and added.json()["key"].startswith("ak1_")
        new_till = auth(added.json()["key"])
        assert c.post("/v1/balance", json={"card": card}, headers=new_till).status_code == 200
        assert c.post("/v1/terminals/revoke", json={"name": "store7-till4"}, headers=op).status_code == 200
        assert c.post("/v1/balance", json={"card": card}, headers=new_till).status_code == 401
        assert c.get("/v1/policy", headers=aud).json()["fingerprint"] == Service.open(home).policy.fingerprint
        assert c.get("/v1/audit", headers=aud).json()["passed"] is True
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/openapi.json").json()["openapi"] == "3.1.0"


def _valid_body(op: protocol.Operation, card: str, n: int, holders: dict | None = None, role: str = "") -> dict:
    holders = holders or {}
    return {
        "export": {"card": card},
        "erase": {"card": holders.get("erase", card), "confirm": True},
        "replace": {"recovery": holders.get(f"stub-{role}", "")},
        "checkout": basket(f"table-{n}", card),
        "refund": {"txn": "to-refund"},
        "redeem": {"card": card, "reward": "coffee", "txn": f"table-r{n}"},
        "balance": {"card": card},
        "enter": {"card": card},
        "issue_cards": {"count": 1},
        "keys_retire": {"confirm": True},
        "terminals_add": {"name": f"table-{n}", "role": "kiosk"},
        "terminals_revoke": {"name": "spare"},
        "insights": {"period": "week"},
    }.get(op.name, {})


def test_role_by_operation_table(shop):
    """Each role reaches exactly its operations: 2xx in its cells, 403 in every other."""
    home, keys, card = shop
    with Service.open(home) as svc:
        erased, *stubbed = svc.issue_cards_with_stubs({"count": 1 + len(ROLES)})
    holders = {"erase": erased.card.code} | {f"stub-{r}": c.recovery.code for r, c in zip(ROLES, stubbed, strict=True)}
    table = {}
    with live_server(home) as url, httpx.Client(base_url=url) as c:
        for n, op in enumerate(protocol.OPERATIONS):
            for role in ROLES:
                body = _valid_body(op, card, n, holders, role)
                r = c.request(op.method, op.path, headers=auth(keys[role]), json=body if op.method == "POST" else None)
                table[op.name, role] = r.status_code
                expected = 200 if role in op.roles else 403
                assert r.status_code == expected, (op.name, role, r.text)
    assert sum(1 for s in table.values() if s == 200) == sum(len(op.roles) for op in protocol.OPERATIONS)


def test_no_wrong_or_revoked_key_gets_in_and_nothing_is_stored(shop):
    home, keys, card = shop
    with Service.open(home) as svc:
        from anoncard.terminals import Terminals

        Terminals(svc).revoke("spare")
    body = basket("never", card)
    with live_server(home) as url, httpx.Client(base_url=url) as c:
        assert c.post("/v1/balance", json={"card": card}, headers=auth(keys["till"])).status_code == 200
        before = digest(home)
        forged = "ak1_" + "A" * 43
        for headers in ({}, auth(forged), auth(keys["till"][:-1]), {"Authorization": keys["till"]},
                        {"Authorization": f"Basic {keys['till']}"}, auth(keys["spare"])):  # fmt: skip
            r = c.post("/v1/checkout", json=body, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
            assert r.json()["error"]["code"] == "unauthenticated"
            assert keys["spare"] not in r.text and card not in r.text
        for role in ("entrance", "kiosk", "operator", "auditor"):
            assert c.post("/v1/checkout", json=body, headers=auth(keys[role])).status_code == 403
        refused = [
            c.post("/v1/checkout", json={**body, "email": "erika@example.org"}, headers=auth(keys["till"])),
            c.post("/v1/checkout", json={**body, "lines": []}, headers=auth(keys["till"])),
            c.post("/v1/checkout", content=b"{not json", headers={**auth(keys["till"]), "content-type":
                                                                  "application/json"}),  # fmt: skip
            c.post("/v1/checkout", content=json.dumps(body), headers={**auth(keys["till"]),
                                                                       "content-type": "text/plain"}),  # fmt: skip
            c.post("/v1/checkout", content=b"[" * (2 << 20), headers=auth(keys["till"])),
            c.post("/v1/terminals", json={"name": "Erika Mustermann", "role": "till"}, headers=auth(keys["operator"])),
            c.post("/v1/terminals", json={"name": "till", "role": "till"}, headers=auth(keys["operator"])),
            c.post("/v1/terminals", json={"name": "x", "role": "root"}, headers=auth(keys["operator"])),
        ]
        assert [r.status_code for r in refused] == [400, 400, 400, 415, 413, 400, 400, 400]
        assert "erika" not in refused[0].text and "Erika" not in refused[5].text
        assert digest(home) == before  # while the server runs (closing it checkpoints the WAL)


def test_a_body_over_the_limit_is_refused_by_its_declared_length_before_it_is_read(shop):
    home, keys, _card = shop
    with live_server(home) as url:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.putrequest("POST", "/v1/checkout")
        conn.putheader("Authorization", f"Bearer {keys['till']}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(200 << 20))
        conn.endheaders()
        conn.send(b"{")  # a byte of the 200 MB announced: the answer comes without the rest
        r = conn.getresponse()
        assert r.status == 413 and json.loads(r.read())["error"]["code"] == "too_large"
        conn.close()
        # chunked, no declared length: refused once the bytes counted pass the limit
        chunks = (b"x" * (64 << 10) for _ in range(64))
        r = httpx.post(f"{url}/v1/checkout", content=chunks, headers=auth(keys["till"]))
        assert r.status_code == 413


def test_many_requests_share_one_keep_alive_connection(shop):
    home, keys, card = shop
    with live_server(home) as url:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.connect()
        sock = conn.sock
        for i in range(200):
            conn.request("POST", "/v1/checkout", body=json.dumps(basket(f"ka-{i}", card)),
                         headers={**auth(keys["till"]), "Content-Type": "application/json"})  # fmt: skip
            r = conn.getresponse()
            assert r.status == 200 and json.loads(r.read())["txn"] == f"ka-{i}"
            assert conn.sock is sock
        conn.close()


def test_unknown_cards_are_limited_per_terminal(shop):
    home, keys, card = shop
    now = [1000.0]
    with live_server(home, unknown_card_limit=3, unknown_card_window_s=60, monotonic=lambda: now[0]) as url, \
            httpx.Client(base_url=url) as c:  # fmt: skip
        guesses = [cards.generate().code for _ in range(5)]
        till, spare = auth(keys["till"]), auth(keys["spare"])
        assert [c.post("/v1/balance", json={"card": g}, headers=till).status_code for g in guesses[:3]] == [404] * 3
        limited = c.post("/v1/balance", json={"card": card}, headers=till)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
        assert limited.json()["error"]["code"] == "rate_limited"
        assert c.post("/v1/checkout", json=basket("rl", card), headers=till).status_code == 429
        no_card = c.post("/v1/refund", json={"txn": "seed", "refund_id": "x", "lines": []}, headers=till)
        assert no_card.status_code == 400  # an operation without a card is not limited
        assert c.post("/v1/balance", json={"card": guesses[3]}, headers=spare).status_code == 404  # its own budget
        now[0] += 30
        assert c.post("/v1/balance", json={"card": card}, headers=till).headers["retry-after"] == "30"
        now[0] += 31
        assert c.post("/v1/balance", json={"card": card}, headers=till).status_code == 200
        metrics = c.get("/metrics").text
    assert 'anoncard_requests_total{operation="balance",outcome="rate_limited",role="till"} 2' in metrics
    assert 'anoncard_requests_total{operation="balance",outcome="unknown_card",role="till"} 4' in metrics


def test_metrics_count_by_operation_outcome_and_role_and_name_no_card(shop):
    home, keys, card = shop
    with live_server(home) as url, httpx.Client(base_url=url) as c:
        till = auth(keys["till"])
        for i in range(3):
            c.post("/v1/checkout", json=basket(f"m{i}", card), headers=till)
        c.post("/v1/checkout", json={**basket("m9", card), "email": "erika@example.org"}, headers=till)
        c.post("/v1/checkout", json=basket("m8", card), headers=auth(keys["kiosk"]))
        c.post("/v1/checkout", json=basket("m7", card))
        text = c.get("/metrics").text
    assert 'anoncard_requests_total{operation="checkout",outcome="ok",role="till"} 3' in text
    assert 'anoncard_requests_total{operation="checkout",outcome="policy_violation",role="till"} 1' in text
    assert 'anoncard_requests_total{operation="checkout",outcome="forbidden",role="kiosk"} 1' in text
    assert 'anoncard_requests_total{operation="checkout",outcome="unauthenticated",role="none"} 1' in text
    assert 'anoncard_refusals_total{rule="undeclared_field"} 1' in text
    assert 'anoncard_request_seconds_count{operation="checkout"} 6' in text
    assert 'anoncard_request_seconds_bucket{operation="checkout",le="+Inf"} 6' in text
    for secret in (card, card.replace("-", ""), keys["till"], "erika", "m0"):
        assert secret not in text


def test_unknown_paths_and_methods_answer_the_error_envelope(shop):
    home, keys, _card = shop
    with live_server(home) as url, httpx.Client(base_url=url) as c:
        missing = c.get("/v1/export", headers=auth(keys["till"]))
        wrong = c.get("/v1/checkout", headers=auth(keys["till"]))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_a_defect_answers_500_in_the_envelope(shop, monkeypatch):
    home, keys, card = shop

    def broken(ctx, body, at):
        raise RuntimeError("a defect")

    op = protocol.BY_NAME["balance"]  # operations are frozen: the table gets a broken copy
    monkeypatch.setattr(protocol, "OPERATIONS", tuple(replace(o, handler=broken) if o is op else o
                                                      for o in protocol.OPERATIONS))  # fmt: skip
    with live_server(home) as url, httpx.Client(base_url=url) as c:
        r = c.post("/v1/balance", json={"card": card}, headers=auth(keys["till"]))
        ok = c.post("/v1/redeem", json={"card": card, "reward": "coffee", "txn": "d1"}, headers=auth(keys["till"]))
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error" and card not in r.text
    assert ok.status_code == 200


def test_the_operator_releases_cohorts_over_http_and_an_unknown_report_is_refused(shop):
    home, keys, _card = shop
    op = auth(keys["operator"])
    with live_server(home) as url, httpx.Client(base_url=url) as c:
        r = c.post("/v1/insights", json={"report": "cohorts"}, headers=op)
        assert r.status_code == 200, r.text
        assert r.json()["report"] == "cohorts" and r.json()["bounds"] == {"months": 12}
        bad = c.post("/v1/insights", json={"report": "profiles"}, headers=op)
        assert bad.status_code == 400 and "field 'report'" in bad.json()["error"]["message"]
        assert "profiles" not in bad.text
        no_holdout = c.post("/v1/insights", json={"report": "uplift"}, headers=op)
        assert no_holdout.status_code == 409 and "campaign.holdout = 0" in no_holdout.json()["error"]["message"]
        assert c.post("/v1/insights", json={"report": "cohorts"}, headers=auth(keys["till"])).status_code == 403
