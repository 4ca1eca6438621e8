"""Test kit for the membership core: devices with real keys, and a discrete-event network.

``CoreNet`` moves messages between pure ``Membership`` cores directly (no transport, no trio) with
per-message latency, jitter (which reorders), loss, duplication, partitions and crashes, in virtual
time; each core's next deadline sits in a heap, so a step costs O(log n), not O(n). It is what the
property tests and the long benchmark runs use; ``tests/swarm/test_membership_driver.py`` runs
the same cores over the memory transport through the real driver.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from homeswarm.transports import MemoryNetwork, MemoryTransport, peer_id_from_public_key
from homeswarm.wire import pack

from ._driver import Ed25519Crypto, MembershipDriver
from ._home import public_bytes
from ._membership import (
    NORMAL,
    Change,
    Membership,
    Message,
    Profile,
    encode_message,
)


class OpenFacts:
    """A roster that admits everyone and spreads blobs as a grow-only set."""

    def __init__(self) -> None:
        self.blobs: set[bytes] = set()

    def admits(self, node: str) -> bool:
        return True

    def learn(self, blob: bytes) -> bool:
        if blob in self.blobs:
            return False
        self.blobs.add(blob)
        return True

    def snapshot(self) -> list[bytes]:
        return sorted(self.blobs)


class RosterFacts(OpenFacts):
    """A roster that admits only these members (the rest are strangers)."""

    def __init__(self, members: Iterable[str]) -> None:
        super().__init__()
        self.members = set(members)

    def admits(self, node: str) -> bool:
        return node in self.members


def light_state(lease: float, body: bytes = b"") -> bytes:
    """A state that makes its member light, with this lease (read back by ``lease_of``)."""
    return b"lease=%d;" % round(lease) + body


def lease_of(state: bytes) -> float:
    """The lease in a ``light_state`` (0: a full member): the cores' ``lease_of`` in tests."""
    if not state.startswith(b"lease="):
        return 0.0
    return float(state[6:].split(b";", 1)[0])


class _SharedVerify:
    """Signs as one device; verifies through a cache shared by every core of a ``CoreNet``.

    Ed25519 verification is a pure function of (signer, data, signature), so sharing its results
    changes nothing but the time a big simulation takes (each record is checked once, not once
    per node).
    """

    def __init__(self, crypto: Ed25519Crypto, cache: dict[tuple[str, bytes, bytes], bool]) -> None:
        self._crypto = crypto
        self._cache = cache

    def sign(self, data: bytes) -> bytes:
        return self._crypto.sign(data)

    def verify(self, node: str, data: bytes, signature: bytes) -> bool:
        key = (node, data, signature)
        known = self._cache.get(key)
        if known is None:
            known = self._cache[key] = self._crypto.verify(node, data, signature)
        return known


def device_keys(n: int, rng: random.Random) -> list[tuple[str, Ed25519PrivateKey]]:
    """``n`` Ed25519 keys drawn from ``rng`` (deterministic), with their peer ids, sorted by id."""
    out = []
    for _ in range(n):
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        out.append((peer_id_from_public_key(public_bytes(key)), key))
    return sorted(out, key=lambda pair: pair[0])


_InFlight = tuple[float, int, str, str, Message]  # (arrival, order, src, dst, message)


