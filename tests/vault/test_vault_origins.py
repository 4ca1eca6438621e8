"""Issue 12, attacks 3 and 4: a vault that cannot lose data to a wiped store, a restored backup, a
forked log or a forged snapshot.

Each test plays the attack with real stores (SQLite in a temporary directory) or pure replicas,
syncing through ``vault.testing.exchange`` (the wire messages, through msgpack), and checks that
every acknowledged fact is on every device in the end, after reopening from storage too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pyrage
import pytest
import trio

from homeswarm.transports import MemoryNetwork
from homeswarm.vault import (
    SCOPES,
    Changes,
    LocalVault,
    MemoryStore,
    Replica,
    Snapshot,
    SqliteStore,
    Update,
)
from homeswarm.vault._node import restore
from homeswarm.vault._records import MAX_SEQ, Epoch, record_to_wire, short, sign
from homeswarm.vault._sync import Push
from homeswarm.vault.testing import (
    SWARM,
    NetPeer,
    VaultDevice,
    directory_of,
    exchange,
    make_device,
    make_replica,
)

ALL = frozenset(SCOPES)
RELAY: frozenset[str] = frozenset()


class Disk:
    """One device's vault directory, opened and closed as a CLI or a peer would."""

    def __init__(self, root: Path, device: VaultDevice, devices: list[VaultDevice]) -> None:
        self.path = root / device.id[-6:]
        self.device = device
        self.directory = directory_of(devices)
        self.opened = 0
        self.vault: LocalVault | None = None

    def open(self) -> LocalVault:
        self.opened += 1
        seed = hash((self.device.id, self.opened)) & 0xFFFF
        store = SqliteStore(self.path, swarm=SWARM, device=self.device.id)
        self.vault = LocalVault(lambda: make_replica(self.device, self.directory, seed=seed), store)
        return self.vault

    def close(self) -> None:
        assert self.vault is not None
        self.vault.close()
        self.vault = None

    @property
    def replica(self) -> Replica:
        assert self.vault is not None
        return self.vault.replica


def sync(a: LocalVault, b: LocalVault) -> None:
    """One session from ``a`` to ``b``; both store what they took, as the node does."""
    outcome = exchange(a.replica, b.replica)
    a.store.apply(outcome.client)
    b.store.apply(outcome.server)


def facts(vault: LocalVault) -> dict[str, object]:
    return {e.key: json.loads(e.text) for e in vault.items("facts/")}


def disks(tmp_path: Path, n: int) -> list[Disk]:
    rng = random.Random(12)
    devices = [make_device(rng, ALL) for _ in range(n)]
    return [Disk(tmp_path, d, devices) for d in devices]


# ---- a wiped store, a restored backup ----------------------------------------------------------


def test_a_wiped_vault_writes_under_a_new_origin_and_loses_nothing(tmp_path):
    """The issue's scenario: the server stops, the laptop's vault directory is wiped, the laptop
    writes, both start: no fact is lost anywhere (it used to reuse sequence numbers, and the
    server dropped the new fact as a duplicate)."""
    laptop, server = disks(tmp_path, 2)
    a, b = laptop.open(), server.open()
    a.put("facts/one", "1")
    a.put("facts/two", "2")
    sync(a, b)
    old_stream = a.replica.stream
    server.close()
    laptop.close()
    shutil.rmtree(laptop.path)  # the wipe

    a = laptop.open()
    assert facts(a) == {}
    a.put("facts/after-wipe", '"new"')
    assert a.replica.stream != old_stream
    b = server.open()
    sync(a, b)
    sync(b, a)
    want = {"facts/one": 1, "facts/two": 2, "facts/after-wipe": "new"}
    assert facts(a) == facts(b) == want
    # and from storage alone
    laptop.close()
    server.close()
    assert facts(laptop.open()) == facts(server.open()) == want


