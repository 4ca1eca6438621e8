"""Light members: not probed, probing nobody, holding their place with a lease; ``away``, never
``dead``, when it lapses. And accusations count only when a roster member signed them.

Cores run on ``CoreNet`` (10 ms latency, no jitter unless said), in virtual time; a light member's
state is ``light_state(lease)``, which ``lease_of`` reads back as its lease.
"""

from __future__ import annotations

import itertools
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeswarm.swarm._membership import (
    HEARTBEATS_PER_LEASE,
    Accusation,
    Gossip,
    Membership,
    Ping,
    PingReq,
    Sync,
)
from homeswarm.swarm.testing import CoreNet, RosterFacts, light_state

LEASE = 600.0


def light_net(n: int = 4, *, lease: float = LEASE, **options) -> tuple[CoreNet, str]:
    """``n`` cores joined and quiet; the last is light. Returns the net and the light one."""
    net = CoreNet(
        n,
        latency=0.01,
        jitter=0.0,
        state=lambda i: light_state(lease) if i == n - 1 else b"",
        **options,
    )
    net.join_all()
    net.run_until(30.0)
    light = net.ids[-1]
    for observer in net.ids:
        for node in net.ids:
            assert net.status(observer, node) == "alive", (observer, node)
    net.trace = []
    net.changes.clear()
    return net, light


def sign(net: CoreNet, kind: str, node: str, inc: int, by: str) -> Accusation:
    unsigned = Accusation(kind, node, inc, by, b"")  # type: ignore[arg-type]
    return Accusation(kind, node, inc, by, net.keys[by].sign(unsigned.signed_part(b"")))  # type: ignore[arg-type]


def test_a_light_member_is_not_probed_probes_nobody_and_relays_nothing():
    net, light = light_net()
    assert net.cores[light].light
    net.run_until(2 * 3600.0)
    assert net.trace is not None
    to_light = [(t, s, m) for t, s, d, m in net.trace if d == light]
    from_light = [(t, d, m) for t, s, d, m in net.trace if s == light]
    assert not [m for _, _, m in to_light if isinstance(m, Ping | PingReq | Gossip)]
    assert not [m for _, _, m in from_light if isinstance(m, Ping | PingReq)]
    # the full members still probe each other
    assert any(isinstance(m, Ping) and d != light for _, _, d, m in net.trace)
    # its own sends are heartbeats: push-pulls to at most 2 full members, twice per lease
    beats = sorted({t for t, _, m in from_light if isinstance(m, Sync)})
    assert all(isinstance(m, Sync) for _, _, m in from_light)
    assert len(beats) == 2 * 3600.0 / (LEASE / HEARTBEATS_PER_LEASE)
    assert all(b - a == LEASE / HEARTBEATS_PER_LEASE for a, b in itertools.pairwise(beats))
    assert all(len([1 for t, _, _ in from_light if t == b]) <= 2 for b in beats)
    # and it stays alive everywhere throughout
    assert not [c for _, c in net.changes if c.node == light and c.status != "alive"]


def test_a_lapsed_lease_shows_away_never_dead_and_one_heartbeat_brings_it_back():
    net, light = light_net()
    net.run_until(100.0)
    others = [n for n in net.ids if n != light]
    net.partition([light], others)
    net.run_until(100.0 + 2 * LEASE)
    assert all(net.status(o, light) == "away" for o in others)
    away_at = [c.at for o, c in net.changes if c.node == light and c.status == "away"]
    assert len(away_at) == len(others)
    assert max(away_at) <= 100.0 + LEASE  # within one lease of the last renewal
    assert not [c for _, c in net.changes if c.node == light and c.status in ("dead", "suspect")]
    inc = net.cores[light].incarnation
    net.heal()
    net.run_until(100.0 + 2 * LEASE + LEASE / HEARTBEATS_PER_LEASE + 2.0)
    assert net.everyone_sees(light, "alive")
    assert net.cores[light].incarnation == inc  # no incarnation fight
    assert net.cores[light].stats.refutations == 0


