"""The membership core, two or three at a time in one process, with exact outcomes and timers.

Messages move by hand (``next_sent`` runs one core's timers until it sends something) or through
``CoreNet`` with a fixed 10 ms latency, no jitter and a trace of everything sent, so every time
below is exact. NORMAL timing: probe every 1 s, ping timeout 0.5 s, suspicion at least 4 s at
n <= 10.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import random

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from homeswarm.errors import ProtocolViolation
from homeswarm.swarm._driver import Ed25519Crypto
from homeswarm.swarm._membership import (
    BATTERY_SAVER,
    NORMAL,
    ON_BATTERY,
    PIGGYBACK_BYTES,
    PRECEDENCE,
    Accusation,
    Ack,
    Alive,
    Change,
    Fact,
    Gossip,
    Member,
    Membership,
    Message,
    Nack,
    Ping,
    PingReq,
    Sync,
    affordable_stretch,
    decode_message,
    detection_target,
    encode_message,
    precedence,
)
from homeswarm.swarm.testing import CoreNet, OpenFacts, device_keys
from homeswarm.wire import pack

LATENCY = 0.01


# ---- helpers ------------------------------------------------------------------------------------


def settled(n: int, **options) -> CoreNet:
    """``n`` cores that have joined and gone quiet (nothing left to gossip), tracing from now."""
    net = CoreNet(n, latency=LATENCY, jitter=0.0, **options)
    net.join_all()
    net.run_until(20.0)
    for observer in net.ids:
        for node in net.ids:
            assert net.status(observer, node) == "alive"
    net.trace = []
    net.changes.clear()
    return net


def sent(net: CoreNet, kind: type, src: str | None = None, dst: str | None = None) -> list:
    """(time, src, dst, msg) of every traced message of this kind, in order."""
    assert net.trace is not None
    return [
        (at, s, d, m)
        for at, s, d, m in net.trace
        if isinstance(m, kind) and src in (None, s) and dst in (None, d)
    ]


def changes(net: CoreNet, about: str, observer: str | None = None) -> list[tuple[float, str]]:
    return [
        (c.at, c.status)
        for o, c in net.changes
        if c.node == about and observer in (None, o) and not c.gone
    ]


def next_sent(core: Membership, kind: type, limit: float = 100.0) -> tuple[float, str, Message]:
    """Run ``core``'s timers alone (nothing delivered) until it sends a ``kind``."""
    while True:
        at = core.next_deadline()
        assert at <= limit, f"no {kind.__name__} before {limit}"
        core.tick(at)
        for dst, msg in core.pop_outbox():
            if isinstance(msg, kind):
                return at, dst, msg


class Devices:
    """Keys for hand-made cores and hand-signed records."""

    def __init__(self, n: int, seed: int = 1) -> None:
        self.keys = dict(device_keys(n, random.Random(seed)))
        self.ids = sorted(self.keys)

    def core(self, node: str, now: float = 0.0, **options) -> Membership:
        return Membership(
            node,
            state=b"state",
            crypto=Ed25519Crypto(self.keys[node]),
            facts=OpenFacts(),
            rng=random.Random(node),
            now=now,
            **options,
        )

    def alive(self, node: str, inc: int = 0, version: int = 0, state: bytes = b"state") -> Alive:
        return sign_alive(self.keys[node], node, inc, version, state)

    def accuse(self, kind: str, node: str, inc: int, by: str, key: str | None = None) -> Accusation:
        unsigned = Accusation(kind, node, inc, by, b"")
        signature = self.keys[key or by].sign(unsigned.signed_part(b""))
        return Accusation(kind, node, inc, by, signature)

    def meet(self, core: Membership, now: float = 0.0) -> None:
        """``core`` learns every other device as alive."""
        others = tuple(self.alive(n) for n in self.ids if n != core.node)
        core.receive(self.ids[0], Gossip(others), now)
        core.pop_outbox()
        core.pop_changes()


def sign_alive(key: Ed25519PrivateKey, node: str, inc: int, version: int, state: bytes) -> Alive:
    unsigned = Alive(node, inc, version, state, b"")
    return Alive(node, inc, version, state, key.sign(unsigned.signed_part(b"")))


# ---- probing ------------------------------------------------------------------------------------


def test_a_ping_is_acked_and_measures_the_round_trip():
    net = settled(2)
    a, b = (net.cores[n] for n in net.ids)
    t, dst, ping = next_sent(a, Ping)
    assert dst == b.node
    assert isinstance(ping, Ping)
    assert ping.target == b.node
    b.receive(a.node, ping, t + 0.004)
    [(back, ack)] = b.pop_outbox()
    assert back == a.node
    assert isinstance(ack, Ack)
    assert ack.seq == ping.seq
    a.receive(b.node, ack, t + 0.010)
    member = a.members[b.node]
    assert member.rtt == pytest.approx(0.010)
    assert member.last_heard == t + 0.010
    # nothing else to do until the interval ends, then the next ping
    assert a.next_deadline() == pytest.approx(t + 1.0)
    t2, _, ping2 = next_sent(a, Ping)
    assert t2 == pytest.approx(t + 1.0)
    assert isinstance(ping2, Ping)
    assert ping2.seq > ping.seq
    assert member.status == "alive"
    assert a.awareness == 0


