"""Learning tasks are plugins: a model, the records on each device, and an evaluation.

A task is any object with the ``Task`` protocol's members. It may also have ``bind(entries)``
(the learning service gives it this device's vault: ``entries(prefix)`` yields ``(key, JSON
text, scope)`` of the readable entries), ``spec()`` (what a new job fixes for every device, e.g.
its labels; the service carries it in the job's description) and ``with_spec(spec)`` (the task
as a job fixed it). Built-in tasks are registered here;
third-party ones come from the ``homeswarm.learning.tasks`` entry-point group (an entry point
names a zero-argument callable that returns the task). The model factory returns a torch module:
torch is imported by the task only when a model is built.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from homeswarm.errors import InvalidArgument

from ._records import Records
from ._records import Split as Split  # re-exported: a task's protocol names it

ENTRY_POINT_GROUP = "homeswarm.learning.tasks"


@runtime_checkable
class Task(Protocol):
    """What a learning task provides."""

    name: str

    def model(self) -> Any:
        """A fresh torch module (import torch inside)."""
        ...

    def split(self, devices: list[str], *, alpha: float, seed: int) -> Split:
        """The records of each device (ids unique across devices) and a held-out test set."""
        ...

    def evaluate(self, predict: Callable[[Any], Any], test: Records) -> float:
        """Accuracy in [0, 1] of ``predict`` (features -> labels) on the held-out set."""
        ...


def _builtin() -> dict[str, Callable[[], Task]]:
    from ._digits import Digits
    from ._intents import Intents

    return {"digits": Digits, "intents": Intents}


def task_names() -> list[str]:
    """Built-in and installed task names."""
    names = set(_builtin())
    names |= {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def get_task(name: str) -> Task:
    """The task called ``name``; one clear error naming the known ones otherwise."""
    builtin = _builtin()
    if name in builtin:
        return builtin[name]()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            task = ep.load()()
            if not isinstance(task, Task):
                raise InvalidArgument(f"learning task {name!r} does not provide the Task protocol")
            return task
    raise InvalidArgument(f"unknown learning task {name!r} (known: {', '.join(task_names())})")
