"""One federated round, sans-I/O: a coordinator core and a participant core.

Both take messages (with the sender's id, which the transport authenticated) and return
``(destination, message)`` pairs; the coordinator also takes ``now`` and has one deadline. Nothing
here touches a socket, a clock or a global random generator: a driver moves the messages (the
in-process ``Federation``, or a peer over a transport).

Coordinator states (``TRANSITIONS``; every change goes through ``_move``):

    collecting --all answered-------------------> done
    collecting --deadline, trust swarm----------> done     (the missing simply do not count)
    collecting --deadline or all answered,
                 trust none, someone missing----> revealing
    revealing  --every survivor revealed--------> done
    collecting, revealing --too few survivors,
                 or a reveal missing at the deadline--> failed (nothing released)

A participant answers a ``RoundStart`` once per (job, round): it checks its budget and samples
its records (``begin``, which gives the driver a ``Step`` to compute wherever it runs steps),
then, with the step's result, writes the step to its ledger and only then sends its update, which
it keeps (``finish``; a step that failed spends nothing, ``failed``); if the round is
taken over by another coordinator (same round, same model, same participants) it sends the kept
update again, so a take-over never spends budget twice nor samples a record twice in a round.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from homeswarm.errors import InvalidArgument, ProtocolViolation

from . import _secagg as secagg
from ._ledger import Ledger
from ._messages import (
    Decline,
    Message,
    Reveal,
    RevealRequest,
    RoundResult,
    RoundStart,
    Update,
    params_bytes,
)
from ._records import poisson

log = logging.getLogger(__name__)

Envelope = tuple[str, Message]

TRANSITIONS: dict[str, set[str]] = {
    "collecting": {"done", "revealing", "failed"},
    "revealing": {"done", "failed"},
    "done": set(),
    "failed": set(),
}


class Trainer(Protocol):
    """What a participant needs from the model code (``TorchTrainer`` is the real one)."""

    @property
    def records(self) -> int: ...

    def clipped_sum(self, params: np.ndarray, rows: np.ndarray, clip: float) -> np.ndarray:
        """The sum of the per-sample gradients of the records at ``rows``, each clipped."""
        ...


@runtime_checkable
class KernelTrainer(Trainer, Protocol):
    """A trainer whose model the ``dp-step`` kernel builds (``TorchTrainer``): it gives the
    kernel's input, and counts the steps that ran there."""

    size: int  # parameters
    gradients: int  # per-sample gradients computed so far, here or by the kernel

    def step_input(
        self, params: np.ndarray, rows: np.ndarray, clip: float
    ) -> dict[str, Any] | None:
        """The kernel's input for the records at ``rows`` (None: a model it does not build)."""
        ...

    def stepped(self, samples: int) -> None:
        """A step of ``samples`` records ran in the kernel."""
        ...


@dataclass(frozen=True)
class Step:
    """A local step a participant asks its driver for: the sum of the clipped per-sample
    gradients of the records at ``rows`` (its Poisson sample) for ``start``'s model. The driver
    computes it where it likes (``Trainer.clipped_sum`` here, the ``dp-step`` kernel on Ray) and
    gives it back to ``Participant.finish``, or says it failed (``Participant.failed``)."""

    start: RoundStart
    rows: np.ndarray


@dataclass(frozen=True)
class RoundOutcome:
    """How a round ended: the new model (None if it failed), who counted, who was refused."""

    round: int
    params: np.ndarray | None
    contributors: tuple[str, ...]
    dropped: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]


def coordinator_for(round: int, live: list[str]) -> str:
    """The deterministic first choice: the live devices in id order, one per round in turn."""
    ordered = sorted(live)
    return ordered[round % len(ordered)]


def successor(dead: str, live: list[str]) -> str:
    """Who takes over from a dead coordinator: the next live device after it in id order."""
    ordered = sorted(set(live) - {dead})
    after = [d for d in ordered if d > dead]
    return (after or ordered)[0]


def expected_batch(start: RoundStart, records: Mapping[str, int]) -> float:
    return start.sample_rate * sum(records.get(d, 0) for d in start.participants)


