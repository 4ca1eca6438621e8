"""Executors: where a kernel placed on this device actually runs.

Every executor has the same face (``Executor``): ``await run(kernel, value, timeout=...)`` gives
a ``RunResult`` or raises, from the one exception tree:

- ``InvalidInput`` (the input) and ``KernelFailed`` (the kernel's own code), from the kernel;
- ``ExecutorTimeout`` when the run took longer than ``timeout``;
- ``ExecutorFailed`` when the executor itself failed (a Ray worker died, Ray is down), and
  ``ExecutorUnavailable`` when it cannot start at all.

``hosts()`` says which kernels the executor holds and in which process, for ``swarm status``.

``InlineExecutor`` runs in this process: ``tiny`` kernels directly (they take microseconds),
others in worker threads (at most ``threads`` at a time), so the peer keeps serving. Phones and
the fast tests use it; ``threaded=False`` runs everything directly (virtual-time tests, where a
thread's real time would let a ``MockClock`` jump past every timeout).
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import trio

from homeswarm.kernels import ExecutionError, Kernel

log = logging.getLogger("placement.executors")

T = TypeVar("T")


async def in_thread(fn: Callable[[], T], *, limiter: trio.CapacityLimiter | None = None) -> T:
    """``fn()`` in a worker thread; if we are cancelled, abandoned (left to finish on its own)."""
    run: Any = trio.to_thread.run_sync  # (the installed trio-stubs predate abandon_on_cancel)
    result: T = await run(fn, abandon_on_cancel=True, limiter=limiter)
    return result


class ExecutorFailed(ExecutionError):
    """The executor failed while running a kernel (not the kernel's own code)."""


class ExecutorUnavailable(ExecutorFailed):
    """The executor cannot start here (say, Ray is not installed or will not start)."""


class ExecutorTimeout(ExecutionError, TimeoutError):
    """A kernel ran longer than it was given."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run gave: the output, which executor and process ran it, and how long it took."""

    output: Any
    executor: str
    pid: int | None
    elapsed_s: float  # as the placing device saw it (a remote run: the round trip)
    compute_s: float | None = None  # as the running device measured it (None: elapsed_s)


@dataclass(frozen=True, slots=True)
class HeldKernel:
    """A kernel an executor holds: the process it runs in, runs done, runs in progress."""

    kernel: str
    executor: str
    pid: int | None
    runs: int
    running: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel,
            "executor": self.executor,
            "pid": self.pid,
            "runs": self.runs,
            "running": self.running,
        }


class Executor(Protocol):
    @property
    def name(self) -> str: ...

    async def run(self, kernel: Kernel, value: Any, *, timeout: float) -> RunResult: ...

    def hosts(self) -> list[HeldKernel]: ...

    async def aclose(self) -> None: ...


class Tally:
    """Runs done and in progress per kernel (shared by the executors)."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.running: Counter[str] = Counter()

    def start(self, name: str) -> None:
        self.running[name] += 1

    def stop(self, name: str) -> None:
        self.running[name] -= 1
        self.runs[name] += 1
        if not self.running[name]:
            del self.running[name]

    def names(self) -> list[str]:
        return sorted(set(self.runs) | set(self.running))


class InlineExecutor:
    """Runs kernels in this process (worker threads for all but ``tiny`` ones)."""

    name = "inline"

    def __init__(self, *, threads: int = 2, threaded: bool = True) -> None:
        self.threaded = threaded
        self._limiter = trio.CapacityLimiter(max(1, threads))
        self._tally = Tally()

    async def run(self, kernel: Kernel, value: Any, *, timeout: float) -> RunResult:
        start = trio.current_time()
        self._tally.start(kernel.name)
        try:
            if not self.threaded or kernel.needs.energy == "tiny":
                output = kernel.run(value)
            else:
                with trio.move_on_after(timeout) as waited:
                    output = await in_thread(
                        functools.partial(kernel.run, value), limiter=self._limiter
                    )
                if waited.cancelled_caught:
                    raise ExecutorTimeout(f"{kernel.name} took longer than {timeout:g} s")
        finally:
            self._tally.stop(kernel.name)
        return RunResult(output, self.name, os.getpid(), trio.current_time() - start)

    def hosts(self) -> list[HeldKernel]:
        pid = os.getpid()
        t = self._tally
        return [HeldKernel(n, self.name, pid, t.runs[n], t.running[n]) for n in t.names()]

    async def aclose(self) -> None:
        return None


class FallbackExecutor:
    """``primary`` until it proves unavailable (say, Ray will not start), then ``fallback``.

    The switch happens once, is logged, and is told to ``on_switch`` (the peer then gossips its
    new executor); the run that found out goes to the fallback at once.
    """

    def __init__(
        self,
        primary: Executor,
        fallback: Executor,
        on_switch: Callable[[str], None] | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.current = primary
        self.on_switch = on_switch

    @property
    def name(self) -> str:
        return self.current.name

    async def run(self, kernel: Kernel, value: Any, *, timeout: float) -> RunResult:
        if self.current is self.primary:
            try:
                return await self.primary.run(kernel, value, timeout=timeout)
            except ExecutorUnavailable as exc:
                log.warning("%s; running kernels %s from now on", exc, self.fallback.name)
                self.current = self.fallback
                if self.on_switch is not None:
                    self.on_switch(self.fallback.name)
        return await self.fallback.run(kernel, value, timeout=timeout)

    def hosts(self) -> list[HeldKernel]:
        return self.primary.hosts() + self.fallback.hosts()

    async def aclose(self) -> None:
        try:
            await self.primary.aclose()
        finally:
            await self.fallback.aclose()