def test_a_crashed_light_member_is_away_and_forgotten_after_the_tombstone():
    net, light = light_net(tombstone=1800.0)
    net.crash(light)
    net.run_until(30.0 + LEASE + 1.0)
    assert net.everyone_sees(light, "away")
    net.run_until(30.0 + LEASE + 1800.0 + 61.0)
    assert net.everyone_sees(light, None)  # type: ignore[arg-type]


def test_accusations_about_a_light_member_are_no_evidence():
    net, light = light_net()
    full = net.ids[0]
    inc = net.cores[light].incarnation
    net.cores[full].receive(net.ids[1], Gossip((sign(net, "s", light, inc, net.ids[1]),)), 31.0)
    net.cores[full].receive(net.ids[1], Gossip((sign(net, "d", light, inc, net.ids[1]),)), 31.0)
    assert net.status(full, light) == "alive"
    # its own leave still counts
    net.cores[full].receive(light, Gossip((sign(net, "d", light, inc, light),)), 31.0)
    assert net.status(full, light) == "left"


def test_becoming_light_stops_the_probes_and_becoming_full_starts_them():
    net = CoreNet(3, latency=0.01, jitter=0.0)
    net.join_all()
    net.run_until(20.0)
    phone = net.ids[2]
    net.cores[phone].update_state(light_state(LEASE), net.now)
    net.run_until(25.0)
    net.trace = []
    net.run_until(120.0)
    assert not [m for _, _, d, m in net.trace if d == phone and isinstance(m, Ping)]
    assert not [m for _, s, _, m in net.trace if s == phone and isinstance(m, Ping)]
    net.cores[phone].update_state(b"", net.now)
    net.run_until(125.0)
    net.trace = []
    net.run_until(130.0)
    assert [m for _, _, d, m in net.trace if d == phone and isinstance(m, Ping)]
    assert [m for _, s, _, m in net.trace if s == phone and isinstance(m, Ping)]
    assert not [c for _, c in net.changes if c.node == phone and c.status != "alive"]


def test_a_strangers_accusation_relayed_by_a_member_is_dropped_and_logged_once(caplog):
    members = None

    def roster() -> RosterFacts:
        assert members is not None
        return RosterFacts(members)

    probe = CoreNet(4, latency=0.01, jitter=0.0)
    members = probe.ids[:3]  # the fourth key is a stranger's
    net = CoreNet(4, latency=0.01, jitter=0.0, facts=roster)
    net.crash(net.ids[3])
    net.join_all()
    net.run_until(20.0)
    a, b, c, stranger = net.ids
    inc = net.cores[c].incarnation
    forged = (sign(net, "s", c, inc, stranger), sign(net, "d", c, inc, stranger))
    with caplog.at_level(logging.WARNING, logger="swarm.membership"):
        for _ in range(3):
            net.cores[a].receive(b, Gossip(forged), net.now)
    assert net.status(a, c) == "alive"
    assert net.cores[c].stats.refutations == 0
    lines = [r for r in caplog.records if "not a member" in r.getMessage()]
    assert len(lines) == 1
    assert net.cores[a].stats.rejected == 6


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    loss=st.sampled_from([0.0, 0.05, 0.2]),
    cuts=st.lists(st.tuples(st.floats(0, 1200), st.floats(10, 500)), max_size=3),
)
def test_light_member_is_never_dead_and_away_only_when_its_lease_lapsed(seed, loss, cuts):
    """Whatever the loss and however often it is cut off: no view ever holds the light member
    suspect or dead; a view shows it away only once that view's lease ran out; and after a
    stretch connected it is alive again everywhere."""
    lease = 120.0
    net, light = light_net(3, lease=lease, seed=seed)
    net.loss = loss
    others = [n for n in net.ids if n != light]
    events = sorted([(s, "cut") for s, _ in cuts] + [(s + d, "heal") for s, d in cuts])
    t = net.now
    for at, what in [*events, (1800.0, "end")]:
        while t < at:
            t = min(at, t + 10.0)
            net.run_until(t)
            for o in others:
                member = net.cores[o].members[light]
                assert member.status in ("alive", "away")
                if member.status == "away":
                    assert member.renewed_at + member.lease <= t
        if what == "cut":
            net.partition([light], others)
        elif what == "heal":
            net.heal()
    net.heal()
    net.loss = 0.0
    net.run_until(t + lease / HEARTBEATS_PER_LEASE + 5.0)
    assert net.everyone_sees(light, "alive")
    assert not [c for _, c in net.changes if c.node == light and c.status in ("dead", "suspect")]


