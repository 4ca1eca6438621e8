"""Device certificates, revocations and the roster: who belongs to a swarm, and with what
authority. Pure: no I/O, no clock.

A device belongs to a swarm when it holds a chain of certificates, leaf first, that ends at the
swarm's root key (``_check_links``, ``_check_signatures``): 1 to ``MAX_CHAIN`` certificates of one
swarm, no device twice, each signed by the device of the next, the last by the root. The leaf
says what the device may do, fixed by the admin that admitted it: its role, the data ``scopes``
it may read, whether it is a blind relay (``relay_only``: reads nothing) and whether it is an
``admin`` (may invite, grant and revoke). What a device gossips about itself is information,
never permission.

The roster is a grow-only set of signed facts (chains and revocations; merging is a union, so
it is commutative, associative and idempotent), and everything else is a deterministic function
of that set (``resolve``), never of arrival order, so replicas that hold the same facts agree.
Admission, in six rules (after Matrix cross-signing, where only a master key vouches and a
device cannot undo another, and Keybase sigchains, where a revocation is signed against what the
signer saw and a paper key recovers):

1. **Certificates count when their issuer is the root or an admin** (rule 2), dated no earlier
   than the issuer became one. A certificate signed by a non-admin admits nobody.
2. **Admins, in time order from the root.** A device whose admin certificate the root signed is
   an admin from that certificate's date (the device that ran ``swarm init``, and any device
   re-established with the recovery code). After that, a device becomes an admin at the first
   date ``t`` at which a strict majority of the admins of time ``t`` (the root's by then, and
   those made admins before ``t``) had signed admin certificates for it, each dated no earlier
   than its signer became an admin. With one admin that admin alone decides; with more, one
   admin cannot mint a majority of puppets: its puppets' certificates are signed by one admin
   out of several. Certificate dates are signed, so this is a function of the facts, and an
   admin added later (by grant or by recovery) never demotes one made before it.
3. **A revocation counts** when signed by the root or by the device itself (a device may
   always leave), or else by admins in good standing, as many as its target's weight needs:
   - **a non-admin** (a device never made an admin by rule 2: a phone, a relay) is revoked by
     ONE admin in good standing: a lost phone is the common case, to be cut off at once from
     whichever admin device is at hand;
   - **an admin** (a device ever made one by rule 2) needs a strict majority of the admins in
     good standing that were admins at the date of the latest of those signatures, the
     target counted among them. With one admin that admin alone decides; with two, revoking
     the other takes both (or the root); with three, two. Admins added after those
     signatures do not raise the bar, so recovering or granting an admin never un-revokes
     an admin. Whether a target is an admin does not depend on dates: a device once made an
     admin always needs the majority, so a revocation dated back to before its promotion
     does not slip under the one-admin bar.
   A revocation dated before its signer became an admin, or before the target's first
   certificate that counts, is backdated and never counts. A revocation signed by a non-admin
   (of anyone but itself), or by too few admins, is stored (it may count later, when more
   admins sign) but does not count: the peer audits it.
4. **Good standing is a fixpoint, admins first.** Start with the root's and self revocations;
   repeatedly take the admins not revoked or cut off, count each stored revocation of an admin
   among them, and revoke the admins that now have a majority, except where a signer is itself
   being revoked in the same step (two sides revoking each other stay as they are until a
   majority or the root decides). The set of revoked devices only grows, so this ends; it
   depends on nothing but the facts. Only then, with the admins in good standing final, are
   the revocations of non-admins counted (a non-admin certifies nobody and signs for nobody,
   so revoking one changes no one else's standing). A revocation by a device that is itself
   revoked never counts (its signers must be in good standing), so what a stolen admin did,
   its one-signature revocations of phones included, is undone once the others revoke it.
   The flip side: when an honest admin is revoked later (lost in its turn), the phones it
   alone revoked come back unless another admin revokes them again; ``swarm revoke`` names
   them (``revocation_status``'s ``undone``).
5. **Grants.** A device's certificate is its first one, or the latest that the root or an admin in
   good standing issued for the same keys since (``swarm grant``: new scopes, relay flag, admin).
   An admin flag in a grant still counts only by rule 2. Certificates of one device that name
   different age keys (a thief re-certifying it to its own age key) make it ``conflicted``:
   nothing is sealed to it until the root's certificate decides or the certifier is revoked.
6. **Cut off with the revoked.** A device every usable certificate of which was issued by a
   revoked device is cut off too, unless a counting revocation of that issuer lists it in
   ``keep`` (the revoking admin vouches for the devices it already knew; ``Peer.revoke`` keeps
   every device the target certified that it knows of, so puppets made after the revocation
   are out). A device that revoked itself keeps the devices it certified. Cut-off devices are
   re-admitted by a new certificate from an admin in good standing (``swarm grant``).

Dates are what the signers say, so a stolen admin can still date what it signs back to when it
had more weight (never before it was an admin, nor a revocation before its target existed):
that is undone like the rest of what it did, once the others revoke it (rule 4), since its
certificates and revocations then count for nothing.

What a single stolen device can do, then:
- **a non-admin** (a phone): nothing to others. Its revocations (but of itself) and its
  certificates count for nothing; it can only leave.
- **an admin in a swarm of at least three admins**: nothing to other admins (it is one
  signature of several, and its puppets are not admins). It can revoke non-admins, and admit
  non-admin puppets, until the others revoke it (a majority of them suffices); then its
  revocations stop counting, the phones it revoked are back, and the puppets the revokers did
  not already know of are cut off (their revocation keeps only those).
  The surviving honest admins always keep a working swarm that excludes it.
- **an admin in a swarm of two**: it cannot remove the other admin, but neither can the other
  remove it alone: its revocations of phones stand until the root (``swarm recover CODE
  --revoke``) revokes it. A swarm that wants a stolen admin undone without the recovery code
  needs three admins.
- **the only admin**: everything, until the root revokes it and recovers an admin.

The root is the recovery code's key: it always counts and cannot be revoked. ``swarm init``
keeps no copy of it on disk (the recovery code it prints once is the only one), so a stolen
first device is one admin among the others, not the root; ``--keep-root-key`` keeps
``root.key`` for those who accept that.

A revocation whose signer's chain is not known yet is refused (``add_revocation`` raises,
``merge_wire`` skips it); merging a whole roster never hits this, since a roster holds the chain of
every revocation's signer, and fact-by-fact gossip relies on anti-entropy to deliver it again.

Off the wire, certificates, revocations and rosters are read by the one wire checker
(``CERTIFICATE_WIRE``, ``REVOCATION_WIRE``, ``ROSTER_WIRE``: ``homeswarm.wire`` schemas); a
malformed one is ``MalformedCertificate``, both an ``InvalidCertificate`` and a
``MalformedMessage``. ``issue_certificate`` and ``revoke`` check what they sign by the same rules.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from homeswarm.errors import InvalidArgument, MalformedMessage, ProtocolViolation
from homeswarm.ids import peer_id_from_public_key, public_key_from_peer_id, short
from homeswarm.vocabulary import ROLES, SCOPES
from homeswarm.wire import Field, Schema, pack

from ._config import ROLE_SCOPES, _device_name

VERSION = 1  # rosters
REVOKE_VERSION = 2  # revocations: 2 added keep
MAX_KEEP = 1024
CERT_VERSION = 2  # certificates: 2 added scopes, relay_only and admin
ROOT = "root"
MAX_CHAIN = 16
CERT_TAG = b"swarm-cert"
REVOKE_TAG = b"swarm-revoke"
_SWARM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_AGE = re.compile(r"^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$")  # bech32 X25519 recipient
_MAX_PEER_ID = 64


class InvalidCertificate(ProtocolViolation):
    """A certificate, chain, revocation or roster from a peer is malformed or does not verify."""


class MalformedCertificate(InvalidCertificate, MalformedMessage):
    """A certificate, chain, revocation or roster from a peer that does not have the shape its
    schema declares (``homeswarm.wire``): both invalid and a malformed message."""


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


def _canonical_scopes(scopes: object) -> tuple[str, ...]:
    """Known scopes, each once, in ``SCOPES`` order (anything else is dropped: compare with the
    input to validate)."""
    if not isinstance(scopes, tuple | list | frozenset | set):
        return ()
    return tuple(s for s in SCOPES if s in scopes)


# ---- the wire: what a peer sends, checked by the one checker (``homeswarm.wire``) --------------
# Certificates and revocations are lists (their version first), rosters maps; each refusal is a
# ``MalformedCertificate`` saying ``"WHAT: PROBLEM"``. A built value is checked by the same rules.


def _swarm_ok(swarm: str) -> bool:
    return swarm_id_problem(swarm) is None


def _member_or_root(text: str) -> bool:
    return text == ROOT or is_device_id(text)


def _name_ok(name: str) -> bool:
    return bool(name) and _device_name(name) is None


def _scopes_ok(scopes: list[Any]) -> bool:
    return scopes == list(_canonical_scopes(scopes))


def _keep_ok(keep: list[Any]) -> bool:
    return all(is_device_id(d) for d in keep) and keep == sorted(set(keep))


def _self_certified(device: str, issuer: str) -> str | None:
    return "a device cannot certify itself" if device == issuer else None


def _wire(what: str, *fields: Field, positional: bool = True) -> Schema:
    return Schema(what, *fields, positional=positional, error=MalformedCertificate)


_SWARM_ID = Field("swarm", str, valid=_swarm_ok, says=str(swarm_id_problem(None)))
_DEVICE = Field("device", str, valid=is_device_id, says="device is not an Ed25519 peer id")
_SIGNATURE = Field("signature", bytes, valid=lambda b: len(b) == 64, says="a signature is 64 bytes")


def _signer(name: str) -> Field:
    return Field(
        name, str, valid=_member_or_root, says=f"{name} must be 'root' or an Ed25519 peer id"
    )


def _time(name: str) -> Field:
    return Field(name, float, valid=math.isfinite, says=f"{name} must be a finite float")


CERTIFICATE_WIRE = _wire(
    "certificate",
    Field("version", int, equals=CERT_VERSION),
    _SWARM_ID,
    _DEVICE,
    Field("name", str, valid=_name_ok, says="name must be 1-64 letters, digits, '.', '_' or '-'"),
    Field("role", str, valid=ROLES.__contains__, says=f"role must be one of {', '.join(ROLES)}"),
    Field("age", str, valid=_AGE.match, says="age must be an age X25519 recipient (age1...)"),
    Field(
        "scopes",
        list,
        valid=_scopes_ok,
        says=f"scopes must be sorted distinct scopes from {', '.join(SCOPES)}",
    ),
    Field("relay_only", bool),
    Field("admin", bool),
    _signer("issuer"),
    _time("issued_at"),
    _SIGNATURE,
)
REVOCATION_WIRE = _wire(
    "revocation",
    Field("version", int, equals=REVOKE_VERSION),
    _SWARM_ID,
    _DEVICE,
    _signer("by"),
    _time("at"),
    Field(
        "keep",
        list,
        most=MAX_KEEP,
        valid=_keep_ok,
        says=f"keep is a sorted list of at most {MAX_KEEP} distinct peer ids",
    ),
    _SIGNATURE,
)
ROSTER_WIRE = _wire(
    "roster",
    Field("v", int, equals=VERSION),
    _SWARM_ID,
    Field("root", bytes, valid=lambda b: len(b) == 32, says="root is 32 raw bytes"),
    Field("chains", list),
    Field("revocations", list),
    positional=False,
)
_CHAIN = Field(
    "chain",
    list,
    valid=lambda chain: 1 <= len(chain) <= MAX_CHAIN,
    says=f"a certificate chain is a list of 1-{MAX_CHAIN} certificates",
)


@dataclass(frozen=True, slots=True)
class Certificate:
    """``issuer`` vouches that ``device`` (a peer id) is a member of ``swarm``, with what it may
    do: the data ``scopes`` it may read (none at all if ``relay_only``) and whether it is an
    ``admin`` (may invite, grant and revoke). This is the device's authority: what it gossips
    about itself is information, never permission."""

    swarm: str
    device: str
    name: str
    role: str
    age_recipient: str  # the age public key its vault keys are sealed to
    scopes: tuple[str, ...]
    relay_only: bool
    admin: bool
    issuer: str
    issued_at: float
    signature: bytes

    def problem(self) -> str | None:
        """What the wire's rules refuse in this certificate, or None (``issue_certificate``
        checks what it signs by the same rules as ``from_wire`` what a peer sent)."""
        if not isinstance(self.scopes, tuple):
            return "scopes must be a tuple"
        return CERTIFICATE_WIRE.problem(self.to_wire()) or _self_certified(self.device, self.issuer)

    def payload(self) -> bytes:
        """The signed bytes: a domain tag, the version and every field but the signature."""
        return pack(
            [
                CERT_TAG,
                CERT_VERSION,
                self.swarm,
                self.device,
                self.name,
                self.role,
                self.age_recipient,
                list(self.scopes),
                self.relay_only,
                self.admin,
                self.issuer,
                self.issued_at,
            ]
        )

    def to_wire(self) -> list[Any]:
        return [
            CERT_VERSION,
            self.swarm,
            self.device,
            self.name,
            self.role,
            self.age_recipient,
            list(self.scopes),
            self.relay_only,
            self.admin,
            self.issuer,
            self.issued_at,
            self.signature,
        ]

    @classmethod
    def from_wire(cls, obj: object) -> Certificate:
        """A certificate from a peer; ``MalformedCertificate`` saying why it is not one."""
        m = CERTIFICATE_WIRE.check(obj)
        if problem := _self_certified(m["device"], m["issuer"]):
            raise CERTIFICATE_WIRE.fail(problem)
        return cls(
            m["swarm"],
            m["device"],
            m["name"],
            m["role"],
            m["age"],
            tuple(m["scopes"]),
            m["relay_only"],
            m["admin"],
            m["issuer"],
            m["issued_at"],
            m["signature"],
        )

    def verify(self, public_key_raw: bytes) -> bool:
        """Whether the signature is the holder of ``public_key_raw`` signing this payload."""
        return _signature_ok(public_key_raw, self.signature, self.payload())

    def readable(self) -> frozenset[str]:
        """The scopes whose keys this device may be given: none for a blind relay."""
        return frozenset() if self.relay_only else frozenset(self.scopes)


def issue_certificate(
    signing_key: Ed25519PrivateKey,
    *,
    issuer: str,
    swarm: str,
    device: str,
    name: str,
    role: str,
    age_recipient: str,
    now: float,
    scopes: tuple[str, ...] | None = None,
    relay_only: bool = False,
    admin: bool = False,
) -> Certificate:
    """Sign a certificate for ``device``; ``signing_key`` is the root's or ``issuer``'s key.
    ``scopes`` default to the role's (``ROLE_SCOPES``)."""
    if problem := _signer_problem(signing_key, issuer):
        raise InvalidArgument(f"certificate: {problem}")
    chosen = _canonical_scopes(ROLE_SCOPES.get(role, ()) if scopes is None else scopes)
    unsigned = Certificate(
        swarm,
        device,
        name,
        role,
        age_recipient,
        chosen,
        relay_only,
        admin,
        issuer,
        float(now),
        bytes(64),
    )
    if problem := unsigned.problem():
        raise InvalidArgument(f"certificate: {problem}")
    return dataclasses.replace(unsigned, signature=signing_key.sign(unsigned.payload()))