def test_a_silent_member_gets_ping_reqs_nacks_suspicion_then_death():
    net = settled(3)
    b_id = net.ids[1]

    def quiet() -> bool:  # no probe of b under way: the first to probe b after the crash is "a"
        probes = [c._probe for c in net.cores.values()]
        return all(p is None or p.target != b_id or p.acked for p in probes)

    net.run_until(net.now + 5.0, stop=quiet)
    net.trace = []
    net.crash(b_id)
    net.run_until(net.now + 5.0, stop=lambda: bool(sent(net, Ping, dst=b_id)))
    [(t, a_id, _, ping)] = sent(net, Ping, dst=b_id)  # whoever probes b first is "a" now
    [c_id] = [n for n in net.ids if n not in (a_id, b_id)]
    a = net.cores[a_id]
    net.run_until(t + 1.0)

    # no ack within 0.5 s: a asks c to ping b for it
    [(t_req, _, relay, req)] = sent(net, PingReq, src=a_id)
    assert (t_req, relay, req.seq, req.target) == (pytest.approx(t + 0.5), c_id, ping.seq, b_id)
    # c pings b on arrival, gives up after 80% of the 0.5 s a still waits, and says so in time
    relayed = [at for at, *_ in sent(net, Ping, src=c_id, dst=b_id)]
    assert pytest.approx(t + 0.5 + LATENCY) in relayed
    [(t_nack, _, _, nack)] = sent(net, Nack, src=c_id)
    assert (t_nack, nack.seq) == (pytest.approx(t + 0.51 + 0.4), ping.seq)
    assert t_nack + LATENCY < t + 1.0
    # the end of the interval: suspect; every relay nacked, so a's own health is not in doubt
    assert changes(net, b_id, a_id) == [(pytest.approx(t + 1.0), "suspect")]
    assert a.members[b_id].accusation is not None
    assert a.members[b_id].accusation.by == a_id
    assert a.awareness == 0

    # three members: nobody to confirm, so the suspicion lasts its minimum, 4 s
    net.run_until(t + 6.0)
    assert changes(net, b_id, a_id) == [
        (pytest.approx(t + 1.0), "suspect"),
        (pytest.approx(t + 5.0), "dead"),
    ]
    [*_, (t_c_dead, status)] = changes(net, b_id, c_id)
    assert status == "dead"
    assert t + 5.0 + LATENCY <= t_c_dead <= t + 5.25


@pytest.mark.parametrize(("drop_nacks", "awareness"), [(False, 0), (True, 2)])
def test_a_missing_nack_counts_against_our_own_health(drop_nacks, awareness):
    """Lifeguard: relays that do not even nack suggest the trouble is ours."""
    net = settled(4)
    target = net.ids[1]
    net.drop = lambda src, dst, msg: drop_nacks and isinstance(msg, Nack)
    net.crash(target)
    net.run_until(net.now + 5.0, stop=lambda: bool(sent(net, Ping, dst=target)))
    [(t, prober, _, _ping)] = sent(net, Ping, dst=target)
    net.run_until(t + 1.0)
    assert len(sent(net, PingReq, src=prober)) == 2
    assert len(sent(net, Nack, dst=prober)) == 2
    assert net.status(prober, target) == "suspect"
    # every relay nacked: the target is in trouble, not us (0); else 1 per nack that never came
    assert net.cores[prober].awareness == awareness


# ---- suspicion timeouts (Lifeguard) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "confirmations", "lasts"),
    [
        (3, 0, 4.0),  # too few to confirm: the minimum, 4 * 1 s
        (10, 0, 24.0),  # min 4 s (log10 10 = 1), max 6 * min, k = 2 confirmations expected
        (10, 1, 24.0 - 20.0 * (math.log(2) / math.log(3))),
        (10, 2, 4.0),
        (100, 0, 48.0),  # min 4 * log10(100) = 8 s
        (100, 2, 8.0),
    ],
)
def test_suspicion_shrinks_from_max_to_min_with_confirmations(n, confirmations, lasts):
    """Our own failed probe started it: dead exactly when the suspicion runs out."""
    devices = Devices(n)
    me, suspect, *others = devices.ids
    core = devices.core(me)
    devices.meet(core)
    t = 10.0
    core.receive(others[0], Gossip((devices.accuse("s", suspect, 0, me),)), t)
    for i in range(confirmations):
        by = others[1 + i]
        core.receive(by, Gossip((devices.accuse("s", suspect, 0, by),)), t + 0.5 + i)
    core.tick(t + lasts - 0.001)
    assert core.members[suspect].status == "suspect"
    core.pop_outbox()
    core.tick(t + lasts)
    assert core.members[suspect].status == "dead"
    [*_, change] = [c for c in core.pop_changes() if c.node == suspect]
    assert (change.at, change.status) == (t + lasts, "dead")


@pytest.mark.parametrize("answers", [False, True])
def test_a_suspicion_known_only_by_hearsay_asks_the_suspect_before_convicting(answers):
    """At the end, a node that never probed the suspect itself pings it once with the accusation:
    silence for a probe timeout means dead; a live suspect answers with its refutation."""
    devices = Devices(3)
    me, suspect_id, other = devices.ids
    core = devices.core(me)
    devices.meet(core)
    accusation = devices.accuse("s", suspect_id, 0, other)
    core.receive(other, Gossip((accusation,)), 10.0)
    core.pop_outbox()
    core.tick(14.0)  # 4 s: the suspicion's end
    assert core.members[suspect_id].status == "suspect"
    # (its probe, due since 0, then goes to the suspect out of turn: the first ping asks)
    ping, *_ = [m for dst, m in core.pop_outbox() if dst == suspect_id and isinstance(m, Ping)]
    assert ping.target == suspect_id
    assert ping.records == (accusation,)
    if answers:
        suspect = devices.core(suspect_id)
        devices.meet(suspect)
        suspect.receive(other, Gossip((accusation,)), 10.0)  # it refuted long ago
        suspect.pop_outbox()
        suspect.receive(me, ping, 14.005)
        [(_, ack)] = suspect.pop_outbox()
        core.receive(suspect_id, ack, 14.01)
        core.tick(14.5)
        member = core.members[suspect_id]
        assert (member.status, member.incarnation) == ("alive", 1)
    else:
        core.tick(14.499)
        assert core.members[suspect_id].status == "suspect"
        core.tick(14.5)  # + the probe timeout
        assert core.members[suspect_id].status == "dead"


