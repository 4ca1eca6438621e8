"""Every transport passes the same conformance suite (transports.testing.CHECKS)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from homeswarm.transports import Connection, RemoteHandlerError
from homeswarm.transports.testing import (
    CHECKS,
    DEADLINE,
    check_garbage,
    malformed_frames,
    wait_for,
)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_memory(memory_fixture, check):
    await check(memory_fixture)


@pytest.mark.parametrize("data", malformed_frames(), ids=range(len(malformed_frames())))
async def test_memory_malformed(memory_fixture, data):
    await check_garbage(memory_fixture, data)


@pytest.fixture
def libp2p_fixture():
    from homeswarm.transports.testing import Libp2pFixture

    return Libp2pFixture()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_libp2p(libp2p_fixture, check):
    await check(libp2p_fixture)


@pytest.mark.parametrize("data", malformed_frames(), ids=range(len(malformed_frames())))
async def test_libp2p_malformed(libp2p_fixture, data):
    await check_garbage(libp2p_fixture, data)


async def check_bounded_requests(fx) -> None:
    """A peer that sends more requests at once than a connection serves gets the excess refused
    at once with a ``busy`` reply, not queued; the requests being served finish, and the
    connection serves again once they did."""
    release = trio.Event()
    serving = 0

    async def hold(conn: Connection, body: Any) -> Any:
        nonlocal serving
        serving += 1
        await release.wait()
        return body

    async with fx.new() as server, fx.new() as client:
        server.max_requests = 4
        server.set_handler(hold)
        conn = await client.dial(server.peer_id, server.addrs)
        outcomes: dict[int, object] = {}

        async def ask(k: int) -> None:
            try:
                outcomes[k] = await conn.request(k, timeout=DEADLINE)
            except RemoteHandlerError as exc:
                outcomes[k] = str(exc)

        async with trio.open_nursery() as nursery:
            for k in range(10):
                nursery.start_soon(ask, k)
            await wait_for(lambda: serving == 4 and len(outcomes) == 6, "6 refusals, 4 served")
            busy = [v for v in outcomes.values() if isinstance(v, str)]
            assert len(busy) == 6
            assert all("busy" in v for v in busy), busy
            release.set()
        assert sorted(v for v in outcomes.values() if isinstance(v, int)) == sorted(
            k for k, v in outcomes.items() if isinstance(v, int)
        )
        (far,) = server.connections(client.peer_id)
        assert far.busy == 6
        assert await conn.request("again") == "again"


async def test_memory_bounds_concurrent_requests(memory_fixture):
    await check_bounded_requests(memory_fixture)


async def test_libp2p_bounds_concurrent_requests(libp2p_fixture):
    await check_bounded_requests(libp2p_fixture)
