"""The vault's records: frozen, validated, versioned value types, the only things msgpack sees.

Four kinds travel between peers and sit in storage, each signed (Ed25519) by its author over a
domain-separated canonical encoding (``payload``: a tag, the version, the swarm id and every
field but the signature, packed with msgpack), so anyone can check them, also a device that may
not read them:

- ``Update``: one change (or one group commit's changes) to one scope's document, the ``seq``-th
  of its ``origin`` log, age-encrypted to the scope's epoch ``(number, creator)``. An origin is a
  *stream*: ``DEVICE/INCARNATION``, one vault store of the device (``INCARNATION``: 16 hex digits
  drawn when the store was created, or when it found it had lost continuity), so that a wiped or
  restored store never writes under sequence numbers it used before. A bare ``DEVICE`` is the
  stream of a store made before incarnations existed. The device signs.
- ``Snapshot``: a scope's whole document as ``author`` had it, age-encrypted to an epoch, and the
  version vector it covers (origin -> highest sequence folded in). It replaces those updates.
- ``Epoch``: a scope's key epoch ``(number, creator)``: the age recipient to encrypt to, and the
  devices known revoked when it was made (``excluded``: it is never sealed to them). Its creator
  is a stream too (the device signs), so that a wiped store never makes an epoch under the key of
  one it made before.
- ``Seal``: an epoch's secret, age-encrypted to one ``device``'s own age identity by ``sealer``.

``from_wire`` checks shape, types and sizes (each record's ``_WIRE``, a ``homeswarm.wire`` schema)
and raises ``RejectedRecord``; it checks no signature
(``Verifier`` does) and nothing that needs other records (the replica does).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from homeswarm.errors import InvalidArgument
from homeswarm.ids import is_peer_id, public_key_from_peer_id, short
from homeswarm.wire import Field, Schema, pack

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
_INCARNATION = re.compile(r"^[0-9a-f]{16}$")
MAX_STREAM = 64 + 1 + 16
_AGE = re.compile(r"^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$")

UPDATE_TAG = b"swarm-vault-update"
SNAPSHOT_TAG = b"swarm-vault-snapshot"
EPOCH_TAG = b"swarm-vault-epoch"
SEAL_TAG = b"swarm-vault-seal"

EpochKey = tuple[str, int, str]  # (scope, number, creator)


@functools.lru_cache(maxsize=8192)
def _device_ok(device: object) -> bool:
    return isinstance(device, str) and len(device) <= 64 and is_peer_id(device)


def stream_device(stream: str) -> str:
    """The device that writes a stream (``DEVICE/INCARNATION``, or a bare ``DEVICE``)."""
    return stream.split("/", 1)[0]


def make_stream(device: str, incarnation: str) -> str:
    return f"{device}/{incarnation}"


@functools.lru_cache(maxsize=8192)
def stream_ok(stream: object) -> bool:
    if not isinstance(stream, str) or len(stream) > MAX_STREAM:
        return False
    device, slash, incarnation = stream.partition("/")
    if not slash:
        return _device_ok(device)
    return _device_ok(device) and bool(_INCARNATION.match(incarnation))


def incarnation_ok(value: object) -> bool:
    return isinstance(value, str) and bool(_INCARNATION.match(value))


# ---- the fields of records from the wire (one checker: ``homeswarm.wire``) --------------------


def _sorted_once(values: list[Any]) -> bool:
    return values == sorted(set(values))


def _covered(pair: list[Any]) -> bool:
    return stream_ok(pair[0]) and type(pair[1]) is int and 1 <= pair[1] <= MAX_SEQ


def _device(name: str) -> Field:
    return Field(name, str, valid=_device_ok, says=f"{name} is not a device id")


def _stream(name: str, what: str) -> Field:
    return Field(name, str, valid=stream_ok, says=f"{what} is not a device's stream")


def _number(name: str, most: int) -> Field:
    return Field(name, int, least=1, most=most)


_SWARM = Field("swarm", str, least=1, most=_MAX_SWARM)
_SCOPE = Field("scope", str, valid=SCOPES.__contains__, says="unknown scope")
_SIGNATURE = Field("signature", bytes, least=64, most=64)
_COVERS = Field(
    "covers",
    list,
    least=1,
    most=MAX_ORIGINS,
    items=Field("covers", list, least=2, most=2, valid=_covered, says="covers is [origin, seq]"),
    valid=lambda pairs: _sorted_once([p[0] for p in pairs]),
    says="covers must be sorted by origin, each once",
)
_RECIPIENT = Field(
    "recipient",
    str,
    valid=lambda v: _AGE.match(v) is not None,
    says="the recipient is not an age X25519 recipient",
)
_EXCLUDED = Field(
    "excluded",
    list,
    most=MAX_EXCLUDED,
    items=_device("an excluded device"),
    valid=_sorted_once,
    says="excluded must be sorted, each once",
)


def _record(kind: str, *fields: Field) -> Schema:
    """A record's wire form: ``[VERSION, *fields]``; a bad one is refused, ``RejectedRecord``."""
    version = Field("version", int, equals=VERSION)
    return Schema(kind, version, *fields, positional=True, error=RejectedRecord)


def _frozen(value: object) -> object:
    """Lists as tuples: the inverse of ``_plain``."""
    return tuple(map(_frozen, value)) if type(value) is list else value


def _plain(value: object) -> object:
    """Tuples as lists (msgpack gives lists back), so that ``from_wire(to_wire())`` round-trips."""
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