Chain = tuple[Certificate, ...]


@dataclass(frozen=True, slots=True)
class Grant:
    """What an admin lets a new or existing device do: the authority its certificate will carry.
    ``scopes`` None means the role's defaults."""

    scopes: tuple[str, ...] | None = None
    relay_only: bool = False
    admin: bool = False

    def __post_init__(self) -> None:
        if self.scopes is not None and (
            not isinstance(self.scopes, tuple) or self.scopes != _canonical_scopes(self.scopes)
        ):
            raise InvalidArgument(f"grant: scopes are distinct scopes from {', '.join(SCOPES)}")
        if not isinstance(self.relay_only, bool) or not isinstance(self.admin, bool):
            raise InvalidArgument("grant: relay_only and admin are booleans")

    def scopes_for(self, role: str) -> tuple[str, ...]:
        return ROLE_SCOPES.get(role, ()) if self.scopes is None else self.scopes

    def narrowed(
        self, role: str, asked_scopes: tuple[str, ...] | None, asked_relay: bool
    ) -> tuple[tuple[str, ...], bool]:
        """The scopes and relay flag a joiner gets when it asks for ``asked_*``: it may ask for
        less than the grant, never more (InvalidArgument saying what the grant allows)."""
        allowed = self.scopes_for(role)
        if asked_scopes is None:
            return allowed, self.relay_only or asked_relay
        extra = [s for s in _canonical_scopes(asked_scopes) if s not in allowed]
        if extra:
            raise InvalidArgument(
                f"this invite allows scopes {','.join(allowed) or 'none'}, not {','.join(extra)}"
            )
        return _canonical_scopes(asked_scopes), self.relay_only or asked_relay


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
    """A chain from a peer (its links unchecked: ``verify_chain``); ``MalformedCertificate``."""
    if problem := _CHAIN.problem(obj):
        raise MalformedCertificate(f"certificate chain: {problem}")
    assert isinstance(obj, list)
    return tuple(Certificate.from_wire(item) for item in obj)


