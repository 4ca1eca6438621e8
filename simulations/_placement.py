"""The ``placement`` scenario: a day of kernels on a phone, a laptop and a home server, placed by
our policy and by each baseline on the same trace.

The day starts at midnight, as in ``day``. The trace is drawn from the seed once
(``draw_trace``), before any world runs. Each device asks for kernels at a rate set by the period
of its day it is in (its profile in ``devices.toml``):

- the phone: 50 an hour while it is off its charger at home, 40 an hour away (on cellular),
  4 an hour on its charger at night (background work: photo tagging, indexing, embeddings);
- the laptop: 30 an hour plugged in at the desk, 12 an hour on battery, none asleep;
- the server asks for nothing (it serves).

Each request is a kernel from ``WORKLOADS`` (every energy class and scope, latency budgets from
50 ms to 5 minutes; private data in one request in seven from the phone by day, two in five on
its charger at night, one in three from the laptop), drawn with the weights of the asking
device's mix, and the compute it takes on the reference device (a laptop core): the kernel's
nominal figure times a log-normal factor (sigma 0.4), as inputs vary. The policy is told that
figure (``compute_s``), as a kernel estimates it from its input.

Then the same day runs once per policy (``swarm``, ``always-local``, ``always-server``,
``random``, ``latency-greedy``, ``energy-greedy``: the one baseline that keeps every rule of our
filter, and ``optimal``), each in its own ``World`` from the same seed, side by side in
virtual time. At each request, if the asking device is up, the policy gets the view that device's
own peer has at that moment (its ``PlacementService.view()``: membership status, measured RTT,
the gossiped state), with ``queue`` set as a real peer would know it (here: the runs waiting or
running on this device; elsewhere: the runs this device has in flight there).

The cost model of a run placed on a device (the truth the policy never sees directly):

- network, to another device only: one way is the world's link between the two (latency plus
  half its jitter), plus the input's bytes at the link's bandwidth and ``REMOTE_OVERHEAD_S``
  (the request's own handling); the reply is one way plus the output's bytes. A device that is
  not reachable (asleep, flat, cut off) fails the run after ``FAIL_S``, and it is placed once
  more on a fresh view with that device ruled out, as ``placement.Runner`` does;
- queue: each device runs ``CORES[role]`` kernels at once, first come first served;
- compute: the work over the role's speed, ``SPEED`` (reference: a laptop core; the same figures
  the policy assumes), slowed by the device's background load (its period's cpu, not our runs,
  which queue instead) as the policy models it (``1 - 0.75 * cpu%``); latency = network + queue
  + compute (+ ``FAIL_S`` for a run placed again), a miss if over the budget;
- energy of compute: while it runs, the device's model gets ``extra_cpu`` of
  ``100 * min(cpu, cores) / cores`` percent (a core of a phone is half its cpu, of a laptop a
  quarter, of a server an eighth), so its draw rises by that share of its ``cpu_w``;
- energy of transfers, on both ends, by each end's own access link (``DeviceModel.traffic``:
  its energy per byte sent and received, its wake-up from idle and its tail, as ``devices.toml``
  gives them); the link stays in its high-power state for the transfer and its tail, through
  the device model's own ``radio_on_until``, so a transfer in a tail the gossip keeps up anyway
  costs no more radio.

Metrics, per policy (``metrics["policies"][name]``): energy used in Wh (total and by device,
everything the models drew, idle included), ``kernel_wh`` (the compute and transfers the runs
added, by device), the phone's battery at the end and lowest, ``phone_empty_h`` (hours the phone
was off with an empty battery), budget misses, latency percentiles, privacy violations (a kernel
on a device whose scopes exclude its scope, or on a relay: judged on the device's real settings),
every rule of the policy's filter the chosen device broke (``rules_broken``), requests refused
(no device may run them, or the second placement failed too), lost (the asking device was off),
failed (placed on a device that was not reachable, then placed again), and where runs went. The
top level repeats our policy's headline figures. A privacy violation by our policy is an
invariant violation (``privacy``). The phone's battery at the end is at the end of the run: over
a whole day, after an hour on its charger (from 23:00); its lowest point and ``phone_empty_h``
say more about the day.

The offline optimum (``solve_optimum``): before any world runs, the device models alone are
played through the trace (``offline_options``: for each request, every device up, awake,
reachable and allowed by every rule of our filter, with the energy and latency of running it
there), and a mixed-integer program (scipy's ``milp``, HiGHS) picks one device per request,
knowing the whole future: least energy, a latency miss priced above any energy, no device given
more compute per minute than its cores. Its plan runs as the ``optimal`` policy in a world of
its own, measured like the others; ``metrics["energy_vs_optimal"]`` is our energy over its
(every device's draw, idle included) and ``kernel_energy_vs_optimal`` the same for the energy
the runs added; ``metrics["optimum"]`` says what the program found. The optimum is optimal for
its model of the truth: it counts a cellular radio's tail whole (its models see no gossip that
keeps the radio up anyway) and queueing only as capacity, so a policy can measure below it.

With ``hidden_speed`` a device is truly slower (or faster) than its role says, in every world;
with ``calibrate`` our policy learns from its runs' performance counters (``Calibration``) and
``metrics["calibration"]`` lists what it learnt per (kernel, device).

The trace digest covers every world's frames and membership changes and every decision.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from homeswarm.kernels import Kernel, Needs, Registry
from homeswarm.placement import (
    DEFAULT_CONFIG,
    Calibration,
    Decision,
    DeviceView,
    InlineExecutor,
    Policy,
    PolicyConfig,
    admit,
    baselines,
    place,
    violations,
)
from homeswarm.swarm import PlacementService
from homeswarm.transports import Link

from ._harness import LAN, Result, Run, day_specs
from ._invariants import Invariants
from ._models import DeviceModel, DeviceProfile, Models, load_models, path_between
from ._stats import pct as _pct
from ._stats import rounded
from ._world import SimDevice, World

POLICIES = (
    "swarm",
    "always-local",
    "always-server",
    "random",
    "latency-greedy",
    "energy-greedy",
    "optimal",
)
SPEED = {"phone": 0.4, "laptop": 1.0, "server": 1.5}  # reference: a laptop core
CORES = {"phone": 2, "laptop": 4, "server": 8}  # kernels at once; a kernel's share of the cpu
LOAD_SLOWDOWN = 0.75  # compute slows by this times the device's background cpu share
REMOTE_OVERHEAD_S = 0.005  # a remote run's own handling (request, reply), besides the network
FAIL_S = 2.0  # how long a run placed on an unreachable device takes to fail
SAMPLE_S = 60.0  # the phone's battery is sampled this often
SERIES_S = 300.0  # and kept for the plot this often


# ---- the workload ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    """A kernel as the trace asks for it: its needs, its input and output sizes, its weights in
    each mix (phone by day, phone on its charger, laptop)."""

    kernel: Kernel
    in_bytes: int
    out_bytes: int
    weights: tuple[float, float, float]

    @property
    def name(self) -> str:
        return self.kernel.name

    @property
    def needs(self) -> Needs:
        return self.kernel.needs


def _identity(value: Any) -> Any:
    return value


def _workload(
    name: str,
    doc: str,
    needs: Needs,
    in_bytes: int,
    out_bytes: int,
    weights: tuple[float, float, float],
) -> Workload:
    return Workload(Kernel(name, _identity, needs, doc=doc), in_bytes, out_bytes, weights)


KB = 1024
WORKLOADS: tuple[Workload, ...] = (
    _workload(
        "notify-rank",
        "rank a notification",
        Needs(scope="personal", energy="tiny", memory_mb=8, latency_budget_s=0.1, compute_s=0.002),
        2 * KB,
        256,
        (30, 0, 5),
    ),
    _workload(
        "autocomplete",
        "complete what is being typed",
        Needs(
            scope="personal", energy="tiny", memory_mb=32, latency_budget_s=0.05, compute_s=0.004
        ),
        512,
        256,
        (20, 0, 10),
    ),
    _workload(
        "weather-card",
        "render a public weather card",
        Needs(scope="public", energy="small", memory_mb=16, latency_budget_s=0.5, compute_s=0.02),
        4 * KB,
        8 * KB,
        (8, 0, 2),
    ),
    _workload(
        "classify",
        "label a text",
        Needs(
            scope="personal", energy="medium", memory_mb=128, latency_budget_s=1.0, compute_s=0.05
        ),
        4 * KB,
        256,
        (12, 0, 15),
    ),
    _workload(
        "embed",
        "embed a text chunk",
        Needs(
            scope="personal", energy="medium", memory_mb=256, latency_budget_s=2.0, compute_s=0.1
        ),
        8 * KB,
        3 * KB,
        (10, 10, 20),
    ),
    _workload(
        "message-search",
        "search the message archive",
        Needs(scope="private", energy="small", memory_mb=64, latency_budget_s=0.5, compute_s=0.03),
        1 * KB,
        4 * KB,
        (8, 0, 10),
    ),
    _workload(
        "health-trends",
        "trends in health records",
        Needs(scope="private", energy="medium", memory_mb=128, latency_budget_s=3.0, compute_s=0.4),
        64 * KB,
        2 * KB,
        (4, 10, 5),
    ),
    _workload(
        "photo-tag",
        "tag a photo",
        Needs(
            scope="personal", energy="large", memory_mb=512, latency_budget_s=10.0, compute_s=1.5
        ),
        300 * KB,
        1 * KB,
        (4, 30, 3),
    ),
    _workload(
        "transcribe",
        "transcribe a voice note",
        Needs(
            scope="personal",
            energy="large",
            cpu=2.0,
            memory_mb=768,
            latency_budget_s=8.0,
            compute_s=3.0,
        ),
        480 * KB,
        2 * KB,
        (3, 0, 5),
    ),
    _workload(
        "mail-summary",
        "summarise a mail thread",
        Needs(
            scope="private", energy="large", memory_mb=1024, latency_budget_s=15.0, compute_s=2.5
        ),
        48 * KB,
        2 * KB,
        (2, 0, 10),
    ),
    _workload(
        "search-index",
        "index new documents for search",
        Needs(
            scope="private",
            energy="large",
            cpu=2.0,
            memory_mb=1024,
            latency_budget_s=300.0,
            compute_s=30.0,
        ),
        4096 * KB,
        64 * KB,
        (0, 20, 5),
    ),
)
BY_NAME = {w.name: w for w in WORKLOADS}
MIXES = ("phone-day", "phone-night", "laptop")
WORK_SIGMA = 0.4


def registry() -> Registry:
    """The scenario's kernels, as each simulated device offers them."""
    return Registry(w.kernel for w in WORKLOADS)