# ---- refutation and precedence ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["s", "d"])
@pytest.mark.parametrize("inc", [0, 5])
def test_a_node_refutes_what_is_said_about_it(kind, inc):
    devices = Devices(3)
    me, accuser, _ = devices.ids
    core = devices.core(me, incarnation=inc)
    devices.meet(core)
    core.receive(accuser, Gossip((devices.accuse(kind, me, inc + 2 * (inc > 0), accuser),)), 1.0)
    taken = inc + 2 * (inc > 0) + 1
    assert core.incarnation == taken
    assert core.me.status == "alive"
    assert core.stats.refutations == 1
    assert core.awareness == (1 if kind == "s" else 0)  # Lifeguard: being suspected is a hint
    [change] = core.pop_changes()
    assert (change.node, change.status, change.incarnation) == (me, "alive", taken)
    # the new alive record goes out with the next gossip, signed, at the new incarnation
    _, _, gossip = next_sent(core, Gossip)
    assert isinstance(gossip, Gossip)
    mine = [r for r in gossip.records if isinstance(r, Alive) and r.node == me]
    assert [(r.incarnation, r.version) for r in mine] == [(taken, 0)]
    assert Ed25519Crypto(devices.keys[me]).verify(me, mine[0].signed_part(b""), mine[0].signature)


def test_a_suspicion_held_past_its_refutation_is_cleared_by_direct_contact():
    """Lifeguard's buddy system, both ways, for a member that missed the refutation: whichever
    of the two pings the other, the suspect's current alive record comes straight back."""
    devices = Devices(3)
    holder_id, suspect_id, other = devices.ids
    stale = devices.accuse("s", suspect_id, 0, other)
    for holder_pings in (True, False):
        holder, suspect = devices.core(holder_id), devices.core(suspect_id)
        devices.meet(holder)
        devices.meet(suspect)
        holder.receive(other, Gossip((stale,)), 1.0)
        suspect.receive(other, Gossip((stale,)), 1.0)  # refuted: now at incarnation 1
        suspect.pop_outbox()
        assert (holder.members[suspect_id].status, suspect.incarnation) == ("suspect", 1)
        if holder_pings:
            ping = Ping(7, suspect_id, (holder.members[suspect_id].accusation,))
            suspect.receive(holder_id, ping, 2.0)
            [(dst, ack)] = suspect.pop_outbox()
            assert dst == holder_id
            assert isinstance(ack, Ack)
            assert ack.records[0] == suspect.me.alive  # first, outside the piggyback budget
            holder.receive(suspect_id, ack, 2.01)
        else:
            holder.receive(suspect_id, Ping(7, holder_id, ()), 2.0)
            [(dst, ack)] = holder.pop_outbox()
            assert isinstance(ack, Ack)
            assert ack.records[0] == stale
            suspect.receive(holder_id, ack, 2.01)
            [(dst, answer)] = suspect.pop_outbox()
            assert (dst, answer) == (holder_id, Gossip((suspect.me.alive,)))
            holder.receive(suspect_id, answer, 2.02)
        member = holder.members[suspect_id]
        assert (member.status, member.incarnation) == ("alive", 1)
        assert suspect.incarnation == 1
        assert suspect.stats.refutations == 1


def test_old_news_about_oneself_is_not_refuted():
    devices = Devices(3)
    me, accuser, _ = devices.ids
    core = devices.core(me, incarnation=4)
    devices.meet(core)
    core.receive(accuser, Gossip((devices.accuse("s", me, 3, accuser),)), 1.0)
    core.receive(accuser, Gossip((devices.accuse("d", me, 2, accuser),)), 1.0)
    assert core.incarnation == 4
    assert core.stats.refutations == 0
    assert core.awareness == 0
    assert core.pop_changes() == []
    # but the accuser is behind: it gets our current record, each time
    assert core.pop_outbox() == [(accuser, Gossip((core.me.alive,)))] * 2


def test_replayed_alive_records_change_nothing():
    devices = Devices(3)
    me, other, _ = devices.ids
    core = devices.core(me)
    devices.meet(core)
    newer = devices.alive(other, 1, 3, b"new")
    core.receive(other, Gossip((newer,)), 1.0)
    assert core.pop_changes()[0].version == 3
    stale_before = core.stats.stale
    for old in (
        newer,  # the same record again
        devices.alive(other, 1, 2, b"older version"),
        devices.alive(other, 0, 9, b"older incarnation"),
    ):
        core.receive(other, Gossip((old,)), 2.0)
    member = core.members[other]
    assert (member.incarnation, member.version, member.state) == (1, 3, b"new")
    assert core.pop_changes() == []
    assert core.stats.stale == stale_before + 3


def test_precedence_alive_suspect_dead_left():
    devices = Devices(4)
    me, x, y, _ = devices.ids
    core = devices.core(me)
    devices.meet(core)

    def feed(record) -> tuple[str, int]:
        core.receive(y, Gossip((record,)), 1.0)
        member = core.members[x]
        return member.status, member.incarnation

    assert feed(devices.accuse("s", x, 0, y)) == ("suspect", 0)  # suspect(j) over alive(i<=j)
    assert feed(devices.alive(x, 0, 1)) == ("suspect", 0)  # alive needs a higher incarnation
    assert feed(devices.alive(x, 1)) == ("alive", 1)
    assert feed(devices.accuse("s", x, 0, y)) == ("alive", 1)  # an older suspicion
    assert feed(devices.accuse("d", x, 1, y)) == ("dead", 1)  # dead(j) over alive(i<=j)
    assert feed(devices.accuse("s", x, 1, y)) == ("dead", 1)  # nothing of the same life undoes it
    assert feed(devices.accuse("d", x, 1, x)) == ("left", 1)  # its own word over our guess
    assert feed(devices.accuse("d", x, 1, y)) == ("left", 1)
    assert feed(devices.accuse("d", x, 2, y)) == ("dead", 2)  # news of a later life
    assert feed(devices.alive(x, 3)) == ("alive", 3)


