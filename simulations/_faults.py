"""Random fault schedules (Jepsen's nemeses) drawn from a seed, and how to play one on a world.

Kinds: ``partition`` (two random halves), ``isolate`` (one device), ``crash`` (one device, restarted
after the fault's duration), ``pause`` (one device stops answering), ``loss`` (a burst of extra loss
on every link) and ``skew`` (one device's wall clock moves; it matters when that device restarts:
its incarnation comes from its clock). Faults may overlap; at most half the devices are down at
once, so the swarm is never wiped out. Added by a scenario that stores something
(``with_wipe``): ``wipe`` (one device crashes and loses its disk: ``play``'s ``wipe`` hook
empties what the scenario stores for it; it restarts after the fault's duration). Not drawn at
random, played when scheduled: ``power`` (every device restarts at once on a new address; see
``World.power_cut``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import trio

from ._world import SimDevice, World

KINDS = ("partition", "isolate", "crash", "pause", "loss", "skew")
WIPE = "wipe"


@dataclass(frozen=True, slots=True)
class Fault:
    at: float
    kind: str
    targets: tuple[int, ...]  # device indexes
    duration: float
    value: float = 0.0  # loss probability, or clock skew in seconds

    def describe(self) -> str:
        who = ",".join(str(i) for i in self.targets)
        extra = f" {self.value:+.2f}" if self.kind in ("loss", "skew") else ""
        return f"{self.at:.1f}s {self.kind}[{who}] {self.duration:.1f}s{extra}"


def random_schedule(
    rng: random.Random, n: int, seconds: float, *, mean_gap: float = 12.0
) -> list[Fault]:
    """Faults over ``seconds`` of simulated time for ``n`` devices, gaps exponential."""
    faults: list[Fault] = []
    at = rng.expovariate(1 / mean_gap)
    while at < seconds:
        kind = rng.choice(KINDS if n > 1 else ("crash", "pause", "loss", "skew"))
        one = (rng.randrange(n),)
        if kind == "partition":
            order = list(range(n))
            rng.shuffle(order)
            cut = rng.randint(1, n - 1)
            faults.append(Fault(at, kind, tuple(sorted(order[:cut])), rng.uniform(5, 60)))
        elif kind == "isolate":
            faults.append(Fault(at, kind, one, rng.uniform(5, 60)))
        elif kind == "crash":
            faults.append(Fault(at, kind, one, rng.uniform(2, 60)))
        elif kind == "pause":
            faults.append(Fault(at, kind, one, rng.uniform(1, 10)))
        elif kind == "loss":
            faults.append(Fault(at, kind, (), rng.uniform(2, 20), rng.uniform(0.2, 0.7)))
        else:
            faults.append(Fault(at, kind, one, 0.0, rng.uniform(-300, 300)))
        at += rng.expovariate(1 / mean_gap)
    return faults


def with_wipe(rng: random.Random, n: int, seconds: float, faults: list[Fault]) -> list[Fault]:
    """``faults`` and one ``wipe`` of a random device at a random time within ``seconds``,
    in time order (``rng`` is the wipe's own, so the other faults stay as they were drawn)."""
    wipe = Fault(rng.uniform(0, seconds), WIPE, (rng.randrange(n),), rng.uniform(0.5, 30))
    return sorted([*faults, wipe], key=lambda f: f.at)


async def play(
    world: World,
    faults: list[Fault],
    seconds: float,
    *,
    wipe: Callable[[SimDevice], None] | None = None,
) -> None:
    """Apply the schedule for ``seconds``; faults still in force then are the caller's to end.
    ``wipe``: what a ``wipe`` does to a crashed device's disk (without it, a wipe is a crash)."""
    devices = world.devices
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for fault in faults:
            await trio.sleep_until(start + fault.at)
            targets = [devices[i] for i in fault.targets]
            if fault.kind == "partition":
                others = [d for d in devices if d not in targets]
                world.partition(targets, others)
                nursery.start_soon(_later, fault.duration, world.heal)
            elif fault.kind == "isolate":
                world.isolate(targets[0])
                nursery.start_soon(_later, fault.duration, world.heal)
            elif fault.kind in ("crash", WIPE):
                down = sum(1 for d in devices if not d.up)
                if targets[0].up and down + 1 <= len(devices) // 2:
                    world.crash(targets[0], why=fault.kind)
                    if fault.kind == WIPE and wipe is not None:
                        wipe(targets[0])
                    nursery.start_soon(_restart_later, world, fault.duration, targets[0])
            elif fault.kind == "pause":
                world.pause(targets[0], fault.duration)
            elif fault.kind == "loss":
                world.burst(fault.value)
                nursery.start_soon(_later, fault.duration, lambda: world.burst(0.0))
            elif fault.kind == "power":
                nursery.start_soon(world.power_cut)
            else:
                world.skew(targets[0], fault.value)
        await trio.sleep_until(start + seconds)
        nursery.cancel_scope.cancel()


async def _later(seconds: float, action: Callable[[], None]) -> None:
    await trio.sleep(seconds)
    action()


async def _restart_later(world: World, seconds: float, device: SimDevice) -> None:
    await trio.sleep(seconds)
    await world.restart(device)
