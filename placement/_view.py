"""The policy's view of one device: plain, frozen, validated when built.

The peer builds these from its membership (status, measured RTT) and the devices' gossiped state
(power, load, scopes, relay_only, executor, kernels, role); the simulator builds them from its
models. Nothing here knows where the numbers came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from homeswarm.errors import InvalidArgument
from homeswarm.kernels import ACCELERATORS
from homeswarm.vocabulary import ROLES as ROLES  # re-exported
from homeswarm.vocabulary import SCOPES

STATUSES = ("alive", "suspect", "away", "dead", "left")
NO_EXECUTOR = ("none", "unknown", "")


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One device as the policy sees it.

    ``battery_percent`` is None without a battery; ``plugged`` None when unknown (a device
    without a battery counts as on mains). ``rtt_s`` is the measured round trip (None: not yet
    measured); ``queue`` the kernels it is running or has queued, as far as the caller knows;
    ``local`` marks the device that is deciding (no network between it and itself).
    ``accelerators`` are the kinds it has (``cuda``, ``mps``), ``accelerator_mb`` the memory of
    its largest (0: none, or not known). ``light``: a light member (a phone on cellular or low
    on battery, holding its place with a lease): nobody probes it, so its death is seen only
    when its lease lapses, minutes later; it may run work, but is no home for a stateful one.
    """

    id: str
    name: str = ""
    role: str = "laptop"
    status: str = "alive"
    battery_percent: float | None = None
    plugged: bool | None = None
    cpu_percent: float = 0.0
    memory_free_mb: float = 1e6
    scopes: tuple[str, ...] = SCOPES
    relay_only: bool = False
    executor: str = "inline"
    kernels: tuple[str, ...] = ()
    accelerators: tuple[str, ...] = ()
    accelerator_mb: float = 0.0
    rtt_s: float | None = None
    queue: int = 0
    local: bool = False
    light: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidArgument("a device view needs an id")
        if self.role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.status not in STATUSES:
            raise InvalidArgument(
                f"status must be one of {', '.join(STATUSES)}, got {self.status!r}"
            )
        if not all(s in SCOPES for s in self.scopes):
            raise InvalidArgument(f"scopes must be from {', '.join(SCOPES)}")
        if not all(a in ACCELERATORS for a in self.accelerators):
            raise InvalidArgument(f"accelerators must be from {', '.join(ACCELERATORS)}")
        if not (_finite(self.accelerator_mb) and self.accelerator_mb >= 0):
            raise InvalidArgument("accelerator_mb must be a non-negative number")
        b = self.battery_percent
        if b is not None and not (_finite(b) and 0 <= b <= 100):
            raise InvalidArgument("battery_percent must be a number from 0 to 100, or None")
        if not (_finite(self.cpu_percent) and 0 <= self.cpu_percent <= 100):
            raise InvalidArgument("cpu_percent must be a number from 0 to 100")
        if not (_finite(self.memory_free_mb) and self.memory_free_mb >= 0):
            raise InvalidArgument("memory_free_mb must be a non-negative number")
        if self.rtt_s is not None and not (_finite(self.rtt_s) and self.rtt_s >= 0):
            raise InvalidArgument("rtt_s must be a non-negative number, or None")
        if isinstance(self.queue, bool) or not isinstance(self.queue, int) or self.queue < 0:
            raise InvalidArgument("queue must be a non-negative integer")

    @property
    def on_battery(self) -> bool:
        """Running from its battery: it has one and is not known to be plugged in."""
        return self.battery_percent is not None and self.plugged is not True

    @property
    def runs_kernels(self) -> bool:
        return self.executor not in NO_EXECUTOR

    @property
    def accelerator_label(self) -> str:
        """``cuda 24576 MB``, ``mps`` (memory not known), or empty: none."""
        kinds = "+".join(self.accelerators)
        if kinds and self.accelerator_mb:
            return f"{kinds} {self.accelerator_mb:.0f} MB"
        return kinds

    @property
    def label(self) -> str:
        return self.name or self.id[-8:]


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
