"""The till client against a real server process: delivery, queueing offline, replay in order with the
sale's time, dead letters, backoff, what is never queued, and what the outbox file keeps."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from anoncard import CardError, LedgerError, Programme, Service
from anoncard.client import Backoff, Offline, TillClient
from anoncard.errors import RateLimited, Unauthenticated
from tests.cli_helpers import transposed, typo
from tests.conftest import basket
from tests.till_helpers import ServerProcess, add_till, expected_points, free_port, make_pki

KEY = "ak1_not-a-key-the-server-knows"


class Clock:
    """The till's clock, moved by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def cards(home: Path) -> list[str]:
    with Service.open(home) as svc:
        return [s.code for s in svc.issue_cards({"count": 3})]


@pytest.fixture
def server(home: Path):
    with ServerProcess(home) as proc:
        yield proc


@pytest.fixture
def key(home: Path) -> str:
    return add_till(home)


def till(url: str, tmp_path: Path, key: str, clock=datetime.now, **kwargs) -> TillClient:
    return TillClient(url, key, tmp_path / "outbox.db", clock=clock, timeout=2.0, **kwargs)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def points(home: Path, code: str) -> int:
    with Service.open(home) as svc:
        return svc.balance({"card": code}).points


def outbox_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_an_online_checkout_is_delivered_and_its_retry_counts_once(home, cards, key, server, tmp_path):
    request = {"card": cards[0], "txn": "t-1", "lines": basket(("dairy", "3.49"), ("coffee", "7.99"))}
    with till(server.url, tmp_path, key) as client:
        first = client.checkout(request)
        again = client.checkout(request)
        assert not first.queued and first.result["points"] == 11 and first.result["replayed"] is False
        assert not again.queued and again.result["replayed"] is True
        assert client.status().queued == 0
        assert client.balance({"card": cards[0]})["points"] == 11
    assert points(home, cards[0]) == 11


def test_offline_checkouts_are_queued_and_replayed_in_order_with_the_sale_time(home, cards, key, tmp_path):
    port = free_port()
    sale = datetime.now().replace(microsecond=0) - timedelta(days=1)
    url = f"http://127.0.0.1:{port}"
    c1 = {"card": cards[0], "txn": "o-1", "lines": basket(("dairy", "10.00"), ("fruit", "5.00"))}
    r1 = {"txn": "o-1", "refund_id": "o-1-r", "lines": basket(("fruit", "5.00"))}  # needs o-1 delivered first
    c2 = {"card": cards[1], "txn": "o-2", "lines": basket(("wine", "20.00"))}
    with till(url, tmp_path, key, clock=Clock(sale)) as client:
        sent = [client.checkout(c1), client.refund(r1), client.checkout(c2)]
        assert [s.queued for s in sent] == [True, True, True]
        assert [s.document for s in sent] == ["o-1", "o-1-r", "o-2"]
        assert sent[0].reason == "network_error" and sent[1].reason == "queued behind earlier requests"
        status = client.status()
        assert (status.queued, status.last_error, status.oldest_sale) == (3, "network_error", sale.isoformat())
        with ServerProcess(home, port):
            report = client.flush(force=True)
        assert report.delivered == ["o-1", "o-1-r", "o-2"] and report.remaining == 0 and report.dead == []
    programme = Programme.load(home / "programme.toml")
    returned = expected_points(programme, [{**r1, "card": cards[0]}])[cards[0]]
    assert returned > 0 and points(home, cards[0]) == expected_points(programme, [c1])[cards[0]] - returned
    assert points(home, cards[1]) == expected_points(programme, [c2])[cards[1]] == 20
    with Service.open(home) as svc:
        days = {d["day"] for d in svc.balance({"card": cards[1]}).recent}
    assert days == {sale.date().isoformat()}  # credited on the sale's day, not the replay's


