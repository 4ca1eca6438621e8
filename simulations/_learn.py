"""The ``learn`` scenario: a real learning job across the day's devices, in virtual time.

The devices are the day's (``devices.toml`` through ``day_specs``: a phone, a laptop, a home
server, then more of each) from ``START_HOUR`` (the phone away on cellular, the laptop plugged in
at home), their power from their models. Each hosts the real placement and learning services
(``swarm.LearnService``): a minute in, the server (or the first device) runs ``learn start
digits --epsilon 4 --trust swarm`` (the scenario's options, ``learn_options``: ``swarm simulate
learn --epsilon E --trust swarm|none --task T``, a task with its own records: the simulated
devices hold no vault) through its control interface, and from then on everything is the
service's own code
path: the coordinator chosen by the placement policy, rounds as member requests over the memory
network, each device's ledger on its (temporary) home's disk, sitting out below the battery
floor, take-over when the coordinator goes, the round's devices those alive in its view (a
sleeping laptop and a phone whose lease lapsed are left out).

A local step runs inline, deterministically, through the service's ``compute`` hook, which charges
the device for it: ``STEP_S`` plus ``GRADIENT_S`` per per-sample gradient and parameter (the
service's ``Work`` counters), over the role's speed (``SPEED``, a laptop core = 1), is the time the
device's answer takes in virtual time, and ``cpu_w / CORES`` over that time is its energy (cause
``learning``, beside the radio tail of the learning messages, which the world books to
``learning`` too). The wall time each step really took here is reported beside it
(``local_wall_s``), but only the modelled cost enters the run, so the same seed gives the same
run. A device asleep does no local work: its step waits until it wakes (a sleeping laptop's
process is frozen).

Invariants, checked every ``SAMPLE_S`` and at the end: ``learn-budget``, no device's spent
epsilon (its ledger, as Opacus's accountant computes it) above its budget; ``learn-record``, no
record id trained on by two devices.

Metrics: the job's coordinator and term, rounds, accuracy at the start, the end and its best;
per device: records, epsilon spent, rounds taken, rounds sat out waiting for power and away, its
learning energy (radio and compute), compute seconds (modelled) and wall seconds (measured).
Series: accuracy over time, each device's epsilon over time (``learn.png``) and its battery
(``battery.png``).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from homeswarm.errors import InvalidArgument
from homeswarm.learning import get_task
from homeswarm.placement import InlineExecutor
from homeswarm.swarm import LearnService, PlacementService, Service

from ._harness import Run, Scenario, day_specs
from ._models import load_models
from ._placement import CORES, SPEED
from ._stats import rounded
from ._world import SimDevice, World

TASK = "digits"
EPSILON = 4.0
TRUST = "swarm"
MAX_EPSILON = 1000.0
DELTA = 1e-5
START_HOUR = 9.0
START_S = 60.0  # the job starts once the swarm ran this long
SAMPLE_S = 300.0  # the invariants and the series, this often
MAX_GAP_S = 600.0  # between rounds: a day has 144 rounds; a shorter run has them closer
MIN_GAP_S = 30.0
ROUNDS_PER_RUN = 144
STEP_S = 0.01  # a local step's fixed cost on a laptop core (load the model, sample, sum)
GRADIENT_S = 3e-7  # per per-sample gradient and parameter, on a laptop core (digits: 650)


@dataclass
class Tally:
    """What one device's learning cost, over all its lives."""

    compute_s: float = 0.0
    compute_wh: float = 0.0
    wall_s: float = 0.0  # measured: the task loaded, the noise searched, the steps
    steps: int = 0
    power: set[int] = field(default_factory=set)  # rounds it sat out waiting for power
    away: set[int] = field(default_factory=set)  # rounds it was away (not alive to the coordinator)