class _Signed:
    """What the records share. A record is a frozen dataclass of what it carries, then its
    ``signature``. On the wire it is ``[VERSION, *fields]``; it signs ``payload``: ``[_TAG,
    VERSION, *fields but the signature]``. ``_WIRE`` checks each field from the wire, in order
    (so the first problem of a record with several is the one reported)."""

    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]]  # set by @dataclass: the field names, in order
    _TAG: ClassVar[bytes]
    _SIGNER: ClassVar[str]  # the field naming the device that signs it
    _WIRE: ClassVar[Schema]
    signature: bytes

    @property
    def signer(self) -> str:
        signer: str = getattr(self, self._SIGNER)
        return signer

    def payload(self) -> bytes:
        return pack([self._TAG, *self.to_wire()[:-1]])

    def to_wire(self) -> list[Any]:
        return [VERSION, *[_plain(getattr(self, name)) for name in self.__match_args__]]

    @classmethod
    def from_wire(cls, obj: object) -> Self:
        fields = cls._WIRE.check(obj)
        return cls(**{n: _frozen(fields[n]) for n in cls.__match_args__})


class _Kept(_Signed):
    """A record kept and asked for by ``id`` (all but updates: they go by origin and seq)."""

    @functools.cached_property
    def id(self) -> bytes:
        return hashlib.sha256(self.payload() + self.signature).digest()[:16]


@dataclass(frozen=True, slots=True)
class Update(_Signed):
    swarm: str
    scope: str
    origin: str
    seq: int
    epoch: int
    creator: str  # the epoch's creator
    ciphertext: bytes
    signature: bytes

    _TAG = UPDATE_TAG
    _SIGNER = "origin"
    _WIRE = _record(
        "update",
        _SWARM,
        _SCOPE,
        _stream("origin", "origin"),
        _number("seq", MAX_SEQ),
        _number("epoch", MAX_EPOCH),
        _stream("creator", "epoch creator"),
        Field("ciphertext", bytes, most=MAX_UPDATE_BYTES),
        _SIGNATURE,
    )

    @property
    def signer(self) -> str:
        return stream_device(self.origin)

    @property
    def epoch_key(self) -> EpochKey:
        return (self.scope, self.epoch, self.creator)

    def size(self) -> int:
        return len(self.ciphertext) + 200

    def describe(self) -> str:
        return f"update {self.scope}/{short(self.origin)}#{self.seq}"


@dataclass(frozen=True)
class Snapshot(_Kept):
    swarm: str
    scope: str
    author: str
    epoch: int
    creator: str  # the epoch's creator
    covers: tuple[tuple[str, int], ...]  # sorted by origin
    ciphertext: bytes
    signature: bytes

    _TAG = SNAPSHOT_TAG
    _SIGNER = "author"
    _WIRE = _record(
        "snapshot",
        _SWARM,
        _SCOPE,
        _device("author"),
        _number("epoch", MAX_EPOCH),
        _stream("creator", "epoch creator"),
        _COVERS,
        Field("ciphertext", bytes, most=MAX_SNAPSHOT_BYTES),
        _SIGNATURE,
    )

    @property
    def epoch_key(self) -> EpochKey:
        return (self.scope, self.epoch, self.creator)

    @functools.cached_property
    def vector(self) -> dict[str, int]:
        return dict(self.covers)

    def size(self) -> int:
        return len(self.ciphertext) + 80 * len(self.covers) + 200

    def describe(self) -> str:
        return f"snapshot {self.scope} by {short(self.author)}"


@dataclass(frozen=True)
class Epoch(_Kept):
    swarm: str
    scope: str
    number: int
    creator: str
    recipient: str  # age1...
    excluded: tuple[str, ...]  # sorted
    signature: bytes

    _TAG = EPOCH_TAG
    _SIGNER = "creator"
    _WIRE = _record(
        "epoch",
        _SWARM,
        _SCOPE,
        _number("number", MAX_EPOCH),
        _stream("creator", "creator"),
        _RECIPIENT,
        _EXCLUDED,
        _SIGNATURE,
    )

    @property
    def signer(self) -> str:
        return stream_device(self.creator)

    @property
    def key(self) -> EpochKey:
        return (self.scope, self.number, self.creator)

    def describe(self) -> str:
        return f"epoch {self.scope}#{self.number}/{short(self.creator)}"


@dataclass(frozen=True)
class Seal(_Kept):
    swarm: str
    scope: str
    number: int
    creator: str
    device: str
    sealed: bytes
    sealer: str
    signature: bytes

    _TAG = SEAL_TAG
    _SIGNER = "sealer"
    _WIRE = _record(
        "seal",
        _SWARM,
        _SCOPE,
        _number("number", MAX_EPOCH),
        _stream("creator", "creator"),
        _device("device"),
        Field("sealed", bytes, most=MAX_SEALED_BYTES),
        _device("sealer"),
        _SIGNATURE,
    )

    @property
    def epoch_key(self) -> EpochKey:
        return (self.scope, self.number, self.creator)

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


_TAGGED = Schema(
    "a record",
    Field("kind", str, valid=_KINDS.__contains__, says="kind is not u, s, e or k"),
    Field("body"),
    positional=True,
    error=RejectedRecord,
)


def record_from_wire(obj: object) -> Record:
    """A tagged record from a peer, ``[kind, body]``; ``RejectedRecord`` if it is malformed."""
    fields = _TAGGED.check(obj)
    return _KINDS[fields["kind"]].from_wire(fields["body"])


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
