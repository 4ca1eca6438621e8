"""Authority on a running peer: the ``trust.*`` control requests behind ``swarm invite``,
``swarm revoke`` and ``swarm grant``, and the recovery code.

Each request checks, before anything is signed, that this device is an admin in good standing
(``Roster.is_admin``); a refusal is one line for the user and one entry in the audit log. The
rules that decide what a signed fact means on every peer are in ``_certs``.

The recovery code (``swarm init`` prints it once) is the root key's 32-byte secret and a 4-byte
check (the first bytes of its SHA-256, tagged), in base32: 58 letters, written in groups of
five after ``swarmrc1-``. ``swarm recover CODE`` rebuilds the root key from it and signs, with the
root, an admin certificate for the device it runs on (and, on request, revocations of lost
devices): the root always counts (``_certs`` rule 3), so the code alone restores an admin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from homeswarm.errors import InvalidArgument
from homeswarm.ids import short
from homeswarm.vocabulary import SCOPES

from ._certs import ROOT, Grant, InvalidCertificate, Roster, issue_certificate, revoke
from ._control_client import NoPeerRunning, ask
from ._home import load_identity, load_roster, public_bytes, save_roster

if TYPE_CHECKING:
    from ._peer import Peer

RECOVERY_PREFIX = "swarmrc1-"
_CHECK_TAG = b"swarm-recovery\0"
_LETTERS = re.compile(r"^[a-z2-7]{58}$")


class InvalidRecoveryCode(InvalidArgument):
    """A recovery code that is mistyped or is not one."""


def new_root() -> Ed25519PrivateKey:
    """A new swarm root key (``swarm init``: shown once as the recovery code)."""
    return Ed25519PrivateKey.generate()


def recovery_code(root: Ed25519PrivateKey) -> str:
    """The code that holds ``root``: ``swarmrc1-`` and 58 base32 letters in groups of five."""
    secret = root.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    letters = base64.b32encode(secret + _check(secret)).decode().rstrip("=").lower()
    return RECOVERY_PREFIX + "-".join(letters[i : i + 5] for i in range(0, len(letters), 5))


def root_from_code(text: str) -> Ed25519PrivateKey:
    """The root key in a recovery code; case, spaces and dashes are ignored."""
    compact = "".join(text.split()).lower()
    if not compact.startswith(RECOVERY_PREFIX):
        raise InvalidRecoveryCode(
            f"this is not a recovery code (those start with {RECOVERY_PREFIX})"
        )
    letters = compact[len(RECOVERY_PREFIX) :].replace("-", "")
    if not _LETTERS.match(letters):
        raise InvalidRecoveryCode("the recovery code is mistyped or truncated")
    try:
        data = base64.b32decode(letters.upper() + "======")
    except (binascii.Error, ValueError):
        raise InvalidRecoveryCode("the recovery code is mistyped or truncated") from None
    secret, check = data[:32], data[32:]
    if _check(secret) != check:
        raise InvalidRecoveryCode("the recovery code is mistyped (its check does not match)")
    return Ed25519PrivateKey.from_private_bytes(secret)


def _check(secret: bytes) -> bytes:
    return hashlib.sha256(_CHECK_TAG + secret).digest()[:4]


def grant_from_args(args: dict[str, Any]) -> Grant:
    scopes = args.get("scopes")
    if scopes is not None and (
        not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)
    ):
        raise InvalidArgument("scopes is a list of scope names")
    relay_only, admin = args.get("relay_only", False), args.get("admin", False)
    if not isinstance(relay_only, bool) or not isinstance(admin, bool):
        raise InvalidArgument("relay_only and admin are true or false")
    chosen = None if scopes is None else tuple(s for s in SCOPES if s in scopes)
    if scopes is not None and (not chosen or len(chosen) != len(scopes)):
        raise InvalidArgument(f"scopes are distinct names from {', '.join(SCOPES)}")
    return Grant(chosen, relay_only, admin)


def trust_control(peer: Peer, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """A ``trust.<op>`` request from this device's CLI."""
    if op == "invite":
        ttl = args.get("ttl", 600.0)
        grant = grant_from_args(args)
        return {"code": peer.invite(ttl, grant), "ttl": ttl, "grant": _grant_json(grant)}
    if op == "revoke":
        device = args.get("device")
        if not isinstance(device, str) or not device:
            raise InvalidArgument("revoke: name a device")
        cert = peer.revoke(device)
        return revocation_status(peer, cert.device, cert.name)
    if op == "grant":
        device = args.get("device")
        if not isinstance(device, str) or not device:
            raise InvalidArgument("grant: name a device")
        return grant_device(peer, device, grant_from_args(args))
    raise InvalidArgument(f"unknown request trust.{op}")