@dataclass
class LearnDay:
    sim: Run
    tasks: Any = None  # a task factory for the learning services (None: the built-in tasks)
    learn: dict[str, LearnService] = field(default_factory=dict)  # by device id, this life's
    tally: dict[str, Tally] = field(default_factory=dict)  # by device name
    owner: dict[str, str] = field(default_factory=dict)  # record id -> the device training it
    job: str | None = None
    accuracy: list[tuple[float, float | None, int]] = field(default_factory=list)
    epsilon: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    battery: dict[str, list[tuple[float, float | None]]] = field(default_factory=dict)

    def host(self, device: SimDevice) -> Sequence[Service]:
        """The services of each life of a device: placement (the learn service asks its view
        and its policy) and learning, with a seeded source of randomness and a metered step."""
        rng = random.Random(f"learn/{self.sim.seed}/{device.name}/{device.lives}")
        learn = LearnService(
            device.identity, task_factory=self.tasks, rng=rng, round_gap=gap(self.sim.seconds)
        )
        learn.compute = self._metered(device, learn)
        self.learn[device.id] = learn
        self.tally.setdefault(device.name, Tally())
        placement = PlacementService(
            device.identity.settings, executor=InlineExecutor(threaded=False)
        )
        return [placement, learn]

    def _metered(self, device: SimDevice, learn: LearnService) -> Any:
        tally = self.tally.setdefault(device.name, Tally())
        role = device.spec.role

        async def compute(fn: Any, *args: Any) -> Any:
            # a sleeping device's process is frozen: its work waits until the model wakes it
            while device.asleep:  # noqa: ASYNC110 (the world's model loop flips it, no event)
                await trio.sleep(60.0)
            steps, units = learn.work.steps, learn.work.parameter_gradients
            began = time.perf_counter()
            out = fn(*args)
            tally.wall_s += time.perf_counter() - began
            steps, units = learn.work.steps - steps, learn.work.parameter_gradients - units
            if steps:
                seconds = (STEP_S * steps + GRADIENT_S * units) / SPEED[role]
                tally.steps += steps
                tally.compute_s += seconds
                model = device.model
                if model is not None:
                    model.advance(trio.current_time())
                    wh = model.profile.cpu_w / CORES[role] * seconds / 3600.0
                    model.spend(wh, "learning")
                    tally.compute_wh += wh
                await trio.sleep(seconds)
            return out

        return compute

    # ---- watching ------------------------------------------------------------------------------

    def coordinating(self) -> dict[str, Any] | None:
        """The job's status as the device that coordinated it furthest has it (the most rounds,
        then the highest term: while a coordinator cut off from the rest holds a take-over it
        cannot run, the other goes on), or None."""
        best: dict[str, Any] | None = None
        for service in self.learn.values():
            for job in (service.status() or {"jobs": []})["jobs"]:
                if job["job"] != self.job:
                    continue
                if best is None or (job["round"], job["term"]) > (best["round"], best["term"]):
                    best = job
        return best

    def check(self, world: World) -> None:
        """The invariants now, and a sample of the series."""
        inv = self.sim.invariants
        assert inv is not None
        now = trio.current_time()
        hour = now / 3600.0
        for device in world.devices:
            if device.model is not None:
                device.model.advance(now)
                self.battery.setdefault(device.name, []).append((hour, device.model.percent))
        if self.job is None:
            return
        for device in world.devices:
            service = self.learn.get(device.id)
            local = service.local(self.job) if service is not None and device.up else None
            if local is None:
                continue
            inv.checked += 1
            if local.epsilon > local.epsilon_budget + 1e-9:
                inv.violate(now, "learn-budget",
                            f"{device.name} spent epsilon {local.epsilon:.4f} of "
                            f"{local.epsilon_budget}")  # fmt: skip
            for rid in local.records:
                other = self.owner.setdefault(rid, device.name)
                if other != device.name:
                    inv.violate(now, "learn-record",
                                f"{rid} trained on by {other} and {device.name}")  # fmt: skip
            self.epsilon.setdefault(device.name, []).append((hour, local.epsilon))
        job = self.coordinating()
        if job is not None:
            self.accuracy.append((hour, job["accuracy"], job["round"]))
            for row in job["devices"]:
                tally = self.tally.get(row["name"])
                if tally is not None and job["state"] == "running" and job["round"] > 0:
                    # the row says how the device answered the last round run
                    if row["state"] == "waiting for power":
                        tally.power.add(job["round"] - 1)
                    elif row["state"] == "away":
                        tally.away.add(job["round"] - 1)

    async def watch(self, world: World, end: float) -> None:
        while True:
            self.check(world)
            now = trio.current_time()
            if now >= end:
                return
            await trio.sleep(min(SAMPLE_S, gap(self.sim.seconds), end - now))