KINDS = ("alive", "suspect", "dead", "left")
RECORDS = [
    (k, inc, ver) for k in KINDS for inc in (0, 1, 2) for ver in ((0, 1) if k == "alive" else (0,))
]


def _merge(member, record):
    """Apply one record to a copy of ``member`` by the table alone."""
    kind, inc, ver = record
    member = copy.copy(member)
    if precedence(member, kind, inc, ver) == "take":
        member.status, member.incarnation = kind, inc
        member.alive = Alive(member.node, inc, ver, b"", b"") if kind == "alive" else member.alive
    return member


@pytest.mark.parametrize("light", [False, True])
def test_the_precedence_table_merges_in_any_order_to_the_same_record(light):
    # every pair of records, from every starting standing: both orders end at the same status and
    # incarnation (and version, while alive), and a record taken twice changes nothing: gossip
    # may deliver in any order, any number of times
    starts = [
        Member("x", status, 1, Alive("x", 1, 0, b"", b""), lease=60.0 if light else 0.0)
        for status in ("alive", "suspect", "dead", "left")
    ] + ([Member("x", "away", 1, Alive("x", 1, 0, b"", b""), lease=60.0)] if light else [])

    # (not for a light member: an accusation from a later life of it than we know is dropped
    # while it is alive in our view, but taken once its leave made it ``left``, so that pair
    # depends on the order; the lease, not the table, settles a light member's standing)
    records = [r for r in RECORDS if not (light and r[0] in ("suspect", "dead") and r[1] > 1)]

    def view(m):
        return m.status, m.incarnation, m.version if m.status in ("alive", "away") else None

    for start in starts:
        for a, b in itertools.product(records, repeat=2):
            ab, ba = _merge(_merge(start, a), b), _merge(_merge(start, b), a)
            assert view(ab) == view(ba), (view(start), a, b)
            assert view(_merge(ab, a)) == view(ab)


def test_the_precedence_table_has_a_cell_for_every_standing_and_record():
    assert all(set(row) == set(KINDS) for row in PRECEDENCE.values())
    assert precedence(None, "alive", 0) == "take"
    assert all(precedence(None, k, 5) == "stale" for k in KINDS[1:])
    light = Member("x", "alive", 1, Alive("x", 1, 0, b"", b""), lease=60.0)
    assert precedence(light, "dead", 9) == "stale"  # no evidence against a light member
    assert precedence(light, "left", 1) == "take"  # but its own leave counts


# ---- signatures ---------------------------------------------------------------------------------


def test_records_with_bad_signatures_are_dropped_counted_and_logged(caplog):
    devices = Devices(4)
    me, x, y, z = devices.ids
    core = devices.core(me)
    devices.meet(core)
    good = devices.alive(x, 1, 1, b"real")
    forged = [
        # x's alive record signed by y
        Alive(x, 2, 0, b"fake", devices.alive(y, 2, 0, b"fake").signature),
        # x's genuine signature over other contents
        Alive(x, 1, 2, b"tampered", good.signature),
        # an accusation "by z", signed by y
        devices.accuse("s", x, 5, by=z, key=y),
        # a leave "by x", signed by y
        devices.accuse("d", x, 5, by=x, key=y),
        # a suspicion of ourselves, badly signed: no refutation
        devices.accuse("s", me, 0, by=z, key=y),
        # signed for another swarm (domain)
        Alive(x, 3, 0, b"", devices.keys[x].sign(Alive(x, 3, 0, b"", b"").signed_part(b"other"))),
    ]
    with caplog.at_level(logging.WARNING, logger="swarm.membership"):
        for record in forged:
            core.receive(y, Gossip((record,)), 1.0)
    assert core.stats.rejected == len(forged)
    assert len([r for r in caplog.records if "bad signature" in r.getMessage()]) == len(forged)
    assert core.pop_changes() == []
    assert (core.members[x].status, core.members[x].incarnation) == ("alive", 0)
    assert core.incarnation == 0
    assert core.stats.refutations == 0
    # the genuine one is still taken
    core.receive(y, Gossip((good,)), 2.0)
    assert core.members[x].state == b"real"


# ---- the wire -----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=16,
)
records_ish = st.lists(
    st.tuples(st.sampled_from(["a", "s", "d", "f", "x", 1]), st.lists(values, max_size=6)).map(
        lambda t: [t[0], *t[1]]
    ),
    max_size=4,
)
bodies_ish = st.tuples(
    st.sampled_from([1, 0, 2, "1"]),
    st.sampled_from(["ping", "ack", "req", "nack", "gossip", "sync", "pong"]),
    st.lists(values | records_ish, max_size=4),
).map(lambda t: [t[0], t[1], *t[2]])


names = st.text(min_size=1, max_size=12)
counts = st.integers(0, 2**63 - 1)
records_ok = st.lists(
    st.one_of(
        st.tuples(
            st.just("a"), names, counts, counts, st.binary(max_size=30), st.binary(max_size=64)
        ),
        st.tuples(st.sampled_from(["s", "d"]), names, counts, names, st.binary(max_size=64)),
        st.tuples(st.just("f"), st.binary(max_size=30)),
    ).map(list),
    max_size=3,
)
wellformed = st.one_of(
    st.tuples(st.just("ping"), counts, names, records_ok),
    st.tuples(st.just("ack"), counts, records_ok),
    st.tuples(st.just("req"), counts, names, records_ok),
    st.tuples(st.just("nack"), counts),
    st.tuples(st.just("gossip"), records_ok),
    st.tuples(st.just("sync"), st.booleans(), records_ok),
).map(lambda t: [1, *t])


