"""The simulator's fast paths change the number of trips through trio's scheduler, nothing else:
the memory transport passes the whole conformance suite under the simulations' ``VirtualClock``
(whose own timers its readers then wait on), an ``Alarm`` wakes at the same times under either
clock, and a connection's shortcuts (``send_nowait``, a ``HandlerNow``, a message taken in the
clock's timer while the reader waits) keep the order of one-way messages. Under the virtual clock
an ``Alarm``'s ``on_due`` does the waiting task's work in the timer, and the clock runs such
timers back to back, never past trio's own deadlines."""

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


@pytest.mark.parametrize("clock", CLOCKS)
def test_an_alarms_on_due_does_the_work_in_the_clocks_timer_and_the_wait_goes_on(clock):
    """Under the virtual clock ``on_due`` runs at each deadline it sets, outside the task, until
    it says to wake; under any other clock the wait simply ends at the first deadline."""
    calls: list[float] = []
    woke: list[float] = []

    async def body() -> None:
        alarm: Alarm

        def due() -> bool:
            with pytest.raises(RuntimeError):  # (in the clock's timer: no task is running)
                trio.lowlevel.current_task()
            calls.append(trio.current_time())
            alarm.deadline = trio.current_time() + 1.0
            return len(calls) == 3

        alarm = Alarm(1.0, on_due=due)
        await alarm.wait()
        woke.append(trio.current_time())

    run(body, clock)
    if clock == "virtual":
        assert (calls, woke) == ([1.0, 2.0, 3.0], [3.0])
    else:
        assert (calls, woke) == ([], [1.0])


def test_what_on_due_raises_ends_the_wait_and_is_raised_by_it():
    async def body() -> None:
        def due() -> bool:
            raise ValueError("broken timer work")

        with pytest.raises(ValueError, match="broken timer work"):
            await Alarm(2.0, on_due=due).wait()
        assert trio.current_time() == 2.0

    run(body)


def test_the_virtual_clock_runs_timers_back_to_back_but_never_past_trios_own_deadlines():
    """Timers that leave no task runnable follow each other without a scheduler pass; a task's
    sleep still wakes at its time, with exactly the timers due by then run before it."""
    calls: list[float] = []
    seen: list[int] = []

    async def body() -> None:
        alarm: Alarm

        def due() -> bool:
            calls.append(trio.current_time())
            alarm.deadline = trio.current_time() + 0.1
            return False

        async def sleeper() -> None:
            await trio.sleep(1.55)
            seen.append(len(calls))
            nursery.cancel_scope.cancel()

        alarm = Alarm(0.1, on_due=due)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            await alarm.wait()

    run(body)
    assert seen == [15]
    assert calls[-1] < 1.55


class _Steps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


@pytest.mark.parametrize("clock", CLOCKS)
def test_one_way_messages_reaching_a_waiting_reader_are_taken_without_a_scheduler_pass(clock):
    """A hundred one-way messages, each arriving at its own time, are handled by the HandlerNow
    in arrival order under either clock; under the virtual clock the receiver's task never
    wakes for them (a handful of task steps in all, against one or more per message)."""
    seen: list[int] = []
    steps: dict[str, int] = {}

    async def body() -> None:
        fx = MemoryFixture(Link(latency=0.01, jitter=0.005))
        async with fx.new() as a, fx.new() as b:

            async def never(conn: Connection, n: Any) -> None:
                raise AssertionError("the HandlerNow takes everything")

            def now(conn: Connection, n: Any) -> bool:
                seen.append(n)
                return True

            b.set_handler(never, now)
            conn = await a.dial(b.peer_id, b.addrs)
            await trio.sleep(1.0)
            counter = _Steps()
            trio.lowlevel.add_instrument(counter)
            for n in range(100):
                assert conn.send_nowait(n)
            await trio.sleep(1.0)
            trio.lowlevel.remove_instrument(counter)
            steps["delivery"] = counter.steps
            assert conn.statistics().frames_sent == 100
            assert b.connections(a.peer_id)[0].statistics().frames_received == 100

    run(body, clock)
    assert seen == list(range(100))
    if clock == "virtual":
        assert steps["delivery"] < 10
    else:
        assert steps["delivery"] >= 100
