"""Test kit: device views as a person's devices look, random views, and scripted executors.

``phone()``, ``laptop()`` and ``server()`` give typical ``DeviceView``s (override any field);
``random_view(rng, n)`` gives ``n`` varied devices from a seed (benchmarks and simulations);
``SlowExecutor`` wraps an executor and takes virtual time before each run (so a test can kill the
device mid-work); ``FailingExecutor`` fails every run as an executor would.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import trio

from homeswarm.kernels import SCOPES, Kernel

from ._executors import Executor, ExecutorFailed, HeldKernel, RunResult
from ._view import DeviceView

ALL_KERNELS = ("embed", "classify", "echo", "secret", "heavy", "medium", "boom", "nap", "pid")


# A person's devices as they typically are: role -> (battery %, plugged, free memory MB, scopes,
# executor, RTT s); each at 10% CPU with every kernel.
_TYPICAL = {
    "phone": (82.0, False, 3000.0, ("public", "personal"), "inline", 0.02),
    "laptop": (64.0, True, 8000.0, SCOPES, "ray", 0.005),
    "server": (None, None, 32000.0, SCOPES, "ray", 0.002),
}


def _typical(role: str, id: str, fields: dict[str, Any]) -> DeviceView:
    battery, plugged, memory, scopes, executor, rtt = _TYPICAL[role]
    base = DeviceView(
        id=id,
        name=role,
        role=role,
        battery_percent=battery,
        plugged=plugged,
        cpu_percent=10.0,
        memory_free_mb=memory,
        scopes=scopes,
        executor=executor,
        kernels=ALL_KERNELS,
        rtt_s=rtt,
    )
    return replace(base, **fields)


def phone(id: str = "phone-id", **fields: Any) -> DeviceView:
    return _typical("phone", id, fields)


def laptop(id: str = "laptop-id", **fields: Any) -> DeviceView:
    return _typical("laptop", id, fields)


def server(id: str = "server-id", **fields: Any) -> DeviceView:
    return _typical("server", id, fields)


def random_device(rng: random.Random, i: int, *, local: bool = False) -> DeviceView:
    """One varied device (any role, state, power, scopes), numbered ``i``."""
    role = rng.choice(("phone", "laptop", "server"))
    battery = None if role == "server" else round(rng.uniform(0, 100), 1)
    scopes = tuple(s for s in SCOPES if rng.random() < 0.7)
    return DeviceView(
        id=f"dev-{i:05d}",
        name=f"{role}-{i}",
        role=role,
        status=rng.choices(("alive", "suspect", "dead", "left"), (0.85, 0.05, 0.05, 0.05))[0],
        battery_percent=battery,
        plugged=None if battery is None else rng.random() < 0.5,
        cpu_percent=round(rng.uniform(0, 100), 1),
        memory_free_mb=round(rng.uniform(100, 32000), 1),
        scopes=scopes,
        relay_only=rng.random() < 0.05,
        executor=rng.choice(("inline", "ray", "ray", "none")),
        kernels=tuple(k for k in ALL_KERNELS if rng.random() < 0.9),
        rtt_s=None if local or rng.random() < 0.05 else round(rng.uniform(0.0005, 0.2), 4),
        queue=rng.randrange(4),
        local=local,
    )


def random_view(rng: random.Random, n: int) -> list[DeviceView]:
    """``n`` varied devices; the first is the deciding one."""
    return [random_device(rng, i, local=i == 0) for i in range(n)]


class SlowExecutor:
    """Another executor, but each run first waits ``delay_s`` (trio time: virtual in tests)."""

    def __init__(self, inner: Executor, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.name = inner.name
        self.started = 0

    async def run(self, kernel: Kernel, value: Any, *, timeout: float) -> RunResult:
        self.started += 1
        await trio.sleep(self.delay_s)
        return await self.inner.run(kernel, value, timeout=timeout)

    def hosts(self) -> list[HeldKernel]:
        return self.inner.hosts()

    async def aclose(self) -> None:
        await self.inner.aclose()


class FailingExecutor:
    """Fails every run, as a crashed executor would."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, kernel: Kernel, value: Any, *, timeout: float) -> RunResult:
        self.calls += 1
        raise ExecutorFailed(f"the executor crashed running {kernel.name}")

    def hosts(self) -> list[HeldKernel]:
        return []

    async def aclose(self) -> None:
        return None