def one_core() -> tuple[Membership, Devices]:
    devices = Devices(3)
    core = devices.core(devices.ids[0])
    devices.meet(core)
    return core, devices


@settings(max_examples=400, deadline=None)
@given(body=values | bodies_ish)
def test_malformed_bodies_raise_protocol_violation_and_nothing_else(body):
    body = msgpack.unpackb(msgpack.packb(body), strict_map_key=False)  # as the wire gives it
    try:
        msg = decode_message(body)
    except ProtocolViolation:
        return
    assert encode_message(msg) == body  # what parses is exactly what was sent
    core, devices = one_core()
    core.receive(devices.ids[1], msg, 1.0)  # and the core takes it without raising
    core.tick(2.0)


@settings(max_examples=200, deadline=None)
@given(body=wellformed)
def test_well_formed_bodies_from_strangers_parse_and_change_nothing(body):
    """Right shape, made-up contents: it parses, and every signed record in it is refused."""
    msg = decode_message(msgpack.unpackb(msgpack.packb(body)))
    assert encode_message(msg) == body
    core, devices = one_core()
    before = {n: (m.status, m.incarnation, m.version) for n, m in core.members.items()}
    core.receive(devices.ids[1], msg, 1.0)
    assert {n: (m.status, m.incarnation, m.version) for n, m in core.members.items()} == before
    assert [c for c in core.pop_changes() if c.node != core.node] == []


def test_a_deeply_nested_body_is_a_protocol_violation_not_a_recursion_error():
    deep: object = 0
    for _ in range(1000):
        deep = [deep]
    for body in (
        [1, deep, 0],
        [1, "gossip", [[deep]]],
        [1, "gossip", [["a", deep, 0, 0, b"", b""]]],
    ):
        with pytest.raises(ProtocolViolation):
            decode_message(msgpack.unpackb(msgpack.packb(body)))


def test_every_message_round_trips():
    devices = Devices(2)
    a, b = devices.ids
    records = (devices.alive(a, 1, 2, b"s"), devices.accuse("s", b, 3, a), Fact(b"cert"))
    for msg in (
        Ping(1, b, records),
        Ack(2, records),
        PingReq(3, b, ()),
        Nack(4),
        Gossip(records),
        Sync(True, records),
    ):
        assert decode_message(msgpack.unpackb(msgpack.packb(encode_message(msg)))) == msg


# ---- leaving, tombstones ------------------------------------------------------------------------


def test_a_graceful_leave_is_left_not_dead_and_stays_so():
    net = settled(3)
    leaver, *stay = net.ids
    core = net.cores[leaver]
    told = core.leave(net.now)
    assert sorted(told) == sorted(stay)
    assert core.me.status == "left"
    assert core.next_deadline() == math.inf
    t = net.now
    net.run_until(t + 60.0)
    for observer in stay:
        assert changes(net, leaver, observer) == [(pytest.approx(t + LATENCY), "left")]
    # once they know, nobody probes it or syncs with it (an answer to its last ping may cross)
    after = [m for at, s, d, m in net.trace if at > t + LATENCY and leaver in (s, d)]
    assert all(isinstance(m, Gossip) for m in after)


def test_tombstones_are_reaped_and_do_not_come_back():
    """Nodes reap on their own schedules; one that has reaped must not take the dead node back
    from one that has not (it used to, as alive first, then dead again: forever)."""
    net = CoreNet(3, seed=3, latency=LATENCY, jitter=0.0, tombstone=100.0)
    net.join_all()
    a, b, c = net.ids
    net.run_until(30.5)
    net.crash(c)
    net.restart(c, [a])  # c now reaps at 90.5, 150.5, ...; a at 60, 120, 180, ...
    net.run_until(40.0)
    net.crash(b)
    net.run_until(60.0)
    [(died_a, _)] = [x for x in changes(net, b, a) if x[1] == "dead"]
    [(died_c, _)] = [x for x in changes(net, b, c) if x[1] == "dead"]
    net.run_until(2000.0)
    # each forgot b at its first reap after `tombstone`, and neither heard of it again
    assert changes(net, b, a)[-1] == (died_a, "dead")
    assert changes(net, b, c)[-1] == (died_c, "dead")
    assert b not in net.cores[a].members
    assert b not in net.cores[c].members
    forgot = [(o, ch.at) for o, ch in net.changes if ch.gone and ch.node == b]
    assert sorted(o for o, _ in forgot) == sorted([a, c])  # each reported it, once


def test_reaping_happens_at_the_first_reap_after_the_tombstone():
    net = CoreNet(2, latency=LATENCY, jitter=0.0, tombstone=100.0)
    net.join_all()
    a, b = net.ids
    net.run_until(10.0)
    net.crash(b)
    net.run_until(60.0)
    [(died, _)] = [x for x in changes(net, b, a) if x[1] == "dead"]
    first_reap = math.ceil((died + 100.0) / 60.0) * 60.0  # reaping runs every 60 s from 0
    net.run_until(first_reap - 0.001)
    assert b in net.cores[a].members
    net.run_until(first_reap)
    assert b not in net.cores[a].members


# ---- profiles, state, joining, facts ------------------------------------------------------------


@pytest.mark.parametrize(("profile", "pings"), [(NORMAL, 100), (BATTERY_SAVER, 20)])
def test_probe_rate_follows_the_profile(profile, pings):
    net = settled(3, profile=profile)
    t = net.now
    net.run_until(t + 100.0)
    for node in net.ids:
        mine = [at for at, *_ in sent(net, Ping, src=node) if at < t + 100.0]
        assert len(mine) == pings
        gaps = {round(b - a, 6) for a, b in itertools.pairwise(mine)}
        assert gaps == {profile.probe_interval}


