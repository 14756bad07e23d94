"""Coupons: forged, tampered, expired, other-card and replayed coupons are refused; single use holds."""

from __future__ import annotations

import multiprocessing
import os
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anoncard import KeyRing, Programme, Service, Store, cards
from anoncard import coupons as cc
from anoncard.errors import CouponError
from anoncard.storage import database_url
from tests.cli_helpers import dump
from tests.conftest import basket, clock_at, fixed_clock, on

DAY = date(2015, 3, 2)
LINES = basket(("dairy", "3.00"), ("coffee", "6.50"), ("fruit", "2.00"), ("bakery", "1.50"))


def memory_service() -> Service:
    return Service(Store(":memory:"), KeyRing.create("2015-03-01"), Programme.default(), clock=fixed_clock)


def regular(svc: Service, code: str, visits: int = 4) -> None:
    for i in range(visits):
        on(svc, DAY - timedelta(days=10 - i)).checkout({"card": code, "txn": f"{code[-6:]}-h{i}", "lines": LINES})
    on(svc, DAY).refresh_stats()


@pytest.fixture
def shop():
    svc = memory_service()
    a, b = (s.code for s in svc.issue_cards({"count": 2}))
    regular(svc, a)
    regular(svc, b)
    return svc, a, b


def coupon_for(svc, code, category=None):
    coupons = svc.enter({"card": code}).coupons
    assert coupons
    if category is None:
        return coupons[0]
    return next(c for c in coupons if c.category == category)


def test_round_trip_and_offline_verification():
    ring = KeyRing.create("2015-03-01")
    c = cc.Coupon(b"12345678", 1, DAY, "percent", 10, b"bindbind", "soft drinks")
    code = cc.encode(c, ring.coupon_private_key())
    assert code.startswith("K1") and len(code) < 200
    assert cc.verify(code, ring.coupon_public_key()) == c
    assert cc.verify(code.lower(), ring.coupon_public_key()) == c


@given(st.binary(min_size=8, max_size=8), st.integers(0, 20000), st.sampled_from(list(cc.KINDS)),
       st.integers(0, 2**32 - 1), st.text("abcdefghij &-", min_size=1, max_size=48))  # fmt: skip
def test_codec_round_trip(cid, days, kind, value, category):
    ring = KEY
    c = cc.Coupon(cid, 1, cc.EPOCH + timedelta(days=days), kind, value, b"\x00" * 8, category)
    assert cc.verify(cc.encode(c, ring.coupon_private_key()), ring.coupon_public_key()) == c


KEY = KeyRing.create("2015-03-01")


@settings(max_examples=200)
@given(st.data())
def test_any_tampered_symbol_is_refused_with_one_opaque_error(data):
    c = cc.Coupon(b"abcdefgh", 1, DAY, "amount", 100, b"12345678", "dairy")
    code = cc.encode(c, KEY.coupon_private_key())
    i = data.draw(st.integers(2, len(code) - 1))
    new = data.draw(st.sampled_from([ch for ch in cards.ALPHABET if ch != code[i]]))
    tampered = code[:i] + new + code[i + 1 :]
    with pytest.raises(CouponError) as info:
        cc.verify(tampered, KEY.coupon_public_key())
    assert info.value.message == "field 'coupons': not a valid coupon (forged, damaged or mistyped)"


def test_a_coupon_signed_by_another_key_is_forged():
    other = KeyRing.create("2015-03-01")
    c = cc.Coupon(b"abcdefgh", 1, DAY, "percent", 50, b"12345678", "dairy")
    with pytest.raises(CouponError, match="not a valid coupon"):
        cc.verify(cc.encode(c, other.coupon_private_key()), KEY.coupon_public_key())


@pytest.mark.parametrize("junk", ["", "K1", "K1" + "0" * 150, "C1-XXXX", 42, None, "K1***"])
def test_junk_is_refused(junk):
    with pytest.raises(CouponError, match="not a valid coupon"):
        cc.verify(junk, KEY.coupon_public_key())


