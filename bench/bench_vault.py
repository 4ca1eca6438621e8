"""Vault benchmarks: durable put throughput and its overhead, catch-up, convergence after healing.

    python bench/bench_vault.py [--quick] [--json]

1. Put throughput. N facts written through ``VaultNode`` into SQLite (WAL, synchronous=FULL) in
   a temporary directory, by many concurrent writers (each ``put`` returns once its group commit
   is durable), and, for reference, by one writer waiting for each ack. In the same run, the same
   entries through raw pycrdt (one map write and its update per entry) plus raw age encryption of
   each update, with no storage: the ratio of the two times is our overhead.
2. Catch-up. A device holding 10,000 facts and a fresh device with nothing, each on its own
   libp2p transport on loopback: the time for one sync session, and the bytes of the messages
   (frames, both ways) against the size of one encrypted snapshot of the same content. The
   holder's log as its node left it after group commits, after one commit per fact, and after
   compacting everything.
3. Convergence. 5 devices on the memory network (5 ms links) under trio's MockClock: split in
   two, everyone writes, heal after 20-40 s; virtual seconds until every replica holds the same,
   per seed: when each device is told the others are alive again (as membership tells the vault
   service), and by the periodic pulls alone.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pycrdt
import pyrage
import trio
import trio.testing
from cryptography.hazmat.primitives import serialization

from homeswarm.transports import Link, MemoryNetwork
from homeswarm.vault import SCOPES, MemoryStore, SqliteStore, Store, TransportLinks, VaultNode
from homeswarm.vault._sync import PREFIX
from homeswarm.vault.testing import SWARM, NetPeer, directory_of, make_device, make_replica

ALL = frozenset(SCOPES)
PUT_TARGET = 5000.0  # entries/s
OVERHEAD_TARGET = 3.0
CATCHUP_TARGET_S = 2.0
CATCHUP_BYTES_TARGET = 1.5  # times one encrypted snapshot


def fact(i: int) -> tuple[str, str]:
    return f"facts/fact-{i:06}", json.dumps({"n": i, "text": f"the fact number {i}"})


# ---- 1. put throughput -----------------------------------------------------------------------


def raw_baseline(n: int) -> float:
    """Seconds for n entries through pycrdt and age alone (no signature, no storage)."""
    recipient = pyrage.x25519.Identity.generate().to_public()
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    facts = doc.get("facts", type=pycrdt.Map)
    start = time.perf_counter()
    for i in range(n):
        key, text = fact(i)
        before = doc.get_state()
        facts[key] = text
        pyrage.encrypt(doc.get_update(before), [recipient])
    return time.perf_counter() - start


async def _puts(n: int, writers: int, where: Path) -> tuple[float, int, int]:
    device = make_device(random.Random(1), ALL)
    directory = directory_of([device])
    store = SqliteStore(where, swarm=SWARM, device=device.id)
    node = VaultNode(lambda: make_replica(device, directory), store, rng=random.Random(2))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        queue = iter(range(n))

        async def writer() -> None:
            for i in queue:
                await node.put(*fact(i))

        start = time.perf_counter()
        async with trio.open_nursery() as inner:
            for _ in range(writers):
                inner.start_soon(writer)
        took = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    size = store.size()
    store.close()
    return took, node.commits, size


def bench_puts(n: int, n_sequential: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ours, commits, size = trio.run(_puts, n, 256, Path(tmp) / "a")
        seq, seq_commits, _ = trio.run(_puts, n_sequential, 1, Path(tmp) / "b")
    raw = raw_baseline(n)
    return {
        "entries": n,
        "concurrent_writers": 256,
        "put_per_s": n / ours,
        "commits": commits,
        "bytes_on_disk": size,
        "raw_pycrdt_age_per_s": n / raw,
        "overhead": ours / raw,
        "sequential_entries": n_sequential,
        "sequential_put_per_s": n_sequential / seq,
        "sequential_overhead": (seq / n_sequential) / (raw / n),
        "sequential_commits": seq_commits,
    }


# ---- 2. catch-up over libp2p -----------------------------------------------------------------


def _seed(device: Any) -> bytes:
    raw: bytes = device.signing_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return raw


CATCHUP_CASES = {
    "grouped": "written by 64 concurrent writers (group commits), compacted as the node does",
    "one per update": "written one at a time (an update each), compacted as the node does",
    "compacted": "written by 64 writers, then the holder compacted everything",
}


async def _catchup(n: int, case: str, tmp: Path) -> dict[str, Any]:
    from homeswarm.transports.libp2p import Libp2pTransport

    rng = random.Random(3)
    holder_dev, fresh_dev = make_device(rng, ALL), make_device(rng, ALL)
    directory = directory_of([holder_dev, fresh_dev])
    holder_store: Store
    if case == "one per update":  # the holder's disk is not what is measured: no 10,000 fsyncs
        holder_store = MemoryStore()
    else:
        holder_store = SqliteStore(tmp / "holder", swarm=SWARM, device=holder_dev.id)
    fresh_store = SqliteStore(tmp / "fresh", swarm=SWARM, device=fresh_dev.id)
    holder = VaultNode(lambda: make_replica(holder_dev, directory), holder_store, rng=rng)
    fresh = VaultNode(lambda: make_replica(fresh_dev, directory, seed=1), fresh_store, rng=rng)
    a = Libp2pTransport(_seed(holder_dev), ["/ip4/127.0.0.1/tcp/0"])
    b = Libp2pTransport(_seed(fresh_dev), ["/ip4/127.0.0.1/tcp/0"])

    def handler(node: VaultNode) -> Any:
        async def handle(conn: Any, body: Any) -> Any:
            return await node.handle(conn, body["op"].removeprefix(PREFIX), body)

        return handle

    async with a, b, trio.open_nursery() as nursery:
        a.set_handler(handler(holder))
        b.set_handler(handler(fresh))
        await nursery.start(holder.run, TransportLinks(a, alive=list, addrs=lambda p: b.addrs))
        await nursery.start(fresh.run, TransportLinks(b, alive=list, addrs=lambda p: a.addrs))
        queue = iter(range(n))

        async def writer() -> None:
            for i in queue:
                await holder.put(*fact(i))

        async with trio.open_nursery() as writers:
            for _ in range(1 if case == "one per update" else 64):
                writers.start_soon(writer)
        if case == "compacted":
            assert holder.compact("personal")
        replica = holder.replica
        updates = sum(len(replica.log("personal", o)) for o in replica.vectors()["personal"])
        snapshots = len(replica.snapshots("personal"))
        epoch = replica.keyring.current("personal", frozenset())
        assert epoch is not None
        recipient = replica.keyring.recipient(epoch.key)
        scope_doc = replica._scopes["personal"].doc
        assert scope_doc is not None
        snapshot_size = len(pyrage.encrypt(scope_doc.get_update(), [recipient]))
        start = time.perf_counter()
        await fresh._session(a.peer_id)  # what sync_soon(holder) runs: dial, then the session
        took = time.perf_counter() - start
        wire = sum(
            c.statistics().bytes_sent + c.statistics().bytes_received for c in b.connections()
        )
        assert len(fresh.replica.content("personal")) == n, "the fresh device did not catch up"
        nursery.cancel_scope.cancel()
    holder_store.close()
    fresh_store.close()
    return {
        "facts": n,
        "case": case,
        "snapshots_sent": snapshots,
        "updates_sent": updates,
        "seconds": took,
        "wire_bytes": wire,
        "snapshot_bytes": snapshot_size,
        "wire_over_snapshot": wire / snapshot_size,
    }


def bench_catchup(n: int) -> list[dict[str, Any]]:
    out = []
    for case in CATCHUP_CASES:
        with tempfile.TemporaryDirectory() as tmp:
            out.append(trio.run(_catchup, n, case, Path(tmp)))
    return out


# ---- 3. convergence after a partition heals ---------------------------------------------------


async def _converge(seed: int, writes: int, told: bool) -> float:
    """Virtual seconds from healing to every replica holding the same. ``told``: at healing each
    node hears that the others are alive again (as the service hears it from membership) and
    syncs with them; else only the periodic pulls bring the sides together."""
    rng = random.Random(seed)
    network = MemoryNetwork(rng, default_link=Link(latency=0.005, jitter=0.002))
    devices = [make_device(rng, ALL) for _ in range(5)]
    directory = directory_of(devices)
    peers = [NetPeer(network, d, directory, seed=i) for i, d in enumerate(devices)]
    for p in peers:
        p.alive = {q.id for q in peers if q is not p}
    async with trio.open_nursery() as nursery:
        for p in peers:
            await nursery.start(p.serve)
        network.partition([p.id for p in peers[:2]], [p.id for p in peers[2:]])
        for i in range(writes):
            p = peers[rng.randrange(5)]
            await p.node.put(f"facts/k{rng.randrange(writes)}", json.dumps(i))
        await trio.sleep(rng.uniform(20.0, 40.0))  # sessions across the cut fail meanwhile
        assert peers[0].node.replica.vectors() != peers[4].node.replica.vectors()
        network.heal()
        start = trio.current_time()
        if told:
            for p in peers:
                for q in sorted(p.alive):
                    p.node.sync_soon(q)

        def same() -> bool:
            first = peers[0].node.replica.vectors()
            return all(p.node.replica.vectors() == first for p in peers[1:])

        while True:
            if same():
                break
            await trio.sleep(0.01)
        took = trio.current_time() - start
        contents = [p.node.replica.content("personal") for p in peers]
        assert all(c == contents[0] for c in contents)
        nursery.cancel_scope.cancel()
    return took


def bench_convergence(seeds: int, writes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": 5, "seeds": seeds, "writes": writes}
    for told in (True, False):
        times = []
        for seed in range(seeds):
            clock = trio.testing.MockClock(autojump_threshold=0)
            times.append(trio.run(_converge, seed, writes, told, clock=clock))
        key = "told_alive" if told else "pull_only"
        out[key] = {"median_s": statistics.median(times), "max_s": max(times)}
    return out


# ---- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    n = 2000 if args.quick else 10_000
    puts = bench_puts(n, 200 if args.quick else 1000)
    catchup = bench_catchup(n)
    converge = bench_convergence(5 if args.quick else 20, 50)
    result = {"put": puts, "catchup": catchup, "convergence": converge}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    p = puts
    print(
        f"put, durable, {p['concurrent_writers']} writers: {p['put_per_s']:,.0f} entries/s "
        f"(target >= {PUT_TARGET:,.0f}); {p['entries']:,} entries in {p['commits']} commits, "
        f"{p['bytes_on_disk']:,} bytes on disk"
    )
    print(
        f"  raw pycrdt + age, no storage: {p['raw_pycrdt_age_per_s']:,.0f} entries/s; "
        f"overhead {p['overhead']:.2f}x (target <= {OVERHEAD_TARGET:g}x)"
    )
    print(
        f"  one writer, each put awaited: {p['sequential_put_per_s']:,.0f} entries/s "
        f"({p['sequential_commits']} commits; overhead {p['sequential_overhead']:.2f}x)"
    )
    for c in catchup:
        how = (
            f"{CATCHUP_CASES[c['case']]}: {c['snapshots_sent']} snapshot(s) + "
            f"{c['updates_sent']} updates"
        )
        print(
            f"catch-up of {c['facts']:,} facts over libp2p, {how}: {c['seconds']:.2f} s "
            f"(target <= {CATCHUP_TARGET_S:g} s); {c['wire_bytes']:,} bytes on the wire = "
            f"{c['wire_over_snapshot']:.2f}x one encrypted snapshot ({c['snapshot_bytes']:,} "
            f"bytes; target <= {CATCHUP_BYTES_TARGET:g}x)"
        )
    v = converge
    print(
        f"convergence after a partition heals, {v['devices']} devices, {v['writes']} writes, "
        f"{v['seeds']} seeds (virtual time): told the others are alive again: median "
        f"{v['told_alive']['median_s']:.2f} s, max {v['told_alive']['max_s']:.2f} s; by periodic "
        f"pulls alone (every 5 s, jittered): median {v['pull_only']['median_s']:.2f} s, "
        f"max {v['pull_only']['max_s']:.2f} s"
    )


if __name__ == "__main__":
    main()