def test_switching_to_battery_saver_slows_probing_at_once():
    net = settled(3)
    node = net.ids[0]
    net.cores[node].set_profile(BATTERY_SAVER)
    t = net.now
    net.run_until(t + 60.0)
    mine = [at for at, *_ in sent(net, Ping, src=node)]
    assert t < mine[0] <= t + 1.0  # the probe already scheduled, then every 5 s
    assert len(mine) == 12
    assert {round(b - a, 6) for a, b in itertools.pairwise(mine)} == {5.0}


@pytest.mark.parametrize(
    ("n", "gap"), [(2, 2.0), (3, 5 / 3), (10, 5 / (9 * (1 - 0.01 ** (1 / 9))))]
)
def test_a_full_member_on_battery_spaces_its_probes_as_the_view_affords_and_gossips_with_them(
    n, gap
):
    # alone with one other it may probe every 2 s (the stretch's cap); at N = 3 and 10, were
    # every member to do the same, a crash would go unprobed too long for the 8 s / 10 s target
    assert affordable_stretch(n, ON_BATTERY) == pytest.approx(gap)
    net = settled(n)
    node, *_ = net.ids
    core = net.cores[node]
    core.set_profile(ON_BATTERY)
    t = net.now
    for i in range(10):  # news to spread every 0.7 s, out of step with the probes
        net.run_until(t + 0.7 * i)
        core.update_state(b"v%d" % i, net.now)
    net.run_until(t + 60.0)
    pings = [at for at, *_ in sent(net, Ping, src=node)]
    assert t < pings[0] <= t + 1.0  # the probe already scheduled, then every gap
    assert {round(b - a, 6) for a, b in itertools.pairwise(pings)} == {round(gap, 6)}
    gossip = {at for at, *_ in sent(net, Gossip, src=node)}
    assert gossip
    assert gossip <= set(pings)  # one radio burst per wake
    for other in net.ids[1:]:
        assert net.cores[other].members[node].state == b"v9"


def test_the_stretch_leaves_room_for_the_window_and_the_suspicion_within_the_target():
    for n in (*range(1, 40), 100, 1000, 5000):
        stretch = affordable_stretch(n, ON_BATTERY)
        assert 1.0 <= stretch <= ON_BATTERY.stretch
        p = n - 1
        if p >= 1 and stretch > 1.0:
            # the 99th percentile of the first survivor's probe, if all spaced theirs alike
            reach = p * stretch * (1 - 0.01 ** (1 / p))
            suspicion = 4 * max(1.0, math.log10(n))
            assert reach + 1.0 + suspicion <= detection_target(n) + 1e-9
    assert affordable_stretch(3, NORMAL) == 1.0
    assert [detection_target(n) for n in (2, 3, 10, 100, 1000, 5000)] == [
        8.0,
        8.0,
        10.0,
        15.0,
        22.0,
        22.0,
    ]


def laptop_beside(
    dev: Devices, until: float, down_at: float, heard: tuple[float, Accusation] | None = None
) -> tuple[Membership, dict[str, list[float]], list[float], list[Change]]:
    """A laptop on battery among three, driven by hand: the third member acks its pings at
    once and nacks its ping-reqs (``Nack`` 0.4 s later), the victim acks until ``down_at``;
    ``heard``: an accusation the third member gossips to it at that time. Returns the core,
    when it pinged each, when it sent the victim's death, and its changes about the victim."""
    laptop, victim, third = dev.ids
    core = dev.core(laptop, profile=ON_BATTERY)
    core.settle([dev.alive(victim), dev.alive(third)], 0.0)
    pings: dict[str, list[float]] = {victim: [], third: []}
    told: list[float] = []
    now = 0.0
    while now < until:
        now = core.next_deadline()
        if heard is not None and heard[0] <= now:
            now, record = heard
            core.receive(third, Gossip((record,)), now)
            heard = None
        else:
            core.tick(now)
        for dst, msg in core.pop_outbox():
            records = getattr(msg, "records", ())
            if any(isinstance(r, Accusation) and r.kind == "d" for r in records):
                told.append(now)
            if isinstance(msg, Ping) and dst in pings:
                pings[dst].append(now)
                if dst == third or now < down_at:
                    core.receive(dst, Ack(msg.seq), now + LATENCY)
            elif isinstance(msg, PingReq):
                core.receive(third, Nack(msg.seq), now + 0.4)
    return core, pings, told, [c for c in core.pop_changes() if c.node == victim]


def test_a_member_on_battery_suspects_one_interval_after_its_ping_and_then_probes_at_once():
    dev = Devices(3)
    _, pings, told, changed = laptop_beside(dev, until=20.0, down_at=10.0)
    victim, third = dev.ids[1:]
    [(suspected, _), (dead, _)] = [(c.at, c.status) for c in changed]
    first = next(at for at in pings[victim] if at >= 10.0)
    assert suspected == pytest.approx(first + 1.0)  # NORMAL's window, not the 1.67 s gap
    every = sorted(itertools.chain(*pings.values()))
    well = [at for at in every if at < 10.0]
    assert {round(b - a, 6) for a, b in itertools.pairwise(well)} == {round(5 / 3, 6)}
    # while it is suspect: probes a second apart again, from the instant it suspected
    during = [at for at in every if suspected <= at < dead]
    assert during[0] == pytest.approx(suspected)
    assert {round(b - a, 6) for a, b in itertools.pairwise(during)} == {1.0}
    assert dead == pytest.approx(suspected + 4.0)  # NORMAL's suspicion at N = 3, not 8 s
    assert told[0] == pytest.approx(dead)
    # and with two full members left it spaces its probes 2 s apart
    assert {round(b - a, 6) for a, b in itertools.pairwise(pings[third][-3:])} == {2.0}


