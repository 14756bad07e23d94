"""The hardening classes hold over HTTP too: hostile values refused with nothing stored and
nothing echoed, and the time is the server's (an explicit time only inside the policy's window,
never for coupons)."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from anoncard import Service, init_home
from tests.cli_helpers import db_digest as digest
from tests.cli_helpers import db_files as files
from tests.http_helpers import add_terminals, live_server
from tests.pg_cluster import give_own_database
from tests.test_hostile_values import HOSTILE


def echoes(text: str, value: str, run: int = 8) -> bool:
    """Whether ``text`` holds ``run`` or more consecutive characters of ``value``."""
    if len(value) < run:
        return value in text and len(value.strip()) > 2
    return any(value[i : i + run] in text for i in range(len(value) - run + 1))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One live server over a home with a card that has bought dairy, and a till's key."""
    home = tmp_path_factory.mktemp("http-hardening") / "home"
    give_own_database(home)
    init_home(home)
    keys = add_terminals(home, till="till", entrance="entrance")
    with Service.open(home) as svc:
        card = svc.issue_cards({"count": 1})[0].code
        svc.checkout({"card": card, "txn": "seed", "lines": [{"category": "dairy", "amount": "3.49"}]})
        svc.store.checkpoint()
    with live_server(home) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield home, client, keys, card


def post(client: httpx.Client, key: str, path: str, body: object) -> httpx.Response:
    return client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v) for v in HOSTILE])
def test_a_hostile_value_is_refused_over_http_with_nothing_stored_or_echoed(server, value):
    home, client, keys, card = server
    before = digest(home)
    bodies = [
        {"card": card, "txn": "hv-1", "lines": [{"category": value, "amount": "1.00"}]},
        {"card": card, "txn": value, "lines": [{"category": "dairy", "amount": "1.00"}]},
    ]
    for body in bodies:
        r = post(client, keys["till"], "/v1/checkout", body)
        assert r.status_code == 400, (r.status_code, r.text)
        assert r.json()["error"]["code"] in ("policy_violation", "card_error")
        assert not echoes(r.text, value)
    assert digest(home) == before
    assert value.encode("utf-8", "surrogatepass") not in files(home)


@pytest.mark.parametrize(
    "place",
    ["key", "category", "amount", "txn", "coupon", "reward"],
)
def test_a_card_code_sent_in_the_wrong_place_is_never_echoed_over_http(server, place):
    home, client, keys, card = server
    before = digest(home)
    line = {"category": "dairy", "amount": "1.00"}
    body = {
        "key": {"card": card, "txn": "w-1", "lines": [line], card: "1"},
        "category": {"card": card, "txn": "w-1", "lines": [{**line, "category": card}]},
        "amount": {"card": card, "txn": "w-1", "lines": [{**line, "amount": card}]},
        "txn": {"card": card, "txn": card, "lines": [line]},
        "coupon": {"card": card, "txn": "w-1", "lines": [line], "coupons": [card]},
        "reward": {"card": card, "txn": "w-1", "reward": card},
    }[place]
    r = post(client, keys["till"], "/v1/redeem" if place == "reward" else "/v1/checkout", body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert not echoes(r.text, card) and not echoes(r.text, card.replace("-", ""))
    assert digest(home) == before


@pytest.mark.parametrize(
    ("shift", "accepted"),
    [
        (timedelta(hours=-20), True),  # a sale replayed from an offline till the next morning
        (timedelta(days=-30), False),  # older than the policy's replay window
        (timedelta(hours=2), False),  # ahead of the server's clock beyond the allowed skew
    ],
)
def test_an_explicit_time_over_http_is_accepted_only_inside_the_policys_window(server, shift, accepted):
    home, client, keys, card = server
    at = (datetime.now() + shift).isoformat(timespec="seconds")
    txn = f"at-{int(shift.total_seconds())}".replace("--", "-m")
    before = digest(home)
    r = post(client, keys["till"], "/v1/checkout", {"card": card, "txn": txn, "lines": [{"category": "dairy",
             "amount": "2.00"}], "at": at})  # fmt: skip
    if accepted:
        assert r.status_code == 200, r.text
        with Service.open(home) as svc:
            (day,) = svc.store.conn.execute(
                "SELECT day FROM txns WHERE ref = ?", (svc.ring.reference("checkout", txn),)
            ).fetchone()
        assert day == (datetime.now() + shift).date().isoformat()
    else:
        assert r.status_code == 400 and r.json()["error"]["code"] == "policy_violation"
        assert "'at'" in r.json()["error"]["message"] and at not in r.text and at[:10] not in r.text
        assert digest(home) == before


def test_the_entrance_and_coupon_redemption_take_no_explicit_time_over_http(server):
    home, client, keys, card = server
    before = digest(home)
    yesterday = (datetime.now() - timedelta(days=1)).isoformat(timespec="seconds")
    r = post(client, keys["entrance"], "/v1/enter", {"card": card, "at": yesterday})
    assert r.status_code == 400 and "'at'" in r.json()["error"]["message"]
    assert digest(home) == before
    coupons = post(client, keys["entrance"], "/v1/enter", {"card": card}).json()["coupons"]
    assert coupons, "a card that bought dairy gets a coupon"
    after_enter = digest(home)
    r = post(client, keys["till"], "/v1/checkout", {"card": card, "txn": "cp-1", "at": yesterday, "coupons":
             [coupons[0]["code"]], "lines": [{"category": coupons[0]["category"], "amount": "5.00"}]})  # fmt: skip
    assert r.status_code == 400 and "'at'" in r.json()["error"]["message"]
    assert digest(home) == after_enter
