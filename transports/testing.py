"""The test kit: a conformance suite that every Transport must pass, written once.

A transport plugs in through a ``TransportFixture``; ``CHECKS`` lists the checks, each an async
function taking the fixture. ``check_garbage`` takes the bytes to send too, so it can be driven by
hypothesis. No check sleeps to wait: each waits on a condition under a deadline.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgpack
import trio

from homeswarm.errors import ConnectionClosed, InvalidArgument, RemoteHandlerError, TransportError
from homeswarm.ids import peer_id_from_public_key

from ._base import Transport
from ._connection import Connection
from ._frames import HEADER, Envelope, Kind, encode_frame
from ._manager import ConnectionLimits
from ._memory import Link, MemoryNetwork, MemoryTransport

DEADLINE = 10.0


class TransportFixture(Protocol):
    """How the suite makes and breaks transports of one kind."""

    name: str

    def new(self) -> Transport:
        """A fresh, unopened transport with an identity of its own."""
        ...

    async def raw_stream(self, src: Transport, dst: Transport) -> trio.abc.Stream:
        """An authenticated byte stream from ``src`` to ``dst``'s message protocol, unframed."""
        ...

    async def vanish(self, transport: Transport) -> None:
        """``transport``'s process dies: its connections break without a goodbye."""
        ...


