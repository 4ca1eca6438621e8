"""Test kit for the membership core: devices with real keys, and a discrete-event network.

``CoreNet`` moves messages between pure ``Membership`` cores directly (no transport, no trio) with
per-message latency, loss, partitions and crashes, in virtual time. It is what the property tests
and the long benchmark runs use; ``tests/test_membership_driver.py`` runs the same cores over the
memory transport through the real driver.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from transports import peer_id_from_public_key

from ._driver import Ed25519Crypto
from ._home import public_bytes
from ._membership import NORMAL, Change, Membership, Message, Profile, _pack, encode_message


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


def device_keys(n: int, rng: random.Random) -> list[tuple[str, Ed25519PrivateKey]]:
    """``n`` Ed25519 keys drawn from ``rng`` (deterministic), with their peer ids, sorted by id."""
    out = []
    for _ in range(n):
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        out.append((peer_id_from_public_key(public_bytes(key)), key))
    return sorted(out, key=lambda pair: pair[0])


@dataclass(order=True)
class _InFlight:
    at: float
    order: int
    src: str = field(compare=False)
    dst: str = field(compare=False)
    msg: Message = field(compare=False)


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
        profile: Profile = NORMAL,
        state: Callable[[int], bytes] = lambda i: b"",
        facts: Callable[[], OpenFacts] = OpenFacts,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.latency, self.jitter, self.loss = latency, jitter, loss
        self.keys = dict(device_keys(n, self.rng))
        self.ids = sorted(self.keys)
        self.down: set[str] = set()
        self.cut: set[frozenset[str]] = set()
        self.changes: list[tuple[str, Change]] = []
        self.delivered = 0
        self.bytes_sent: dict[str, int] = dict.fromkeys(self.ids, 0)
        self.measure_bytes = False
        self._queue: list[_InFlight] = []
        self._order = 0
        self._profile = profile
        self._facts = facts
        self.cores: dict[str, Membership] = {}
        for i, node in enumerate(self.ids):
            self.cores[node] = self._new_core(node, state(i), incarnation=0)

    def _new_core(self, node: str, state: bytes, *, incarnation: int) -> Membership:
        return Membership(
            node,
            state=state,
            crypto=Ed25519Crypto(self.keys[node]),
            facts=self._facts(),
            rng=random.Random(self.rng.random()),
            now=self.now,
            incarnation=incarnation,
            profile=self._profile,
        )

    # ---- faults ------------------------------------------------------------------------------

    def crash(self, node: str) -> None:
        self.down.add(node)

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

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        while True:
            due = min(
                (c.next_deadline() for n, c in self.cores.items() if n not in self.down),
                default=float("inf"),
            )
            nxt = self._queue[0].at if self._queue else float("inf")
            at = min(due, nxt)
            if at > until:
                self.now = until
                return
            self.now = max(self.now, at)
            if nxt <= due:
                item = heapq.heappop(self._queue)
                if item.dst not in self.down:
                    self.delivered += 1
                    self.cores[item.dst].receive(item.src, item.msg, self.now)
                    self._collect(item.dst)
            else:
                for node, core in self.cores.items():
                    if node not in self.down and core.next_deadline() <= self.now:
                        core.tick(self.now)
                        self._collect(node)
            if stop is not None and stop():
                return

    def _collect(self, node: str) -> None:
        core = self.cores[node]
        for change in core.pop_changes():
            self.changes.append((node, change))
        for dst, msg in core.pop_outbox():
            if self.measure_bytes:
                self.bytes_sent[node] += len(_pack(encode_message(msg)))
            if dst in self.down or frozenset((node, dst)) in self.cut:
                continue
            if self.loss and self.rng.random() < self.loss:
                continue
            delay = self.latency + self.rng.uniform(0, self.jitter)
            self._order += 1
            heapq.heappush(self._queue, _InFlight(self.now + delay, self._order, node, dst, msg))

    # ---- views -------------------------------------------------------------------------------

    def status(self, observer: str, node: str) -> str | None:
        member = self.cores[observer].members.get(node)
        return member.status if member else None

    def everyone_sees(self, node: str, status: str) -> bool:
        return all(
            self.status(o, node) == status for o in self.ids if o != node and o not in self.down
        )