def test_a_restored_backup_converges_losing_nothing_acknowledged_anywhere(tmp_path):
    laptop, server, phone = disks(tmp_path, 3)
    a, b, c = laptop.open(), server.open(), phone.open()
    a.put("facts/x1", "1")
    sync(a, b)
    sync(a, c)
    laptop.close()
    backup = tmp_path / "backup"
    shutil.copytree(laptop.path, backup)
    a = laptop.open()
    a.put("facts/x2", "2")
    a.put("facts/x3", "3")
    sync(a, b)  # the server has x2 and x3; the phone does not
    laptop.close()
    shutil.rmtree(laptop.path)
    shutil.copytree(backup, laptop.path)  # restored: x2 and x3 are gone from the laptop

    a = laptop.open()
    assert facts(a) == {"facts/x1": 1}
    a.put("facts/y", '"after the restore"')
    sync(a, c)  # the phone gets y first
    sync(a, b)
    sync(b, c)
    sync(c, a)
    want = {"facts/x1": 1, "facts/x2": 2, "facts/x3": 3, "facts/y": "after the restore"}
    for vault in (a, b, c):
        assert facts(vault) == want
    assert a.replica.vectors() == b.replica.vectors() == c.replica.vectors()
    for disk in (laptop, server, phone):
        disk.close()
        assert facts(disk.open()) == want


# ---- forks: two updates for one origin and sequence -----------------------------------------


def fork_of(replica: Replica, device: VaultDevice, update: Update, value: str) -> Update:
    """Another update signed for ``update``'s origin and sequence, with other content."""
    other = make_replica(device, replica.directory, seed=999)
    for record in replica.keyring.records():
        other.keyring.add(record)
    other.put("facts/forked", value)
    made = other.commit_local().added[-1]
    assert isinstance(made, Update)
    moved = dataclasses.replace(made, origin=update.origin, seq=update.seq)
    return dataclasses.replace(moved, signature=sign(device.signing_key, moved.payload()))


def test_two_updates_for_one_sequence_are_both_kept_as_evidence_and_logged(caplog):
    rng = random.Random(3)
    devices = [make_device(rng, ALL) for _ in range(2)]
    directory = directory_of(devices)
    a, b = (make_replica(d, directory, seed=i) for i, d in enumerate(devices))
    a.put("facts/real", '"real"')
    first = a.commit_local()
    update = first.added[-1]
    assert isinstance(update, Update)
    store = MemoryStore()
    changes, refused = b.receive(first.added)
    assert refused == []
    store.apply(changes)
    twin = fork_of(a, devices[0], update, '"twin"')
    assert twin != update
    assert (twin.origin, twin.seq) == (update.origin, update.seq)

    changes, refused = b.receive([twin])
    assert refused == []
    assert changes.evidence == [twin]  # kept, to be stored
    store.apply(changes)
    assert [f.describe() for f in b.take_forks()] == [f"personal/{short(update.origin)}#1"]
    assert b.get("facts/real") is not None
    assert b.get("facts/forked") is not None
    # once only
    changes, _ = b.receive([twin])
    assert not changes
    assert b.take_forks() == []
    # and kept across a restart: stored, restored, applied (not reported again)
    restored = restore(make_replica(devices[1], directory, seed=6), store)
    assert restored.get("facts/real") is not None
    assert restored.get("facts/forked") is not None
    assert twin.signature in restored.evidence
    assert restored.vectors() == b.vectors()


