"""The ``vault`` scenario: every device hosts the vault and writes to it while a random fault
schedule (``_faults``) runs, and then for ``SPLIT`` seconds more while the swarm is split in two
random halves (the faults still in force stay: a crashed device stays down); then everything heals
and restarts, and the replicas must come to agree with no acknowledged write lost. So
``converge_s`` is always the time to agree after a partition heals (and the crashed restart).

The schedule holds one ``wipe`` too (with two devices or more): a device crashes and its disk is
emptied (a wiped vault directory); it restarts after the fault's duration with an empty store,
under a new stream, and must get everything back from the others.

Devices take the roles server, laptop and phone in turn (a phone may not read ``private``: it
holds that scope's ciphertext and passes it on). Each keeps one ``MemoryStore`` across its lives:
the simulated disk. ``apply`` keeps a copy of every record before the node acknowledges anything,
and nothing else survives a crash: each life starts a new ``VaultService`` whose node is rebuilt
from the store. The nodes compact early (``SETTINGS``), so snapshots travel in these runs too.

Writes: at random times (exponential gaps, the same rate for every device) a random running
device puts or deletes a random key through the service's ``control``, as the CLI does. Each key
has one scope for the whole run, drawn from the seed, and a device writes only keys of scopes it
may read; values are unique. A write is *acknowledged* when the call returned. Every attempt is
kept with its causal context: what the writer's documents held just before the call (``seen``:
its version vectors, less what it holds but could not apply yet; or less), and once acknowledged
the sequence number its update got (or more). Write ``b`` *follows* ``a`` when ``b``'s context
holds ``a``'s update; both bounds err on the side of calling two writes concurrent, which only
ever allows more outcomes, never fewer.

Held is not seen: a device holds, undecrypted, an update of an epoch whose key has not reached it
(its creator sealed it before it knew who may read the scope, then was cut off or crashed); what
it writes to that key meanwhile is concurrent with that update, and when the key comes the older
value may win, as the CRDT orders concurrent writes (``swarm simulate vault --peers 3 --seed
1104 --hours 0.01``: a value written at 0.2 s by a device cut off at once comes back at 67 s over
twelve later writes of the others).

Checks, through the scenario's ``Invariants``:

- ``vault-durable``, at every acknowledgement: the writer's store holds the update (or a snapshot
  that covers it), so the write survives a crash that comes right after (and ``vault-scope``: the
  write went to the scope asked for);
- ``vault-agreement``, after healing (polled, for at most ``AGREE_WITHIN`` s):
  every replica holds the same records, the devices that may read a scope hold the same content
  in it, and none holds an update it cannot decrypt;
- ``vault-lost``, once the writes in flight are settled: an acknowledged write that no other write
  follows shows on every replica that may read its scope (its value; for a delete, no value),
  unless a concurrent write to that key won (the CRDT keeps one, the same everywhere). A write
  never acknowledged (its device crashed under it) may have happened or not: it may win, it is
  never required; nor is one whose only copy was on a disk a wipe emptied (``writes_wiped``).

A compromised device (with three devices or more), when the fault schedule ends: the last
device, stolen, pushes to every other running device that holds some of ``personal`` a forged,
empty ``personal`` snapshot claiming every stream the thief knows up to 10^6 more than it holds
(a device that holds nothing of the scope cannot disprove it and is not sent it: see
``vault._replica``). Every
device reads ``personal``, so each must refuse it (``vault-forged``); the usual checks then show
it erased nothing.

Metrics: ``writes_acknowledged``, ``writes_lost`` (must be 0), ``converge_s`` (from the heal
until every replica agrees), ``replicas_agree``; ``views_converge_s``, from the heal until the
membership views agreed (the vault syncs with members seen alive; null if the replicas agreed
first); and ``stale_values``: keys left with a value that a later write overwrote while it held
it unread (see above; allowed, counted).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass

import pyrage
import trio

from homeswarm.swarm import Service, VaultService, readable_scopes
from homeswarm.vault import (
    MEMORY_TIERS,
    SCOPES,
    EntryNotFound,
    MemoryStore,
    NodeSettings,
    Replica,
    Snapshot,
    Update,
    VaultError,
    Vectors,
    decode_record,
    lacking,
    sign,
    stream_device,
)

from ._faults import play, random_schedule, with_wipe
from ._harness import Run
from ._invariants import Invariants
from ._world import DeviceSpec, SimDevice, World

ROLES = ("server", "laptop", "phone")
WRITE_GAP = 3.0  # mean seconds between two writes of one device
WRITE_TIMEOUT = 5.0  # a write not acknowledged by then had its device crash under it
DELETES = 0.2  # the share of writes that are deletes
SPLIT = 30.0  # seconds of the final partition, after the fault schedule
AGREE_WITHIN = 300.0  # seconds after healing for every replica to agree
POLL = 0.1  # seconds between agreement checks (the resolution of converge_s) ...
SLOW_POLL = 1.0  # ... and after the first minute
# compaction early, by count only: ciphertext lengths vary from run to run (age pads its header
# at random), so a threshold in bytes would make the same seed compact at different times
SETTINGS = NodeSettings(compact_after=24, compact_min_bytes=2**62)


@dataclass(eq=False)
class Write:
    n: int
    device: SimDevice
    op: str  # "put" or "rm"
    key: str
    scope: str
    text: str | None  # the value's JSON text; None for a delete
    context: Vectors  # what the writer's documents reflected just before the call (``seen``)
    held: Vectors  # what it held then: its version vectors
    at: float
    seq: int | None = None  # the sequence number of its update (or more), once acknowledged
    origin: str = ""  # the stream its update went to (the writer's store), once acknowledged
    acked: bool = False
    wiped: bool = False  # its only copy was on a disk that a wipe emptied: no longer required

    def follows(self, other: Write, *, held: bool = False) -> bool:
        """Whether this write had seen ``other`` (with ``held``: held it, maybe unable to read
        it); never, if ``other`` was not acknowledged."""
        context = self.held if held else self.context
        had = context.get(other.scope, {}).get(other.origin, 0)
        return other.seq is not None and had >= other.seq

    def describe(self) -> str:
        what = f"put {self.text}" if self.op == "put" else "rm"
        where = f"{self.key} ({self.scope})"
        return f"write {self.n} at {self.at:.3f}s on {self.device.name}: {where} {what}"


def seen(replica: Replica) -> Vectors:
    """What the replica's documents reflect of what it holds: per scope and origin, the updates
    before the first it holds but cannot decrypt yet; nothing of a scope whose document waits for
    a missing item, or holds a snapshot it cannot decrypt."""
    out: Vectors = {}
    for scope, vector in replica.vectors().items():
        s = replica._scopes[scope]
        held = [r for records in s.unapplied.values() for r in records]
        if s.doc is None or s.pending() or any(isinstance(r, Snapshot) for r in held):
            out[scope] = {}
            continue
        caps: dict[str, int] = {}
        for r in held:
            if isinstance(r, Update):
                caps[r.origin] = min(caps.get(r.origin, r.seq), r.seq - 1)
        out[scope] = {o: min(n, caps.get(o, n)) for o, n in vector.items()}
    return out


def vault_keys(rng: random.Random, count: int) -> dict[str, str]:
    """``count`` keys of a person's memory tiers, each with its scope."""
    return {f"{rng.choice(MEMORY_TIERS)}/k{i:02d}": rng.choice(SCOPES) for i in range(count)}


