"""The connection manager's policy: which open connections to close, and when to look again.

Pure: it takes the open connections as ``Idle`` views (opened and last active at, busy or not) and
``now``, and returns what to close and the next time anything could change; ``Transport`` runs it
and closes what it names. After go-libp2p's connection manager (high and low water marks, a grace
period for young connections), plus an idle timeout, so a peer that talks to many others in turn
(SWIM probes and gossips random members) keeps a bounded number of connections open, and every
member is reached again on demand by a fresh dial.

Rules:
- A busy connection (a request waiting or being served, a one-way message queued or a write under
  way) is never closed.
- An idle connection not used for ``idle_timeout`` seconds is closed, however few are open.
- While more than ``high`` connections are open, the least recently used idle ones are closed
  until ``low`` are left, sparing any used within the last ``grace`` seconds (an answer may be on
  its way back on it). So at most ``high`` connections are open, beyond those busy or in grace.
- Ties go in the order given (the transport's, oldest first): the same input, the same choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from homeswarm.errors import InvalidArgument

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How many connections a transport keeps open, and for how long they may sit idle."""

    high: int = 16  # above this many open, trim ...
    low: int = 8  # ... down to this many
    # seconds after its last use during which a connection is never trimmed: an answer may be on
    # its way back on it (SWIM's probe timeout: an ack later than that is no use anyway)
    grace: float = 0.5
    idle_timeout: float = 60.0  # an idle connection is closed after this long, whatever the count

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise InvalidArgument(f"connection limits need 0 <= low <= high, got {self}")
        if not (math.isfinite(self.grace) and self.grace >= 0):
            raise InvalidArgument(f"grace must be >= 0 seconds, got {self.grace}")
        if not self.idle_timeout > 0:
            raise InvalidArgument(f"idle_timeout must be > 0 seconds, got {self.idle_timeout}")


UNLIMITED = ConnectionLimits(high=2**31, low=2**31, grace=0.0, idle_timeout=math.inf)


class Idle(NamedTuple, Generic[K]):
    """What the policy needs to know of one open connection. (A named tuple: a transport makes
    one per open connection each time it looks, thousands a second in a large simulation.)"""

    key: K
    active_at: float  # the last frame sent or received (or when it opened)
    busy: bool


@dataclass(frozen=True, slots=True)
class Reaping(Generic[K]):
    close: list[K]
    next_at: float  # when to run the policy again (math.inf: only when a connection opens)


def reap(conns: Sequence[Idle[K]], now: float, limits: ConnectionLimits) -> Reaping[K]:
    """Which of ``conns`` to close at ``now`` under ``limits``, and when to look again."""
    # every test is "the time it ends <= now", the very expression its deadline uses, so a
    # deadline the policy returns is always past once reached (rounding cannot make it spin)
    timeout, grace = limits.idle_timeout, limits.grace
    expired = [not c.busy and c.active_at + timeout <= now for c in conns]
    left = len(conns) - sum(expired)
    excess = left - limits.low if left > limits.high else 0
    if excess:
        spare = [
            i
            for i, c in enumerate(conns)
            if not expired[i] and not c.busy and c.active_at + grace <= now
        ]
        spare.sort(key=lambda i: conns[i].active_at)  # stable: ties keep the given order
        for i in spare[:excess]:
            expired[i] = True
        left -= min(len(spare), excess)
    # the next change: an idle connection reaching its timeout; a busy one is looked at again a
    # timeout from now (its next frame restarts its clock anyway); and, still over the high
    # mark, the first idle connection to leave its grace
    next_at = math.inf
    for i, c in enumerate(conns):
        if expired[i]:
            continue
        next_at = min(next_at, now + timeout if c.busy else c.active_at + timeout)
        if left > limits.high and not c.busy and c.active_at + grace > now:
            next_at = min(next_at, c.active_at + grace)
    return Reaping([c.key for i, c in enumerate(conns) if expired[i]], next_at)
