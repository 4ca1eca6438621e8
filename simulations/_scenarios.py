"""Scenarios: what ``swarm simulate SCENARIO`` runs, and what each measures.

Every scenario builds a ``World`` from the seed, runs it in virtual time (``VirtualClock``: trio's
``MockClock`` with autojump, made cheaper) with trio's scheduler made deterministic, checks the
invariants as it goes, and returns a ``Result`` (metrics, invariants, trace digest, and the
series the plots draw).

- ``gossip``: one event (a device's state changes) at a time from a random device, five times;
  how long until each other peer knows it; the bytes every peer sends per second meanwhile.
- ``failure``: every 30 s a random device crashes (it comes back 60 s later); how long until
  each other peer sees it dead; and false deaths: a peer declared dead while it was up.
- ``partition``: split into halves, heal; time until every view agrees again.
- ``day``: a phone, a laptop and a home server through a day of their profiles (see
  ``devices.toml``): battery over the day, beside the same day with no swarm (the same models,
  in the same run); the swarm's own energy per device and by cause; and how accurately each
  peer's view (status and battery) tracked the others. Membership alone by default; with
  ``--services vault`` (``day_options``) every device also runs its vault service as ``swarm up``
  does (an idle vault: its periodic pulls, a light phone's at its radio bursts), so its syncs
  show in the energy by cause.
- ``churn``: devices leave, crash and come back continuously; how accurate the views stay.
- ``faults``: a random fault schedule from the seed (partitions, isolation, crashes, pauses,
  loss bursts, clock skew), then everything heals; the views must agree again. The test suite
  sweeps it over many seeds; a failing seed replays with ``swarm simulate faults --seed S``.
- ``vault``: every device hosts the vault and writes to it through a random fault schedule and a
  final partition; after healing, every replica must agree and hold every acknowledged write
  (``_vault``).
- ``learn``: a federated learning job (``learn start digits``) across the day's devices, the
  real learning service end to end; accuracy over time, epsilon and energy per device; no
  device past its budget, no record trained on twice (``_learn``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

from homeswarm.swarm import Change, Service, VaultService
from homeswarm.transports import ConnectionLimits, InvalidArgument
from homeswarm.vault import MemoryStore

from ._faults import play, random_schedule
from ._harness import QUIET, Progress, Result, Run, Scenario, day_specs
from ._learn import LEARN
from ._migration import MIGRATION
from ._models import CAUSES, DeviceModel, load_models
from ._placement import run_placement
from ._stats import pct as _pct
from ._stats import rounded
from ._vault import run_vault
from ._world import SimDevice, World


def simulate(
    scenario: str,
    *,
    peers: int | None = None,
    seed: int = 0,
    hours: float | None = None,
    loss: float = 0.0,
    models: Path | None = None,
    progress: Progress | None = None,
    limits: ConnectionLimits | None = None,
    options: dict[str, Any] | None = None,
) -> Result:
    """Run one scenario; bad arguments raise ``InvalidArgument`` with a one-line message.
    ``limits``: each peer's connection manager's (default: the transports'; the benchmark
    compares ``UNLIMITED``, every connection kept as before there was a manager); ``options``:
    the scenario's own (``learn``: epsilon, trust, task), checked by the scenario."""
    if scenario not in SCENARIOS:
        raise InvalidArgument(f"unknown scenario {scenario!r}; one of: {', '.join(SCENARIOS)}")
    entry = SCENARIOS[scenario]
    n = entry.peers if peers is None else peers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgument(f"--peers must be a whole number >= 1, got {n}")
    if n > 5000:
        raise InvalidArgument(f"--peers must be at most 5000, got {n}")
    if n < entry.min_peers:
        raise InvalidArgument(f"{scenario} needs at least {entry.min_peers} peers")
    h = entry.hours if hours is None else hours
    if not (isinstance(h, int | float) and math.isfinite(h) and 0 < h <= 24 * 30):
        raise InvalidArgument(f"--hours must be > 0 and at most 720, got {h}")
    if not (isinstance(loss, int | float) and 0.0 <= loss < 1.0):
        raise InvalidArgument(f"--loss must be within [0, 1), got {loss}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InvalidArgument(f"--seed must be a whole number >= 0, got {seed}")
    given = {k: v for k, v in (options or {}).items() if v is not None}
    if given and entry.options is None:
        names = ", ".join(f"--{k}" for k in given)
        raise InvalidArgument(f"the {scenario} scenario takes no {names}")
    run = Run(scenario, n, seed, h * 3600.0, loss, models, progress)
    run.limits = limits
    if entry.options is not None:
        run.options = entry.options(given)
    return run.execute(entry.body)


# ---- gossip ----------------------------------------------------------------------------------


async def _gossip(sim: Run) -> None:
    world = sim.make_world(sim.servers(sim.n))
    events = 5 if sim.n <= 200 else 3
    latencies: list[float] = []

    async def body(world: World) -> None:
        await trio.sleep(2.0)
        bytes_before, t_before = sum(world.bytes_sent.values()), trio.current_time()
        missed = 0
        most = 0  # the most connections a peer had open at the end of an event
        for _ in range(events):
            origin = sim.rng.choice(world.devices)
            assert origin.peer is not None
            assert origin.peer.state is not None
            want = origin.peer.state.version + 1
            knows: dict[str, float] = {}
            done = trio.Event()

            seen = _first_to_know(world, origin, want, knows, done)
            world.observers.append(seen)
            origin.load.cpu_percent = 50.0 + sim.rng.random() * 40
            origin.peer.refresh_state(force=True)
            if len(world.devices) > 1:
                with trio.move_on_after(60.0):
                    await done.wait()
            world.observers.remove(seen)
            most = max([most, *world.connections()])
            latencies.extend(knows.values())
            missed += len(world.devices) - 1 - len(knows)
            await trio.sleep(5.0)
        spent = trio.current_time() - t_before
        sent = sum(world.bytes_sent.values()) - bytes_before
        sim.metrics.update(
            {
                "events": events,
                "dissemination_p50_s": rounded(_pct(latencies, 0.5)),
                "dissemination_p99_s": rounded(_pct(latencies, 0.99)),
                "dissemination_max_s": rounded(max(latencies) if latencies else None),
                "bytes_per_peer_per_s": rounded(sent / len(world.devices) / spent, 1),
                "missed": missed,  # peers that had not heard an event after 60 s
                "connections_per_peer_max": most,
            }
        )
        sim.series["dissemination"] = sorted(latencies)

    await world.run(body)


def _first_to_know(
    world: World, origin: SimDevice, version: int, knows: dict[str, float], done: trio.Event
) -> Callable[[SimDevice, list[Change]], None]:
    """An observer that notes when each peer first sees ``origin`` at ``version`` or later."""
    start = trio.current_time()

    def seen(observer: SimDevice, changes: list[Change]) -> None:
        for c in changes:
            if c.node == origin.id and c.version >= version and observer.id not in knows:
                knows[observer.id] = c.at - start
                if len(knows) >= len(world.devices) - 1:
                    done.set()

    return seen


# ---- failure ---------------------------------------------------------------------------------


async def _failure(sim: Run) -> None:
    world = sim.make_world(sim.servers(sim.n))
    pairs: list[float] = []
    everyone: list[float] = []
    false_deaths = 0
    crashed_at: dict[str, float] = {}
    detected: dict[str, set[str]] = {}

    def watch(observer: SimDevice, changes: list[Change]) -> None:
        nonlocal false_deaths
        for c in changes:
            if c.status != "dead" or c.gone or c.node == observer.id:
                continue
            subject = world.by_id[c.node]
            core = subject.peer.core if subject.peer is not None else None
            if subject.up and core is not None and core.incarnation <= c.incarnation:
                false_deaths += 1
                world.note("false death", f"{observer.name} declared {subject.name}")
            elif c.node in crashed_at and observer.id not in detected[c.node]:
                detected[c.node].add(observer.id)
                pairs.append(c.at - crashed_at[c.node])
                if len(detected[c.node]) == len([d for d in world.running()]):
                    everyone.append(c.at - crashed_at[c.node])

    world.observers.append(watch)

    async def body(world: World) -> None:
        end = trio.current_time() + sim.seconds
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sim.sample_views, world, end)
            await trio.sleep(10.0)
            while trio.current_time() + 30.0 <= end:
                up = [d for d in world.running() if d.id not in crashed_at]
                if len(up) > 1:
                    victim = sim.rng.choice(up)
                    crashed_at[victim.id] = trio.current_time()
                    detected[victim.id] = set()
                    world.crash(victim)
                    nursery.start_soon(_back_later, world, victim, crashed_at)
                await trio.sleep(30.0)
            await trio.sleep_until(end)
            nursery.cancel_scope.cancel()
        sim.metrics.update(
            {
                "crashes": len(detected),
                "detection_p50_s": rounded(_pct(pairs, 0.5)),
                "detection_p99_s": rounded(_pct(pairs, 0.99)),
                "detection_all_p50_s": rounded(_pct(everyone, 0.5)),
                "false_deaths": false_deaths,
            }
        )
        sim.series["detection"] = sorted(pairs)

    await world.run(body)