def test_a_member_on_battery_sends_a_death_it_declares_at_once_not_with_its_next_probe():
    dev = Devices(3)
    _, victim, third = dev.ids
    heard = (10.3, dev.accuse("s", victim, 0, third))
    _, pings, told, changed = laptop_beside(dev, until=20.0, down_at=10.0, heard=heard)
    [(suspected, _), (dead, _)] = [(c.at, c.status) for c in changed]
    assert suspected == 10.3
    # hearsay: its suspicion (4 s) ends, it asks the suspect once (a probe timeout), declares
    assert dead == pytest.approx(10.3 + 4.0 + 0.5)
    assert dead not in itertools.chain(*pings.values())  # no probe to ride with
    assert told[0] == pytest.approx(dead)


def test_nobody_declares_a_member_on_battery_dead_and_it_returns_to_normal_when_plugged():
    net = settled(5)
    net.loss = 0.2  # lossy enough that the others suspect it now and then
    node = net.ids[0]
    net.cores[node].set_profile(ON_BATTERY)
    t = net.now
    net.run_until(t + 600.0)
    about = [c.status for o, c in net.changes if c.node == node and o != node]
    assert "suspect" in about
    assert "dead" not in about  # it refutes, in the burst that heard it
    assert net.everyone_sees(node, "alive")
    net.cores[node].set_profile(NORMAL)  # plugged in (and the network calm: no relayed pings)
    net.loss = 0.0
    # the loss raised its Lifeguard multiplier (up to 8 x the interval): let it heal first
    deadline = net.now + 120.0
    while net.cores[node].awareness and net.now < deadline:
        net.run_until(net.now + 1.0)
    assert net.cores[node].awareness == 0
    net.trace = []
    net.run_until(net.now + 20.0)
    pings = [at for at, *_ in sent(net, Ping, src=node)]
    assert len(pings) >= 19
    assert {round(b - a, 6) for a, b in itertools.pairwise(pings)} == {1.0}


def test_a_state_update_reaches_everyone_at_once():
    net = settled(3)
    node, *others = net.ids
    core = net.cores[node]
    t = net.now
    core.update_state(b"x" * 300, t)
    assert core.me.version == 1
    assert core.me.state == b"x" * 300
    net.run_until(t + 1.0)
    for observer in others:
        member = net.cores[observer].members[node]
        assert (member.version, member.state) == (1, b"x" * 300)
        [change] = [c for o, c in net.changes if o == observer and c.node == node]
        assert (change.at, change.version) == (pytest.approx(t + LATENCY), 1)


def test_a_lost_join_is_retried_until_the_node_knows_someone():
    net = CoreNet(2, latency=LATENCY, jitter=0.0)
    seed, joiner = net.ids
    net.trace = []
    lost = [0]

    def lose_two_joins(src: str, dst: str, msg: Message) -> bool:
        if isinstance(msg, Sync) and src == joiner and lost[0] < 2:
            lost[0] += 1
            return True
        return False

    net.drop = lose_two_joins
    net.cores[joiner].join([seed], 0.0)
    net.run_until(15.0)
    attempts = [at for at, _, _, msg in sent(net, Sync, src=joiner) if not msg.reply]
    assert attempts == [0.0, 2.0, 6.0]  # after 2 s, then 4 s, until it knows someone
    assert net.status(joiner, seed) == "alive"
    assert net.status(seed, joiner) == "alive"
    assert changes(net, seed, joiner) == [(pytest.approx(6.0 + 2 * LATENCY), "alive")]


def test_a_device_cut_off_backs_off_to_one_call_per_push_pull_interval():
    net = CoreNet(2, latency=LATENCY, jitter=0.0)
    seed, joiner = net.ids
    net.trace = []
    net.drop = lambda src, dst, msg: True  # nobody hears it: asleep, offline
    net.cores[joiner].join([seed], 0.0)
    net.run_until(300.0)
    attempts = [at for at, _, _, msg in sent(net, Sync, src=joiner) if not msg.reply]
    assert attempts[:6] == [0.0, 2.0, 6.0, 14.0, 30.0, 60.0]
    assert all(b - a == pytest.approx(30.0) for a, b in itertools.pairwise(attempts[5:]))
    # and a new sighting (join again) starts over at once
    net.cores[joiner].join([seed], 300.0)
    net.run_until(303.0)
    attempts = [at for at, _, _, msg in sent(net, Sync, src=joiner) if not msg.reply]
    assert attempts[-2:] == [300.0, 302.0]


def test_a_lone_device_wakes_once_a_second_not_five_times():
    devices = Devices(1)
    core = devices.core(devices.ids[0])
    wakeups, t = 0, 0.0
    while (t := core.next_deadline()) < 100.0:
        core.tick(t)
        wakeups += 1
    assert core.pop_outbox() == []
    # 100 of the probe timer (finding nobody), 3 push-pulls, 1 reaping; no gossip rounds
    assert wakeups == 104


@pytest.mark.parametrize("seed", range(4))
def test_after_a_partition_heals_the_views_agree_within_five_seconds(seed):
    # Each half holds the other dead after 90 s apart. The first word across (a ping to a member
    # held dead, every fifth probe) makes both ends pull at once, and the refutations spread by
    # gossip: not a wait for the next periodic push-pull (10 s here, 21 s in the simulator).
    net = CoreNet(10, seed=seed, latency=LATENCY, jitter=0.0005, loss=0.05)
    net.join_all()
    net.run_until(20.0)
    halves = net.ids[::2], net.ids[1::2]
    net.partition(*halves)
    net.run_until(net.now + 90.0)
    assert all(net.status(a, b) == "dead" for a in halves[0] for b in halves[1])
    net.heal()
    healed = net.now

    def agree() -> bool:
        return all(net.status(a, b) == "alive" for a in net.ids for b in net.ids)

    net.run_until(healed + 5.0, stop=agree)
    assert agree(), f"views still split {net.now - healed:.1f} s after the heal"