def test_redeem_once_then_replayed_coupon_is_refused(shop):
    svc, a, _b = shop
    coupon = coupon_for(svc, a)
    r = svc.checkout({"card": a, "txn": "c1", "lines": LINES, "coupons": [coupon.code]})
    assert r.coupons[0]["category"] == coupon.category
    again = svc.checkout({"card": a, "txn": "c1", "lines": LINES, "coupons": [coupon.code]})
    assert again.replayed and again.coupons == r.coupons and again.balance == r.balance
    before = list(svc.store.conn.iterdump())
    with pytest.raises(CouponError, match="already used"):
        svc.checkout({"card": a, "txn": "c2", "lines": LINES, "coupons": [coupon.code]})
    assert list(svc.store.conn.iterdump()) == before


def test_another_cards_coupon_is_refused(shop):
    svc, a, b = shop
    coupon = coupon_for(svc, a)
    with pytest.raises(CouponError, match="another card"):
        svc.checkout({"card": b, "txn": "c1", "lines": LINES, "coupons": [coupon.code]})


def test_expired_coupon_is_refused(shop):
    svc, a, _b = shop
    coupon = coupon_for(svc, a)
    with pytest.raises(CouponError, match="expired"):
        on(svc, DAY + timedelta(days=1)).checkout({"card": a, "txn": "c1", "lines": LINES, "coupons": [coupon.code]})


def test_coupon_needs_its_category_in_the_basket(shop):
    svc, a, _b = shop
    coupon = coupon_for(svc, a)
    with pytest.raises(CouponError, match=f"no {coupon.category}"):
        svc.checkout({"card": a, "txn": "c1", "lines": basket(("wine", "9.99")), "coupons": [coupon.code]})


def test_benefits_on_the_receipt(shop):
    svc, a, _b = shop
    coupons = svc.enter({"card": a}).coupons
    r = svc.checkout({"card": a, "txn": "c1", "lines": LINES, "coupons": [c.code for c in coupons]})
    spend = {ln["category"]: int(ln["amount"].replace(".", "")) for ln in LINES}
    for line, c in zip(r.coupons, coupons, strict=True):
        discount, bonus = cc.benefit(cc.Coupon(b"", 1, DAY, c.kind, c.value, b"", c.category), spend[c.category])
        assert line["discount"] == f"{discount // 100}.{discount % 100:02d}" and line["bonus_points"] == bonus


def test_enter_reprints_held_coupons_and_never_duplicates(shop):
    svc, a, _b = shop
    first = svc.enter({"card": a}).coupons
    second = svc.enter({"card": a}).coupons
    assert [c.code for c in second] == [c.code for c in first]
    assert not any(c.new for c in second)
    assert len({c.category for c in first}) == len(first)


def test_two_processes_redeeming_one_coupon_exactly_one_wins(home):
    svc = Service.open(home, clock=fixed_clock)
    codes = [s.code for s in svc.issue_cards({"count": 1})]
    regular(svc, codes[0])
    ctx = multiprocessing.get_context("fork")
    rounds = 200 if os.environ.get("ANONCARD_STRESS") == "1" else 100
    results = []
    for i in range(rounds):
        coupon = on(svc, DAY + timedelta(days=7 * i)).enter({"card": codes[0]}).coupons[0].code
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_redeem_day, args=(str(home), codes[0], coupon, f"race{i}-{p}", i, out))
            for p in range(2)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        results.append(sorted(out.get() for _ in procs))
    svc.close()
    assert results == [["ok", "refused"]] * rounds


def _redeem_day(home: str, code: str, coupon: str, txn: str, day: int, out) -> None:
    svc = Service.open(home, clock=clock_at(DAY + timedelta(days=7 * day)))
    try:
        svc.checkout({"card": code, "txn": txn, "lines": LINES, "coupons": [coupon]})
        out.put("ok")
    except CouponError:
        out.put("refused")
    finally:
        svc.close()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=40))
