"""The peer: one device's membership, roster, state sampling, pairing and control, on a Transport.

``Peer`` is transport-agnostic: the daemon gives it a libp2p transport, the simulator a memory
one. Everything it does on the network goes through that transport's single handler:

- a list body is a membership message (only from admitted members);
- a ``{"op": "pair", ...}`` request redeems an invite code (the only thing a non-member may send,
  and only while an invite is outstanding: otherwise non-members are refused at the handshake);
- anything else from anyone is a protocol violation, which closes that connection.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from homeswarm.transports import (
    Connection,
    InvalidArgument,
    ProtocolViolation,
    Transport,
)

from ._audit import AUDIT_NAME, AuditLog, NotPermitted
from ._certs import (
    ROOT,
    Certificate,
    Grant,
    InvalidCertificate,
    Revocation,
    Roster,
    chain_from_wire,
    chain_to_wire,
    issue_certificate,
    revoke,
    short,
)
from ._device import DeviceState, LoadSource, Power, battery_saver, sample_state
from ._driver import Ed25519Crypto, MembershipDriver
from ._home import Identity, save_roster
from ._invite import Invites
from ._membership import BATTERY_SAVER, NORMAL, PROFILES, Change, Membership, Profile
from ._sensors import LoadSampler, make_power
from ._service import Service, split_op
from ._trust import trust_control

log = logging.getLogger("swarm.peer")

STATE_REFRESH = 60.0
RECONNECT = 60.0  # how often to reach out to one roster member that membership does not know


class RosterFacts:
    """The roster as the membership core sees it: admission, and certificates to spread."""

    def __init__(
        self,
        roster: Roster,
        on_change: Callable[[list[str]], None],
        on_refused: Callable[[str, str, str], object] | None = None,
    ) -> None:
        self.roster = roster
        self.on_change = on_change
        self.on_refused = on_refused  # (device, action, reason): a fact beyond its signer's rights
        self._snapshot: list[bytes] | None = None
        # entries already in the roster, as their exact bytes: every push-pull carries the whole
        # roster, and parsing and checking each certificate again would dominate in a big swarm
        self._known: set[bytes] = set()

    def admits(self, node: str) -> bool:
        return self.roster.admits(node)

    def learn(self, blob: bytes) -> bool:
        self.snapshot()  # (cached) every entry held, as bytes, is in _known
        if blob in self._known:
            return False
        before = {c.device for c in self.roster.members()} | self.roster.revoked()
        try:
            kind, body = msgpack.unpackb(blob, raw=False)
            if kind == "chain":
                chain = chain_from_wire(body)
                changed = [chain[0].device] if self.roster.add_chain(chain) else []
                self._check_authority(chain[0].issuer, "certify", chain[0].device, changed)
            elif kind == "revoke":
                rev = Revocation.from_wire(body)
                changed = [rev.device] if self.roster.add_revocation(rev) else []
                if rev.by != rev.device:
                    self._check_authority(rev.by, "revoke", rev.device, changed)
            else:
                raise InvalidCertificate(f"unknown fact {str(kind)[:10]!r}")
        except InvalidCertificate as exc:
            log.info("dropped a roster entry from a peer: %s", exc)
            return False
        except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
            log.warning("dropped an undecodable roster entry: %s", type(exc).__name__)
            return False
        if changed:
            after = {c.device for c in self.roster.members()} | self.roster.revoked()
            changed = sorted(set(changed) | (before ^ after))
            self._snapshot = None
            self.on_change(changed)
        return bool(changed)

    def _check_authority(self, signer: str, action: str, target: str, new: list[str]) -> None:
        if new and signer != ROOT and not self.roster.is_admin(signer) and self.on_refused:
            self.on_refused(signer, action, f"{action} {short(target)}: not an admin; ignored")

    def snapshot(self) -> list[bytes]:
        if self._snapshot is None:
            wire = self.roster.to_wire()
            self._snapshot = [chain_fact(c) for c in wire["chains"]] + [
                revocation_fact(r) for r in wire["revocations"]
            ]
            self._known.update(self._snapshot)
        return self._snapshot


def chain_fact(chain_wire: Any) -> bytes:
    return msgpack.packb(["chain", chain_wire], use_bin_type=True)  # type: ignore[no-any-return]


def revocation_fact(rev_wire: Any) -> bytes:
    return msgpack.packb(["revoke", rev_wire], use_bin_type=True)  # type: ignore[no-any-return]


@dataclass
class PeerOptions:
    listen_addrs: Callable[[], Sequence[str]]
    seeds: Sequence[tuple[str, Sequence[str]]] = ()
    known_addrs: dict[str, list[str]] | None = None
    executor: str = "inline"
    kernels: Sequence[str] = ()
    rng: random.Random | None = None
    wall_clock: Callable[[], float] = time.time
    load: LoadSource | None = None
    persist: bool = True
    services: Sequence[Service] = ()
    power: Power | None = None  # default: from the settings' [power] section
    on_changes: Callable[[list[Change]], None] | None = None  # what membership saw change
    metered: Callable[[], bool] | None = None  # whether our link costs per burst (cellular)


class Peer:
    """One device in the swarm. ``await peer.run(transport)`` until cancelled; then it leaves."""

    def __init__(self, identity: Identity, roster: Roster, options: PeerOptions) -> None:
        self.identity = identity
        self.roster = roster
        self.options = options
        self.rng = options.rng or random.SystemRandom()
        self.addresses: dict[str, list[str]] = dict(options.known_addrs or {})
        self.invites = Invites(identity.swarm_id, identity.device_id)
        audit_path = identity.home / AUDIT_NAME if options.persist else None
        self.audit = AuditLog(audit_path, options.wall_clock)
        self.facts = RosterFacts(roster, self._roster_changed, self.audit.refuse)
        now = options.wall_clock()
        self.power: Power = options.power or make_power(identity.settings.power, now)
        self.services: dict[str, Service] = {s.name: s for s in options.services}
        self.load: LoadSource = options.load or LoadSampler()
        self.transport: Transport | None = None
        self.core: Membership | None = None
        self.driver: MembershipDriver | None = None
        self.state: DeviceState | None = None
        self._state_at = 0.0
        self._nursery: trio.Nursery | None = None

    # ---- running -----------------------------------------------------------------------------

    async def run(
        self, transport: Transport, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve on an open ``transport`` until cancelled (``leave`` first, to leave gracefully)."""
        self.transport = transport
        transport.set_admission(self._admits)
        transport.set_handler(self._handle)
        now = trio.current_time()
        self.state = self._sample(version=0)
        ident = self.identity
        self.core = Membership(
            ident.device_id,
            state=_pack(self.state.to_wire()),
            crypto=Ed25519Crypto(ident.signing_key),
            facts=self.facts,
            rng=random.Random(self.rng.random()),
            now=now,
            domain=ident.swarm_id.encode(),
            incarnation=int(self.options.wall_clock()),
            profile=self._profile(self.state),
            tombstone=ident.settings.membership.tombstone_s,
            valid_state=lambda blob: decode_state(blob) is not None,
            lease_of=_lease_of,
        )
        self.driver = MembershipDriver(
            transport, self.core, addresses=self.addrs_of, on_changes=self._on_changes
        )
        self._state_at = now
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.driver.run)
            nursery.start_soon(self._sample_loop)
            nursery.start_soon(self._reconnect_loop)
            self.join(self.options.seeds)
            for service in self.services.values():
                await nursery.start(service.run, self)
            task_status.started()
            await trio.sleep_forever()

    async def leave(self, grace: float = 0.5) -> None:
        """Tell the others we are leaving (they show "left", not "dead"); call before stopping."""
        if self.driver is not None and self.core is not None and not self.core.leaving:
            await self.driver.leave(grace)

    def join(self, seeds: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Learn these peers' addresses and ask them for everything they know."""
        assert self.core is not None
        assert self.driver is not None
        ids = []
        for peer, addrs in seeds:
            if peer != self.identity.device_id:
                self._learn_addrs(peer, addrs)
                ids.append(peer)
        for peer in self.addresses:
            if peer not in ids and peer != self.identity.device_id and self.roster.admits(peer):
                ids.append(peer)
        self.core.join(ids, trio.current_time())
        self.driver.poke()

    def _learn_addrs(self, peer: str, addrs: Sequence[str]) -> None:
        """The addresses we last saw or heard ``peer`` at go first (newest first, 8 kept)."""
        known = self.addresses.setdefault(peer, [])
        known[:] = list(dict.fromkeys([*addrs, *known]))[:8]

    def addrs_of(self, node: str) -> list[str]:
        """Where to dial ``node``, newest first: where we last saw it or heard of it (a device
        back from a power cut on a new address, seen on the LAN before its new record reached
        us), then what its membership record says."""
        assert self.core is not None
        found = list(self.addresses.get(node, ()))
        member = self.core.members.get(node)
        if member is not None and member.state:
            state = decode_state(member.state)
            if state is not None:
                found.extend(a for a in state.addrs if a not in found)
        return found

    async def _reconnect_loop(self) -> None:
        """Every minute, one roster member membership has forgotten (or never met) and whose
        address we know, in turn: so a device away for longer than the tombstone (a laptop asleep
        all night, a long partition) is found again even when mDNS cannot see it."""
        turn = 0
        while True:
            await trio.sleep(RECONNECT)
            assert self.core is not None
            assert self.driver is not None
            me, members = self.identity.device_id, self.core.members
            lost = sorted(
                c.device
                for c in self.roster.members()
                if c.device != me and c.device not in members and self.addresses.get(c.device)
            )
            if lost:
                self.core.reach(lost[turn % len(lost)])
                turn += 1
                self.driver.poke()

    def _admits(self, peer: str) -> bool:
        if self.roster.admits(peer):
            return True
        # while a code is out, a stranger may connect to present it: it may send nothing but the
        # pairing request
        return self.invites.outstanding(self.options.wall_clock()) > 0

    # ---- device state ------------------------------------------------------------------------

    def _sample(self, version: int) -> DeviceState:
        addrs = self.transport.addrs if self.transport is not None else []
        return sample_state(
            settings=self.identity.settings,
            addrs=self.options.listen_addrs() or addrs,
            power=self.power,
            load=self.load,
            executor=self.options.executor,
            kernels=self.options.kernels,
            version=version,
            now=self.options.wall_clock(),
            metered=self.options.metered() if self.options.metered is not None else False,
        )

    def _profile(self, state: DeviceState) -> Profile:
        chosen = self.identity.settings.membership.profile
        if chosen != "auto":
            return PROFILES[chosen]
        return BATTERY_SAVER if battery_saver(state) else NORMAL

    async def _sample_loop(self) -> None:
        period = self.identity.settings.membership.sample_period_s
        while True:
            await trio.sleep(period)
            self.refresh_state()

    def refresh_state(self, *, force: bool = False) -> None:
        """Sample this device; gossip the state if it changed enough or a minute has passed."""
        assert self.core is not None
        assert self.state is not None
        assert self.driver is not None
        now = trio.current_time()
        fresh = self._sample(version=self.state.version + 1)
        if force or fresh.meaningfully_different(self.state) or now - self._state_at >= 60:
            self.state = fresh
            self._state_at = now
            self.core.update_state(_pack(fresh.to_wire()), now)
            self.core.set_profile(self._profile(fresh))
            self.driver.poke()

    # ---- roster ------------------------------------------------------------------------------

    def _roster_changed(self, devices: list[str]) -> None:
        if self.options.persist:
            save_roster(self.identity.home, self.roster)
        # a revocation also cuts off the devices its target paired: check every member we know
        known = set(self.core.members) if self.core is not None else set()
        for device in sorted(known | set(devices)):
            if not self.roster.admits(device):
                self._drop(device)
        for service in self.services.values():
            service.roster_changed(devices)

    def publish_chain(self, chain: tuple[Certificate, ...]) -> None:
        """A certificate chain this device signed (a pairing, a grant): take it and gossip it."""
        self._spread(chain_fact(chain_to_wire(chain)))

    def _spread(self, blob: bytes) -> None:
        """A roster entry this device made: take it as any peer's would be taken, and gossip it."""
        assert self.core is not None
        if self.facts.learn(blob):
            self.core.spread(blob)

    def _drop(self, device: str) -> None:
        log.warning("device %s was revoked: dropping it", device[-8:])
        if self.core is not None:
            self.core.forget(device, trio.current_time())
        if self.transport is not None and self._nursery is not None:
            for conn in self.transport.connections(device):
                self._nursery.start_soon(conn.aclose)

    def revoke(self, name_or_id: str) -> Certificate:
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
            now=self.options.wall_clock(),
            keep=self.roster.certified_by(cert.device),  # what it paired so far stays
        )
        self._spread(revocation_fact(rev.to_wire()))
        return cert

    # ---- pairing -----------------------------------------------------------------------------

    def require_admin(self, action: str, what: str) -> None:
        """Refuse (and audit) an admin's action asked of a device that is not an admin."""
        me = self.identity.device_id
        if not self.roster.is_admin(me):
            reason = f"{what}: this device is not an admin of the swarm"
            self.audit.refuse(me, action, reason)
            raise NotPermitted(f"{reason} (only admins invite, grant and revoke)")

    def invite(self, ttl: float, grant: Grant | None = None) -> str:
        self.require_admin("invite", "invite a device")
        addrs = [a.split("/p2p/")[0] for a in self.options.listen_addrs()]
        code = self.invites.create(
            addrs=addrs[:8], ttl=ttl, now=self.options.wall_clock(), rng=self.rng, grant=grant
        )
        return code.encode()

    def _pair(self, conn: Connection, body: dict[str, Any]) -> dict[str, Any]:
        joiner = conn.peer_id
        request = body.get("request")
        invite_id, proof = body.get("invite"), body.get("proof")
        if not isinstance(request, bytes) or not isinstance(invite_id, bytes):
            raise ProtocolViolation("pair: malformed request")
        if not isinstance(proof, bytes):
            raise ProtocolViolation("pair: malformed proof")
        now = self.options.wall_clock()
        grant = self.invites.redeem(invite_id, proof, joiner=joiner, request=request, now=now)
        try:
            name, role, age, *asked = msgpack.unpackb(request, raw=False)
            asked_scopes, asked_relay = asked if asked else (None, False)
            if asked_scopes is not None:
                asked_scopes = tuple(asked_scopes)
            if not isinstance(asked_relay, bool):
                raise TypeError("relay_only")
        except (ValueError, TypeError, msgpack.UnpackException):
            raise InvalidArgument("pair: malformed device description") from None
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
        chain = (cert, *own)
        self._spread(chain_fact(chain_to_wire(chain)))
        assert self.core is not None
        if conn.remote_addr:
            self._learn_addrs(joiner, [conn.remote_addr])
        log.warning("paired a new device: %s (%s) %s", name, role, joiner[-8:])
        return {
            "chain": chain_to_wire(chain),
            "roster": self.roster.to_wire(),
            "peers": {n: self.addrs_of(n) for n in self.core.members if n != joiner},
        }

    # ---- messages ----------------------------------------------------------------------------

    async def _handle(self, conn: Connection, body: Any) -> Any:
        member = self.roster.admits(conn.peer_id)
        if member and isinstance(body, list):
            assert self.driver is not None
            await self.driver.handle(conn, body)
            return None
        if isinstance(body, dict) and body.get("op") == "pair":
            return self._pair(conn, body)
        if not member:
            raise ProtocolViolation("not a member of this swarm")
        route = split_op(body.get("op")) if isinstance(body, dict) else None
        if route is not None and route[0] in self.services:
            return await self.services[route[0]].handle(conn, route[1], body)
        raise ProtocolViolation(f"unexpected message of type {type(body).__name__}")

    def _on_changes(self, changes: list[Change]) -> None:
        if self.options.on_changes is not None:
            self.options.on_changes(changes)
        assert self.core is not None
        for change in changes:
            if change.node == self.identity.device_id:
                continue
            member = self.core.members.get(change.node)
            if change.status == "alive" and member is not None and member.state:
                state = decode_state(member.state)
                if state is not None:  # remembered: we may have to find it again (reconnect)
                    self._learn_addrs(change.node, state.addrs)
            if change.status in ("dead", "left", "suspect"):
                log.info("%s is %s", change.node[-8:], change.status)

    async def control(self, op: str, args: dict[str, Any]) -> Any:
        """A service's request from this device's CLI (``vault.put`` goes to ``vault``)."""
        route = split_op(op)
        if route is not None and route[0] == "trust":
            return trust_control(self, route[1], args)
        if route is None or route[0] not in self.services:
            raise InvalidArgument(f"unknown request {op!r}")
        return await self.services[route[0]].control(route[1], args)

    # ---- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        assert self.core is not None
        now = trio.current_time()
        rows = []
        for node, member in self.core.members.items():
            state = decode_state(member.state) if member.state else None
            cert = self.roster.certificate(node)
            if state is None and cert is None:
                continue
            me = node == self.identity.device_id
            heard = member.last_heard if member.last_heard is not None else member.changed_at
            row: dict[str, Any] = {
                "id": node,
                "name": cert.name if cert else (state.name if state else ""),
                "role": cert.role if cert else (state.role if state else "laptop"),
                "self": me,
                "state": member.status,
                "incarnation": member.incarnation,
                "last_seen_s": 0.0 if me else round(max(now - heard, 0.0), 1),
                "latency_ms": None if me or member.rtt is None else round(member.rtt * 1000, 2),
            }
            parts = state.as_status() if state else _no_state()
            parts.pop("name", None)
            parts.pop("role", None)
            row.update(parts)
            rows.append(row)
        rows.sort(key=lambda r: (not r["self"], r["name"], r["id"]))
        out: dict[str, Any] = {
            "self": self.identity.device_id,
            "swarm": self.identity.swarm_id,
            "peers": rows,
        }
        for name, service in self.services.items():
            part = service.status()
            if part is not None:
                out[name] = part
        return out

    def set_power(self, battery: float | None, plugged: bool | None) -> dict[str, Any]:
        now = self.options.wall_clock()
        reading = self.power.set(battery_percent=battery, plugged=plugged, now=now)
        self.refresh_state(force=True)
        return {
            "battery_percent": reading.battery_percent,
            "plugged": reading.plugged,
            "minutes_left": reading.minutes_left,
        }


def _no_state() -> dict[str, Any]:
    return {
        "power": {"battery_percent": None, "plugged": None, "minutes_left": None},
        "load": {"cpu_percent": 0.0, "memory_free_mb": 0.0},
        "privacy": {"scopes": [], "relay_only": False},
        "capabilities": {"executor": "unknown", "kernels": []},
    }


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _lease_of(blob: bytes) -> float:
    """A member's lease, from its state: > 0 for a light member."""
    state = decode_state(blob)
    return float(state.lease_s) if state is not None else 0.0


@functools.lru_cache(maxsize=4096)
def decode_state(blob: bytes) -> DeviceState | None:
    """A member's state from its alive record (memoised: status asks for every member)."""
    try:
        return DeviceState.from_wire(msgpack.unpackb(blob, raw=False))
    except (ProtocolViolation, ValueError, TypeError, msgpack.UnpackException):
        return None