def test_a_refused_replay_is_a_dead_letter_without_its_card_code_and_the_queue_goes_on(home, cards, key, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ServerProcess(home, port), till(url, tmp_path, key) as client:
        client.checkout({"card": cards[0], "txn": "d-1", "lines": basket(("dairy", "3.00"))})
    reuse = {"card": cards[0], "txn": "d-1", "lines": basket(("dairy", "9.00"))}  # same number, other basket
    fine = {"card": cards[1], "txn": "d-2", "lines": basket(("coffee", "4.00"))}
    with till(url, tmp_path, key) as client:
        assert client.checkout(reuse).queued and client.checkout(fine).queued
        with ServerProcess(home, port):
            report = client.flush(force=True)
            assert (report.delivered, report.dead, report.remaining) == (["d-2"], ["d-1"], 0)
            assert client.flush(force=True).delivered == []  # never retried
        [letter] = client.status().dead_letters
        assert (letter.op, letter.document, letter.status, letter.code) == ("checkout", "d-1", 409, "ledger_error")
        assert "already used with different content" in letter.message
        assert "card" not in letter.body and letter.body["lines"] == reuse["lines"]
        assert cards[0].encode() not in outbox_bytes(tmp_path / "outbox.db")
        assert client.outbox.dismiss(letter.seq) and client.status().dead_letters == []
    assert points(home, cards[0]) == 3 and points(home, cards[1]) == 4


def test_a_failing_server_is_retried_with_exponential_backoff(home, cards, key, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clock = Clock(datetime.now().replace(microsecond=0) - timedelta(hours=1))  # inside the server's replay window
    with till(url, tmp_path, key, clock=clock, backoff=Backoff(base=2, cap=16)) as client:
        with ServerProcess(home, port, fail_with=503):
            sent = client.checkout({"card": cards[0], "txn": "b-1", "lines": basket(("dairy", "3.00"))})
            assert sent.queued and sent.reason == "store_error"
            waits = []
            for _ in range(5):
                head = client.pending()[0]
                waits.append(datetime.fromisoformat(head.next_attempt_at) - clock.now)
                clock.advance(1)
                assert client.flush().stopped == "backoff" and client.pending()[0].attempts == head.attempts
                clock.now = datetime.fromisoformat(head.next_attempt_at)
                assert client.flush().stopped == "store_error"
        assert [w.total_seconds() for w in waits] == [2, 4, 8, 16, 16]
        assert client.pending()[0].attempts == 6
        with ServerProcess(home, port):
            assert client.flush(force=True).delivered == ["b-1"]
    assert points(home, cards[0]) == 3


def test_coupons_rewards_balance_and_entrance_are_refused_offline_and_never_queued(home, cards, key, tmp_path):
    with till(dead_url(), tmp_path, key) as client:
        with pytest.raises(Offline, match="coupons needs the server"):
            client.checkout({"card": cards[0], "txn": "k-1", "lines": basket(("dairy", "3.00")), "coupons": ["K1-X"]})
        with pytest.raises(Offline, match="a reward redemption needs the server and is not queued"):
            client.redeem({"card": cards[0], "reward": "coffee", "txn": "k-2"})
        with pytest.raises(Offline, match="a balance needs the server"):
            client.balance({"card": cards[0]})
        with pytest.raises(Offline, match="an entrance visit needs the server"):
            client.enter({"card": cards[0]})
        assert client.status().queued == 0
    assert cards[0].encode() not in outbox_bytes(tmp_path / "outbox.db")


def test_a_4xx_on_a_live_request_is_raised_and_nothing_is_queued(home, cards, key, server, tmp_path):
    with till(server.url, tmp_path, key) as client:
        with pytest.raises(LedgerError, match="no checkout with this transaction id"):
            client.refund({"txn": "never-sold"})
        with pytest.raises(Exception, match="field 'email'") as info:
            client.checkout({"card": cards[0], "txn": "e-1", "lines": basket(("dairy", "1.00")), "email": "a@b.de"})
        assert info.value.code == "policy_violation" and "a@b.de" not in str(info.value)
        assert client.status().queued == 0


def test_a_refused_key_stops_the_replay_and_keeps_the_queue(home, cards, key, server, tmp_path):
    port = free_port()
    with till(f"http://127.0.0.1:{port}", tmp_path, KEY) as client:
        assert client.checkout({"card": cards[0], "txn": "w-1", "lines": basket(("dairy", "1.00"))}).queued
    with till(server.url, tmp_path, KEY) as client:
        report = client.flush(force=True)
        assert (report.stopped, report.remaining) == ("unauthenticated", 1)
        with pytest.raises(Unauthenticated):
            client.checkout({"card": cards[0], "txn": "w-2", "lines": basket(("dairy", "1.00"))})
        assert client.status().queued == 1 and client.status().dead_letters == []
    with till(server.url, tmp_path, key) as client:
        assert client.flush(force=True).delivered == ["w-1"]


def test_the_outbox_is_owner_only_and_forgets_a_card_code_once_delivered(home, cards, key, tmp_path):
    port = free_port()
    path = tmp_path / "outbox.db"
    with till(f"http://127.0.0.1:{port}", tmp_path, key) as client:
        client.checkout({"card": cards[2], "txn": "s-1", "lines": basket(("dairy", "1.00"))})
        assert cards[2].encode() in outbox_bytes(path)  # it must hold the code to replay it
        files = list(tmp_path.glob("outbox.db*"))
        assert len(files) >= 2 and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
        with ServerProcess(home, port):
            assert client.flush(force=True).delivered == ["s-1"]
        assert cards[2].encode() not in outbox_bytes(path)
    assert cards[2].encode() not in outbox_bytes(path)


def test_an_outbox_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "outbox.db"
    path.touch()
    os.chmod(path, 0o644)
    with pytest.raises(Exception, match="readable or writable by others") as info:
        TillClient(dead_url(), KEY, path)
    assert info.value.code == "outbox_error"


def test_https_is_verified_against_the_ca_file_and_an_unverified_server_gets_nothing(home, cards, key, tmp_path):
    pki = make_pki(tmp_path)
    request = {"card": cards[0], "txn": "tls-1", "lines": basket(("dairy", "2.00"))}
    with ServerProcess(home, tls=(pki["server_cert"], pki["server_key"])) as server:
        with TillClient(server.url, key, tmp_path / "untrusting.db") as client:
            sent = client.checkout(request)
            assert sent.queued and sent.reason == "tls_error"  # kept for later, and not sent to that server
        assert points(home, cards[0]) == 0
        with TillClient(server.url, key, tmp_path / "trusting.db", cafile=pki["ca"]) as client:
            assert client.checkout(request).result["points"] == 2


def test_with_mutual_tls_the_till_shows_its_certificate_and_without_one_its_sale_waits(home, cards, key, tmp_path):
    pki = make_pki(tmp_path)
    request = {"card": cards[0], "txn": "mtls-1", "lines": basket(("dairy", "3.00"))}
    tls = (pki["server_cert"], pki["server_key"])
    with ServerProcess(home, tls=tls, client_ca=pki["ca"]) as server:
        with TillClient(server.url, key, tmp_path / "till.db", cafile=pki["ca"]) as client:
            assert client.checkout(request).queued  # refused in the handshake: nothing reached the server
        assert points(home, cards[0]) == 0
        identity = (pki["till_cert"], pki["till_key"])
        with TillClient(server.url, key, tmp_path / "till.db", cafile=pki["ca"], client_cert=identity) as client:
            assert client.flush(force=True).delivered == ["mtls-1"]
    assert points(home, cards[0]) == 3


@pytest.mark.parametrize(
    ("server", "key", "needle"),
    [
        ("ftp://store7", KEY, "option 'server': must be an http:// or https:// URL"),
        ("http://", KEY, "option 'server'"),
        ("http://127.0.0.1:1", "", "option 'key'"),
        ("http://127.0.0.1:1", "schlüssel-ä", "option 'key': must be a non-empty terminal key of printable ASCII"),
        ("http://127.0.0.1:1", "two words", "option 'key'"),
        ("http://127.0.0.1:1", "line\nbreak", "option 'key'"),
    ],
)
def test_a_malformed_server_or_key_is_refused_before_anything_is_sent_or_created(tmp_path, server, key, needle):
    with pytest.raises(Exception, match=needle) as info:
        TillClient(server, key, tmp_path / "outbox.db")
    assert info.value.code == "policy_violation"
    assert (not key or key not in str(info.value)) and not (tmp_path / "outbox.db").exists()


def test_a_sale_replays_only_a_batch_of_the_queue_before_it_and_keeps_its_place_behind_the_rest(
    home, cards, key, tmp_path
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sales = [{"card": cards[0], "txn": f"q-{i}", "lines": basket(("dairy", "1.00"))} for i in range(6)]
    with till(url, tmp_path, key, replay_batch=2) as client:
        assert all(client.checkout(s).queued for s in sales[:5])
        with ServerProcess(home, port):
            client.outbox.retry_later(client.pending()[0].seq, "network_error", datetime(2000, 1, 1))  # due now
            sixth = client.checkout(sales[5])
            assert sixth.queued and sixth.reason == "queued behind earlier requests"
            assert [q.document for q in client.pending()] == ["q-2", "q-3", "q-4", "q-5"]
            assert client.flush(force=True).delivered == ["q-2", "q-3", "q-4", "q-5"]
    assert points(home, cards[0]) == 6


def test_a_429_is_retried_no_sooner_than_the_servers_retry_after(home, cards, key, tmp_path):
    clock = Clock(datetime.now().replace(microsecond=0) - timedelta(hours=1))  # inside the server's replay window
    server = ServerProcess(home, fail_with=429)
    with server, till(server.url, tmp_path, key, clock=clock, backoff=Backoff(base=0.25, cap=16)) as client:
        sent = client.checkout({"card": cards[0], "txn": "r-1", "lines": basket(("dairy", "3.00"))})
        assert sent.queued and sent.reason == "rate_limited"
        head = client.pending()[0]
        assert datetime.fromisoformat(head.next_attempt_at) - clock.now == timedelta(seconds=1)  # not 0.25
        with pytest.raises(RateLimited, match="try again in 1 s"):
            client.balance({"card": cards[0]})


def test_offline_a_mistyped_card_code_is_refused_at_the_till_instead_of_queued(home, cards, key, tmp_path):
    with till(dead_url(), tmp_path, key) as client:
        for code in (typo(cards[0]), transposed(cards[0]), "C1-SHORT", None):
            with pytest.raises(CardError, match="field 'card'") as info:
                client.checkout({"card": code, "txn": "typo-1", "lines": basket(("dairy", "1.00"))})
            assert code is None or code not in str(info.value)
        assert client.status().queued == 0


def test_a_queued_sale_the_server_already_credited_is_reported_replayed_and_credited_once(home, cards, key, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sale = {"card": cards[0], "txn": "lost-answer-1", "lines": basket(("wine", "12.00"))}
    with till(url, tmp_path, key) as client:
        assert client.checkout(sale).queued  # as if the answer was lost on the way back
        with ServerProcess(home, port):
            with TillClient(url, key, tmp_path / "other.db") as other:  # the sale reached the server after all
                assert other.checkout(sale).result["replayed"] is False
            report = client.flush(force=True)
    assert (report.delivered, report.replayed) == (["lost-answer-1"], ["lost-answer-1"])
    assert points(home, cards[0]) == 12