def test_a_light_member_turning_full_takes_up_the_suspicions_it_only_heard_of():
    net, light = light_net(3)
    a, b = net.ids[0], net.ids[1]
    core = net.cores[light]
    net.crash(b)
    core.receive(a, Gossip((sign(net, "s", b, net.cores[b].incarnation, a),)), net.now)
    assert net.status(light, b) == "suspect"
    assert not core._suspicions  # a light member runs no suspicion timers
    core.update_state(b"", net.now)  # full again
    assert b in core._suspicions
    net.run_until(net.now + 40.0)
    assert net.status(light, b) == "dead"


def test_a_light_members_heartbeats_time_its_round_trips():
    net, light = light_net(3)
    core = net.cores[light]
    net.run_until(LEASE / HEARTBEATS_PER_LEASE + 1.0)
    timed = {n: m.rtt for n, m in core.members.items() if n != light and m.rtt is not None}
    assert timed
    assert all(rtt == pytest.approx(0.02) for rtt in timed.values())  # 10 ms each way


def test_a_device_just_seen_is_asked_at_once_whatever_it_was_last():
    """A join names the device seen on the LAN first: it is asked at once, even after earlier
    joins went round other seeds, and even though we hold it as left."""
    net = CoreNet(6, latency=0.01, jitter=0.0)
    net.join_all()
    net.run_until(20.0)
    core = net.cores[net.ids[0]]
    seen = net.ids[5]
    core.receive(seen, Gossip((sign(net, "d", seen, net.cores[seen].incarnation, seen),)), 20.0)
    assert net.status(net.ids[0], seen) == "left"
    core.pop_outbox()
    others = [n for n in net.ids[1:] if n != seen]
    core.join(others, 20.0)
    core.join(others, 20.0)  # (two rounds: without starting over, the turn is past the start)
    core.pop_outbox()
    core.join([seen, *others], 20.0)
    asked = [dst for dst, msg in core.pop_outbox() if isinstance(msg, Sync)]
    assert asked[0] == seen


def test_a_beat_a_person_asked_for_brings_the_latest_view_and_replaces_the_next_heartbeat():
    net, light = light_net(3)
    core = net.cores[light]
    full = net.ids[0]
    net.run_until(100.0)
    net.cores[full].update_state(b"new", net.now)  # the light member hears of it at its next beat
    net.run_until(net.now + 5.0)
    assert core.members[full].state != b"new"
    sent = core.beat(net.now, unless_within=30.0)
    assert sent == 2
    assert core.beats_unanswered == 2
    asked = net.now
    net.run_until(net.now + 0.05)  # one round trip
    assert core.members[full].state == b"new"
    assert core.beats_unanswered == 0
    assert core.beat(net.now, unless_within=30.0) == 0  # one went just now
    net.trace = []
    net.run_until(asked + LEASE / HEARTBEATS_PER_LEASE - 1.0)
    assert not [m for t, src, dst, m in net.trace if src == light]  # the due one was replaced
    net.run_until(asked + LEASE / HEARTBEATS_PER_LEASE + 1.0)
    assert [m for t, src, dst, m in net.trace if src == light and isinstance(m, Sync)]


