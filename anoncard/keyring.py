"""The key ring: versioned secret keys kept outside the database.

Design overview. Each key *version* holds 32 random bytes of master material and a
state, in the spirit of Tink's key sets:

* ``primary``     - the one version new tokens are made under;
* ``verify-only`` - an older version whose tokens are still recognised; a card seen
  under it is re-linked to the primary version by the service;
* ``retired``     - the material is destroyed; tokens under it can never again be
  linked to a card, and the store purges what they held.

No master key is used directly: every purpose gets its own sub-key, derived with
HKDF-Expand (RFC 5869, SHA-256) under the label ``anoncard/<purpose>``, and every
MAC input starts with that label as well. So a card token can never collide with a
MAC made for another job.

An Ed25519 *coupon key* signs coupons; terminals verify them with its public half.
Beside the versions the ring holds one *reference key* that never rotates: it turns
till document numbers (which name store and till) into opaque references, so the
database keeps no store-level movement profile while retries still match; a second
sub-key of it chains the event log, so whoever can write the database alone cannot
rewrite its history; a third binds coupons to the card they were issued to; a fourth
turns the id printed on a coupon into the keyed digest the database stores (and a
fifth seals the id for a reprint), so a coupon slip alone finds no row; a sixth turns
terminals' bearer keys into the digests the database keeps; a seventh turns the recovery
code printed on a card's stub into the digest the database keeps (it never rotates, so a
stub stays valid across key rotations); an eighth draws a card's coupon arm (targeted,
random-category or holdout) from its token and the campaign period, and the random arm's
categories, so the draw is fixed, unpredictable without the ring and the same for the
insights release that reads only tokens.

The file is JSON, written atomically (temporary file, fsync, rename, fsync of the
directory) with mode 0600, and refused when group or others may read it.

The file holds the material; the database is the authority on the states. A process
uses :meth:`KeyRing.with_states` to see the ring as the database's states say (a
version the file has but the database does not yet know is a rotation in progress and
is not used; a version the database knows but the file lacks means the file is older
than the database, and is refused). Key operations change the file and the database
under :func:`key_lock`, one process at a time.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import files
from .cards import CardSecret
from .errors import KeyRingBehind, KeyRingError
from .recovery import RecoveryCode

FORMAT = "anoncard-keyring/1"
PRIMARY, VERIFY_ONLY, RETIRED = "primary", "verify-only", "retired"
STATES = (PRIMARY, VERIFY_ONLY, RETIRED)
CARD_TOKEN = "card-token"
TXN_REF = "txn-ref"
EVENT_LOG = "event-log"
COUPON_BINDING = "coupon-binding"
COUPON_ID = "coupon-id"
COUPON_SEAL = "coupon-id-seal"
TERMINAL_KEY = "terminal-key"
RECOVERY_CODE = "recovery-code"
COUPON_ARM = "coupon-arm"


def derive(master: bytes, purpose: str) -> bytes:
    """HKDF-Expand(PRK=master, info="anoncard/<purpose>", L=32): one sub-key per purpose."""
    info = f"anoncard/{purpose}".encode()
    return hmac.new(master, info + b"\x01", hashlib.sha256).digest()


@dataclass(slots=True)
class KeyVersion:
    """One version of the ring. ``material`` is ``None`` once retired."""

    version: int
    state: str
    created: str
    material: bytes | None = field(default=None, repr=False)
    _token_mac: object = field(default=None, repr=False, compare=False)

    def token(self, secret: CardSecret) -> bytes:
        """HMAC-SHA256 of the card secret under this version's card-token sub-key."""
        if self.material is None:
            raise KeyRingError(f"key version {self.version} is retired; its material is destroyed")
        if self._token_mac is None:
            key = derive(self.material, CARD_TOKEN)
            self._token_mac = hmac.new(key, f"anoncard/{CARD_TOKEN}\x00".encode(), hashlib.sha256)
        mac = self._token_mac.copy()
        mac.update(secret.to_bytes())
        return mac.digest()


STALE_COPY_AGE_S = 60.0