class VaultRun:
    """The vault side of a run: the stores, the service of each device's life, the writes."""

    world: World
    inv: Invariants

    def __init__(self, n: int, rng: random.Random, keys: dict[str, str]) -> None:
        self.rng = rng
        self.keys = keys
        self.stores = [MemoryStore() for _ in range(n)]  # each device's disk, across its lives
        self.hosted: dict[int, VaultService] = {}  # the service of each device's current life
        self.writes: list[Write] = []
        self.attempts = 0
        self.views_at: float | None = None  # when the membership views agreed after healing
        self.wipes = 0  # disks emptied

    def services(self, device: SimDevice) -> list[Service]:
        """What the world starts with each life of ``device``."""
        store = self.stores[device.index]
        service = VaultService(device.identity, store=store, settings=SETTINGS)
        self.hosted[device.index] = service
        return [service]

    def wipe(self, device: SimDevice) -> None:
        """``device``'s disk is emptied while it is down (a ``wipe`` fault): its acknowledged
        writes that no other store holds yet are gone with it, and no longer required."""
        others = [s for i, s in enumerate(self.stores) if i != device.index]
        for w in self.writes:
            if w.device is device and w.acked and not any(holds(s, w) for s in others):
                w.wiped = True
        self.stores[device.index] = MemoryStore()
        self.wipes += 1

    def replica(self, device: SimDevice) -> Replica | None:
        service = self.hosted.get(device.index)
        node = service.node if service is not None and device.up else None
        return None if node is None else node.replica

    # ---- writes ---------------------------------------------------------------------------------

    async def writers(self, end: float) -> None:
        """Writes at random times until ``end``; returns once none is in flight."""
        rng = self.rng
        rate = len(self.world.devices) / WRITE_GAP
        async with trio.open_nursery() as nursery:
            while True:
                gap = rng.expovariate(rate)
                if trio.current_time() + gap >= end:
                    break
                await trio.sleep(gap)
                up = self.world.running()
                if not up:
                    continue
                device = rng.choice(up)
                readable = readable_scopes(device.identity)
                keys = [k for k, s in self.keys.items() if s in readable]
                if not keys:
                    continue
                key = rng.choice(keys)
                self.attempts += 1
                text = None
                if rng.random() >= DELETES:
                    filler = "x" * rng.randrange(0, 300)
                    text = json.dumps({"n": self.attempts, "by": device.name, "pad": filler})
                nursery.start_soon(self.write, device, key, text)

    async def write(self, device: SimDevice, key: str, text: str | None) -> None:
        service = self.hosted.get(device.index)
        node = service.node if service is not None and device.up else None
        if service is None or node is None:
            return  # its peer is starting: the vault is not open yet
        scope = self.keys[key]
        op = "rm" if text is None else "put"
        now = trio.current_time()
        replica = node.replica
        w = Write(
            self.attempts, device, op, key, scope, text, seen(replica), replica.vectors(), now
        )
        self.writes.append(w)
        args = {"key": key} if text is None else {"key": key, "value": text, "scope": scope}
        with trio.move_on_after(WRITE_TIMEOUT):
            try:
                reply = await service.control(op, args)
            except EntryNotFound:
                self.writes.remove(w)  # nothing to delete on this device: no write at all
                return
            except VaultError:
                return  # not acknowledged
            w.acked = True
        if not w.acked:
            return
        used = [reply["scope"]] if op == "put" else reply["scopes"]
        if used != [scope]:
            self.inv.violate(now, "vault-scope", f"{w.describe()}: went to {used}")
        w.origin = node.replica.stream
        w.seq = node.replica.vectors().get(scope, {}).get(w.origin, 0)
        self.check_durable(w)

    def check_durable(self, w: Write) -> None:
        """The writer's store holds the acknowledged write's update, or a snapshot over it."""
        self.inv.checked += 1
        if holds(self.stores[w.device.index], w):
            return
        at = trio.current_time()
        self.inv.violate(at, "vault-durable", f"{w.describe()}: acknowledged, not in its store")

    # ---- the compromised device ---------------------------------------------------------------

    def forge(self, thief: SimDevice, victim: SimDevice) -> int:
        """``thief`` pushes a forged empty snapshot over ``victim``'s stream to every other
        running device; how many refused it (each must: they all read its scope)."""
        src = self.replica(thief)
        if src is None:
            return 0
        scope = "personal"
        receivers = [
            (d, r)
            for d in self.world.running()
            if d is not thief and (r := self.replica(d)) and r.vectors().get(scope)
        ]
        known = src.vectors().get(scope, {})
        if not receivers or not any(stream_device(o) == victim.id for o in known):
            return 0
        epoch = src.keyring.current(scope, src.directory.revoked)
        recipient = None if epoch is None else src.keyring.recipient(epoch.key)
        if epoch is None or recipient is None:
            return 0
        empty = pyrage.encrypt(b"\x00\x00", [recipient])
        covers = tuple((o, n + 10**6) for o, n in sorted(known.items()))
        unsigned = Snapshot(
            src.swarm, scope, src.device, epoch.number, epoch.creator, covers, empty, bytes(64)
        )
        forged = dataclasses.replace(unsigned, signature=sign(src._signing_key, unsigned.payload()))
        self.world.note("forged snapshot", f"{thief.name} over {victim.name}")
        refused = 0
        for d, _ in receivers:
            service = self.hosted[d.index]
            node = service.node
            assert node is not None
            changes, rejections = node.replica.receive([forged])
            node._persist(changes)
            if rejections:
                refused += 1
            else:
                at = trio.current_time()
                self.inv.violate(at, "vault-forged", f"{d.name} took the forged snapshot")
        return refused

    # ---- checks --------------------------------------------------------------------------------

    def disagreement(self) -> str | None:
        """Why the replicas do not agree yet (None: they do)."""
        replicas: list[tuple[SimDevice, Replica]] = []
        for d in self.world.devices:
            replica = self.replica(d)
            if replica is None:
                return f"{d.name}: its vault is not running"
            replicas.append((d, replica))
        first, mine = replicas[0][0], replicas[0][1].vectors()
        for d, r in replicas[1:]:
            theirs = r.vectors()
            if theirs != mine:
                return (
                    f"{first.name} and {d.name} hold different updates: {d.name} lacks "
                    f"{lacking(mine, theirs)} of {first.name}'s, {first.name} lacks "
                    f"{lacking(theirs, mine)} of {d.name}'s"
                )
        for scope in SCOPES:
            readers = [(d, r.content(scope)) for d, r in replicas if scope in r.readable]
            for d, content in readers[1:]:
                if content != readers[0][1]:
                    keys = sorted(
                        k
                        for k in set(content) | set(readers[0][1])
                        if content.get(k) != readers[0][1].get(k)
                    )
                    return f"{scope}: {d.name} and {readers[0][0].name} differ on {keys[:5]}"
        for d, r in replicas:
            for scope, row in r.status()["scopes"].items():
                if row["unapplied"]:
                    return f"{d.name} cannot decrypt {row['unapplied']} {scope} updates it holds"
        return None

    async def until_agreed(self, deadline: float) -> bool:
        """Poll until the replicas agree (True), or ``deadline`` (False); meanwhile note when
        the membership views first agree (``views_at``): the vault syncs with members seen alive."""
        start = trio.current_time()
        while True:
            now = trio.current_time()
            if self.views_at is None and self.inv.check_agreement(now, record=False):
                self.views_at = now
            if self.disagreement() is None:
                return True
            if now >= deadline:
                return False
            await trio.sleep(POLL if now - start < 60.0 else SLOW_POLL)

    def stale_values(self) -> int:
        """Keys whose value in the end is that of a write another write overwrote, holding it but
        unable to read it yet (see the module doc); not a violation: the writes were concurrent."""
        stale = 0
        by_key: dict[str, list[Write]] = {}
        for w in self.writes:
            by_key.setdefault(w.key, []).append(w)
        for key, writes in sorted(by_key.items()):
            scope = writes[0].scope
            reader = next(d for d in self.world.devices if scope in readable_scopes(d.identity))
            replica = self.replica(reader)
            shown = None if replica is None else replica.content(scope).get(key)
            final = [w for w in writes if w.acked and w.text is not None and w.text == shown]
            if any(x.follows(w, held=True) for w in final for x in writes if x is not w):
                stale += 1
        return stale

    def check_lost(self) -> int:
        """Acknowledged writes missing or wrong on a replica that may read their scope."""
        at = trio.current_time()
        shown: dict[str, list[tuple[SimDevice, dict[str, str]]]] = {s: [] for s in SCOPES}
        for d in self.world.devices:
            replica = self.replica(d)
            if replica is None:
                continue  # (a disagreement already)
            for scope in replica.readable:
                shown[scope].append((d, replica.content(scope)))
        by_key: dict[str, list[Write]] = {}
        for w in self.writes:
            by_key.setdefault(w.key, []).append(w)
        lost = 0
        for key, writes in sorted(by_key.items()):
            for w in writes:
                if not w.acked or w.wiped or any(x.follows(w) for x in writes if x is not w):
                    continue
                allowed = {w.text} | {x.text for x in writes if x is not w and not w.follows(x)}
                self.inv.checked += len(shown[w.scope])
                wrong = [
                    f"{d.name} shows {content.get(key) or 'nothing'}"
                    for d, content in shown[w.scope]
                    if content.get(key) not in allowed
                ]
                if wrong:
                    lost += 1
                    self.inv.violate(at, "vault-lost", f"{w.describe()}: {'; '.join(wrong[:3])}")
        return lost