def chain_to_wire(chain: Chain) -> list[list[Any]]:
    return [cert.to_wire() for cert in chain]


@dataclass(frozen=True, slots=True)
class Revocation:
    """``by`` (a device, or the root) declares ``device`` no longer a member of ``swarm``.
    ``keep`` lists the devices ``device`` certified that ``by`` still vouches for: the others it
    certified are cut off with it (see the module rules)."""

    swarm: str
    device: str
    by: str
    at: float
    keep: tuple[str, ...]
    signature: bytes

    def problem(self) -> str | None:
        """What the wire's rules refuse in this revocation, or None (``revoke`` checks what it
        signs by the same rules as ``from_wire`` what a peer sent)."""
        if not isinstance(self.keep, tuple):
            return "keep must be a tuple"
        return REVOCATION_WIRE.problem(self.to_wire())

    def payload(self) -> bytes:
        return pack(
            [REVOKE_TAG, REVOKE_VERSION, self.swarm, self.device, self.by, self.at, list(self.keep)]
        )

    def to_wire(self) -> list[Any]:
        return [
            REVOKE_VERSION,
            self.swarm,
            self.device,
            self.by,
            self.at,
            list(self.keep),
            self.signature,
        ]

    @classmethod
    def from_wire(cls, obj: object) -> Revocation:
        """A revocation from a peer; ``MalformedCertificate`` saying why it is not one."""
        m = REVOCATION_WIRE.check(obj)
        return cls(m["swarm"], m["device"], m["by"], m["at"], tuple(m["keep"]), m["signature"])

    def verify(self, public_key_raw: bytes) -> bool:
        return _signature_ok(public_key_raw, self.signature, self.payload())

    def _order(self) -> tuple[float, str, bytes]:
        return (self.at, self.by, self.signature)


