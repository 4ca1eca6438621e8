"""The connection manager's policy (transports.reap): property tests on the pure function, and a
stateful run where connections open, are used, turn busy and idle while time passes and the
policy runs when the transport would run it (a connection opening over the mark, its deadline)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from homeswarm.transports import ConnectionLimits, Idle, InvalidArgument, reap

limits_st = st.builds(
    lambda low, extra, grace, timeout: ConnectionLimits(
        high=low + extra, low=low, grace=grace, idle_timeout=timeout
    ),
    st.integers(0, 6),
    st.integers(0, 6),
    st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    st.sampled_from([0.25, 2.0, 10.0, math.inf]),
)
NOW = 100.0
conns_st = st.lists(
    st.builds(Idle, st.integers(), st.floats(NOW - 20, NOW), st.booleans()), max_size=20
).map(lambda cs: [Idle(i, c.active_at, c.busy) for i, c in enumerate(cs)])  # distinct keys


def in_grace(c: Idle[int], limits: ConnectionLimits, now: float) -> bool:
    return c.active_at + limits.grace > now


@given(conns_st, limits_st)
def test_the_policy_keeps_its_rules(conns, limits):
    decision = reap(conns, NOW, limits)
    closed = set(decision.close)
    kept = [c for c in conns if c.key not in closed]
    # busy connections are never closed; idle ones past their timeout always are
    assert not any(c.busy for c in conns if c.key in closed)
    for c in conns:
        if not c.busy and c.active_at + limits.idle_timeout <= NOW:
            assert c.key in closed
    # at most `high` kept, beyond those busy or in their grace
    if len(kept) > limits.high:
        assert all(c.busy or in_grace(c, limits, NOW) for c in kept)
    # what was trimmed (not timed out) was the least recently used, and no more than needed
    trimmed = [c for c in conns if c.key in closed and c.active_at + limits.idle_timeout > NOW]
    if trimmed:
        assert len(kept) >= limits.low
        eligible = [c for c in kept if not c.busy and not in_grace(c, limits, NOW)]
        assert max(c.active_at for c in trimmed) <= min(
            (c.active_at for c in eligible), default=math.inf
        )
    # nothing is closed while the count is within the mark and nothing timed out
    if len(conns) <= limits.high:
        assert not trimmed
    # the next look is strictly later (the transport never spins), and it is due
    assert decision.next_at > NOW
    # the same input, the same answer (closing order included)
    assert reap(conns, NOW, limits) == decision


@given(conns_st, limits_st)
def test_looking_again_at_the_deadline_changes_something_or_waits_longer(conns, limits):
    """Run at its own deadline with nothing new, the policy closes something or looks later."""
    first = reap(conns, NOW, limits)
    if first.next_at == math.inf:
        return
    left = [c for c in conns if c.key not in set(first.close)]
    second = reap(left, first.next_at, limits)
    assert second.close or second.next_at > first.next_at


@pytest.mark.parametrize(
    "kwargs",
    [{"low": 5, "high": 4}, {"low": -1}, {"grace": -1.0}, {"idle_timeout": 0.0}],
)
def test_bad_limits_are_refused(kwargs):
    with pytest.raises(InvalidArgument):
        ConnectionLimits(**kwargs)


class ManagedTransport(RuleBasedStateMachine):
    """Connections under the policy as a transport runs it: on an opening over the high mark
    (when its last look left more than the mark open: by the new one's grace), and at each
    deadline it gave; time only moves forward."""

    def __init__(self) -> None:
        super().__init__()
        self.limits = ConnectionLimits(high=4, low=2, grace=1.0, idle_timeout=5.0)
        self.now = 0.0
        self.open: dict[int, list[float | bool]] = {}  # key -> [active_at, busy]
        self.next_key = 0
        self.next_at = math.inf
        self.closed_busy = False
        self.busy_at_look: set[int] = set()
        self.over = False  # the last look left more than the high mark open

    def run_policy(self) -> None:
        views = [Idle(k, float(a), bool(b)) for k, (a, b) in self.open.items()]
        decision = reap(views, self.now, self.limits)
        for key in decision.close:
            self.closed_busy |= bool(self.open[key][1])
            del self.open[key]
        self.next_at = decision.next_at
        self.over = len(self.open) > self.limits.high
        self.busy_at_look = {k for k, (_, busy) in self.open.items() if busy}

    @rule()
    def open_one(self) -> None:
        self.open[self.next_key] = [self.now, False]
        self.next_key += 1
        if len(self.open) > self.limits.high and self.over:
            self.next_at = min(self.next_at, self.now + self.limits.grace)
        elif len(self.open) > self.limits.high:
            self.run_policy()
        else:  # as the transport does: the manager looks again by the new one's timeout
            self.next_at = min(self.next_at, self.now + self.limits.idle_timeout)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def use_one(self, data) -> None:
        key = data.draw(st.sampled_from(sorted(self.open)))
        self.open[key][0] = self.now

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def busy_or_not(self, data) -> None:
        key = data.draw(st.sampled_from(sorted(self.open)))
        self.open[key][1] = not self.open[key][1]
        self.open[key][0] = self.now  # a request or its reply is a frame

    @rule(dt=st.sampled_from([0.01, 0.5, 1.0, 2.5, 7.0]))
    def time_passes(self, dt) -> None:
        target = self.now + dt
        while self.next_at <= target:  # each deadline on the way, in turn
            self.now = max(self.now, self.next_at)
            self.run_policy()
        self.now = target

    @invariant()
    def nothing_busy_was_closed(self) -> None:
        assert not self.closed_busy

    @invariant()
    def no_idle_connection_outlives_its_timeout(self) -> None:
        for active_at, busy in self.open.values():
            assert busy or float(active_at) + self.limits.idle_timeout > self.now

    @invariant()
    def the_count_is_bounded(self) -> None:
        """Over the high mark only by connections busy, in their grace, or busy when the policy
        last looked (a connection's end of work wakes nobody; the policy looks again by then)."""
        if len(self.open) <= self.limits.high:
            return
        for key, (active_at, busy) in self.open.items():
            in_grace = float(active_at) + self.limits.grace > self.now
            assert busy or in_grace or key in self.busy_at_look


ManagedTransport.TestCase.settings = settings(max_examples=60, stateful_step_count=40)
test_managed_transport = ManagedTransport.TestCase