async def _back_later(world: World, device: SimDevice, crashed_at: dict[str, float]) -> None:
    await trio.sleep(60.0)
    crashed_at.pop(device.id, None)
    await world.restart(device)


# ---- partition -------------------------------------------------------------------------------


async def _partition(sim: Run) -> None:
    world = sim.make_world(sim.servers(sim.n))
    split = min(sim.seconds, 3600.0) / 2

    async def body(world: World) -> None:
        inv = sim.invariants
        assert inv is not None
        async with trio.open_nursery() as nursery:
            horizon = trio.current_time() + 10.0 + split + 900.0
            nursery.start_soon(sim.sample_views, world, horizon)
            await trio.sleep(10.0)
            order = list(world.devices)
            sim.rng.shuffle(order)
            half = len(order) // 2
            world.partition(order[:half], order[half:])
            await trio.sleep(split)
            world.heal()
            took = await sim.until(lambda: inv.check_agreement(0, record=False), 900.0, 0.25)
            if math.isinf(took):
                inv.check_agreement(trio.current_time())
            await trio.sleep(5.0)
            nursery.cancel_scope.cancel()
        sim.metrics.update({"split_s": rounded(split, 1), "reconverge_s": rounded(took)})

    await world.run(body)


# ---- day -------------------------------------------------------------------------------------


