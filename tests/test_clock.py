"""The clock is the server's: an explicit time is a bounded replay time, never a coupon's.

Each test reproduces a way an explicit ``at`` once steered the service: an expired coupon
accepted, coupons minted for years ahead, ``serve`` crashing after coupons were committed,
a purge blocked by a FOREIGN KEY failure, rows planted beyond retention, and, with month
resolution, a coupon "valid until" the first of the month.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anoncard import KeyRing, Programme, Service, Store, audit
from anoncard import coupons as cc
from anoncard.errors import CouponError, PolicyFileError, PolicyViolation
from anoncard.policy import Policy, default_text
from tests.cli_helpers import assert_unchanged, cli, issue, make_home, ok, snapshot
from tests.conftest import basket, clock_at, on

DAY = date(2015, 3, 2)
NOW = datetime(2015, 3, 2, 10, 30)
LINES = basket(("dairy", "3.00"), ("coffee", "6.50"), ("fruit", "2.00"), ("bakery", "1.50"))


def shop(policy: Policy | None = None, *, today: date = DAY) -> tuple[Service, str]:
    """A store whose one card has shopped four times in the last ten days."""
    svc = Service(Store(":memory:"), KeyRing.create("2015-01-01"), Programme.default(), policy, clock=clock_at(today))
    (card,) = svc.issue_cards({"count": 1})
    for i in range(4):
        on(svc, today - timedelta(days=10 - i)).checkout({"card": card.code, "txn": f"h{i}", "lines": LINES})
    on(svc, today).refresh_stats()
    return svc, card.code


def dump(svc: Service) -> list[str]:
    return list(svc.store.conn.iterdump())


# -- the window ---------------------------------------------------------------------------


def test_an_explicit_time_inside_the_window_dates_the_replay():
    svc, code = shop()
    r = svc.checkout({"card": code, "txn": "late", "lines": basket(("dairy", "1.00"))}, at=DAY - timedelta(days=7))
    assert r.points == 1
    doc = svc.store.find_document(svc.ring.reference("checkout", "late"))
    assert doc.day == "2015-02-23"
    skew = NOW + timedelta(seconds=svc.policy.future_skew_seconds)
    svc.checkout({"card": code, "txn": "fast-till", "lines": basket(("dairy", "1.00"))}, at=skew)


@pytest.mark.parametrize(
    "at",
    [
        DAY - timedelta(days=8),  # older than replay_days
        NOW - timedelta(days=7, seconds=1),
        NOW + timedelta(seconds=301),  # further ahead than future_skew_seconds
        DAY + timedelta(days=1),
        date(1, 1, 1),
        date(9999, 12, 31),
        datetime.max,
        datetime.min,
    ],
    ids=str,
)
def test_an_explicit_time_outside_the_window_is_refused_with_nothing_stored(at):
    svc, code = shop()
    before = dump(svc)
    for call in (
        lambda: svc.checkout({"card": code, "txn": "x1", "lines": basket(("dairy", "1.00"))}, at=at),
        lambda: svc.refund({"txn": "h3"}, at=at),
        lambda: svc.rotate_keys(at=at),
    ):
        with pytest.raises(PolicyViolation) as info:
            call()
        assert info.value.field == "at"
        assert "policy [time]" in info.value.message
        assert str(at) not in info.value.message and at.isoformat() not in info.value.message
    with pytest.raises(PolicyViolation, match="field 'at': a redemption needs the server"):
        svc.redeem({"card": code, "txn": "x2", "reward": "coffee"}, at=at)
    assert dump(svc) == before


_OFFSETS = st.one_of(
    st.integers(-400 * 86400, 400 * 86400),
    st.integers(-(10**11), 10**11),  # far enough to leave the calendar
)


@settings(max_examples=150)
@given(seconds=_OFFSETS, as_date=st.booleans())
def test_any_explicit_time_is_accepted_exactly_inside_the_declared_window(seconds, as_date):
    """Outside ``[now - replay_days, now + future_skew_seconds]`` always refused, nothing stored;
    inside, the checkout is dated by it."""
    svc = Service(Store(":memory:"), KeyRing.create("2015-01-01"), Programme.default(), clock=clock_at(NOW))
    (card,) = svc.issue_cards({"count": 1})
    try:
        at: date | datetime = NOW + timedelta(seconds=seconds)
    except OverflowError:
        at = datetime.max if seconds > 0 else datetime.min
    if as_date:
        at = at.date()
    p = svc.policy
    lo, hi = NOW - timedelta(days=p.replay_days), NOW + timedelta(seconds=p.future_skew_seconds)
    inside = lo.date() <= at <= hi.date() if as_date else lo <= at <= hi
    before = dump(svc)
    request = {"card": card.code, "txn": "t1", "lines": basket(("dairy", "1.00"))}
    if inside:
        svc.checkout(request, at=at)
        (day,) = svc.store.conn.execute("SELECT day FROM txns").fetchone()
        assert day == (at if as_date else at.date()).isoformat()
    else:
        with pytest.raises(PolicyViolation, match="field 'at'"):
            svc.checkout(request, at=at)
        assert dump(svc) == before


def test_an_explicit_time_in_another_time_zone_is_compared_as_the_same_moment():
    from datetime import timezone

    utc_now = datetime(2015, 3, 2, 10, 30, tzinfo=UTC)
    svc = Service(Store(":memory:"), KeyRing.create("2015-01-01"), Programme.default(), clock=lambda: utc_now)
    (card,) = svc.issue_cards({"count": 1})
    plus_one = timezone(timedelta(hours=1))
    svc.checkout({"card": card.code, "txn": "t1", "lines": basket(("dairy", "1.00"))},
                 at=datetime(2015, 3, 2, 11, 34, tzinfo=plus_one))  # fmt: skip  # 10:34 UTC: inside the skew
    with pytest.raises(PolicyViolation, match="field 'at'"):
        svc.checkout({"card": card.code, "txn": "t2", "lines": basket(("dairy", "1.00"))},
                     at=datetime(2015, 3, 2, 11, 36, tzinfo=plus_one))  # fmt: skip  # 10:36 UTC: beyond it
    with pytest.raises(PolicyViolation, match="field 'at'"):
        svc.checkout({"card": card.code, "txn": "t3", "lines": basket(("dairy", "1.00"))}, at="2015-03-02")
    with pytest.raises(PolicyViolation, match="field 'at'"):  # beyond the calendar once in UTC
        svc.checkout({"card": card.code, "txn": "t4", "lines": basket(("dairy", "1.00"))},
                     at=datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))))  # fmt: skip
    svc.checkout({"card": card.code, "txn": "t5", "lines": basket(("dairy", "1.00"))},
                 at=datetime(2015, 3, 2, 0, 30, tzinfo=plus_one))  # fmt: skip
    days = dict(svc.store.conn.execute("SELECT balance_after, day FROM txns"))
    assert days == {1: "2015-03-02", 2: "2015-03-01"}  # the server's day: 23:30 UTC the day before


# -- coupons keep the server's time --------------------------------------------------------


def test_an_expired_coupon_is_not_accepted_by_dating_the_checkout_back():
    svc, code = shop()
    coupon = svc.enter({"card": code}).coupons[0]
    assert coupon.expires == DAY.isoformat()
    on(svc, DAY + timedelta(days=1))
    before = dump(svc)
    request = {"card": code, "txn": "c1", "lines": LINES, "coupons": [coupon.code]}
    with pytest.raises(PolicyViolation, match="field 'at'"):
        svc.checkout(request, at=DAY)
    with pytest.raises(CouponError, match="expired"):
        svc.checkout(request)
    assert dump(svc) == before


def test_the_entrance_mints_coupons_by_its_own_clock_only():
    svc, code = shop()
    before = dump(svc)
    for at in (date(2030, 1, 1), DAY, datetime(9999, 12, 31)):
        with pytest.raises(PolicyViolation, match="field 'at'"):
            svc.enter({"card": code}, at=at)
    assert dump(svc) == before
    coupons = svc.enter({"card": code}).coupons
    assert coupons and all(c.expires == DAY.isoformat() for c in coupons)
    (latest,) = svc.store.conn.execute("SELECT max(expires_day) FROM coupons").fetchone()
    assert latest == DAY.isoformat()


def test_a_coupon_outside_the_codecs_calendar_is_a_clean_error():
    ring = KeyRing.create("2015-01-01")
    for expires in (date(1999, 12, 31), date(2179, 6, 7), date(9999, 12, 31)):
        coupon = cc.Coupon(b"12345678", 1, expires, "percent", 10, b"bindbind", "dairy")
        with pytest.raises(CouponError, match="expiry"):
            cc.encode(coupon, ring.coupon_private_key())


def test_an_entrance_whose_coupons_cannot_be_printed_records_none():
    svc, code = shop(today=date(2179, 6, 7))  # one day beyond what a coupon can carry
    before = dump(svc)
    with pytest.raises(CouponError, match="expiry"):
        svc.enter({"card": code})
    assert dump(svc) == before


def test_serve_answers_an_out_of_range_time_with_an_error_and_stores_no_coupon(tmp_path):
    home = make_home(tmp_path / "home")
    (code,) = issue(home)
    for i in range(3):
        ok(cli(home, "checkout", "--card", code, "--txn", f"h{i}", "--line", "dairy=2.49", "--line", "coffee=6.99"))
    before = snapshot(home)
    requests = [
        {"op": "enter", "card": code, "at": "9999-12-31"},
        {"op": "enter", "card": code, "at": "0001-01-01"},
        {"op": "enter", "card": code, "at": "2030-01-01"},
        {"op": "checkout", "card": code, "txn": "x", "lines": [{"category": "dairy", "amount": "1.00"}],
         "at": "9999-12-31T23:59:59"},
        {"op": "balance", "card": code},
    ]  # fmt: skip
    result = cli(home, "serve", input="".join(json.dumps(r) + "\n" for r in requests))
    assert result.exit_code == 0, (result.output, result.exception)
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == len(requests)
    for answer in out[:4]:
        assert answer["ok"] is False and answer["error"]["code"] == "policy_violation"
        assert answer["error"]["message"].startswith("field 'at': ")
    assert out[4]["ok"] is True
    assert_unchanged(home, before)


def test_the_cli_refuses_an_out_of_range_time_cleanly(tmp_path):
    home = make_home(tmp_path / "home")
    (code,) = issue(home)
    before = snapshot(home)
    for at in ("9999-12-31", "0001-01-01", "2030-01-01"):
        r = cli(home, "checkout", "--card", code, "--txn", "t1", "--line", "dairy=1.00", "--at", at)
        assert r.exit_code == PolicyViolation.exit_code, r.output
        assert r.stderr.startswith("Error: field 'at': ") and at not in r.stderr
        r = cli(home, "enter", "--card", code, "--at", at)  # the entrance has no explicit time at all
        assert r.exit_code == 2 and "--at" in r.stderr
    assert_unchanged(home, before)


# -- retention cannot be steered ---------------------------------------------------------


def test_rows_cannot_be_planted_already_beyond_retention():
    svc, code = shop()
    before = dump(svc)
    too_old = DAY - timedelta(days=svc.policy.documents_days + 30)
    with pytest.raises(PolicyViolation, match="field 'at'"):
        svc.checkout({"card": code, "txn": "old", "lines": basket(("dairy", "1.00"))}, at=too_old)
    assert dump(svc) == before


def test_the_window_stays_inside_retention_when_the_policy_loads():
    text = default_text()
    for old, new, needle in (
        ("replay_days = 7 ", "replay_days = 120 ", "below the retention periods"),
        ("replay_days = 7 ", "replay_days = -1 ", "time.replay_days must be a whole number"),
        ("future_skew_seconds = 300 ", "future_skew_seconds = 3601 ", "at most 3600"),
        ("future_skew_seconds = 300 ", 'future_skew_seconds = "300" ', "whole number"),
        ("replay_days = 7 ", "replay_hours = 7 ", "time.replay_hours is not a setting"),
    ):
        assert old in text
        with pytest.raises(PolicyFileError, match=needle):
            Policy.from_toml(text.replace(old, new))
    longer = Policy.from_toml(text.replace("replay_days = 7 ", "replay_days = 30 "))
    assert longer.replay_days == 30 and longer.fingerprint != Policy.default().fingerprint
    assert "**7 days** before it" in Policy.default().to_markdown()


def test_a_purge_takes_no_explicit_time(tmp_path):
    home = make_home(tmp_path / "home")
    (code,) = issue(home)
    ok(cli(home, "checkout", "--card", code, "--txn", "t1", "--line", "dairy=1.00"))
    before = snapshot(home)
    for at in ("2030-01-01", "2000-01-01"):
        r = cli(home, "purge", "--at", at)
        assert r.exit_code == 2 and "--at" in r.stderr
    assert_unchanged(home, before)
    with Service.open(home) as svc, pytest.raises(TypeError):
        svc.purge(at=date(2030, 1, 1))


def test_a_checkout_that_redeems_a_coupon_compacts_with_it():
    """A coupon redeemed by a document goes when the document is compacted, even if the
    coupon's own row is younger: no FOREIGN KEY failure blocks the purge."""
    svc, code = shop()
    coupon = svc.enter({"card": code}).coupons[0]
    with pytest.raises(PolicyViolation, match="field 'at'"):  # a redemption is dated by the clock
        svc.checkout({"card": code, "txn": "c1", "lines": LINES, "coupons": [coupon.code]}, at=DAY - timedelta(days=3))
    svc.checkout({"card": code, "txn": "c1", "lines": LINES, "coupons": [coupon.code]})
    balance = svc.balance({"card": code}).points
    counts = on(svc, DAY + timedelta(days=svc.policy.documents_days + 1)).purge()
    assert counts["documents compacted"] == 5 and counts["coupons dropped"] >= 1
    assert svc.store.counts()["coupons"] == 0
    assert svc.balance({"card": code}).points == balance