def test_fork_evidence_reaches_the_peers_that_hold_either_side():
    """A stolen key signs a twin of a's update. b took a's side, c the twin's; d took both and
    found the fork. Syncing with d, b and c each get the side they lack and see the fork too,
    both sides readable; vectors alone (equal everywhere) would never show it."""
    rng = random.Random(9)
    devices = [make_device(rng, ALL) for _ in range(4)]
    directory = directory_of(devices)
    a, b, c, d = (make_replica(dev, directory, seed=30 + i) for i, dev in enumerate(devices))
    a.put("facts/real", '"real"')
    first = a.commit_local().added
    update = next(u for u in first if isinstance(u, Update))
    twin = fork_of(a, devices[0], update, '"twin"')
    keys = [k for k in first if not isinstance(k, Update)]
    b.receive(first)
    c.receive([*keys, twin])
    d.receive(first)
    d.receive([twin])
    assert d.take_forks()
    assert b.vectors() == c.vectors() == d.vectors()
    exchange(b, d)  # b asks, d answers
    exchange(d, c)  # d asks, and pushes what c lacks
    for r in (b, c):
        assert [f.describe() for f in r.take_forks()] == [f"personal/{short(update.origin)}#1"]
        assert r.get("facts/real") is not None
        assert r.get("facts/forked") is not None
        assert r.status()["forks"] == 1
    # once known everywhere, nothing more is sent
    assert d.evidence_for(b.vectors(), set(b.evidence_ids())) == []
    assert b.evidence_ids() == c.evidence_ids() == d.evidence_ids()


def test_a_fork_of_its_own_log_makes_a_device_write_its_side_again():
    """A copy of the laptop's process (a cloned VM) wrote under the same stream: when the laptop
    sees the other side it keeps it and writes its own side again under a new stream, so a
    third device that took the other side gets the laptop's too."""
    rng = random.Random(4)
    devices = [make_device(rng, ALL) for _ in range(3)]
    directory = directory_of(devices)
    a, b, c = (make_replica(d, directory, seed=i) for i, d in enumerate(devices))
    a.put("facts/base", "0")
    exchange(a, b)
    exchange(a, c)
    a.put("facts/mine", '"mine"')
    mine = a.commit_local().added[-1]
    assert isinstance(mine, Update)
    clone = fork_of(a, devices[0], mine, '"the clone"')
    c.receive([clone])  # the phone took the clone's side
    old = a.stream
    changes, refused = a.receive([clone])  # and the laptop hears of it
    assert refused == []
    assert changes.evidence == [clone]
    assert a.stream != old
    assert [u.origin for u in changes.added if isinstance(u, Update)] == [a.stream]
    exchange(a, b)
    exchange(b, c)
    exchange(c, b)
    for r in (a, b, c):
        assert r.get("facts/mine") is not None, r.device
        assert r.get("facts/forked") is not None, r.device


# ---- snapshots that cannot erase ---------------------------------------------------------------


def forged_snapshot(
    author: Replica, device: VaultDevice, victim: str, scope: str = "personal"
) -> Snapshot:
    """An empty snapshot by ``author`` claiming ``victim``'s stream up to 10^6."""
    epoch = author._write_epoch(scope, Changes())
    recipient = author.keyring.recipient(epoch.key)
    assert recipient is not None
    empty = pyrage.encrypt(b"\x00\x00", [recipient])
    covers = tuple(sorted({victim: 10**6, author.stream: 1}.items()))
    assert MAX_SEQ > 10**6
    unsigned = Snapshot(
        SWARM, scope, author.device, epoch.number, epoch.creator, covers, empty, bytes(64)
    )
    return dataclasses.replace(unsigned, signature=sign(device.signing_key, unsigned.payload()))


