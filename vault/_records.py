"""The vault's records: frozen, validated, versioned value types, the only things msgpack sees.

Four kinds travel between peers and sit in storage, each signed (Ed25519) by its author over a
domain-separated canonical encoding (``payload``: a tag, the version, the swarm id and every
field but the signature, packed with msgpack), so anyone can check them, also a device that may
not read them:

- ``Update``: one change (or one group commit's changes) to one scope's document by ``origin``,
  its ``seq``-th, age-encrypted to the scope's epoch ``(number, creator)``.
- ``Snapshot``: a scope's whole document as ``author`` had it, age-encrypted to an epoch, and the
  version vector it covers (origin -> highest sequence folded in). It replaces those updates.
- ``Epoch``: a scope's key epoch ``(number, creator)``: the age recipient to encrypt to, and the
  devices known revoked when it was made (``excluded``: it is never sealed to them).
- ``Seal``: an epoch's secret, age-encrypted to one ``device``'s own age identity by ``sealer``.

``from_wire`` checks shape, types and sizes and raises ``RejectedRecord``; it checks no signature
(``Verifier`` does) and nothing that needs other records (the replica does).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from transports import InvalidArgument, is_peer_id, public_key_from_peer_id

from ._errors import RejectedRecord
from ._model import SCOPES

VERSION = 1
MAX_UPDATE_BYTES = 1024 * 1024  # one update's ciphertext
MAX_SNAPSHOT_BYTES = 3 * 1024 * 1024  # one snapshot's ciphertext: it must fit one message
MAX_SEALED_BYTES = 1024
MAX_ORIGINS = 4096  # devices a snapshot's vector may name
MAX_EXCLUDED = 4096
MAX_SEQ = 2**53
MAX_EPOCH = 2**31
_MAX_SWARM = 64
_AGE = re.compile(r"^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$")

UPDATE_TAG = b"swarm-vault-update"
SNAPSHOT_TAG = b"swarm-vault-snapshot"
EPOCH_TAG = b"swarm-vault-epoch"
SEAL_TAG = b"swarm-vault-seal"

EpochKey = tuple[str, int, str]  # (scope, number, creator)


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


@functools.lru_cache(maxsize=8192)
def _device_ok(device: object) -> bool:
    return isinstance(device, str) and len(device) <= 64 and is_peer_id(device)


def short(device: str) -> str:
    return device[-8:]


class _Check:
    """Collects the first problem of a record from the wire."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def fail(self, problem: str) -> RejectedRecord:
        return RejectedRecord(f"{self.kind}: {problem}")

    def shape(self, obj: object, size: int) -> list[Any]:
        if not isinstance(obj, list) or len(obj) != size:
            raise self.fail(f"expected a list of {size} items")
        if type(obj[0]) is not int or obj[0] != VERSION:
            raise self.fail(f"unsupported version {str(obj[0])[:10]!r}")
        return obj

    def swarm(self, value: object) -> str:
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_SWARM:
            raise self.fail("bad swarm id")
        return value

    def scope(self, value: object) -> str:
        if value not in SCOPES:
            raise self.fail(f"unknown scope {str(value)[:20]!r}")
        assert isinstance(value, str)
        return value

    def device(self, value: object, what: str) -> str:
        if not _device_ok(value):
            raise self.fail(f"{what} is not a device id")
        assert isinstance(value, str)
        return value

    def number(self, value: object, what: str, most: int) -> int:
        if type(value) is not int or not 1 <= value <= most:
            raise self.fail(f"{what} must be an integer from 1 to {most}")
        return value

    def blob(self, value: object, what: str, most: int) -> bytes:
        if not isinstance(value, bytes):
            raise self.fail(f"{what} must be bytes")
        if len(value) > most:
            raise self.fail(f"{what} is {len(value)} bytes, over the limit of {most}")
        return value

    def signature(self, value: object) -> bytes:
        if not isinstance(value, bytes) or len(value) != 64:
            raise self.fail("a signature is 64 bytes")
        return value


