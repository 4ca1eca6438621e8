"""The simulated world: real peers on the memory network, in virtual time, from one seed.

Each device is a real ``swarm.Peer`` (membership, roster, state sampling; and whatever services
it hosts) on a ``MemoryTransport``; its power comes from a device model and its wall clock is the
simulation's, plus any skew a fault gave it. Everything random derives from the seed: the keys, the
network's jitter and loss, each peer's choices, the fault schedule, and trio's own scheduling
(``deterministic_trio``). The trace digest is a SHA-256 over every frame that enters the network
(time, sender, receiver, bytes) and every change a peer's membership reports, so two runs with the
same seed and code give the same digest, byte for byte, and any difference shows.

Faults, after Jepsen's nemeses: ``partition`` (groups), ``isolate`` (one device), ``crash`` and
``restart``, ``pause`` (its traffic both ways is held, then delivered: a process that stops
answering; its timers keep running, as if its network froze), ``burst`` (extra loss everywhere for
a while) and ``skew`` (its wall clock, which sets its incarnation when it restarts).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pyrage
import trio
import trio._core._run as _trio_run  # the scheduler's own state: deterministic_trio, VirtualClock
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from homeswarm.swarm import (
    Change,
    FixedLoad,
    Identity,
    Peer,
    PeerOptions,
    PowerReading,
    Roster,
    Service,
    decode_state,
    issue_certificate,
    public_bytes,
    settings_from_mapping,
    swarm_id_of,
)
from homeswarm.transports import (
    ConnectionLimits,
    InvalidArgument,
    Kind,
    Link,
    MemoryNetwork,
    peek_kind,
)

from ._models import DeviceModel, DeviceProfile, Models, path_between

EPOCH = 1_767_225_600.0  # the simulated wall clock at time 0: 2026-01-01 00:00 UTC


def deterministic_trio(seed: int) -> None:
    """Make trio's scheduler a function of ``seed``: it shuffles each batch of runnable tasks with
    its own ``random.Random``, which Hypothesis seeds through the same hook (trio sorts the batch
    by task creation order first when this flag is on)."""
    _trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    _trio_run._r.seed(seed)


class VirtualClock(trio.abc.Clock):
    """Virtual time that jumps to the next deadline whenever no task can run: what
    ``trio.testing.MockClock(autojump_threshold=0)`` does, one scheduler pass sooner. MockClock
    jumps at the end of an idle pass, so the tasks the jump wakes run in the pass after it (and it
    asks trio for its statistics each time to find the deadline); trio asks this clock how long to
    sleep only when no task is runnable, and it answers by moving to that deadline, so they run
    in the same pass. A simulation makes about one jump per frame delivered. It also keeps
    timers of its own (``call_at``) that the memory network's waits use (``transports.Alarm``),
    which wake a task without trio's cancellation machinery. (Like MockClock, it does not wait
    for worker threads.)"""

    def __init__(self) -> None:
        self._now = 0.0
        self._timers: list[list[Any]] = []  # a heap of [at, seq, fn or None when cancelled]
        self._seq = 0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # (trio asks only when no task is runnable.) Jump to the next deadline, trio's or a
        # timer's, and run the timers due; while they leave no task runnable (a timer's work was
        # done in the timer: ``Alarm``'s ``on_due``), go on to the next, without a scheduler
        # pass per timer. Trio's own deadlines are never passed: they stop the loop.
        timers = self._timers
        pop = heapq.heappop
        runner = None
        while True:
            while timers and timers[0][2] is None:
                pop(timers)
            if timers and timers[0][0] < deadline:
                deadline = timers[0][0]
            if self._now < deadline < math.inf:
                self._now = deadline
            now = self._now
            fired = False
            while timers and timers[0][0] <= now:
                fn = pop(timers)[2]
                if fn is not None:
                    fn()
                    fired = True
            if not fired:
                return 0.0
            # (what ``trio.lowlevel.current_statistics()`` says, read without building it: it
            # cost 10 % of a day's simulation, asked once per timer)
            if runner is None:
                runner = _trio_run.GLOBAL_RUN_CONTEXT.runner
            if runner.runq or runner.entry_queue.size():
                return 0.0
            deadline = runner.deadlines.next_deadline()
            while timers and timers[0][2] is None:
                pop(timers)
            if not (timers and timers[0][0] < deadline):
                return 0.0

    # the memory network's timers (``transports.MemoryNetwork``): a reader waits on these
    # rather than in a cancel scope, whose every expiry trio pays for with an exception

    def call_at(self, at: float, fn: Callable[[], None]) -> list[Any]:
        """Call ``fn`` when time reaches ``at``, in the pass where trio's own deadlines at that
        time expire (before the pass runs its tasks); ``fn`` may only reschedule tasks."""
        self._seq += 1
        timer = [at, self._seq, fn]
        heapq.heappush(self._timers, timer)
        return timer

    def cancel_timer(self, timer: list[Any]) -> None:
        timer[2] = None

    def __repr__(self) -> str:
        return f"<VirtualClock at {self._now:.6f}>"


# ---- deterministic keys ----------------------------------------------------------------------

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _bech32_polymod(values: Iterable[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, g in enumerate(gen):
            if (top >> i) & 1:
                chk ^= g
    return chk


def bech32(hrp: str, data: bytes) -> str:
    """BIP-173 bech32 of ``data`` (age writes its keys this way)."""
    words, acc, bits = [], 0, 0
    for byte in data:
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            words.append((acc >> bits) & 31)
    if bits:
        words.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    mod = _bech32_polymod([*expanded, *words, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(mod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32[w] for w in words + checksum)


def age_identity(secret: bytes) -> pyrage.x25519.Identity:
    """The age X25519 identity with this 32-byte secret."""
    return pyrage.x25519.Identity.from_str(bech32("age-secret-key-", secret).upper())


# ---- power -----------------------------------------------------------------------------------


class SimPower:
    """A device model as a peer's power source (``swarm._device.Power``)."""

    simulated = True

    def __init__(self, model: DeviceModel | None) -> None:
        self.model = model

    def read(self, now: float) -> PowerReading:
        model = self.model
        if model is None:
            return PowerReading(None, None, None)
        model.advance(trio.current_time())
        if model.profile.battery_wh is None:
            return PowerReading(None, True, None)
        return PowerReading(model.percent, model.plugged, model.minutes_left())

    def set(
        self, *, battery_percent: float | None = None, plugged: bool | None = None, now: float
    ) -> PowerReading:
        model = self.model
        if model is None or model.profile.battery_wh is None:
            raise InvalidArgument("this simulated device has no battery")
        model.advance(trio.current_time())
        if battery_percent is not None:
            model.energy_wh = model.profile.battery_wh * battery_percent / 100
        if plugged is not None:
            model.override_plugged = plugged
        return self.read(now)