def test_compaction_drops_a_coupon_with_the_older_document_that_used_it():
    svc, code = shop()
    coupon = svc.enter({"card": code}).coupons[0]
    svc.checkout({"card": code, "txn": "c1", "lines": LINES, "coupons": [coupon.code]})
    # a database written by an anoncard that let a redemption be dated before the coupon's issue
    conn = svc.store.conn
    conn.execute("DROP TRIGGER coupons_single_use")
    conn.execute("UPDATE coupons SET issued_day = '2015-03-20'")
    cutoff = (DAY + timedelta(days=1)).isoformat()
    held = conn.execute("SELECT count(*) FROM coupons WHERE redeemed_txn IS NULL").fetchone()[0]
    with svc.store.transaction(), svc.store.maintenance():
        counts = svc.store.compact_documents(cutoff)
    assert counts["coupons dropped"] == 1  # the redeemed one, with its document
    assert conn.execute("SELECT count(*) FROM coupons").fetchone()[0] == held
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_an_audit_day_before_2000_is_a_clean_error(tmp_path):
    home = make_home(tmp_path / "home")
    with pytest.raises(PolicyViolation, match="field 'at'"):
        audit.run(home, today=date(1, 1, 1))
    r = cli(home, "audit", "--at", "0001-01-01")
    assert r.exit_code == PolicyViolation.exit_code and r.stderr.startswith("Error: field 'at': ")
    assert audit.run(home, today=date(9999, 12, 31)).passed  # a later day only reads


