"""Membership converges under any schedule of faults: a hypothesis state machine over CoreNet.

Rules run time forward, make the network lossy, duplicating and reordering, split it into groups
and heal it, crash and restart nodes, change their state and let them leave. Checked after every
delivered message and every timer: incarnations never go down in any view, and no running node
is dead (or suspect) in its own view. Checked after every heal-and-settle (a rule, and the end of
every run): once the network is whole and loss-free for SETTLE seconds, every running node is alive
at the same incarnation and version in every running node's view, and every view agrees about the
nodes that are gone.

SETTLE is not a minute: it is the bound from before a healed partition merged at once, when two
sides that declared each other dead met again only through push-pull with a member thought dead,
one every 30 s, taking turns among them (with up to four dead members in a five-node swarm, 4 * 30
s after the next push-pull, at most 30 s on). Every fifth probe now pings one of the dead, and
whoever hears from the dead pulls at once; the bound is kept, as the worst case still allowed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from homeswarm.swarm._membership import Membership
from homeswarm.swarm.testing import CoreNet

SETTLE = 160.0  # virtual seconds of a whole, loss-free network before views must agree (above)


class Swarm(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = CoreNet(3)  # replaced by start()
        self.left: set[str] = set()
        # the highest incarnation each observer has held for each node, per life of the
        # observer (a restart starts a new view); it may only grow
        self.seen: dict[tuple[str, int, str], int] = {}
        self.lives: dict[str, int] = {}

    # ---- set-up and faults -------------------------------------------------------------------

    @initialize(n=st.integers(3, 5), seed=st.integers(0, 2**32 - 1))
    def start(self, n: int, seed: int) -> None:
        self.net = CoreNet(n, seed=seed, latency=0.005, jitter=0.0)
        self.net.join_all()
        self.advance(5.0)

    @rule(seconds=st.floats(0.05, 30.0))
    def run(self, seconds: float) -> None:
        self.advance(seconds)

    @rule(loss=st.sampled_from([0.0, 0.05, 0.1, 0.3]))
    def lossy(self, loss: float) -> None:
        self.net.loss = loss

    @rule(duplicate=st.sampled_from([0.0, 0.1, 0.5]), jitter=st.sampled_from([0.0, 0.05, 0.3]))
    def duplicate_and_reorder(self, duplicate: float, jitter: float) -> None:
        self.net.duplicate = duplicate
        self.net.jitter = jitter  # jitter far above the 5 ms latency reorders messages

    @rule(groups=st.data())
    def partition(self, groups: st.DataObject) -> None:
        ids = self.net.ids
        label = groups.draw(st.lists(st.integers(0, 2), min_size=len(ids), max_size=len(ids)))
        self.net.heal()
        self.net.partition(
            *({n for n, g in zip(ids, label, strict=True) if g == k} for k in range(3))
        )

    @rule()
    def heal(self) -> None:
        self.net.heal()

    @precondition(lambda self: len(self.running()) > 1)
    @rule(pick=st.integers(0, 4))
    def crash(self, pick: int) -> None:
        running = self.running()
        self.net.crash(running[pick % len(running)])

    @precondition(lambda self: len(self.running()) < len(self.net.ids))
    @rule(pick=st.integers(0, 4))
    def restart(self, pick: int) -> None:
        gone = [n for n in self.net.ids if n not in self.running()]
        node = gone[pick % len(gone)]
        self.net.restart(node, seeds=self.running())
        self.lives[node] = self.lives.get(node, 0) + 1
        self.left.discard(node)

    @precondition(lambda self: bool(self.running()))
    @rule(pick=st.integers(0, 4), size=st.integers(0, 300))
    def update_state(self, pick: int, size: int) -> None:
        running = self.running()
        core = self.net.cores[running[pick % len(running)]]
        core.update_state(bytes([core.me.version % 256]) * size, self.net.now)

    @precondition(lambda self: len(self.running()) > 1)
    @rule(pick=st.integers(0, 4))
    def leave(self, pick: int) -> None:
        running = self.running()
        node = running[pick % len(running)]
        self.net.cores[node].leave(self.net.now)
        self.left.add(node)

    @rule()
    def heal_and_settle(self) -> None:
        """A whole, loss-free network for a minute: views must agree."""
        net = self.net
        net.heal()
        net.loss = net.duplicate = 0.0
        self.advance(SETTLE)
        self.check_agreement()

    def teardown(self) -> None:
        self.heal_and_settle()

    # ---- checks ------------------------------------------------------------------------------

    def running(self) -> list[str]:
        return [n for n in self.net.ids if n not in self.net.down and n not in self.left]

    def advance(self, seconds: float) -> None:
        self.net.run_until(self.net.now + seconds, stop=self.step_checks)

    def step_checks(self) -> bool:
        self.incarnations_never_decrease()
        self.nobody_is_dead_to_itself()
        return False

    @invariant()
    def incarnations_never_decrease(self) -> None:
        for observer, core in self.net.cores.items():
            life = self.lives.get(observer, 0)
            for node, member in core.members.items():
                key = (observer, life, node)
                before = self.seen.get(key, -1)
                assert member.incarnation >= before, (node[-6:], before, member.incarnation)
                self.seen[key] = member.incarnation

    @invariant()
    def nobody_is_dead_to_itself(self) -> None:
        for node in self.running():
            assert self.net.cores[node].me.status == "alive", node[-6:]

    def check_agreement(self) -> None:
        net, running = self.net, self.running()
        for node in running:
            me = net.cores[node].me
            for observer in running:
                member = net.cores[observer].members.get(node)
                seen = (member.status, member.incarnation, member.version) if member else None
                assert seen == ("alive", me.incarnation, me.version), (
                    f"{observer[-6:]} sees {node[-6:]} as {seen}, "
                    f"not alive at {me.incarnation}/{me.version}"
                )
        for node in net.ids:
            if node in running:
                continue
            views = {
                (m.status, m.incarnation)
                for observer in running
                if (m := net.cores[observer].members.get(node)) is not None
            }
            assert len(views) <= 1, f"views of departed {node[-6:]} disagree: {views}"
            assert all(status in ("dead", "left") for status, _ in views), views


TestSwarm = Swarm.TestCase
TestSwarm.settings = settings(
    max_examples=80,  # about 3 s: CoreNet runs a minute of a 5-node swarm in a few ms
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_without_refutation_a_live_node_stays_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted bug: a node that cannot refute what is said about it. The machine must notice."""
    refute: Callable[..., None] = lambda self, incarnation, now: None  # noqa: E731
    monkeypatch.setattr(Membership, "_refute", refute)
    with pytest.raises(AssertionError, match="sees"):
        run_state_machine_as_test(
            Swarm,
            settings=settings(
                max_examples=200,
                stateful_step_count=18,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.generate],  # finding it is enough: no shrinking
                report_multiple_bugs=False,
                suppress_health_check=list(HealthCheck),
            ),
        )
