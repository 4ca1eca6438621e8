"""The ``migration`` scenario: HTM instances follow device telemetry through a day of power changes
and crashes, moved by the kernel mesh, and no event is lost or counted twice.

The devices are the day's (``devices.toml`` through ``day_specs``: a phone, a laptop, a home
server, then more of each), their power from their models (battery, charger, a laptop asleep at
night), from midnight. Each device's ``cpu`` series (its model's cpu, with noise, every
``SAMPLE_S``) feeds one ``anomaly`` instance: an HTM with the watch service's parameter set
(``kernels.TELEMETRY_PARAMS``). The instances are registered in a ``placement.Mesh`` and placed by
it, with the ``anomaly`` kernel's own needs (scope ``personal``, stateful, small), on views built
from the device models; each stream is carried by ``kernels.StreamProducer`` (on the measured
device) and ``kernels.StreamInstance`` (on the instance's home):

- every ``CHECKPOINT_S`` a running instance that applied something new checkpoints (its model's
  ``to_bytes`` and the last seq applied) into the store (the vault, replicated: it survives any
  one device), and the producer, once told, forgets what the checkpoint covers;
- a device crashes (``CRASHES_PER_DAY`` on average, down ``CRASH_DOWN_S``), runs flat, or a laptop
  goes to sleep: its instances stop at once; events sent to it meanwhile are lost in flight. The
  swarm declares it dead after ``DETECT_S`` (a full member: Lifeguard's suspicion; the ``failure``
  scenario measures 5.4 s p50 and 6.4 s p99 with 5 peers), or ``away`` when a light member's lease
  lapses (a phone on battery, or any device on a metered link: ``LEASE_S`` / 2 to ``LEASE_S``);
  ``Mesh.replace_dead`` then moves its instances. A light member back before its lease lapsed
  restarts its own instances;
- at every sample, ``Mesh.rebalance`` moves the instances whose home may no longer run them
  (a phone below its battery floor, or gone light: the policy homes no stateful instance on a
  light member, whose death would show only when its lease lapsed) and places the parked ones:
  a planned move, the old home checkpoints first and hands over, so nothing is replayed;
- the new home fetches the latest checkpoint (its bytes over its own link), restores it, and the
  producer replays what followed (``resume``): downtime is the time from the instance stopping to
  it serving again (detection, transfer, restore and replay at the kernel's own estimate and the
  role's speed, and any time parked with no device that may run it).

The stores of a device survive its crash (a producer's kept events are journalled on its flash);
only what is in memory and in flight is lost. Membership itself is this model of its detection
times, not the real SWIM peers: a day of those takes minutes, and this scenario seconds.

At the end every instance catches up (a parked or stopped one is restored from its checkpoint)
and each stream is compared with a model that was fed every event once, in order, and never
stopped. Metrics: ``events_lost`` (invariant: 0), ``events_duplicated`` (the model's own row
count over the events it applied; invariant: 0), ``scores_equal_unmoved`` (invariant: true),
``migrations`` (moves to another device), ``planned_moves``, ``restarts``, ``downtime_p50_s`` /
``downtime_p99_s`` / ``downtime_max_s``, ``resume_p99_s`` (declared dead to serving), checkpoint
counts and sizes, events replayed, the most events a producer kept.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from homeswarm.errors import InvalidArgument
from homeswarm.kernels import (
    TELEMETRY_PARAMS,
    Checkpoint,
    StreamInstance,
    StreamProducer,
    anomaly,
    anomaly_model,
)
from homeswarm.placement import DEFAULT_CONFIG, DeviceView, Mesh
from homeswarm.placement.testing import laptop, phone, server

from ._harness import Run, Scenario, day_specs
from ._models import load_models
from ._stats import pct, rounded
from ._world import EPOCH, SimDevice

SAMPLE_S = 120.0  # each device's cpu, this often
CHECKPOINT_S = 900.0  # a running instance checkpoints this often (when it applied something)
CRASHES_PER_DAY = 3.0  # per device, at random (exponential gaps)
CRASH_DOWN_S = (60.0, 1800.0)  # how long a crashed device stays down (uniform)
DETECT_S = (4.5, 6.5)  # a full member: declared dead this long after it went silent (uniform)
LEASE_S = 900.0  # a light member: away when its lease lapses, LEASE_S / 2 to LEASE_S after
SAVE_S = 0.004  # saving a telemetry-set model on a laptop core (bench_nab --checkpoints)
RESTORE_S = 0.0023  # restoring one
CPU_PARAMS: dict[str, Any] = {**TELEMETRY_PARAMS, "value_min": 0.0, "value_max": 100.0}
BUILD = {"phone": phone, "laptop": laptop, "server": server}


@dataclass
class Node:
    """One device: its model and what the swarm's membership says of it."""

    device: SimDevice
    up: bool = True  # its process runs (not crashed, not flat)
    awake: bool = True  # (a laptop asleep is off the network)
    status: str = "alive"
    lives: int = 0  # one more each time it stops: a declaration is for one life only
    flat: bool = False

    @property
    def serving(self) -> bool:
        return self.up and self.awake

    @property
    def name(self) -> str:
        return self.device.name