@dataclass(frozen=True, slots=True)
class Update:
    swarm: str
    scope: str
    origin: str
    seq: int
    epoch: int
    creator: str  # the epoch's creator
    ciphertext: bytes
    signature: bytes

    @property
    def epoch_key(self) -> EpochKey:
        return (self.scope, self.epoch, self.creator)

    @property
    def signer(self) -> str:
        return self.origin

    def payload(self) -> bytes:
        return pack(
            [
                UPDATE_TAG,
                VERSION,
                self.swarm,
                self.scope,
                self.origin,
                self.seq,
                self.epoch,
                self.creator,
                self.ciphertext,
            ]
        )

    def to_wire(self) -> list[Any]:
        return [
            VERSION,
            self.swarm,
            self.scope,
            self.origin,
            self.seq,
            self.epoch,
            self.creator,
            self.ciphertext,
            self.signature,
        ]

    @classmethod
    def from_wire(cls, obj: object) -> Update:
        c = _Check("update")
        w = c.shape(obj, 9)
        return cls(
            c.swarm(w[1]),
            c.scope(w[2]),
            c.device(w[3], "origin"),
            c.number(w[4], "seq", MAX_SEQ),
            c.number(w[5], "epoch", MAX_EPOCH),
            c.device(w[6], "epoch creator"),
            c.blob(w[7], "ciphertext", MAX_UPDATE_BYTES),
            c.signature(w[8]),
        )

    def size(self) -> int:
        return len(self.ciphertext) + 200

    def describe(self) -> str:
        return f"update {self.scope}/{short(self.origin)}#{self.seq}"


@dataclass(frozen=True)
class Snapshot:
    swarm: str
    scope: str
    author: str
    epoch: int
    creator: str  # the epoch's creator
    covers: tuple[tuple[str, int], ...]  # sorted by origin
    ciphertext: bytes
    signature: bytes

    @property
    def epoch_key(self) -> EpochKey:
        return (self.scope, self.epoch, self.creator)

    @property
    def signer(self) -> str:
        return self.author

    @functools.cached_property
    def vector(self) -> dict[str, int]:
        return dict(self.covers)

    @functools.cached_property
    def id(self) -> bytes:
        return hashlib.sha256(self.payload() + self.signature).digest()[:16]

    def payload(self) -> bytes:
        return pack(
            [
                SNAPSHOT_TAG,
                VERSION,
                self.swarm,
                self.scope,
                self.author,
                self.epoch,
                self.creator,
                [list(c) for c in self.covers],
                self.ciphertext,
            ]
        )

    def to_wire(self) -> list[Any]:
        return [
            VERSION,
            self.swarm,
            self.scope,
            self.author,
            self.epoch,
            self.creator,
            [list(c) for c in self.covers],
            self.ciphertext,
            self.signature,
        ]

    @classmethod
    def from_wire(cls, obj: object) -> Snapshot:
        c = _Check("snapshot")
        w = c.shape(obj, 9)
        covers = w[6]
        if not isinstance(covers, list) or not 0 < len(covers) <= MAX_ORIGINS:
            raise c.fail(f"covers is a list of 1 to {MAX_ORIGINS} [origin, seq]")
        pairs = []
        for item in covers:
            if not isinstance(item, list) or len(item) != 2:
                raise c.fail("covers is a list of [origin, seq]")
            pairs.append((c.device(item[0], "an origin"), c.number(item[1], "seq", MAX_SEQ)))
        if [p[0] for p in pairs] != sorted({p[0] for p in pairs}):
            raise c.fail("covers must be sorted by origin, each once")
        return cls(
            c.swarm(w[1]),
            c.scope(w[2]),
            c.device(w[3], "author"),
            c.number(w[4], "epoch", MAX_EPOCH),
            c.device(w[5], "epoch creator"),
            tuple(pairs),
            c.blob(w[7], "ciphertext", MAX_SNAPSHOT_BYTES),
            c.signature(w[8]),
        )

    def size(self) -> int:
        return len(self.ciphertext) + 80 * len(self.covers) + 200

    def describe(self) -> str:
        return f"snapshot {self.scope} by {short(self.author)}"


