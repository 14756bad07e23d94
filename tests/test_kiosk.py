"""The kiosk page over HTTP, without a browser: who gets in, what every answer says to the browser,
the session held server-side only and its end after inactivity, and the limits that apply."""

from __future__ import annotations

import httpx
import pytest

from anoncard import Service
from anoncard.terminals import Terminals
from tests.http_helpers import add_terminals, live_server


@pytest.fixture
def shop(home):
    keys = add_terminals(home, kiosk1="kiosk", till1="till")
    with Service.open(home) as svc:
        (a,) = svc.issue_cards_with_stubs({"count": 1})
        svc.checkout({"card": a.card.code, "txn": "t1", "lines": [{"category": "dairy", "amount": "21.00"}]})
    return home, keys, a


def login(c: httpx.Client, key: str) -> httpx.Response:
    return c.post("/kiosk/login", data={"key": key})


def test_only_a_kiosk_terminal_signs_in_and_the_cookie_is_httponly_and_strict(shop):
    home, keys, _a = shop
    with live_server(home) as url, httpx.Client(base_url=url) as c:
        assert "Sign in" in c.get("/kiosk").text
        for key in (keys["till1"], "ak1_" + "A" * 43, ""):
            r = login(c, key)
            assert r.status_code == 401 and "set-cookie" not in r.headers
        r = login(c, keys["kiosk1"])
        assert r.status_code == 303 and r.headers["location"] == "/kiosk"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/kiosk" in cookie
        assert keys["kiosk1"].lower() not in cookie


def test_every_answer_forbids_caching_and_anything_from_elsewhere(shop):
    home, keys, a = shop
    with live_server(home) as url, httpx.Client(base_url=url) as c:
        login(c, keys["kiosk1"])
        answers = [c.get("/kiosk"), c.get("/kiosk/kiosk.css"), c.get("/kiosk/about"),
                   c.post("/kiosk/card", data={"card": a.card.code}), c.get("/kiosk/card"),
                   c.post("/kiosk/export"), c.get("/kiosk/erase"), c.get("/kiosk/replace"), c.get("/kiosk/timeout")]
        for r in answers:
            assert r.headers["cache-control"].startswith("no-store"), r.url
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "form-action 'self'" in csp and "frame-ancestors 'none'" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            assert a.card.code not in str(r.url) and a.card.code not in r.headers.get("location", "")
        assert answers[3].status_code == 303 and answers[3].headers["location"] == "/kiosk/card"
        assert "21 points" in answers[4].text and "<script" not in answers[4].text
        assert answers[5].json()["balance"] == 21
        assert 'http-equiv="refresh"' in answers[4].text  # the page leaves by itself when left alone


def test_the_card_session_ends_after_inactivity_and_on_done(shop):
    home, keys, a = shop
    now = [1000.0]
    with live_server(home, kiosk_idle_s=120, monotonic=lambda: now[0]) as url, httpx.Client(base_url=url) as c:
        login(c, keys["kiosk1"])
        c.post("/kiosk/card", data={"card": a.card.code})
        now[0] += 119
        assert 'id="balance"' in c.get("/kiosk/card").text  # each request renews it
        now[0] += 119
        assert 'id="balance"' in c.get("/kiosk/card").text
        now[0] += 120
        assert 'id="balance"' not in c.get("/kiosk/card").text and "Your card code" in c.get("/kiosk/card").text
        c.post("/kiosk/card", data={"card": a.card.code})
        done = c.post("/kiosk/done")
        assert done.status_code == 303 and done.headers["clear-site-data"] == '"cache"'
        assert 'id="balance"' not in c.get("/kiosk/card").text


def test_revoking_the_kiosk_terminal_ends_its_sessions(shop):
    home, keys, a = shop
    with live_server(home) as url, httpx.Client(base_url=url) as c:
        login(c, keys["kiosk1"])
        c.post("/kiosk/card", data={"card": a.card.code})
        with Service.open(home) as svc:
            Terminals(svc).revoke("kiosk1")
        r = c.get("/kiosk/card")
        assert r.status_code == 401 and "Sign in" in r.text and "21 points" not in r.text


def test_forms_from_another_site_and_oversized_forms_are_refused(shop):
    home, keys, a = shop
    with live_server(home) as url, httpx.Client(base_url=url) as c:
        login(c, keys["kiosk1"])
        r = c.post("/kiosk/card", data={"card": a.card.code}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 400 and "another site" in r.text
        r = c.post("/kiosk/card", data={"card": a.card.code}, headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 400
        assert c.post("/kiosk/card", data={"card": "x" * 5000}).status_code == 400
        with Service.open(home) as svc:
            assert svc.balance({"card": a.card.code}).points == 21


def test_unknown_cards_on_the_page_count_against_the_terminal(shop):
    home, keys, a = shop
    from anoncard import cards

    with live_server(home, unknown_card_limit=2) as url, httpx.Client(base_url=url) as c:
        login(c, keys["kiosk1"])
        for _ in range(2):
            r = c.post("/kiosk/card", data={"card": cards.generate().code})
            assert r.status_code == 400 and "unknown card" in r.text
        r = c.post("/kiosk/card", data={"card": a.card.code})
        assert "at most 2 unknown cards" in r.text
        typo = c.post("/kiosk/card", data={"card": a.card.code[:-1] + ("0" if a.card.code[-1] != "0" else "1")})
        assert a.card.code[:-1] not in typo.text  # never echoed