@dataclass
class Stream:
    """One device's cpu series, its producer and its instance."""

    name: str
    source: Node
    id: int  # in the mesh
    producer: StreamProducer
    reference: Any  # an HTM fed every event once, in order: the instance that never moved
    instance: StreamInstance | None = None
    host: Node | None = None  # where the instance serves now
    pending: int = 0  # a resume on its way (its token), 0: none
    stored: bytes | None = None  # the latest checkpoint stored
    stored_applied: int = 0
    down_since: float | None = 0.0  # it stopped serving then (None: serving)
    declared_at: float | None = None
    next_checkpoint: float = CHECKPOINT_S
    expected: list[Any] = field(default_factory=list)
    results: dict[int, Any] = field(default_factory=dict)
    diverged: int = 0


class Migration:
    """The scenario's state and its handlers (one event queue in virtual time)."""

    def __init__(self, sim: Run) -> None:
        self.sim = sim
        self.rng = sim.rng
        models = load_models(sim.models_path)
        self.world = sim.make_world(day_specs(models, sim.n), models=models)
        self.nodes = [Node(d) for d in self.world.devices]
        self.by_id = {n.device.id: n for n in self.nodes}
        self.mesh = Mesh(config=DEFAULT_CONFIG)
        self.needs = anomaly.needs
        ids = self.mesh.add("anomaly", self.needs, len(self.nodes))
        self.streams = [
            Stream(
                f"{n.name}:cpu",
                n,
                int(i),
                StreamProducer(f"{n.name}:cpu"),
                anomaly_model(params=CPU_PARAMS),
            )
            for n, i in zip(self.nodes, ids.tolist(), strict=True)
        ]
        self.queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.order = itertools.count()
        self.tokens = itertools.count(1)
        self.counts = dict.fromkeys(
            (
                "crashes",
                "sleeps",
                "flat",
                "declared",
                "migrations",
                "planned_moves",
                "restarts",
                "parked",
                "checkpoints",
                "acks_lost",
                "lost_in_flight",
            ),
            0,
        )
        self.downtimes: list[float] = []
        self.resumes: list[float] = []
        self.checkpoint_bytes: list[int] = []
        self.kept_max = 0
        self.serves: dict[str, int] = {}  # (re)starts of an instance, by device

    # ---- the event queue -------------------------------------------------------------------

    def at(self, t: float, handler: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self.queue, (t, next(self.order), handler, args))

    async def run(self) -> None:
        end = self.sim.seconds
        for n in self.nodes:
            m = n.device.model
            assert m is not None
            if m.period.asleep:  # (a laptop asleep at midnight went to sleep before the day)
                n.awake, n.status = False, "dead"
            self._schedule_crash(n, 0.0)
        self.mesh.place(self.view())
        home = self.mesh.column("home")
        for s in self.streams:
            target = self._home(home, s)
            if target is not None:
                s.down_since = None  # (its first start is no outage)
                self.start(0.0, s, target, replay=False)
        self.at(0.0, self.tick)
        while self.queue and self.queue[0][0] <= end:
            t, _, handler, args = heapq.heappop(self.queue)
            await trio.sleep_until(t)
            handler(t, *args)
        await trio.sleep_until(end)
        self.finish(end)

    def note(self, what: str, detail: str) -> None:
        self.world.note(what, detail)

    # ---- devices ---------------------------------------------------------------------------

    def view(self) -> list[DeviceView]:
        out = []
        for n in self.nodes:
            m = n.device.model
            assert m is not None
            battery = m.percent
            out.append(
                BUILD[n.device.spec.role](
                    n.device.id,
                    name=n.name,
                    status=n.status,
                    battery_percent=None if battery is None else round(battery, 3),
                    plugged=None if battery is None else m.plugged,
                    cpu_percent=min(100.0, m.cpu),
                    kernels=("anomaly",),
                    rtt_s=2 * m.link.latency_s,
                    light=self.light(n),
                )
            )
        return out

    def light(self, n: Node) -> bool:
        """As ``[membership] light = "auto"``: a phone unless plugged in on an unmetered link,
        and any device on a metered link."""
        m = n.device.model
        assert m is not None
        return m.link.metered or (n.device.spec.role == "phone" and not m.plugged)

    def _schedule_crash(self, n: Node, now: float) -> None:
        gap = self.rng.expovariate(CRASHES_PER_DAY / 86400.0)
        self.at(now + gap, self.crash, n)

    def crash(self, now: float, n: Node) -> None:
        if n.up and n.awake:
            self.counts["crashes"] += 1
            self.stop(now, n, "crash")
            self.at(now + self.rng.uniform(*CRASH_DOWN_S), self.restart, n, "crash")
        self._schedule_crash(n, now)

    def stop(self, now: float, n: Node, why: str) -> None:
        """``n`` goes silent: what it ran is gone, and the swarm will notice."""
        light = self.light(n)  # (as it was when it went silent)
        if why == "asleep":
            n.awake = False
        else:
            n.up = False
        n.lives += 1
        self.note(why, n.name)
        for s in self.streams:
            if s.host is n:
                s.instance, s.host = None, None
                s.down_since = now
        delay = self.rng.uniform(*((LEASE_S / 2, LEASE_S) if light else DETECT_S))
        self.at(now + delay, self.declare, n, n.lives, "away" if light else "dead")

    def restart(self, now: float, n: Node, why: str) -> None:
        if why == "crash":
            if n.up or n.flat:
                return
            n.up = True
        elif why == "wakes":
            n.awake = True
        else:  # powered on
            n.flat, n.up = False, True
        if not n.serving:
            return
        n.status = "alive"
        self.note("back", f"{n.name} {why}")
        # instances still homed here (a light member back before its lease lapsed): start again
        home = self.mesh.column("home")
        for s in self.streams:
            if s.instance is None and not s.pending and self._home(home, s) is n:
                self.counts["restarts"] += 1
                self.start(now, s, n, replay=True)

    def declare(self, now: float, n: Node, life: int, status: str) -> None:
        if n.lives != life or n.serving:
            return  # back already (or silent again: that life's own timer declares it)
        n.status = status
        self.counts["declared"] += 1
        self.note("declared", f"{n.name} {status}")
        held = set(self.mesh.on(n.device.id).tolist())
        for s in self.streams:
            if s.id in held:
                s.declared_at = now
        before = self.mesh.column("home").copy()
        self.mesh.replace_dead(self.view(), n.device.id)
        self._moved(now, before, planned=False)

    # ---- the day's rhythm ------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Every ``SAMPLE_S``: the models advance, devices sleep, wake, run flat or come back,
        each serving device measures its cpu, instances checkpoint, the mesh rebalances."""
        for n in self.nodes:
            m = n.device.model
            assert m is not None
            m.advance(now)
            if m.period.asleep and n.awake and n.up:
                self.counts["sleeps"] += 1
                self.stop(now, n, "asleep")
            elif not m.period.asleep and not n.awake:
                self.restart(now, n, "wakes")
            if n.up and m.empty:
                n.flat = True
                self.counts["flat"] += 1
                self.stop(now, n, "battery empty")
            elif n.flat and m.plugged and (m.percent or 0.0) >= 3.0:
                self.restart(now, n, "powered on")
        for s in self.streams:
            if s.source.serving:
                m = s.source.device.model
                assert m is not None
                value = min(100.0, max(0.0, m.cpu + self.rng.gauss(0.0, 3.0)))
                s.producer.emit(value, EPOCH + now)
                s.expected.append(s.reference.step(value, None))
                self.kept_max = max(self.kept_max, len(s.producer.kept))
                self.deliver(s)
            if s.instance is not None and now >= s.next_checkpoint:
                self.checkpoint(s)
                s.next_checkpoint = now + CHECKPOINT_S
        before = self.mesh.column("home").copy()
        self.mesh.rebalance(self.view())
        self._moved(now, before, planned=True)
        self.at(now + SAMPLE_S, self.tick)

    # ---- streams ---------------------------------------------------------------------------

    def deliver(self, s: Stream) -> None:
        if s.instance is not None and s.host is not None and s.host.serving:
            self._feed(s, s.producer.to_send())
        elif s.pending == 0 and s.instance is None and self._home_id(s) is not None:
            # its home died unnoticed: sent into the void (the replay after the move covers it)
            self.counts["lost_in_flight"] += len(s.producer.to_send())

    def checkpoint(self, s: Stream) -> None:
        inst = s.instance
        if inst is None or inst.applied <= s.stored_applied:
            return
        cp = inst.checkpoint()
        s.stored = cp.to_bytes()
        s.stored_applied = cp.applied
        self.counts["checkpoints"] += 1
        self.checkpoint_bytes.append(len(s.stored))
        if s.source.serving:
            s.producer.acknowledged(cp.applied, inst.epoch)
        else:
            self.counts["acks_lost"] += 1

    def _feed(self, s: Stream, events: list[Any]) -> None:
        assert s.instance is not None
        try:
            scored = s.instance.feed(events)
        except InvalidArgument as exc:  # a gap: an event lost (the invariant says so at the end)
            self.note("gap", f"{s.name}: {exc}")
            return
        for seq, scores in scored:
            if seq in s.results:
                s.diverged += s.results[seq] != scores
            else:
                s.results[seq] = scores

    def _restore(self, s: Stream) -> StreamInstance:
        """``s``'s instance from its last checkpoint (a new one without), the producer told to
        replay what came after."""
        if s.stored is None:
            return StreamInstance(
                s.name, anomaly_model(params=CPU_PARAMS), epoch=s.producer.resume(0)
            )
        cp = Checkpoint.from_bytes(s.stored)
        epoch = s.producer.resume(cp.applied)
        return StreamInstance.restore(cp, anomaly_model, epoch=epoch, stream=s.name)

    def _home_id(self, s: Stream) -> str | None:
        home = self.mesh.instance(s.id)["home"]
        return home if isinstance(home, str) else None

    def _home(self, home: np.ndarray, s: Stream) -> Node | None:
        j = int(home[s.id])
        if j < 0:
            return None
        return self.by_id[self.mesh.instance(s.id)["home"]]

    def _moved(self, now: float, before: np.ndarray, *, planned: bool) -> None:
        after = self.mesh.column("home")
        for s in self.streams:
            if before[s.id] == after[s.id]:
                continue
            target = self._home(after, s)
            was = s.host
            if s.instance is not None and was is not None and was.serving:
                # a planned move: the old home checkpoints and hands over
                self.checkpoint(s)
                s.instance, s.host = None, None
                s.down_since = now
                save_s = SAVE_S / DEFAULT_CONFIG.speed[was.device.spec.role]
            else:
                save_s = 0.0
            if target is None:
                self.counts["parked"] += 1
                s.pending = 0
                self.note("parked", s.name)
                continue
            self.counts["planned_moves" if planned and save_s else "migrations"] += 1
            self.start(now + save_s, s, target, replay=not save_s)

    def start(self, now: float, s: Stream, n: Node, *, replay: bool) -> None:
        """The instance's new (or same) home fetches its checkpoint, restores and replays."""
        m = n.device.model
        assert m is not None
        speed = DEFAULT_CONFIG.speed[n.device.spec.role]
        size = len(s.stored) if s.stored is not None else 0
        link = m.link
        transfer = link.latency_s + size / link.bandwidth
        behind = s.producer.last - s.stored_applied if replay else 0
        rows = [[None, 0.0]] * behind
        work = (RESTORE_S + (anomaly.compute_s({"rows": rows}) if behind else 0.0)) / speed
        token = s.pending = next(self.tokens)
        self.at(now + transfer + work, self.resume, s, n, token)

    def resume(self, now: float, s: Stream, n: Node, token: int) -> None:
        if s.pending != token:
            return  # moved again meanwhile
        s.pending = 0
        if not n.serving or self._home_id(s) != n.device.id:
            return  # its new home went too: it is (or will be) moved again
        s.instance, s.host = self._restore(s), n
        if self.mesh.instance(s.id)["state"] == "migrating":
            self.mesh.settle([s.id])
        if s.down_since is not None:
            self.downtimes.append(now - s.down_since)
            if s.declared_at is not None:
                self.resumes.append(now - s.declared_at)
        s.down_since = s.declared_at = None
        self.note("serves", f"{s.name} on {n.name}")
        self.serves[n.name] = self.serves.get(n.name, 0) + 1
        if s.source.serving:
            self._feed(s, s.producer.to_send())

    # ---- the end ---------------------------------------------------------------------------

    def finish(self, now: float) -> None:
        """Every instance catches up; each stream against the instance that never moved."""
        lost = duplicated = unequal = diverged = 0
        for s in self.streams:
            if s.instance is None:  # parked, or its home down: restore it anywhere
                s.instance = self._restore(s)
            self._feed(s, s.producer.to_send())
            model: Any = s.instance.model
            last = s.producer.last
            missing = sum(1 for seq in range(1, last + 1) if seq not in s.results)
            lost += max(missing, last - s.instance.applied)
            duplicated += model.rows - s.instance.applied
            diverged += s.diverged
            same = [s.results.get(seq) for seq in range(1, last + 1)] == s.expected
            same = same and model.digest() == s.reference.digest()
            unequal += not same
        inv = self.sim.invariants
        assert inv is not None
        for name, value in (
            ("events_lost", lost),
            ("events_duplicated", duplicated),
            ("scores_unequal", unequal + diverged),
        ):
            inv.checked += 1
            if value:
                inv.violate(now, name, f"{value} over {len(self.streams)} streams")
        replayed = sum(s.producer.resent for s in self.streams)
        self.sim.metrics.update(
            {
                "streams": len(self.streams),
                "events": sum(s.producer.last for s in self.streams),
                "events_lost": lost,
                "events_duplicated": duplicated,
                "scores_equal_unmoved": unequal + diverged == 0,
                **self.counts,
                "replayed": replayed,
                "serves_by_device": dict(sorted(self.serves.items())),
                "kept_max": self.kept_max,
                "downtime_p50_s": rounded(pct(self.downtimes, 0.5)),
                "downtime_p99_s": rounded(pct(self.downtimes, 0.99)),
                "downtime_max_s": rounded(max(self.downtimes, default=math.nan)),
                "resume_p99_s": rounded(pct(self.resumes, 0.99)),
                "checkpoint_bytes_median": int(
                    pct([float(b) for b in self.checkpoint_bytes], 0.5) or 0
                ),
                "checkpoint_bytes_max": max(self.checkpoint_bytes, default=None),
                "checkpoint_every_s": CHECKPOINT_S,
                "sample_every_s": SAMPLE_S,
            }
        )
        self.sim.series["downtime_s"] = [rounded(d) for d in self.downtimes]


async def run_migration(sim: Run) -> None:
    await Migration(sim).run()


MIGRATION = Scenario("migration", run_migration, peers=4, hours=24.0, min_peers=2)
