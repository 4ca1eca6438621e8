"""What an admin does for a newcomer and against a lost device: invites, pairing, revoking. Pure.

``Pairing`` holds this device's identity, the roster, the audit log and the outstanding invites;
it does no I/O and reads no clock (every method that needs the time takes ``now``). It builds the
certificates and revocations; the peer spreads them (``RosterFacts``) and answers on the wire.

Rules:

- only admins invite, grant and revoke: asked of a device that is not one, the action is refused
  with ``NotPermitted`` and the refusal is audited;
- a pairing request is ``{"op": "pair", "invite": bytes, "proof": bytes, "request": bytes}``, its
  ``request`` the msgpack list ``[name, role, age_recipient, scopes | None, relay_only]`` (the last
  two optional); what the invite grants narrows what the joiner asks for;
- a device cannot revoke itself; a revocation keeps what its target paired so far.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack

from homeswarm.errors import InvalidArgument
from homeswarm.wire import Field, Schema

from ._audit import AuditLog, NotPermitted
from ._certs import Certificate, Grant, Revocation, Roster, issue_certificate, revoke
from ._home import Identity
from ._invite import Invites

PAIR_REQUEST = Schema(
    "pair",
    Field("invite", bytes),
    Field("proof", bytes),
    Field("request", bytes),
)


class Pairing:
    """Invites out and their redemption, and revocations, for one device; see the module rules."""

    def __init__(self, identity: Identity, roster: Roster, audit: AuditLog) -> None:
        self.identity = identity
        self.roster = roster
        self.audit = audit
        self.invites = Invites(identity.swarm_id, identity.device_id)

    def require_admin(self, action: str, what: str) -> None:
        """Refuse (and audit) an admin's action asked of a device that is not an admin."""
        me = self.identity.device_id
        if not self.roster.is_admin(me):
            reason = f"{what}: this device is not an admin of the swarm"
            self.audit.refuse(me, action, reason)
            raise NotPermitted(f"{reason} (only admins invite, grant and revoke)")

    def strangers_welcome(self, now: float) -> bool:
        """Whether a non-member may connect: only while a code is out, to present it."""
        return self.invites.outstanding(now) > 0

    def invite(
        self, ttl: float, grant: Grant | None, *, addrs: list[str], now: float, rng: random.Random
    ) -> str:
        """A new one-time code (its text) that lets a device in at ``addrs`` within ``ttl`` s."""
        self.require_admin("invite", "invite a device")
        bare = [a.split("/p2p/")[0] for a in addrs]
        code = self.invites.create(addrs=bare[:8], ttl=ttl, now=now, rng=rng, grant=grant)
        return code.encode()

    def pair(self, joiner: str, body: object, now: float) -> tuple[Certificate, ...]:
        """The certificate chain that admits ``joiner``, for its pairing request ``body``.

        Raises ``MalformedMessage`` for a request of the wrong shape, ``InvalidCode`` for a code
        that is not (or no longer) good, ``InvalidArgument`` for a description that is not one.
        """
        fields = PAIR_REQUEST.check(body)
        request = fields["request"]
        grant = self.invites.redeem(
            fields["invite"], fields["proof"], joiner=joiner, request=request, now=now
        )
        name, role, age, asked_scopes, asked_relay = _description(request)
        scopes, relay_only = grant.narrowed(role, asked_scopes, asked_relay)
        ident = self.identity
        own = self.roster.chain(ident.device_id)
        if own is None:
            raise InvalidArgument("this device is not admitted to its own swarm")
        cert = issue_certificate(
            ident.signing_key,
            issuer=ident.device_id,
            swarm=ident.swarm_id,
            device=joiner,
            name=name,
            role=role,
            age_recipient=age,
            now=now,
            scopes=scopes,
            relay_only=relay_only,
            admin=grant.admin,
        )
        return (cert, *own)

    def revocation(self, name_or_id: str, now: float) -> tuple[Certificate, Revocation]:
        """The device ``name_or_id`` names and this device's signed revocation of it."""
        cert = self.roster.find(name_or_id)
        if cert is None:
            raise InvalidArgument(f"no device {name_or_id!r} in this swarm (see `swarm status`)")
        if cert.device == self.identity.device_id:
            raise InvalidArgument("a device cannot revoke itself; revoke it from another device")
        self.require_admin("revoke", f"revoke {cert.name}")
        ident = self.identity
        rev = revoke(
            ident.signing_key,
            by=ident.device_id,
            swarm=ident.swarm_id,
            device=cert.device,
            now=now,
            keep=self.roster.certified_by(cert.device),  # what it paired so far stays
        )
        return cert, rev


def _description(request: bytes) -> tuple[Any, Any, Any, tuple[Any, ...] | None, bool]:
    """``(name, role, age, scopes, relay_only)`` a joiner asked for; the certificate checks them."""
    try:
        name, role, age, *asked = msgpack.unpackb(request, raw=False)
        asked_scopes, asked_relay = asked if asked else (None, False)
        if asked_scopes is not None:
            asked_scopes = tuple(asked_scopes)
        if not isinstance(asked_relay, bool):
            raise TypeError("relay_only")
    except (ValueError, TypeError, msgpack.UnpackException):
        raise InvalidArgument("pair: malformed device description") from None
    return name, role, age, asked_scopes, asked_relay
