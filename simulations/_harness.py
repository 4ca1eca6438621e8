"""The harness every scenario runs in: one run of the simulator, its result, and the registry
entry a scenario is made of. Scenario bodies live in ``_scenarios``, ``_vault`` and
``_placement``; each takes a ``Run`` and builds its world with it."""

from __future__ import annotations

import gc
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from homeswarm.swarm import Service
from homeswarm.transports import ConnectionLimits, Link

from ._invariants import Invariants
from ._models import Models
from ._world import DeviceSpec, SimDevice, VirtualClock, World, deterministic_trio

Progress = Callable[[float, float], None]  # (simulated seconds done, of total)
LAN = Link(latency=0.002, jitter=0.001)  # the default link where no device model says otherwise
QUIET = 90.0  # after the faults end: time the swarm gets to agree again
GC_THRESHOLD = 100_000  # allocations between young collections while a simulation runs (700)
SAMPLE = 1.0  # how often the view series are sampled, in simulated seconds (day: 300)


@dataclass
class Result:
    scenario: str
    peers: int
    seed: int
    sim_seconds: float
    wall_seconds: float
    metrics: dict[str, Any]
    invariants: dict[str, Any]
    trace_digest: str
    series: dict[str, Any] = field(default_factory=dict)
    log: list[tuple[float, str, str]] = field(default_factory=list)
    args: str = ""  # the options beyond peers and seed that shaped the run (--hours, --loss...)

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "peers": self.peers,
            "seed": self.seed,
            "sim_seconds": round(self.sim_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "metrics": self.metrics,
            "invariants": self.invariants,
            "trace_digest": self.trace_digest,
        }

    @property
    def replay(self) -> str:
        line = f"swarm simulate {self.scenario} --peers {self.peers} --seed {self.seed}"
        return f"{line} {self.args}" if self.args else line


class Run:
    def __init__(
        self,
        scenario: str,
        n: int,
        seed: int,
        seconds: float,
        loss: float,
        models: Path | None,
        progress: Progress | None,
    ) -> None:
        self.scenario, self.n, self.seed, self.seconds = scenario, n, seed, seconds
        self.loss = loss
        self.models_path = models
        self.progress = progress
        self.metrics: dict[str, Any] = {}
        self.series: dict[str, Any] = {}
        self.rng = random.Random(f"{scenario}/{seed}")
        self.world: World | None = None
        self.invariants: Invariants | None = None
        self.limits: ConnectionLimits | None = None  # each peer's connection manager's
        self.options: dict[str, Any] = {}  # the scenario's own (``Scenario.options``)

    def execute(self, body: Callable[[Run], Awaitable[None]]) -> Result:
        deterministic_trio(self.seed)
        start = time.perf_counter()
        # a simulated swarm is a large heap of long-lived objects (peers, connections, tasks)
        # that makes little cyclic garbage: with the default thresholds the collector walked it
        # all again and again (7.4 of 17 s of a 100-peer gossip run); collect far less often
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
        try:
            trio.run(self._main, body, clock=VirtualClock())
        finally:
            gc.set_threshold(*thresholds)
        wall = time.perf_counter() - start
        world, inv = self.world, self.invariants
        assert world is not None
        assert inv is not None
        return Result(
            self.scenario,
            self.n,
            self.seed,
            self.sim_seconds,
            wall,
            self.metrics,
            inv.as_json(),
            world.trace_digest,
            self.series,
            world.log,
            self.args(),
        )

    def args(self) -> str:
        parts = [f"--hours {self.seconds / 3600:g}"]
        if self.loss:
            parts.append(f"--loss {self.loss:g}")
        parts += [
            f"--{k} {v:g}" if isinstance(v, float) else f"--{k} {v}"
            for k, v in self.options.items()
        ]
        return " ".join(parts)

    async def _main(self, body: Callable[[Run], Awaitable[None]]) -> None:
        async with trio.open_nursery() as nursery:
            if self.progress is not None:
                nursery.start_soon(self._report_progress)
            await body(self)
            self.sim_seconds = trio.current_time()
            nursery.cancel_scope.cancel()

    async def _report_progress(self) -> None:
        assert self.progress is not None
        step = max(self.seconds / 200, 1.0)
        while True:
            self.progress(trio.current_time(), self.seconds)
            await trio.sleep(step)

    # ---- building blocks ----------------------------------------------------------------------

    def make_world(
        self,
        specs: list[DeviceSpec],
        *,
        models: Models | None = None,
        start_hour: float = 0.0,
        services: Callable[[SimDevice], Sequence[Service]] | None = None,
        hash_payloads: bool = True,
        homes: Path | None = None,
    ) -> World:
        link = Link(LAN.latency, LAN.jitter, self.loss)
        world = World(
            specs,
            seed=self.seed,
            models=models,
            link=link,
            start_hour=start_hour,
            services=services,
            hash_payloads=hash_payloads,
            limits=self.limits,
            homes=homes,
        )
        self.world = world
        self.invariants = Invariants(world)
        return world

    def servers(self, n: int, prefix: str = "d") -> list[DeviceSpec]:
        width = len(str(n - 1))
        return [DeviceSpec(f"{prefix}{i:0{width}d}", "server") for i in range(n)]

    async def sample_views(self, world: World, until: float, every: float = SAMPLE) -> None:
        """Each ``every`` seconds: how many devices each running peer sees alive."""
        rows = self.series.setdefault("views", [])
        while trio.current_time() < until:
            running = [d for d in world.running() if not d.asleep]
            seen = [alive_seen(d) for d in running]
            truly = len(running)
            if seen:
                rows.append(
                    (trio.current_time(), truly, min(seen), sum(seen) / len(seen), max(seen))
                )
            await trio.sleep(every)

    async def until(self, check: Callable[[], bool], limit: float, step: float = 0.1) -> float:
        """Simulated seconds until ``check()`` holds (polled every ``step``), or ``inf``."""
        start = trio.current_time()
        while trio.current_time() - start <= limit:
            if check():
                return trio.current_time() - start
            await trio.sleep(step)
        return math.inf


def alive_seen(device: SimDevice) -> int:
    peer = device.peer
    if peer is None or peer.core is None:
        return 0
    return sum(1 for m in peer.core.members.values() if m.status == "alive")


def day_specs(models: Models, n: int) -> list[DeviceSpec]:
    """``n`` devices from the profiles: phone, laptop, server first, then the rest, in turn."""
    names = [name for name in ("phone", "laptop", "server") if name in models.devices]
    names += [n for n in models.devices if n not in names]
    specs = []
    for i in range(n):
        profile = models.devices[names[i % len(names)]]
        name = profile.name if i < len(names) else f"{profile.name}-{i // len(names) + 1}"
        specs.append(DeviceSpec(name, profile.role, profile))
    return specs


Body = Callable[[Run], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    """One entry of the registry: what ``swarm simulate NAME`` runs, and its defaults."""

    name: str
    body: Body
    peers: int  # the default --peers
    hours: float  # the default --hours
    min_peers: int = 1
    # the scenario's own options (``swarm simulate learn --epsilon 2``): checked and completed
    # with their defaults, or ``InvalidArgument`` in one line; None: it takes none
    options: Callable[[dict[str, Any]], dict[str, Any]] | None = None
