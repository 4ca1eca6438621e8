"""Transport benchmarks: libp2p on loopback beside a plain trio TCP pair, and the memory network.

    python bench/bench_transport.py [--quick] [--json]

Both loopback columns carry the same framing (``transports.Connection``), so the ratio is the cost
of libp2p itself (Noise, yamux, multistream) over a bare socket. Figures, never asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from functools import partial
from typing import Any

import trio
import trio.testing

from homeswarm.transports import Connection, Link, MemoryNetwork, peer_id_from_public_key
from homeswarm.transports.libp2p import Libp2pTransport


async def echo(conn: Connection, body: Any) -> Any:
    return body


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(dial: Any, rounds: int, bulk_mib: int) -> dict[str, float]:
    connects = []
    for _ in range(rounds // 20):
        t0 = time.perf_counter()
        conn, closer = await dial()
        assert await conn.request(0) == 0
        connects.append(time.perf_counter() - t0)
        await closer()
    conn, closer = await dial()
    rtts = []
    for i in range(rounds):
        t0 = time.perf_counter()
        await conn.request(i)
        rtts.append(time.perf_counter() - t0)
    chunk = b"x" * (1024 * 1024)
    t0 = time.perf_counter()
    for _ in range(bulk_mib):
        await conn.send(chunk)
    await conn.request("flush")
    bulk = bulk_mib / (time.perf_counter() - t0)
    await closer()
    return {
        "connect_p50_ms": 1000 * statistics.median(connects),
        "rtt_p50_us": 1e6 * pct(rtts, 0.5),
        "rtt_p99_us": 1e6 * pct(rtts, 0.99),
        "bulk_mib_s": bulk,
    }


async def bench_libp2p(rounds: int, bulk_mib: int) -> dict[str, float]:
    rng = random.Random(1)
    server, client = Libp2pTransport(rng.randbytes(32)), Libp2pTransport(rng.randbytes(32))
    async with server, client:
        server.set_handler(echo)

        async def dial() -> Any:
            conn = await client.dial(server.peer_id, server.addrs)

            async def close() -> None:
                await conn.aclose()
                await client._close_peers()  # a fresh TCP connection each time, like the baseline

            return conn, close

        return await measure(dial, rounds, bulk_mib)


async def bench_tcp(rounds: int, bulk_mib: int) -> dict[str, float]:
    async with trio.open_nursery() as nursery:

        async def serve(stream: trio.SocketStream) -> None:
            conn = Connection(
                stream, local_id="server", peer_id="client", handler=echo, outbound=False
            )
            await conn.run()

        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]

        async def dial() -> Any:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            conn = Connection(
                stream, local_id="client", peer_id="server", handler=echo, outbound=True
            )
            nursery.start_soon(conn.run)
            return conn, conn.aclose

        result = await measure(dial, rounds, bulk_mib)
        nursery.cancel_scope.cancel()
    return result


async def bench_memory(peers: int, messages_each: int) -> dict[str, float]:
    rng = random.Random(2)
    net = MemoryNetwork(rng, default_link=Link(latency=0.005, jitter=0.002))
    ids = [peer_id_from_public_key(rng.randbytes(32)) for _ in range(peers)]
    received = 0

    async def count(conn: Connection, body: Any) -> Any:
        nonlocal received
        received += 1
        return body

    transports = [net.transport(i) for i in ids]
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for t in transports:
            t.set_handler(count)
            await nursery.start(_hold_open, t)

        async def talk(t: Any, k: int) -> None:
            # like gossip: each peer keeps connections to a few neighbours and talks to them
            local = random.Random(k)
            neighbours = local.sample([i for i in ids if i != t.peer_id], 8)
            conns = [await t.dial(i, ["/memory/" + i]) for i in neighbours]
            for n in range(messages_each):
                conn = conns[n % len(conns)]
                if n % 2:
                    await conn.request(n)
                else:
                    await conn.send(n)

        async with trio.open_nursery() as inner:
            for k, t in enumerate(transports):
                inner.start_soon(talk, t, k)
        nursery.cancel_scope.cancel()
    wall = time.perf_counter() - t0
    return {
        "peers": peers,
        "messages": received,
        "sim_seconds": trio.current_time(),
        "wall_seconds": wall,
        "messages_per_wall_s": received / wall,
    }


async def _hold_open(t: Any, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with t:
        task_status.started()
        await trio.sleep_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke test)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds, bulk = (200, 4) if args.quick else (2000, 64)
    lib = trio.run(bench_libp2p, rounds, bulk)
    tcp = trio.run(bench_tcp, rounds, bulk)
    mem = trio.run(
        bench_memory,
        100,
        20 if args.quick else 200,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
    ratios = {k: (lib[k] / tcp[k]) for k in lib}
    if args.json:
        print(json.dumps({"libp2p": lib, "tcp": tcp, "libp2p_over_tcp": ratios, "memory": mem}))
        return
    print(f"{'loopback':<16}{'libp2p':>12}{'plain tcp':>12}{'ratio':>8}")
    for key in lib:
        print(f"{key:<16}{lib[key]:>12.1f}{tcp[key]:>12.1f}{ratios[key]:>8.2f}")
    print(
        f"memory transport, {mem['peers']} peers: {mem['messages']:.0f} messages in "
        f"{mem['wall_seconds']:.2f} s wall ({mem['sim_seconds']:.1f} s simulated): "
        f"{mem['messages_per_wall_s']:.0f} messages per wall second"
    )


if __name__ == "__main__":
    main()
