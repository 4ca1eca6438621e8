"""Invariants checked while a simulation runs; every violation is kept with its time.

On every change a peer's membership reports (continuously):

- ``self-view``: a running peer sees itself alive (or left, once it leaves);
- ``admitted``: a peer's view holds only devices of the roster;
- ``monotonic``: what a peer believes of another only moves forward: the pair (incarnation,
  alive < suspect < dead < left) never decreases, until the member is forgotten. This is the
  precedence rule of ``swarm._membership``; a view that goes back has taken stale news.

At the quiet points a scenario chooses (after the faults have ended and the swarm had time):

- ``agreement``: every running peer sees every device it can reach as alive, and every device
  that is down (crashed, out of battery, asleep) as not alive. A swarm that cannot get back here
  has lost a member for good (a missed refutation) or kept a ghost.

Scenarios add their own checks through ``violate`` (the ``vault`` scenario: ``vault-durable``, an
acknowledged write its store does not hold; ``vault-scope``, a write that went to another scope;
``vault-lost``, an acknowledged write missing after healing; ``vault-agreement``, replicas that
never came to agree).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from homeswarm.swarm import Change

if TYPE_CHECKING:
    from ._world import SimDevice, World

RANK = {"alive": 0, "suspect": 1, "dead": 2, "left": 3, "away": 0}  # away: alive, lease lapsed


@dataclass(frozen=True, slots=True)
class Violation:
    at: float
    invariant: str
    detail: str

    def as_json(self) -> dict[str, object]:
        return {"at_s": round(self.at, 3), "invariant": self.invariant, "detail": self.detail}


class Invariants:
    def __init__(self, world: World, *, keep: int = 1000) -> None:
        self.world = world
        self.checked = 0
        self.violations: list[Violation] = []
        self.counts: dict[str, int] = {}
        self._keep = keep
        self._seen: dict[tuple[str, int, str], tuple[int, int]] = {}
        world.observers.append(self.on_changes)

    def _violate(self, at: float, invariant: str, detail: str) -> None:
        self.counts[invariant] = self.counts.get(invariant, 0) + 1
        if len(self.violations) < self._keep:
            self.violations.append(Violation(at, invariant, detail))

    def violate(self, at: float, invariant: str, detail: str) -> None:
        """A violation found by a scenario's own check; it counts like any other."""
        self._violate(at, invariant, detail)

    def on_changes(self, observer: SimDevice, changes: list[Change]) -> None:
        world = self.world
        for c in changes:
            self.checked += 1
            key = (observer.id, observer.lives, c.node)  # a restarted peer starts afresh
            if c.gone:
                self._seen.pop(key, None)
                continue
            subject = world.by_id.get(c.node)
            who = f"{observer.name} sees {subject.name if subject else c.node[-8:]}"
            if c.node == observer.id:
                ok = c.status == "alive" or (c.status == "left" and observer.leaving)
                if not ok:
                    self._violate(c.at, "self-view", f"{who} (itself) {c.status}")
                continue
            peer = observer.peer
            if subject is None or (peer is not None and not peer.roster.admits(c.node)):
                self._violate(c.at, "admitted", f"{who}: not in the roster")
            now = (c.incarnation, RANK[c.status])
            before = self._seen.get(key)
            if before is not None and now < before:
                self._violate(
                    c.at,
                    "monotonic",
                    f"{who} {c.status}@{c.incarnation} after {_status(before[1])}@{before[0]}",
                )
            self._seen[key] = max(now, before) if before is not None else now

    def check_agreement(
        self, at: float, observers: Iterable[SimDevice] | None = None, *, record: bool = True
    ) -> bool:
        """The views agree with the truth now; with ``record``, a violation per peer that does
        not (without, only the answer: for polling until they agree)."""
        world = self.world
        ok = True
        for observer in observers if observers is not None else world.running():
            if observer.asleep:
                continue
            wrong = []
            for subject in world.devices:
                if subject is observer:
                    continue
                self.checked += 1
                status, _ = world.view(observer, subject)
                if world.reachable(observer, subject) and not subject.asleep:
                    if status != "alive":
                        wrong.append(f"{subject.name} is up, seen {status or 'unknown'}")
                elif (not subject.up or subject.asleep) and status in ("alive", "suspect"):
                    wrong.append(f"{subject.name} is down, seen {status}")
            if wrong:
                ok = False
                if not record:
                    return False
                more = f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else ""
                self._violate(at, "agreement", f"{observer.name}: {'; '.join(wrong[:3])}{more}")
        return ok

    def as_json(self) -> dict[str, object]:
        return {
            "checked": self.checked,
            "violations": [v.as_json() for v in self.violations],
        }


def _status(rank: int) -> str:
    return next(name for name, r in RANK.items() if r == rank)