DAY_SERVICES = ("none", "vault")  # what each device runs besides membership in the day


def day_options(given: dict[str, Any]) -> dict[str, Any]:
    """The day's options (``--services``) checked, with defaults."""
    unknown = set(given) - {"services"}
    if unknown:
        raise InvalidArgument(f"the day scenario takes no --{sorted(unknown)[0]}")
    services = given.get("services", "none")
    if services not in DAY_SERVICES:
        raise InvalidArgument(f"--services must be none or vault, got {services!r:.20}")
    return {"services": services}


async def _day(sim: Run) -> None:
    models = load_models(sim.models_path)
    stores: dict[int, MemoryStore] = {}  # each device's vault, across its lives

    def vault(device: SimDevice) -> list[Service]:
        return [VaultService(device.identity, store=stores.setdefault(device.index, MemoryStore()))]

    services = (sim.options or day_options({}))["services"]
    world = sim.make_world(
        day_specs(models, sim.n), models=models, services=vault if services == "vault" else None
    )
    every = 300.0
    right = total = 0
    status_right = 0
    errors: list[float] = []
    battery: dict[str, list[tuple[float, float | None]]] = {d.name: [] for d in world.devices}
    accuracy: list[tuple[float, float]] = []
    # the same day with no swarm: the same models, never any traffic or placed work
    shadows = {
        d.name: DeviceModel(d.model.profile, models, start_hour=d.model.start_hour)
        for d in world.devices
        if d.model is not None
    }
    baseline: dict[str, list[tuple[float, float | None]]] = {name: [] for name in shadows}

    async def body(world: World) -> None:
        nonlocal right, total, status_right
        end = sim.seconds
        mins: dict[str, float] = {}
        base_mins: dict[str, float] = {}
        while True:
            now = trio.current_time()
            for name, shadow in shadows.items():
                shadow.advance(now)
                pct = shadow.percent
                baseline[name].append((now / 3600.0, pct))
                if pct is not None:
                    base_mins[name] = min(base_mins.get(name, 100.0), pct)
            ok = n = 0
            for d in world.devices:
                if d.model is not None:
                    d.model.advance(now)
                pct = d.model.percent if d.model is not None else None
                battery[d.name].append((now / 3600.0, pct))
                if pct is not None:
                    mins[d.name] = min(mins.get(d.name, 100.0), pct)
            for observer in world.running():
                if observer.asleep:
                    continue
                for subject in world.devices:
                    if subject is observer:
                        continue
                    status, state = world.view(observer, subject)
                    up = world.reachable(observer, subject) and not subject.asleep
                    good_status = (status == "alive") == up
                    good = good_status
                    if up and status == "alive" and subject.model is not None:
                        truth = subject.model.percent
                        seen = state.battery_percent if state is not None else None
                        if truth is not None and seen is not None:
                            errors.append(abs(truth - seen))
                            good = good and abs(truth - seen) <= 2.0
                        else:
                            good = good and truth == seen
                    n += 1
                    ok += good
                    status_right += good_status
            right, total = right + ok, total + n
            if n:
                accuracy.append((now / 3600.0, ok / n))
            if now >= end:
                break
            await trio.sleep(min(every, end - now))
        sim.metrics.update(
            {
                "battery_end_percent": {
                    d.name: rounded(d.model.percent, 1) if d.model is not None else None
                    for d in world.devices
                },
                "battery_min_percent": {d.name: rounded(v, 1) for d, v in by_device(world, mins)},
                "energy_wh": {
                    d.name: rounded(d.model.used_wh, 2)
                    for d in world.devices
                    if d.model is not None
                },
                "radio_wh": {
                    d.name: rounded(d.model.radio_wh, 2)
                    for d in world.devices
                    if d.model is not None
                },
                "swarm_wh": {
                    d.name: rounded(d.model.swarm_wh, 3)
                    for d in world.devices
                    if d.model is not None
                },
                "swarm_battery_wh": {
                    d.name: rounded(d.model.swarm_battery_wh, 3)
                    for d in world.devices
                    if d.model is not None and d.model.profile.battery_wh is not None
                },
                "swarm_wh_by_cause": {
                    d.name: {
                        cause: rounded(wh, 4)
                        for cause, wh in d.model.wh_by_cause.items()
                        if cause in CAUSES[:-1] or wh
                    }
                    for d in world.devices
                    if d.model is not None
                },
                "no_swarm_battery_min_percent": {
                    d.name: rounded(base_mins[d.name], 1)
                    for d in world.devices
                    if d.name in base_mins
                },
                "view_accuracy": rounded(right / total if total else None, 4),
                "view_status_accuracy": rounded(status_right / total if total else None, 4),
                "battery_view_error_mean": rounded(
                    sum(errors) / len(errors) if errors else None, 2
                ),
            }
        )
        sim.series["battery"] = battery
        sim.series["battery_no_swarm"] = baseline
        sim.series["accuracy"] = accuracy

    await world.run(body)


