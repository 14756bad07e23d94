"""The holder's operations over HTTP: kiosk export and erase, replacement by till or kiosk, and the
tighter budget of unknown recovery codes per terminal."""

from __future__ import annotations

import httpx

from anoncard import Service
from tests.http_helpers import add_terminals, live_server


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_kiosk_export_erase_and_replace_over_http(home):
    keys = add_terminals(home, kiosk1="kiosk", till1="till")
    with Service.open(home) as svc:
        a, b = svc.issue_cards_with_stubs({"count": 2})
        svc.checkout({"card": a.card.code, "txn": "t1", "lines": [{"category": "dairy", "amount": "12.00"}]})
    kiosk, till = auth(keys["kiosk1"]), auth(keys["till1"])
    with live_server(home) as url, httpx.Client(base_url=url) as c:
        doc = c.post("/v1/card/export", json={"card": a.card.code}, headers=kiosk)
        assert doc.status_code == 200 and doc.json()["balance"] == 12
        assert c.post("/v1/card/export", json={"card": a.card.code}, headers=till).status_code == 403
        moved = c.post("/v1/card/replace", json={"recovery": a.recovery.code, "history": True}, headers=till)
        assert moved.status_code == 200 and moved.json()["balance"] == 12
        new = moved.json()["card"]
        assert c.post("/v1/balance", json={"card": a.card.code}, headers=kiosk).status_code == 404
        erased = c.post("/v1/card/erase", json={"card": new, "confirm": True}, headers=kiosk)
        assert erased.status_code == 200 and erased.json()["points_forfeited"] == 12
        assert c.post("/v1/balance", json={"card": new}, headers=kiosk).status_code == 404
        assert c.post("/v1/card/erase", json={"card": b.card.code}, headers=kiosk).status_code == 400


def test_unknown_recovery_codes_get_a_tighter_budget_per_terminal(home):
    keys = add_terminals(home, kiosk1="kiosk", kiosk2="kiosk")
    with Service.open(home) as svc:
        (a,) = svc.issue_cards_with_stubs({"count": 1})
    from anoncard import recovery

    now = [1000.0]
    kiosk1 = auth(keys["kiosk1"])
    with live_server(home, recovery_limit=3, recovery_window_s=600, monotonic=lambda: now[0]) as url, \
            httpx.Client(base_url=url) as c:  # fmt: skip
        for _ in range(3):
            guess = c.post("/v1/card/replace", json={"recovery": recovery.generate().code}, headers=kiosk1)
            assert guess.status_code == 404 and guess.json()["error"]["code"] == "unknown_card"
        limited = c.post("/v1/card/replace", json={"recovery": a.recovery.code}, headers=kiosk1)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "600"
        assert "recovery codes" in limited.json()["error"]["message"]
        assert c.post("/v1/card/export", json={"card": a.card.code}, headers=kiosk1).status_code == 200
        now[0] += 601
        ok = c.post("/v1/card/replace", json={"recovery": a.recovery.code}, headers=kiosk1)
        assert ok.status_code == 200  # the budget refills; the right code was never burnt by the refusals
