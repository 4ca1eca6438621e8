"""Federated learning as a service of the peer: jobs across the live members, with privacy.

The I/O shell around ``learning``'s round cores (``Coordinator``, ``Participant``):

- ``learn.start`` from this device's CLI starts a job; its coordinator is the device the
  placement policy chooses among the job's devices for a ``medium``, stateful piece of work of
  the task's scope (``place``: alive, the scope, the battery floors, then the cheapest by
  latency and battery price: plugged and near beats a phone on battery). If that is another
  device, this one hands the job to it (``learn.adopt``) and keeps a pointer: ``learn status``
  and ``learn stop`` here ask the job's devices which of them coordinates it now (the highest
  term), and ``export`` writes the newest model this device holds as a participant. The job's
  devices are the members alive now that may
  hold the task's scope (as placement counts them: the certificate's scopes, no relays); the
  task's records are split across them by their sorted ids (``Task.split`` with the job's seed),
  and each device trains on its own share only;
- every round the coordinator sends a ``RoundStart`` to the job's devices alive now, as a
  member request ``{"op": "learn.msg", "job": META, "msg": BYTES}``; the reply carries the
  participant's answers (an ``Update``, a ``Decline``, a ``Reveal``) and its state, records and
  spent epsilon. The coordinator's own participant is called directly. ``META`` says everything
  a device needs to set up its side of the job (task, budget, split, keys), so a device that
  restarts picks the job up again at the next round;
- each device's privacy ledger is ``HOME/learning/<task>.privacy.json`` (per device and task,
  written before an update leaves): a restart neither forgets nor spends twice, and a device
  never trains past its budget, whatever job asks;
- a device that is a phone on battery below its floor for ``medium`` work (``[placement]
  floor_medium``), checked when each round starts, declines ("power") and shows as "waiting for
  power"; a member not alive (away, suspect, dead) is left out of the round and shows as "away";
- **take-over**: META names the coordinator and its ``term``. When the membership holds the
  coordinator dead, left or away, the next live job device after it in id order (``successor``)
  coordinates from then on, under ``term + 1``, provided it sees at least half the job's devices
  alive (itself included: a device cut off from the rest, a laptop asleep, does not take
  over), and goes on only if at least half the job's devices answer it and none of them heard
  from the old coordinator since it decided (else it gives the take-over up, its probe having
  changed nothing, and may try again a minute later: a laptop asleep sees a light phone alive
  on its lease but cannot reach it, and one that decided as it fell asleep finds at wake that
  the server went on): it first asks the others which round's result
  they hold (``sync``), and either goes on after the newest result any of them has, or runs the
  round in progress again as ``Participant.take_over`` does (same model, same participants, so
  each device resends the update it kept: no step spent twice, and no round's result released
  twice with fresh noise). A device answers only the coordinator of the highest term it has
  seen (the sender the transport authenticated must be META's coordinator); a coordinator of an
  older term, back from a partition, is told ``moved`` and hands its job over;
- with ``--trust none`` each device makes an X25519 key for the job and sends its public half in
  its first reply, signed by its device key (``secagg.sign_public``: the job, the device, the
  key); the coordinator checks it and passes every device's signed key on in META, and each
  device checks every key it is given (``secagg.open_public``) before it masks with it: a
  coordinator that substitutes a key of its own, or replays one from another job, is refused
  (its message closes the connection). The coordinator still learns only the masked sum.

``learn.status [job]``, ``learn.stop job`` and ``learn.export job file`` answer the CLI. Status::

    {"job", "task", "state", "round", "accuracy", "epsilon_target", "delta",
     "devices": [{"name", "state", "records", "epsilon_spent", "executor", ("error")}], ...}

**The local step** is the ``dp-step`` kernel (``kernels``): the participant core samples its
records and asks for a ``Step``; the service runs the kernel on this device only (its records
never leave it), on the executor placement picked for the device (``PlacementService.run_here``:
Ray on a laptop or server, inline on a phone; counted in ``/metrics``, ``swarm kernels`` and
``--stats`` as any run). The ledger stays here and is charged only once the step has returned:
a step that fails on the executor (or takes longer than a round waits, ``ROUND_TIMEOUT``: its
answer would come too late) declines the round ("failed"), shows as "step failed" with its
error in ``learn status``, and spends nothing; a device readies its step's executor when it
joins a job (``_warm``: a step of no records), so Ray's start is not a round's. Each device row
says where its last step ran
(``executor``: ray, inline, or thread where there is no placement service or the task's model
is not one the kernel builds, ``model_layers``). Loading a task runs in a worker thread, one
answer at a time, so the peer keeps answering its members meanwhile (``compute`` replaces the
thread and the executor: the simulator runs the loading and the step inline and charges the
device's time and energy for the step from the ``Work`` counters). ``local(job)`` is this
device's side of a job: the ids of the records it trains on, its ledger's epsilon and steps.
Every random choice comes from ``rng`` (the system's by default), so a seeded simulation
replays exactly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from homeswarm.errors import InvalidArgument, ProtocolViolation, SwarmError
from homeswarm.kernels import dp_step
from homeswarm.learning import (
    Coordinator,
    KernelTrainer,
    Ledger,
    Message,
    Participant,
    RoundStart,
    Step,
    Task,
    from_wire,
    get_task,
    noise_for,
    params_bytes,
    secagg,
    successor,
)

from ._placement_service import PlacementService
from ._service import Service

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from prometheus_client.core import Metric

    from homeswarm.transports import Connection

    from ._home import Identity
    from ._peer import Peer

log = logging.getLogger("swarm.learn")

LEARN_DIR = "learning"
ENERGY = "medium"  # the energy class of a local step, for the battery floor
SCOPE = "public"  # a task's scope unless it names one (``Task.scope``)
SAMPLE_RATE = 0.1
CLIP = 1.0
LR = 2.0
ALPHA = 0.5
ROUND_TIMEOUT = 10.0  # seconds a round waits for the devices' answers
ROUND_GAP = 0.5  # seconds between rounds
MAX_JOBS = 16
MAX_SPEC = 16_384  # characters of a job's task spec (as JSON)
STATES = {"sitting out": "waiting for power", "waiting": "waiting"}
COORDINATE = "learn"  # the coordinator's work, as the placement policy is asked to place it
WATCH_S = 2.0  # how often a device checks that the coordinators of its jobs are alive
GONE = ("dead", "left", "away")  # a coordinator in one of these states is taken over
RETRY_TAKE_OVER_S = 60.0  # after a take-over that reached too few devices


@dataclass
class _DeviceRow:
    name: str
    state: str = "waiting"
    records: int = 0
    epsilon_spent: float = 0.0
    key: str | None = None  # X25519 public key, signed by the device (trust none)
    joined: bool = False  # it answered once: its records are known, it may take part
    executor: str | None = None  # where its last step ran: ray, inline, thread (None: none yet)
    error: str | None = None  # why its last step failed (state "step failed")


@dataclass
class _Job:
    meta: dict[str, Any]
    task: Task
    test: Any
    params: np.ndarray
    sigma: float
    rounds: int
    rows: dict[str, _DeviceRow]
    state: str = "starting"
    round: int = 0
    accuracy: float | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    resume: RoundStart | None = None  # a taken-over round to run again first
    previous: dict[str, Any] | None = None  # taken over: the description this device had
    meta_taken: dict[str, Any] | None = None  # ... and the one it took over with
    decided_at: float = 0.0  # ... and when it decided to

    @property
    def id(self) -> str:
        return str(self.meta["id"])

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.id,
            "task": self.task.name,
            "state": self.state,
            "round": self.round,
            "rounds": self.rounds,
            "accuracy": None if self.accuracy is None else round(self.accuracy, 4),
            "epsilon_target": self.meta["epsilon"],
            "delta": self.meta["delta"],
            "noise_multiplier": self.sigma,
            "trust": self.meta["trust"],
            "coordinator": self.meta["coordinator"],
            "term": self.meta["term"],
            "devices": [
                {
                    "name": row.name,
                    "id": device,
                    "state": row.state,
                    "records": row.records,
                    "epsilon_spent": round(row.epsilon_spent, 4),
                    "executor": row.executor,
                    **({"error": row.error} if row.error else {}),
                }
                for device, row in sorted(self.rows.items(), key=lambda kv: kv[1].name)
            ],
        }


Compute = Callable[..., Awaitable[Any]]  # compute(fn, *args): fn(*args), run somewhere


@dataclass
class Work:
    """This device's local training so far: performance counters (the simulator charges the
    device's time and energy from them)."""

    steps: int = 0  # local DP-SGD steps taken
    gradients: int = 0  # per-sample gradients computed
    parameter_gradients: int = 0  # the same, times the model's parameter count