def learn_options(given: dict[str, Any]) -> dict[str, Any]:
    """The scenario's options (``--epsilon``, ``--trust``, ``--task``) checked, with defaults."""
    unknown = set(given) - {"epsilon", "trust", "task"}
    if unknown:
        raise InvalidArgument(f"the learn scenario takes no --{sorted(unknown)[0]}")
    epsilon = given.get("epsilon", EPSILON)
    if (
        isinstance(epsilon, bool)
        or not isinstance(epsilon, int | float)
        or not 0 < epsilon <= MAX_EPSILON
    ):
        raise InvalidArgument(f"--epsilon must be a number above 0, at most {MAX_EPSILON:g}")
    trust = given.get("trust", TRUST)
    if trust not in ("swarm", "none"):
        raise InvalidArgument(f"--trust must be swarm or none, got {trust!r:.20}")
    task = given.get("task", TASK)
    if not isinstance(task, str):
        raise InvalidArgument("--task must be a task's name")
    reads = getattr(get_task(task), "reads", ())  # (an unknown task: one line naming the known)
    if reads:
        raise InvalidArgument(
            f"--task {task}: it trains on the vault ({', '.join(reads)}), which the simulated "
            "devices do not hold; a task with its own records (digits) runs here"
        )
    return {"epsilon": float(epsilon), "trust": trust, "task": task}


def gap(seconds: float) -> float:
    """Seconds between rounds for a run this long."""
    return min(MAX_GAP_S, max(MIN_GAP_S, seconds / ROUNDS_PER_RUN))


async def run_learn(sim: Run, *, tasks: Any = None) -> None:
    """The ``learn`` scenario (``swarm simulate learn``); ``tasks``: where the learning services
    find their tasks (a test's own), by default the installed ones."""
    models = load_models(sim.models_path)
    day = LearnDay(sim, tasks)
    with tempfile.TemporaryDirectory(prefix="swarm-sim-learn-") as homes:
        world = sim.make_world(
            day_specs(models, sim.n),
            models=models,
            start_hour=START_HOUR,
            services=day.host,
            homes=Path(homes),
        )
        rounds = max(1, int((sim.seconds - START_S) / gap(sim.seconds)))
        options = sim.options or learn_options({})

        async def body(world: World) -> None:
            await trio.sleep(START_S)
            starter = next((d for d in world.devices if d.spec.role == "server"), world.devices[0])
            assert starter.peer is not None
            started = await starter.peer.control(
                "learn.start",
                {
                    "task": options["task"],
                    "epsilon": options["epsilon"],
                    "trust": options["trust"],
                    "delta": DELTA,
                    "rounds": rounds,
                },
            )
            day.job = started["job"]
            world.note("learn start", f"{started['job']} on {starter.name}")
            await day.watch(world, sim.seconds)

        await world.run(body)
    _report(sim, day, world, rounds, options)


def _report(sim: Run, day: LearnDay, world: World, rounds: int, options: dict[str, Any]) -> None:
    job = day.coordinating() or {}
    names = {d.id: d.name for d in world.devices}
    rows = {row["name"]: row for row in job.get("devices", [])}
    accuracies = [a for _, a, _ in day.accuracy if a is not None]
    devices: dict[str, dict[str, Any]] = {}
    for d in world.devices:
        tally = day.tally.get(d.name, Tally())
        row = rows.get(d.name)
        radio = d.model.wh_by_cause.get("learning", 0.0) - tally.compute_wh if d.model else 0.0
        devices[d.name] = {
            "records": row["records"] if row is not None else 0,
            "epsilon_spent": row["epsilon_spent"] if row is not None else 0.0,
            "state": row["state"] if row is not None else None,
            "steps": tally.steps,
            "sat_out_power": len(tally.power),
            "away": len(tally.away),
            "learning_wh": rounded(tally.compute_wh + radio, 5),
            "compute_wh": rounded(tally.compute_wh, 6),
            "radio_wh": rounded(radio, 5),
            "compute_s": rounded(tally.compute_s, 3),
            "local_wall_s": rounded(tally.wall_s, 3),
            "battery_min_percent": rounded(
                min((p for _, p in day.battery.get(d.name, ()) if p is not None), default=None),
                1,
            ),
        }
    sim.metrics.update(
        {
            "job": day.job,
            "task": options["task"],
            "epsilon_target": options["epsilon"],
            "trust": options["trust"],
            "delta": DELTA,
            "round_gap_s": gap(sim.seconds),
            "rounds_planned": rounds,
            "rounds": job.get("round", 0),
            "state": job.get("state"),
            "coordinator": names.get(job.get("coordinator", "")),
            "term": job.get("term"),
            "accuracy_start": rounded(accuracies[0] if accuracies else None, 4),
            "accuracy_end": rounded(accuracies[-1] if accuracies else None, 4),
            "accuracy_best": rounded(max(accuracies) if accuracies else None, 4),
            "devices": devices,
        }
    )
    sim.series["learn_accuracy"] = day.accuracy
    sim.series["learn_epsilon"] = day.epsilon
    sim.series["battery"] = day.battery


LEARN = Scenario("learn", run_learn, peers=3, hours=24.0, options=learn_options)
