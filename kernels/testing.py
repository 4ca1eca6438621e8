"""Test kit: trivial kernels for tests, benchmarks and simulations (no model, no I/O).

- ``echo`` (tiny, public): returns its input.
- ``secret`` (tiny, private): returns its input; only devices that may hold private data run it.
- ``heavy`` (large, public, 2 s declared): returns its input; a phone on battery below its floor
  for large work may not run it.
- ``medium`` (medium, personal, 10 ms declared, like a short ``embed``): returns its input.
- ``boom`` (small, public): always raises (the kernel's own failure).
- ``nap`` (small, public): sleeps for its input's seconds, really (executor timeouts).
- ``pid`` (tiny, public): the id of the process that ran it (which executor really ran it).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ._api import InvalidInput, Kernel, Needs, kernel
from ._registry import Registry, builtin_registry


@kernel("echo", needs=Needs(energy="tiny", memory_mb=1.0, latency_budget_s=0.5))
def echo(value: Any) -> Any:
    """returns its input"""
    return value


@kernel("secret", needs=Needs(scope="private", energy="tiny", memory_mb=1.0))
def secret(value: Any) -> Any:
    """returns its input; touches private data"""
    return value


@kernel("heavy", needs=Needs(energy="large", memory_mb=16.0, latency_budget_s=10.0, compute_s=2.0))
def heavy(value: Any) -> Any:
    """returns its input; declared large"""
    return value


@kernel(
    "medium",
    needs=Needs(
        scope="personal", energy="medium", memory_mb=16.0, latency_budget_s=2.0, compute_s=0.01
    ),
)
def medium(value: Any) -> Any:
    """returns its input; declared medium, like a short embed"""
    return value


@kernel("boom", needs=Needs(energy="small", memory_mb=1.0))
def boom(value: Any) -> Any:
    """always raises"""
    raise RuntimeError("boom, as asked")


def _nap_input(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 60:
        raise InvalidInput("input must be a number of seconds from 0 to 60")
    return value


@kernel("nap", needs=Needs(energy="small", memory_mb=1.0), check=_nap_input)
def nap(value: Any) -> Any:
    """sleeps for its input's seconds (real time, blocking)"""
    time.sleep(value)
    return value


@kernel("pid", needs=Needs(energy="tiny", memory_mb=1.0))
def pid(value: Any) -> Any:
    """the process id that ran it"""
    return os.getpid()


TESTING: tuple[Kernel, ...] = (echo, secret, heavy, medium, boom, nap, pid)


def make_registry(*, with_builtins: bool = False) -> Registry:
    """The test kernels (and the built-ins too, if asked)."""
    registry = builtin_registry() if with_builtins else Registry()
    for k in TESTING:
        registry.add(k)
    return registry