# ---- the trace -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request: at ``at`` simulated seconds, device ``device`` asks for ``kernel``, whose
    input takes ``work_s`` on the reference device."""

    at: float
    device: str
    kernel: str
    work_s: float


def rate_of(profile: DeviceProfile, hour: float) -> tuple[float, str | None]:
    """Requests an hour from a device of this profile at this hour of the day, and their mix."""
    period = profile.period_at(hour)
    if profile.role == "phone":
        if period.plugged:
            return 4.0, "phone-night"
        return (50.0 if period.place == "home" else 40.0), "phone-day"
    if profile.role == "laptop" and not period.asleep:
        return (30.0 if period.plugged else 12.0), "laptop"
    return 0.0, None


def draw_trace(
    rng: random.Random,
    devices: Sequence[tuple[str, DeviceProfile | None]],
    seconds: float,
    *,
    start_hour: float = 0.0,
    rate: float = 1.0,
) -> list[Arrival]:
    """Requests from each (name, profile) over ``seconds`` from ``start_hour``, in time order:
    a Poisson process per device whose rate follows its day (``rate_of``, times ``rate``)."""
    out: list[tuple[float, int, Arrival]] = []
    for index, (name, profile) in enumerate(devices):
        if profile is None:
            continue
        t = 0.0
        while t < seconds:
            hour = (start_hour + t / 3600.0) % 24.0
            end = min(seconds, t + profile.next_change_h(hour) * 3600.0)
            per_hour, mix = rate_of(profile, hour)
            per_hour *= rate
            if mix is not None and per_hour > 0:
                weights = [w.weights[MIXES.index(mix)] for w in WORKLOADS]
                at = t
                while True:
                    at += rng.expovariate(per_hour / 3600.0)
                    if at >= end:
                        break
                    w = rng.choices(WORKLOADS, weights)[0]
                    work = w.needs.compute_s * rng.lognormvariate(0.0, WORK_SIGMA)
                    out.append((at, index, Arrival(at, name, w.name, work)))
            t = max(end, t + 1e-6)
    out.sort(key=lambda item: (item[0], item[1]))
    return [a for _, _, a in out]


# ---- one policy's day ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """One device that could run one request, and what that would cost in truth."""

    device: str
    wh: float  # compute and transfers, both ends, the radio's tail estimated
    latency_s: float  # without queueing
    compute_s: float
    role: str


@dataclass(frozen=True, slots=True)
class Options:
    """Request ``index`` (at ``at``, with its latency budget) and the devices that could run it."""

    index: int
    at: float
    budget_s: float
    options: tuple[Option, ...]


def _transfer_wh(
    model: DeviceModel, now: float, sent: int, received: int, airtime: float, latency: float
) -> float:
    """What a remote run's transfers would cost a device (the request now, the reply after
    ``latency``), as ``DeviceModel.traffic`` charges them: bytes on its access link, a wake-up
    if the link is idle, and on a link with a tail, the time it stays up beyond where it would
    be anyway."""
    link = model.link
    joules = link.bytes_j(sent, received)
    if now >= model.radio_on_until:
        joules += link.wake_j
    tail = link.tail_s
    if link.radio_w and tail:
        first = max(0.0, now + airtime + tail - max(now, model.radio_on_until))
        joules += link.radio_w * (first + min(latency, tail))
    if latency > tail:
        joules += link.wake_j  # the reply finds the link idle again
    return joules / 3600.0


def offline_options(
    world: World,
    trace: Sequence[Arrival],
    seconds: float,
    *,
    models: Models,
    start_hour: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> list[Options]:
    """Every device that could run each request of the trace, with the truth of what it would
    cost there, from the device models alone (what the optimum knows of the future): a device
    could when it is up (not flat), awake and, for another device's request, reachable, and
    every rule of the policy's filter holds on its state then (its real scopes and relay flag,
    executor, memory, the battery floor on its modelled battery). Its cost: the energy of the
    compute and of the transfers at both ends (the radio's tail counted whole: these models
    see no gossip keeping it up) and the latency without queueing. ``world`` is not run: it
    only names the devices and their settings."""
    devices = world.devices
    fresh = {
        d.id: DeviceModel(d.spec.profile, models, start_hour=start_hour)
        for d in devices
        if d.spec.profile is not None
    }
    by_name = {d.name: d for d in devices}
    out: list[Options] = []
    for index, arrival in enumerate(trace):
        if arrival.at >= seconds:
            break
        asker = by_name.get(arrival.device)
        if asker is None or asker.id not in fresh:
            continue
        now = arrival.at
        for each in fresh.values():
            each.advance(now)
        if fresh[asker.id].period.asleep or fresh[asker.id].empty:
            continue  # lost, as by every policy
        workload = BY_NAME[arrival.kernel]
        needs = workload.needs
        options: list[Option] = []
        for device in devices:
            model = fresh.get(device.id)
            if model is None or model.period.asleep or model.empty:
                continue
            settings = device.identity.settings.device
            entry = DeviceView(
                id=device.id,
                name=device.name,
                role=device.spec.role,
                battery_percent=model.percent,
                plugged=model.plugged if model.percent is not None else None,
                cpu_percent=min(100.0, model.cpu),
                memory_free_mb=device.load.memory_free_mb,
                scopes=settings.effective_scopes(),
                relay_only=settings.relay_only,
                executor="inline",
                kernels=(arrival.kernel,),
            )
            if admit(arrival.kernel, needs, entry, config=config) is not None:
                continue
            role = device.spec.role
            background = model.period.cpu
            compute = arrival.work_s / (SPEED[role] * (1.0 - LOAD_SLOWDOWN * background / 100.0))
            share = 100.0 * min(needs.cpu, CORES[role]) / CORES[role]
            more = min(100.0, background + share) - min(100.0, background)
            wh = more / 100.0 * model.profile.cpu_w * compute / 3600.0
            latency = compute
            if device is not asker:
                mine = fresh[asker.id]
                same = mine.period.place == model.period.place == "home"
                link = path_between(mine.link, model.link, same)
                one_way = link.latency + link.jitter / 2
                bandwidth = link.bandwidth or math.inf
                up = one_way + workload.in_bytes / bandwidth + REMOTE_OVERHEAD_S
                down = one_way + workload.out_bytes / bandwidth
                latency = up + compute + down
                airtime = workload.in_bytes / bandwidth
                wh += _transfer_wh(
                    mine, now, workload.in_bytes, workload.out_bytes, airtime, latency
                )
                wh += _transfer_wh(
                    model, now, workload.out_bytes, workload.in_bytes, airtime, latency
                )
            options.append(Option(device.name, wh, latency, compute, role))
        out.append(Options(index, arrival.at, needs.latency_budget_s, tuple(options)))
    return out


@dataclass(slots=True)
class _Job:
    origin: str
    device: str
    done_at: float
    result_at: float


@dataclass(slots=True)
class _Cpu:
    """The work placed on one device: its extra cpu, and the energy that added."""

    model: DeviceModel | None
    extra: float = 0.0
    since: float = 0.0
    wh: float = 0.0

    def change(self, now: float, delta: float) -> None:
        model = self.model
        if model is None:
            return
        model.advance(now)
        period = model.period
        if not period.asleep:
            base = min(100.0, period.cpu)
            more = min(100.0, period.cpu + self.extra)
            self.wh += (more - base) / 100.0 * model.profile.cpu_w * (now - self.since) / 3600.0
        self.extra = max(0.0, self.extra + delta)
        model.extra_cpu = max(0.0, model.extra_cpu + delta)
        self.since = now


@dataclass
class PolicyDay:
    """One policy's world through the trace, and what it measured."""

    name: str
    policy: Policy
    world: World
    invariants: Invariants
    services: dict[str, PlacementService] = field(default_factory=dict)
    phone: SimDevice | None = None
    counts: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    placed_on: dict[str, int] = field(default_factory=dict)
    broken: dict[str, int] = field(default_factory=dict)
    kernel_wh: dict[str, float] = field(default_factory=dict)
    phone_min: float | None = None
    phone_empty_s: float = 0.0
    phone_series: list[tuple[float, float | None]] = field(default_factory=list)
    decisions: Any = field(default_factory=hashlib.sha256)
    plan: Mapping[int, str] | None = None  # the optimum's choice, by request index
    calibration: Calibration | None = None  # our policy learns compute from its runs
    hidden: Mapping[str, float] = field(default_factory=dict)  # a device's true speed factor
    _slots: dict[str, list[float]] = field(default_factory=dict)
    _jobs: list[_Job] = field(default_factory=list)
    _cpu: dict[str, _Cpu] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("kernels", "placed", "refused", "lost", "failed", "misses", "privacy"):
            self.counts[key] = 0
        for d in self.world.devices:
            self.placed_on[d.name] = 0
            self.kernel_wh[d.name] = 0.0
            self._slots[d.id] = [0.0] * CORES[d.spec.role]
            self._cpu[d.id] = _Cpu(d.model)
        self.phone = next((d for d in self.world.devices if d.spec.role == "phone"), None)

    def host(self, device: SimDevice) -> list[PlacementService]:
        """The services of each life of a device: the placement service, offering our kernels."""
        service = PlacementService(
            device.identity.settings, registry=registry(), executor=InlineExecutor(threaded=False)
        )
        self.services[device.id] = service
        return [service]

    # ---- the day -----------------------------------------------------------------------------

    async def play(self, trace: Sequence[Arrival], end: float) -> None:
        by_name = {d.name: d for d in self.world.devices}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sample_phone, end)
            for index, arrival in enumerate(trace):
                if arrival.at >= end:
                    break
                await trio.sleep_until(arrival.at)
                asker = by_name.get(arrival.device)
                if asker is None:
                    continue
                self.counts["kernels"] += 1
                if not asker.up or asker.asleep:
                    self.counts["lost"] += 1
                    self._note(index, "lost", None)
                    continue
                self._decide(nursery, index, arrival, asker, {}, 0.0)
            await trio.sleep_until(end)
            nursery.cancel_scope.cancel()
        for d in self.world.devices:
            self._cpu[d.id].change(end, 0.0)
            if d.model is not None:
                d.model.advance(end)
        self._phone_sample(end)

    def view(self, asker: SimDevice, now: float) -> list[DeviceView]:
        """What ``asker``'s peer sees, with the queue it would know of."""
        service = self.services.get(asker.id)
        if service is None:
            return []
        self._jobs = [j for j in self._jobs if j.result_at > now]
        out = []
        for d in service.view():
            if d.local:
                queue = sum(1 for j in self._jobs if j.device == d.id and j.done_at > now)
            else:
                queue = sum(1 for j in self._jobs if j.origin == asker.id and j.device == d.id)
            out.append(replace(d, queue=queue) if queue != d.queue else d)
        return out

    def _decide(
        self,
        nursery: trio.Nursery,
        index: int,
        arrival: Arrival,
        asker: SimDevice,
        failed: dict[str, str],
        waited: float,
    ) -> None:
        now = trio.current_time()
        workload = BY_NAME[arrival.kernel]
        needs = workload.needs
        service = self.services.get(asker.id)
        config = service.config if service is not None else DEFAULT_CONFIG
        view = self.view(asker, now)
        target = self.plan.get(index) if self.plan is not None and not failed else None
        if target is not None:
            # the optimum knows the device is up (its view may not yet): the rest of the filter
            # still applies; should it refuse (the battery differs a little in this world),
            # the whole view is the fallback
            planned = [replace(d, status="alive") for d in view if d.name == target]
            decision = self.policy(
                arrival.kernel, needs, planned, config=config, compute_s=arrival.work_s
            )
            if not decision.ok:
                target = None
        if target is None and self.calibration is not None:
            decision = place(
                arrival.kernel,
                needs,
                view,
                config=config,
                compute_s=arrival.work_s,
                failed=failed or None,
                calibration=self.calibration,
            )
        elif target is None:
            decision = self.policy(
                arrival.kernel,
                needs,
                view,
                config=config,
                compute_s=arrival.work_s,
                failed=failed or None,
            )
        chosen = decision.device
        if chosen is None:
            self.counts["refused"] += 1
            self._note(index, "refused", None)
            return
        device = self.world.by_id[chosen.id]
        local = device is asker
        if not local and not (self.world.reachable(asker, device) and not device.asleep):
            if failed:  # placed once more already: the run is lost
                self.counts["refused"] += 1
                self._note(index, "failed twice", None)
                return
            self.counts["failed"] += 1
            nursery.start_soon(self._again, nursery, index, arrival, asker, chosen.id)
            return
        self._check(now, decision, device, config)
        predicted = decision.check().compute_s
        self._run(nursery, index, arrival, asker, device, waited, predicted)

    async def _again(
        self, nursery: trio.Nursery, index: int, arrival: Arrival, asker: SimDevice, bad: str
    ) -> None:
        await trio.sleep(FAIL_S)
        if not asker.up or asker.asleep:
            self.counts["lost"] += 1
            self._note(index, "lost", None)
            return
        self._decide(nursery, index, arrival, asker, {bad: "unreachable"}, FAIL_S)

    def _check(
        self, now: float, decision: Decision, device: SimDevice, config: PolicyConfig
    ) -> None:
        """Count the rules the chosen device breaks; privacy against its real settings."""
        for exclusion in violations(decision, config=config):
            self.broken[exclusion.constraint] = self.broken.get(exclusion.constraint, 0) + 1
        settings = device.identity.settings.device
        scope = decision.needs.scope
        if self.name == "swarm":
            self.invariants.checked += 1
        if settings.relay_only or scope not in settings.effective_scopes():
            self.counts["privacy"] += 1
            if self.name == "swarm":
                where = (
                    "a relay" if settings.relay_only else f"scopes {settings.effective_scopes()}"
                )
                self.invariants.violate(
                    now,
                    "privacy",
                    f"swarm placed {decision.kernel} ({scope} data) on {device.name} ({where})",
                )

    def _run(
        self,
        nursery: trio.Nursery,
        index: int,
        arrival: Arrival,
        asker: SimDevice,
        device: SimDevice,
        waited: float,
        predicted: float,
    ) -> None:
        now = trio.current_time()
        workload = BY_NAME[arrival.kernel]
        needs = workload.needs
        local = device is asker
        if local:
            up = down = 0.0
            bandwidth = math.inf
        else:
            link = self.world.net.link(asker.id, device.id)
            one_way = link.latency + link.jitter / 2
            bandwidth = link.bandwidth or math.inf
            up = one_way + workload.in_bytes / bandwidth + REMOTE_OVERHEAD_S
            down = one_way + workload.out_bytes / bandwidth
        role = device.spec.role
        background = 0.0
        if device.model is not None:
            device.model.advance(now)
            background = 0.0 if device.model.period.asleep else device.model.period.cpu
        speed = SPEED[role] * self.hidden.get(device.name, 1.0)
        compute = arrival.work_s / (speed * (1.0 - LOAD_SLOWDOWN * background / 100.0))
        if self.calibration is not None:  # the run's performance counter
            self.calibration.observe(arrival.kernel, device.id, predicted, compute)
        slots = self._slots[device.id]
        slot = min(range(len(slots)), key=lambda i: (slots[i], i))
        start = max(now + up, slots[slot])
        done = start + compute
        slots[slot] = done
        result_at = done + down
        latency = waited + result_at - now
        self.latencies.append(latency)
        self.counts["placed"] += 1
        self.placed_on[device.name] += 1
        if latency > needs.latency_budget_s:
            self.counts["misses"] += 1
        self._jobs.append(_Job(asker.id, device.id, done, result_at))
        self._note(index, device.name, latency)
        share = 100.0 * min(needs.cpu, CORES[role]) / CORES[role]
        if not local:
            airtime = workload.in_bytes / bandwidth
            self._transfer(asker, now, sent=workload.in_bytes, airtime=airtime)
            self._transfer(device, now, received=workload.in_bytes, airtime=airtime)
        nursery.start_soon(self._compute, asker, device, workload, start, done, share, bandwidth)

    async def _compute(
        self,
        asker: SimDevice,
        device: SimDevice,
        workload: Workload,
        start: float,
        done: float,
        share: float,
        bandwidth: float,
    ) -> None:
        cpu = self._cpu[device.id]
        await trio.sleep_until(start)
        cpu.change(start, share)
        await trio.sleep_until(done)
        cpu.change(done, -share)
        if device is not asker:
            airtime = workload.out_bytes / bandwidth
            self._transfer(device, done, sent=workload.out_bytes, airtime=airtime)
            self._transfer(asker, done, received=workload.out_bytes, airtime=airtime)

    def _transfer(
        self, device: SimDevice, now: float, *, sent: int = 0, received: int = 0, airtime: float
    ) -> None:
        """What sending and receiving these bytes costs ``device`` on its access link."""
        model = device.model
        if model is None:
            return
        wh = model.traffic(now, "kernels", sent=sent, received=received, airtime=airtime)
        self.kernel_wh[device.name] += wh

    def _note(self, index: int, where: str, latency: float | None) -> None:
        shown = "-" if latency is None else f"{latency:.6f}"
        self.decisions.update(f"{index} {where} {shown}\n".encode())

    async def _sample_phone(self, end: float) -> None:
        next_series = 0.0
        while True:
            now = trio.current_time()
            self._phone_sample(now, series=now >= next_series)
            if now >= next_series:
                next_series += SERIES_S
            if self.phone is not None and self.phone.flat:
                self.phone_empty_s += SAMPLE_S
            await trio.sleep(SAMPLE_S)

    def _phone_sample(self, now: float, *, series: bool = False) -> None:
        phone = self.phone
        if phone is None or phone.model is None:
            return
        phone.model.advance(now)
        pct = phone.model.percent
        if pct is not None:
            self.phone_min = pct if self.phone_min is None else min(self.phone_min, pct)
        if series:
            self.phone_series.append((round(now / 3600.0, 3), rounded(pct, 2)))

    # ---- results -----------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        c = self.counts
        models = [(d, d.model) for d in self.world.devices if d.model is not None]
        by_device = {d.name: rounded(m.used_wh, 3) for d, m in models}
        kernel = {
            d.name: rounded(self.kernel_wh[d.name] + self._cpu[d.id].wh, 4)
            for d in self.world.devices
        }
        phone = self.phone.model if self.phone is not None else None
        return {
            "kernels": c["kernels"],
            "placed": c["placed"],
            "refused": c["refused"],
            "lost": c["lost"],
            "failed": c["failed"],
            "budget_misses": c["misses"],
            "latency_p50_s": rounded(_pct(self.latencies, 0.5), 4),
            "latency_p95_s": rounded(_pct(self.latencies, 0.95), 4),
            "privacy_violations": c["privacy"],
            "rules_broken": dict(sorted(self.broken.items())),
            "placed_on": dict(self.placed_on),
            "energy_wh": rounded(sum(m.used_wh for _, m in models), 3),
            "energy_wh_by_device": by_device,
            "kernel_wh": kernel,
            "phone_battery_end_percent": rounded(phone.percent, 2) if phone is not None else None,
            "phone_battery_min_percent": rounded(self.phone_min, 2),
            "phone_empty_h": rounded(self.phone_empty_s / 3600.0, 3) if phone is not None else None,
        }


