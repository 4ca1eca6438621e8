"""A wait until a deadline that others may move or end: the one timed wait of the transports
(the memory network's readers, the connection manager), cheap under a clock with its own timers."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import trio


class Alarm:
    """A wait until a deadline, which others may move sooner (``deadline = ...``) or end at once
    (``cancel()``): a cancel scope around ``sleep_forever``, with the scope's face. Under a clock
    with its own timers (``Timers``) it waits on those instead. Use once: ``await alarm.wait()``.

    ``on_due``, under a clock with timers only: called at the deadline, in the clock's timer
    (outside any task), to do the waiting task's work there; it returns whether the wait must
    end all the same, and may move the deadline to wait on. A simulation does most of its work
    this way, without a scheduler pass per timer. What it raises ends the wait and is raised by
    ``wait()``. Under any other clock the wait simply ends at the deadline, and the task does
    the same work itself.
    """

    __slots__ = ("_deadline", "_done", "_error", "_on_due", "_scope", "_task", "_timer", "_timers")

    def __init__(
        self, deadline: float = math.inf, *, on_due: Callable[[], bool] | None = None
    ) -> None:
        self._deadline = deadline
        self._done = False
        self._on_due = on_due
        self._error: BaseException | None = None
        self._scope: trio.CancelScope | None = None
        self._task: Any = None
        self._timer: object = None
        clock = trio.lowlevel.current_clock()
        self._timers: Timers | None = clock if hasattr(clock, "call_at") else None  # type: ignore[assignment]

    @property
    def deadline(self) -> float:
        return self._deadline

    @deadline.setter
    def deadline(self, at: float) -> None:
        self._deadline = at
        if self._scope is not None:
            self._scope.deadline = at
        elif self._task is not None and not self._done:
            self._arm()

    def cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        elif self._task is not None and not self._done:
            self._disarm()
            trio.lowlevel.reschedule(self._task)
        else:
            self._done = True  # before the wait began: it ends at once

    async def wait(self) -> None:
        timers = self._timers
        if timers is None:
            with trio.CancelScope(deadline=self._deadline) as self._scope:
                if self._done:
                    self._scope.cancel()
                await trio.sleep_forever()
            return
        if self._done:
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()
        self._arm()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._disarm()
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _fire(self) -> None:
        """The timer: the deadline is reached."""
        self._timer = None
        on_due = self._on_due
        if on_due is not None and not self._done:
            try:
                if not on_due():
                    return  # (it did the work; it may have moved the deadline)
            except Exception as exc:
                self._error = exc
        self.cancel()

    def _arm(self) -> None:
        assert self._timers is not None
        if self._timer is not None:
            self._timers.cancel_timer(self._timer)
        at = self._deadline
        self._timer = self._timers.call_at(at, self._fire) if at < math.inf else None

    def _disarm(self) -> None:
        self._done = True
        if self._timer is not None:
            assert self._timers is not None
            self._timers.cancel_timer(self._timer)
            self._timer = None


class Timers(Protocol):
    """What a clock may offer the network (``simulations.VirtualClock`` does): call ``fn`` at
    the time ``at``, in the scheduler pass where that time is reached. A reader then waits
    without a cancel scope, whose every expiry costs trio a Cancelled exception thrown into the
    task and caught again: most of a simulation's time went there."""

    def call_at(self, at: float, fn: Callable[[], None]) -> object: ...

    def cancel_timer(self, timer: object) -> None: ...