@dataclass(frozen=True)
class Local:
    """This device's side of one job, as it stands: what it trains on and what it spent."""

    job: str
    records: frozenset[str]  # the ids of the records this device trains on
    epsilon: float
    epsilon_budget: float
    steps: int  # steps on this device's ledger for the task (every job of it)
    rounds_taken: int  # rounds of this job this device took part in
    state: str


@dataclass
class _Side:
    """This device's side of a job: its participant core, ledger and records."""

    meta: dict[str, Any]
    participant: Participant
    key: X25519PrivateKey | None
    ids: frozenset[str] = frozenset()
    heard_at: float = -math.inf  # when the coordinator it holds last sent it a round
    executor: str | None = None  # where its last step ran


def _meta_check(meta: Any) -> dict[str, Any]:
    """A job's META from a member: the types checked, or ``ProtocolViolation``."""
    ok = (
        isinstance(meta, dict)
        and isinstance(meta.get("id"), str)
        and 0 < len(meta["id"]) <= 64
        and isinstance(meta.get("task"), str)
        and meta.get("trust") in ("swarm", "none")
        and all(
            isinstance(meta.get(k), int | float) and not isinstance(meta.get(k), bool)
            for k in ("epsilon", "delta", "alpha", "seed", "sigma")
        )
        and isinstance(meta.get("devices"), list)
        and 0 < len(meta["devices"]) <= 1000
        and all(isinstance(d, str) for d in meta["devices"])
        and isinstance(meta.get("keys"), dict)
        and meta.get("coordinator") in meta["devices"]
        and isinstance(meta.get("spec", {}), dict)
        and len(json.dumps(meta.get("spec", {}), default=str)) <= MAX_SPEC
        and all(
            isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool) and meta[k] >= 0
            for k in ("term", "rounds")
        )
    )
    if not ok:
        raise ProtocolViolation("learn: a malformed job description")
    return dict(meta)


