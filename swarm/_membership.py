"""Membership: SWIM with Lifeguard, as a pure state machine (no I/O, no clock, no global random).

The core takes messages and ``now`` and gives back messages and the time of its next timer; a thin
driver (``_driver.py``) moves them over a Transport. The same core runs on devices and in the
simulator.

Rules (after SWIM, Das et al. 2002; Lifeguard, Dadgar et al. 2018; and memberlist's defaults):

- Every member has a status and an incarnation number. Records about members are gossiped:
  ``alive(node, incarnation, version, state)`` signed by the node itself, ``suspect(node, inc, by)``
  and ``dead(node, inc, by)`` signed by the accuser; ``dead`` signed by the node itself is a
  graceful leave (status ``left``). A record that does not verify is dropped and counted.
- Precedence: which record about a member wins over what we hold is the table ``PRECEDENCE``
  below, and nothing else: a record from an earlier life (a lower incarnation) never wins, one
  from a later life always does (except that accusations about a light member are no evidence),
  and at the same incarnation alive < suspect < dead < left, versions ordering alive records and
  a second suspicion confirming the first; so every view ends at the same record.
  About ourselves: a suspect or dead record at ``j >= ours`` (not our own leave) is refuted by
  taking incarnation ``j + 1`` and gossiping a new alive record.
- Probing: every probe interval the next member in a shuffled round-robin order gets a ping (a
  member on battery may space its probes further apart, never its windows, and only while nothing
  is suspect and as far as the detection targets allow: see ``Profile``); no ack
  within the probe timeout sends ping-reqs to ``indirect_checks`` others, which ping it for us and
  answer ack, or nack in time for the origin to count it (80% of the rest of its interval); no ack
  by the end of the interval makes it suspect. A suspect target's ping carries the suspicion so it
  can refute at once (Lifeguard's buddy system); the other way round, an ack to a member we suspect
  carries the suspicion; and a node told something older than its incarnation about itself answers
  with its current alive record, so a member that missed a refutation catches up at the first direct
  contact instead of declaring it dead.
- Lifeguard's local health multiplier scales the probe interval and timeout by ``score + 1``: a
  direct ack lowers the score, a failed probe or a missing nack raises it, and so does having to
  refute a suspicion about ourselves.
- Suspicion lasts between ``min`` = mult * max(1, log10 n) * interval and ``max`` = max_mult * min,
  shrinking as independent confirmations arrive (k expected), after which the suspect is dead.
  A node that only heard of the suspicion probes the suspect next, out of turn (its failure is
  one more independent confirmation, and a live suspect refutes at once); and before declaring
  it dead it asks: it pings the suspect once with the accusation and waits a probe timeout, so a
  refutation it missed cannot make it declare a live member dead.
- Records are piggybacked on every ping, ack and ping-req, and gossiped to a few random members
  every gossip interval while there is something to send (no timer runs otherwise; a new record
  goes out at once; with nobody to send to, the queue is dropped and push-pull carries it
  later); each is retransmitted at most ``retransmit_mult * ceil(log10(n + 1))`` times, the
  least-sent first, within a byte budget, and never to a peer known to hold it (it sent it to
  us, or signed it): the budget goes to the peers that may still miss it, and a record that
  every member we gossip with holds leaves the queue.
- Push-pull anti-entropy with one random member every push-pull interval (longer in big swarms)
  exchanges every record we hold plus the opaque ``facts`` (the roster's certificates and
  revocations); so does, at the same time, one member we think dead, each in turn (Serf's
  reconnect). A healed partition merges at once instead: every fifth probe also pings one
  member we hold dead, in turn, and whoever hears from a member it holds dead or departed pulls
  from it at once (a push-pull), as do about PULL_FANOUT members across the swarm that read its
  alive record jump over their tombstone.
- Light members (a phone on cellular: its signed state names a lease, ``lease_of(state) > 0``)
  are not probed, not asked to relay, and not gossiped to; they probe nobody, run no gossip,
  push-pull or suspicion timers, and relay nothing. Twice per lease a light member sends a
  heartbeat: a freshly signed alive record (a higher version) and everything it had to say, as a
  push-pull with up to two full members, whose answers bring back what it missed and who gossip
  the record on. Each peer renews a light member's lease when it takes a new alive record from
  it; a lease that runs out makes it ``away`` in that peer's view (a local judgement, never
  gossiped): not dead, since nobody probed it, and ``alive`` again with its next record, at the
  same incarnation. Accusations about a light member are no evidence and are dropped (its own
  leave still counts). An away member is reaped like the dead after ``tombstone`` seconds.
- An accusation counts only if a roster member signed it: a stranger's, even relayed by a
  member, is dropped (and logged once per stranger).
- Dead and departed members stay as tombstones for ``tombstone`` seconds, then are forgotten;
  push-pull leaves out their alive records, so a peer that has forgotten one does not take it
  back.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from homeswarm.errors import MalformedMessage
from homeswarm.wire import Field, Schema, pack

log = logging.getLogger("swarm.membership")

Status = Literal["alive", "suspect", "dead", "left", "away"]
WIRE_VERSION = 1
MAX_RECORDS = 4096
PIGGYBACK_BYTES = 1024
JOIN_RETRY = 2.0  # first retry of a join while alone (then doubling, up to push-pull's)
JOIN_FANOUT = 3  # seeds asked at once when joining
NACK_FRACTION = 0.8
HEARTBEATS_PER_LEASE = 2  # a light member renews its lease this many times per lease
HEARTBEAT_FANOUT = 2  # full members a heartbeat goes to, in one radio burst
RECONNECT_EVERY = 5  # every this many probes, also ping one member we hold dead (in turn)
PULL_FANOUT = 3  # members expected to pull at once from one that comes back (see _heard_again)


@dataclass(frozen=True, slots=True)
class Profile:
    """Timing of the protocol: memberlist's LAN values (normal), the same with probes spaced
    further apart (on battery) and WAN values (battery saver). A profile whose gossip interval is
    no shorter than its probe interval is *batched*: gossip goes out only with a probe, so one
    wake is one radio burst, and a refutation is answered at once (see ``receive``).

    ``stretch`` > 1 spaces probes up to that many probe intervals apart, as far as the view
    affords (see ``Membership._stretch``); each probe still ends, and its target is suspected,
    one probe interval after its ping, and suspicion timeouts stay those of the interval."""

    name: str
    probe_interval: float
    probe_timeout: float
    indirect_checks: int
    suspicion_mult: int
    suspicion_max_mult: int
    gossip_interval: float
    gossip_nodes: int
    retransmit_mult: int
    push_pull_interval: float
    gossip_to_dead: float
    awareness_max: int = 8
    stretch: float = 1.0


NORMAL = Profile("normal", 1.0, 0.5, 3, 4, 6, 0.2, 3, 4, 30.0, 30.0)
# A full member on battery (above the saver's threshold): probes up to 2 s apart, and one wake
# sends the probe and the gossip together; a push-pull every 60 s instead of 30. Only the gap
# between probes grows: a probe's timeout (bound by round trips), its window (it suspects one
# second after the ping) and its suspicion timeouts are NORMAL's, so a crash it notices first is
# declared as fast as a normal member would, and its nacks as a relay come in time for a normal
# origin. The gap grows only while nothing is suspect and as far as the view affords: the p99
# time until some survivor probes a crashed member, if every full member spaced its probes as
# this one does, must leave room for the window and the suspicion within the detection target
# (``DETECTION_TARGET``); so at N = 3 the gap is 1.67 s, at N = 10 1.39 s, and 2 s only at N = 2
# (``bench/bench_membership.py --battery`` measures detection and wakes against NORMAL).
# The others probe it at their own rate, and it acks at once and refutes at once, so they
# detect its failure as fast as before and have no more reason to suspect it falsely.
# It still wakes for every ping it must ack, so its wakes fall less than its probes; to wake
# much less, it must be light.
ON_BATTERY = Profile("on-battery", 1.0, 0.5, 3, 4, 6, 2.0, 3, 4, 60.0, 30.0, stretch=2.0)
BATTERY_SAVER = Profile("battery-saver", 5.0, 3.0, 3, 6, 6, 0.5, 4, 4, 60.0, 60.0)
# Detection targets, (members, seconds until every survivor holds a crashed member dead): what a
# stretched probe gap must leave room for (log-linear between the points, the last one beyond)
DETECTION_TARGET = ((3, 8.0), (10, 10.0), (100, 15.0), (1000, 22.0))
STRETCH_QUANTILE = 0.99  # the stretched gap is bounded at this quantile of the time to a probe
PROFILES = {p.name: p for p in (NORMAL, ON_BATTERY, BATTERY_SAVER)}


# ---- precedence: which record about a member wins ---------------------------------------------
#
# Everything that decides whether a record about another member replaces what we hold lives here.
# A row is where the member stands in our view, a column the kind of record that arrives; a cell
# says what happens at the same incarnation and at a later one (a record from an earlier life is
# always stale):
#   take     the record wins: it becomes the member's status (and incarnation)
#   stale    dropped, counted in ``stats.stale``
#   version  alive over alive: it wins if its version is higher
#   confirm  a suspicion we already hold: one more independent accuser shortens it (Lifeguard)
# Rows: ``unknown`` (not in our table: only an alive record from an admitted node enters, see
# ``facts.admits``), ``light`` (a light member that is alive) and ``away`` (a light member whose
# lease lapsed): nobody probes a light member, so nobody holds evidence against it; only its own
# alive records and its leave count, and its lease decides ``away``.
# "left" is a dead record signed by the member itself. Records about ourselves are not looked up
# here: we refute them (see ``_apply_alive`` and ``_apply_accusation``).

Kind = Literal["alive", "suspect", "dead", "left"]
Verdict = Literal["take", "stale", "version", "confirm"]
Standing = Literal["unknown", "alive", "light", "away", "suspect", "dead", "left"]

_TAKE: tuple[Verdict, Verdict] = ("take", "take")
_NEVER: tuple[Verdict, Verdict] = ("stale", "stale")
_LATER: tuple[Verdict, Verdict] = ("stale", "take")
_NEWER: tuple[Verdict, Verdict] = ("version", "take")

# fmt: off
PRECEDENCE: dict[Standing, dict[Kind, tuple[Verdict, Verdict]]] = {
    # standing   record: alive           suspect                        dead             left
    "unknown": {"alive": _TAKE,  "suspect": _NEVER,                "dead": _NEVER, "left": _NEVER},
    "alive":   {"alive": _NEWER, "suspect": _TAKE,                 "dead": _TAKE,  "left": _TAKE},
    "light":   {"alive": _NEWER, "suspect": _NEVER,                "dead": _NEVER, "left": _TAKE},
    "away":    {"alive": _NEWER, "suspect": _NEVER,                "dead": _NEVER, "left": _TAKE},
    "suspect": {"alive": _LATER, "suspect": ("confirm", "take"),   "dead": _TAKE,  "left": _TAKE},
    "dead":    {"alive": _LATER, "suspect": _LATER,                "dead": _LATER, "left": _TAKE},
    "left":    {"alive": _LATER, "suspect": _LATER,                "dead": _LATER, "left": _LATER},
}
# fmt: on


def detection_target(members: int) -> float:
    """Seconds within which a crash among ``members`` should be held dead by every survivor
    (``DETECTION_TARGET``, log-linear between its points)."""
    (n0, t0), *rest = DETECTION_TARGET
    if members <= n0:
        return t0
    for n1, t1 in rest:
        if members <= n1:
            return t0 + (t1 - t0) * math.log(members / n0) / math.log(n1 / n0)
        n0, t0 = n1, t1
    return t0


def affordable_stretch(members: int, profile: Profile) -> float:
    """How far apart (in probe intervals, at most ``profile.stretch``) a member may space its
    probes among ``members`` full members (itself included) and still meet the detection target,
    were every one of them to space its probes alike. After a crash the p = members - 1
    survivors each probe the crashed member once every p gaps, at independent phases, so some
    survivor has probed it within p * gap * (1 - (1 - q) ** (1 / p)) with probability q
    (``STRETCH_QUANTILE``); that, the probe's window and the shortest suspicion must fit within
    the target. Assuming all alike is the safe side: a member cannot tell who else is on battery,
    and the server that usually is not only makes detection faster."""
    p = members - 1
    if p < 1:
        return profile.stretch  # alone: nobody to watch
    interval = profile.probe_interval
    suspicion = profile.suspicion_mult * max(1.0, math.log10(members)) * interval
    room = detection_target(members) - interval - suspicion
    reach = p * interval * (1.0 - math.pow(1.0 - STRETCH_QUANTILE, 1.0 / p))
    return max(1.0, min(profile.stretch, room / reach))


def precedence(member: Member | None, kind: Kind, incarnation: int, version: int = 0) -> Verdict:
    """What a record of ``kind`` at ``incarnation`` (an alive record's ``version``) does to what we
    hold about ``member``: ``take``, ``stale`` or ``confirm`` (see ``PRECEDENCE``)."""
    if member is None:
        return PRECEDENCE["unknown"][kind][1]
    if incarnation < member.incarnation:
        return "stale"
    status = member.status
    standing: Standing = "light" if status == "alive" and member.light else status
    outcome = PRECEDENCE[standing][kind][incarnation > member.incarnation]
    if outcome == "version":
        return "take" if version > member.version else "stale"
    return outcome


# ---- records: signed facts about members --------------------------------------------------------


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Alive:
    node: str
    incarnation: int
    version: int
    state: bytes
    signature: bytes

    def signed_part(self, domain: bytes) -> bytes:
        return pack([b"alive", domain, self.node, self.incarnation, self.version, self.state])

    def to_wire(self) -> list[Any]:
        return ["a", self.node, self.incarnation, self.version, self.state, self.signature]


@dataclass(frozen=True, slots=True)
class Accusation:
    """``suspect`` or ``dead`` about ``node`` at ``incarnation``, signed by ``by``."""

    kind: Literal["s", "d"]
    node: str
    incarnation: int
    by: str
    signature: bytes

    def signed_part(self, domain: bytes) -> bytes:
        return pack([b"accuse", domain, self.kind, self.node, self.incarnation, self.by])

    def to_wire(self) -> list[Any]:
        return [self.kind, self.node, self.incarnation, self.by, self.signature]

    @property
    def leave(self) -> bool:
        return self.kind == "d" and self.by == self.node


@dataclass(frozen=True, slots=True)
class Fact:
    """An opaque, self-verifying blob the core only spreads (certificates, revocations)."""

    blob: bytes

    def to_wire(self) -> list[Any]:
        return ["f", self.blob]


Record = Alive | Accusation | Fact


def _record_from_wire(obj: Any) -> Record:
    tag = obj[0] if type(obj) is list and obj else None
    wire = _RECORD_WIRE.get(tag) if type(tag) is str else None
    if wire is None:
        raise MalformedMessage(f"record: unknown kind {_brief(tag)}")
    schema, make, first = wire
    found = schema.problem(obj)
    if found is not None:
        raise schema.fail(found)
    return make(*obj[first:])


_ALIVE: weakref.WeakValueDictionary[bytes, Alive] = weakref.WeakValueDictionary()


def _shared(record: Alive) -> Alive:
    """One object for equal alive records across the process, while any view holds one (found
    by signature): a thousand simulated peers' views of a member hold one record and one copy
    of its state, not a thousand."""
    held = _ALIVE.get(record.signature)
    if held is not None and held == record:
        return held
    _ALIVE[record.signature] = record
    return record


def _queue_key(record: Record) -> Any:
    """Records about one member replace each other in the gossip queue (the latest wins)."""
    if isinstance(record, Fact):
        return ("f", hashlib.blake2b(record.blob, digest_size=8).digest())
    return record.node


def _brief(value: Any) -> str:
    # never str() a peer's value: a deeply nested list overflows the stack on the way
    return repr(value[:16]) if isinstance(value, str) else type(value).__name__


# ---- messages --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    target: str
    records: tuple[Record, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    records: tuple[Record, ...] = ()


@dataclass(frozen=True, slots=True)
class PingReq:
    seq: int
    target: str
    records: tuple[Record, ...] = ()


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int


@dataclass(frozen=True, slots=True)
class Gossip:
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class Sync:
    """Push-pull: everything the sender holds; ``reply`` says it answers one."""

    reply: bool
    records: tuple[Record, ...]


Message = Ping | Ack | PingReq | Nack | Gossip | Sync

# What a peer may send, declared once (``homeswarm.wire``): a record is ``[kind, *fields]``, a
# message ``[WIRE_VERSION, type, *fields]``; each table maps the tag to its schema and its class.
_NAME = Field("node", str, least=1, most=128)
_VERSION = Field("version", int, equals=WIRE_VERSION)
_RECORDS = Field("records", list, most=MAX_RECORDS)


def _count(name: str) -> Field:
    return Field(name, int, least=0, most=2**63 - 1)


_ACCUSATION = Schema(
    "accusation",
    Field("kind", str),
    _NAME,
    _count("incarnation"),
    Field("by", str, least=1, most=128),
    Field("signature", bytes),
    positional=True,
)
# tag -> (schema, class, where its fields start: an accusation keeps its tag as its kind)
_RECORD_WIRE: dict[str, tuple[Schema, Callable[..., Record], int]] = {
    "a": (
        Schema(
            "alive",
            Field("kind", str),
            _NAME,
            _count("incarnation"),
            _count("version"),
            Field("state", bytes),
            Field("signature", bytes),
            positional=True,
        ),
        Alive,
        1,
    ),
    "s": (_ACCUSATION, Accusation, 0),
    "d": (_ACCUSATION, Accusation, 0),
    "f": (Schema("fact", Field("kind", str), Field("fact", bytes), positional=True), Fact, 1),
}


def _message(kind: str, *fields: Field) -> Schema:
    return Schema(kind, _VERSION, Field("type", str), *fields, positional=True)


_TARGET = Field("target", str, least=1, most=128)
_MESSAGE_WIRE: dict[str, tuple[Schema, Callable[..., Message]]] = {
    "ping": (_message("ping", _count("seq"), _TARGET, _RECORDS), Ping),
    "ack": (_message("ack", _count("seq"), _RECORDS), Ack),
    "req": (_message("req", _count("seq"), _TARGET, _RECORDS), PingReq),
    "nack": (_message("nack", _count("seq")), Nack),
    "gossip": (_message("gossip", _RECORDS), Gossip),
    "sync": (_message("sync", Field("reply", bool), _RECORDS), Sync),
}


def encode_message(msg: Message) -> list[Any]:
    """The msgpack-able body of a message: ``[version, type, ...]``."""
    match msg:
        case Ping(seq, target, records):
            return [WIRE_VERSION, "ping", seq, target, [r.to_wire() for r in records]]
        case Ack(seq, records):
            return [WIRE_VERSION, "ack", seq, [r.to_wire() for r in records]]
        case PingReq(seq, target, records):
            return [WIRE_VERSION, "req", seq, target, [r.to_wire() for r in records]]
        case Nack(seq):
            return [WIRE_VERSION, "nack", seq]
        case Gossip(records):
            return [WIRE_VERSION, "gossip", [r.to_wire() for r in records]]
        case Sync(reply, records):
            return [WIRE_VERSION, "sync", reply, [r.to_wire() for r in records]]
    raise TypeError(f"not a membership message: {msg!r}")


def decode_message(body: Any) -> Message:
    """Parse and validate a body from a peer; anything malformed raises ``MalformedMessage`` (a
    ``ProtocolViolation``: the connection that sent it is closed)."""
    kind = body[1] if type(body) is list and len(body) > 1 else None
    wire = _MESSAGE_WIRE.get(kind) if type(kind) is str else None
    if wire is None:
        found = _VERSION.problem(body[0]) if type(body) is list and body else "not a list"
        raise MalformedMessage(f"membership: {found or f'unknown message {_brief(kind)}'}")
    schema, make = wire
    found = schema.problem(body)
    if found is not None:
        raise schema.fail(found)
    fields = body[2:]
    if schema.fields[-1] is _RECORDS:  # always the last field, when a message carries them
        fields[-1] = tuple(map(_record_from_wire, fields[-1]))
    return make(*fields)


# ---- what the core needs from outside ----------------------------------------------------------


class Crypto(Protocol):
    """Signs as this device and checks other devices' signatures (key from the peer id)."""

    def sign(self, data: bytes) -> bytes: ...

    def verify(self, node: str, data: bytes, signature: bytes) -> bool: ...


class Facts(Protocol):
    """The roster, as the core sees it: who may be a member, and blobs to spread."""

    def admits(self, node: str) -> bool: ...

    def learn(self, blob: bytes) -> bool:
        """Take a blob from a peer; True if it taught us something (then it is re-gossiped)."""
        ...

    def snapshot(self) -> list[bytes]: ...


# ---- the member table ------------------------------------------------------------------------


@dataclass(slots=True)
class Member:
    node: str
    status: Status
    incarnation: int
    alive: Alive | None
    accusation: Accusation | None = None
    changed_at: float = 0.0
    last_heard: float | None = None
    rtt: float | None = None
    lease: float = 0.0  # > 0: a light member, holding its place with a lease this long
    renewed_at: float = 0.0  # when we last took a new alive record from it

    @property
    def light(self) -> bool:
        return self.lease > 0

    @property
    def version(self) -> int:
        return self.alive.version if self.alive else -1

    @property
    def state(self) -> bytes | None:
        return self.alive.state if self.alive else None


@dataclass(frozen=True, slots=True)
class Change:
    """A member's status or state changed in our view (for logs, status and measurements)."""

    at: float
    node: str
    status: Status
    incarnation: int
    version: int
    gone: bool = False  # the member was forgotten (its tombstone expired, or it was revoked)


@dataclass(slots=True)
class _Suspicion:
    """Lifeguard's dynamic suspicion: each independent confirmation (up to k) shortens it."""

    started: float
    k: int
    min: float
    max: float
    accusers: set[str]
    deadline: float = 0.0
    asked: bool = False  # hearsay only: the suspect was asked once, at the end (see _expire)
    probed: bool = False  # hearsay only: our next probe went to the suspect (see _next_target)

    def confirm(self, by: str) -> bool:
        if by in self.accusers or len(self.accusers) > self.k:
            return False
        self.accusers.add(by)
        self.update()
        return True

    def update(self) -> None:
        c = len(self.accusers) - 1
        frac = math.log(c + 1) / math.log(self.k + 1) if self.k > 0 else 1.0
        self.deadline = self.started + max(self.min, self.max - (self.max - self.min) * frac)


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    sent: float
    timeout_at: float
    end_at: float
    indirect: int = 0
    nacks: int = 0
    acked: bool = False
    direct: bool = False


@dataclass(slots=True)
class _Relay:
    origin: str
    origin_seq: int
    target: str
    timeout_at: float


@dataclass(slots=True)
class _Turns:
    """Members in turn (SWIM's round-robin probing), in one order shuffled once: a member that
    joins takes a random place in it. (Shuffling afresh every round, as SWIM does, let one
    member go unprobed by a prober for up to 2n - 3 intervals, last in one round and first but
    one in the next; in one order it is probed every n - 1 intervals, which bounds detection.)"""

    order: list[str] = field(default_factory=list)
    at: int = 0

    def next(self, core: Membership, keep: Callable[[Member], bool]) -> str | None:
        members = core.members
        while True:
            if self.at >= len(self.order):
                now = [n for n, m in members.items() if n != core.node and keep(m)]
                wanted = set(now)
                order = [n for n in self.order if n in wanted]
                had = set(order)
                for node in now:
                    if node not in had:
                        order.insert(core.rng.randrange(len(order) + 1), node)
                self.order, self.at = order, 0
                if not order:
                    return None
            node = self.order[self.at]
            self.at += 1
            member = members.get(node)
            if member is not None and keep(member):
                return node


@dataclass(slots=True)
class _Queued:
    record: Record
    size: int
    sent: int = 0
    order: int = 0
    # peers known to hold the record (they sent it to us, or signed it): it is never piggybacked
    # to them, so the retransmit budget goes to peers that may still miss it
    holders: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Stats:
    received: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    stale: int = 0
    refutations: int = 0


class Membership:
    """One device's view of the swarm. Feed it ``receive`` and ``tick``; drain ``outbox``."""

    def __init__(
        self,
        node: str,
        *,
        state: bytes,
        crypto: Crypto,
        facts: Facts,
        rng: random.Random,
        now: float,
        domain: bytes = b"",
        incarnation: int = 0,
        profile: Profile = NORMAL,
        tombstone: float = 3600.0,
        valid_state: Callable[[bytes], bool] | None = None,
        lease_of: Callable[[bytes], float] | None = None,
    ) -> None:
        self.node = node
        self.lease_of = lease_of
        self.profile = profile
        self.tombstone = tombstone
        self.valid_state = valid_state
        self.domain = domain
        self.crypto = crypto
        self.facts = facts
        self.rng = rng
        self.stats = Stats()
        self.outbox: list[tuple[str, Message]] = []
        self.changes: list[Change] = []
        self.members: dict[str, Member] = {}
        self.awareness = 0
        self._live: set[str] = {node}  # alive or suspect; every status change goes through _changed
        self._light: set[str] = set()  # other members that are light (whatever their status)
        self._refuted = False  # set while receiving: we refuted an accusation
        self._beats: dict[str, float] = {}  # a light member's last heartbeat: to whom, when
        self.leaving = False
        self._seq = 0
        self._queue: dict[Any, _Queued] = {}
        self._queue_order = 0
        self._suspicions: dict[str, _Suspicion] = {}
        self._probe: _Probe | None = None
        self._probe_started = now  # when our last probe went out (see ``_unstretch``)
        self._declared = False  # we declared a death in this tick (see ``tick``)
        self._relays: dict[int, _Relay] = {}
        self._outdated = False  # set while receiving: the sender holds an old accusation of us
        self._probe_turns = _Turns()
        self._dead_turns = _Turns()
        first = self._sign_alive(incarnation, 0, state)
        self.members[node] = Member(node, "alive", incarnation, first, changed_at=now)
        self.me.lease = self._lease(state)
        self._next_heartbeat = now
        self._last_heartbeat = -math.inf  # when our last heartbeat went (see ``beat``)
        self._unknown_accusers: set[str] = set()  # logged once each
        self._enqueue(first)
        self._next_probe = now + self.rng.uniform(0, profile.probe_interval)
        self._next_gossip = now + profile.gossip_interval
        self._seen = now  # our last event's time (see ``_catch_up``)
        self._next_sync = now + self._sync_interval()
        self._next_reap = now + 60.0
        self._seeds: list[str] = []
        self._probes = 0  # probes started (every RECONNECT_EVERY-th also pings one of the dead)
        self._pulled: dict[str, float] = {}  # when we last pulled at once from a member back
        self._join_turn = 0
        self._next_join = math.inf
        self._join_wait = JOIN_RETRY  # the next retry while alone (doubles each time)

    # ---- the public face ---------------------------------------------------------------------

    @property
    def me(self) -> Member:
        return self.members[self.node]

    @property
    def incarnation(self) -> int:
        return self.me.incarnation

    @property
    def light(self) -> bool:
        """Whether we are a light member (our own state says so): see ``_heartbeat``."""
        return self.me.lease > 0

    def set_profile(self, profile: Profile) -> None:
        self.profile = profile

    @property
    def _batched(self) -> bool:
        """Gossip only rides with a probe (see ``Profile``)."""
        return self.profile.gossip_interval >= self.profile.probe_interval

    def update_state(self, state: bytes, now: float) -> None:
        """Our own state changed: gossip a new alive record with a higher version (a light
        member keeps it for its next heartbeat, unless it just became light or full: then it
        goes now, so that the others stop or start probing it)."""
        me = self.me
        if me.status != "alive":
            return
        self._catch_up(now)
        was_light = self.light
        me.alive = self._sign_alive(me.incarnation, me.version + 1, state)
        me.lease = self._lease(state)
        self._changed(me, now)
        self._enqueue(me.alive)
        if was_light != self.light:
            if self.light:
                # a light member runs no suspicion timers, probes and relays nobody
                self._suspicions.clear()
                self._probe = None
                self._relays.clear()
            else:
                # back to full: the suspects we only heard of get their timers (hearsay)
                for m in self.members.values():
                    if m.status == "suspect" and m.accusation is not None:
                        self._suspicions[m.node] = self._suspicion(m.accusation, now)
            self._next_heartbeat = now
            self._next_probe = self._next_gossip = now
            self._next_sync = now + self._sync_interval()

    def _lease(self, state: bytes) -> float:
        return self.lease_of(state) if self.lease_of is not None else 0.0

    def join(self, seeds: Iterable[str], now: float) -> None:
        """Ask these peers for everything they know (a push-pull with a few at a time, in turn)
        until one of them answers: while we know nobody else alive, after 2 s, then twice as
        long each time up to the push-pull interval (a device cut off, a laptop asleep, does
        not call out every 2 s for hours; a new sighting calls ``join`` and starts over), and
        every push-pull interval once we know someone. (Stopping at the first live member we
        hear of instead left a split for good: two devices restarted in a partition found each
        other, while the rest still held them as left, which nobody probes.)"""
        self._seeds = [s for s in dict.fromkeys(seeds) if s != self.node]
        self._next_join = now
        self._join_turn = 0  # the first seeds named (a device just seen on the LAN) go first
        self._join_wait = JOIN_RETRY
        self._rejoin(now)

    def _rejoin(self, now: float) -> None:
        if now < self._next_join:
            return
        if not self._seeds:
            self._next_join = math.inf
            return
        wait = interval = self.profile.push_pull_interval
        if self.alive_count() <= 1:  # alone: back off, from JOIN_RETRY to the interval
            wait, self._join_wait = self._join_wait, min(2 * self._join_wait, interval)
        self._next_join = now + wait
        # a few at a time, in turn: a device that remembers a hundred peers does not send a
        # hundred full states at every start
        state = self._full_state()
        turn, self._join_turn = self._join_turn, self._join_turn + JOIN_FANOUT
        for i in range(min(JOIN_FANOUT, len(self._seeds))):
            self._send(self._seeds[(turn + i) % len(self._seeds)], Sync(False, state))

    def leave(self, now: float) -> list[str]:
        """Leave gracefully: tell up to 32 members directly; returns who was told."""
        self.leaving = True
        me = self.me
        record = self._sign_accusation("d", self.node, me.incarnation)
        me.accusation, me.status = record, "left"
        self._changed(me, now)
        told = self._pick(32, lambda m: m.status in ("alive", "suspect"))
        for node in told:
            self._send(node, Gossip((record,)))
        return told

    def reach(self, node: str) -> None:
        """Push-pull with a member we do not know (or have forgotten): if it is up, the two views
        merge, however long they were apart."""
        if node != self.node:
            self._send(node, Sync(False, self._full_state()))

    def spread(self, blob: bytes, now: float) -> None:
        """Gossip a new fact (a certificate or revocation this device made). A person made it,
        so it goes at once: to the light members too, directly (they would hear it only at
        their next heartbeat, minutes on, and a revoked device must not talk to them meanwhile),
        and, made on a light member, in a heartbeat out of turn (its full state carries it)."""
        fact = Fact(blob)
        self._catch_up(now)
        if self.light:
            self._heartbeat(now)
        else:
            self._enqueue(fact)
        for m in self.members.values():
            if m.light and m.status == "alive" and m.node != self.node:
                self._send(m.node, Gossip((fact,)))

    def forget(self, node: str, now: float) -> None:
        """Drop a member outright (its certificate was revoked)."""
        self._catch_up(now)
        if node != self.node and self.members.pop(node, None) is not None:
            self._suspicions.pop(node, None)
            self._live.discard(node)
            self._light.discard(node)
            self.changes.append(Change(now, node, "dead", 0, -1, gone=True))

    def settle(self, records: Iterable[Alive], now: float) -> None:
        """Start as in a swarm that has been running a while: take these members' alive records
        as known, with nothing queued to gossip about them and no changes to report. The records
        are the caller's word (they are not verified): for simulations of big swarms, where
        simulating every join would dominate."""
        self._catch_up(now)
        for record in records:
            node = record.node
            if node != self.node and node not in self.members and self.facts.admits(node):
                member = Member(node, "alive", record.incarnation, record, changed_at=now)
                member.lease, member.renewed_at = self._lease(record.state), now
                self.members[node] = member
                self._live.add(node)
                if member.light:
                    self._light.add(node)
        self._queue = {k: q for k, q in self._queue.items() if k == self.node}
        self._next_sync = now + self._sync_interval()

    def pop_outbox(self) -> list[tuple[str, Message]]:
        out, self.outbox = self.outbox, []
        return out

    def pop_changes(self) -> list[Change]:
        out, self.changes = self.changes, []
        return out

    def alive_count(self) -> int:
        return len(self._live)

    def next_deadline(self) -> float:
        if self.leaving:
            return math.inf  # a departed node runs no timers (its driver would spin otherwise)
        if self.light:
            # a light member wakes for its heartbeat (and a transition of our own), nothing else
            at = min(self._next_heartbeat, self._next_reap)
            if self._probe is not None:
                at = min(at, self._probe.end_at)
            return min([at] + [m.renewed_at + m.lease for m in self._leased()])
        # (asked after every message and tick: a comparison each, no call where it can be)
        at = self._next_probe
        if self._next_sync < at:
            at = self._next_sync
        if self._next_reap < at:
            at = self._next_reap
        if self._queue and not self._batched and self._next_gossip < at and not self._idle():
            at = self._next_gossip  # no wake-ups while there is nothing to gossip
        if self._light:
            for m in self._leased():
                at = min(at, m.renewed_at + m.lease)
        if self._seeds and self._next_join < at:
            at = self._next_join
        probe = self._probe
        if probe is not None:
            if not probe.acked and not probe.indirect and probe.timeout_at < at:
                at = probe.timeout_at
            if probe.end_at < at:
                at = probe.end_at
        if self._relays:
            for relay in self._relays.values():
                at = min(at, relay.timeout_at)
        if self._suspicions:
            for susp in self._suspicions.values():
                at = min(at, susp.deadline)
        return at

    # ---- timers ------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Run every timer due at ``now``."""
        if self.leaving:
            return
        self._catch_up(now)
        self._lapse(now)
        if self.light:
            if self._probe is not None and now >= self._probe.end_at:
                self._probe = None  # started before we became light: forget it
            if now >= self._next_heartbeat:
                self._heartbeat(now)
            if now >= self._next_reap:
                self._reap(now)
                self._next_reap = now + 60.0
            return
        probe = self._probe
        if probe is not None:
            if not probe.acked and not probe.indirect and now >= probe.timeout_at:
                self._indirect(probe)
            if now >= probe.end_at:
                self._finish_probe(probe, now)
        for seq, relay in list(self._relays.items()):
            if now >= relay.timeout_at:
                del self._relays[seq]
                self._send(relay.origin, Nack(relay.origin_seq))
        for node, susp in list(self._suspicions.items()):
            if now >= susp.deadline:
                self._expire(node, susp, now)
        probed = now >= self._next_probe and self._probe is None
        if probed:
            self._start_probe(now)
        # batched, gossip rides with a probe, or goes with a death we declared (it woke us anyway)
        urgent, self._declared = self._declared, False
        if (probed or urgent if self._batched else now >= self._next_gossip) and self._queue:
            self._gossip(now)
            self._next_gossip = now + self.profile.gossip_interval
        if now >= self._next_sync:
            self._push_pull()
            self._next_sync = now + self._sync_interval()
        if self._seeds and now >= self._next_join:
            self._rejoin(now)
        if now >= self._next_reap:
            self._reap(now)
            self._next_reap = now + 60.0

    # ---- gossip rounds with nothing to send -------------------------------------------------
    #
    # Unbatched, a round goes every gossip interval while anything is queued. A record every
    # member we would gossip with already holds can stay queued for hours (with a light member
    # about, ``_drop_known`` keeps it: the light one may turn full and need it), and each round
    # then sends nothing: half a simulated day's wake-ups. While that holds (``_idle``), the
    # rounds are not woken for; the next event (a message, a tick, a change of our own) first
    # moves the next round's time on as those rounds would have (``_catch_up``), so every round
    # that sends something goes exactly when it did.

    def _idle(self) -> bool:
        """Whether a gossip round now would change nothing but the next round's time: no draw
        at random (one member to gossip with, few members), nothing dropped (``_drop_known``)
        and nothing sent (it holds everything queued). Only our own events change this."""
        queue, members = self._queue, self.members
        if not queue or self.light or self._batched:
            return False
        if len(members) > 8 * self.profile.gossip_nodes:
            return False  # (``_pick`` draws at random)
        target = None
        for node, m in members.items():
            if node == self.node or m.light:
                continue
            if m.status not in ("alive", "suspect") or target is not None:
                return False  # a recent death is gossiped to for a while; two are shuffled
            target = node
        if target is None:
            return False  # (the round would drop the queue)
        others = len(self._live) - 1
        return all(target in q.holders and len(q.holders) < others for q in queue.values())

    def _catch_up(self, now: float) -> None:
        """The rounds due before ``now`` that were not woken for (``_idle`` since our last
        event, at ``_seen``), as they would have gone: a round already due at that event went
        at once after it (its wake-up was in the past), then each one interval after the one
        before. Every entry point that can change ``_idle`` calls this first (``set_profile``
        goes with ``update_state`` at the same time)."""
        at = self._next_gossip
        if at < now and self._idle():
            interval = self.profile.gossip_interval
            if interval > 0:
                at = max(at, self._seen)
                while at < now:
                    at += interval
                self._next_gossip = at
        self._seen = now

    def _leased(self) -> list[Member]:
        members = self.members
        return [members[n] for n in self._light if members[n].status == "alive"]

    def _lapse(self, now: float) -> None:
        """Light members whose lease ran out are ``away``: not dead (nobody probed them, so
        nobody has evidence), and back ``alive`` with their next heartbeat."""
        if not self._light:
            return
        for m in self._leased():
            if now >= m.renewed_at + m.lease:
                m.status = "away"
                self._changed(m, now)

    def beat(self, now: float, *, unless_within: float) -> int:
        """A light member's heartbeat out of turn, because a person is waiting on the view
        (``swarm status`` on the phone): unless one went within ``unless_within`` seconds. The
        next one is due a full period later, so a burst the person asked for replaces one, not
        adds one. The number of full members it went to (0: none sent; a full member's view is
        always fresh)."""
        if not self.light or self.leaving:
            return 0
        if now - self._last_heartbeat < unless_within:
            return 0
        self._heartbeat(now)
        return len(self._beats)

    @property
    def beats_unanswered(self) -> int:
        """How many of our last heartbeat's push-pulls still wait for their answer."""
        return len(self._beats)

    def _heartbeat(self, now: float) -> None:
        """A light member's one radio burst per period: a fresh alive record (it renews the
        lease) and everything else it had to say, in a push-pull with a few full members; their
        answers bring back everything it missed, and they gossip the record on."""
        self._last_heartbeat = now
        self._next_heartbeat = now + self.me.lease / HEARTBEATS_PER_LEASE
        me = self.me
        if me.alive is not None and me.status == "alive":
            me.alive = self._sign_alive(me.incarnation, me.version + 1, me.alive.state)
        self._queue.clear()  # the full state carries it all
        targets = self._pick(HEARTBEAT_FANOUT, lambda m: m.status == "alive" and not m.light)
        if not targets:
            targets = self._pick(HEARTBEAT_FANOUT, lambda m: m.status in ("alive", "away"))
        if not targets:
            targets = self._seeds[:HEARTBEAT_FANOUT]
        if not targets:  # everyone we know is gone: try the dead in turn (they may be back)
            dead = self._dead_turns.next(self, lambda m: m.status == "dead")
            targets = [dead] if dead is not None else []
        state = self._full_state()
        self._beats = dict.fromkeys(targets, now)
        for node in targets:
            self._send(node, Sync(False, state))

    def _nack_timeout(self) -> float:
        # Lifeguard: a relay's nack must reach the origin before its probe ends, which is
        # ``interval - timeout`` after it sent the ping-req: answer within 80% of that
        p = self.profile
        return NACK_FRACTION * (p.probe_interval - p.probe_timeout)

    def _scaled(self, seconds: float) -> float:
        return seconds * (self.awareness + 1)

    def _health(self, delta: int) -> None:
        self.awareness = min(max(self.awareness + delta, 0), self.profile.awareness_max - 1)

    def _stretch(self) -> float:
        """How many probe intervals apart our probes go: the profile's ``stretch`` as far as
        the view affords it (``affordable_stretch`` over the full members we hold alive), and
        none while anything is suspect, so that our probe of the suspect, out of turn, and our
        confirmation come as soon as a normal member's."""
        if self.profile.stretch <= 1.0 or self._suspicions:
            return 1.0
        live = self._live
        full = len(live) - sum(1 for n in self._light if n in live)
        return affordable_stretch(full, self.profile)

    def _unstretch(self) -> None:
        """Something became suspect: the next probe goes one plain interval after the last."""
        again = self._probe_started + self._scaled(self.profile.probe_interval)
        self._next_probe = min(self._next_probe, again)

    def _start_probe(self, now: float) -> None:
        interval = self._scaled(self.profile.probe_interval)
        self._next_probe = now + interval * self._stretch()
        self._probe_started = now
        self._probes += 1
        if self._probes % RECONNECT_EVERY == 0:
            # one member we think dead, in turn, gets a bare ping: if a partition healed, its
            # ack (or our ping, on its side) is the first word across, and both pull at once
            dead = self._dead_turns.next(self, lambda m: m.status == "dead" and not m.light)
            if dead is not None:
                self._send(dead, Ping(self._next_seq(), dead))
        target = self._next_target()
        if target is None:
            return
        seq = self._next_seq()
        timeout = self._scaled(self.profile.probe_timeout)
        self._probe = _Probe(seq, target, now, now + timeout, now + interval)
        member = self.members[target]
        buddy: tuple[Record, ...] = ()
        if member.status == "suspect" and member.accusation is not None:
            buddy = (member.accusation,)  # Lifeguard: let the suspect refute at once
        self._send(target, Ping(seq, target, buddy + self._piggyback(target, exclude=buddy)))

    def _indirect(self, probe: _Probe) -> None:
        relays = self._pick(
            self.profile.indirect_checks,
            lambda m: m.status == "alive" and m.node != probe.target and not m.light,
        )
        probe.indirect = len(relays) or -1  # -1: nobody to ask
        for relay in relays:
            self._send(relay, PingReq(probe.seq, probe.target, self._piggyback(relay)))

    def _finish_probe(self, probe: _Probe, now: float) -> None:
        self._probe = None
        if probe.acked:
            self._health(-1 if probe.direct else 0)
            return
        # Lifeguard, as memberlist does it: each relay that failed to nack counts against our
        # own health; if every relay nacked, the target is the one in trouble, not us
        expected = max(probe.indirect, 0)
        self._health(max(expected - probe.nacks, 0) if expected else 1)
        member = self.members.get(probe.target)
        if member is None or member.status not in ("alive", "suspect"):
            return  # (an accusation about a suspect confirms it)
        record = self._sign_accusation("s", probe.target, member.incarnation)
        self._apply(record, now, verified=True)

    def _next_target(self) -> str | None:
        # A suspicion we only heard of: probe the suspect next, out of turn. If it is gone, our
        # failed probe is one more independent confirmation and shortens everyone's suspicion
        # (Lifeguard); waiting for its turn in our round left suspicions at their longest; if
        # it is up, the ping carries the accusation and it refutes at once.
        for node, susp in self._suspicions.items():
            if not susp.probed and self.node not in susp.accusers:
                susp.probed = True
                member = self.members.get(node)
                if member is not None and member.status == "suspect" and not member.light:
                    return node
        return self._probe_turns.next(
            self, lambda m: m.status in ("alive", "suspect") and not m.light
        )

    def _gossip(self, now: float) -> None:
        self._drop_known()
        if not self._queue:
            return
        horizon = now - self.profile.gossip_to_dead
        targets = self._pick(
            self.profile.gossip_nodes,
            lambda m: not m.light and (m.status in ("alive", "suspect") or m.changed_at >= horizon),
        )
        if not targets:
            # nobody to tell (a lone device): drop it rather than wake 5 times a second for
            # ever; whoever comes back gets everything by push-pull
            self._queue.clear()
            return
        for node in targets:
            records = self._piggyback(node)
            if records:
                self._send(node, Gossip(records))

    def _drop_known(self) -> None:
        """Forget queued records that every member we gossip with already holds."""
        queue = self._queue
        others = len(self._live) - 1
        if not any(len(q.holders) >= others for q in queue.values()):
            return
        light = self._light
        peers = {n for n in self._live if n != self.node and n not in light}
        for key, item in list(queue.items()):
            if peers <= item.holders:
                del queue[key]

    def _push_pull(self) -> None:
        # one live member, and (after Serf's reconnect) one member we think dead: if it is back
        # or the partition healed, the two views merge again. The dead take turns, so each is
        # tried within (number dead) intervals; at random, a partition that left many truly dead
        # members behind could take many times that to heal.
        targets = self._pick(1, lambda m: m.status == "alive" and not m.light)
        dead = self._dead_turns.next(self, lambda m: m.status == "dead")
        if dead is not None:
            targets.append(dead)
        state = self._full_state()
        for node in targets:
            self._send(node, Sync(False, state))

    def _sync_interval(self) -> float:
        n = max(self.alive_count() if self.members else 1, 1)
        scale = 1.0 if n <= 32 else math.ceil(math.log2(n) - math.log2(32)) + 1.0
        return self.profile.push_pull_interval * scale

    def _reap(self, now: float) -> None:
        for node, m in list(self.members.items()):
            gone = m.status in ("dead", "left", "away") and now - m.changed_at >= self.tombstone
            if gone and node != self.node:
                del self.members[node]
                self._light.discard(node)
                self.changes.append(Change(now, node, m.status, m.incarnation, -1, gone=True))

    # ---- receiving ---------------------------------------------------------------------------

    def receive(self, src: str, msg: Message, now: float) -> None:
        """Handle one message from ``src`` (already authenticated and admitted by the driver)."""
        name = type(msg).__name__.lower()
        self.stats.received[name] = self.stats.received.get(name, 0) + 1
        if self.leaving:
            return
        self._catch_up(now)
        member = self.members.get(src)
        if member is not None:
            member.last_heard = now
            if member.status in ("dead", "left") and not isinstance(msg, Sync):
                self._heard_again(src, now, direct=True)  # (a push-pull is answered anyway)
        self._outdated = self._refuted = False
        match msg:
            case Ping(seq, target, records):
                self._apply_all(records, now, src)
                if target == self.node:
                    first = self._buddies(src)
                    self._send(src, Ack(seq, first + self._piggyback(src, exclude=first)))
                    return
            case Ack(seq, records):
                self._apply_all(records, now, src)
                self._on_ack(src, seq, now)
            case PingReq(seq, target, records):
                self._apply_all(records, now, src)
                if target in self.members and target != self.node and not self.light:
                    mine = self._next_seq()
                    self._relays[mine] = _Relay(src, seq, target, now + self._nack_timeout())
                    self._send(target, Ping(mine, target, self._piggyback(target)))
            case Nack(seq):
                if self._probe is not None and self._probe.seq == seq:
                    self._probe.nacks += 1
            case Gossip(records):
                self._apply_all(records, now, src)
            case Sync(reply, records):
                self._apply_all(records, now, src)
                sent = self._beats.pop(src, None) if reply else None
                if sent is not None and member is not None:
                    member.rtt = now - sent  # (nobody probes a light member: its heartbeats time)
                if reply and src in self._seeds:
                    self._seeds, self._next_join = [], math.inf  # joined
                if not reply:
                    self._send(src, Sync(True, self._full_state()))
                    return
        answer = self._refuted and (self.light or self._batched)
        if (self._outdated or answer) and self.me.alive is not None:
            # (a light or batched member answers an accusation at once, in the same radio
            # burst, instead of at its next heartbeat or probe)
            self._send(src, Gossip((self.me.alive,)))

    def _buddies(self, src: str) -> tuple[Record, ...]:
        """What an ack to ``src`` carries first (Lifeguard's buddy system, both ways): our alive
        record if ``src`` just told us something older about us, and our suspicion of ``src``."""
        out: list[Record] = []
        if self._outdated and self.me.alive is not None:
            out.append(self.me.alive)
        member = self.members.get(src)
        if member is not None and member.status == "suspect" and member.accusation is not None:
            out.append(member.accusation)
        return tuple(out)

    def _on_ack(self, src: str, seq: int, now: float) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq and not probe.acked:
            probe.acked = True
            probe.direct = src == probe.target
            target = self.members.get(probe.target)
            if target is not None:
                target.last_heard = now
                if probe.direct:
                    target.rtt = now - probe.sent
            return
        relay = self._relays.pop(seq, None)
        if relay is not None and src == relay.target:
            self._send(relay.origin, Ack(relay.origin_seq))

    def _apply_all(self, records: Iterable[Record], now: float, src: str) -> None:
        # facts (certificates) first: an alive record is only taken from an admitted member
        queue = self._queue
        for record in sorted(records, key=lambda r: not isinstance(r, Fact)):
            self._apply(record, now)
            queued = queue.get(_queue_key(record))
            if queued is not None and queued.record == record:
                queued.holders.add(src)  # src holds it: the budget goes to the others

    def _apply(self, record: Record, now: float, *, verified: bool = False) -> None:
        if isinstance(record, Fact):
            if self.facts.learn(record.blob):
                self._enqueue(record)
            return
        if isinstance(record, Alive):
            self._apply_alive(record, now, verified)
        else:
            self._apply_accusation(record, now, verified)

    def _verify(self, signer: str, record: Alive | Accusation) -> bool:
        if self.crypto.verify(signer, record.signed_part(self.domain), record.signature):
            return True
        self.stats.rejected += 1
        log.warning(
            "%s: dropped a %s record about %s: bad signature by %s",
            self.node[-8:],
            type(record).__name__.lower(),
            record.node[-8:],
            signer[-8:],
        )
        return False

    def _apply_alive(self, record: Alive, now: float, verified: bool) -> None:
        node = record.node
        if node == self.node:
            me = self.me
            newer = record.incarnation > me.incarnation and not self.leaving
            if newer and (verified or self._verify(node, record)):
                self._refute(record.incarnation, now)
            return
        member = self.members.get(node)
        back = member is not None and member.status in ("dead", "left")
        outcome = precedence(member, "alive", record.incarnation, record.version)
        if outcome != "take" or (member is None and not self.facts.admits(node)):
            self.stats.stale += 1
            return
        if not verified and not self._verify(node, record):
            return
        if self.valid_state is not None and not self.valid_state(record.state):
            self.stats.rejected += 1
            log.warning("%s: dropped %s's alive record: malformed state", self.node[-8:], node[-8:])
            return
        record = _shared(record)
        if member is None:
            member = self.members[node] = Member(node, "alive", record.incarnation, record)
        member.alive = record
        member.incarnation = record.incarnation
        member.status = "alive"
        member.accusation = None
        member.lease = self._lease(record.state)
        member.renewed_at = now
        self._suspicions.pop(node, None)
        if member.light:
            self._light.add(node)
        else:
            self._light.discard(node)
        self._changed(member, now)
        self._enqueue(record)
        if back:
            self._heard_again(node, now, direct=False)

    def _heard_again(self, node: str, now: float, *, direct: bool) -> None:
        """A member we held dead or departed is back: it sent us something (``direct``), or its
        alive record jumped over our tombstone. A partition may just have healed, and the two
        sides hold each other's news: pull it at once (a push-pull), instead of at the next
        periodic one. Each side that hears directly pulls; of those that only read the jump in
        gossip, about PULL_FANOUT across the swarm do (so a restart in a big swarm does not
        bring a full state from everyone at once); once per member per reconnect period."""
        if self.light or node == self.node:
            return
        if not direct and self.rng.random() * self.alive_count() >= PULL_FANOUT:
            return
        last = self._pulled.get(node)
        if last is not None and now - last < RECONNECT_EVERY * self.profile.probe_interval:
            return
        if len(self._pulled) >= 1024:
            self._pulled.clear()
        self._pulled[node] = now
        self._send(node, Sync(False, self._full_state()))

    def _apply_accusation(self, record: Accusation, now: float, verified: bool) -> None:
        node = record.node
        if node == self.node:
            if record.leave or self.leaving:
                return
            current = record.incarnation >= self.incarnation
            if current and (verified or self._verify(record.by, record)):
                if record.kind == "s":
                    self._health(1)
                self._refute(record.incarnation, now)
            elif not current:
                # old news (we refuted it already), but whoever sent it missed the refutation:
                # receive() answers it with our current alive record
                self._outdated = True
            return
        if not record.leave and not self.facts.admits(record.by):
            self.stats.rejected += 1
            if record.by not in self._unknown_accusers and len(self._unknown_accusers) < 1024:
                self._unknown_accusers.add(record.by)
                log.warning(
                    "%s: dropped an accusation of %s signed by %s, not a member",
                    self.node[-8:],
                    node[-8:],
                    record.by[-8:],
                )
            return
        member = self.members.get(node)
        kind: Kind = "left" if record.leave else "suspect" if record.kind == "s" else "dead"
        outcome = precedence(member, kind, record.incarnation)
        if outcome == "stale" or member is None:
            self.stats.stale += 1
            return
        if outcome == "confirm":
            susp = self._suspicions.get(node)
            if susp is None or record.by in susp.accusers or len(susp.accusers) > susp.k:
                self.stats.stale += 1
                return
            if not verified and not self._verify(record.by, record):
                return
            susp.confirm(record.by)
            self._enqueue(record)
            return
        if not verified and not self._verify(record.by, record):
            return
        member.status = kind
        member.incarnation = record.incarnation
        member.accusation = record
        if kind == "suspect" and not self.light:
            # (a light member takes the others' verdict by push-pull)
            self._suspicions[node] = self._suspicion(record, now)
            self._unstretch()
        else:
            self._suspicions.pop(node, None)
        self._changed(member, now)
        self._enqueue(record)

    def _suspicion(self, record: Accusation, now: float) -> _Suspicion:
        p = self.profile
        n = self.alive_count()
        k = p.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        low = p.suspicion_mult * max(1.0, math.log10(max(1, n))) * p.probe_interval
        s = _Suspicion(now, k, low, p.suspicion_max_mult * low, {record.by})
        s.update()
        return s

    def _expire(self, node: str, susp: _Suspicion, now: float) -> None:
        # A node that only heard the suspicion (it never failed a probe of the suspect itself)
        # asks the suspect once before declaring it dead: the ping carries the accusation, so a
        # live suspect answers with its refutation, even one this node missed.
        member = self.members.get(node)
        hearsay = self.node not in susp.accusers and not susp.asked
        if hearsay and member is not None and member.accusation is not None:
            susp.asked = True
            susp.deadline = now + self._scaled(self.profile.probe_timeout)
            self._send(node, Ping(self._next_seq(), node, (member.accusation,)))
            return
        self._declare_dead(node, now)

    def _declare_dead(self, node: str, now: float) -> None:
        self._suspicions.pop(node, None)
        member = self.members.get(node)
        if member is None or member.status != "suspect":
            return
        self._apply(self._sign_accusation("d", node, member.incarnation), now, verified=True)
        self._declared = True

    def _refute(self, incarnation: int, now: float) -> None:
        me = self.me
        me.incarnation = incarnation + 1
        me.alive = self._sign_alive(me.incarnation, me.version, me.alive.state if me.alive else b"")
        self.stats.refutations += 1
        self._refuted = True
        self._changed(me, now)
        self._enqueue(me.alive)

    def _changed(self, member: Member, now: float) -> None:
        member.changed_at = now
        if member.status in ("alive", "suspect"):
            self._live.add(member.node)
        else:
            self._live.discard(member.node)
        self.changes.append(
            Change(now, member.node, member.status, member.incarnation, member.version)
        )

    # ---- sending -----------------------------------------------------------------------------

    def _send(self, dst: str, msg: Message) -> None:
        name = type(msg).__name__.lower()
        self.stats.sent[name] = self.stats.sent.get(name, 0) + 1
        self.outbox.append((dst, msg))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _pick(self, k: int, keep: Callable[[Member], bool]) -> list[str]:
        members = self.members
        if len(members) > 8 * k:
            # many members: draw without replacement until k qualify, instead of scanning all
            names = list(members)
            out: list[str] = []
            for node in self.rng.sample(names, 4 * k):
                if node != self.node and keep(members[node]):
                    out.append(node)
                    if len(out) == k:
                        return out
        nodes = [n for n, m in members.items() if n != self.node and keep(m)]
        if len(nodes) <= k:
            self.rng.shuffle(nodes)
            return nodes
        return self.rng.sample(nodes, k)

    def _full_state(self) -> tuple[Record, ...]:
        out: list[Record] = [Fact(b) for b in self.facts.snapshot()]
        for m in self.members.values():
            # not the alive record of a member that is gone: a peer that has forgotten it (a
            # newcomer, or one that reaped the tombstone) would take it back as alive first
            if m.alive is not None and m.status in ("alive", "suspect"):
                out.append(m.alive)
            if m.accusation is not None and m.status != "alive":
                out.append(m.accusation)
        return tuple(out)

    def _enqueue(self, record: Record) -> None:
        self._queue_order += 1
        size = len(pack(record.to_wire()))
        holders = {record.by} if isinstance(record, Accusation) else set()
        if isinstance(record, Alive):
            holders.add(record.node)
        queued = _Queued(record, size, 0, self._queue_order, holders)
        self._queue[_queue_key(record)] = queued

    def _piggyback(self, dst: str, exclude: tuple[Record, ...] = ()) -> tuple[Record, ...]:
        if not self._queue:
            return ()
        limit = self.profile.retransmit_mult * math.ceil(math.log10(self.alive_count() + 1))
        budget = PIGGYBACK_BYTES
        out: list[Record] = []
        for key, item in sorted(self._queue.items(), key=lambda kv: (kv[1].sent, -kv[1].order)):
            if item.record in exclude or dst in item.holders:
                continue
            if item.size > budget and out:
                continue
            budget -= item.size
            out.append(item.record)
            item.sent += 1
            if item.sent >= limit:
                del self._queue[key]
            if budget <= 0:
                break
        return tuple(out)

    # ---- signing -----------------------------------------------------------------------------

    def _sign_alive(self, incarnation: int, version: int, state: bytes) -> Alive:
        unsigned = Alive(self.node, incarnation, version, state, b"")
        sig = self.crypto.sign(unsigned.signed_part(self.domain))
        return Alive(self.node, incarnation, version, state, sig)

    def _sign_accusation(self, kind: Literal["s", "d"], node: str, inc: int) -> Accusation:
        unsigned = Accusation(kind, node, inc, self.node, b"")
        sig = self.crypto.sign(unsigned.signed_part(self.domain))
        return Accusation(kind, node, inc, self.node, sig)