class CoreNet:
    """Membership cores joined by a simulated datagram network, run in virtual time."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        latency: float = 0.001,
        jitter: float = 0.0005,
        loss: float = 0.0,
        duplicate: float = 0.0,
        profile: Profile = NORMAL,
        tombstone: float = 3600.0,
        state: Callable[[int], bytes] = lambda i: b"",
        facts: Callable[[], OpenFacts] = OpenFacts,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.latency, self.jitter, self.loss = latency, jitter, loss
        self.duplicate = duplicate  # the chance that a message is delivered twice
        # a test's hooks: ``drop(src, dst, msg)`` loses chosen messages; ``trace``, when a list,
        # gets (time sent, src, dst, msg) for every message a core sends
        self.drop: Callable[[str, str, Message], bool] | None = None
        self.trace: list[tuple[float, str, str, Message]] | None = None
        self.keys = dict(device_keys(n, self.rng))
        self.ids = sorted(self.keys)
        self.down: set[str] = set()
        self.cut: set[frozenset[str]] = set()
        self.changes: list[tuple[str, Change]] = []
        self.delivered = 0
        self.bytes_sent: dict[str, int] = dict.fromkeys(self.ids, 0)  # while measure_bytes
        self.messages_sent: dict[str, int] = dict.fromkeys(self.ids, 0)
        self.measure_bytes = False
        self._queue: list[_InFlight] = []
        self._order = 0
        self._profile = profile
        self._tombstone = tombstone
        self._facts = facts
        self._verified: dict[tuple[str, bytes, bytes], bool] = {}
        # (deadline, generation, node): an entry is current while its generation is the node's
        self._timers: list[tuple[float, int, str]] = []
        self._due: dict[str, tuple[float, int]] = {}
        self.cores: dict[str, Membership] = {}
        for i, node in enumerate(self.ids):
            self.cores[node] = self._new_core(node, state(i), incarnation=0)
            self._schedule(node)

    def _new_core(self, node: str, state: bytes, *, incarnation: int) -> Membership:
        return Membership(
            node,
            state=state,
            crypto=_SharedVerify(Ed25519Crypto(self.keys[node]), self._verified),
            facts=self._facts(),
            rng=random.Random(self.rng.random()),
            now=self.now,
            incarnation=incarnation,
            profile=self._profile,
            tombstone=self._tombstone,
            lease_of=lease_of,
        )

    # ---- faults ------------------------------------------------------------------------------

    def crash(self, node: str) -> None:
        self.down.add(node)
        self._due.pop(node, None)

    def restart(self, node: str, seeds: Iterable[str]) -> None:
        """Bring a crashed node back as a fresh process with a higher incarnation."""
        self.down.discard(node)
        old = self.cores[node]
        self.cores[node] = self._new_core(
            node, old.me.state or b"", incarnation=int(self.now) + old.incarnation + 1
        )
        self.cores[node].join(seeds, self.now)
        self._collect(node)

    def partition(self, *groups: Iterable[str]) -> None:
        sets = [set(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                self.cut.update(frozenset((x, y)) for x in a for y in b)

    def heal(self) -> None:
        self.cut.clear()

    # ---- running -----------------------------------------------------------------------------

    def join_all(self) -> None:
        """Every node joins through the first (as devices paired through one inviter)."""
        first = self.ids[0]
        for node in self.ids[1:]:
            self.cores[node].join([first], self.now)
            self._collect(node)

    def warm_start(self) -> None:
        """Start from a settled swarm instead of simulating every join: each core knows every
        other as alive (their current records), with nothing left to gossip and no changes to
        report, as in a swarm that has been running for a while. For big runs, where the joins
        themselves (N full-state syncs, N records gossiped to N nodes) would dominate."""
        records = [c.me.alive for n, c in self.cores.items() if n not in self.down]
        for node, core in self.cores.items():
            if node in self.down:
                continue
            core.settle([r for r in records if r is not None], self.now)
            core._queue.clear()  # (private: the benchmarks start with nothing at all to send)
            core.pop_changes()
            self._schedule(node)

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Deliver messages and run timers in time order up to ``until`` (or until ``stop()``).

        Whatever the cores were told from outside since the last run (``update_state``,
        ``leave``, ``set_profile``...) is picked up first: their messages go out, their timers
        are rescheduled.
        """
        for node in self.ids:
            if node not in self.down:
                self._collect(node)
        timers, queue = self._timers, self._queue
        while True:
            while timers and self._due.get(timers[0][2], (0.0, -1))[1] != timers[0][1]:
                heapq.heappop(timers)  # superseded, or the node is down
            due = timers[0][0] if timers else math.inf
            nxt = queue[0][0] if queue else math.inf
            at = min(due, nxt)
            if at > until:
                self.now = max(self.now, until)
                return
            self.now = max(self.now, at)
            if nxt <= due:
                _, _, src, dst, msg = heapq.heappop(queue)
                if dst not in self.down:
                    self.delivered += 1
                    self.cores[dst].receive(src, msg, self.now)
                    self._collect(dst)
            else:
                node = heapq.heappop(timers)[2]
                del self._due[node]
                self.cores[node].tick(self.now)
                self._collect(node)
                if self._due[node][0] <= self.now:
                    raise RuntimeError(f"{node[-8:]}: tick left a timer due at {self.now}")
            if stop is not None and stop():
                return

    def _schedule(self, node: str) -> None:
        if node in self.down:
            self._due.pop(node, None)
            return
        at = self.cores[node].next_deadline()
        current = self._due.get(node)
        if current is not None and current[0] == at:
            return
        self._order += 1
        self._due[node] = (at, self._order)
        heapq.heappush(self._timers, (at, self._order, node))

    def _collect(self, node: str) -> None:
        core = self.cores[node]
        for change in core.pop_changes():
            self.changes.append((node, change))
        rand = self.rng.random
        for dst, msg in core.pop_outbox():
            if self.measure_bytes:
                self.bytes_sent[node] += len(pack(encode_message(msg)))
                self.messages_sent[node] += 1
            if self.trace is not None:
                self.trace.append((self.now, node, dst, msg))
            if dst in self.down or (self.cut and frozenset((node, dst)) in self.cut):
                continue
            if self.drop is not None and self.drop(node, dst, msg):
                continue
            copies = 2 if self.duplicate and rand() < self.duplicate else 1
            for _ in range(copies):
                if self.loss and rand() < self.loss:
                    continue
                self._order += 1
                at = self.now + self.latency + rand() * self.jitter
                heapq.heappush(self._queue, (at, self._order, node, dst, msg))
        self._schedule(node)

    # ---- views -------------------------------------------------------------------------------

    def status(self, observer: str, node: str) -> str | None:
        member = self.cores[observer].members.get(node)
        return member.status if member else None

    def everyone_sees(self, node: str, status: str) -> bool:
        return all(
            self.status(o, node) == status for o in self.ids if o != node and o not in self.down
        )


class DriverPeer:
    """One membership core on the memory network through the real driver (for tests, benches)."""

    def __init__(
        self,
        network: MemoryNetwork,
        node: str,
        key: Ed25519PrivateKey,
        *,
        state: bytes,
        rng: random.Random,
    ) -> None:
        self.id = node
        self.transport: MemoryTransport = network.transport(node)
        self.core = Membership(
            node,
            state=state,
            crypto=Ed25519Crypto(key),
            facts=OpenFacts(),
            rng=rng,
            now=trio.current_time(),
        )
        self.changes: list[Change] = []
        self.driver = MembershipDriver(
            self.transport,
            self.core,
            addresses=lambda peer: ["/memory/" + peer],
            on_changes=self.changes.extend,
        )
        self.scope = trio.CancelScope()

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``scope`` is cancelled (a crash, as far as the others can tell)."""
        with self.scope:
            async with self.transport:
                self.transport.set_handler(self.driver.handle)
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.driver.run)
                    task_status.started()

    def status(self, node: str) -> str | None:
        member = self.core.members.get(node)
        return member.status if member else None