def test_caps_are_never_exceeded(visits):
    """Random visit sequences (days apart, redeeming or ignoring): caps per visit and per week hold."""
    svc = memory_service()
    (code,) = (s.code for s in svc.issue_cards({"count": 1}))
    regular(svc, code)
    rules = svc.programme.coupons
    day = DAY
    issued: list[date] = []
    for i, (gap, redeem) in enumerate(visits):
        day += timedelta(days=gap)
        coupons = on(svc, day).enter({"card": code}).coupons
        assert len(coupons) <= rules.per_visit
        issued += [day] * sum(c.new for c in coupons)
        assert sum(1 for d in issued if (day - d).days < 7) <= rules.per_week
        use = [c.code for c in coupons if c.expires >= day.isoformat()] if redeem else []
        svc.checkout({"card": code, "txn": f"v{i}", "lines": LINES, "coupons": use})


def test_ignored_coupons_lower_later_issuance():
    svc = memory_service()
    keen, bored = (s.code for s in svc.issue_cards({"count": 2}))
    regular(svc, keen)
    regular(svc, bored)
    counts = {keen: [], bored: []}
    for week in range(8):
        day = DAY + timedelta(days=7 * week)
        for code in (keen, bored):
            coupons = on(svc, day).enter({"card": code}).coupons
            counts[code].append(len(coupons))
            use = [c.code for c in coupons] if code == keen else []
            svc.checkout({"card": code, "txn": f"{code[-5:]}-w{week}", "lines": LINES, "coupons": use})
    assert counts[keen][-1] == 3
    assert counts[bored][-1] < counts[bored][0]
    assert sum(counts[bored][4:]) < sum(counts[keen][4:])


def test_the_id_printed_on_a_coupon_is_nowhere_in_the_database(home):
    """A slip plus the database, without the key ring, finds no coupon row (so no card)."""
    svc = Service.open(home, clock=fixed_clock)
    (code,) = (s.code for s in svc.issue_cards({"count": 1}))
    regular(svc, code)
    printed = svc.enter({"card": code}).coupons
    ids = [cc.verify(c.code, svc.ring.coupon_public_key()).id for c in printed]
    svc.checkout({"card": code, "txn": "c1", "lines": LINES, "coupons": [printed[0].code]})
    stored = [row[0] for row in svc.store.conn.execute("SELECT id FROM coupons")]
    svc.close()
    content = "\n".join(dump(home)).upper()
    sqlite = database_url(home) is None
    raw = (home / "anoncard.db").read_bytes() if sqlite else b""  # PostgreSQL's files are the server's
    assert not (home / "anoncard.db-wal").exists() or not (home / "anoncard.db-wal").stat().st_size
    for cid in ids:
        assert cid not in raw
        assert cid.hex().upper() not in content
    assert sorted(stored) == sorted(svc.ring.coupon_digest(i) for i in ids)


def test_a_coupon_is_found_only_through_its_keyed_digest(shop):
    svc, a, _b = shop
    coupon = coupon_for(svc, a)
    cid = cc.verify(coupon.code, svc.ring.coupon_public_key()).id
    assert svc.store.find_coupon(cid) is None
    assert svc.store.find_coupon(svc.ring.coupon_digest(cid)) is not None
    other = memory_service()  # another store's ring digests the same id differently
    assert other.ring.coupon_digest(cid) != svc.ring.coupon_digest(cid)
    assert len(svc.ring.coupon_digest(cid)) == 16


def test_the_document_that_used_a_coupon_cannot_be_found_from_the_slip(shop):
    """The checkout's content digest covers the coupons by their keyed digests: recomputing
    it from a slip's id and the stored row (card, lines) matches nothing."""
    import hashlib
    import json

    svc, a, _b = shop
    coupon = coupon_for(svc, a)
    cid = cc.verify(coupon.code, svc.ring.coupon_public_key()).id
    svc.checkout({"card": a, "txn": "c1", "lines": LINES, "coupons": [coupon.code]})
    rows = svc.store.conn.execute("SELECT card_id, lines, content FROM txns WHERE kind = 'checkout'").fetchall()
    for card_id, lines, content in rows:
        pairs = [row[:2] for row in json.loads(lines)]
        guess = hashlib.sha256(json.dumps(["checkout", card_id, pairs, [cid.hex()]], separators=(",", ":")).encode())
        assert guess.digest() != content
    again = svc.checkout({"card": a, "txn": "c1", "lines": LINES, "coupons": [coupon.code]})
    assert again.replayed
