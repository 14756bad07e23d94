from __future__ import annotations

import os
import stat

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from hypothesis import given
from hypothesis import strategies as st

from anoncard import KeyRing, KeyRingError, cards
from anoncard.cards import CardSecret
from anoncard.errors import OutputError
from anoncard.keyring import PRIMARY, RETIRED, VERIFY_ONLY, derive, stale_copies

secrets_ = st.integers(min_value=0, max_value=(1 << cards.SECRET_BITS) - 1).map(CardSecret)
RING = KeyRing.create("2015-03-01")
RING.rotate("2015-03-08")


@given(secrets_)
def test_tokens_are_deterministic_per_version_and_distinct_across_versions(secret):
    first = dict(RING.tokens(secret))
    again = dict(RING.tokens(secret))
    assert first == again
    assert set(first) == {1, 2}
    assert first[1] != first[2]
    assert all(len(t) == 32 for t in first.values())


@given(secrets_, secrets_)
def test_distinct_secrets_give_distinct_tokens(a, b):
    if a != b:
        assert RING.primary.token(a) != RING.primary.token(b)


def test_derive_is_hkdf_expand():
    master = bytes(range(32))
    expected = HKDFExpand(hashes.SHA256(), 32, b"anoncard/card-token").derive(master)
    assert derive(master, "card-token") == expected
    assert derive(master, "card-token") != derive(master, "txn-ref")


def test_token_is_not_a_plain_hmac_under_the_master_key():
    import hashlib
    import hmac

    secret = cards.generate()
    v = RING.primary
    plain = hmac.new(v.material, secret.to_bytes(), hashlib.sha256).digest()
    assert v.token(secret) != plain


def test_references_are_stable_and_separated_by_kind():
    assert RING.reference("checkout", "t-1") == RING.reference("checkout", "t-1")
    assert RING.reference("checkout", "t-1") != RING.reference("refund", "t-1")
    assert RING.reference("checkout", "t-1") != RING.reference("checkout", "t-2")


def test_rotate_and_retire_states(tmp_path):
    ring = KeyRing.create("d0")
    assert [v.state for v in ring.versions] == [PRIMARY]
    with pytest.raises(KeyRingError, match="rotate first"):
        ring.oldest_verify_only()
    ring.rotate("d1")
    ring.rotate("d2")
    assert [v.state for v in ring.versions] == [VERIFY_ONLY, VERIFY_ONLY, PRIMARY]
    assert [v.version for v in ring.live()] == [3, 2, 1]
    ring.retire(ring.oldest_verify_only().version)
    assert [v.state for v in ring.versions] == [RETIRED, VERIFY_ONLY, PRIMARY]
    assert ring.versions[0].material is None
    with pytest.raises(KeyRingError, match="retired"):
        ring.versions[0].token(cards.generate())
    path = tmp_path / "ring.json"
    ring.save(path)
    loaded = KeyRing.load(path)
    assert [(v.version, v.state, v.material) for v in loaded.versions] == [
        (v.version, v.state, v.material) for v in ring.versions
    ]
    assert '"material": null' in path.read_text()


def test_file_is_written_0600(tmp_path):
    path = tmp_path / "ring.json"
    RING.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_world_readable_file_is_refused(tmp_path, mode):
    path = tmp_path / "ring.json"
    RING.save(path)
    os.chmod(path, mode)
    with pytest.raises(KeyRingError, match="chmod 600") as info:
        KeyRing.load(path)
    assert f"{mode:04o}" in str(info.value)
    # the message never carries key material
    for v in RING.versions:
        assert v.material.hex() not in str(info.value)


@pytest.mark.parametrize(
    "text, rule",
    [
        ("not json", "not a valid key ring"),
        ('{"format": "other"}', "unknown format"),
        ('{"format": "anoncard-keyring/1", "reference_key": "AAAA", "keys": []}', "not a valid key ring"),
        (
            '{"format": "anoncard-keyring/1", "reference_key": "AAAA", "keys": [],'
            ' "coupon_key": {"id": 1, "ed25519_seed": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}',
            "reference key",
        ),
    ],
)
def test_malformed_file_is_refused(tmp_path, text, rule):
    path = tmp_path / "ring.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, text.encode())
    os.close(fd)
    with pytest.raises(KeyRingError, match=rule):
        KeyRing.load(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(KeyRingError, match="anoncard init"):
        KeyRing.load(tmp_path / "nope.json")


def test_repr_shows_no_material():
    text = repr(RING) + repr(RING.versions)
    for v in RING.versions:
        assert v.material.hex() not in text
        assert repr(v.material) not in text


def test_a_failed_save_leaves_the_old_file_whole_and_no_copy(tmp_path, monkeypatch):
    path = tmp_path / "ring.json"
    RING.save(path)
    before = path.read_bytes()
    ring = KeyRing.load(path)
    ring.rotate("2015-03-15")
    for target in ("fsync", "replace"):
        with monkeypatch.context() as m:

            def fail(*_a, **_k):
                raise OSError("disk full")

            m.setattr(os, target, fail)
            with pytest.raises(OutputError, match="key ring"):  # a clean error, not a traceback
                ring.save(path)
        assert path.read_bytes() == before, target
        assert KeyRing.load(path).primary.material == RING.primary.material
        assert not list(tmp_path.glob(".*.tmp")), target


def test_a_save_removes_copies_left_by_an_interrupted_save(tmp_path):
    path = tmp_path / "ring.json"
    RING.save(path)
    old = tmp_path / ".ring.json.dead0001.tmp"  # a save killed before its rename, long ago
    old.write_text(RING.to_json())
    os.utime(old, (path.stat().st_mtime - 3600,) * 2)
    fresh = tmp_path / ".ring.json.live0002.tmp"  # perhaps another process saving right now
    fresh.write_text(RING.to_json())
    assert stale_copies(path) == [old, fresh]
    RING.save(path)
    assert stale_copies(path) == [fresh]