class Coordinator:
    """Collects one round's updates, aggregates, and says the new model."""

    def __init__(
        self,
        start: RoundStart,
        *,
        records: Mapping[str, int],
        lr: float,
        size: int,
        now: float,
        timeout: float,
        rng: np.random.Generator,
    ) -> None:
        self.start = start
        self.records = dict(records)
        self.lr = lr
        self.size = size
        self.deadline_at = now + timeout
        self.timeout = timeout
        self.rng = rng
        self.state = "collecting"
        self.updates: dict[str, np.ndarray] = {}
        self.declined: set[str] = set()
        self.rejected: set[str] = set()
        self.refused: list[tuple[str, str]] = []
        self.dropped: tuple[str, ...] = ()
        self.revealed: dict[tuple[str, str], bytes] = {}
        self.outcome: RoundOutcome | None = None

    @property
    def device(self) -> str:
        return self.start.coordinator

    def _move(self, state: str) -> None:
        if state not in TRANSITIONS[self.state]:
            raise AssertionError(f"round: {self.state} -> {state} is not a transition")
        self.state = state

    def start_messages(self) -> list[Envelope]:
        return [(d, self.start) for d in self.start.participants]

    def next_deadline(self) -> float | None:
        return self.deadline_at if self.state in ("collecting", "revealing") else None

    def _refuse(self, device: str, reason: str, *, answered: bool = False) -> None:
        """Log and note a refusal; ``answered``: the device's one answer this round was bad."""
        log.warning("round %d: refused %s's update: %s", self.start.round, device, reason)
        self.refused.append((device, reason))
        if answered:
            self.rejected.add(device)

    def receive(self, sender: str, message: Message, now: float) -> list[Envelope]:
        s = self.start
        if getattr(message, "job", None) != s.job or getattr(message, "round", None) != s.round:
            return []
        if isinstance(message, Update | Decline) and message.device != sender:
            self._refuse(sender, "sent in another device's name")
            return []
        if isinstance(message, Update) and self.state == "collecting":
            self._take(sender, message)
        elif isinstance(message, Decline) and self.state == "collecting":
            if sender in s.participants and sender not in self.updates:
                self.declined.add(sender)
        elif isinstance(message, Reveal) and self.state == "revealing":
            self._take_reveal(sender, message)
        return self._progress(now)

    def _take(self, sender: str, update: Update) -> None:
        s = self.start
        if sender not in s.participants:
            return self._refuse(sender, "not a participant")
        if sender in self.updates or sender in self.declined or sender in self.rejected:
            return self._refuse(sender, "a second update in one round")
        want = "f4" if s.trust == "swarm" else "u8"
        try:
            values = update.array()
        except ProtocolViolation as exc:
            return self._refuse(sender, str(exc), answered=True)
        if update.encoding != want or values.shape != (self.size,):
            return self._refuse(
                sender, f"wrong shape ({update.encoding} x {values.size})", answered=True
            )
        if want == "f4":
            if not np.all(np.isfinite(values)):
                return self._refuse(sender, "not finite", answered=True)
            self.updates[sender] = values.astype(np.float64)
        else:
            self.updates[sender] = values.copy()

    def _take_reveal(self, sender: str, reveal: Reveal) -> None:
        if reveal.device != sender or sender not in self.updates:
            return self._refuse(sender, "a reveal from outside the survivors")
        seeds = dict(reveal.seeds)
        if set(seeds) != set(self.dropped):
            return self._refuse(sender, "a reveal that does not cover the dropped devices")
        for dropped, seed in seeds.items():
            self.revealed[(sender, dropped)] = seed

    def _missing(self) -> list[str]:
        return [d for d in self.start.participants if d not in self.updates]

    def _progress(self, now: float) -> list[Envelope]:
        s = self.start
        if self.state == "collecting":
            answered = len(self.updates) + len(self.declined) + len(self.rejected)
            if answered < len(s.participants) and now < self.deadline_at:
                return []
            if s.trust == "swarm":
                return self._finish()
            if len(self.updates) < s.min_survivors:
                return self._fail(f"{len(self.updates)} survivors, below {s.min_survivors}")
            if not self._missing():
                return self._finish()
            self.dropped = tuple(self._missing())
            self._move("revealing")
            self.deadline_at = now + self.timeout
            request = RevealRequest(s.job, s.round, self.dropped)
            return [(d, request) for d in self.updates]
        if self.state == "revealing":
            if len(self.revealed) == len(self.updates) * len(self.dropped):
                return self._finish()
            if now >= self.deadline_at:
                return self._fail("a survivor did not reveal")
        return []

    def tick(self, now: float) -> list[Envelope]:
        return self._progress(now)

    def _fail(self, why: str) -> list[Envelope]:
        log.warning("round %d failed: %s", self.start.round, why)
        self._move("failed")
        self.outcome = RoundOutcome(
            self.start.round, None, (), tuple(self._missing()), tuple(self.refused)
        )
        return []

    def _finish(self) -> list[Envelope]:
        s = self.start
        sigma = s.noise_multiplier * s.clip
        if s.trust == "swarm":
            total = np.zeros(self.size)
            for values in self.updates.values():
                total += values
            total += self.rng.normal(0.0, sigma, self.size)  # the noise, added once
        else:
            words = np.zeros(self.size, dtype=np.uint64)
            for values in self.updates.values():
                words = words + values
            total = secagg.decode(secagg.unmask_dropped(words, self.revealed))
        batch = expected_batch(s, self.records)
        params = s.model() - self.lr * total / max(batch, 1e-12)
        self._move("done")
        contributors = tuple(sorted(self.updates))
        self.outcome = RoundOutcome(
            s.round, params, contributors, tuple(self._missing()), tuple(self.refused)
        )
        result = RoundResult(s.job, s.round, params_bytes(params), contributors)
        return [(d, result) for d in s.participants]