def test_a_forged_empty_snapshot_erases_nothing_and_new_writes_still_arrive():
    rng = random.Random(5)
    devices = [make_device(rng, s) for s in (ALL, ALL, ALL, RELAY)]
    directory = directory_of(devices)
    a, thief, b, relay = (make_replica(d, directory, seed=i) for i, d in enumerate(devices))
    for i in range(5):
        a.put(f"facts/f{i}", str(i))
    a.commit_local()
    thief.put("facts/thief", "1")
    thief.commit_local()
    for r in (thief, b, relay):
        exchange(a, r)
        exchange(thief, r)
    forged = forged_snapshot(thief, devices[1], a.stream)

    # a reader proves the snapshot lacks what it claims, and refuses it
    changes, refused = b.receive([forged])
    assert [r.reason for r in refused] == [
        "it lacks updates it claims to cover (it would erase them): refused"
    ]
    assert not changes
    # a relay cannot read: it takes it but drops none of the updates it covers
    changes, refused = relay.receive([forged])
    assert refused == []
    assert changes.dropped_updates == []
    assert relay.status()["scopes"]["personal"]["kept"] == 2  # (a's group commit, the thief's)
    # the victim refuses it too; what it hears of the relay's claim on its stream makes it
    # write under a new one, so its new writes still reach the relay and, through it, others
    old = a.stream
    _, refused = a.receive([forged])
    assert len(refused) == 1
    exchange(a, relay)
    assert a.stream != old
    a.put("facts/later", '"later"')
    a.commit_local()
    exchange(a, relay)
    exchange(relay, b)  # b hears of a only through the relay
    assert {e.key for e in b.items("facts/")} >= {f"facts/f{i}" for i in range(5)} | {"facts/later"}
    assert a.stream in relay.vectors()["personal"]


def test_a_forged_snapshot_is_refused_when_the_updates_it_covers_build_on_compacted_content():
    """What the vault scenario's seed 190 found (with five collections drawn from): the reader's
    log holds only updates that build on content it had folded into a snapshot. Applied to the
    forged empty document they cannot integrate (what they refer to is not there), so they change
    nothing visible; they stay pending, which must count as "the snapshot lacks them"."""
    rng = random.Random(7)
    devices = [make_device(rng, s) for s in (ALL, ALL, ALL)]
    directory = directory_of(devices)
    a, thief, b = (make_replica(d, directory, seed=i) for i, d in enumerate(devices))
    for i in range(6):
        a.put(f"facts/f{i}", str(i))
        a.commit_local()
    exchange(a, b)
    exchange(a, thief)
    b.receive(a.compact("personal").added)  # b folds a's log into a snapshot
    for i in range(6):  # then edits of the same entries: updates that build on folded items
        a.put(f"facts/f{i}", str(10 + i))
        a.commit_local()
    exchange(a, b)
    b.put("facts/own", '"b\'s own"')  # a stream the thief never heard of: the forgery cannot
    b.commit_local()  # claim b's whole document, only the updates it covers
    assert b.log("personal", a.stream)  # b's log: only the updates after the snapshot
    forged = forged_snapshot(thief, devices[1], a.stream)
    changes, refused = b.receive([forged])
    assert [r.reason for r in refused] == [
        "it lacks updates it claims to cover (it would erase them): refused"
    ]
    assert not changes
    assert {e.key: e.text for e in b.items("facts/") if e.key != "facts/own"} == {
        f"facts/f{i}": str(10 + i) for i in range(6)
    }


def test_an_honest_snapshot_still_drops_what_it_provably_holds():
    rng = random.Random(6)
    devices = [make_device(rng, s) for s in (ALL, ALL, RELAY)]
    directory = directory_of(devices)
    a, b, relay = (make_replica(d, directory, seed=i) for i, d in enumerate(devices))
    for i in range(30):
        a.put(f"facts/f{i}", str(i))
        a.commit_local()
    exchange(a, b)
    exchange(a, relay)
    compacted = a.compact("personal")
    assert compacted.dropped_updates
    changes, refused = b.receive(compacted.added)
    assert refused == []
    assert changes.dropped_updates == [("personal", a.stream, 1, 30)]
    assert b.log("personal", a.stream) == []
    # a relay keeps them: it cannot check
    changes, refused = relay.receive(compacted.added)
    assert refused == []
    assert changes.dropped_updates == []


# ---- the driver logs a fork once -------------------------------------------------------------


async def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 (virtual time: a poll costs nothing)
            await trio.sleep(0.1)


