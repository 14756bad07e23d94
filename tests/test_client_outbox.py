"""The outbox on its own: order under any mix of queueing, delivery and dead letters; no card code
left behind; owner-only files; the backoff's bounds."""

from __future__ import annotations

import os
import stat
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard.client import Backoff
from anoncard.outbox import Outbox, OutboxError, document_number

T0 = datetime(2026, 12, 1, 9, 0, 0)
CARD = "C1-TEST-CODE-0000-0000-0000-0000-{:03d}"

steps = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(["checkout", "refund"])),
        st.tuples(st.just("deliver"), st.integers(0, 50)),
        st.tuples(st.just("dead"), st.integers(0, 50)),
    ),
    max_size=30,
)


def files(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


@given(steps)
def test_any_mix_of_queueing_delivery_and_dead_letters_keeps_the_order_and_forgets_removed_codes(plan):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "outbox.db"
        model: list[tuple[int, str, str]] = []  # (seq, op, card) in queue order
        removed: list[str] = []
        with Outbox(path) as outbox:
            for n, (action, arg) in enumerate(plan):
                if action == "put":
                    card = CARD.format(n)
                    body = {"card": card, "txn": f"t-{n}", "lines": [{"category": "dairy", "amount": "1.00"}]}
                    if arg == "refund":
                        body = {"txn": f"t-{n}", "refund_id": f"r-{n}", "card": card}
                    seq = outbox.put(arg, body, T0 + timedelta(seconds=n), retry_at=T0)
                    assert not model or seq > model[-1][0]
                    model.append((seq, arg, card))
                elif model:
                    seq, _op, card = model.pop(arg % len(model))
                    item = next(q for q in outbox.pending() if q.seq == seq)
                    if action == "deliver":
                        outbox.delivered(seq)
                    else:
                        outbox.dead(item, 409, "ledger_error", "field 'txn': refused", T0)
                    removed.append(card)
            pending = outbox.pending()
            assert [(q.seq, q.op, q.body["card"]) for q in pending] == model
            assert all("card" not in d.body for d in outbox.dead_letters())
            assert outbox.count() == len(model) == outbox.status().queued
            outbox.scrub()
        data = files(path)
        for card in removed:
            assert card.encode() not in data
        for _seq, _op, card in model:
            assert card.encode() in data


def test_a_queued_request_never_shows_its_card_code_in_its_repr(tmp_path):
    with Outbox(tmp_path / "outbox.db") as outbox:
        outbox.put("checkout", {"card": CARD.format(1), "txn": "t-1", "lines": []}, T0, retry_at=T0)
        [item] = outbox.pending()
    assert CARD.format(1) not in repr(item) and "t-1" in repr(item)


def test_the_outbox_files_are_owner_only_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        with Outbox(tmp_path / "outbox.db") as outbox:
            outbox.put("checkout", {"card": CARD.format(1), "txn": "t-1", "lines": []}, T0, retry_at=T0)
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    finally:
        os.umask(old)
    assert modes == {"outbox.db": 0o600, "outbox.db-wal": 0o600, "outbox.db-shm": 0o600}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o606, 0o660])
def test_an_outbox_file_open_to_others_is_refused_and_left_alone(tmp_path, mode):
    path = tmp_path / "outbox.db"
    path.write_bytes(b"")
    path.chmod(mode)
    with pytest.raises(OutboxError, match="readable or writable by others"):
        Outbox(path)
    assert path.read_bytes() == b"" and stat.S_IMODE(path.stat().st_mode) == mode


def test_a_file_that_is_not_an_outbox_is_refused(tmp_path):
    path = tmp_path / "outbox.db"
    path.write_bytes(b"not a database, just some text " * 100)
    path.chmod(0o600)
    with pytest.raises(OutboxError, match="not an anoncard outbox database"):
        Outbox(path)


def test_only_checkouts_and_refunds_can_be_queued(tmp_path):
    with Outbox(tmp_path / "outbox.db") as outbox:
        for op in ("redeem", "balance", "enter"):
            with pytest.raises(ValueError, match="cannot be queued"):
                outbox.put(op, {"card": CARD.format(1), "txn": "t"}, T0, retry_at=T0)
        assert outbox.count() == 0


def test_document_numbers_are_the_ones_the_server_keys_its_idempotency_on():
    assert document_number("checkout", {"txn": "t-1"}) == "t-1"
    assert document_number("refund", {"txn": "t-1", "refund_id": "r-9"}) == "r-9"
    assert document_number("refund", {"txn": "t-1"}) == "t-1#full"


@given(
    base=st.floats(0.01, 10),
    cap=st.floats(0.01, 600),
    attempts=st.integers(1, 100_000),
    retry_after=st.none() | st.floats(0, 10_000),
)
def test_the_backoff_doubles_up_to_its_cap_and_honours_retry_after(base, cap, attempts, retry_after):
    backoff = Backoff(base=base, cap=cap)
    delay = backoff.delay(attempts, retry_after).total_seconds()
    assert delay <= cap + 1e-6
    assert delay >= min(base, cap) - 1e-6
    assert backoff.delay(attempts + 1, retry_after) >= backoff.delay(attempts, retry_after)
    if retry_after is not None:
        assert delay >= min(retry_after, cap) - 1e-6
    else:
        assert delay == pytest.approx(min(cap, base * 2 ** min(attempts - 1, 64)), abs=1e-6)  # timedelta: microseconds


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=400),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(
    status=st.sampled_from([400, 401, 403, 404, 409, 413, 415, 418]),
    body=json_values
    | st.fixed_dictionaries({"error": st.fixed_dictionaries({"code": json_values, "message": json_values})}),
)
def test_any_error_answer_becomes_one_library_error_with_a_short_message_and_a_plain_code(status, body):
    from anoncard.client import _Answer, _error
    from anoncard.errors import AnonCardError, Forbidden, Unauthenticated

    err = _error(_Answer(status, body))
    assert isinstance(err, AnonCardError)
    assert 0 < len(err.message) <= 300 and isinstance(err.message, str)
    assert err.code.isidentifier()
    if status == 401:
        assert isinstance(err, Unauthenticated)
    if status == 403:
        assert isinstance(err, Forbidden)


@given(st.text(max_size=30) | st.none())
def test_retry_after_is_read_as_seconds_or_ignored(value):
    from anoncard.client import _seconds

    seconds = _seconds(value)
    assert seconds is None or seconds >= 0
    assert Backoff(base=1, cap=60).delay(1, seconds) <= timedelta(seconds=60)


def test_a_planted_link_or_a_missing_directory_is_refused(tmp_path):
    target = tmp_path / "elsewhere.db"
    target.write_bytes(b"")
    target.chmod(0o600)
    link = tmp_path / "outbox.db"
    link.symlink_to(target)
    with pytest.raises(OutboxError, match="not a regular file"):
        Outbox(link)
    dangling = tmp_path / "dangling.db"
    dangling.symlink_to(tmp_path / "nothing-here")
    with pytest.raises(OutboxError, match="not a regular file"):
        Outbox(dangling)
    assert not (tmp_path / "nothing-here").exists() and target.read_bytes() == b""
    with pytest.raises(OutboxError, match="cannot create the file"):
        Outbox(tmp_path / "no-such-dir" / "outbox.db")
