"""An in-process driver for the round cores: every device's participant, one coordinator per
round, messages encoded to bytes and decoded on arrival (so the wire checks run and bytes are
counted), virtual time, and faults (a device silent in a round, a coordinator killed mid-round).

It is the harness of the tests, the benchmark and the simulator; a peer drives the same cores
over a transport. A malformed message is dropped with a log line (its connection would be
closed) and the round goes on.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from homeswarm.errors import ProtocolViolation

from ._messages import Decline, Message, Reveal, RoundStart, Update, from_wire, params_bytes
from ._round import Coordinator, Participant, RoundOutcome, coordinator_for, successor

log = logging.getLogger(__name__)

TO_COORDINATOR = (Update, Decline, Reveal)
Queue = deque[tuple[str, str, Message]]


@dataclass(frozen=True)
class Mechanism:
    """What every round of a job uses."""

    trust: str
    sample_rate: float
    clip: float
    noise_multiplier: float
    lr: float
    min_survivors: int = 1


@dataclass
class Faults:
    """Faults to play, by round: devices that receive the start and then say nothing, and a
    coordinator that dies after it has taken ``n`` updates."""

    silent: dict[int, set[str]] = field(default_factory=dict)
    kill_coordinator_after: dict[int, int] = field(default_factory=dict)
    tamper: dict[int, Callable[[str, bytes], bytes]] = field(default_factory=dict)


@dataclass
class RoundReport:
    round: int
    coordinators: list[str]
    outcome: RoundOutcome
    bytes_by_device: dict[str, int]


class Federation:
    def __init__(
        self,
        job: str,
        participants: Mapping[str, Participant],
        *,
        records: Mapping[str, int],
        mechanism: Mechanism,
        params: np.ndarray,
        rng: np.random.Generator,
        timeout: float = 10.0,
        faults: Faults | None = None,
    ) -> None:
        self.job = job
        self.participants = dict(participants)
        self.records = dict(records)
        self.mechanism = mechanism
        self.params = np.asarray(params, dtype=np.float64)
        self.size = len(self.params)
        self.rng = rng
        self.timeout = timeout
        self.faults = faults or Faults()
        self.live = set(self.participants)
        self.now = 0.0
        self.round = 0
        self.malformed = 0

    def _coordinator(self, start: RoundStart) -> Coordinator:
        return Coordinator(
            start,
            records=self.records,
            lr=self.mechanism.lr,
            size=self.size,
            now=self.now,
            timeout=self.timeout,
            rng=self.participants[start.coordinator].rng,
        )

    def run_round(self) -> RoundReport:
        m = self.mechanism
        live = sorted(self.live)
        r = self.round
        start = RoundStart(
            self.job, r, 0, coordinator_for(r, live), m.trust, tuple(live),
            params_bytes(self.params), m.sample_rate, m.clip, m.noise_multiplier, m.min_survivors,
        )  # fmt: skip
        coordinator = self._coordinator(start)
        coordinators = [coordinator.device]
        sent: dict[str, int] = dict.fromkeys(self.participants, 0)
        silent = self.faults.silent.get(r, set())
        kill_after = self.faults.kill_coordinator_after.get(r)
        tamper = self.faults.tamper.get(r)
        queue: Queue = deque(
            (coordinator.device, d, msg) for d, msg in coordinator.start_messages()
        )
        while coordinator.outcome is None:
            if not queue:
                deadline = coordinator.next_deadline()
                assert deadline is not None
                self.now = max(self.now, deadline)
                out = coordinator.tick(self.now)
                queue.extend((coordinator.device, d, msg) for d, msg in out)
                continue
            source, dest, message = queue.popleft()
            if source not in self.live or dest not in self.live:
                continue
            if source in silent and source != coordinator.device:
                continue
            data = message.to_wire()
            if tamper is not None:
                data = tamper(source, data)
            if source != dest:  # a device's messages to itself never touch the network
                sent[source] += len(data)
                sent[dest] += len(data)
            try:
                message = from_wire(data)
            except ProtocolViolation as exc:
                self.malformed += 1
                log.warning("dropped a malformed message from %s: %s", source, exc)
                continue
            if dest == coordinator.device and isinstance(message, TO_COORDINATOR):
                out = coordinator.receive(source, message, self.now)
                queue.extend((coordinator.device, d, msg) for d, msg in out)
                if (
                    kill_after is not None
                    and len(coordinator.updates) >= kill_after
                    and coordinator.state == "collecting"
                ):
                    coordinator = self._take_over(coordinator, queue)
                    coordinators.append(coordinator.device)
                    kill_after = None
                continue
            out = self.participants[dest].receive(source, message)
            queue.extend((dest, d, msg) for d, msg in out)
        outcome = coordinator.outcome
        if outcome.params is not None:
            self.params = outcome.params
        self.round += 1
        return RoundReport(r, coordinators, outcome, sent)

    def _take_over(self, dead: Coordinator, queue: Queue) -> Coordinator:
        """The coordinator dies; the next live device in id order restarts the same round."""
        log.info("round %d: coordinator %s died", dead.start.round, dead.device)
        self.live.discard(dead.device)
        queue.clear()
        heir = self.participants[successor(dead.device, sorted(self.live))]
        start = heir.take_over()
        assert start is not None
        assert start.round == dead.start.round
        coordinator = self._coordinator(start)
        queue.extend((coordinator.device, d, msg) for d, msg in coordinator.start_messages())
        return coordinator