class LearnService(Service):
    name = "learn"

    def __init__(
        self,
        identity: Identity,
        *,
        task_factory: Any = None,
        threaded: bool = True,
        compute: Compute | None = None,
        rng: random.Random | None = None,
        round_gap: float = ROUND_GAP,
    ) -> None:
        self.identity = identity
        self.threaded = threaded  # False: compute on the event loop (tests in virtual time)
        # how local work runs (loading a task, a local step): by default in a worker thread
        # (``threaded``) or inline; the simulator passes its own, which charges the device's
        # time and energy model for it
        self.compute = compute
        self._lock = trio.Lock()  # one answer at a time: the participants' state is shared
        self.get_task = task_factory or get_task
        self.peer: Peer | None = None
        self.jobs: dict[str, _Job] = {}
        self.remote: dict[str, dict[str, Any]] = {}  # jobs started here, coordinated elsewhere
        self._newest: str | None = None  # the job started (or adopted) here last
        self.sides: dict[str, _Side] = {}
        self._nursery: trio.Nursery | None = None
        # every random choice (seeds, job ids, mask keys) from one source: the system's, or the
        # simulator's seeded one (the same seed, the same run)
        self._random = rng if rng is not None else random.SystemRandom()
        self._rng = np.random.default_rng(self._random.getrandbits(64))
        self.round_gap = round_gap
        self.work = Work()
        self._vault: dict[str, list[tuple[str, str, str]]] = {}  # prefix -> (key, text, scope)
        self._retry_at: dict[str, float] = {}  # job -> when a given-up take-over may be tried

    @property
    def me(self) -> str:
        return self.identity.device_id

    async def run(self, peer: Peer, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.peer = peer
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await trio.sleep(WATCH_S)
                self._watch()

    # ---- tasks and the vault -----------------------------------------------------------------

    def _task(self, name: str, spec: dict[str, Any] | None = None) -> Task:
        """The task ``name``, reading this device's vault (if it reads any), as ``spec`` fixes
        it for a job (its labels...)."""
        task = self.get_task(name)
        bind = getattr(task, "bind", None)
        if bind is not None:
            bind(self._entries)
        if spec and hasattr(task, "with_spec"):
            task = task.with_spec(spec)
        return task

    def _read_vault(self, name: str) -> None:
        """A snapshot of the vault entries the task ``name`` reads (its ``reads`` prefixes),
        taken on the event loop: the vault's documents are not for worker threads."""
        reads = getattr(self.get_task(name), "reads", ())
        peer = self.peer
        vault = peer.services.get("vault") if peer is not None and reads else None
        node = getattr(vault, "node", None)
        self._vault = {
            prefix: [(e.key, e.text, e.scope) for e in node.items(prefix)] if node else []
            for prefix in reads
        }

    def _entries(self, prefix: str) -> list[tuple[str, str, str]]:
        return list(self._vault.get(prefix, ()))

    # ---- this device's side ------------------------------------------------------------------

    def _below_floor(self) -> bool:
        from ._placement_service import policy_config

        peer = self.peer
        state = peer.state if peer is not None else None
        if state is None:
            return False
        config = policy_config(self.identity.settings.placement)
        battery = state.battery_percent
        return (
            battery is not None
            and state.plugged is not True
            and battery < config.floor(ENERGY, self.identity.settings.device.role)
        )

    def _side(self, meta: dict[str, Any], adopt: bool = True) -> _Side:
        """This device's side of the job ``meta`` describes (set up on first contact); with
        ``adopt``, a newer term's description replaces the one it holds."""
        job = meta["id"]
        side = self.sides.get(job)
        if side is not None and side.meta["devices"] == meta["devices"]:
            if adopt and meta["term"] >= side.meta["term"]:
                side.meta = meta
            return side
        from homeswarm.learning import TorchTrainer, assign_owners

        task = self._task(meta["task"], meta.get("spec"))
        if self.me not in meta["devices"]:
            raise ProtocolViolation("learn: this device is not one of the job's")
        split = task.split(sorted(meta["devices"]), alpha=meta["alpha"], seed=meta["seed"])
        # a record several devices hold (the vault replicates) trains on one of them only: the
        # same rendezvous choice on every device, over every job device that holds it
        owners = assign_owners({d: split.devices[d].ids for d in split.devices})
        records = split.devices[self.me].only(owners[self.me])
        path = self.identity.home / LEARN_DIR / f"{task.name}.privacy.json"
        ledger = Ledger.open(
            path,
            task=task.name,
            device=self.me,
            epsilon_budget=float(meta["epsilon"]),
            delta=float(meta["delta"]),
        )
        key = None
        if meta["trust"] == "none":
            from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

            key = X25519PrivateKey.from_private_bytes(self._random.randbytes(32))
        participant = Participant(
            self.me,
            trainer=TorchTrainer(task.model(), records),
            ledger=ledger,
            rng=np.random.default_rng(self._random.getrandbits(64)),
            key=key,
        )
        while len(self.sides) >= MAX_JOBS:
            del self.sides[next(iter(self.sides))]
        side = _Side(meta, participant, key, frozenset(records.ids))
        self.sides[job] = side
        return side

    def _answer(
        self, source: str, meta: dict[str, Any], data: bytes | None, sync: bool = False
    ) -> tuple[dict[str, Any], Step | None]:
        """This device's answers to a coordinator's message, with its state (and, asked to
        ``sync``, the round whose result it holds, and that result); and the local step a
        round start asks for, which ``_step`` computes before the reply goes."""
        if source != meta["coordinator"]:
            raise ProtocolViolation("learn: only the job's coordinator sends its rounds")
        side = self._side(meta, adopt=not sync)  # a take-over's probe changes nothing yet
        p = side.participant
        if meta["term"] < side.meta["term"]:  # an older coordinator: the job has moved on
            log.info("learn %s: %s coordinates an older term; told it moved",
                     meta["id"], source[-8:])  # fmt: skip
            return {"msgs": [], "state": "moved", "records": p.trainer.records,
                    "epsilon": p.ledger.epsilon, "term": side.meta["term"],
                    "coordinator": side.meta["coordinator"]}, None  # fmt: skip
        for device, signed in meta["keys"].items():
            if device != self.me and device not in p.public_keys:
                if device not in meta["devices"]:
                    raise ProtocolViolation("learn: a mask key for a device not of the job")
                p.public_keys[device] = secagg.open_public(signed, job=meta["id"], device=device)
        out: list[bytes] = []
        step: Step | None = None
        if data is not None:
            message = from_wire(data)
            if isinstance(message, RoundStart):
                p.sit_out = self._below_floor()
                if p.sit_out:
                    log.info("round %d of %s: below the battery floor, sitting out",
                             message.round, message.job)  # fmt: skip
                answer = p.begin(source, message)
                if isinstance(answer, Step):
                    step = answer  # computed by ``_step``, on this device's executor
                elif answer is not None:
                    out = [answer.to_wire()]
            else:
                out = [m.to_wire() for _, m in p.receive(source, message)]
        return self._reply(side, meta, out, sync), step

    def _reply(
        self, side: _Side, meta: dict[str, Any], out: list[bytes], sync: bool
    ) -> dict[str, Any]:
        """A reply to the coordinator: ``out`` and this device's state, records, spent epsilon,
        where its last step ran (and, asked to ``sync``, the round whose result it holds)."""
        p = side.participant
        state = STATES.get(p.state, p.state)
        if p.state in ("training", "waiting") and not p.ledger.affordable(
            float(meta["sigma"]), SAMPLE_RATE
        ):
            state = "out of budget"
        reply: dict[str, Any] = {
            "msgs": out,
            "state": state,
            "records": p.trainer.records,
            "epsilon": p.ledger.epsilon,
            "executor": side.executor,
        }
        if p.error is not None and p.state == "step failed":
            reply["error"] = p.error
        if side.key is not None:
            reply["key"] = secagg.sign_public(
                side.key, self.identity.signing_key, job=meta["id"], device=self.me
            )
        if sync:
            reply["round"] = p.round
            if p.params is not None:
                reply["result"] = params_bytes(p.params)
        return reply

    async def _step(self, side: _Side, step: Step) -> Message:
        """A round's local step, computed on this device only (its records never leave it):
        the ``dp-step`` kernel on the executor placement picked for this device (Ray on a
        laptop or server, inline on a phone), through ``compute`` in the simulator, or in a
        worker thread where there is no placement service or the task's model is not one the
        kernel builds. Its answer: the update (the budget spent only now), or a decline that
        says the step failed (nothing spent)."""
        p = side.participant
        s = step.start
        value = _kernel_input(p.trainer, s.model(), step.rows, s.clip)
        placement = self._placement()
        executor = "inline" if self.compute is not None or not self.threaded else "thread"
        began = trio.current_time()
        try:
            if self.compute is None and value is not None and placement is not None:
                result = await placement.run_here(dp_step, value)
                executor = result.executor
                total = self._stepped(p, result.output)
            else:
                total = await self._off_loop(self._step_here, p, step, value)
        except Exception as exc:  # the kernel, the executor, a task's bug: the round declined
            error = " ".join(str(exc).split())[:200] or type(exc).__name__
            if not isinstance(exc, SwarmError):
                error = f"{type(exc).__name__}: {error}"
            log.warning("learn %s round %d: the local step failed on %s: %s",
                        s.job, s.round, executor, error)  # fmt: skip
            side.executor = executor
            return p.failed(step, error)
        side.executor = executor
        took = trio.current_time() - began
        if took > ROUND_TIMEOUT:  # the coordinator gave up on this answer: spend nothing
            log.warning("learn %s round %d: the local step took %.1f s on %s, longer than a "
                        "round waits; not sent", s.job, s.round, took, executor)  # fmt: skip
            return p.failed(step, f"the step took {took:.1f} s, longer than a round waits")
        return p.finish(step, total)

    async def _warm(self, side: _Side) -> None:
        """Ready this device's step executor when it joins a job, before a round asks for a
        step: Ray's start and its worker's first imports take seconds (20 and more on a busy
        machine), and a step that answers after the round stopped waiting is declined. A step
        of no records, run and counted as any."""
        placement = self._placement()
        trainer = side.participant.trainer
        if placement is None or not isinstance(trainer, KernelTrainer):
            return
        value = _kernel_input(trainer, np.zeros(trainer.size), np.zeros(0, np.int64), CLIP)
        if value is None:
            return
        try:
            await placement.run_here(dp_step, value)
        except SwarmError as exc:
            log.info("learn: readying the step's executor failed: %s", exc)

    def _placement(self) -> PlacementService | None:
        """This device's placement service, which runs the step kernel and holds the view of
        the members (None: a peer that hosts none)."""
        service = self.peer.services.get("kernels") if self.peer is not None else None
        return service if isinstance(service, PlacementService) else None

    def _step_here(self, p: Participant, step: Step, value: dict[str, Any] | None) -> np.ndarray:
        """The step in this process: the kernel (if the model is one it builds), or the
        trainer."""
        if value is not None:
            return self._stepped(p, dp_step.run(value))
        s = step.start
        trainer = p.trainer
        before = trainer.gradients if isinstance(trainer, KernelTrainer) else 0
        total = trainer.clipped_sum(s.model(), step.rows, s.clip)
        self._count(p, (trainer.gradients if isinstance(trainer, KernelTrainer) else 0) - before)
        return total

    def _stepped(self, p: Participant, output: Any) -> np.ndarray:
        """The kernel's output as the clipped gradients' sum (its size checked), counted."""
        if not isinstance(output, dict) or not isinstance(output.get("sum"), bytes):
            raise ProtocolViolation("dp-step: an output without its sum")
        total = np.frombuffer(output["sum"], dtype="<f8").astype(np.float64)
        trainer = p.trainer
        assert isinstance(trainer, KernelTrainer)  # (only such a trainer gives a kernel input)
        if total.size != trainer.size:
            raise ProtocolViolation(f"dp-step: a sum of {total.size} numbers for {trainer.size}")
        samples = output.get("samples")
        samples = samples if isinstance(samples, int) and samples >= 0 else 0
        trainer.stepped(samples)
        self._count(p, samples)
        return total

    def _count(self, p: Participant, gradients: int) -> None:
        self.work.steps += 1
        self.work.gradients += gradients
        size = p.trainer.size if isinstance(p.trainer, KernelTrainer) else 0
        self.work.parameter_gradients += gradients * size

    async def _off_loop(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in a worker thread (training, loading the task), inline, or as
        ``compute`` runs it."""
        if self.compute is not None:
            return await self.compute(fn, *args)
        if not self.threaded:
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args)

    async def _answer_async(
        self, source: str, meta: dict[str, Any], data: bytes | None, sync: bool = False
    ) -> dict[str, Any]:
        async with self._lock:
            new = meta["id"] not in self.sides
            if new:
                self._read_vault(meta["task"])
            answered = await self._off_loop(self._answer, source, meta, data, sync)
            reply: dict[str, Any] = answered[0]
            side = self.sides.get(meta["id"])
            if new and side is not None and self.compute is None and self._nursery is not None:
                self._nursery.start_soon(self._warm, side)
            if answered[1] is not None and side is not None:
                answer = await self._step(side, answered[1])
                reply = self._reply(side, meta, [answer.to_wire()], sync)
            if side is not None and source == side.meta["coordinator"] and not sync:
                side.heard_at = trio.current_time()
            if side is not None and sync:  # whom it follows, and how lately it heard from it
                reply["follows"] = side.meta["coordinator"]
                reply["heard_s"] = trio.current_time() - side.heard_at
            return reply

    async def handle(self, conn: Connection, op: str, body: dict[str, Any]) -> Any:
        if op == "adopt":
            return await self._adopt(conn.peer_id, _meta_check(body.get("job")))
        if op == "ask":  # a job device asks after a job this one may coordinate
            job, what = body.get("job"), body.get("what")
            if not isinstance(job, str) or what not in ("status", "stop"):
                raise ProtocolViolation("learn.ask: a job id and status or stop")
            found = self.jobs.get(job)
            if found is None or conn.peer_id not in found.meta["devices"]:
                return {"job": None}
            if what == "stop" and found.state in ("running", "starting"):
                found.state = "stopped"
                found.scope.cancel()
            return found.to_json()
        if op != "msg":
            raise ProtocolViolation(f"unknown operation learn.{op}")
        meta = _meta_check(body.get("job"))
        data = body.get("msg")
        if data is not None and not isinstance(data, bytes):
            raise ProtocolViolation("learn: msg is bytes")
        sync = body.get("sync", False)
        if not isinstance(sync, bool):
            raise ProtocolViolation("learn: sync is true or false")
        try:
            return await self._answer_async(conn.peer_id, meta, data, sync)
        except ProtocolViolation:
            raise
        except SwarmError as exc:  # an unknown task, a ledger of another swarm...
            log.warning("learn job %s from %s refused: %s", meta["id"], conn.peer_id[-8:], exc)
            return {"msgs": [], "state": "refused", "records": 0, "epsilon": 0.0,
                    "error": str(exc)}  # fmt: skip

    # ---- coordinating ------------------------------------------------------------------------

    def _members(self, scope: str) -> tuple[dict[str, str], set[str]]:
        """Names of the members that may hold ``scope`` (placement's view), and the alive ones."""
        kernels = self._placement()
        view = kernels.view() if kernels is not None else []
        names = {d.id: d.name for d in view if not d.relay_only and scope in d.scopes}
        alive = {d.id for d in view if d.status == "alive"}
        return names, alive

    async def _start(self, args: dict[str, Any]) -> dict[str, Any]:
        task_name = args.get("task")
        if not isinstance(task_name, str) or not task_name:
            raise InvalidArgument("learn start: name a task (e.g. digits)")
        epsilon = _number(args, "epsilon", 4.0)
        delta = _number(args, "delta", 1e-5)
        rounds = args.get("rounds", 50)
        trust = args.get("trust", "swarm")
        if not epsilon > 0 or not 0 < delta < 1:
            raise InvalidArgument("learn start: --epsilon must be positive and --delta in (0, 1)")
        if not isinstance(rounds, int) or isinstance(rounds, bool) or not 1 <= rounds <= 100_000:
            raise InvalidArgument("learn start: --rounds must be a whole number from 1")
        if trust not in ("swarm", "none"):
            raise InvalidArgument("learn start: --trust must be swarm or none")
        if self._nursery is None:
            raise InvalidArgument("learn: the service is still starting; try again in a moment")
        self._read_vault(task_name)
        task = self._task(task_name)
        fix = getattr(task, "spec", None)
        spec = fix() if fix is not None else {}
        names, alive = self._members(getattr(task, "scope", SCOPE))
        devices = sorted(d for d in names if d in alive)
        if not devices:
            raise InvalidArgument(f"learn start: no live device may hold {task_name}'s records")
        seed = int(self._rng.integers(2**31))
        job_id = f"{task.name}-{self._random.getrandbits(24):06x}"
        meta = {
            "id": job_id, "task": task.name, "trust": trust, "epsilon": epsilon, "delta": delta,
            "alpha": ALPHA, "seed": seed, "devices": devices, "keys": {}, "sigma": 0.0,
            "rounds": rounds, "coordinator": self.me, "term": 0, "spec": spec,
        }  # fmt: skip
        boss = self._choose_coordinator(task, devices)
        if boss != self.me:
            return await self._hand_over({**meta, "coordinator": boss}, names)
        log.warning("learning job %s: %s across %d devices, epsilon %g, trust %s",
                    job_id, task.name, len(devices), epsilon, trust)  # fmt: skip
        return await self._coordinate(meta, names)

    def _choose_coordinator(self, task: Task, devices: list[str]) -> str:
        """The job device the placement policy would run a medium, stateful piece of the task's
        scope on (this one if the policy has no view or no choice)."""
        from dataclasses import replace as with_

        from homeswarm.kernels import Needs
        from homeswarm.placement import place

        kernels = self._placement()
        if kernels is None:
            return self.me
        wanted = set(devices)
        view = [
            with_(d, kernels=(*d.kernels, COORDINATE)) for d in kernels.view() if d.id in wanted
        ]
        needs = Needs(scope=getattr(task, "scope", SCOPE), energy=ENERGY, stateful=True)
        from ._placement_service import policy_config

        config = policy_config(self.identity.settings.placement)
        decision = place(COORDINATE, needs, view, config=config)
        return decision.candidates[0].device.id if decision.ok else self.me

    async def _hand_over(self, meta: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
        """Ask ``meta``'s coordinator to adopt the job; its status, or this device's if it
        would not (then this one coordinates)."""
        boss = meta["coordinator"]
        reply = await self._request(boss, {"op": "learn.adopt", "job": meta})
        if isinstance(reply, dict) and reply.get("job") == meta["id"]:
            self.remote[meta["id"]] = meta
            self._newest = meta["id"]
            log.warning("learning job %s: handed to %s, the policy's coordinator",
                        meta["id"], names.get(boss, boss[-8:]))  # fmt: skip
            return reply
        log.info("learn %s: %s would not adopt it; coordinating here", meta["id"], boss[-8:])
        return await self._coordinate({**meta, "coordinator": self.me}, names)

    def _job_from(self, meta: dict[str, Any], names: dict[str, str]) -> _Job:
        """The job ``meta`` describes, as its coordinator holds it (nothing run yet)."""
        rows = {d: _DeviceRow(names.get(d, d[-8:])) for d in meta["devices"]}
        for device, key in meta["keys"].items():
            if device in rows:
                rows[device].key = key
        task = self._task(meta["task"], meta.get("spec"))
        return _Job(meta, task, None, np.zeros(0), float(meta["sigma"]), meta["rounds"], rows)

    async def _coordinate(self, meta: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
        """Coordinate the new job ``meta`` from this device; its status."""
        job = self._job_from(meta, names)
        self._add(job)
        assert self._nursery is not None
        self._nursery.start_soon(self._drive, job)
        return job.to_json()

    async def _request(self, device: str, body: dict[str, Any]) -> Any:
        """One member request; None if it failed (logged)."""
        peer = self.peer
        if peer is None or peer.transport is None:
            return None
        try:
            open_ = peer.transport.connections(device)
            conn = open_[0] if open_ else await peer.transport.dial(device, peer.addrs_of(device))
            return await conn.request(body, timeout=ROUND_TIMEOUT)
        except SwarmError as exc:
            log.info("learn: no answer from %s: %s", device[-8:], exc)
            return None

    async def _adopt(self, source: str, meta: dict[str, Any]) -> dict[str, Any]:
        """A job device asks this one to coordinate its new job (the policy chose it)."""
        if meta["coordinator"] != self.me or source not in meta["devices"]:
            raise ProtocolViolation("learn: adopt names this device as the coordinator")
        if self.me not in meta["devices"] or meta["term"] != 0:
            raise ProtocolViolation("learn: adopt is for a new job of this device's")
        if meta["id"] in self.jobs:
            return self.jobs[meta["id"]].to_json()
        task = self.get_task(meta["task"])
        names, _ = self._members(getattr(task, "scope", SCOPE))
        log.warning("learning job %s: coordinating it for %s (the policy's choice)",
                    meta["id"], names.get(source, source[-8:]))  # fmt: skip
        return await self._coordinate(meta, names)

    async def _remote_status(self, meta: dict[str, Any], op: str = "status") -> dict[str, Any]:
        """A job handed to another device: the answer of whichever job device coordinates it
        now (the highest term), or this device's pointer if none answers."""
        best: dict[str, Any] | None = None
        for device in [meta["coordinator"], *(d for d in meta["devices"] if d != self.me)]:
            reply = await self._request(device, {"op": "learn.ask", "job": meta["id"], "what": op})
            if isinstance(reply, dict) and reply.get("job") == meta["id"]:
                if best is None or reply.get("term", 0) > best.get("term", 0):
                    best = reply
                if op == "stop":
                    break
        if best is None:
            return {"job": meta["id"], "task": meta["task"], "state": "unreachable",
                    "round": 0, "rounds": meta["rounds"], "accuracy": None,
                    "epsilon_target": meta["epsilon"], "delta": meta["delta"],
                    "trust": meta["trust"], "coordinator": meta["coordinator"],
                    "term": meta["term"], "devices": []}  # fmt: skip
        return best

    def _add(self, job: _Job) -> None:
        self._newest = job.id
        while len(self.jobs) >= MAX_JOBS:
            oldest = next((j for j in self.jobs if self.jobs[j].state not in ("running",)), None)
            if oldest is None:
                raise InvalidArgument(f"learn: {MAX_JOBS} jobs are running; stop one first")
            del self.jobs[oldest]
        self.jobs[job.id] = job

    @staticmethod
    def _prepare(job: _Job) -> None:
        """The held-out set, and for a new job the noise for the budget and the first model
        (seconds: a thread); a job taken over keeps its noise and model."""
        m = job.meta
        split = job.task.split(m["devices"], alpha=m["alpha"], seed=m["seed"])
        job.test = split.test
        if not job.params.size:
            import torch

            from homeswarm.learning import TorchTrainer

            job.sigma = noise_for(
                epsilon=m["epsilon"], delta=m["delta"], sample_rate=SAMPLE_RATE, steps=job.rounds
            )
            job.meta = {**m, "sigma": job.sigma}
            torch.manual_seed(m["seed"])
            job.params = TorchTrainer(job.task.model(), split.test).initial()
        job.accuracy = LearnService._accuracy(job)

    # ---- taking a job over -------------------------------------------------------------------

    def _status_of(self, device: str) -> str | None:
        peer = self.peer
        member = peer.core.members.get(device) if peer is not None and peer.core else None
        return member.status if member is not None else None

    def _watch(self) -> None:
        """Take over each job whose coordinator is gone, where this device is its successor."""
        assert self._nursery is not None
        for job_id, side in list(self.sides.items()):
            meta, p = side.meta, side.participant
            boss = meta["coordinator"]
            finished = p.round + 1 >= meta["rounds"]
            if boss == self.me or finished or self._status_of(boss) not in GONE:
                continue
            if job_id in self.jobs and self.jobs[job_id].state in ("starting", "running"):
                continue
            if self._retry_at.get(job_id, -math.inf) > trio.current_time():
                continue
            live = [d for d in meta["devices"] if d == self.me or self._status_of(d) == "alive"]
            if 2 * len(live) < len(meta["devices"]):  # cut off from most of the job's devices
                continue
            if successor(boss, [*live, boss]) != self.me:
                continue
            job = self._take_over(side)
            log.warning("learning job %s: its coordinator %s is %s; this device coordinates "
                        "from round %d (term %d)", job_id, boss[-8:], self._status_of(boss),
                        job.round, job.meta["term"])  # fmt: skip
            self._nursery.start_soon(self._drive, job)

    def _take_over(self, side: _Side) -> _Job:
        p = side.participant
        previous = side.meta
        meta = {**side.meta, "coordinator": self.me, "term": side.meta["term"] + 1}
        side.meta = meta
        names, _ = self._members(getattr(self.get_task(meta["task"]), "scope", SCOPE))
        job = self._job_from(meta, names)
        started = p.last_start
        if started is not None and started.round > p.round:  # a round in progress: again
            job.resume = p.take_over()
            job.round = started.round
            job.params = started.model()
        elif p.params is not None:
            job.round = p.round + 1
            job.params = p.params
        else:
            job.params = np.zeros(0)  # nothing ran yet: start afresh
        job.state = "starting"
        job.previous, job.meta_taken = previous, meta
        job.decided_at = trio.current_time()
        self._add(job)
        return job

    async def _sync(self, job: _Job) -> tuple[int, bool]:
        """Before the first round of a taken-over job: the newest result any device holds; how
        many of the job's devices answered (this one included), and whether one of them heard
        from the coordinator taken over since this device decided to (it is alive after all:
        this device was cut off, or asleep when it decided)."""
        previous = job.previous["coordinator"] if job.previous is not None else None
        alive = False
        devices = [d for d in job.meta["devices"] if d == self.me or self._status_of(d) == "alive"]
        size = len(params_bytes(job.params))
        best: tuple[int, bytes] = (-1, b"")
        answered = 0
        for device in devices:
            reply = await self._ask(job, device, None, sync=True)
            if reply is None:
                continue
            answered += 1
            heard = reply.get("heard_s")
            if (
                device != self.me
                and reply.get("follows") == previous
                and isinstance(heard, int | float)
                and heard < trio.current_time() - job.decided_at
            ):
                alive = True
            self._note(job, device, reply)
            round_, result = reply.get("round"), reply.get("result")
            if (
                isinstance(round_, int)
                and round_ > best[0]
                and isinstance(result, bytes)
                and (not size or len(result) == size)
            ):
                best = (round_, result)
        if best[0] >= job.round or (job.resume is not None and best[0] >= job.resume.round):
            # that round's result is out already: go on from it, never release it again
            job.resume = None
            job.round = best[0] + 1
            job.params = np.frombuffer(best[1], dtype="<f4").astype(np.float64)
        return answered, alive

    def _give_up(self, job: _Job, answered: int, alive: bool) -> None:
        """A take-over that reached fewer than half the job's devices, or found that the
        coordinator still runs the job: this device is cut off (a laptop asleep, a partition's
        small side), not the job's best coordinator. Nothing was adopted anywhere (the probe
        changes nothing): it goes back to the coordinator it had, and may try again after
        ``RETRY_TAKE_OVER_S``."""
        why = "its coordinator is alive" if alive else f"reached {answered} of its devices"
        log.warning("learning job %s: %s; not taking it over", job.id, why)
        job.state = "given up"
        self.jobs.pop(job.id, None)
        side = self.sides.get(job.id)
        if side is not None and job.previous is not None and side.meta is job.meta_taken:
            side.meta = job.previous
        self._retry_at[job.id] = trio.current_time() + RETRY_TAKE_OVER_S

    @staticmethod
    def _accuracy(job: _Job) -> float:
        from homeswarm.learning import predictor

        return job.task.evaluate(predictor(job.task.model(), job.params), job.test)

    async def _ask(
        self, job: _Job, device: str, data: bytes | None, *, sync: bool = False
    ) -> dict[str, Any] | None:
        """One message to a job's device (this one directly), its reply; None if it failed."""
        if device == self.me:
            try:
                return await self._answer_async(self.me, job.meta, data, sync)
            except SwarmError as exc:
                log.info("learn %s: this device cannot answer: %s", job.id, exc)
                return None
        body: dict[str, Any] = {"op": "learn.msg", "job": job.meta, "msg": data}
        if sync:
            body["sync"] = True
        reply = await self._request(device, body)
        if reply is None:
            return None
        if not isinstance(reply, dict) or not isinstance(reply.get("msgs"), list):
            log.warning("learn %s: a malformed reply from %s", job.id, device[-8:])
            return None
        return reply

    def _note(self, job: _Job, device: str, reply: dict[str, Any]) -> list[Message]:
        """A device's reply: its row updated; its messages, the malformed ones dropped."""
        row = job.rows[device]
        state, records, epsilon = reply.get("state"), reply.get("records"), reply.get("epsilon")
        term = reply.get("term")
        if state == "moved" and isinstance(term, int) and term > job.meta["term"]:
            if job.state in ("starting", "running"):
                log.warning("learning job %s: coordinated elsewhere now (term %d); handed over",
                            job.id, term)  # fmt: skip
                job.state = "handed over"
                job.scope.cancel()
            return []
        if isinstance(state, str) and len(state) <= 40:
            row.state = state
        if isinstance(records, int) and not isinstance(records, bool) and records >= 0:
            row.records = records
            row.joined = True
        if isinstance(epsilon, float | int) and math.isfinite(epsilon):
            row.epsilon_spent = float(epsilon)
        executor, error = reply.get("executor"), reply.get("error")
        if isinstance(executor, str) and len(executor) <= 16:
            row.executor = executor
        row.error = error[:200] if isinstance(error, str) and row.state == "step failed" else None
        key = reply.get("key")
        if key is not None and row.key is None:
            try:
                secagg.open_public(key, job=job.id, device=device)
            except ProtocolViolation as exc:
                log.warning("learn %s: refused %s's mask key: %s", job.id, device[-8:], exc)
            else:
                row.key = key
                job.meta = {**job.meta, "keys": {**job.meta["keys"], device: key}}
        out = []
        for data in reply["msgs"]:
            try:
                if not isinstance(data, bytes):
                    raise ProtocolViolation("not bytes")
                out.append(from_wire(data))
            except ProtocolViolation as exc:
                log.warning("learn %s: dropped a malformed message from %s: %s",
                            job.id, device[-8:], exc)  # fmt: skip
        return out

    async def _exchange(
        self,
        job: _Job,
        sends: list[tuple[str, bytes | None]],
        got: list[tuple[str, Message, float]] | None = None,
    ) -> list[tuple[str, Message, float]]:
        """Send each (device, message) at once; every device's answers with when they came,
        into ``got`` as they come (so a caller that stops waiting at a deadline keeps those
        that came in time)."""
        got = [] if got is None else got

        async def one(device: str, data: bytes | None) -> None:
            reply = await self._ask(job, device, data)
            if reply is None:
                row = job.rows[device]
                row.state = "away" if row.joined else "joining"
                return
            now = trio.current_time()
            got.extend((device, m, now) for m in self._note(job, device, reply))

        async with trio.open_nursery() as nursery:
            for device, data in sends:
                nursery.start_soon(one, device, data)
        return got

    async def _drive(self, job: _Job) -> None:
        with job.scope:
            try:
                await self._rounds(job)
            except SwarmError as exc:
                job.state = "failed"
                log.warning("learning job %s failed: %s", job.id, exc)
            except Exception:  # a task's bug must not take the peer down
                job.state = "failed"
                log.exception("learning job %s failed", job.id)
        if job.state == "running":
            job.state = "stopped"

    async def _rounds(self, job: _Job) -> None:
        self._read_vault(job.meta["task"])
        await self._off_loop(self._prepare, job)
        if job.meta["term"]:
            answered, still_there = await self._sync(job)
            if still_there or 2 * answered < len(job.meta["devices"]):
                self._give_up(job, answered, still_there)
                return
        job.state = "running"
        devices = list(job.meta["devices"])
        trust_none = job.meta["trust"] == "none"
        min_survivors = max(1, (len(devices) * 2) // 3) if trust_none else 1
        while job.round < job.rounds:
            _, alive = self._members(getattr(job.task, "scope", SCOPE))
            reachable = [d for d in devices if d in alive or d == self.me]
            # first contact: a device sets up its side and says its records (and its key)
            new = [d for d in reachable if not job.rows[d].joined]
            if new:
                await self._exchange(job, [(d, None) for d in new])
                if trust_none:  # everyone learns the keys gathered before a masked round
                    await self._exchange(job, [(d, None) for d in reachable])
            live = [d for d in reachable if job.rows[d].joined]
            for d in devices:
                if d not in reachable:
                    job.rows[d].state = "away" if job.rows[d].joined else "joining"
            if not live:  # nobody has answered yet: try again, the round not counted
                await trio.sleep(self.round_gap)
                continue
            start = job.resume or RoundStart(
                job.id, job.round, 0, self.me, job.meta["trust"], tuple(live),
                params_bytes(job.params), SAMPLE_RATE, CLIP, job.sigma, min_survivors,
            )  # fmt: skip
            job.resume = None
            coordinator = Coordinator(
                start,
                records={d: job.rows[d].records for d in devices},
                lr=LR,
                size=len(job.params),
                now=trio.current_time(),
                timeout=ROUND_TIMEOUT,
                rng=np.random.default_rng(self._random.getrandbits(64)),
            )
            sends = coordinator.start_messages()
            while coordinator.outcome is None:
                got: list[tuple[str, Message, float]] = []  # those in time count, the rest not
                with trio.move_on_at(coordinator.deadline_at):
                    await self._exchange(job, [(d, m.to_wire()) for d, m in sends], got)
                sends = []
                for device, message, at in got:
                    sends += coordinator.receive(device, message, at)
                if coordinator.outcome is None and not sends:
                    sends = coordinator.tick(max(trio.current_time(), coordinator.deadline_at))
            outcome = coordinator.outcome
            declined = coordinator.declined
            if outcome.params is not None and outcome.contributors:
                job.params = outcome.params
                job.accuracy = self._accuracy(job)
                await self._exchange(job, [(d, m.to_wire()) for d, m in sends])  # the result
            job.round += 1
            if (
                not outcome.contributors
                and all(job.rows[d].state == "out of budget" for d in live)
                and declined
            ):
                job.state = "done"
                log.warning("learning job %s: every device is out of budget", job.id)
                return
            await trio.sleep(self.round_gap)
        job.state = "done"
        for row in job.rows.values():
            if row.state in ("training", "waiting"):
                row.state = "done"

    def local(self, job: str) -> Local | None:
        """This device's side of ``job`` (None if it has none)."""
        side = self.sides.get(job)
        if side is None:
            return None
        p = side.participant
        return Local(
            job,
            side.ids,
            p.ledger.epsilon,
            p.ledger.epsilon_budget,
            p.ledger.steps,
            p.rounds_taken,
            STATES.get(p.state, p.state),
        )

    # ---- the CLI -----------------------------------------------------------------------------

    def _job(self, args: dict[str, Any]) -> _Job | dict[str, Any]:
        """The job ``args`` names (the newest without a name): coordinated here (a ``_Job``),
        or started here and handed to another device (its META)."""
        job_id = args.get("job")
        if job_id is None:
            job_id = self._newest
        if isinstance(job_id, str) and job_id in self.jobs:
            return self.jobs[job_id]
        if isinstance(job_id, str) and job_id in self.remote:
            return self.remote[job_id]
        known = ", ".join([*self.jobs, *self.remote]) or "none"
        raise InvalidArgument(f"no learning job {job_id!r} on this device (jobs: {known})")

    async def control(self, op: str, args: dict[str, Any]) -> Any:
        if op == "start":
            return await self._start(args)
        if op in ("status", "stop", "export"):
            if op == "status" and args.get("job") is None and not (self.jobs or self.remote):
                return {"jobs": []}
            job = self._job(args)
            if isinstance(job, dict):  # coordinated elsewhere
                if op == "export":
                    return self._export(await self._held_copy(job), args.get("file"))
                return await self._remote_status(job, op)
            if op == "stop" and job.state in ("running", "starting"):
                job.state = "stopped"
                job.scope.cancel()
            if op == "export":
                return self._export(job, args.get("file"))
            return job.to_json()
        raise InvalidArgument(f"unknown request learn.{op}")

    async def _held_copy(self, meta: dict[str, Any]) -> _Job:
        """A job coordinated elsewhere, as this device holds it: the newest model it was sent
        (as a participant) and the coordinator's figures."""
        side = self.sides.get(meta["id"])
        params = side.participant.params if side is not None else None
        if params is None:
            raise InvalidArgument(f"learn export: no round of {meta['id']} has finished yet")
        status = await self._remote_status(meta)
        sigma = status.get("noise_multiplier")
        if status.get("state") == "unreachable" or not isinstance(sigma, int | float):
            # the privacy statement is the coordinator's figures: none is never "epsilon 0"
            raise InvalidArgument(
                f"learn export: no device coordinating {meta['id']} answers, and the privacy "
                "statement needs its figures; export there, or once it is back"
            )
        rows = {
            str(d.get("id", d.get("name"))): _DeviceRow(
                str(d.get("name")), epsilon_spent=float(d.get("epsilon_spent") or 0.0)
            )
            for d in status.get("devices", [])
            if isinstance(d, dict)
        }
        task = self._task(meta["task"], meta.get("spec"))
        job = _Job(meta, task, None, params, float(sigma), meta["rounds"], rows)
        assert side is not None
        job.round = side.participant.round + 1
        job.accuracy = status.get("accuracy")
        return job

    def _export(self, job: _Job, file: Any) -> dict[str, Any]:
        if not isinstance(file, str) or not file:
            raise InvalidArgument("learn export: name a file")
        import torch

        from homeswarm.learning import predictor

        path = Path(file)
        model = job.task.model()
        predictor(model, job.params)  # loads the parameters into the model
        statement = {
            "job": job.id,
            "task": job.task.name,
            "rounds": job.round,
            "accuracy": job.accuracy,
            "epsilon": max((r.epsilon_spent for r in job.rows.values()), default=0.0),
            "epsilon_target": job.meta["epsilon"],
            "delta": job.meta["delta"],
            "accountant": "rdp",
            "sample_rate": SAMPLE_RATE,
            "clip": CLIP,
            "noise_multiplier": job.sigma,
            "trust": job.meta["trust"],
            "record_level": True,
            **(job.meta.get("spec") or {}),  # what the task fixed for the job (intents: labels)
        }
        head = getattr(job.task, "head", None)
        extra: dict[str, str] = {}
        try:
            torch.save(model.state_dict(), path)
            if head is not None:  # a head the classify kernel takes (intents)
                extra["head"] = str(path.with_name(path.name + ".head.json"))
                Path(extra["head"]).write_text(json.dumps(head(job.params)))
            privacy = path.with_name(path.name + ".privacy.json")
            fd = os.open(privacy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "w") as out:
                json.dump(statement, out, indent=1)
        except OSError as exc:
            raise InvalidArgument(f"learn export: cannot write {path}: {exc.strerror}") from None
        return {"model": str(path), "privacy": str(privacy), **extra, **statement}

    def status(self) -> dict[str, Any] | None:
        if not self.jobs:
            return None
        return {"jobs": [job.to_json() for job in self.jobs.values()]}

    def metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        rounds = GaugeMetricFamily("swarm_learn_round", "a job's round", labels=["job", "task"])
        accuracy = GaugeMetricFamily(
            "swarm_learn_accuracy", "a job's accuracy on its held-out set", labels=["job", "task"]
        )
        spent = GaugeMetricFamily(
            "swarm_learn_epsilon_spent",
            "privacy budget a device has spent on a job's task (its ledger)",
            labels=["job", "task", "device"],
        )
        for job in self.jobs.values():
            key = [job.id, job.task.name]
            rounds.add_metric(key, job.round)
            if job.accuracy is not None:
                accuracy.add_metric(key, job.accuracy)
            for row in job.rows.values():
                spent.add_metric([*key, row.name], row.epsilon_spent)
        yield from (rounds, accuracy, spent)


def _number(args: dict[str, Any], name: str, default: float) -> float:
    value = args.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"learn start: --{name} must be a number")
    return float(value)


__all__ = ["Compute", "LearnService", "Local", "Work"]


def _kernel_input(
    trainer: object, params: np.ndarray, rows: np.ndarray, clip: float
) -> dict[str, Any] | None:
    """The ``dp-step`` kernel's input for a step of ``trainer`` (None: its model is not one the
    kernel builds, and the step runs in the peer)."""
    if not isinstance(trainer, KernelTrainer):
        return None
    return trainer.step_input(params, rows, clip)