@dataclass(frozen=True)
class Epoch:
    swarm: str
    scope: str
    number: int
    creator: str
    recipient: str  # age1...
    excluded: tuple[str, ...]  # sorted
    signature: bytes

    @property
    def key(self) -> EpochKey:
        return (self.scope, self.number, self.creator)

    @property
    def signer(self) -> str:
        return self.creator

    @functools.cached_property
    def id(self) -> bytes:
        return hashlib.sha256(self.payload() + self.signature).digest()[:16]

    def payload(self) -> bytes:
        return pack(
            [
                EPOCH_TAG,
                VERSION,
                self.swarm,
                self.scope,
                self.number,
                self.creator,
                self.recipient,
                list(self.excluded),
            ]
        )

    def to_wire(self) -> list[Any]:
        return [
            VERSION,
            self.swarm,
            self.scope,
            self.number,
            self.creator,
            self.recipient,
            list(self.excluded),
            self.signature,
        ]

    @classmethod
    def from_wire(cls, obj: object) -> Epoch:
        c = _Check("epoch")
        w = c.shape(obj, 8)
        recipient = w[5]
        if not isinstance(recipient, str) or not _AGE.match(recipient):
            raise c.fail("the recipient is not an age X25519 recipient")
        excluded = w[6]
        if not isinstance(excluded, list) or len(excluded) > MAX_EXCLUDED:
            raise c.fail(f"excluded is a list of at most {MAX_EXCLUDED} devices")
        devices = [c.device(d, "an excluded device") for d in excluded]
        if devices != sorted(set(devices)):
            raise c.fail("excluded must be sorted, each once")
        return cls(
            c.swarm(w[1]),
            c.scope(w[2]),
            c.number(w[3], "number", MAX_EPOCH),
            c.device(w[4], "creator"),
            recipient,
            tuple(devices),
            c.signature(w[7]),
        )

    def describe(self) -> str:
        return f"epoch {self.scope}#{self.number}/{short(self.creator)}"


@dataclass(frozen=True)
class Seal:
    swarm: str
    scope: str
    number: int
    creator: str
    device: str
    sealed: bytes
    sealer: str
    signature: bytes

    @property
    def epoch_key(self) -> EpochKey:
        return (self.scope, self.number, self.creator)

    @property
    def signer(self) -> str:
        return self.sealer

    @functools.cached_property
    def id(self) -> bytes:
        return hashlib.sha256(self.payload() + self.signature).digest()[:16]

    def payload(self) -> bytes:
        return pack(
            [
                SEAL_TAG,
                VERSION,
                self.swarm,
                self.scope,
                self.number,
                self.creator,
                self.device,
                self.sealed,
                self.sealer,
            ]
        )

    def to_wire(self) -> list[Any]:
        return [
            VERSION,
            self.swarm,
            self.scope,
            self.number,
            self.creator,
            self.device,
            self.sealed,
            self.sealer,
            self.signature,
        ]

    @classmethod
    def from_wire(cls, obj: object) -> Seal:
        c = _Check("seal")
        w = c.shape(obj, 9)
        return cls(
            c.swarm(w[1]),
            c.scope(w[2]),
            c.number(w[3], "number", MAX_EPOCH),
            c.device(w[4], "creator"),
            c.device(w[5], "device"),
            c.blob(w[6], "sealed secret", MAX_SEALED_BYTES),
            c.device(w[7], "sealer"),
            c.signature(w[8]),
        )

    def describe(self) -> str:
        return f"seal {self.scope}#{self.number}/{short(self.creator)} for {short(self.device)}"


Record = Update | Snapshot | Epoch | Seal
KeyRecord = Epoch | Seal

_KINDS: dict[str, type[Update] | type[Snapshot] | type[Epoch] | type[Seal]] = {
    "u": Update,
    "s": Snapshot,
    "e": Epoch,
    "k": Seal,
}
_TAGS = {cls: tag for tag, cls in _KINDS.items()}


def record_to_wire(record: Record) -> list[Any]:
    return [_TAGS[type(record)], record.to_wire()]


def record_from_wire(obj: object) -> Record:
    """A tagged record from a peer; ``RejectedRecord`` if it is malformed."""
    if not isinstance(obj, list) or len(obj) != 2 or obj[0] not in _KINDS:
        raise RejectedRecord("a record is [kind, body] with kind u, s, e or k")
    return _KINDS[obj[0]].from_wire(obj[1])


def encode_record(record: Record) -> bytes:
    return pack(record_to_wire(record))


def decode_record(data: bytes) -> Record:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise RejectedRecord(f"undecodable record ({type(exc).__name__})") from None
    return record_from_wire(obj)


def sign(key: Ed25519PrivateKey, payload: bytes) -> bytes:
    return key.sign(payload)


class Verifier:
    """Checks a record's signature with the key inside its signer's device id (cached)."""

    def __init__(self) -> None:
        self._keys: dict[str, Ed25519PublicKey | None] = {}

    def check(self, record: Record) -> bool:
        signer = record.signer
        if signer not in self._keys:
            if len(self._keys) >= 4096:
                self._keys.clear()
            try:
                raw = public_key_from_peer_id(signer)
                self._keys[signer] = Ed25519PublicKey.from_public_bytes(raw)
            except (InvalidArgument, ValueError):
                self._keys[signer] = None
        public = self._keys[signer]
        if public is None:
            return False
        try:
            public.verify(record.signature, record.payload())
        except InvalidSignature:
            return False
        return True