def test_a_member_heard_from_again_is_pulled_from_at_once_and_once():
    net = settled(3)
    a, b, c = net.ids
    net.partition([a], [b, c])
    net.run_until(net.now + 60.0)
    assert net.status(a, b) == net.status(b, a) == "dead"
    net.heal()
    net.trace = []
    assert net.trace is not None

    def across() -> list:
        return [x for x in net.trace or () if (x[1] == a) != (x[2] == a)]

    # the first word across is a bare ping to a member held dead (every fifth probe: within 5 s)
    net.run_until(net.now + 5.5, stop=lambda: bool(across()))
    [(t, src, dst, ping)] = across()
    assert isinstance(ping, Ping)
    assert ping.records == ()
    net.run_until(t + 3 * LATENCY)
    # the pinged one holds the pinger dead too: it pulls at once, and the two have exchanged
    # everything they know (a push-pull and its answer) within the round trip
    assert [x[1:3] for x in sent(net, Sync) if not x[3].reply][:1] == [(dst, src)]
    assert [x[1:3] for x in sent(net, Sync) if x[3].reply][:1] == [(src, dst)]
    # and only once per reconnect period, whatever else it hears meanwhile
    net.run_until(t + 4.0)
    assert len([x for x in sent(net, Sync, src=dst, dst=src) if not x[3].reply]) == 1


def test_facts_spread_to_everyone():
    net = settled(3)
    origin = net.cores[net.ids[0]]
    assert origin.facts.learn(b"certificate")  # as the peer does: take it, then spread it
    origin.spread(b"certificate", net.now)
    net.trace = []
    net.run_until(net.now + 1.0)
    # nobody sends it back to the one it came from
    assert not [
        m
        for _, _, d, m in net.trace
        if d == origin.node and Fact(b"certificate") in getattr(m, "records", ())
    ]
    for node in net.ids:
        facts = net.cores[node].facts
        assert isinstance(facts, OpenFacts)
        assert facts.blobs == {b"certificate"}


# ---- piggybacking -------------------------------------------------------------------------------


def test_piggyback_respects_the_byte_budget_and_the_retransmit_limit():
    devices = Devices(21)
    me, *others = devices.ids
    core = devices.core(me)
    fat = tuple(devices.alive(n, 0, 0, bytes([i]) * 300) for i, n in enumerate(others))
    core.receive(others[0], Gossip(fat), 0.0)
    limit = NORMAL.retransmit_mult * math.ceil(math.log10(21 + 1))  # 8
    assert limit == 8
    counts: dict[object, int] = {}
    suspected: set[str] = set()
    t = 0.0
    while t < 20.0:  # nobody answers: pings, ping-reqs, gossip, suspicions: all piggyback
        t = core.next_deadline()
        core.tick(t)
        for _, msg in core.pop_outbox():
            records = getattr(msg, "records", ())
            if isinstance(msg, Sync):
                continue  # push-pull sends everything, by design
            if isinstance(msg, Ping) and records and records[0] == buddy(core, msg.target):
                records = records[1:]  # the buddy record rides outside the budget
            size = sum(len(pack(r.to_wire())) for r in records)
            assert size <= PIGGYBACK_BYTES or len(records) == 1
            for record in records:
                counts[record] = counts.get(record, 0) + 1
        suspected.update(c.node for c in core.pop_changes() if c.status == "suspect")
    assert max(counts.values()) <= limit
    # and each went out as often as allowed, unless a suspicion replaced it first
    untouched = [r for r in fat if r.node not in suspected]
    assert untouched
    assert all(counts[r] == limit for r in untouched)


def buddy(core: Membership, target: str) -> Accusation | None:
    member = core.members.get(target)
    return member.accusation if member and member.status == "suspect" else None


def test_a_signed_alive_record_with_a_malformed_state_is_dropped_and_logged(caplog):
    devices = Devices(3)
    me, x, y = devices.ids
    core = devices.core(me, valid_state=lambda blob: blob.startswith(b"ok"))
    with caplog.at_level(logging.WARNING, logger="swarm.membership"):
        core.receive(y, Gossip((devices.alive(x, 1, 0, b"garbage"),)), 1.0)
    assert x not in core.members
    assert core.stats.rejected == 1
    assert any("malformed state" in r.getMessage() for r in caplog.records)
    core.receive(y, Gossip((devices.alive(x, 1, 0, b"ok, a state"),)), 1.0)
    assert core.members[x].status == "alive"


def test_devices_restarted_inside_a_partition_rejoin_the_rest_after_it_heals():
    """Found by the stateful test: two devices that had left restart on one side of a partition
    and find each other; the other side still holds them as left, which nobody probes. Their
    join must go on until one of their own seeds answers, or the split lasts for ever."""
    net = CoreNet(4, seed=13545, latency=LATENCY, jitter=0.0)
    net.join_all()
    net.run_until(10.0)
    a, b, c, d = net.ids
    for node in (a, c):
        net.cores[node].leave(net.now)
    net.run_until(net.now + 30.0)
    for node in (a, c):
        net.crash(node)
    net.partition({a, c}, {b, d})
    net.restart(a, seeds=[b, d])
    net.restart(c, seeds=[a, b, d])
    net.run_until(net.now + 10.0)
    assert net.status(a, c) == "alive"
    assert net.status(b, a) == "left"  # the cut kept them apart
    net.heal()
    net.run_until(net.now + 120.0)
    for observer in net.ids:
        for node in net.ids:
            assert net.status(observer, node) == "alive", (observer[-6:], node[-6:])
