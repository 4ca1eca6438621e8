"""Convergence of the vault, property-tested: 3-5 replicas (some may not read every scope, one
may be a blind relay), random writes and deletes, and records delivered in random order,
duplicated, lost (sessions cut short) and across partitions; compactions and crashes (a
replica rebuilt from its store). Invariants:

- always: two replicas that may read a scope, hold the same vector for it and have applied
  everything they hold, have identical content for it;
- once the partitions heal and everything is delivered: every replica holds every record, and
  every replica that may read a scope has identical content for it; every acknowledged write
  that nothing later overwrote or deleted is there with its value.
"""

from __future__ import annotations

import json
import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from homeswarm.vault import SCOPES
from homeswarm.vault._store import MemoryStore
from homeswarm.vault.testing import directory_of, exchange, make_device, make_replica

KEYS = [f"{c}/k{i}" for c in ("facts", "memories") for i in range(3)]
SCOPE_SETS = [
    frozenset(SCOPES),
    frozenset(SCOPES),
    frozenset({"public", "personal"}),
    frozenset({"public"}),
    frozenset(),  # a blind relay
]


class VaultMachine(RuleBasedStateMachine):
    @initialize(n=st.integers(3, 5), seed=st.integers(0, 2**32 - 1), data=st.data())
    def setup(self, n: int, seed: int, data: st.DataObject) -> None:
        rng = random.Random(seed)
        scopes = [frozenset(SCOPES)] + [
            data.draw(st.sampled_from(SCOPE_SETS), label=f"scopes {i}") for i in range(1, n)
        ]
        self.devices = [make_device(rng, s) for s in scopes]
        self.directory = directory_of(self.devices)
        self.stores = [MemoryStore() for _ in self.devices]
        self.replicas_ = [
            make_replica(d, self.directory, seed=i) for i, d in enumerate(self.devices)
        ]
        self.groups = [0] * n  # partition group of each replica
        self.restarts = 0
        self.writes: dict[str, list[tuple[int, str | None]]] = {}  # key -> [(replica, text)]
        self.step = 0

    # ---- helpers -------------------------------------------------------------------------------

    def persist(self, i: int, changes) -> None:
        self.stores[i].apply(changes)

    def can_talk(self, i: int, j: int) -> bool:
        return i != j and self.groups[i] == self.groups[j]

    def talk(self, i: int, j: int, budget: int = 512 * 1024) -> None:
        outcome = exchange(self.replicas_[i], self.replicas_[j], budget=budget)
        self.persist(i, outcome.client)
        self.persist(j, outcome.server)
        # honest replicas never refuse each other's records but for keys still on their way
        for r in outcome.rejections:
            assert "unknown epoch" in r.reason or "does not hold" in r.reason, r

    # ---- rules ---------------------------------------------------------------------------------

    @rule(
        i=st.integers(0, 4), k=st.sampled_from(KEYS), v=st.integers(0, 9), s=st.sampled_from(SCOPES)
    )
    def write(self, i: int, k: str, v: int, s: str) -> None:
        i %= len(self.replicas_)
        r = self.replicas_[i]
        if s not in r.readable:
            return
        self.step += 1
        text = json.dumps(f"{v}@{i}.{self.step}")
        r.put(k, text, s)
        self.persist(i, r.commit_local())
        self.writes.setdefault(k, []).append((i, text))

    @rule(i=st.integers(0, 4), k=st.sampled_from(KEYS))
    def delete(self, i: int, k: str) -> None:
        i %= len(self.replicas_)
        r = self.replicas_[i]
        if r.delete(k):
            self.persist(i, r.commit_local())
            self.writes.setdefault(k, []).append((i, None))

    @rule(i=st.integers(0, 4), j=st.integers(0, 4))
    def sync(self, i: int, j: int) -> None:
        i, j = i % len(self.replicas_), j % len(self.replicas_)
        if self.can_talk(i, j):
            self.talk(i, j)

    @rule(i=st.integers(0, 4), j=st.integers(0, 4), budget=st.integers(1, 3000))
    def sync_in_small_batches(self, i: int, j: int, budget: int) -> None:
        i, j = i % len(self.replicas_), j % len(self.replicas_)
        if self.can_talk(i, j):
            self.talk(i, j, budget=budget)

    @rule(i=st.integers(0, 4), j=st.integers(0, 4), data=st.data())
    def deliver_some(self, i: int, j: int, data: st.DataObject) -> None:
        """Push a random handful of i's records to j, in random order, maybe twice: lost,
        reordered and duplicated messages. j refuses gaps; nothing it takes breaks it."""
        i, j = i % len(self.replicas_), j % len(self.replicas_)
        if not self.can_talk(i, j):
            return
        src = self.replicas_[i]
        pool = (
            src.keyring.records()
            + [u for s in SCOPES for o in src.vectors().get(s, {}) for u in src.log(s, o)]
            + [sn for s in SCOPES for sn in src.snapshots(s)]
        )
        if not pool:
            return
        picked = data.draw(st.lists(st.sampled_from(pool), max_size=6), label="records")
        for record in picked:  # one by one: the receiver's own ordering does not help
            changes, _ = self.replicas_[j].receive([record])
            self.persist(j, changes)

    @rule(cut=st.lists(st.integers(0, 1), min_size=5, max_size=5))
    def partition(self, cut: list[int]) -> None:
        self.groups = cut[: len(self.replicas_)]

    @rule()
    def heal(self) -> None:
        self.groups = [0] * len(self.replicas_)

    @rule(i=st.integers(0, 4), s=st.sampled_from(SCOPES))
    def compact(self, i: int, s: str) -> None:
        i %= len(self.replicas_)
        self.persist(i, self.replicas_[i].compact(s))

    @rule(i=st.integers(0, 4))
    def crash_and_restart(self, i: int) -> None:
        i %= len(self.replicas_)
        self.restarts += 1
        fresh = make_replica(self.devices[i], self.directory, seed=1000 + self.restarts)
        stored = self.stores[i].load()
        assert fresh.restore(stored.keys, stored.snapshots, stored.updates) == []
        old = self.replicas_[i]
        assert fresh.vectors() == old.vectors()
        for s in fresh.readable:
            if not old.status()["scopes"][s]["unapplied"]:
                assert fresh.content(s) == old.content(s)
        self.replicas_[i] = fresh

    # ---- invariants ----------------------------------------------------------------------------

    @invariant()
    def same_vector_same_content(self) -> None:
        if not hasattr(self, "replicas_"):
            return
        for s in SCOPES:
            seen: dict[str, dict[str, str]] = {}
            for r in self.replicas_:
                if s not in r.readable or r.status()["scopes"][s]["unapplied"]:
                    continue
                key = json.dumps(r.vectors().get(s, {}), sort_keys=True)
                content = r.content(s)
                assert seen.setdefault(key, content) == content

    def teardown(self) -> None:
        if not hasattr(self, "replicas_"):
            return
        self.heal()
        n = len(self.replicas_)
        for _ in range(n + 1):  # rounds of all-pairs sessions: enough for everything to spread
            for i in range(n):
                for j in range(n):
                    if i != j:
                        self.talk(i, j)
        vectors = [r.vectors() for r in self.replicas_]
        assert all(v == vectors[0] for v in vectors)
        digests = {r.keyring.digest() for r in self.replicas_}
        assert len(digests) == 1
        for s in SCOPES:
            readers = [r for r in self.replicas_ if s in r.readable]
            for r in readers:
                assert r.status()["scopes"][s]["unapplied"] == 0
            contents = [r.content(s) for r in readers]
            assert all(c == contents[0] for c in contents), s
        final = self.replicas_[0]  # reads every scope
        for key, history in self.writes.items():
            _, text = history[-1]
            if len(history) == 1 and text is not None:
                entry = final.get(key)
                assert entry is not None, key
                assert entry.text == text, key


VaultMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestVaultConvergence = VaultMachine.TestCase