def revoke(
    signing_key: Ed25519PrivateKey,
    *,
    by: str,
    swarm: str,
    device: str,
    now: float,
    keep: Collection[str] = (),
) -> Revocation:
    """Sign the revocation of ``device``; ``signing_key`` is ``by``'s key (or the root's);
    ``keep``: the devices ``device`` certified that stay (the rest are cut off with it)."""
    if problem := _signer_problem(signing_key, by):
        raise InvalidArgument(f"revocation: {problem}")
    unsigned = Revocation(swarm, device, by, float(now), tuple(sorted(set(keep))), bytes(64))
    if problem := unsigned.problem():
        raise InvalidArgument(f"revocation: {problem}")
    return dataclasses.replace(unsigned, signature=signing_key.sign(unsigned.payload()))


def _chain_order(chain: Chain) -> tuple[float, int, tuple[bytes, ...]]:
    return (chain[0].issued_at, len(chain), tuple(cert.signature for cert in chain))


@dataclass(frozen=True, slots=True)
class Standing:
    """What ``Roster`` derives from its facts (see the module rules); a function of them alone."""

    admitted: dict[str, Chain]  # admitted device -> its certificate's chain
    admins: frozenset[str]  # admitted admins (the admins in good standing)
    revoked: dict[str, frozenset[str]]  # revoked device -> who counted ("root", itself, admins)
    cut_off: frozenset[str]  # not revoked, but certified only by revoked devices
    ignored: dict[str, frozenset[str]]  # device -> signers of revocations of it that do not count
    conflicted: frozenset[str]  # admitted, but its certificates name different age keys
    made_admins: frozenset[str] = frozenset()  # ever made an admin (rule 2): need a majority


