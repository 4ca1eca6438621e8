"""Anti-entropy between two replicas: the messages and a session, sans I/O.

A session is started by one side (the *client*) and is a few request/reply rounds:

1. Pull. ``SyncRequest``: the client's version vectors (scope -> origin -> highest sequence)
   and its keyring digest. The server answers with what the client lacks (``Replica.missing``),
   at most ``budget`` bytes, and ``more`` if it stopped early; the client takes it, durably, and
   asks again until there is no more. When the keyring digests differ the server first sends its
   keyring record ids instead, and the client's next request names the ones it ``want``s (so
   keys arrive before the data encrypted with them).
2. Push. ``Push``: what the server lacks according to the vectors (and ids) it sent, in batches
   of at most ``budget`` bytes, each answered with the server's new vectors.

Fork evidence (two different updates for one origin and sequence, ``_replica``) does not show in
vectors: both sides also list the ids of the evidence they hold (``ev``, absent when none), and
each sends the other the evidence it lacks, where the other holds the log up to the fork, so
every peer gets to see the fork, not only the one that found it.

Each request waits for its reply before the next is sent, and a side stores what it takes
before it answers: that is the back-pressure, and the reason an answer's vectors can be trusted.
A session ends when neither side lacks anything, when a round makes no progress (a peer that
keeps refusing a record), or after ``max_rounds``. It runs on ciphertext: a relay syncs the
same way, and every record can be checked by anyone.

Messages are maps (``"op"`` routes a request to the vault service; ``"v"`` is the version).
``from_wire`` checks a message against its ``Schema`` (``homeswarm.wire``) and raises
``MalformedMessage``, a ``ProtocolViolation``, for one of the wrong shape (that closes the
connection); a malformed *record* inside a good message is only refused, like any bad record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeswarm.errors import ProtocolViolation
from homeswarm.wire import Field, Schema

from ._errors import RejectedRecord
from ._model import SCOPES
from ._records import (
    MAX_ORIGINS,
    MAX_SEQ,
    MAX_STREAM,
    KeyRecord,
    Record,
    record_from_wire,
    record_to_wire,
)
from ._replica import Changes, Rejection, Replica, Vectors, evidence_id

VERSION = 1
SYNC = "sync"  # the operations, as the vault service sees them
PUSH = "push"
PREFIX = "vault."  # on the wire: {"op": "vault.sync", ...}
BUDGET = 512 * 1024  # bytes of records per message
MAX_RECORDS = 100_000  # per message (a relay of a big vault: many small updates)
MAX_IDS = 1_000_000


_SCOPE = Field("scope", str, valid=SCOPES.__contains__, says="a vector's scope is not a scope")
_SEQ = Field("sequence", int, least=0, most=MAX_SEQ)
_ORIGIN = Field("origin", str, most=MAX_STREAM)
_VECTOR = Field("vector", dict, most=MAX_ORIGINS, keys=_ORIGIN, values=_SEQ)
_VERSION = Field("v", int, equals=VERSION)
_SWARM = Field("swarm", str)
_VECTORS = Field("vec", dict, most=len(SCOPES), keys=_SCOPE, values=_VECTOR)
_DIGEST = Field("kd", bytes, least=16, most=16)
_RECORDS = Field("recs", list, most=MAX_RECORDS)


def _ids(name: str) -> Field:
    return Field(
        name, list, optional=True, most=MAX_IDS, items=Field("id", bytes, least=16, most=16)
    )


SYNC_REQUEST = Schema(
    "vault sync",
    _VERSION,
    _SWARM,
    _VECTORS,
    _DIGEST,
    _ids("want"),
    _ids("ev"),  # ev: fork evidence
)
SYNC_REPLY = Schema(
    "vault sync reply",
    _VERSION,
    _VECTORS,
    _DIGEST,
    _ids("ids"),
    _RECORDS,
    Field("more", bool),
    _ids("ev"),
)
PUSH_MESSAGE = Schema("vault push", _VERSION, _SWARM, _RECORDS)
PUSH_REPLY = Schema("vault push reply", _VERSION, _VECTORS, _DIGEST, Field("refused", int, least=0))


def parse_records(items: list[Any]) -> tuple[list[Record], list[Rejection]]:
    """Records from a message: the well-formed ones, and the malformed ones refused."""
    good: list[Record] = []
    bad: list[Rejection] = []
    for item in items:
        try:
            good.append(record_from_wire(item))
        except RejectedRecord as exc:
            bad.append(Rejection("a record", str(exc)))
    return good, bad


@dataclass(frozen=True, slots=True)
class SyncRequest:
    swarm: str
    vectors: Vectors
    digest: bytes
    want: list[bytes] | None = None
    evidence: list[bytes] | None = None  # ids of the fork evidence held (None: none)

    def to_wire(self) -> dict[str, Any]:
        out = {
            "op": PREFIX + SYNC,
            "v": VERSION,
            "swarm": self.swarm,
            "vec": self.vectors,
            "kd": self.digest,
            "want": self.want,
        }
        if self.evidence:
            out["ev"] = self.evidence
        return out

    @classmethod
    def from_wire(cls, obj: object) -> SyncRequest:
        m = SYNC_REQUEST.check(obj)
        return cls(m["swarm"], m["vec"], m["kd"], m["want"], m["ev"])


@dataclass(frozen=True, slots=True)
class SyncReply:
    vectors: Vectors
    digest: bytes
    ids: list[bytes] | None
    records: list[Any]  # wire forms
    more: bool
    evidence: list[bytes] | None = None  # ids of the fork evidence held (None: none)

    def to_wire(self) -> dict[str, Any]:
        out = {
            "v": VERSION,
            "vec": self.vectors,
            "kd": self.digest,
            "ids": self.ids,
            "recs": self.records,
            "more": self.more,
        }
        if self.evidence:
            out["ev"] = self.evidence
        return out

    @classmethod
    def from_wire(cls, obj: object) -> SyncReply:
        m = SYNC_REPLY.check(obj)
        return cls(m["vec"], m["kd"], m["ids"], m["recs"], m["more"], m["ev"])


@dataclass(frozen=True, slots=True)
class Push:
    swarm: str
    records: list[Any]  # wire forms

    def to_wire(self) -> dict[str, Any]:
        return {"op": PREFIX + PUSH, "v": VERSION, "swarm": self.swarm, "recs": self.records}

    @classmethod
    def from_wire(cls, obj: object) -> Push:
        m = PUSH_MESSAGE.check(obj)
        return cls(m["swarm"], m["recs"])


@dataclass(frozen=True, slots=True)
class PushReply:
    vectors: Vectors
    digest: bytes
    refused: int

    def to_wire(self) -> dict[str, Any]:
        return {"v": VERSION, "vec": self.vectors, "kd": self.digest, "refused": self.refused}

    @classmethod
    def from_wire(cls, obj: object) -> PushReply:
        m = PUSH_REPLY.check(obj)
        return cls(m["vec"], m["kd"], m["refused"])


def _wire(records: list[Record]) -> list[Any]:
    return [record_to_wire(r) for r in records]


def _check_swarm(replica: Replica, swarm: str) -> None:
    if swarm != replica.swarm:
        raise ProtocolViolation("vault: a message for another swarm")


# ---- the server side ---------------------------------------------------------------------------


def answer_sync(replica: Replica, req: SyncRequest, *, budget: int = BUDGET) -> SyncReply:
    """What the client lacks (pure: changes nothing)."""
    _check_swarm(replica, req.swarm)
    digest = replica.keyring.digest()
    if req.want is None and req.digest != digest:
        ids = sorted(replica.keyring.ids())
        return SyncReply(replica.vectors(), digest, ids, [], True)
    keys: list[KeyRecord] = replica.keyring.records(req.want) if req.want else []
    data: list[Record]
    data, more = replica.missing(req.vectors, budget)
    if not more:  # the last page: what the client lacks of the forks too
        data += replica.evidence_for(req.vectors, set(req.evidence or ()))
    evidence = replica.evidence_ids() or None
    return SyncReply(replica.vectors(), digest, None, _wire([*keys, *data]), more, evidence)


def answer_push(replica: Replica, push: Push) -> tuple[PushReply, Changes, list[Rejection]]:
    """Take what was pushed. Store the changes before sending the reply."""
    _check_swarm(replica, push.swarm)
    records, refused = parse_records(push.records)
    changes, rejections = replica.receive(records)
    rejections = refused + rejections
    reply = PushReply(replica.vectors(), replica.keyring.digest(), len(rejections))
    return reply, changes, rejections


# ---- the client side ---------------------------------------------------------------------------


class Session:
    """One anti-entropy session, started by this side: ``next()`` gives the message to send
    (None: done), ``take(reply)`` the changes to store before calling ``next()`` again."""

    def __init__(self, replica: Replica, *, budget: int = BUDGET, max_rounds: int = 1000) -> None:
        self.replica = replica
        self.budget = budget
        self.rounds_left = max_rounds
        self.phase = "pull"
        self.their_vectors: Vectors | None = None
        self.their_digest: bytes | None = None
        self._their_ids: set[bytes] | None = None
        self._want: list[bytes] | None = None
        self._asked: tuple[bytes, set[bytes]] = (b"", set())  # our keyring when we last asked
        self._listed: bytes | None = None  # their keyring's digest when they listed its ids
        self._pull_again = True
        self._pushed_ids: set[bytes] = set()
        self._their_evidence: set[bytes] = set()  # theirs, and what we pushed them
        self.sent = 0  # records sent
        self.received = 0  # records taken
        self.refused = 0  # records the other side refused, or we refused

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def next(self) -> tuple[str, dict[str, Any]] | None:
        if self.rounds_left <= 0:
            self.phase = "done"
        if self.phase == "pull":
            if self._pull_again:
                self.rounds_left -= 1
                r = self.replica
                self._asked = (r.keyring.digest(), r.keyring.ids())
                evidence = r.evidence_ids() or None
                req = SyncRequest(r.swarm, r.vectors(), self._asked[0], self._want, evidence)
                return SYNC, req.to_wire()
            self.phase = "push"
        if self.phase == "push":
            records = self._to_push()
            if records:
                self.rounds_left -= 1
                self.sent += len(records)
                return PUSH, Push(self.replica.swarm, _wire(records)).to_wire()
            self.phase = "done"
        return None

    def take(self, op: str, obj: object) -> tuple[Changes, list[Rejection]]:
        if op == SYNC:
            return self._take_sync(SyncReply.from_wire(obj))
        return self._take_push(PushReply.from_wire(obj))

    def _take_sync(self, reply: SyncReply) -> tuple[Changes, list[Rejection]]:
        records, refused = parse_records(reply.records)
        changes, rejections = self.replica.receive(records)
        rejections = refused + rejections
        self.received += len(records) - len(rejections)
        self.refused += len(rejections)
        self.their_vectors, self.their_digest = reply.vectors, reply.digest
        self._their_evidence |= set(reply.evidence or ())
        want: list[bytes] = []
        again = False
        if reply.ids is not None:
            self._their_ids = set(reply.ids)
            self._listed = reply.digest
            want = sorted(self._their_ids - self.replica.keyring.ids())
            self._want = want
        elif self._want is not None:
            self._want = []  # sent: ask for no more ids
            if reply.digest != self._listed:
                # their keyring grew since they listed it (a write of theirs made an epoch): what
                # they just sent may need keys we did not ask for, so compare keyrings again
                self._want, again = None, True
        elif reply.digest == self._asked[0]:
            # they hold the keyring we held when we asked (ours may have grown since: a write
            # of ours made an epoch, which the push must then carry)
            self._their_ids = self._asked[1]
        if reply.digest == self.replica.keyring.digest():
            self._their_ids = self.replica.keyring.ids()
        self._pull_again = reply.more or bool(want) or again
        return changes, rejections

    def _take_push(self, reply: PushReply) -> tuple[Changes, list[Rejection]]:
        before = self.their_vectors or {}
        self.refused += reply.refused
        progressed = _advanced(before, reply.vectors) or reply.digest != self.their_digest
        self.their_vectors, self.their_digest = reply.vectors, reply.digest
        if not progressed:
            self.phase = "done"  # it took nothing of what we sent: try again another time
        return Changes(), []

    def _to_push(self) -> list[Record]:
        if self.their_vectors is None:
            return []
        keys: list[KeyRecord] = []
        mine = self.replica.keyring
        if self.their_digest != mine.digest() and self._their_ids is not None:
            lacking = mine.ids() - self._their_ids - self._pushed_ids
            keys = mine.records(lacking)
            self._pushed_ids |= lacking
        data: list[Record]
        data, more = self.replica.missing(self.their_vectors, self.budget)
        if not more:
            forks = self.replica.evidence_for(self.their_vectors, self._their_evidence)
            self._their_evidence |= {evidence_id(u) for u in forks}
            data += forks
        return [*keys, *data]


def _advanced(
    before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]
) -> bool:
    return any(
        n > before.get(scope, {}).get(origin, 0)
        for scope, vec in after.items()
        for origin, n in vec.items()
    )


def lacking(mine: Vectors, theirs: Mapping[str, Mapping[str, int]]) -> int:
    """How many records of ``mine`` the holder of ``theirs`` lacks (updates, by sequence)."""
    return sum(
        max(n - theirs.get(scope, {}).get(origin, 0), 0)
        for scope, vec in mine.items()
        for origin, n in vec.items()
    )