def _fingerprint(start: RoundStart) -> bytes:
    s = replace(start, attempt=0, coordinator="-")
    return hashlib.sha256(s.to_wire()).digest()


class Participant:
    """One device's side of the rounds: budget first, then its update, kept for a take-over."""

    def __init__(
        self,
        device: str,
        *,
        trainer: Trainer,
        ledger: Ledger,
        rng: np.random.Generator,
        key: X25519PrivateKey | None = None,
        public_keys: Mapping[str, X25519PublicKey] | None = None,
    ) -> None:
        self.device = device
        self.trainer = trainer
        self.ledger = ledger
        self.rng = rng
        self.key = key
        self.public_keys = dict(public_keys or {})
        self.secrets: dict[str, bytes] = {}  # X25519 secret per peer, computed once
        self.state = "waiting"  # waiting, training, out of budget, sitting out
        self.params: np.ndarray | None = None
        self.round = -1  # the last round whose result this device holds
        self.last_start: RoundStart | None = None
        self.kept: dict[tuple[str, int], tuple[bytes, Message]] = {}
        self.rounds_taken = 0
        self.sit_out = False  # power: below its floor or away
        self.error: str | None = None  # why its last step failed (state "step failed")

    def receive(self, sender: str, message: Message) -> list[Envelope]:
        """Answer ``message``; a round's step, if it takes one, computed here by the trainer."""
        if isinstance(message, RoundStart):
            answer = self.begin(sender, message)
            if isinstance(answer, Step):
                s = answer.start
                answer = self.finish(
                    answer, self.trainer.clipped_sum(s.model(), answer.rows, s.clip)
                )
            return [] if answer is None else [(sender, answer)]
        if isinstance(message, RevealRequest):
            return self._reveal(sender, message)
        if isinstance(message, RoundResult) and message.round > self.round:
            self.params = message.model()
            self.round = message.round
        return []

    def _seeds(self, start: RoundStart, others: tuple[str, ...]) -> dict[str, bytes]:
        if self.key is None:
            raise ProtocolViolation("trust none needs this device's X25519 key")
        seeds = {}
        for other in others:
            if other == self.device:
                continue
            if other not in self.secrets:
                self.secrets[other] = secagg.shared_secret(self.key, self.public_keys[other])
            seeds[other] = secagg.pair_seed(
                self.secrets[other], job=start.job, round=start.round, pair=(self.device, other)
            )
        return seeds

    def begin(self, sender: str, start: RoundStart) -> Message | Step | None:
        """A round starts: the answer at once (a decline, the kept answer to a round taken
        over), or the ``Step`` to compute before ``finish`` answers; None if it is not for
        this device. Nothing is spent here: the budget only once the step has been computed."""
        if sender != start.coordinator or self.device not in start.participants:
            return None
        key = (start.job, start.round)
        if key in self.kept:
            kept_fingerprint, answer = self.kept[key]
            if kept_fingerprint == _fingerprint(start):
                self.last_start = start  # a take-over: the same answer, no new spending
                return answer
            return Decline(start.job, start.round, self.device, "conflict")
        if (
            self.last_start is not None
            and start.job == self.last_start.job
            and (start.round < self.last_start.round)
        ):
            return Decline(start.job, start.round, self.device, "conflict")  # a stale round
        self.last_start = start
        if self.sit_out:
            self.state = "sitting out"
            return self._keep(start, Decline(start.job, start.round, self.device, "power"))
        if start.trust == "none" and not set(start.participants) <= set(self.public_keys) | {
            self.device
        }:
            return self._keep(start, Decline(start.job, start.round, self.device, "conflict"))
        if not self.ledger.affordable(start.noise_multiplier, start.sample_rate):
            self.state = "out of budget"
            return self._keep(start, Decline(start.job, start.round, self.device, "budget"))
        return Step(start, poisson(self.rng, self.trainer.records, start.sample_rate))

    def finish(self, step: Step, values: np.ndarray) -> Message:
        """The step computed (the clipped gradients' sum): spend it (on disk before the update
        leaves), then the update, kept for a take-over."""
        start = step.start
        try:
            self.ledger.spend(start.noise_multiplier, start.sample_rate)
        except InvalidArgument:  # spent meanwhile, elsewhere (another job of the task)
            self.state = "out of budget"
            return self._keep(start, Decline(start.job, start.round, self.device, "budget"))
        self.state = "training"
        self.error = None
        self.rounds_taken += 1
        if start.trust == "swarm":
            update = Update(start.job, start.round, self.device, "f4", params_bytes(values))
            return self._keep(start, update)
        share = start.noise_multiplier * start.clip / math.sqrt(start.min_survivors)
        noisy = values + self.rng.normal(0.0, share, values.shape)
        words = secagg.masked(noisy, self.device, self._seeds(start, start.participants))
        update = Update(start.job, start.round, self.device, "u8", words.astype("<u8").tobytes())
        return self._keep(start, update)

    def failed(self, step: Step, error: str) -> Message:
        """The step could not be computed (``error``, one line): nothing spent, the round
        declined (and the same answer to a take-over of it)."""
        self.state = "step failed"
        self.error = error
        start = step.start
        return self._keep(start, Decline(start.job, start.round, self.device, "failed"))

    def _keep(self, start: RoundStart, answer: Message) -> Message:
        self.kept = {k: v for k, v in self.kept.items() if k[1] >= start.round - 1}
        self.kept[(start.job, start.round)] = (_fingerprint(start), answer)
        return answer

    def _reveal(self, sender: str, request: RevealRequest) -> list[Envelope]:
        start = self.last_start
        if start is None or start.job != request.job or start.round != request.round:
            return []
        if sender != start.coordinator:
            return []
        if self.device in request.dropped or not set(request.dropped) <= set(start.participants):
            return []
        seeds = self._seeds(start, request.dropped)
        return [(sender, Reveal(start.job, start.round, self.device, tuple(sorted(seeds.items()))))]

    def take_over(self) -> RoundStart | None:
        """The start of the round this device was in, coordinated by this device instead."""
        if self.last_start is None:
            return None
        return replace(
            self.last_start, attempt=self.last_start.attempt + 1, coordinator=self.device
        )