def resolve(
    chains: dict[str, set[Chain]], revocations: dict[str, dict[str, Revocation]]
) -> Standing:
    """The standing of every device, by the module rules: a deterministic fixpoint."""
    since = _admin_since(chains)
    ever = set(since)
    # rule 1: a certificate counts when its issuer is the root or such an admin
    usable = {
        device: [
            c
            for c in stored
            if c[0].issuer == ROOT or (c[0].issuer in ever and c[0].issued_at >= since[c[0].issuer])
        ]
        for device, stored in chains.items()
    }
    usable = {device: found for device, found in usable.items() if found}
    known = {cert.device for stored in chains.values() for chain in stored for cert in chain}
    # a revocation dated before every usable certificate of its target is backdated: it is
    # not counted (the device did not exist for the swarm then)
    certified_at = {
        device: min(chain[0].issued_at for chain in found) for device, found in usable.items()
    }
    # rule 3: revocations by the root and by the device itself always count
    revoked: dict[str, frozenset[str]] = {}
    for device, by in revocations.items():
        always = {b for b in by if b in (ROOT, device)}
        if always and device in known:
            revoked[device] = frozenset(always)
    # rule 4: the admins first (only their standing moves anyone else's)
    while True:
        out = _cut_off(usable, revocations, revoked)
        admins = {d for d in ever if d in usable and d not in out}
        candidates: dict[str, frozenset[str]] = {}
        for device, by in revocations.items():
            if device in revoked or device not in ever or device not in known:
                continue
            voters = _voters(device, by, admins, since, certified_at.get(device))
            if voters:
                candidates[device] = voters
        # a revocation whose signers are being revoked in the same step waits (cycles stay put)
        settled = {d: v for d, v in candidates.items() if not v & candidates.keys()}
        if not settled:
            break
        revoked.update(settled)
    # a device that revoked itself keeps what it certified, unless admins revoke it too: then
    # their keep lists decide (one final pass, so a departing stolen device keeps no puppets)
    for device in list(revoked):
        by = revocations.get(device, {})
        extra = _voters(device, by, admins, since, certified_at.get(device))
        if extra:
            revoked[device] = revoked[device] | extra
    out = _cut_off(usable, revocations, revoked)
    admins = {d for d in ever if d in usable and d not in out}
    # then the non-admins, by the admins in good standing now final: one signature each
    for device, by in revocations.items():
        if device in revoked or device in ever or device not in known:
            continue
        if voters := _voters(device, by, admins, since, certified_at.get(device)):
            revoked[device] = voters
            out.add(device)  # a non-admin's certificates admit nobody: no one else moves
    admitted = {}
    conflicted = set()
    for device, found in usable.items():
        if device in out:
            continue
        good = [c for c in found if not _issuer_gone(c, out, revocations, revoked)]
        first = min(good, key=_chain_order)
        if len({c[0].age_recipient for c in good}) > 1:
            # someone certified these keys with another age key: sealing to either could hand
            # the device's data to a thief, so nothing is sealed to it until the root's
            # certificate decides (or the certifier is revoked)
            rooted = [c for c in good if c[0].issuer == ROOT]
            if rooted and len({c[0].age_recipient for c in rooted}) == 1:
                first = min(rooted, key=_chain_order)
            else:
                conflicted.add(device)
        # a grant: a later certificate for the same keys, from the root or an admin in good
        # standing, replaces the first (never its age key: that is the device's own)
        grants = [
            c
            for c in good
            if c[0].age_recipient == first[0].age_recipient
            and (c[0].issuer == ROOT or c[0].issuer in admins)
        ]
        admitted[device] = max(grants, key=_chain_order) if grants else first
    ignored = {
        device: frozenset(b for b in by if b not in revoked.get(device, ()))
        for device, by in revocations.items()
    }
    return Standing(
        admitted,
        frozenset(admins),
        revoked,
        frozenset(out - revoked.keys()),
        {d: s for d, s in ignored.items() if s},
        frozenset(conflicted),
        frozenset(ever),
    )