# ---- the offline optimum ---------------------------------------------------------------------

MISS_WH = 1.0  # the optimum's price of a latency budget missed: more than any run's energy
BUCKET_S = 60.0  # capacity: a device's cores times this, per window of this, of compute


@dataclass(frozen=True, slots=True)
class Optimum:
    """The offline optimum's plan (request index -> device name) and what the program said."""

    plan: dict[int, str]
    status: str
    estimated_kernel_wh: float
    estimated_misses: int
    requests: int
    variables: int

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "estimated_kernel_wh": rounded(self.estimated_kernel_wh, 5),
            "estimated_misses": self.estimated_misses,
            "requests": self.requests,
            "variables": self.variables,
        }


def solve_optimum(
    requests: Sequence[Options], *, bucket_s: float = BUCKET_S, time_limit_s: float = 120.0
) -> Optimum:
    """The offline optimum over a whole trace, knowing its future: a mixed-integer program
    (scipy's ``milp``, HiGHS).

    One binary per (request, device that could run it): each request runs on exactly one of its
    devices (a request with none is refused, as by any policy); minimise the energy of the runs
    plus ``MISS_WH`` per run whose latency (without queueing) is over its budget; no device does
    more compute in a window of ``bucket_s`` than its cores times the window (a penalised slack,
    so the program is always feasible). The constraints are the policy's (every rule of its
    filter, on the device's state at the request) and the truth's (up, awake, reachable).
    """
    import numpy as np
    from scipy.optimize import (  # type: ignore[import-untyped]
        Bounds,
        LinearConstraint,
        milp,
    )
    from scipy.sparse import coo_array  # type: ignore[import-untyped]

    cost: list[float] = []
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    owner: list[tuple[Options, Option]] = []
    capacity: dict[tuple[str, int], int] = {}
    cap_rows: list[int] = []
    cap_cols: list[int] = []
    cap_vals: list[float] = []
    cap_limit: list[float] = []
    placed = [r for r in requests if r.options]
    for row, request in enumerate(placed):
        for option in request.options:
            k = len(cost)
            miss = option.latency_s > request.budget_s
            cost.append(option.wh + (MISS_WH if miss else 0.0))
            rows.append(row)
            cols.append(k)
            vals.append(1.0)
            owner.append((request, option))
            key = (option.device, int(request.at // bucket_s))
            if key not in capacity:
                capacity[key] = len(capacity)
                cap_limit.append(CORES[option.role] * bucket_s)
            cap_rows.append(capacity[key])
            cap_cols.append(k)
            cap_vals.append(min(option.compute_s, bucket_s * CORES[option.role]))
    n, m = len(cost), len(capacity)
    if n == 0:
        return Optimum({}, "empty", 0.0, 0, 0, 0)
    # slack per capacity row: seconds over, at a miss's price each
    c = np.array(cost + [MISS_WH] * m)
    assign = coo_array((vals, (rows, cols)), shape=(len(placed), n + m))
    cap = coo_array(
        (cap_vals + [-1.0] * m, (cap_rows + list(range(m)), cap_cols + list(range(n, n + m)))),
        shape=(m, n + m),
    )
    upper = np.concatenate([np.ones(n), np.full(m, np.inf)])
    result = milp(
        c,
        constraints=[
            LinearConstraint(assign.tocsr(), 1.0, 1.0),
            LinearConstraint(cap.tocsr(), -np.inf, np.array(cap_limit)),
        ],
        integrality=np.concatenate([np.ones(n), np.zeros(m)]),
        bounds=Bounds(np.zeros(n + m), upper),
        options={"time_limit": time_limit_s, "mip_rel_gap": 1e-6},
    )
    if result.x is None:
        return Optimum({}, f"failed: {result.message}", 0.0, 0, len(placed), n)
    x = result.x[:n] > 0.5
    plan: dict[int, str] = {}
    wh = 0.0
    misses = 0
    for k in np.flatnonzero(x).tolist():
        request, option = owner[k]
        plan[request.index] = option.device
        wh += option.wh
        misses += option.latency_s > request.budget_s
    status = "optimal" if result.status == 0 else f"stopped: {result.message}"
    return Optimum(plan, status, wh, misses, len(placed), n)


HEADLINE = (
    "kernels",
    "energy_wh",
    "phone_battery_end_percent",
    "phone_battery_min_percent",
    "budget_misses",
    "privacy_violations",
    "refused",
)


# ---- the scenario ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """What to run: the day's start, the trace (None: drawn from the seed), the policies (None:
    ours and every baseline), a multiplier on the request rates, and whether to add the
    offline optimum (a program over the device models and the trace; its plan then runs in a
    world of its own as the ``optimal`` policy); devices whose true speed is not what the policy
    assumes (``hidden_speed``: a factor on ``SPEED``, every world), and whether our policy
    calibrates its compute estimates from its runs (``calibrate``; then ``metrics["calibration"]``
    says what it learnt)."""

    start_hour: float = 0.0
    trace: Sequence[Arrival] | None = None
    policies: Mapping[str, Policy] | None = None
    rate: float = 1.0
    optimal: bool | None = None  # None: with every policy, not with some
    hidden_speed: Mapping[str, float] = field(default_factory=dict)  # by device name
    calibrate: bool = False  # our policy ("swarm") learns from its runs' counters


async def run_placement(sim: Run) -> None:
    """The ``placement`` scenario (``swarm simulate placement``)."""
    await run_plan(sim, Plan())


async def run_plan(sim: Run, plan: Plan) -> None:

    models = load_models(sim.models_path)
    specs = day_specs(models, sim.n)
    trace = plan.trace
    if trace is None:
        rng = random.Random(f"placement/{sim.seed}/trace")
        devices = [(s.name, s.profile) for s in specs]
        trace = draw_trace(rng, devices, sim.seconds, start_hour=plan.start_hour, rate=plan.rate)
    policies = plan.policies
    optimal = plan.optimal if plan.optimal is not None else policies is None
    if policies is None:
        policies = baselines(random.Random(f"placement/{sim.seed}/random"))

    def day_of(name: str, policy: Policy) -> PolicyDay:
        world = World(
            specs,
            seed=sim.seed,
            models=models,
            link=Link(LAN.latency, LAN.jitter, sim.loss),
            start_hour=plan.start_hour,
        )
        day = PolicyDay(name, policy, world, Invariants(world), hidden=plan.hidden_speed)
        if plan.calibrate and name == "swarm":
            day.calibration = Calibration()
        world.services = day.host
        return day

    days = [day_of(name, policy) for name, policy in policies.items()]
    optimum = None
    if optimal:
        best = day_of("optimal", place)
        requests = offline_options(
            best.world, trace, sim.seconds, models=models, start_hour=plan.start_hour
        )
        optimum = solve_optimum(requests)
        best.plan = optimum.plan
        days.append(best)
    main = days[0]
    sim.world, sim.invariants = main.world, main.invariants

    async def one(day: PolicyDay) -> None:
        async def body(world: World) -> None:
            await day.play(trace, sim.seconds)

        await day.world.run(body)

    async with trio.open_nursery() as nursery:
        for day in days:
            nursery.start_soon(one, day)
    for day in days[1:]:  # one set of invariants: every world's, marked with its policy
        main.invariants.checked += day.invariants.checked
        for v in day.invariants.violations:
            main.invariants.violate(v.at, v.invariant, f"[{day.name}] {v.detail}")
    main.world.note(
        "policies",
        " ".join(f"{d.name}:{d.world.trace_digest}:{d.decisions.hexdigest()}" for d in days),
    )
    per_policy = {day.name: day.metrics() for day in days}
    ours = per_policy.get("swarm", per_policy[main.name])
    sim.metrics.update({key: ours[key] for key in HEADLINE})
    if optimum is not None:
        best_m = per_policy["optimal"]
        sim.metrics["energy_vs_optimal"] = _ratio(ours["energy_wh"], best_m["energy_wh"])
        sim.metrics["kernel_energy_vs_optimal"] = _ratio(
            sum(ours["kernel_wh"].values()), sum(best_m["kernel_wh"].values())
        )
        sim.metrics["optimum"] = optimum.to_json()
    for day in days:
        if day.calibration is not None:
            names = {d.id: d.name for d in day.world.devices}
            sim.metrics["calibration"] = [
                {**row, "device": names.get(row["device"], row["device"])}
                for row in day.calibration.stats()
            ]
    sim.metrics["policies"] = per_policy
    sim.series["policies"] = per_policy
    sim.series["phone_battery"] = {day.name: day.phone_series for day in days}
    counts: dict[str, int] = {}
    for a in trace:
        counts[a.kernel] = counts.get(a.kernel, 0) + 1
    sim.series["trace"] = {
        "requests": len(trace),
        "by_kernel": dict(sorted(counts.items())),
        "by_device": {s.name: sum(1 for a in trace if a.device == s.name) for s in specs},
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)


def simulate_placement(
    *,
    seed: int = 0,
    hours: float = 24.0,
    peers: int = 3,
    start_hour: float = 0.0,
    trace: Sequence[Arrival] | None = None,
    policies: Mapping[str, Policy] | None = None,
    rate: float = 1.0,
    models: Path | None = None,
    optimal: bool | None = None,
    hidden_speed: Mapping[str, float] | None = None,
    calibrate: bool = False,
) -> Result:
    """The scenario with its knobs (tests and benchmarks): a window of the day from
    ``start_hour``, a given trace or a denser one (``rate``), some policies only."""
    plan = Plan(
        start_hour=start_hour,
        trace=trace,
        policies=policies,
        rate=rate,
        optimal=optimal,
        hidden_speed=dict(hidden_speed or {}),
        calibrate=calibrate,
    )
    sim = Run("placement", peers, seed, hours * 3600.0, 0.0, models, None)

    async def body(sim: Run) -> None:
        await run_plan(sim, plan)

    return sim.execute(body)


# ---- the table -------------------------------------------------------------------------------

COLUMNS = (  # (metric, heading, format)
    ("energy_wh", "energy Wh", "{:.2f}"),
    ("phone_wh", "phone Wh", "{:.3f}"),
    ("phone_kernel_wh", "phone kernels Wh", "{:.4f}"),
    ("phone_battery_end_percent", "phone end %", "{:.1f}"),
    ("phone_battery_min_percent", "phone min %", "{:.1f}"),
    ("phone_empty_h", "phone empty h", "{:.2f}"),
    ("budget_misses", "misses", "{}"),
    ("latency_p95_s", "p95 s", "{:.3f}"),
    ("privacy_violations", "privacy", "{}"),
    ("refused", "refused", "{}"),
    ("lost", "lost", "{}"),
    ("failed", "failed", "{}"),
    ("placed_on", "placed on", "{}"),  # heading: the devices, in order
)


def policy_table(policies: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per policy, one column per headline metric, with a heading line first."""
    first = next(iter(policies.values()), {})
    where = "on " + "/".join(first.get("placed_on") or {})
    rows = [["policy", *(where if k == "placed_on" else h for k, h, _ in COLUMNS)]]
    for name, m in policies.items():
        by_device = m.get("energy_wh_by_device") or {}
        kernel = m.get("kernel_wh") or {}
        values = {
            **m,
            "phone_wh": by_device.get("phone"),
            "phone_kernel_wh": kernel.get("phone"),
            "placed_on": "/".join(str(v) for v in (m.get("placed_on") or {}).values()),
        }
        row = [name]
        for key, _, fmt in COLUMNS:
            value = values.get(key)
            row.append("-" if value is None else fmt.format(value))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    return lines
