"""The kernel registry: the built-ins, plus whatever the ``homeswarm.kernels`` entry points name.

A third-party package adds kernels without touching this code by declaring, in its own
``pyproject.toml``::

    [project.entry-points."homeswarm.kernels"]
    mykernels = "mypackage.kernels:KERNELS"

where the object named is a ``Kernel``, an iterable of them, or a function of no arguments that
returns either. Rules:

- A name is registered once. The built-ins come first, so an entry point cannot replace them;
  registering the very same kernel object again is a no-op.
- An entry point that fails to import, names something else, or clashes with a registered name is
  skipped with one logged line: a broken plug-in never stops the peer. ``load_entry_points``
  returns those lines so a caller (or a test) can show them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from homeswarm.errors import InvalidArgument

from ._api import Kernel, UnknownKernel

log = logging.getLogger("kernels.registry")

ENTRY_POINT_GROUP = "homeswarm.kernels"


class Registry:
    """Kernels by name."""

    def __init__(self, kernels: Iterable[Kernel] = ()) -> None:
        self._kernels: dict[str, Kernel] = {}
        for k in kernels:
            self.add(k)

    def add(self, k: Kernel) -> None:
        if not isinstance(k, Kernel):
            raise InvalidArgument(f"only a Kernel can be registered, got {type(k).__name__}")
        known = self._kernels.get(k.name)
        if known is k:
            return
        if known is not None:
            raise InvalidArgument(f"a kernel named {k.name!r} is already registered")
        self._kernels[k.name] = k

    def get(self, name: str) -> Kernel:
        found = self._kernels.get(name) if isinstance(name, str) else None
        if found is None:
            known = ", ".join(self.names()) or "none"
            raise UnknownKernel(f"unknown kernel {str(name)[:40]!r} (known: {known})")
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._kernels

    def __iter__(self) -> Iterator[Kernel]:
        return iter(sorted(self._kernels.values(), key=lambda k: k.name))

    def __len__(self) -> int:
        return len(self._kernels)

    def names(self) -> list[str]:
        return sorted(self._kernels)

    def problems(self) -> dict[str, str]:
        """Each kernel this process cannot run, with why (one line)."""
        return {k.name: why for k in self if (why := k.unavailable()) is not None}

    def available(self) -> list[str]:
        """The names of the kernels this process can run (their packages are installed)."""
        return [k.name for k in self if k.is_available()]

    def load_entry_points(
        self,
        group: str = ENTRY_POINT_GROUP,
        entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    ) -> list[str]:
        """Register the kernels the ``group`` entry points name; the problems, one line each."""
        found = entry_points if entry_points is not None else _entry_points(group)
        problems: list[str] = []
        for ep in sorted(found, key=lambda e: (e.name, e.value)):
            try:
                loaded = ep.load()
                for k in _kernels_in(loaded):
                    self.add(k)
            except Exception as exc:
                text = " ".join(str(exc).split())[:200]
                problem = f"entry point {ep.name} = {ep.value}: {type(exc).__name__}: {text}"
                log.warning("skipped a kernel plug-in: %s", problem)
                problems.append(problem)
        return problems


def _entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=group))


def _kernels_in(obj: Any) -> list[Kernel]:
    if isinstance(obj, Kernel):
        return [obj]
    if callable(obj) and not isinstance(obj, type):
        obj = obj()
        if isinstance(obj, Kernel):
            return [obj]
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes):
        items = list(obj)
        if items and all(isinstance(k, Kernel) for k in items):
            return items
    raise InvalidArgument("names neither a Kernel nor an iterable of Kernels")


def builtin_registry() -> Registry:
    """A registry of the built-in kernels only (``embed``, ``classify``)."""
    from ._builtin import BUILTINS

    return Registry(BUILTINS)


@functools.cache
def default_registry() -> Registry:
    """The built-ins and every ``homeswarm.kernels`` entry point of this environment (made once)."""
    registry = builtin_registry()
    registry.load_entry_points()
    return registry