def stale_copies(path: Path) -> list[Path]:
    """Temporary copies of the ring file ``path`` that an interrupted save left beside it."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


@contextmanager
def key_lock(path: Path | None) -> Iterator[None]:
    """Hold the exclusive lock of the ring file ``path`` (a ``.lock`` file beside it, owner-only)
    while a key operation changes the file and the database; waits for another process holding it.
    ``None`` (a ring that lives in memory only) needs no lock."""
    if path is None:
        yield
        return
    path = Path(path)
    fd = os.open(path.with_name(f"{path.name}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class KeyRing:
    """Versioned keys with states; see the module docstring for the model."""

    def __init__(
        self, versions: list[KeyVersion], reference_key: bytes, coupon_key: bytes, coupon_key_id: int = 1
    ) -> None:
        if len(reference_key) != 32:
            raise KeyRingError("key ring: the reference key must be 32 bytes")
        if len(coupon_key) != 32 or not 0 < coupon_key_id < 256:
            raise KeyRingError("key ring: the coupon signing key must be a 32-byte Ed25519 seed with an id of 1-255")
        self._coupon_seed, self.coupon_key_id = coupon_key, coupon_key_id
        self._coupon_private = None
        self.versions = sorted(versions, key=lambda v: v.version)
        primaries = [v for v in self.versions if v.state == PRIMARY]
        if len(primaries) != 1:
            raise KeyRingError(f"key ring: exactly one primary key is required, found {len(primaries)}")
        for v in self.versions:
            if v.state not in STATES:
                raise KeyRingError(f"key ring: version {v.version} has unknown state {v.state!r}")
            if (v.material is None) != (v.state == RETIRED):
                raise KeyRingError(f"key ring: version {v.version} is {v.state} but its material does not match")
            if v.material is not None and len(v.material) != 32:
                raise KeyRingError(f"key ring: version {v.version} material must be 32 bytes")
        self._ref_mac = hmac.new(derive(reference_key, TXN_REF), f"anoncard/{TXN_REF}\x00".encode(), hashlib.sha256)
        self._reference_key = reference_key
        self._log_key = derive(reference_key, EVENT_LOG)
        self._binding_mac = hmac.new(
            derive(reference_key, COUPON_BINDING), f"anoncard/{COUPON_BINDING}\x00".encode(), hashlib.sha256
        )
        self._coupon_id_mac = hmac.new(
            derive(reference_key, COUPON_ID), f"anoncard/{COUPON_ID}\x00".encode(), hashlib.sha256
        )
        self._coupon_seal_mac = hmac.new(
            derive(reference_key, COUPON_SEAL), f"anoncard/{COUPON_SEAL}\x00".encode(), hashlib.sha256
        )
        self._terminal_mac = hmac.new(
            derive(reference_key, TERMINAL_KEY), f"anoncard/{TERMINAL_KEY}\x00".encode(), hashlib.sha256
        )
        self._recovery_mac = hmac.new(
            derive(reference_key, RECOVERY_CODE), f"anoncard/{RECOVERY_CODE}\x00".encode(), hashlib.sha256
        )
        self._arm_mac = hmac.new(
            derive(reference_key, COUPON_ARM), f"anoncard/{COUPON_ARM}\x00".encode(), hashlib.sha256
        )

    def __repr__(self) -> str:
        return f"KeyRing(versions={[(v.version, v.state) for v in self.versions]})"

    @classmethod
    def create(cls, created: str) -> KeyRing:
        """A new ring with one primary version (1) and a fresh reference key."""
        return cls(
            [KeyVersion(1, PRIMARY, created, secrets.token_bytes(32))], secrets.token_bytes(32), secrets.token_bytes(32)
        )

    @property
    def primary(self) -> KeyVersion:
        return next(v for v in self.versions if v.state == PRIMARY)

    def live(self) -> list[KeyVersion]:
        """Primary first, then verify-only versions newest first."""
        others = [v for v in reversed(self.versions) if v.state == VERIFY_ONLY]
        return [self.primary, *others]

    def tokens(self, secret: CardSecret) -> list[tuple[int, bytes]]:
        """The card's token under every live version, primary first."""
        return [(v.version, v.token(secret)) for v in self.live()]

    def reference(self, kind: str, document: str) -> bytes:
        """Opaque, stable reference for a till document number of the given kind."""
        mac = self._ref_mac.copy()
        mac.update(kind.encode() + b"\x00" + document.encode())
        return mac.digest()[:16]

    def event_mac(self, previous: bytes, payload: bytes) -> bytes:
        """The event log's chain link: HMAC over the previous link and this event."""
        return hmac.new(
            self._log_key, f"anoncard/{EVENT_LOG}\x00".encode() + previous + payload, hashlib.sha256
        ).digest()

    def binding(self, secret: CardSecret, coupon_id: bytes) -> bytes:
        """Ties a coupon to the card it was issued to, without exposing the card's token."""
        mac = self._binding_mac.copy()
        mac.update(secret.to_bytes() + coupon_id)
        return mac.digest()[:8]

    def coupon_digest(self, coupon_id: bytes) -> bytes:
        """The keyed digest a coupon is stored under; the id printed on the slip is never stored."""
        mac = self._coupon_id_mac.copy()
        mac.update(coupon_id)
        return mac.digest()[:16]

    def _seal_pad(self, digest: bytes) -> bytes:
        mac = self._coupon_seal_mac.copy()
        mac.update(digest)
        return mac.digest()[: len(digest) // 2]

    def seal_coupon_id(self, coupon_id: bytes, digest: bytes) -> bytes:
        """The coupon id masked by a pad unique to its digest, so the entrance can reprint a
        held coupon; without the ring it is noise."""
        return bytes(a ^ b for a, b in zip(coupon_id, self._seal_pad(digest), strict=True))

    def unseal_coupon_id(self, sealed: bytes, digest: bytes) -> bytes:
        return self.seal_coupon_id(sealed, digest)

    def terminal_digest(self, key: bytes) -> bytes:
        """The keyed digest a terminal's bearer key is stored as (the key itself never is)."""
        mac = self._terminal_mac.copy()
        mac.update(key)
        return mac.digest()

    def arm_draw(self, token: bytes, context: bytes) -> int:
        """A keyed 64-bit draw from a card's token and a context (campaign period, day,
        category): the coupon arms' only source of chance, with no state."""
        mac = self._arm_mac.copy()
        mac.update(len(token).to_bytes(2, "big") + token + context)
        return int.from_bytes(mac.digest()[:8], "big")

    def recovery_digest(self, code: RecoveryCode) -> bytes:
        """The keyed digest a card's recovery code is stored as (the code itself never is)."""
        mac = self._recovery_mac.copy()
        mac.update(code.to_bytes())
        return mac.digest()

    def coupon_private_key(self):
        """The Ed25519 key that signs coupons (only the store server holds it)."""
        if self._coupon_private is None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            self._coupon_private = Ed25519PrivateKey.from_private_bytes(self._coupon_seed)
        return self._coupon_private

    def coupon_public_key(self):
        """The public key any terminal needs to verify coupons."""
        return self.coupon_private_key().public_key()

    def coupon_public_key_text(self) -> str:
        """The public key as base64 of its 32 raw bytes, for terminals."""
        from cryptography.hazmat.primitives import serialization

        raw = self.coupon_public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def rotate(self, created: str) -> KeyVersion:
        """Add a new primary; the old primary becomes verify-only. Returns the new version."""
        old = self.primary
        old.state = VERIFY_ONLY
        new = KeyVersion(self.versions[-1].version + 1, PRIMARY, created, secrets.token_bytes(32))
        self.versions.append(new)
        return new

    def oldest_verify_only(self) -> KeyVersion:
        """The version :meth:`retire` would destroy.

        Raises:
            KeyRingError: there is no verify-only version (rotate first).
        """
        for v in self.versions:
            if v.state == VERIFY_ONLY:
                return v
        raise KeyRingError("key ring: no verify-only key to retire (rotate first)")

    def retire(self, version: int) -> None:
        """Destroy the material of a verify-only version."""
        v = next((v for v in self.versions if v.version == version), None)
        if v is None or v.state != VERIFY_ONLY:
            raise KeyRingError(f"key ring: version {version} is not verify-only")
        v.state, v.material, v._token_mac = RETIRED, None, None

    # -- file ------------------------------------------------------------------

    def same_installation(self, other: KeyRing) -> bool:
        """Whether ``other`` is a later state of this ring (same reference and coupon keys)."""
        return hmac.compare_digest(self._reference_key, other._reference_key) and hmac.compare_digest(
            self._coupon_seed, other._coupon_seed
        )

    def with_states(self, states: dict[int, str]) -> KeyRing:
        """This ring as the database's key ``states`` say: only the versions it names, in its states.

        A version this ring holds as retired stays retired (its material is gone). A version
        the ring holds but ``states`` does not name is a rotation not yet recorded and is left
        out.

        Raises:
            KeyRingBehind: ``states`` names a version this ring lacks (a KeyRingError).
            KeyRingError: ``states`` leaves no usable primary.
        """
        by_version = {v.version: v for v in self.versions}
        missing = sorted(set(states) - set(by_version))
        if missing:
            raise KeyRingBehind(
                f"key ring: the database uses key version(s) {', '.join(f'v{m}' for m in missing)} that the key "
                "ring file lacks: the file is older than the database (another server rotated, or an old ring "
                "was restored); copy the newest key ring export (made with 'anoncard keys export') into the home"
            )
        versions = []
        for number, state in sorted(states.items()):
            v = by_version[number]
            if state not in STATES:
                raise KeyRingError(f"key ring: the database gives version {number} unknown state {state!r}")
            if v.material is None:
                state = RETIRED
            versions.append(KeyVersion(number, state, v.created, v.material if state != RETIRED else None))
        if sum(v.state == PRIMARY for v in versions) != 1:
            raise KeyRingError(
                "key ring: the database's primary key is retired in the key ring file; restore the database "
                "with 'anoncard restore' or the newest key ring export"
            )
        return KeyRing(versions, self._reference_key, self._coupon_seed, self.coupon_key_id)

    def to_json(self) -> str:
        def b64(b: bytes | None) -> str | None:
            return None if b is None else base64.b64encode(b).decode()

        doc = {
            "format": FORMAT,
            "reference_key": b64(self._reference_key),
            "coupon_key": {"id": self.coupon_key_id, "ed25519_seed": b64(self._coupon_seed)},
            "keys": [
                {"version": v.version, "state": v.state, "created": v.created, "material": b64(v.material)}
                for v in self.versions
            ],
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT:
                raise KeyRingError(f"key ring: unknown format {doc.get('format')!r}")
            # a retired version is unusable whatever the file says: material found beside
            # it is ignored here, destroyed at the next save, and reported by the audit
            versions = [
                KeyVersion(
                    int(k["version"]),
                    str(k["state"]),
                    str(k["created"]),
                    None
                    if k["material"] is None or k["state"] == RETIRED
                    else base64.b64decode(k["material"], validate=True),
                )
                for k in doc["keys"]
            ]
            ref = base64.b64decode(doc["reference_key"], validate=True)
            coupon = base64.b64decode(doc["coupon_key"]["ed25519_seed"], validate=True)
            coupon_id = int(doc["coupon_key"]["id"])
        except KeyRingError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise KeyRingError("key ring: file is not a valid key ring") from None
        return cls(versions, ref, coupon, coupon_id)

    def save(self, path: Path) -> None:
        """Write atomically with mode 0600: private temporary file, fsync, rename, fsync directory.

        Raises:
            KeyRingError: ``path`` is a link or not a regular file, or its directory is refused.
            OutputError: the file could not be written (the old one is unchanged).
        """
        path = Path(path)
        files.replace(path, self.to_json().encode("utf-8"), field="key ring", error=KeyRingError)
        self._remove_stale_copies(path)

    @staticmethod
    def _remove_stale_copies(path: Path, min_age_s: float = STALE_COPY_AGE_S) -> None:
        """Delete temporary copies left by a save that was killed before its rename: they hold key
        material, and a retirement must not leave an older copy of a retired key behind. Copies younger
        than ``min_age_s`` may belong to a save running right now in another process and are kept."""
        written = path.stat().st_mtime
        for stale in stale_copies(path):
            try:
                if written - stale.stat().st_mtime >= min_age_s:
                    stale.unlink()
            except FileNotFoundError:
                pass

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """Read a ring file.

        Raises:
            KeyRingError: missing, group/world accessible, or malformed.
        """
        path = Path(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise KeyRingError(f"key ring: {path} not found (run 'anoncard init')") from None
        except OSError as exc:
            raise KeyRingError(f"key ring: cannot read {path} ({exc.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise KeyRingError(f"key ring: {path} is not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyRingError(
                f"key ring: {path} has mode {stat.S_IMODE(st.st_mode):04o}; group and others must have "
                f"no access (run: chmod 600 {path})"
            )
        return cls.from_json(files.read_text(path, error=KeyRingError, what="key ring"))