# -- week and month resolution -------------------------------------------------------------


def coarse(resolution: str) -> Policy:
    return Policy.from_toml(default_text().replace('time_resolution = "day"', f'time_resolution = "{resolution}"'))


@pytest.mark.parametrize("resolution", ["week", "month"])
def test_a_coupon_is_valid_exactly_as_long_as_printed_under_coarse_resolution(resolution):
    day = date(2015, 3, 18)  # a Wednesday in the middle of the month
    svc, code = shop(coarse(resolution), today=day)
    coupons = svc.enter({"card": code}).coupons
    assert coupons
    coupon = coupons[0]
    assert coupon.expires == day.isoformat()  # the real last valid day, as printed and signed
    assert cc.verify(coupon.code, svc.ring.coupon_public_key()).expires == day
    stored = {
        d for (d,) in svc.store.conn.execute("SELECT issued_day FROM coupons UNION SELECT expires_day FROM coupons")
    }
    assert stored == {svc.policy.coarsen(day).isoformat()}  # what is stored stays coarse
    later = svc.enter({"card": code}).coupons  # held ones are not reprinted with a coarse date
    assert all(c.new for c in later) and not {c.code for c in later} & {c.code for c in coupons}
    request = {"card": code, "txn": "late", "lines": LINES, "coupons": [coupon.code]}
    with pytest.raises(CouponError, match="expired"):
        on(svc, day + timedelta(days=1)).checkout(request)
    r = on(svc, day).checkout(request)
    assert r.coupons[0]["category"] == coupon.category


def test_a_day_resolution_entrance_reprints_a_held_coupon_unchanged():
    svc, code = shop()
    first = svc.enter({"card": code}).coupons
    again = svc.enter({"card": code}).coupons
    assert [c.code for c in again] == [c.code for c in first] and not any(c.new for c in again)
