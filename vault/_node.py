"""The thin trio driver: one replica, its store, and its peers over a Transport.

``VaultNode`` owns a ``Replica`` and a ``Store`` and moves what the pure pieces produce:

- Writes: ``put``/``delete`` stage the change in the replica at once and wait for the
  *committer*, which takes every change staged since its last turn, turns them into updates
  (``commit_local``), stores them in one transaction, and only then wakes the writers: a write
  is acknowledged once durable, and a thousand concurrent writes cost one fsync, not a
  thousand. At most ``max_unacked`` writes wait at once (back-pressure on writers).
- Sync: a session (``_sync.Session``) with a peer, one at a time per peer, runs when this
  device wrote something (with up to ``push_fanout`` alive peers: push on write), when a peer is
  seen alive (``sync_soon``), when records arrived from one peer and another is known to lack
  them (forwarding, up to ``forward_fanout`` peers), and every ``pull_period`` seconds with a
  random alive peer (pull). Requests from peers (``handle``) are answered from the replica;
  what they push is stored before the answer.
- Upkeep, after each commit and each period: seal held epochs to devices that became eligible;
  compact a scope whose log holds ``compact_after`` updates, or whose updates weigh more than
  ``compact_ratio`` of its snapshot (and at least ``compact_min_bytes``). So a device catching
  up gets one snapshot and at most that fraction more, and compaction costs O(1) per byte
  written.

The node knows the network only through ``Links`` (who is alive, a connection to a peer), so
the same code runs over libp2p, the memory transport, and in the simulator. Time is
``trio.current_time()``; randomness is the ``random.Random`` given.

If the store fails, the replica is rebuilt from what the store holds (dropping what was not
stored) and the writers waiting are told (``StorageFailure``); nothing unstored was sent.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from homeswarm.ids import short
from homeswarm.transports import (
    Connection,
    ProtocolViolation,
    RemoteError,
    Transport,
    TransportError,
)

from ._errors import StorageFailure
from ._local import restore, store_status
from ._model import SCOPES
from ._replica import Changes, Directory, Entry, Rejection, Replica, Vectors
from ._store import Store
from ._sync import (
    BUDGET,
    PUSH,
    SYNC,
    Push,
    Session,
    SyncRequest,
    answer_push,
    answer_sync,
    lacking,
)

log = logging.getLogger("vault.node")


class Links(Protocol):
    """What the node needs from the membership layer."""

    def alive(self) -> Sequence[str]:
        """Peers believed alive now (not this device)."""
        ...

    async def connect(self, peer: str) -> Connection:
        """A connection to ``peer`` (an existing one, or dialled); TransportError if none."""
        ...

    async def radio(self) -> None:
        """Returns when sending costs this device no radio wake of its own: at once, or, on a
        device that sends in bursts (a light member), at its next burst."""
        ...


class TransportLinks:
    """``Links`` over a Transport: who is alive comes from ``alive``, addresses from ``addrs``;
    a connection already open to the peer is reused, else one is dialled."""

    def __init__(
        self,
        transport: Transport,
        *,
        alive: Callable[[], Sequence[str]],
        addrs: Callable[[str], Sequence[str]],
        radio: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.transport = transport
        self._alive = alive
        self._addrs = addrs
        self._radio = radio

    def alive(self) -> Sequence[str]:
        return self._alive()

    async def connect(self, peer: str) -> Connection:
        for conn in self.transport.connections(peer):
            return conn
        return await self.transport.dial(peer, self._addrs(peer))

    async def radio(self) -> None:
        if self._radio is not None:
            await self._radio()


@dataclass(frozen=True)
class NodeSettings:
    pull_period: float = 5.0  # seconds between pulls from a random alive peer (jittered)
    push_fanout: int = 16  # alive peers a local write is pushed to at once
    forward_fanout: int = 3  # peers known to lack what just arrived, synced at once
    compact_after: int = 1000  # updates in a scope's log that make this device compact it
    compact_ratio: float = 0.25  # ... or their bytes over this fraction of the snapshot's
    compact_min_bytes: int = 64 * 1024  # ... and at least this many
    budget: int = BUDGET  # bytes of records per message
    max_unacked: int = 4096  # writes waiting for their commit at once
    request_timeout: float = 10.0


@dataclass
class PeerSync:
    vectors: Vectors | None = None
    at: float | None = None
    sessions: int = 0
    failures: int = 0
    error: str | None = None


class _Waiter:
    __slots__ = ("error", "event")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.error: BaseException | None = None


class VaultNode:
    def __init__(
        self,
        new_replica: Callable[[], Replica],
        store: Store,
        *,
        rng: random.Random,
        settings: NodeSettings | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._new_replica = new_replica
        self.wall_clock = wall_clock  # what entries expire by (see ``_model``)
        self.store = store
        self.rng = rng
        self.settings = settings or NodeSettings()
        self.replica = restore(new_replica(), store)
        self.peers: dict[str, PeerSync] = {}
        self._links: Links | None = None
        self._nursery: trio.Nursery | None = None
        self._dirty = trio.Event()
        self._waiters: list[_Waiter] = []
        self._slots = trio.Semaphore(self.settings.max_unacked)
        self._running: set[str] = set()
        self._again: set[str] = set()
        self.commits = 0  # transactions that carried local writes
        # grows whenever what the replica holds may have changed (a local write committed,
        # records from a peer, a reload from the store): a cheap check for derived state
        self.version = 0

    @property
    def me(self) -> str:
        return short(self.replica.device)

    # ---- running ---------------------------------------------------------------------------

    async def run(
        self, links: Links | None = None, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Commit writes, and with ``links`` sync with peers, until cancelled."""
        self._links = links
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._committer)
            if links is not None:
                nursery.start_soon(self._periodic)
            task_status.started()
            await trio.sleep_forever()

    # ---- local reads and writes ----------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self.replica.get(key, self.wall_clock())

    def items(self, prefix: str = "") -> list[Entry]:
        return self.replica.items(prefix, self.wall_clock())

    async def put(
        self, key: str, text: str, scope: str | None = None, ttl: float | None = None
    ) -> str:
        """Store ``key = text`` (JSON text); returns once durable, with the entry's scope (an
        entry that expires does so ``ttl`` seconds from now, or its collection's default)."""
        async with self._slots:
            used = self.replica.put(key, text, scope, ttl=ttl, now=self.wall_clock())
            await self._committed()
        return used

    async def write(self, puts: dict[str, str], deletes: Sequence[str], scope: str) -> None:
        """Store every ``key = text`` of ``puts`` in ``scope`` and remove ``deletes``, staged
        together and durable together (one commit: a reader of this device's updates sees all
        or, while the rest is on its way, a prefix); returns once durable."""
        async with self._slots:
            now = self.wall_clock()
            for key, text in puts.items():
                self.replica.put(key, text, scope, now=now)
            for key in deletes:
                self.replica.delete(key)
            await self._committed()

    async def delete(self, key: str) -> list[str]:
        """Remove ``key`` everywhere this device can see it; the scopes it was in ([]: absent)."""
        async with self._slots:
            scopes = self.replica.delete(key)
            if scopes:
                await self._committed()
        return scopes

    async def _committed(self) -> None:
        waiter = _Waiter()
        self._waiters.append(waiter)
        self._dirty.set()
        await waiter.event.wait()
        if waiter.error is not None:
            raise waiter.error

    async def _committer(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            await trio.lowlevel.checkpoint()  # writers started in the same moment join this group
            waiters, self._waiters = self._waiters, []
            error: BaseException | None = None
            changes = Changes()
            try:
                changes = self.replica.commit_local()
                self._persist(changes)
                await self._flush()
                self.commits += 1
            except StorageFailure as exc:
                error = exc
            for waiter in waiters:
                waiter.error = error
                waiter.event.set()
            if error is None and changes.added:
                self._push_all()
                self._upkeep()

    async def _flush(self) -> None:
        """Make what is stored survive a power cut; the disk's wait in a worker thread."""
        if self.store.flush_blocks:
            await trio.to_thread.run_sync(self.store.flush)
        else:
            self.store.flush()

    def _persist(self, changes: Changes) -> None:
        """Store ``changes``; if that fails, go back to what the store holds, and raise."""
        if not changes:
            return
        self.version += 1
        try:
            self.store.apply(changes)
        except StorageFailure as exc:
            log.error("%s: the vault store failed; reloading what it holds", self.me)
            self.replica = restore(self._new_replica(), self.store)
            self.version += 1
            # writes staged in the replica just dropped were never stored: say so
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.error = exc
                waiter.event.set()
            raise

    # ---- keys, directory, compaction -------------------------------------------------------

    def set_directory(self, directory: Directory) -> None:
        if directory == self.replica.directory:
            return
        self.replica.set_directory(directory)
        try:
            self.store.save_directory(directory)
        except StorageFailure as exc:
            log.warning("%s: could not cache the directory: %s", self.me, exc)
        self._upkeep()

    def rotate(self, scopes: Sequence[str] = SCOPES) -> None:
        """New epochs for ``scopes`` now (after a revocation this device made)."""
        changes = self.replica.rotate(scopes)
        self._persist(changes)
        if changes:
            self._push_all()

    def _upkeep(self) -> None:
        changes = self.replica.reseal()
        for scope in SCOPES:
            if self._compaction_due(scope):
                changes.extend(self.replica.compact(scope))
        try:
            self._persist(changes)
        except StorageFailure:
            return
        if changes:
            self._push_all()

    def _compaction_due(self, scope: str) -> bool:
        count = self.replica.compactable(scope)
        if not count:
            return False
        if count >= self.settings.compact_after:
            return True
        updates, snapshots = self.replica.log_bytes(scope)
        floor = max(self.settings.compact_min_bytes, self.settings.compact_ratio * snapshots)
        return updates >= floor

    def compact(self, scope: str) -> bool:
        """Compact ``scope`` now if it can be; whether it was."""
        changes = self.replica.compact(scope)
        self._persist(changes)
        return bool(changes)

    # ---- sync --------------------------------------------------------------------------------

    def sync_soon(self, peer: str) -> None:
        """Run a session with ``peer`` soon (another one after it, if one is running)."""
        if self._nursery is None or self._links is None:
            return
        if peer in self._running:
            self._again.add(peer)
            return
        self._running.add(peer)
        self._nursery.start_soon(self._sessions_with, peer)

    def _push_all(self) -> None:
        if self._links is None:
            return
        alive = sorted(self._links.alive())
        for peer in self.rng.sample(alive, min(len(alive), self.settings.push_fanout)):
            self.sync_soon(peer)

    def _forward(self, source: str | None) -> None:
        """New records arrived: sync with peers that lack them, as far as this device knows
        (never synced with: assumed to lack them)."""
        if self._links is None:
            return
        mine = self.replica.vectors()
        behind = [
            p
            for p in sorted(self._links.alive())
            if p != source
            and (
                (known := self.peers.get(p)) is None
                or known.vectors is None
                or lacking(mine, known.vectors) > 0
            )
        ]
        for peer in self.rng.sample(behind, min(len(behind), self.settings.forward_fanout)):
            self.sync_soon(peer)

    async def _periodic(self) -> None:
        assert self._links is not None
        while True:
            period = self.settings.pull_period
            await trio.sleep(period * (0.5 + self.rng.random()))
            await self._links.radio()  # a pull is nobody's wait: it rides the next burst
            alive = sorted(self._links.alive())
            if alive:
                self.sync_soon(self.rng.choice(alive))
            self._upkeep()

    async def _sessions_with(self, peer: str) -> None:
        try:
            while True:
                self._again.discard(peer)
                await self._session(peer)
                if peer not in self._again:
                    return
        finally:
            self._running.discard(peer)

    async def _session(self, peer: str) -> None:
        assert self._links is not None
        state = self.peers.setdefault(peer, PeerSync())
        state.sessions += 1
        session = Session(self.replica, budget=self.settings.budget)
        took = False
        try:
            conn = await self._links.connect(peer)
            while (message := session.next()) is not None:
                _, body = message
                reply = await conn.request(body, timeout=self.settings.request_timeout)
                if session.replica is not self.replica:
                    raise StorageFailure("the replica was reloaded from storage")
                changes, rejections = session.take(message[0], reply)
                if session.their_vectors is not None:
                    changes.extend(self.replica.observe(session.their_vectors))
                self._persist(changes)
                took = took or bool(changes.added)
                self._report(peer, rejections)
                if session.their_vectors is not None:
                    state.vectors = session.their_vectors
        except (TransportError, RemoteError, StorageFailure) as exc:
            state.failures += 1
            state.error = " ".join(str(exc).split())[:200] or type(exc).__name__
            log.info("%s: sync with %s stopped: %s", self.me, short(peer), state.error)
            return
        state.at = trio.current_time()
        state.error = None
        if took:
            self._forward(peer)

    async def handle(self, conn: Connection, op: str, body: Any) -> Any:
        """A request from a peer (``op`` without the ``vault.`` prefix)."""
        if op == SYNC:
            request = SyncRequest.from_wire(body)
            self._persist(self.replica.observe(request.vectors))
            reply = answer_sync(self.replica, request, budget=self.settings.budget)
            self.peers.setdefault(conn.peer_id, PeerSync()).vectors = request.vectors
            return reply.to_wire()
        if op == PUSH:
            push = Push.from_wire(body)
            answer, changes, rejections = answer_push(self.replica, push)
            self._persist(changes)
            if changes:
                await self._flush()  # the answer tells the peer we hold them
            self._report(conn.peer_id, rejections)
            if changes.added:
                self._forward(conn.peer_id)
            return answer.to_wire()
        raise ProtocolViolation(f"unknown vault operation {op[:20]!r}")

    def _report(self, peer: str, rejections: list[Rejection]) -> None:
        """Log what was refused, each refusal once (a peer sends a refused record again at
        every sync), and each fork found."""
        rejections = [r for r in rejections if not r.again]
        for fork in self.replica.take_forks():
            log.warning(
                "%s: two different updates %s (the second from %s): both kept as evidence",
                self.me,
                fork.describe(),
                short(peer),
            )
        if not rejections:
            return
        shown = "; ".join(f"{r.record}: {r.reason}" for r in rejections[:3])
        more = f" (and {len(rejections) - 3} more)" if len(rejections) > 3 else ""
        log.warning(
            "%s: refused %d record(s) from %s: %s%s",
            self.me,
            len(rejections),
            short(peer),
            shown,
            more,
        )

    # ---- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = trio.current_time()
        mine = self.replica.vectors()
        peers = {}
        for peer, state in sorted(self.peers.items()):
            theirs = state.vectors
            peers[peer] = {
                "behind": None if theirs is None else lacking(mine, theirs),
                "ahead": None if theirs is None else lacking(theirs, mine),
                "last_sync_s": None if state.at is None else round(max(now - state.at, 0.0), 1),
                "sessions": state.sessions,
                "failures": state.failures,
                "error": state.error,
            }
        return store_status(self.replica, self.store, commits=self.commits, peers=peers)
