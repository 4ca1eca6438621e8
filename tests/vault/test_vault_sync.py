"""Vault nodes through the real trio driver on the memory network, in virtual time: push on
write, relays, partitions, crashes, group commit, and a member that sends garbage.

No membership here: each test says who a node believes alive (``NetPeer.alive``).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from homeswarm.transports import ConnectionClosed, Link, MemoryNetwork
from homeswarm.vault import SCOPES, NodeSettings, ScopeNotAllowed, StorageFailure
from homeswarm.vault._records import record_to_wire
from homeswarm.vault.testing import NetPeer, directory_of, make_device

LINK = Link(latency=0.005, jitter=0.002)


async def until(check: Callable[[], bool], *, within: float, what: str) -> float:
    start = trio.current_time()
    with trio.move_on_after(within):
        while True:
            if check():
                break
            await trio.sleep(0.01)
    assert check(), f"not within {within} s: {what}"
    return trio.current_time() - start


@asynccontextmanager
async def vaults(
    scopes: list[frozenset[str]], *, seed: int = 0, settings: NodeSettings | None = None
) -> AsyncIterator[tuple[MemoryNetwork, list[NetPeer], trio.Nursery]]:
    rng = random.Random(seed)
    network = MemoryNetwork(rng, default_link=LINK)
    devices = [make_device(rng, s) for s in scopes]
    directory = directory_of(devices)
    peers = [
        NetPeer(network, d, directory, settings=settings, seed=i) for i, d in enumerate(devices)
    ]
    for p in peers:
        p.alive = {q.id for q in peers if q is not p}
    async with trio.open_nursery() as nursery:
        for p in peers:
            await nursery.start(p.serve)
        yield network, peers, nursery
        nursery.cancel_scope.cancel()


ALL = frozenset(SCOPES)


def text(value: object) -> str:
    return json.dumps(value)


def value_at(peer: NetPeer, key: str) -> object:
    entry = peer.node.get(key)
    return None if entry is None else json.loads(entry.text)


async def test_a_write_is_everywhere_within_a_second(autojump_clock):
    async with vaults([ALL, ALL, frozenset({"public", "personal"})]) as (_, peers, _n):
        a, b, c = peers
        t0 = trio.current_time()
        await a.node.put("facts/home", text("Lisbon"))
        took = await until(
            lambda: value_at(b, "facts/home") == value_at(c, "facts/home") == "Lisbon",
            within=1.0,
            what="the fact on b and c",
        )
        assert took < 0.2  # pushed at once, not left for the next pull (5 s)
        # a private fact reaches b, and c holds it without being able to read it
        await a.node.put("facts/pin", text("1234"), "private")
        await until(lambda: value_at(b, "facts/pin") == "1234", within=1.0, what="private on b")
        await until(
            lambda: c.node.replica.vectors() == a.node.replica.vectors(),
            within=1.0,
            what="c to hold the private ciphertext",
        )
        assert value_at(c, "facts/pin") is None
        assert c.node.replica.status()["scopes"]["private"]["readable"] is False
        assert trio.current_time() - t0 < 2.0


async def test_a_relay_forwards_what_it_cannot_read(autojump_clock):
    async with vaults([ALL, frozenset(), ALL]) as (network, peers, _n):
        phone, relay, server = peers
        # phone and server cannot reach each other; both reach the relay
        network.set_link(phone.id, server.id, Link(loss=1.0))
        phone.alive = {relay.id}
        server.alive = {relay.id}
        await phone.node.put("memories/trip", text({"where": "Porto", "days": 3}))
        await until(
            lambda: value_at(server, "memories/trip") == {"where": "Porto", "days": 3},
            within=1.0,
            what="the memory on the server, through the relay",
        )
        assert value_at(relay, "memories/trip") is None
        assert relay.node.replica.vectors() == phone.node.replica.vectors()
        with pytest.raises(ScopeNotAllowed, match="blind relay"):
            await relay.node.put("facts/x", text(1))


async def test_partitioned_writers_converge_after_healing(autojump_clock):
    async with vaults([ALL, ALL, ALL, ALL]) as (network, peers, _n):
        left, right = peers[:2], peers[2:]
        network.partition([p.id for p in left], [p.id for p in right])
        for i, p in enumerate(peers):
            await p.node.put("facts/shared", text(f"from {i}"))
            await p.node.put(f"facts/own-{i}", text(i))
        await trio.sleep(10.0)  # sessions across the cut fail meanwhile
        assert value_at(peers[0], "facts/own-2") is None
        network.heal()
        took = await until(
            lambda: len({json.dumps(p.node.replica.vectors(), sort_keys=True) for p in peers}) == 1,
            within=15.0,
            what="every vector equal after healing",
        )
        assert took <= 15.0
        contents = [p.node.replica.content("personal") for p in peers]
        assert all(c == contents[0] for c in contents)
        assert {k for k in contents[0] if k.startswith("facts/own-")} == {
            f"facts/own-{i}" for i in range(4)
        }


async def test_a_crashed_writer_keeps_every_acknowledged_write(autojump_clock):
    async with vaults([ALL, ALL]) as (_, peers, nursery):
        a, b = peers
        acked: list[int] = []

        async def writer(i: int) -> None:
            await a.node.put(f"facts/n{i}", text(i))
            acked.append(i)

        async with trio.open_nursery() as writers:
            for i in range(200):
                writers.start_soon(writer, i)
        assert sorted(acked) == list(range(200))
        assert a.node.commits < 20  # grouped: far fewer transactions than writes
        # more writes, and a crash while some are in flight
        for i in range(200, 260):
            nursery.start_soon(writer, i)
        await trio.lowlevel.checkpoint()
        a.crash()
        again = a.restarted(seed=99)
        await nursery.start(again.serve)
        for i in acked:
            assert value_at(again, f"facts/n{i}") == i
        # what b wrote meanwhile reaches the restarted node, and the other way round
        await b.node.put("facts/from-b", text("b"))
        again.node.sync_soon(b.id)
        await until(
            lambda: (
                value_at(again, "facts/from-b") == "b"
                and all(value_at(b, f"facts/n{i}") == i for i in acked)
            ),
            within=10.0,
            what="both sides to converge after the restart",
        )


async def test_garbage_from_a_member_is_refused_and_sync_goes_on(autojump_clock, caplog):
    async with vaults([ALL, ALL, ALL]) as (_, peers, _n):
        a, b, c = peers
        await a.node.put("facts/ok", text(1))
        await until(lambda: value_at(c, "facts/ok") == 1, within=1.0, what="first fact")
        update = a.node.replica.log("personal", a.node.replica.stream)[0]
        forged = [
            ["u", [1, "other-swarm", *record_to_wire(update)[1][2:]]],
            ["u", "not a record"],
            ["z", []],
        ]
        conn = await b.transport.dial(c.id, [f"/memory/{c.id}"])
        reply = await conn.request({"op": "vault.push", "v": 1, "swarm": "swtest", "recs": forged})
        assert reply["refused"] == 3
        assert not conn.closed  # refusing records is not a protocol violation
        assert "refused 3 record(s)" in caplog.text
        # a malformed message (not records: the envelope) closes only that connection
        with pytest.raises(ConnectionClosed):
            await conn.request({"op": "vault.push", "v": 1, "swarm": "swtest", "recs": 5})
        await b.node.put("facts/after", text(2))
        await until(lambda: value_at(c, "facts/after") == 2, within=1.0, what="sync goes on")


async def test_periodic_pull_reaches_a_peer_nobody_pushed_to(autojump_clock):
    settings = NodeSettings(pull_period=2.0)
    async with vaults([ALL, ALL], settings=settings) as (_, peers, _n):
        a, b = peers
        a.alive = set()  # a does not know b is up: no push
        await a.node.put("facts/quiet", text("q"))
        await trio.sleep(0.5)
        assert value_at(b, "facts/quiet") is None
        took = await until(lambda: value_at(b, "facts/quiet") == "q", within=5.0, what="pull")
        assert took <= 3.0  # within one (jittered) pull period of b


async def test_a_failing_store_loses_only_what_it_did_not_acknowledge(autojump_clock):
    async with vaults([ALL, ALL]) as (_, peers, _n):
        a, b = peers
        await a.node.put("facts/kept", text(1))
        a.store.fail_next = True
        results: dict[str, object] = {}

        async def write(key: str) -> None:
            try:
                await a.node.put(key, text(key))
                results[key] = "acked"
            except StorageFailure as exc:
                results[key] = str(exc)

        async with trio.open_nursery() as writers:
            for key in ("facts/lost-1", "facts/lost-2"):
                writers.start_soon(write, key)
        assert results == {k: "the vault store failed (simulated)" for k in results}
        assert len(results) == 2
        assert value_at(a, "facts/lost-1") is None  # the replica went back to what is stored
        assert value_at(a, "facts/kept") == 1
        await a.node.put("facts/after", text(2))  # and writes go on
        await until(lambda: value_at(b, "facts/after") == 2, within=1.0, what="sync after")
        await trio.sleep(1.0)
        assert value_at(b, "facts/lost-1") is None
        assert a.node.replica.vectors() == b.node.replica.vectors()


@pytest.mark.parametrize("seed", range(8))
async def test_no_acknowledged_write_is_lost_to_partitions_and_crashes(autojump_clock, seed):
    """Every device writes (a key of its own each time) through partitions and crashes; after
    healing every replica holds every acknowledged write."""
    rng = random.Random(seed)
    settings = NodeSettings(pull_period=2.0)
    async with vaults([ALL] * 4, seed=seed, settings=settings) as (network, peers, nursery):
        acked: dict[str, int] = {}

        async def write(peer: NetPeer, key: str, n: int) -> None:
            with trio.move_on_after(5.0):  # a crash takes it down with its node
                await peer.node.put(key, text(n))
                acked[key] = n

        for step in range(40):
            roll = rng.random()
            if roll < 0.1:
                network.partition(*(ids for ids in _split(rng, [p.id for p in peers]) if ids))
            elif roll < 0.2:
                network.heal()
            elif roll < 0.3:
                i = rng.randrange(4)
                peers[i].crash()
                peers[i] = peers[i].restarted(seed=1000 + step)
                await nursery.start(peers[i].serve)
            else:
                p = peers[rng.randrange(4)]
                nursery.start_soon(write, p, f"facts/s{step}", step)
            await trio.sleep(rng.uniform(0.0, 1.0))
        network.heal()
        for p in peers:
            for q in peers:
                if p is not q:
                    p.node.sync_soon(q.id)
        await until(
            lambda: (
                all(value_at(p, k) == n for p in peers for k, n in acked.items())
                and len({json.dumps(p.node.replica.vectors(), sort_keys=True) for p in peers}) == 1
            ),
            within=30.0,
            what="every acknowledged write everywhere",
        )
        assert len(acked) >= 10


def _split(rng: random.Random, ids: list[str]) -> list[list[str]]:
    groups: list[list[str]] = [[], []]
    for i in ids:
        groups[rng.randrange(2)].append(i)
    return groups


async def test_a_late_device_catches_up_from_a_snapshot_the_node_made(autojump_clock):
    settings = NodeSettings(compact_min_bytes=8 * 1024)
    async with vaults([ALL, ALL, ALL], settings=settings) as (_, peers, _n):
        a, b, late = peers
        a.alive, b.alive, late.alive = {b.id}, {a.id}, set()
        for i in range(60):
            await a.node.put(f"facts/f{i}", text("x" * 200 + str(i)))
        await until(lambda: value_at(b, "facts/f59") is not None, within=2.0, what="b")
        snapshots = a.node.replica.snapshots("personal")
        assert snapshots  # compacted on its own: the log outweighed the snapshot
        assert len(a.node.replica.log("personal", a.node.replica.stream)) < 60
        late.alive = {a.id}
        late.node.sync_soon(a.id)
        await until(
            lambda: late.node.replica.content("personal") == a.node.replica.content("personal"),
            within=2.0,
            what="the late device to catch up",
        )
        assert late.node.replica.snapshots("personal")  # it got the snapshot, not the history