def by_device(world: World, values: dict[str, float]) -> list[tuple[SimDevice, float]]:
    return [(d, values[d.name]) for d in world.devices if d.name in values]


# ---- churn -----------------------------------------------------------------------------------


async def _churn(sim: Run) -> None:
    pool = sim.n + max(1, sim.n // 2)
    world = sim.make_world(sim.servers(pool))
    counts = {"joins": 0, "leaves": 0, "crashes": 0}
    right = total = 0

    async def body(world: World) -> None:
        nonlocal right, total
        for d in world.devices[sim.n :]:
            world.crash(d, why="not yet started")
        end = sim.seconds
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sim.sample_views, world, end)
            nursery.start_soon(_churn_events, sim, world, end, counts)
            while trio.current_time() < end:
                await trio.sleep(5.0)
                for observer in world.running():
                    for subject in world.devices:
                        if subject is observer:
                            continue
                        status, _ = world.view(observer, subject)
                        total += 1
                        right += (status == "alive") == subject.up
            nursery.cancel_scope.cancel()
        sim.metrics.update(
            {**counts, "view_accuracy": rounded(right / total if total else None, 4)}
        )

    await world.run(body)


async def _churn_events(sim: Run, world: World, end: float, counts: dict[str, int]) -> None:
    rng = sim.rng
    low, high = max(1, sim.n // 2), len(world.devices)
    while trio.current_time() < end:
        await trio.sleep(rng.expovariate(1 / 10.0))
        up = world.running()
        down = [d for d in world.devices if not d.up]
        if down and (len(up) <= low or rng.random() < 0.5):
            await world.restart(rng.choice(down), why="join")
            counts["joins"] += 1
        elif len(up) > low and len(up) <= high:
            victim = rng.choice(up)
            if rng.random() < 0.7:
                await world.leave(victim)
                counts["leaves"] += 1
            else:
                world.crash(victim)
                counts["crashes"] += 1


# ---- faults ----------------------------------------------------------------------------------


async def _faults(sim: Run) -> None:
    world = sim.make_world(sim.servers(sim.n))
    schedule = random_schedule(random.Random(sim.rng.random()), sim.n, sim.seconds)

    async def body(world: World) -> None:
        inv = sim.invariants
        assert inv is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sim.sample_views, world, sim.seconds + QUIET + 5.0)
            await play(world, schedule, sim.seconds)
            world.burst(0.0)
            world.heal()
            for d in world.devices:
                await world.restart(d)
            took = await sim.until(lambda: inv.check_agreement(0, record=False), QUIET, 0.5)
            if math.isinf(took):
                inv.check_agreement(trio.current_time())
            nursery.cancel_scope.cancel()
        sim.metrics.update(
            {
                "faults": len(schedule),
                "kinds": sorted({f.kind for f in schedule}),
                "reconverge_s": rounded(took),
            }
        )
        sim.series["schedule"] = [f.describe() for f in schedule]

    await world.run(body)


SCENARIOS: dict[str, Scenario] = {
    "gossip": Scenario("gossip", _gossip, peers=50, hours=0.05),
    "failure": Scenario("failure", _failure, peers=10, hours=0.1, min_peers=2),
    "partition": Scenario("partition", _partition, peers=10, hours=0.05, min_peers=2),
    "day": Scenario("day", _day, peers=3, hours=24.0, options=day_options),
    "churn": Scenario("churn", _churn, peers=10, hours=0.25),
    "faults": Scenario("faults", _faults, peers=5, hours=0.04),
    "vault": Scenario("vault", run_vault, peers=5, hours=0.05),
    "placement": Scenario("placement", run_placement, peers=3, hours=24.0),
    "migration": MIGRATION,
    "learn": LEARN,
}