async def test_the_node_logs_a_fork_once(autojump_clock, caplog):
    rng = random.Random(7)
    devices = [make_device(rng, ALL) for _ in range(2)]
    directory = directory_of(devices)
    network = MemoryNetwork(random.Random(1))
    a, b = (NetPeer(network, d, directory, seed=i) for i, d in enumerate(devices))
    a.alive, b.alive = {b.id}, {a.id}
    async with trio.open_nursery() as nursery:
        await nursery.start(a.serve)
        await nursery.start(b.serve)
        await a.node.put("facts/x", '"x"')
        await wait_for(lambda: b.node.get("facts/x") is not None)
        update = a.node.replica.log("personal", a.node.replica.stream)[-1]
        twin = fork_of(a.node.replica, devices[0], update, '"twin"')
        with caplog.at_level(logging.WARNING, logger="vault.node"):
            conn = await b.transport.dial(a.id, [f"/memory/{a.id}"])
            for _ in range(2):
                await conn.request(Push(SWARM, [record_to_wire(twin)]).to_wire(), timeout=5)
        forks = [r for r in caplog.records if "both kept as evidence" in r.getMessage()]
        assert len(forks) == 1
        assert a.node.get("facts/forked") is not None
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("scope", ["personal"])
def test_status_counts_forks_and_kept_updates(scope):
    rng = random.Random(8)
    devices = [make_device(rng, ALL) for _ in range(2)]
    directory = directory_of(devices)
    a, b = (make_replica(d, directory, seed=i) for i, d in enumerate(devices))
    a.put("facts/x", "1", scope)
    first = a.commit_local()
    b.receive(first.added)
    update = first.added[-1]
    assert isinstance(update, Update)
    b.receive([fork_of(a, devices[0], update, "2")])
    assert b.status()["forks"] == 1


# ---- an update applied after the updates that build on it ---------------------------------------


def test_an_update_held_for_its_key_and_applied_after_its_successors_is_not_lost():
    """The wiped-store sweep failure (``swarm simulate vault --peers 4 --seed 115`` with d1's
    store wiped at the end of the schedule): a fresh store writes under an epoch of its own, then
    learns the swarm's and writes on under it. A reader that holds only the swarm's key applies
    the later update first and the first one when its key comes; Yrs then left the document
    short of both for good, and the replicas never agreed."""
    rng = random.Random(8)
    devices = [make_device(rng, ALL) for _ in range(3)]
    directory = directory_of(devices)
    a, x, r = (make_replica(d, directory, seed=20 + i) for i, d in enumerate(devices))
    if x.stream > a.stream:  # the fresh store's own epoch must rank below the swarm's
        a, x = x, a
    a.put("facts/old", '"a"')
    a.commit_local()
    exchange(a, r)
    x.put("facts/k", '"first"')
    first = x.commit_local()
    own_keys = [k for k in first.added if not isinstance(k, Update)]
    (one,) = [u for u in first.added if isinstance(u, Update)]
    exchange(a, x)  # x learns the swarm's epoch, which ranks above its own
    exchange(x, a)
    a.put("facts/k", '"by a"')  # on top of x's first write
    (by_a,) = [u for u in a.commit_local().added if isinstance(u, Update)]
    x.put("facts/k0", '"second"')
    (two,) = [u for u in x.commit_local().added if isinstance(u, Update)]
    assert two.epoch_key != one.epoch_key == (one.scope, one.epoch, x.stream)
    epochs = [k for k in own_keys if isinstance(k, Epoch)]
    seals = [k for k in own_keys if not isinstance(k, Epoch)]
    # x's first waits for its key; what builds on it applies (Yrs keeps it aside)
    _changes, refused = r.receive([*epochs, by_a, one, two])
    assert refused == []
    assert r.status()["scopes"]["personal"]["unapplied"] == 1
    r.receive(seals)  # the key comes: the first is applied after its successor
    assert r.status()["scopes"]["personal"]["unapplied"] == 0
    exchange(x, a)
    assert a.content("personal") == x.content("personal")
    assert r.content("personal") == a.content("personal")
    assert set(r.content("personal")) == {"facts/old", "facts/k", "facts/k0"}