def _admin_since(chains: dict[str, set[Chain]]) -> dict[str, float]:
    """Rule 2: every device that was ever made an admin (revocations aside) -> since when.

    Judged in time order: an admin certificate dated ``t`` counts with the admins of time
    ``t`` (root-certified by then, or made admins strictly before ``t``), and only when
    dated at or after its signer became one; a device becomes an admin at the first
    certificate time at which a strict majority of those admins had signed one for it.
    Later admins never change an earlier outcome."""
    signed: dict[str, list[tuple[float, str]]] = {}  # device -> (issued_at, issuer) of admin certs
    for stored in chains.values():
        for chain in stored:
            for cert in chain:
                if cert.admin:
                    signed.setdefault(cert.device, []).append((cert.issued_at, cert.issuer))
    rooted: dict[str, float] = {}
    for device, certs in signed.items():
        times = [at for at, issuer in certs if issuer == ROOT]
        if times:
            rooted[device] = min(times)
    since: dict[str, float] = {}
    for t in sorted({at for certs in signed.values() for at, _ in certs}):
        then = {d: s for d, s in since.items() if s < t}
        then.update({d: s for d, s in rooted.items() if s <= t})
        made = {}
        for device, certs in signed.items():
            if device in since or device in rooted:
                continue
            signers = {
                issuer for at, issuer in certs if at <= t and issuer in then and at >= then[issuer]
            }
            if signers and 2 * len(signers) > len(then):
                made[device] = t
        since.update({d: s for d, s in rooted.items() if s <= t})
        since.update(made)
    return since


def _voters(
    device: str,
    by: dict[str, Revocation],
    admins: Collection[str],
    since: dict[str, float],
    certified_at: float | None,
) -> frozenset[str]:
    """Rule 3: the admins whose revocations of ``device`` count (empty: they do not count).

    A non-admin (never in ``since``) falls to one admin in good standing. An admin's
    revocation is judged against the admins in good standing that were admins when it was
    signed (its ``at``), so admins added later (by grant or by recovery) never un-revoke it.
    A revocation dated before its signer became an admin, or before the target's first
    certificate, is backdated and not counted."""
    valid = sorted(
        (rev.at, b)
        for b, rev in by.items()
        if b in admins
        and b != device
        and rev.at >= since[b]
        and (certified_at is None or rev.at >= certified_at)
    )
    if device not in since:
        return frozenset(b for _, b in valid)
    for i, (t, _) in enumerate(valid):
        voters = frozenset(b for at, b in valid[: i + 1] if at <= t)
        then = [a for a in admins if since[a] <= t]
        if 2 * len(voters) > len(then):
            return voters
    return frozenset()


def _kept(
    device: str, revocations: dict[str, dict[str, Revocation]], revoked: dict[str, frozenset[str]]
) -> frozenset[str] | None:
    """The devices ``device``'s counting revocations keep (None: all, a device that left)."""
    signers = revoked.get(device, frozenset())
    others = [revocations[device][b] for b in sorted(signers) if b != device]
    if not others:
        return None if device in signers else frozenset()
    return frozenset(d for rev in others for d in rev.keep)


