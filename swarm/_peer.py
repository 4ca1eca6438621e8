"""The peer: the thin driver that runs one device's membership, state, roster and services.

It holds the parts together and moves messages between them and a Transport; what each part
means lives in its own room: the device state and its codec in ``_device`` (the sensors in
``_sensors``), the roster as gossiped facts in ``_roster_facts``, invites, pairing and revoking in
``_pairing``, the status document in ``_peer_status``.

``Peer`` is transport-agnostic: the daemon gives it a libp2p transport, the simulator a memory
one. Everything it does on the network goes through that transport's single handler:

- a list body is a membership message (only from admitted members);
- a ``{"op": "pair", ...}`` request redeems an invite code (the only thing a non-member may send,
  and only while an invite is outstanding: otherwise non-members are refused at the handshake);
- anything else from anyone is a protocol violation, which closes that connection.
"""

from __future__ import annotations

import logging
import random
import time
from collections import ChainMap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from homeswarm.transports import (
    Alarm,
    Connection,
    InvalidArgument,
    ProtocolViolation,
    Transport,
)

from ._audit import AUDIT_NAME, AuditLog
from ._certs import Certificate, Grant, Roster, chain_to_wire
from ._device import (
    DeviceState,
    LoadSource,
    Power,
    battery_saver,
    decode_state,
    lease_of,
    sample_state,
    state_bytes,
)
from ._driver import Ed25519Crypto, MembershipDriver
from ._home import Identity, save_roster
from ._membership import BATTERY_SAVER, NORMAL, ON_BATTERY, PROFILES, Change, Membership, Profile
from ._pairing import Pairing
from ._peer_status import status_json
from ._roster_facts import RosterFacts, chain_fact, revocation_fact
from ._sensors import LoadSampler, accelerator_source, make_power
from ._service import Service, split_op
from ._trust import trust_control

log = logging.getLogger("swarm.peer")

STATE_REFRESH = 60.0
FRESH_S = 10.0  # a light member's view, when a person asks for it: at most this old (a heartbeat)
FRESH_WAIT_S = 2.0  # how long ``fresh_status`` waits for that heartbeat's first answer
RECONNECT = 60.0  # how often to reach out to one roster member that membership does not know


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
    # at start, ask the devices at ``known_addrs`` too for the swarm's state (a few at a time),
    # not only the ``seeds``: what a device back from a power cut must do; a simulated swarm that
    # starts as if it had been running a while (``World``, settled) has that state already
    join_known: bool = True