async def echo(conn: Connection, body: Any) -> Any:
    return {"echo": body, "peer": conn.peer_id}


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Wait until ``predicate()`` holds, checking after every scheduling round."""
    pause = 0.001
    with trio.move_on_after(DEADLINE):
        while not predicate():
            await trio.sleep(pause)
            pause = min(pause * 2, 0.05)
    if not predicate():
        raise AssertionError(f"waited {DEADLINE:g} s for {what}")


async def check_request_response(fx: TransportFixture) -> None:
    async with fx.new() as server, fx.new() as client:
        server.set_handler(echo)
        client.set_handler(echo)
        conn = await client.dial(server.peer_id, server.addrs)
        assert conn.peer_id == server.peer_id
        reply = await conn.request({"n": 1, "data": b"\x00\xff"})
        assert reply == {"echo": {"n": 1, "data": b"\x00\xff"}, "peer": client.peer_id}
        # the listener can request over the same connection, and sees the dialer's true id
        await wait_for(lambda: bool(server.connections(client.peer_id)), "inbound connection")
        back = server.connections(client.peer_id)[0]
        assert back.peer_id == client.peer_id
        assert await back.request("ping") == {"echo": "ping", "peer": server.peer_id}


async def check_ordering(fx: TransportFixture) -> None:
    seen: list[int] = []

    async def record(conn: Connection, body: Any) -> Any:
        seen.append(body)
        return body

    async with fx.new() as server, fx.new() as client:
        server.set_handler(record)
        conn = await client.dial(server.peer_id, server.addrs)
        for i in range(200):
            await conn.send(i)
        await wait_for(lambda: len(seen) == 200, "all one-way messages")
        assert seen == list(range(200))
        for i in range(200, 250):
            assert await conn.request(i) == i
        assert seen == list(range(250))


async def check_large_frames(fx: TransportFixture) -> None:
    async with fx.new() as server, fx.new() as client:
        server.set_handler(echo)
        conn = await client.dial(server.peer_id, server.addrs)
        payload = random.Random(7).randbytes(client.max_frame - 1024)
        reply = await conn.request(payload, timeout=60)
        assert reply["echo"] == payload
        assert not conn.closed


async def check_size_limit(fx: TransportFixture) -> None:
    async with fx.new() as server, fx.new() as client:
        server.set_handler(echo)
        conn = await client.dial(server.peer_id, server.addrs)
        # our own oversized message is refused locally and the connection survives
        try:
            await conn.send(b"x" * (client.max_frame + 1))
        except InvalidArgument:
            pass
        else:
            raise AssertionError("an oversized message was sent")
        assert await conn.request(1) == {"echo": 1, "peer": client.peer_id}
        # a peer announcing an oversized frame is cut off, and the listener keeps serving
        raw = await fx.raw_stream(client, server)
        await raw.send_all(HEADER.pack(server.max_frame + 1) + b"\0" * 16)
        await wait_for(lambda: server.statistics().violations == 1, "the violation counted")
        await raw.aclose()
        assert await conn.request(2) == {"echo": 2, "peer": client.peer_id}


async def check_close_from_dialer(fx: TransportFixture) -> None:
    await _check_close(fx, dialer_closes=True)


async def check_close_from_listener(fx: TransportFixture) -> None:
    await _check_close(fx, dialer_closes=False)


async def _check_close(fx: TransportFixture, *, dialer_closes: bool) -> None:
    async with fx.new() as server, fx.new() as client:
        server.set_handler(echo)
        conn = await client.dial(server.peer_id, server.addrs)
        assert await conn.request(0)
        await wait_for(lambda: bool(server.connections(client.peer_id)), "inbound connection")
        far = server.connections(client.peer_id)[0]
        closer, other = (conn, far) if dialer_closes else (far, conn)
        await closer.aclose()
        with trio.fail_after(DEADLINE):
            await other.wait_closed()
        for side in (closer, other):
            try:
                await side.request(1)
            except ConnectionClosed:
                pass
            else:
                raise AssertionError("a closed connection carried a request")
        # the listener still accepts new connections
        again = await client.dial(server.peer_id, server.addrs)
        assert await again.request(3) == {"echo": 3, "peer": client.peer_id}


async def check_vanish_mid_request(fx: TransportFixture) -> None:
    started = trio.Event()

    async def hang(conn: Connection, body: Any) -> Any:
        started.set()
        await trio.sleep_forever()

    server, client = fx.new(), fx.new()
    async with client, server:
        server.set_handler(hang)
        conn = await client.dial(server.peer_id, server.addrs)
        async with trio.open_nursery() as nursery:
            outcome: list[BaseException] = []

            async def ask() -> None:
                try:
                    await conn.request("work", timeout=3600)
                except TransportError as exc:
                    outcome.append(exc)

            nursery.start_soon(ask)
            with trio.fail_after(DEADLINE):
                await started.wait()
            await fx.vanish(server)
            with trio.fail_after(DEADLINE):
                await conn.wait_closed()
        assert outcome and isinstance(outcome[0], ConnectionClosed), outcome


async def check_concurrent(fx: TransportFixture) -> None:
    async def slow_echo(conn: Connection, body: Any) -> Any:
        await trio.sleep(random.Random(body).random() * 0.05)
        return body * 2

    async with fx.new() as server, fx.new() as c1, fx.new() as c2:
        server.set_handler(slow_echo)
        conns = [await c.dial(server.peer_id, server.addrs) for c in (c1, c2)]
        results: dict[tuple[int, int], int] = {}

        async def one(i: int, k: int) -> None:
            results[i, k] = await conns[i].request(k)

        async with trio.open_nursery() as nursery:
            for i in range(2):
                for k in range(40):
                    nursery.start_soon(one, i, k)
        assert results == {(i, k): 2 * k for i in range(2) for k in range(40)}


async def check_admission(fx: TransportFixture) -> None:
    calls: list[str] = []

    async def handler(conn: Connection, body: Any) -> Any:
        calls.append(conn.peer_id)
        return "ok"

    async with fx.new() as server, fx.new() as friend, fx.new() as stranger:
        server.set_handler(handler)
        server.set_admission(lambda peer: peer == friend.peer_id)
        good = await friend.dial(server.peer_id, server.addrs)
        assert await good.request(1) == "ok"
        try:
            bad = await stranger.dial(server.peer_id, server.addrs)
            await bad.request(1, timeout=DEADLINE)
        except TransportError:
            pass
        else:
            raise AssertionError("a peer outside the allow-list was served")
        assert calls == [friend.peer_id]
        await wait_for(lambda: server.statistics().refused >= 1, "the refusal counted")
        assert await good.request(2) == "ok"


async def check_handler_error(fx: TransportFixture) -> None:
    async def fails(conn: Connection, body: Any) -> Any:
        if body == "boom":
            raise RuntimeError("secret internal detail")
        return body

    async with fx.new() as server, fx.new() as client:
        server.set_handler(fails)
        conn = await client.dial(server.peer_id, server.addrs)
        try:
            await conn.request("boom")
        except RemoteHandlerError as exc:
            assert "secret" not in str(exc)
        else:
            raise AssertionError("a failing handler produced a reply")
        assert await conn.request("fine") == "fine"


async def check_garbage(fx: TransportFixture, data: bytes) -> None:
    """Any bytes at all from a peer: the listener survives and keeps serving everyone else."""
    async with fx.new() as server, fx.new() as client, fx.new() as bystander:
        server.set_handler(echo)
        steady = await bystander.dial(server.peer_id, server.addrs)
        assert await steady.request("before")
        raw = await fx.raw_stream(client, server)
        try:
            await raw.send_all(data)
            await raw.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await wait_for(
            lambda: not server.connections(client.peer_id), "the garbage connection closed"
        )
        assert await steady.request("after") == {"echo": "after", "peer": bystander.peer_id}
        fresh = await client.dial(server.peer_id, server.addrs)
        assert await fresh.request("again") == {"echo": "again", "peer": client.peer_id}


async def check_oneway_handled_after_close(fx: TransportFixture) -> None:
    """One-way messages that arrived before their connection closed are all handled, in order,
    even when the handler is still busy with the first when the close comes (a peer's last
    gossip, or its leave, sent just before it stops)."""
    seen: list[int] = []
    release = trio.Event()

    async def slow(conn: Connection, body: Any) -> Any:
        if not seen:
            await release.wait()
        seen.append(body)

    async with fx.new() as server, fx.new() as client:
        server.set_handler(slow)
        conn = await client.dial(server.peer_id, server.addrs)
        for i in range(20):
            await conn.send(i)
        await conn.aclose()
        await wait_for(lambda: not server.connections(client.peer_id), "the close reached it")
        release.set()
        await wait_for(lambda: len(seen) == 20, "every message handled")
        assert seen == list(range(20))


async def check_idle_connections_close(fx: TransportFixture) -> None:
    """An idle connection is closed after the idle timeout, on both ends; the peers dial again."""
    async with fx.new() as server, fx.new() as client:
        server.limits = ConnectionLimits(idle_timeout=0.5)
        server.set_handler(echo)
        conn = await client.dial(server.peer_id, server.addrs)
        assert await conn.request(1)
        with trio.fail_after(DEADLINE):
            await conn.wait_closed()
        assert server.statistics().reaped == 1
        assert client.statistics().reaped == 0  # (the client's timeout is the default's)
        again = await client.dial(server.peer_id, server.addrs)
        assert await again.request(2) == {"echo": 2, "peer": client.peer_id}


async def check_connections_trimmed_to_the_mark(fx: TransportFixture) -> None:
    """Past ``limits.high`` open connections, the least recently used idle ones close until
    ``limits.low`` are left; one serving a request is kept, however old. (With no grace, as
    here, a connection may be trimmed before its first message arrives: the default's grace
    spares it.)"""
    started, release = trio.Event(), trio.Event()

    async def handler(conn: Connection, body: Any) -> Any:
        if body == "hold":
            started.set()
            await release.wait()
        return body

    async with fx.new() as server, fx.new() as a, fx.new() as b, fx.new() as c, fx.new() as d:
        server.limits = ConnectionLimits(high=2, low=2, grace=0.0)
        server.set_handler(handler)
        holding = await a.dial(server.peer_id, server.addrs)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holding.request, "hold")
            with trio.fail_after(DEADLINE):
                await started.wait()
            conns = []
            for client in (b, c, d):
                conns.append(await client.dial(server.peer_id, server.addrs))
                assert await conns[-1].request("hi") == "hi"
            # each opening past two closed the least recently used idle one: the server keeps
            # the busy one and the last one used
            await wait_for(lambda: len(server.connections()) <= 2, "trimmed to the mark")
            await wait_for(lambda: conns[0].closed and conns[1].closed, "the older ones closed")
            assert not holding.closed
            assert [x.peer_id for x in server.connections()] == [a.peer_id, d.peer_id]
            release.set()
        again = await b.dial(server.peer_id, server.addrs)
        assert await again.request("back") == "back"


def malformed_frames() -> list[bytes]:
    """Hand-picked bad inputs, each one of a kind: the hypothesis tests add random ones."""
    wrong_shape = [
        msgpack.packb({"not": "an envelope"}),
        msgpack.packb([99, 0, 1, None]),  # unknown version
        msgpack.packb([1, 7, 1, None]),  # unknown kind
        msgpack.packb([1, 0, -5, None]),  # negative id
        msgpack.packb([1, 1, 12345, "reply"]),  # reply to a request never made
        msgpack.packb([1, 3, 1, 42]),  # error without text
        b"\xc1",  # never-used msgpack byte
    ]
    return [
        *(encode_frame(w) for w in wrong_shape),
        HEADER.pack(100) + b"short",  # truncated
        b"\x00\x00",  # truncated header
        Envelope(Kind.ONEWAY, 0, "fine").pack(),  # an unframed envelope
    ]


CHECKS: list[Callable[[TransportFixture], Awaitable[None]]] = [
    check_request_response,
    check_ordering,
    check_large_frames,
    check_size_limit,
    check_close_from_dialer,
    check_close_from_listener,
    check_vanish_mid_request,
    check_concurrent,
    check_admission,
    check_handler_error,
    check_oneway_handled_after_close,
    check_idle_connections_close,
    check_connections_trimmed_to_the_mark,
]


class MemoryFixture:
    """The conformance fixture for the memory transport (use it under a MockClock)."""

    name = "memory"

    def __init__(self, link: Link | None = None, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.network = MemoryNetwork(
            self.rng, default_link=link or Link(latency=0.01, jitter=0.005)
        )

    def new(self) -> Transport:
        return self.network.transport(peer_id_from_public_key(self.rng.randbytes(32)))

    async def raw_stream(self, src: Transport, dst: Transport) -> trio.abc.Stream:
        assert isinstance(src, MemoryTransport)
        return await src.open_raw(dst.peer_id)

    async def vanish(self, transport: Transport) -> None:
        self.network.crash(transport.peer_id)


class Libp2pFixture:
    """The conformance fixture for the libp2p transport, on loopback with real sockets."""

    name = "libp2p"

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def new(self) -> Transport:
        from .libp2p import Libp2pTransport

        return Libp2pTransport(self.rng.randbytes(32), ["/ip4/127.0.0.1/tcp/0"])

    async def raw_stream(self, src: Transport, dst: Transport) -> trio.abc.Stream:
        from .libp2p import Libp2pTransport

        assert isinstance(src, Libp2pTransport)
        return await src.open_raw(dst.peer_id, dst.addrs)

    async def vanish(self, transport: Transport) -> None:
        from .libp2p import Libp2pTransport

        assert isinstance(transport, Libp2pTransport)
        await transport.crash()
