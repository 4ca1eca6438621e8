"""The memory network's shaping, with exact timings in virtual time."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from homeswarm.transports import (
    Connection,
    InvalidArgument,
    Link,
    MemoryNetwork,
    PeerUnreachable,
    RequestTimeout,
)
from homeswarm.transports.testing import echo, wait_for


def network(**link) -> MemoryNetwork:
    return MemoryNetwork(random.Random(0), default_link=Link(**link))


def recorder():
    """A handler that records (arrival time, body), and what it recorded."""
    log: list[tuple[float, object]] = []

    async def note(conn, body):
        log.append((trio.current_time(), body))

    return log, note


def bodies(log):
    return [body for _, body in log]


async def test_latency_is_exact(autojump_clock):
    net = network(latency=0.05)
    async with net.transport("a") as a, net.transport("b") as b:
        b.set_handler(echo)
        t0 = trio.current_time()
        conn = await a.dial("b", b.addrs)
        assert trio.current_time() - t0 == pytest.approx(0.1)  # the handshake: one round trip
        t0 = trio.current_time()
        await conn.request(1)
        assert trio.current_time() - t0 == pytest.approx(0.1)


async def test_asymmetric_links(autojump_clock):
    net = network()
    net.set_link("a", "b", Link(latency=0.2), both_ways=False)
    net.set_link("b", "a", Link(latency=0.01), both_ways=False)
    async with net.transport("a") as a, net.transport("b") as b:
        b.set_handler(echo)
        conn = await a.dial("b", b.addrs)
        t0 = trio.current_time()
        await conn.request(1)
        assert trio.current_time() - t0 == pytest.approx(0.21)


async def test_bandwidth_queues_writes(autojump_clock):
    net = network(bandwidth=1_000_000.0)
    arrived, note = recorder()

    async with net.transport("a") as a, net.transport("b") as b:
        b.set_handler(note)
        conn = await a.dial("b", b.addrs)
        t0 = trio.current_time()
        for _ in range(4):
            await conn.send(b"x" * 99_990)  # ~100 kB frames: 0.1 s each at 1 MB/s
        await wait_for(lambda: len(arrived) == 4, "four frames")
        gaps = [round(t - t0, 2) for t, _ in arrived]
        assert gaps == [0.1, 0.2, 0.3, 0.4]


async def test_jitter_keeps_order(autojump_clock):
    net = network(latency=0.01, jitter=0.05)
    seen, note = recorder()

    async with net.transport("a") as a, net.transport("b") as b:
        b.set_handler(note)
        conn = await a.dial("b", b.addrs)
        for i in range(300):
            await conn.send(i)
        await wait_for(lambda: len(seen) == 300, "all messages")
    assert bodies(seen) == list(range(300))


async def test_loss_rate_matches_the_link(autojump_clock):
    net = network(loss=0.2)
    seen, note = recorder()

    async with net.transport("a") as a, net.transport("b") as b:
        b.set_handler(note)
        conn = await a.dial("b", b.addrs)
        for i in range(2000):
            await conn.send(i)
        await trio.sleep(1)
    assert 1500 < len(seen) < 1700
    assert bodies(seen) == sorted(bodies(seen))
    assert net.stats.lost == 2000 - len(seen)


async def test_partition_and_heal(autojump_clock):
    net = network(latency=0.01)
    async with net.transport("a") as a, net.transport("b") as b, net.transport("c") as c:
        for t in (a, b, c):
            t.set_handler(echo)
        ab = await a.dial("b", b.addrs)
        ac = await a.dial("c", c.addrs)
        net.partition(["a", "b"], ["c"])
        assert await ab.request(1)
        with pytest.raises(RequestTimeout):
            await ac.request(1, timeout=1)
        with pytest.raises(PeerUnreachable):
            await a.dial("c", c.addrs, timeout=1)
        net.heal()
        assert await ac.request(2) == {"echo": 2, "peer": "a"}
        net.isolate("b")
        with pytest.raises(RequestTimeout):
            await ab.request(3, timeout=1)
        net.heal("b")
        assert await ab.request(4)


async def test_in_flight_messages_do_not_cross_a_new_partition(autojump_clock):
    net = network(latency=1.0)
    seen, note = recorder()

    async with net.transport("a") as a, net.transport("b") as b:
        b.set_handler(note)
        conn = await a.dial("b", b.addrs)
        await conn.send(1)
        net.partition(["a"], ["b"])
        await trio.sleep(2)
        net.heal()
        await conn.send(2)
        await trio.sleep(2)
    assert bodies(seen) == [2]


async def test_crash_and_restart(autojump_clock):
    net = network(latency=0.01)
    async with net.transport("a") as a:
        b = net.transport("b")
        async with b:
            b.set_handler(echo)
            conn = await a.dial("b", b.addrs)
            assert await conn.request(1)
            net.crash("b")
            with trio.fail_after(1):
                await conn.wait_closed()
            with pytest.raises(PeerUnreachable):
                await a.dial("b", ["/memory/b"])
        async with net.transport("b") as b2:
            b2.set_handler(echo)
            conn = await a.dial("b", b2.addrs)
            assert await conn.request(2) == {"echo": 2, "peer": "a"}


def test_same_seed_same_trace():
    def trace(seed: int) -> list[tuple[float, int]]:
        net = MemoryNetwork(
            random.Random(seed), default_link=Link(latency=0.01, jitter=0.02, loss=0.3)
        )
        log, note = recorder()

        async def main():
            async with net.transport("a") as a, net.transport("b") as b:
                b.set_handler(note)
                conn = await a.dial("b", b.addrs)
                for i in range(100):
                    await conn.send(i)
                await trio.sleep(5)

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        return log

    assert trace(1) == trace(1)
    assert trace(1) != trace(2)


@pytest.mark.parametrize(
    "bad", [{"latency": -1}, {"jitter": float("nan")}, {"loss": 1.5}, {"bandwidth": 0}]
)
def test_bad_links_are_refused(bad):
    with pytest.raises(InvalidArgument):
        Link(**bad)


async def test_a_dial_ends_at_its_deadline(autojump_clock):
    """The dial's timeout is the memory network's own wait: across a partition, or over a link
    slower than the timeout, the dial fails exactly when its time is up."""
    net = network(latency=0.5)
    async with net.transport("a") as a, net.transport("b") as b:
        net.isolate("b")
        t0 = trio.current_time()
        with pytest.raises(PeerUnreachable, match="timed out after 2 s"):
            await a.dial("b", b.addrs, timeout=2.0)
        assert trio.current_time() - t0 == pytest.approx(2.0)
        net.heal()
        t0 = trio.current_time()
        with pytest.raises(PeerUnreachable, match=r"timed out after 0\.9 s"):
            await a.dial("b", b.addrs, timeout=0.9)  # (a round trip takes 1 s)
        assert trio.current_time() - t0 == pytest.approx(0.9)
        b.set_handler(echo)
        conn = await a.dial("b", b.addrs, timeout=1.1)
        assert await conn.request(1) == {"echo": 1, "peer": "a"}


async def test_a_connection_in_a_nursery_of_its_own(autojump_clock):
    """``Connection.run()`` with no nursery given (the transports give theirs) serves as well,
    and returns once closed."""
    net = network(latency=0.01)
    async with net.transport("a") as a, net.transport("b") as b:
        b.set_handler(echo)
        conn = Connection(
            await a.open_raw("b"), local_id="a", peer_id="b", handler=echo, outbound=True
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            assert await conn.request(1) == {"echo": 1, "peer": "a"}
            conn.close_soon()
        assert conn.closed
        await wait_for(lambda: not b.connections(), "the far end closed too")