class Peer:
    """One device in the swarm. ``await peer.run(transport)`` until cancelled; then it leaves."""

    def __init__(self, identity: Identity, roster: Roster, options: PeerOptions) -> None:
        self.identity = identity
        self.roster = roster
        self.options = options
        self.rng = options.rng or random.SystemRandom()
        # what we saw or heard, over the table we were given (never changed here: a simulated
        # swarm gives each of its thousand peers the same one, not a copy each)
        self.addresses: ChainMap[str, list[str]] = ChainMap({}, options.known_addrs or {})
        audit_path = identity.home / AUDIT_NAME if options.persist else None
        self.audit = AuditLog(audit_path, options.wall_clock)
        self.pairing = Pairing(identity, roster, self.audit)
        self.invites = self.pairing.invites
        self.facts = RosterFacts(roster, self._roster_changed, self.audit.refuse)
        now = options.wall_clock()
        self.power: Power = options.power or make_power(identity.settings.power, now)
        self.services: dict[str, Service] = {s.name: s for s in options.services}
        self.load: LoadSource = options.load or LoadSampler()
        self.accelerator = accelerator_source(identity.settings.device.accelerator)
        self.transport: Transport | None = None
        self.core: Membership | None = None
        self.driver: MembershipDriver | None = None
        self.state: DeviceState | None = None
        self._state_at = 0.0
        self._nursery: trio.Nursery | None = None
        self._burst = trio.Event()  # set at this device's next radio burst (see ``radio``)
        self._radio_waiting = 0

    # ---- running -----------------------------------------------------------------------------

    async def run(
        self, transport: Transport, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve on an open ``transport`` until cancelled (``leave`` first, to leave gracefully)."""
        self.transport = transport
        transport.set_admission(self._admits)
        transport.set_handler(self._handle, self._handle_now)
        now = trio.current_time()
        self.state = self._sample(version=0)
        ident = self.identity
        self.core = Membership(
            ident.device_id,
            state=state_bytes(self.state),
            crypto=Ed25519Crypto(ident.signing_key),
            facts=self.facts,
            rng=random.Random(self.rng.random()),
            now=now,
            domain=ident.swarm_id.encode(),
            incarnation=int(self.options.wall_clock()),
            profile=self._profile(self.state),
            tombstone=ident.settings.membership.tombstone_s,
            valid_state=lambda blob: decode_state(blob) is not None,
            lease_of=lease_of,
        )
        self.driver = MembershipDriver(
            transport,
            self.core,
            addresses=self.addrs_of,
            on_changes=self._on_changes,
            on_sent=self._radio_up,
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
        for peer in self.addresses if self.options.join_known else ():
            if peer not in ids and peer != self.identity.device_id and self.roster.admits(peer):
                ids.append(peer)
        self.core.join(ids, trio.current_time())
        self.driver.poke()

    def _learn_addrs(self, peer: str, addrs: Sequence[str]) -> None:
        """The addresses we last saw or heard ``peer`` at go first (newest first, 8 kept). A new
        list each time: the lists given in ``known_addrs`` may be shared (the simulator gives
        every peer the same one for each device)."""
        known = self.addresses.get(peer, ())
        self.addresses[peer] = list(dict.fromkeys([*addrs, *known]))[:8]

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
        return self.pairing.strangers_welcome(self.options.wall_clock())

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
            accelerator=self.accelerator(),
        )

    def _profile(self, state: DeviceState) -> Profile:
        chosen = self.identity.settings.membership.profile
        if chosen != "auto":
            return PROFILES[chosen]
        if battery_saver(state):
            return BATTERY_SAVER
        return ON_BATTERY if state.plugged is False else NORMAL

    async def _sample_loop(self) -> None:
        period = self.identity.settings.membership.sample_period_s
        alarm: Alarm

        def due() -> bool:  # (under a clock with timers: the same sample, in the timer)
            self.refresh_state()
            alarm.deadline = trio.current_time() + period
            return False

        while True:
            alarm = Alarm(trio.current_time() + period, on_due=due)
            await alarm.wait()
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
            self.core.update_state(state_bytes(fresh), now)
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
            self.core.spread(blob, trio.current_time())
            if self.driver is not None:
                self.driver.poke()  # out now, not at the driver's next timer

    def _drop(self, device: str) -> None:
        log.warning("device %s was revoked: dropping it", device[-8:])
        if self.core is not None:
            self.core.forget(device, trio.current_time())
        if self.transport is not None and self._nursery is not None:
            for conn in self.transport.connections(device):
                self._nursery.start_soon(conn.aclose)

    def revoke(self, name_or_id: str) -> Certificate:
        """Revoke a device (admins only): the revocation is taken here and gossiped."""
        cert, rev = self.pairing.revocation(name_or_id, self.options.wall_clock())
        self._spread(revocation_fact(rev.to_wire()))
        return cert

    # ---- pairing -----------------------------------------------------------------------------

    def require_admin(self, action: str, what: str) -> None:
        """Refuse (and audit) an admin's action asked of a device that is not an admin."""
        self.pairing.require_admin(action, what)

    def invite(self, ttl: float, grant: Grant | None = None) -> str:
        """A one-time pairing code (admins only) that points at this device's addresses."""
        now = self.options.wall_clock()
        addrs = list(self.options.listen_addrs())
        return self.pairing.invite(ttl, grant, addrs=addrs, now=now, rng=self.rng)

    def _pair(self, conn: Connection, body: object) -> dict[str, Any]:
        joiner = conn.peer_id
        chain = self.pairing.pair(joiner, body, self.options.wall_clock())
        self._spread(chain_fact(chain_to_wire(chain)))
        assert self.core is not None
        if conn.remote_addr:
            self._learn_addrs(joiner, [conn.remote_addr])
        cert = chain[0]
        log.warning("paired a new device: %s (%s) %s", cert.name, cert.role, joiner[-8:])
        return {
            "chain": chain_to_wire(chain),
            "roster": self.roster.to_wire(),
            "peers": {n: self.addrs_of(n) for n in self.core.members if n != joiner},
        }

    # ---- the radio ---------------------------------------------------------------------------

    async def radio(self) -> None:
        """Returns when sending costs no radio wake of its own. A full member's radio is always
        up: at once. A light member sends in bursts (its heartbeat, a person's request, an
        answer to a peer; see ``_radio_up``): what a service sends on its own (a vault pull,
        a stream's events) waits for the next one and rides along, instead of waking a phone's
        radio every few seconds."""
        core = self.core
        if core is None or not core.light:
            return
        self._radio_waiting += 1
        try:
            await self._burst.wait()
        finally:
            self._radio_waiting -= 1

    def _radio_up(self) -> None:
        """The radio is up (membership sent, a message came in, a person asked for something):
        whatever waits for it goes now."""
        if self._radio_waiting:
            burst, self._burst = self._burst, trio.Event()
            burst.set()

    # ---- messages ----------------------------------------------------------------------------

    async def _handle(self, conn: Connection, body: Any) -> Any:
        if self._handle_now(conn, body):  # membership: the one rule, in one place
            return None
        self._radio_up()
        member = self.roster.admits(conn.peer_id)
        if isinstance(body, dict) and body.get("op") == "pair":
            return self._pair(conn, body)
        if not member:
            raise ProtocolViolation("not a member of this swarm")
        route = split_op(body.get("op")) if isinstance(body, dict) else None
        if route is not None and route[0] in self.services:
            return await self.services[route[0]].handle(conn, route[1], body)
        raise ProtocolViolation(f"unexpected message of type {type(body).__name__}")

    def _handle_now(self, conn: Connection, body: Any) -> bool:
        """A membership message is taken at once (``_handle`` would never wait on it)."""
        if self.driver is None or not isinstance(body, list):
            return False
        if not self.roster.admits(conn.peer_id):
            return False
        self._radio_up()
        self.driver.handle_now(conn, body)
        return True

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
        """A service's request from this device's CLI (``vault.put`` goes to ``vault``): a
        person waits on it, so it goes at once, and what waited for the radio goes with it."""
        self._radio_up()
        route = split_op(op)
        if route is not None and route[0] == "trust":
            return trust_control(self, route[1], args)
        if route is None or route[0] not in self.services:
            raise InvalidArgument(f"unknown request {op!r}")
        return await self.services[route[0]].control(route[1], args)

    # ---- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``swarm status --json`` shows (``_peer_status``)."""
        assert self.core is not None
        return status_json(
            me=self.identity.device_id,
            swarm=self.identity.swarm_id,
            members=self.core.members,
            roster=self.roster,
            services=self.services,
            now=trio.current_time(),
        )

    async def fresh_status(self) -> dict[str, Any]:
        """``status`` for a person waiting on it: a light member, whose view is as old as its
        last heartbeat (minutes), first sends one out of turn (unless one went within
        ``FRESH_S``) and waits up to ``FRESH_WAIT_S`` for the first answer, which brings the
        others' latest records and the round trip time. One radio burst, and it replaces the
        next due heartbeat rather than adding one."""
        core, driver = self.core, self.driver
        assert core is not None
        assert driver is not None
        sent = core.beat(trio.current_time(), unless_within=FRESH_S)
        if sent:
            driver.poke()  # out now, not at the driver's next timer
            with trio.move_on_after(FRESH_WAIT_S):
                await driver.until(lambda: core.beats_unanswered < sent)
        return self.status()

    def set_power(self, battery: float | None, plugged: bool | None) -> dict[str, Any]:
        now = self.options.wall_clock()
        reading = self.power.set(battery_percent=battery, plugged=plugged, now=now)
        self.refresh_state(force=True)
        return {
            "battery_percent": reading.battery_percent,
            "plugged": reading.plugged,
            "minutes_left": reading.minutes_left,
        }
