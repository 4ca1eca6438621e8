"""Device certificates, revocations and the roster: who belongs to a swarm. Pure: no I/O, no clock.

A device belongs to a swarm when it holds a chain of certificates, leaf first, that ends at the
swarm's root key. Rules of a valid chain (``verify_chain``):

- 1 to ``MAX_CHAIN`` certificates, every one naming the same swarm, no device twice;
- certificate i is signed by its ``issuer``, which is the device of certificate i+1 (whose public
  key is inside its peer id); the last one's issuer is ``"root"`` and it verifies with the root key;
- no device of the chain is revoked. Revoking a device therefore also cuts off every device it
  paired, and the devices those paired: they must be paired again, by a device still admitted.

A revocation is signed by a device that holds a stored chain (revoked or not) or by the root key.
Revocations are permanent: a revoked device id never comes back. A device may revoke itself (a
graceful "leave forever"), which also cuts off the devices it paired.

The roster is a grow-only CRDT: its state is the set of chains whose links and signatures verify
(kept, and accepted, even when a revocation cuts them off, so that the revocations their devices
signed stay checkable) and one revocation per revoked device (the least by ``(at, by,
signature)``, a deterministic choice). Merging is a union, so it is commutative, associative and
idempotent; what a device is admitted as is then a function of that state alone, never of arrival
order:

- admitted: some stored chain for the device contains no revoked device;
- its certificate: the admitted chain with the earliest leaf, then the shortest, then the least
  signatures (so any two replicas with the same state show the same name and age recipient).

A revocation whose signer's chain is not known yet is refused (``add_revocation`` raises,
``merge_wire`` skips it); merging a whole roster never hits this, since a roster holds the chain of
every revocation's signer, and fact-by-fact gossip relies on anti-entropy to deliver it again.

Consequence worth knowing: a revoked device can still sign revocations that count (a revocation's
validity cannot depend on revocation order without losing convergence). A stolen device can thus
revoke others until it is noticed, and after; only a fresh device key re-admits a victim.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from homeswarm.transports import (
    InvalidArgument,
    ProtocolViolation,
    peer_id_from_public_key,
    public_key_from_peer_id,
)
from homeswarm.vocabulary import ROLES

from ._config import _device_name

VERSION = 1
ROOT = "root"
MAX_CHAIN = 16
CERT_TAG = b"swarm-cert"
REVOKE_TAG = b"swarm-revoke"
_SWARM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_AGE = re.compile(r"^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$")  # bech32 X25519 recipient
_MAX_PEER_ID = 64


class InvalidCertificate(ProtocolViolation):
    """A certificate, chain, revocation or roster from a peer is malformed or does not verify."""


def short(device: str) -> str:
    return device if device == ROOT else device[-8:]


def is_device_id(text: object) -> bool:
    """A canonical Ed25519 peer id (the only spelling, so string equality is key equality)."""
    if not isinstance(text, str) or len(text) > _MAX_PEER_ID:
        return False
    try:
        return peer_id_from_public_key(public_key_from_peer_id(text)) == text
    except InvalidArgument:
        return False


def swarm_id_problem(swarm: object) -> str | None:
    if isinstance(swarm, str) and _SWARM.match(swarm):
        return None
    return "a swarm id is 1-64 letters, digits, '.', '_' or '-'"


def _signer_problem(key: Ed25519PrivateKey, signer: str) -> str | None:
    """Whether ``key`` is the key of ``signer`` (a device; the root cannot be checked here)."""
    if signer == ROOT:
        return None
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    if peer_id_from_public_key(public) != signer:
        return f"the signing key is not the key of {short(signer)}"
    return None


def _signature_ok(public_key_raw: bytes, signature: bytes, payload: bytes) -> bool:
    if not isinstance(public_key_raw, bytes) or len(public_key_raw) != 32:
        raise InvalidArgument("an Ed25519 public key is 32 raw bytes")
    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _time_ok(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _signature_problem(signature: object) -> str | None:
    if isinstance(signature, bytes) and len(signature) == 64:
        return None
    return "a signature is 64 bytes"


@dataclass(frozen=True, slots=True)
class Certificate:
    """``issuer`` vouches that ``device`` (a peer id) is a member of ``swarm``."""

    swarm: str
    device: str
    name: str
    role: str
    age: str
    issuer: str
    issued_at: float
    signature: bytes

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise InvalidArgument(f"certificate: {problem}")

    def _problem(self) -> str | None:
        if problem := swarm_id_problem(self.swarm):
            return problem
        if not is_device_id(self.device):
            return "device is not an Ed25519 peer id"
        if not isinstance(self.name, str) or not self.name or _device_name(self.name):
            return "name must be 1-64 letters, digits, '.', '_' or '-'"
        if self.role not in ROLES:
            return f"role must be one of {', '.join(ROLES)}"
        if not isinstance(self.age, str) or not _AGE.match(self.age):
            return "age must be an age X25519 recipient (age1...)"
        if self.issuer != ROOT and not is_device_id(self.issuer):
            return "issuer must be 'root' or an Ed25519 peer id"
        if self.issuer == self.device:
            return "a device cannot certify itself"
        if not _time_ok(self.issued_at):
            return "issued_at must be a finite float"
        return _signature_problem(self.signature)

    def payload(self) -> bytes:
        """The signed bytes: a domain tag, the version and every field but the signature."""
        return _pack(
            [
                CERT_TAG,
                VERSION,
                self.swarm,
                self.device,
                self.name,
                self.role,
                self.age,
                self.issuer,
                self.issued_at,
            ]
        )

    def to_wire(self) -> list[Any]:
        return [
            VERSION,
            self.swarm,
            self.device,
            self.name,
            self.role,
            self.age,
            self.issuer,
            self.issued_at,
            self.signature,
        ]

    @classmethod
    def from_wire(cls, obj: object) -> Certificate:
        if not isinstance(obj, list) or len(obj) != 9:
            raise InvalidCertificate("a certificate is a list of 9 items")
        if type(obj[0]) is not int or obj[0] != VERSION:
            raise InvalidCertificate(f"unsupported certificate version {obj[0]!r}")
        try:
            return cls(*obj[1:])
        except InvalidArgument as exc:
            raise InvalidCertificate(str(exc)) from None

    def verify(self, public_key_raw: bytes) -> bool:
        """Whether the signature is the holder of ``public_key_raw`` signing this payload."""
        return _signature_ok(public_key_raw, self.signature, self.payload())


def issue_certificate(
    signing_key: Ed25519PrivateKey,
    *,
    issuer: str,
    swarm: str,
    device: str,
    name: str,
    role: str,
    age: str,
    now: float,
) -> Certificate:
    """Sign a certificate for ``device``; ``signing_key`` is the root's or ``issuer``'s key."""
    if problem := _signer_problem(signing_key, issuer):
        raise InvalidArgument(f"certificate: {problem}")
    unsigned = Certificate(swarm, device, name, role, age, issuer, float(now), bytes(64))
    return dataclasses.replace(unsigned, signature=signing_key.sign(unsigned.payload()))


Chain = tuple[Certificate, ...]


def _check_links(chain: Chain, swarm: str) -> Certificate:
    """Every rule of a chain that needs no signature check and no revocation list."""
    if not isinstance(chain, tuple) or not chain:
        raise InvalidCertificate("a certificate chain is a non-empty tuple")
    if len(chain) > MAX_CHAIN:
        raise InvalidCertificate(f"a certificate chain holds at most {MAX_CHAIN} certificates")
    seen: set[str] = set()
    for i, cert in enumerate(chain):
        if not isinstance(cert, Certificate):
            raise InvalidCertificate("a certificate chain holds certificates")
        if cert.swarm != swarm:
            raise InvalidCertificate(f"certificate of {short(cert.device)} is for another swarm")
        if cert.device in seen:
            raise InvalidCertificate(f"device {short(cert.device)} appears twice in the chain")
        seen.add(cert.device)
        expected = chain[i + 1].device if i + 1 < len(chain) else ROOT
        if cert.issuer != expected:
            raise InvalidCertificate(
                f"certificate of {short(cert.device)} is issued by {short(cert.issuer)},"
                f" not by {short(expected)}"
            )
    return chain[0]


def _check_signatures(chain: Chain, root_public: bytes, verified: set[Certificate] | None) -> None:
    """Each certificate against its issuer's key. ``verified`` caches successes: a certificate is
    hashed whole, issuer included, so a cached entry vouches for exactly these bytes and this key.
    """
    for cert in chain:
        if verified is not None and cert in verified:
            continue
        key = root_public if cert.issuer == ROOT else public_key_from_peer_id(cert.issuer)
        if not cert.verify(key):
            raise InvalidCertificate(
                f"certificate of {short(cert.device)} has a bad signature by {short(cert.issuer)}"
            )
        if verified is not None:
            verified.add(cert)


def _revoked_in(chain: Chain, revoked: Collection[str]) -> str | None:
    return next((cert.device for cert in chain if cert.device in revoked), None)


def verify_chain(
    chain: Chain, *, swarm: str, root_public: bytes, revoked: Collection[str]
) -> Certificate:
    """The leaf of a valid chain (see the module rules); InvalidCertificate saying why not."""
    leaf = _check_links(chain, swarm)
    if (gone := _revoked_in(chain, revoked)) is not None:
        raise InvalidCertificate(f"device {short(gone)} is revoked")
    _check_signatures(chain, root_public, None)
    return leaf


def chain_from_wire(obj: object) -> Chain:
    if not isinstance(obj, list) or not 1 <= len(obj) <= MAX_CHAIN:
        raise InvalidCertificate(f"a certificate chain is a list of 1-{MAX_CHAIN} certificates")
    return tuple(Certificate.from_wire(item) for item in obj)


def chain_to_wire(chain: Chain) -> list[list[Any]]:
    return [cert.to_wire() for cert in chain]


@dataclass(frozen=True, slots=True)
class Revocation:
    """``by`` (a device, or the root) declares ``device`` no longer a member of ``swarm``."""

    swarm: str
    device: str
    by: str
    at: float
    signature: bytes

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise InvalidArgument(f"revocation: {problem}")

    def _problem(self) -> str | None:
        if problem := swarm_id_problem(self.swarm):
            return problem
        if not is_device_id(self.device):
            return "device is not an Ed25519 peer id"
        if self.by != ROOT and not is_device_id(self.by):
            return "by must be 'root' or an Ed25519 peer id"
        if not _time_ok(self.at):
            return "at must be a finite float"
        return _signature_problem(self.signature)

    def payload(self) -> bytes:
        return _pack([REVOKE_TAG, VERSION, self.swarm, self.device, self.by, self.at])

    def to_wire(self) -> list[Any]:
        return [VERSION, self.swarm, self.device, self.by, self.at, self.signature]

    @classmethod
    def from_wire(cls, obj: object) -> Revocation:
        if not isinstance(obj, list) or len(obj) != 6:
            raise InvalidCertificate("a revocation is a list of 6 items")
        if type(obj[0]) is not int or obj[0] != VERSION:
            raise InvalidCertificate(f"unsupported revocation version {obj[0]!r}")
        try:
            return cls(*obj[1:])
        except InvalidArgument as exc:
            raise InvalidCertificate(str(exc)) from None

    def verify(self, public_key_raw: bytes) -> bool:
        return _signature_ok(public_key_raw, self.signature, self.payload())

    def _order(self) -> tuple[float, str, bytes]:
        return (self.at, self.by, self.signature)


def revoke(
    signing_key: Ed25519PrivateKey, *, by: str, swarm: str, device: str, now: float
) -> Revocation:
    """Sign the revocation of ``device``; ``signing_key`` is ``by``'s key (or the root's)."""
    if problem := _signer_problem(signing_key, by):
        raise InvalidArgument(f"revocation: {problem}")
    unsigned = Revocation(swarm, device, by, float(now), bytes(64))
    return dataclasses.replace(unsigned, signature=signing_key.sign(unsigned.payload()))


def _chain_order(chain: Chain) -> tuple[float, int, tuple[bytes, ...]]:
    return (chain[0].issued_at, len(chain), tuple(cert.signature for cert in chain))


class Roster:
    """The members of one swarm that this device knows of; see the module docstring."""

    def __init__(self, swarm: str, root_public: bytes) -> None:
        if problem := swarm_id_problem(swarm):
            raise InvalidArgument(f"roster: {problem}")
        if not isinstance(root_public, bytes) or len(root_public) != 32:
            raise InvalidArgument("roster: the root public key is 32 raw bytes")
        self.swarm = swarm
        self.root_public = root_public
        self._chains: dict[str, set[Chain]] = {}  # leaf device -> every verified chain
        self._revocations: dict[str, Revocation] = {}  # revoked device -> its revocation
        self._admitted: dict[str, Chain] = {}  # derived: admitted device -> its chosen chain
        self._verified: set[Certificate] = set()  # certificates whose signature checked out

    def copy(self) -> Roster:
        """A roster with the same content that changes on its own (nothing is verified again: the
        copies share the cache of certificates whose signatures checked out)."""
        new = Roster(self.swarm, self.root_public)
        new._chains = {device: set(chains) for device, chains in self._chains.items()}
        new._revocations = dict(self._revocations)
        new._admitted = dict(self._admitted)
        new._verified = self._verified
        return new

    # -- queries --------------------------------------------------------------------------

    def admits(self, device: str) -> bool:
        return device in self._admitted

    def certificate(self, device: str) -> Certificate | None:
        chain = self._admitted.get(device)
        return chain[0] if chain else None

    def chain(self, device: str) -> Chain | None:
        return self._admitted.get(device)

    def members(self) -> list[Certificate]:
        leaves = (chain[0] for chain in self._admitted.values())
        return sorted(leaves, key=lambda cert: (cert.name, cert.device))

    def revoked(self) -> frozenset[str]:
        """The devices revoked by name; ``admits`` also refuses the devices they paired."""
        return frozenset(self._revocations)

    def find(self, name_or_id: str) -> Certificate | None:
        """An admitted member by peer id or by name; InvalidArgument if the name is ambiguous."""
        if (cert := self.certificate(name_or_id)) is not None:
            return cert
        named = [cert for cert in self.members() if cert.name == name_or_id]
        if len(named) > 1:
            ids = ", ".join(cert.device for cert in named)
            raise InvalidArgument(
                f"{len(named)} devices are named {name_or_id!r}: give an id ({ids})"
            )
        return named[0] if named else None

    # -- updates --------------------------------------------------------------------------

    def add_chain(self, chain: Chain) -> bool:
        """Verify a chain and store it; True if it was not stored yet. InvalidCertificate if its
        links or signatures are wrong.

        A chain cut off by a revocation is valid, and stored (so that the revocations its device
        signed can be checked, whatever the order facts arrive in), but admits nobody: decide
        admission with ``admits``, never with this method's result.
        """
        _check_links(chain, self.swarm)
        if not self._store_chain(chain):
            return False  # verified and stored before: a dictionary lookup
        if _revoked_in(chain, self._revocations) is None:
            self._admit(chain)
        return True

    def add_revocation(self, rev: Revocation) -> bool:
        """Verify and store a revocation; True if it revokes a device not revoked before."""
        if not isinstance(rev, Revocation):
            raise InvalidCertificate("not a revocation")
        if not self._put_revocation(rev):
            return False
        self._recompute()
        return True

    # -- wire -----------------------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """Every stored chain and revocation, in a canonical order (same state, same bytes)."""
        chains = sorted((c for cs in self._chains.values() for c in cs), key=_chain_signatures)
        revocations = sorted(self._revocations.values(), key=lambda rev: rev.device)
        return {
            "v": VERSION,
            "swarm": self.swarm,
            "root": self.root_public,
            "chains": [chain_to_wire(chain) for chain in chains],
            "revocations": [rev.to_wire() for rev in revocations],
        }

    @classmethod
    def from_wire(cls, obj: object) -> Roster:
        """A roster from its wire form; every entry must verify, else InvalidCertificate."""
        swarm, root, chains, revocations = _roster_shape(obj)
        try:
            roster = cls(swarm, root)
        except InvalidArgument as exc:
            raise InvalidCertificate(str(exc)) from None
        roster._merge(chains, revocations, strict=True)
        return roster

    def merge_wire(self, obj: object) -> list[str]:
        """Merge another replica's state; the devices whose admission changed or that became
        revoked, sorted. Invalid entries are skipped; a roster of another swarm or root raises
        InvalidCertificate.
        """
        swarm, root, chains, revocations = _roster_shape(obj)
        if swarm != self.swarm or root != self.root_public:
            raise InvalidCertificate("the roster is of another swarm")
        return self._merge(chains, revocations, strict=False)

    def encode(self) -> bytes:
        return _pack(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> Roster:
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises a zoo of types on garbage
            raise InvalidCertificate(f"undecodable roster: {type(exc).__name__}") from None
        return cls.from_wire(obj)

    # -- internals ------------------------------------------------------------------------

    def _merge(self, chains: list[Any], revocations: list[Any], *, strict: bool) -> list[str]:
        # Chains first: they are stored whether revoked or not, and a revocation needs its
        # signer's chain. The resulting state is the union whatever the order of arrival.
        admitted, revoked = set(self._admitted), set(self._revocations)
        for item in chains:
            try:
                chain = chain_from_wire(item)
                _check_links(chain, self.swarm)
                self._store_chain(chain)
            except InvalidCertificate:
                if strict:
                    raise
        for item in revocations:
            try:
                self._put_revocation(Revocation.from_wire(item))
            except InvalidCertificate:
                if strict:
                    raise
        self._recompute()
        changed = (admitted ^ set(self._admitted)) | (set(self._revocations) - revoked)
        return sorted(changed)

    def _store_chain(self, chain: Chain) -> bool:
        """Check the signatures of a linked chain and store it; False if it was stored already."""
        if chain in self._chains.get(chain[0].device, ()):
            return False
        _check_signatures(chain, self.root_public, self._verified)
        self._chains.setdefault(chain[0].device, set()).add(chain)
        return True

    def _put_revocation(self, rev: Revocation) -> bool:
        """Check and store a revocation; True if its device was not revoked before."""
        known = self._revocations.get(rev.device)
        if known == rev:
            return False
        self._check_revocation(rev)
        if known is None or rev._order() < known._order():
            self._revocations[rev.device] = rev  # the least: the same choice on every replica
        return known is None

    def _check_revocation(self, rev: Revocation) -> None:
        if rev.swarm != self.swarm:
            raise InvalidCertificate(f"revocation of {short(rev.device)} is for another swarm")
        if rev.by == ROOT:
            key = self.root_public
        elif self._chains.get(rev.by):
            key = public_key_from_peer_id(rev.by)
        else:
            raise InvalidCertificate(
                f"revocation of {short(rev.device)} is by {short(rev.by)}, not a known member"
            )
        if not rev.verify(key):
            raise InvalidCertificate(f"revocation of {short(rev.device)} has a bad signature")

    def _admit(self, chain: Chain) -> None:
        current = self._admitted.get(chain[0].device)
        if current is None or _chain_order(chain) < _chain_order(current):
            self._admitted[chain[0].device] = chain

    def _recompute(self) -> None:
        self._admitted = {}
        for chains in self._chains.values():
            for chain in chains:
                if _revoked_in(chain, self._revocations) is None:
                    self._admit(chain)


def _chain_signatures(chain: Chain) -> tuple[bytes, ...]:
    return tuple(cert.signature for cert in chain)


def _roster_shape(obj: object) -> tuple[Any, Any, list[Any], list[Any]]:
    if not isinstance(obj, dict) or set(obj) != {"v", "swarm", "root", "chains", "revocations"}:
        raise InvalidCertificate("a roster is a map of v, swarm, root, chains and revocations")
    if type(obj["v"]) is not int or obj["v"] != VERSION:
        raise InvalidCertificate(f"unsupported roster version {obj['v']!r}")
    chains, revocations = obj["chains"], obj["revocations"]
    if not isinstance(chains, list) or not isinstance(revocations, list):
        raise InvalidCertificate("a roster's chains and revocations are lists")
    return obj["swarm"], obj["root"], chains, revocations
