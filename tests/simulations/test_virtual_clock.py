"""The simulator's fast paths change the number of trips through trio's scheduler, nothing else:
the memory transport passes the whole conformance suite under the simulations' ``VirtualClock``
(whose own timers its readers then wait on), an ``Alarm`` wakes at the same times under either
clock, and a connection's shortcuts (``send_nowait``, a ``HandlerNow``) keep the order of
one-way messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from homeswarm.simulations._world import VirtualClock
from homeswarm.transports import Alarm, Connection, Link
from homeswarm.transports.testing import CHECKS, MemoryFixture, wait_for

CLOCKS: dict[str, Callable[[], trio.abc.Clock]] = {
    "virtual": VirtualClock,
    "mock": lambda: trio.testing.MockClock(autojump_threshold=0),
}


def run(body: Callable[[], Awaitable[None]], clock: str = "virtual") -> None:
    trio.run(body, clock=CLOCKS[clock]())


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_the_memory_transport_conforms_under_the_virtual_clock(check):
    async def body() -> None:
        await check(MemoryFixture(Link(latency=0.005, jitter=0.002)))

    run(body)


@pytest.mark.parametrize("clock", CLOCKS)
def test_an_alarm_wakes_at_its_deadline_moved_sooner_or_at_once_when_cancelled(clock):
    woke: dict[str, float] = {}

    async def body() -> None:
        late, moved, cancelled = Alarm(10.0), Alarm(10.0), Alarm()

        async def sleeper(name: str, alarm: Alarm) -> None:
            await alarm.wait()
            woke[name] = trio.current_time()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper, "late", late)
            nursery.start_soon(sleeper, "moved", moved)
            nursery.start_soon(sleeper, "cancelled", cancelled)
            await trio.sleep(1.0)
            moved.deadline = 2.5
            moved.deadline = 3.0  # (later: the alarm keeps what it was told last)
            cancelled.cancel()
        early = Alarm(5.0)
        early.cancel()  # before its wait: the wait ends at once
        await early.wait()
        woke["early"] = trio.current_time()
        with trio.move_on_after(1.0):  # trio's own cancellation still ends a wait
            await Alarm().wait()
        woke["scope"] = trio.current_time()

    run(body, clock)
    assert woke == {"cancelled": 1.0, "moved": 3.0, "late": 10.0, "early": 10.0, "scope": 11.0}


def test_one_way_messages_keep_their_order_across_both_shortcuts():
    """Half the messages are taken at once by a HandlerNow, half go to the async handler (which
    waits a while on each); sent half with ``send_nowait`` and half with ``send``, they are
    handled in the order they were sent."""
    seen: list[int] = []

    async def body() -> None:
        fx = MemoryFixture(Link(latency=0.01))
        async with fx.new() as a, fx.new() as b:

            async def slow(conn: Connection, n: Any) -> None:
                await trio.sleep(0.05)
                seen.append(n)

            def now(conn: Connection, n: Any) -> bool:
                if n % 2:
                    return False
                seen.append(n)
                return True

            b.set_handler(slow, now)
            conn = await a.dial(b.peer_id, b.addrs)
            sent_at_once = 0
            for n in range(40):
                if n % 3:
                    sent_at_once += conn.send_nowait(n)
                else:
                    await conn.send(n)
                if n % 10 == 9:
                    await trio.sleep(0.02)
            assert sent_at_once > 0  # the memory stream takes a write at once
            await wait_for(lambda: len(seen) == 40, "every message handled")

    run(body)
    assert seen == list(range(40))


def test_a_malformed_message_taken_at_once_closes_that_connection():
    from homeswarm.transports import ProtocolViolation

    async def body() -> None:
        fx = MemoryFixture(Link(latency=0.01))
        async with fx.new() as a, fx.new() as b:

            async def never(conn: Connection, body: Any) -> None:
                raise AssertionError("the HandlerNow takes everything")

            def refuse(conn: Connection, body: Any) -> bool:
                raise ProtocolViolation("not for us")

            b.set_handler(never, refuse)
            conn = await a.dial(b.peer_id, b.addrs)
            assert conn.send_nowait("bad")
            await wait_for(lambda: conn.closed, "the connection closed")
            assert b.statistics().violations == 1

    run(body)