# ---- devices ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    name: str
    role: str
    profile: DeviceProfile | None = None  # None: always on, plugged, on the default link
    light: str = "auto"  # its [membership] light


@dataclass(eq=False)
class SimDevice:
    index: int
    spec: DeviceSpec
    identity: Identity
    model: DeviceModel | None
    power: SimPower
    load: FixedLoad
    peer: Peer | None = None
    scope: trio.CancelScope | None = None
    up: bool = False
    skew: float = 0.0
    lives: int = 0
    asleep: bool = False
    place: str = "home"
    leaving: bool = False
    flat: bool = False  # off because its battery ran out
    moves: int = 0  # how many times it came back on a new address
    remembered: dict[str, list[str]] | None = None  # addresses it knows at its next start

    @property
    def id(self) -> str:
        return self.identity.device_id

    @property
    def name(self) -> str:
        return self.spec.name


Observer = Callable[["SimDevice", list[Change]], None]


class World:
    """N devices of one swarm on a simulated network. Run its methods inside ``trio.run``."""

    def __init__(
        self,
        specs: Sequence[DeviceSpec],
        *,
        seed: int,
        models: Models | None = None,
        link: Link | None = None,
        start_hour: float = 0.0,
        membership: str = "auto",
        services: Callable[[SimDevice], Sequence[Service]] | None = None,
        hash_payloads: bool = True,
        limits: ConnectionLimits | None = None,
        homes: Path | None = None,
    ) -> None:
        if not specs:
            raise InvalidArgument("a world needs at least one device")
        self.seed = seed
        self.rng = random.Random(seed)
        # what each life of a device hosts besides membership (the vault, placement): called at
        # every (re)start; what must survive a crash (a store) is the caller's to keep
        self.services = services
        # whether the trace digest covers the bytes and sizes of frames, or only their time and
        # ends (age encryption draws its own randomness, so ciphertexts, and even their lengths,
        # differ from run to run)
        self.hash_payloads = hash_payloads
        self.limits = limits  # each peer's connection manager's (None: the transports' default)
        self._addr_lists: dict[str, tuple[int, list[str]]] = {}  # device -> (moves, addresses)
        # every device's addresses, and the sum of their moves when they were taken
        self._known: tuple[int, dict[str, list[str]]] | None = None
        self.models = models
        self.start_hour = start_hour
        root = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        root_public = public_bytes(root)
        self.swarm_id = swarm_id_of(root_public)
        self.roster = Roster(self.swarm_id, root_public)
        self.devices: list[SimDevice] = []
        chains = []
        for i, spec in enumerate(specs):
            key = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
            age = age_identity(self.rng.randbytes(32))
            settings = settings_from_mapping(
                {
                    "device": {"name": spec.name, "role": spec.role},
                    "swarm": {"id": self.swarm_id, "root": root_public.hex()},
                    "membership": {"profile": membership, "light": spec.light},
                }
            )
            # a device's home: where services that keep files keep them (the learning ledgers);
            # none by default (the membership and the vault's test stores keep nothing there)
            home = (homes or Path("/simulated")) / spec.name
            identity = Identity(home, key, age, settings)
            model = None
            if spec.profile is not None and models is not None:
                model = DeviceModel(spec.profile, models, start_hour=start_hour)
            device = SimDevice(i, spec, identity, model, SimPower(model), FixedLoad(5.0, 2048.0))
            cert = issue_certificate(
                root,
                issuer="root",
                swarm=self.swarm_id,
                device=device.id,
                name=spec.name,
                role=spec.role,
                age_recipient=str(age.to_public()),
                now=EPOCH,
            )
            chains.append((cert,))
            self.devices.append(device)
        self.roster.add_chains(chains)
        self.by_id = {d.id: d for d in self.devices}
        # what the tap looks up per frame: each device's model, and its id as bytes
        self._models = {d.id: d.model for d in self.devices if d.model is not None}
        self._names = {d.id: d.id.encode() for d in self.devices}
        self.net = MemoryNetwork(random.Random(self.rng.random()), default_link=link or Link())
        self.net.tap = self._tap
        self._digest = hashlib.sha256()
        self.bytes_sent: dict[str, int] = dict.fromkeys(self.by_id, 0)
        self.observers: list[Observer] = []
        self._asked: dict[tuple[str, str, int], str] = {}  # (asker, asked, id) -> cause
        self.log: list[tuple[float, str, str]] = []  # (time, what, detail): faults and events
        self._nursery: trio.Nursery | None = None
        self._links_set = False

    # ---- tracing -------------------------------------------------------------------------------

    def _tap(self, at: float, src: str, dst: str, data: bytes) -> None:
        size = len(data)
        names = self._names
        a = names.get(src) or src.encode()
        b = names.get(dst) or dst.encode()
        # (one update of the same bytes as four: a day's simulation hashes every frame)
        if self.hash_payloads:
            self._digest.update(b"".join((_AT_SIZE.pack(at, size), a, b, data)))
        else:  # age adds a header stanza of random length ("grease"): sizes differ too
            self._digest.update(b"".join((_AT.pack(at), a, b)))
        bytes_sent = self.bytes_sent
        bytes_sent[src] = bytes_sent.get(src, 0) + size
        cause = ""
        models = self._models
        model = models.get(src)
        if model is not None and model.link_at(at).costly:
            cause = self._cause(src, dst, data)
            model.traffic(at, cause, sent=size)
        model = models.get(dst)
        if model is not None and model.link_at(at).costly:
            cause = cause or self._cause(src, dst, data)
            model.traffic(at, cause, received=size)

    def _cause(self, src: str, dst: str, data: bytes) -> str:
        """What a frame is for, as the energy accounting names it (see ``_models.CAUSES``): from
        its envelope ``[1, kind, id, body]``; a response takes its request's cause.

        A one-way membership message, almost every frame, is named from a peek at its first
        bytes, without decoding it: the envelope's (``transports.peek_kind``), then the body's
        ``[version, "type"`` (a short array, a small version, a short type string: what
        ``swarm``'s ``encode_message`` writes); anything else is decoded in full."""
        peek = peek_kind(data)
        if peek is not None and peek[0] is Kind.ONEWAY:
            at = peek[1]
            if (
                len(data) > at + 3
                and 0x92 <= data[at] <= 0x9F  # a short array of at least two items
                and data[at + 1] < 0x80  # a small positive version
                and data[at + 2] & 0xE0 == 0xA0  # a short string: the type
            ):
                kind = data[at + 3 : at + 3 + (data[at + 2] & 0x1F)]
                cause = _MEMBERSHIP_CAUSES_PEEKED.get(kind, "other")
                if kind == b"sync" and (self._light(src) or self._light(dst)):
                    cause = "heartbeats"
                return cause
        return self._decoded_cause(src, dst, data)

    def _decoded_cause(self, src: str, dst: str, data: bytes) -> str:
        """``_cause`` from the whole frame, decoded."""
        try:
            _, kind, ident, body = msgpack.unpackb(data[4:], raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            return "other"
        if kind in (1, 3):  # a response or an error: its request's
            return self._asked.pop((dst, src, ident), "other")
        cause = "other"
        if isinstance(body, list) and len(body) > 1:
            cause = _MEMBERSHIP_CAUSES.get(body[1], "other")
            if cause == "gossip" and body[1] == "sync" and (self._light(src) or self._light(dst)):
                cause = "heartbeats"
        elif isinstance(body, dict):
            op = body.get("op")
            service = op.partition(".")[0] if isinstance(op, str) else ""
            cause = {"vault": "vault sync", "kernels": "kernels", "learn": "learning"}.get(
                service, "other"
            )
        if kind == 0:
            if len(self._asked) > 100_000:
                self._asked.clear()  # (requests never answered: keep this bounded)
            self._asked[(src, dst, ident)] = cause
        return cause

    def _light(self, node: str) -> bool:
        device = self.by_id.get(node)
        peer = device.peer if device is not None else None
        return peer is not None and peer.core is not None and peer.core.light

    def _changed(self, device: SimDevice, changes: list[Change]) -> None:
        for c in changes:
            flag = b"g" if c.gone else b"c"
            self._digest.update(
                struct.pack("<dqq", c.at, c.incarnation, c.version)
                + flag
                + device.id.encode()
                + c.node.encode()
                + c.status.encode()
            )
        for observe in self.observers:
            observe(device, changes)

    @property
    def trace_digest(self) -> str:
        return self._digest.hexdigest()

    def note(self, what: str, detail: str = "") -> None:
        self.log.append((trio.current_time(), what, detail))
        self._digest.update(f"{trio.current_time()!r} {what} {detail}".encode())

    # ---- running -------------------------------------------------------------------------------

    async def run(self, body: Callable[[World], Any], *, settled: bool = True) -> None:
        """Start every device (as a settled swarm, or each joining through the first), run
        ``body(world)``, then stop everything."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.models is not None:
                self._apply_models()
                nursery.start_soon(self._model_loop)
            first = self.devices[0]
            for device in self.devices:
                seeds = [] if settled or device is first else [first]
                # (settled: each view is given below, so nobody asks the others for theirs: a
                # thousand peers joining three known peers each had 3,000 full states of 300 KB
                # in flight at once, most of a big swarm's peak memory)
                await self.start(device, seeds=seeds, join_known=not settled)
            if settled:
                self._settle()
            await body(self)
            nursery.cancel_scope.cancel()

    async def start(
        self, device: SimDevice, *, seeds: Sequence[SimDevice] = (), join_known: bool = True
    ) -> None:
        """Start (or restart) a device's peer process (``join_known``: ``PeerOptions``')."""
        assert self._nursery is not None
        if device.up:
            return
        seed_addrs = [(s.id, [_addr(s)]) for s in seeds]
        await self._nursery.start(self._serve, device, seed_addrs, join_known)

    async def _serve(
        self,
        device: SimDevice,
        seeds: list[tuple[str, list[str]]],
        join_known: bool = True,
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        addr = _addr(device)
        options = self._options(device, addr, seeds, join_known)
        peer = Peer(device.identity, self.roster.copy(), options)
        transport = self.net.transport(device.id, address=addr, limits=self.limits)
        device.peer, device.up, device.leaving = peer, True, False
        device.lives += 1
        with trio.CancelScope() as scope:
            device.scope = scope
            async with transport:
                await peer.run(transport, task_status=task_status)

    def _options(
        self, device: SimDevice, addr: str, seeds: list[tuple[str, list[str]]], join_known: bool
    ) -> PeerOptions:
        if device.remembered is not None:
            known, device.remembered = device.remembered, None
        else:
            # every device's (its own too, which a peer skips), one table for every peer (which
            # never changes it: what it learns goes in a table of its own)
            moves = sum(d.moves for d in self.devices)  # (a device moved: a new table)
            if self._known is None or self._known[0] != moves:
                self._known = (moves, {d.id: self._addrs(d) for d in self.devices})
            known = self._known[1]
        return PeerOptions(
            listen_addrs=lambda: [addr],
            seeds=seeds,
            known_addrs=known,
            rng=random.Random(self.rng.random()),
            wall_clock=lambda: EPOCH + trio.current_time() + device.skew,
            load=device.load,
            persist=False,
            power=device.power,
            on_changes=lambda changes: self._changed(device, changes),
            services=self.services(device) if self.services is not None else (),
            metered=lambda: device.model is not None and device.model.link.metered,
            join_known=join_known,
        )

    def _settle(self) -> None:
        """Every running peer knows every other as alive, as in a swarm that ran a while."""
        records = []
        for d in self.devices:
            if d.up and d.peer is not None and d.peer.core is not None:
                records.append(d.peer.core.me.alive)
        now = trio.current_time()
        for d in self.devices:
            if d.up and d.peer is not None and d.peer.core is not None:
                d.peer.core.settle([r for r in records if r is not None], now)
                if d.peer.driver is not None:
                    d.peer.driver.poke()

    # ---- faults --------------------------------------------------------------------------------

    def crash(self, device: SimDevice, why: str = "crash") -> None:
        if not device.up:
            return
        self.note(why, device.name)
        self.net.crash(device.id)
        device.up = False
        if device.scope is not None:
            device.scope.cancel()

    async def restart(self, device: SimDevice, why: str = "restart") -> None:
        if device.up:
            return
        self.note(why, device.name)
        others = [d for d in self.devices if d.up and d is not device]
        await self.start(device, seeds=others[:3])

    async def power_cut(self) -> None:
        """Every device goes off at once and comes back on a new address (a new DHCP lease),
        remembering only the others' old ones; each then sees the others on the LAN, as mDNS
        would show them."""
        self.note("power cut")
        old = {d.id: [_addr(d)] for d in self.devices}
        for device in self.devices:
            self.crash(device, why="power off")
        for device in self.devices:
            device.moves += 1
            device.remembered = {k: v for k, v in old.items() if k != device.id}
        for device in self.devices:
            await self.start(device)
        for device in self.devices:
            self.sight(device)

    def sight(self, device: SimDevice) -> None:
        """``device`` sees every other running device on the LAN (an mDNS sighting each)."""
        if device.peer is None or not device.up:
            return
        for other in self.devices:
            if other is not device and other.up:
                device.peer.join([(other.id, [_addr(other)])])

    async def leave(self, device: SimDevice) -> None:
        """Leave gracefully (``swarm up`` stopped with Ctrl-C), then stop."""
        if not device.up or device.peer is None:
            return
        self.note("leave", device.name)
        device.leaving = True
        await device.peer.leave(0.5)
        self.crash(device, why="stopped")

    def pause(self, device: SimDevice, seconds: float) -> None:
        self.note("pause", f"{device.name} {seconds:.1f}s")
        self.net.pause(device.id, trio.current_time() + seconds)

    def partition(self, *groups: Iterable[SimDevice]) -> None:
        named = [[d.name for d in g] for g in groups]
        self.note("partition", " | ".join(",".join(g) for g in named))
        self.net.partition(*([d.id for d in g] for g in groups))

    def isolate(self, device: SimDevice) -> None:
        self.note("isolate", device.name)
        self.net.isolate(device.id)

    def heal(self) -> None:
        self.note("heal")
        self.net.heal()
        for d in self.devices:
            if d.asleep:
                self.net.isolate(d.id)

    def burst(self, loss: float) -> None:
        self.note("loss", f"{loss:.2f}")
        self.net.burst_loss = loss

    def skew(self, device: SimDevice, seconds: float) -> None:
        self.note("skew", f"{device.name} {seconds:+.1f}s")
        device.skew = seconds

    # ---- device models -------------------------------------------------------------------------

    async def _model_loop(self) -> None:
        while True:
            models = [d.model for d in self.devices if d.model is not None]
            wait = min([m.seconds_to_next_period() for m in models] + [60.0])
            await trio.sleep(max(wait, 1e-3))
            self._apply_models()
            for d in self.devices:
                model = d.model
                if model is None:
                    continue
                if d.up and model.empty:
                    d.flat = True
                    self.crash(d, why="battery empty")
                elif d.flat and model.plugged and _booted(d):
                    d.flat = False
                    await self.restart(d, why="powered on")

    def _apply_models(self) -> None:
        now = trio.current_time()
        moved: list[SimDevice] = []
        for d in self.devices:
            model = d.model
            if model is None:
                continue
            model.advance(now)
            d.load.cpu_percent = model.cpu
            place = model.period.place
            if place != d.place:
                self.note("moves", f"{d.name} {place}")
                d.place = place
                moved.append(d)
            asleep = model.period.asleep
            if asleep != d.asleep:
                d.asleep = asleep
                self.note("sleeps" if asleep else "wakes", d.name)
                if asleep:
                    self.net.isolate(d.id)
                else:
                    self.net.heal(d.id)
        if moved or not self._links_set:
            self._links_set = True
            self._set_links()
        for d in moved:
            # the OS tells an app of a new network at once (a phone's connectivity callback):
            # a phone that leaves home is light before it sends anything on cellular
            if d.up and d.peer is not None and d.peer.core is not None:
                d.peer.refresh_state()

    def _set_links(self) -> None:
        modelled = [d for d in self.devices if d.model is not None]
        for i, a in enumerate(modelled):
            for b in modelled[i + 1 :]:
                assert a.model is not None
                assert b.model is not None
                same = a.place == b.place == "home"
                self.net.set_link(a.id, b.id, path_between(a.model.link, b.model.link, same))

    # ---- views ---------------------------------------------------------------------------------

    def view(self, observer: SimDevice, subject: SimDevice) -> tuple[str | None, Any]:
        """(status, decoded state) of ``subject`` in ``observer``'s membership."""
        peer = observer.peer
        if peer is None or peer.core is None:
            return None, None
        member = peer.core.members.get(subject.id)
        if member is None:
            return None, None
        state = decode_state(member.state) if member.state else None
        return member.status, state

    def running(self) -> list[SimDevice]:
        return [d for d in self.devices if d.up]

    def _addrs(self, device: SimDevice) -> list[str]:
        """``device``'s addresses as a peer starts knowing them: one list, shared by every peer
        (which never changes it in place), not one per pair of peers."""
        moves, addrs = self._addr_lists.get(device.id, (-1, []))
        if moves != device.moves:
            addrs = [_addr(device)]
            self._addr_lists[device.id] = (device.moves, addrs)
        return addrs

    def connections(self) -> list[int]:
        """How many connections each running peer has open."""
        return [
            len(d.peer.transport.connections())
            for d in self.devices
            if d.up and d.peer is not None and d.peer.transport is not None
        ]

    def reachable(self, a: SimDevice, b: SimDevice) -> bool:
        return a.up and b.up and not self.net.blocked(a.id, b.id)


_MEMBERSHIP_CAUSES = {
    "ping": "probes",
    "req": "probes",
    "ack": "acks",
    "nack": "acks",
    "gossip": "gossip",
    "sync": "gossip",
}
_MEMBERSHIP_CAUSES_PEEKED = {k.encode(): v for k, v in _MEMBERSHIP_CAUSES.items()}
_AT_SIZE = struct.Struct("<dI")
_AT = struct.Struct("<d")


def _addr(device: SimDevice) -> str:
    base = "/memory/" + device.id
    return f"{base}/{device.moves}" if device.moves else base


def _booted(device: SimDevice) -> bool:
    """A device that went off with an empty battery comes back once it has some charge."""
    model = device.model
    return model is None or model.percent is None or model.percent >= 3.0