def _issuer_gone(
    chain: Chain,
    out: set[str],
    revocations: dict[str, dict[str, Revocation]],
    revoked: dict[str, frozenset[str]],
) -> bool:
    issuer = chain[0].issuer
    if issuer == ROOT or issuer not in out:
        return False
    kept = _kept(issuer, revocations, revoked) if issuer in revoked else frozenset()
    return kept is not None and chain[0].device not in kept


def _cut_off(
    usable: dict[str, list[Chain]],
    revocations: dict[str, dict[str, Revocation]],
    revoked: dict[str, frozenset[str]],
) -> set[str]:
    """The revoked devices and, transitively, those every usable certificate of which comes
    from a device that is out and that no counting revocation keeps."""
    out = set(revoked)
    while True:
        more = {
            device
            for device, found in usable.items()
            if device not in out and all(_issuer_gone(c, out, revocations, revoked) for c in found)
        }
        if not more:
            return out
        out |= more


class Roster:
    """The members of one swarm that this device knows of; see the module docstring."""

    def __init__(self, swarm: str, root_public: bytes) -> None:
        if problem := swarm_id_problem(swarm):
            raise InvalidArgument(f"roster: {problem}")
        if not isinstance(root_public, bytes) or len(root_public) != 32:
            raise InvalidArgument("roster: the root public key is 32 raw bytes")
        self.swarm = swarm
        self.root_public = root_public
        # leaf device -> every verified chain; a set is never changed in place (a new one
        # replaces it), so copies share them: a simulated swarm's thousand rosters of a thousand
        # devices each held a million sets
        self._chains: dict[str, set[Chain]] = {}
        # revoked device -> signer -> its revocation (the least, if it signed several)
        self._revocations: dict[str, dict[str, Revocation]] = {}
        self._standing = resolve({}, {})  # derived from the two above
        self._verified: set[Certificate] = set()  # certificates whose signature checked out
        self._shared = False  # the two tables are another roster's too: copy them to change them

    def copy(self) -> Roster:
        """A roster with the same content that changes on its own (nothing is verified again: the
        copies share the cache of certificates whose signatures checked out). The tables are
        shared until either changes them (a simulated swarm's thousand rosters of a thousand
        devices each held a thousand tables of a thousand entries)."""
        new = Roster(self.swarm, self.root_public)
        new._chains, new._revocations = self._chains, self._revocations
        new._shared = self._shared = True
        new._standing = self._standing
        new._verified = self._verified
        return new

    def _own(self) -> None:
        """About to change the tables: copy them first if another roster holds them too."""
        if self._shared:
            self._chains = dict(self._chains)
            self._revocations = {device: dict(by) for device, by in self._revocations.items()}
            self._shared = False

    # -- queries --------------------------------------------------------------------------

    def admits(self, device: str) -> bool:
        return device in self._standing.admitted

    def certificate(self, device: str) -> Certificate | None:
        chain = self._standing.admitted.get(device)
        return chain[0] if chain else None

    def is_admin(self, device: str) -> bool:
        """Whether ``device`` is an admin in good standing (rule 2, and admitted)."""
        return device in self._standing.admins

    def admins(self) -> frozenset[str]:
        return self._standing.admins

    def made_admin(self, device: str) -> bool:
        """Whether ``device`` was ever made an admin (rule 2), revoked or not: revoking it takes
        a majority of the admins; any other device falls to one admin (rule 3)."""
        return device in self._standing.made_admins

    def chain(self, device: str) -> Chain | None:
        return self._standing.admitted.get(device)

    def members(self) -> list[Certificate]:
        leaves = (chain[0] for chain in self._standing.admitted.values())
        return sorted(leaves, key=lambda cert: (cert.name, cert.device))

    def revoked(self) -> frozenset[str]:
        """The devices whose revocation counts; ``admits`` also refuses those cut off with
        them (``cut_off``)."""
        return frozenset(self._standing.revoked)

    def cut_off(self) -> frozenset[str]:
        return self._standing.cut_off

    def conflicted(self) -> frozenset[str]:
        """Admitted devices whose certificates disagree on their age key: seal nothing to them."""
        return self._standing.conflicted

    def ignored(self) -> dict[str, frozenset[str]]:
        """Stored revocations that do not count (yet): device -> their signers."""
        return dict(self._standing.ignored)

    def certified_by(self, device: str) -> list[str]:
        """The admitted devices that only ``device`` certified (among the root and the admins),
        sorted: what revoking ``device`` would cut off unless kept."""
        vouchers = self._standing.admins | {ROOT}
        found = []
        for d in self._standing.admitted:
            issuers = {c[0].issuer for c in self._chains.get(d, ())}
            if device in issuers and not (issuers - {device}) & vouchers:
                found.append(d)
        return sorted(found)

    def revocations_of(self, device: str) -> dict[str, Revocation]:
        return dict(self._revocations.get(device, {}))

    def known(self) -> frozenset[str]:
        """Every device with a stored chain, admitted or not."""
        return frozenset(self._chains)

    def name_of(self, device: str) -> str:
        """A device's name, revoked or not (its admitted or earliest certificate's), or the
        short form of its id when no chain of it is known."""
        if (cert := self.certificate(device)) is not None:
            return cert.name
        stored = self._chains.get(device)
        return min(stored, key=_chain_order)[0].name if stored else short(device)

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

        A stored chain may admit nobody (its issuer is no admin, or is revoked): decide admission
        with ``admits``, never with this method's result.
        """
        _check_links(chain, self.swarm)
        if not self._store_chain(chain):
            return False  # verified and stored before: a dictionary lookup
        self._recompute()
        return True

    def add_chains(self, chains: Iterable[Chain]) -> int:
        """``add_chain`` for many chains, the standing worked out once (for each chain, it
        costs a pass over every chain: a simulated swarm of a thousand devices spent a million
        on its roster); how many were not stored yet. InvalidCertificate as ``add_chain``, for
        the first bad chain (those before it are stored)."""
        new = 0
        try:
            for chain in chains:
                _check_links(chain, self.swarm)
                new += self._store_chain(chain)
        finally:
            if new:
                self._recompute()
        return new

    def add_revocation(self, rev: Revocation) -> bool:
        """Verify and store a revocation; True if it was not stored yet (whether it counts is
        ``revoked``'s business)."""
        if not isinstance(rev, Revocation):
            raise InvalidCertificate("not a revocation")
        if not self._put_revocation(rev):
            return False
        self._recompute()
        return True

    # -- wire -----------------------------------------------------------------------------

    def entries(self) -> tuple[list[Chain], list[Revocation]]:
        """Every stored chain and revocation, in a canonical order (``to_wire``'s)."""
        chains = sorted((c for cs in self._chains.values() for c in cs), key=_chain_signatures)
        revocations = sorted(
            (rev for by in self._revocations.values() for rev in by.values()),
            key=lambda rev: (rev.device, rev.by),
        )
        return chains, revocations

    def to_wire(self) -> dict[str, Any]:
        """Every stored chain and revocation, in a canonical order (same state, same bytes)."""
        chains, revocations = self.entries()
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
        roster = cls(swarm, root)
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
        return pack(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> Roster:
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises a zoo of types on garbage
            raise InvalidCertificate(f"undecodable roster: {type(exc).__name__}") from None
        return cls.from_wire(obj)

    # -- internals ------------------------------------------------------------------------

    def _merge(self, chains: list[Any], revocations: list[Any], *, strict: bool) -> list[str]:
        # Chains first: a revocation needs its signer's chain. The resulting state is the union
        # whatever the order of arrival.
        admitted, revoked = set(self._standing.admitted), set(self._standing.revoked)
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
        changed = (admitted ^ set(self._standing.admitted)) | (
            set(self._standing.revoked) ^ revoked
        )
        return sorted(changed)

    def _store_chain(self, chain: Chain) -> bool:
        """Check the signatures of a linked chain and store it; False if it was stored already."""
        if chain in self._chains.get(chain[0].device, ()):
            return False
        _check_signatures(chain, self.root_public, self._verified)
        self._own()
        self._chains[chain[0].device] = {*self._chains.get(chain[0].device, ()), chain}
        return True

    def _put_revocation(self, rev: Revocation) -> bool:
        """Check and store a revocation; True if it was not stored before."""
        by = self._revocations.get(rev.device, {})
        known = by.get(rev.by)
        if known == rev:
            return False
        self._check_revocation(rev)
        if known is None or rev._order() < known._order():
            # the least per signer: the same choice on every replica
            self._own()
            self._revocations.setdefault(rev.device, {})[rev.by] = rev
            return True
        return False

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

    def _recompute(self) -> None:
        self._standing = resolve(self._chains, self._revocations)


def _chain_signatures(chain: Chain) -> tuple[bytes, ...]:
    return tuple(cert.signature for cert in chain)


def _roster_shape(obj: object) -> tuple[str, bytes, list[Any], list[Any]]:
    m = ROSTER_WIRE.check(obj)
    return m["swarm"], m["root"], m["chains"], m["revocations"]