def test_a_beat_out_of_turn_counts_from_the_last_heartbeat_sent_whatever_the_lease_since():
    """The last heartbeat's time is the one kept when it went, not one worked back from the
    next one's with the lease of now: a lease that grew since would place it long ago."""
    net, light = light_net(3)
    core = net.cores[light]
    net.run_until(100.0)
    assert core.beat(net.now, unless_within=30.0) == 2
    net.run_until(net.now + 1.0)
    core.update_state(light_state(4 * LEASE), net.now)  # still light, a longer lease
    assert core.light
    assert core.beat(net.now + 5.0, unless_within=30.0) == 0  # one went 6 s ago
    assert core.beat(net.now + 31.0, unless_within=30.0) == 2


def _gossip_day(monkeypatch: pytest.MonkeyPatch, *, skip_idle_rounds: bool):
    """Two full members and a light one; each full member's state changes now and then. What
    they send (sorted: no jitter, so nothing random depends on the order of same-time events)
    and how often the first one woke."""
    if not skip_idle_rounds:  # the reference: every round woken for, as before
        monkeypatch.setattr(Membership, "_idle", lambda self: False)
    net, _ = light_net(3)
    a, b = (net.cores[n] for n in net.ids[:2])
    ticks: list[float] = []
    tick = a.tick
    a.tick = lambda now: (ticks.append(now), tick(now))[1]  # type: ignore[method-assign]
    net.trace = []
    for i in range(6):
        (a if i % 2 else b).update_state(f"state {i}".encode(), net.now)
        net.run_until(net.now + 300.0 + i)
    assert net.trace is not None
    sent = sorted((t, src, dst, repr(msg)) for t, src, dst, msg in net.trace)
    return sent, len(ticks)


def test_gossip_rounds_that_would_send_nothing_are_not_woken_for_and_the_rest_go_as_before(
    monkeypatch: pytest.MonkeyPatch,
):
    """A record the only full member we gossip with already holds stays queued (the light one
    may turn full and need it): unbatched, a round every 0.2 s sent nothing for hours (half of
    a simulated day's wake-ups). Skipped, the rounds that do send go at the same times."""
    sent, woke = _gossip_day(monkeypatch, skip_idle_rounds=True)
    monkeypatch.undo()
    before, woke_before = _gossip_day(monkeypatch, skip_idle_rounds=False)
    assert any("Gossip" in m for _, _, _, m in sent)
    assert sent == before
    assert woke < woke_before / 3


def test_a_full_member_never_beats_out_of_turn():
    net, _ = light_net(3)
    full = net.cores[net.ids[0]]
    assert full.beat(net.now, unless_within=0.0) == 0
    assert full.beats_unanswered == 0


def test_a_fact_made_on_a_full_member_reaches_the_light_member_at_once():
    """A revocation must not wait for the light member's next heartbeat (minutes): the revoked
    device could talk to it meanwhile."""
    net, light = light_net(3)
    origin = net.cores[net.ids[0]]
    assert origin.facts.learn(b"revocation")
    origin.spread(b"revocation", net.now)
    net.run_until(net.now + 0.05)  # one hop, not a heartbeat
    assert b"revocation" in net.cores[light].facts.blobs  # type: ignore[attr-defined]


def test_a_fact_made_on_a_light_member_goes_in_a_heartbeat_out_of_turn():
    net, light = light_net(3)
    core = net.cores[light]
    net.run_until(net.now + 100.0)  # mid-period: its next heartbeat is minutes away
    assert core.facts.learn(b"grant")
    net.trace = []
    core.spread(b"grant", net.now)
    net.run_until(net.now + 1.0)
    assert [m for _, src, _, m in net.trace if src == light and isinstance(m, Sync)]
    for node in net.ids:
        assert b"grant" in net.cores[node].facts.blobs  # type: ignore[attr-defined]