def holds(store: MemoryStore, w: Write) -> bool:
    """Whether ``store`` holds ``w``'s update, or a snapshot over it."""
    seq = w.seq or 0
    if seq and (w.scope, w.origin, seq) in store.updates:
        return True
    for scope, data in store.snapshots.values():
        if scope != w.scope:
            continue
        record = decode_record(data)
        if isinstance(record, Snapshot) and dict(record.covers).get(w.origin, 0) >= seq > 0:
            return True
    return False


async def run_vault(sim: Run) -> None:
    n = sim.n
    width = len(str(n - 1))
    # every device a full member: the invariants' deadlines are the sync protocol's, in seconds;
    # a light phone syncs at its radio bursts, minutes apart (tests/swarm/test_radio.py)
    specs = [DeviceSpec(f"d{i:0{width}d}", ROLES[i % len(ROLES)], light="off") for i in range(n)]
    rng = sim.rng
    drawn = rng.random()
    schedule = random_schedule(random.Random(drawn), n, sim.seconds)
    if n > 1:  # one wiped disk, drawn apart so that the other faults stay those of the seed
        schedule = with_wipe(random.Random(f"{drawn!r}/wipe"), n, sim.seconds, schedule)
    run = VaultRun(n, random.Random(rng.random()), vault_keys(rng, max(8, 3 * n)))
    world = sim.make_world(specs, services=run.services, hash_payloads=False)
    inv = sim.invariants
    assert inv is not None
    run.world, run.inv = world, inv
    took = math.inf
    healed = 0.0
    refused = 0

    async def body(world: World) -> None:
        nonlocal took, healed, refused
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            horizon = start + sim.seconds + SPLIT + AGREE_WITHIN
            nursery.start_soon(sim.sample_views, world, horizon)
            async with trio.open_nursery() as writes:
                writes.start_soon(run.writers, start + sim.seconds + SPLIT)
                await play(world, schedule, sim.seconds, wipe=run.wipe)
                if n >= 3:  # the compromised device (module doc)
                    refused = run.forge(world.devices[-1], world.devices[0])
                if n > 1:
                    order = list(world.devices)
                    rng.shuffle(order)
                    half = rng.randint(1, n - 1)
                    world.partition(order[:half], order[half:])
                await trio.sleep(SPLIT)
                world.burst(0.0)
                world.heal()
                healed = trio.current_time()
                for d in world.devices:
                    await world.restart(d)
                if await run.until_agreed(healed + AGREE_WITHIN):
                    took = trio.current_time() - healed
                    world.note("vault agrees", f"{took:.1f}s after healing")
            nursery.cancel_scope.cancel()
        agreed = math.isfinite(took)
        if not agreed:
            why = run.disagreement()
            inv.violate(
                trio.current_time(),
                "vault-agreement",
                f"not within {AGREE_WITHIN:.0f} s of healing: {why}",
            )
        lost = run.check_lost()
        views = run.views_at
        acked = [w for w in run.writes if w.acked]
        sim.metrics.update(
            {
                "faults": len(schedule),
                "kinds": sorted({f.kind for f in schedule}),
                "writes_acknowledged": len(acked),
                "deletes_acknowledged": sum(1 for w in acked if w.op == "rm"),
                "writes_unacknowledged": len(run.writes) - len(acked),
                "writes_lost": lost,
                "writes_wiped": sum(1 for w in acked if w.wiped),
                "wipes": run.wipes,
                "forged_refused": refused,
                "stale_values": run.stale_values(),
                "converge_s": round(took, 3) if agreed else None,
                "views_converge_s": None if views is None else round(views - healed, 3),
                "replicas_agree": agreed,
            }
        )
        sim.series["schedule"] = [f.describe() for f in schedule]
        sim.series["writes"] = [
            (round(w.at, 3), w.device.name, w.op, w.key, w.scope, w.acked) for w in run.writes
        ]

    await world.run(body)