def grant_device(peer: Peer, name_or_id: str, what: Grant) -> dict[str, Any]:
    """Sign a new certificate for a member (``swarm grant``); a scope taken away starts a new
    epoch of that scope at once, sealed only to those still allowed it."""
    roster, ident = peer.roster, peer.identity
    cert = roster.find(name_or_id)
    if cert is None:
        raise InvalidArgument(f"no device {name_or_id!r} in this swarm (see `swarm status`)")
    peer.require_admin("grant", f"grant {cert.name}")
    if cert.device == ident.device_id:
        raise InvalidArgument("a device cannot grant itself; ask another admin")
    own = roster.chain(ident.device_id)
    assert own is not None  # an admin is admitted
    new = issue_certificate(
        ident.signing_key,
        issuer=ident.device_id,
        swarm=ident.swarm_id,
        device=cert.device,
        name=cert.name,
        role=cert.role,
        age_recipient=cert.age_recipient,
        now=peer.options.wall_clock(),
        scopes=what.scopes_for(cert.role),
        relay_only=what.relay_only,
        admin=what.admin or roster.is_admin(cert.device),
    )
    peer.publish_chain((new, *own))
    taken = sorted(cert.readable() - new.readable())
    vault = peer.services.get("vault")
    node = getattr(vault, "node", None)
    if taken and node is not None:
        node.rotate(tuple(taken))
    now = roster.certificate(cert.device)
    return {
        "device": cert.device,
        "name": cert.name,
        "scopes": list(now.scopes) if now else [],
        "relay_only": bool(now and now.relay_only),
        "admin": roster.is_admin(cert.device),
        "rotated": taken,
    }


def revocation_status(peer: Peer, device: str, name: str) -> dict[str, Any]:
    """Whether the revocation of ``device`` counts yet, who signed it, who else may, and (for
    an admin) the devices only it revoked, which come back once it is out (``_certs`` rule 4)."""
    roster = peer.roster
    signers = sorted(roster.revocations_of(device))
    admins = roster.admins()
    # who else may sign now: each new signature is dated now, judged with today's admins
    others = sorted(_name(peer, a) for a in admins - set(signers) if a != device)
    if roster.made_admin(device):
        needed = max(1, len(admins) // 2 + 1 - len(admins & set(signers)))
    else:
        needed = 1  # a non-admin falls to one admin
    return {
        "device": device,
        "name": name,
        "counts": device in roster.revoked(),
        "signed_by": sorted(_name(peer, s) for s in signers),
        "admins": len(admins),
        "majority": roster.made_admin(device),
        "needed": needed,
        "may_sign": others,
        "kept": [short(d) for d in roster.certified_by(device)],
        "undone": [_name(peer, d) for d in _revoked_only_by(roster, device)],
    }


def _revoked_only_by(roster: Roster, device: str) -> list[str]:
    """The non-admins whose revocation rests on ``device``'s signature alone."""
    vouchers = (roster.admins() - {device}) | {ROOT}
    found = []
    for d in sorted(roster.known() - {device}):
        signers = set(roster.revocations_of(d))
        if device in signers and not roster.made_admin(d) and not signers & (vouchers | {d}):
            found.append(d)
    return found


def _name(peer: Peer, device: str) -> str:
    return ROOT if device == ROOT else peer.roster.name_of(device)


def _grant_json(grant: Grant) -> dict[str, Any]:
    return {
        "scopes": None if grant.scopes is None else list(grant.scopes),
        "relay_only": grant.relay_only,
        "admin": grant.admin,
    }


def recover_admin(home: Path, code: str, revoke_names: Sequence[str] = ()) -> dict[str, Any]:
    """Make this (stopped) device an admin again with the swarm's recovery code.

    The code is the root key: it signs a root certificate for this device and, for each name in
    ``revoke_names``, a revocation with the root's authority. Refuses while the peer runs.
    """
    ident = load_identity(home)
    root = root_from_code(code)
    if public_bytes(root).hex() != ident.settings.swarm.root:
        raise InvalidRecoveryCode("this recovery code is for another swarm")
    try:
        ask(home, "status", timeout=2.0)
    except NoPeerRunning:
        pass
    else:
        raise InvalidArgument("stop this device's peer (`swarm up`) first, then recover")
    roster = load_roster(ident)
    current = roster.certificate(ident.device_id)
    settings = ident.settings.device
    now = time.time()
    cert = issue_certificate(
        root,
        issuer=ROOT,
        swarm=ident.swarm_id,
        device=ident.device_id,
        name=ident.name,
        role=settings.role,
        age_recipient=ident.age_recipient,
        now=now,
        scopes=current.scopes if current is not None else settings.effective_scopes(),
        relay_only=current.relay_only if current is not None else settings.relay_only,
        admin=True,
    )
    try:
        roster.add_chain((cert,))
        revoked = []
        for name in revoke_names:
            target = roster.find(name)
            if target is None or target.device == ident.device_id:
                raise InvalidArgument(f"--revoke {name!r}: no such other device in this swarm")
            keep = roster.certified_by(target.device)
            rev = revoke(
                root, by=ROOT, swarm=ident.swarm_id, device=target.device, now=now, keep=keep
            )
            roster.add_revocation(rev)
            revoked.append(target.name)
    except InvalidCertificate as exc:
        raise InvalidArgument(f"cannot recover: {exc}") from None
    save_roster(home, roster)
    return {"device": ident.device_id, "name": ident.name, "admin": True, "revoked": revoked}
