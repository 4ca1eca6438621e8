"""The placement policy: pure, deterministic, explained.

``place(kernel, needs, view)`` takes what a kernel needs and the current view of the swarm and
returns a ``Decision``: the devices that may run it, best first, with their scores, and the ones
ruled out, each with the constraint that ruled it out. No I/O, no clock, no randomness: the same
arguments give the same decision.

Filter (the first rule a device breaks is the one reported, in this order):

  ``status``      not alive (suspect, away, dead or left)
  ``relay_only``  a blind relay runs nothing
  ``scope``       the device may not hold data of the kernel's scope
  ``executor``    the device runs no kernels
  ``kernel``      the device does not have this kernel
  ``accelerator`` the kernel needs an accelerator the device lacks
  ``memory``      less free memory than the kernel needs
  ``battery``     a phone (``PolicyConfig.floor_roles``) on battery below its floor for the
                  kernel's energy class (floors: tiny none, small/medium/large configurable)
  ``failed``      it already failed this run (re-placement)

Score (seconds; lower is better; ties broken by device id):

  compute  = compute_s / (speed[role] * (1 - load_slowdown * cpu%))
  network  = 0 on the deciding device, else RTT (unknown_rtt_s until measured) + remote_overhead_s
  queue    = queue * compute
  latency  = network + queue + compute
  energy   = compute * watts[role] joules, at a price of 1 on mains and, on battery,
             battery_price + battery_drain_price * (100 - battery%)
  cost     = latency + joule_s * energy * price (+ stateful_battery_s for a stateful kernel on
             battery: it would have to move when the battery runs low)

Devices whose expected latency is within the kernel's budget come before those over it. So on
mains a server beats a laptop beats a phone for heavy work, local work avoids the network, and a
device on battery pays for the charge it would spend, more the emptier it is.

The baselines (``always_local``, ``always_server``, ``random_policy``, ``latency_greedy``) have the
same shape and filter only what no device could do anyway (not alive, a relay, no executor): they
ignore scopes and battery floors, which is what a simulation compares against.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from homeswarm.errors import InvalidArgument, LocalError
from homeswarm.kernels import Needs

from ._view import DeviceView

CONSTRAINTS = (
    "status",
    "relay_only",
    "scope",
    "executor",
    "kernel",
    "accelerator",
    "memory",
    "battery",
    "failed",
)


class Refused(LocalError):
    """No device may run the kernel; the message names the constraint that ruled out each."""

    def __init__(self, message: str, decision: Decision | None = None) -> None:
        super().__init__(message)
        self.decision = decision


def _table(**values: float) -> Mapping[str, float]:
    return MappingProxyType(values)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The policy's knobs. Floors are battery percentages; the rest as in the module's rules."""

    floor_small: float = 30.0
    floor_medium: float = 50.0
    floor_large: float = 80.0
    floor_roles: tuple[str, ...] = ("phone",)
    speed: Mapping[str, float] = field(
        default_factory=lambda: _table(phone=0.4, laptop=1.0, server=1.5)
    )
    watts: Mapping[str, float] = field(
        default_factory=lambda: _table(phone=3.0, laptop=20.0, server=40.0)
    )
    joule_s: float = 0.01
    battery_price: float = 5.0
    battery_drain_price: float = 0.2
    unknown_rtt_s: float = 0.1
    remote_overhead_s: float = 0.01
    load_slowdown: float = 0.75
    stateful_battery_s: float = 0.05

    def __post_init__(self) -> None:
        for name in ("floor_small", "floor_medium", "floor_large"):
            value = getattr(self, name)
            if not 0 <= value <= 100:
                raise InvalidArgument(f"{name} must be between 0 and 100, got {value!r}")
        for table in (self.speed, self.watts):
            if any(v <= 0 for v in table.values()):
                raise InvalidArgument("speeds and watts must be positive")
        if not 0 <= self.load_slowdown < 1:
            raise InvalidArgument("load_slowdown must be at least 0 and below 1")

    def floor(self, energy: str) -> float:
        """The battery percent below which a floor role may not run work of this class."""
        if energy == "tiny":
            return 0.0
        return {
            "small": self.floor_small,
            "medium": self.floor_medium,
            "large": self.floor_large,
        }[energy]


DEFAULT_CONFIG = PolicyConfig()


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A device ruled out, by which constraint, and why in words."""

    device: DeviceView
    constraint: str
    detail: str

    def line(self) -> str:
        return f"{self.device.label}: {self.constraint}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A device that may run the kernel, with the parts of its score (seconds, joules)."""

    device: DeviceView
    cost_s: float
    latency_s: float
    network_s: float
    queue_s: float
    compute_s: float
    energy_j: float
    price: float
    over_budget: bool

    def line(self) -> str:
        d = self.device
        where = "here" if d.local else f"network {_ms(self.network_s)}"
        power = (
            f"battery {d.battery_percent:.0f}% (price x{self.price:.1f})"
            if d.on_battery
            else "mains"
        )
        budget = ", over the latency budget" if self.over_budget else ""
        queue = f", queue {_ms(self.queue_s)}" if self.queue_s else ""
        return (
            f"cost {_ms(self.cost_s)}: latency {_ms(self.latency_s)} (compute "
            f"{_ms(self.compute_s)}, {where}{queue}), energy {self.energy_j:.2g} J on {power}, "
            f"cpu {d.cpu_percent:.0f}%{budget}"
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a kernel should run: candidates best first, and the devices ruled out."""

    kernel: str
    needs: Needs
    candidates: tuple[Candidate, ...]
    excluded: tuple[Exclusion, ...]
    policy: str = "swarm"

    @property
    def ok(self) -> bool:
        return bool(self.candidates)

    @property
    def chosen(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def device(self) -> DeviceView | None:
        return self.candidates[0].device if self.candidates else None

    def refusal(self) -> str:
        """One line: why no device may run the kernel (empty if one may)."""
        if self.candidates:
            return ""
        what = f"{self.kernel} ({self.needs.scope} data, {self.needs.energy} work)"
        if not self.excluded:
            return f"no device may run {what}: no devices known"
        reasons = "; ".join(e.line() for e in self.excluded)
        return f"no device may run {what}: {reasons}"

    def check(self) -> Candidate:
        """The chosen candidate, or ``Refused`` naming each device's constraint."""
        if not self.candidates:
            raise Refused(self.refusal(), self)
        return self.candidates[0]

    def explain(self) -> list[dict[str, Any]]:
        """One entry per device: the chosen one first, then candidates, then those ruled out."""

        def entry(d: DeviceView, verdict: str, constraint: str | None) -> dict[str, Any]:
            return {
                "device": d.id,
                "name": d.name,
                "role": d.role,
                "executor": d.executor,
                "verdict": verdict,
                "constraint": constraint,
            }

        out: list[dict[str, Any]] = []
        for i, c in enumerate(self.candidates):
            out.append(
                {
                    **entry(c.device, "chosen" if i == 0 else "candidate", None),
                    "score_ms": _round_ms(c.cost_s),
                    "latency_ms": _round_ms(c.latency_s),
                    "network_ms": _round_ms(c.network_s),
                    "queue_ms": _round_ms(c.queue_s),
                    "compute_ms": _round_ms(c.compute_s),
                    "energy_j": round(c.energy_j, 6),
                    "energy_price": round(c.price, 3),
                    "over_budget": c.over_budget,
                    "reason": c.line(),
                }
            )
        for e in self.excluded:
            out.append(
                {**entry(e.device, "excluded", e.constraint), "score_ms": None, "reason": e.detail}
            )
        return out


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def _round_ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# -- the filter --------------------------------------------------------------------------------


def admit(
    kernel: str,
    needs: Needs,
    device: DeviceView,
    *,
    config: PolicyConfig = DEFAULT_CONFIG,
    failed: Mapping[str, str] | None = None,
) -> Exclusion | None:
    """The first constraint that rules ``device`` out of running ``kernel``, or None."""
    return _rule_out(kernel, needs, device, config, failed, every_rule=True)


def _rule_out(
    kernel: str,
    needs: Needs,
    device: DeviceView,
    config: PolicyConfig,
    failed: Mapping[str, str] | None,
    *,
    every_rule: bool,
) -> Exclusion | None:
    """``admit``; without ``every_rule``, only what no device could do anyway (the baselines:
    they ignore the kernel's scope, accelerator, memory and battery floor)."""
    if device.status != "alive":
        return Exclusion(device, "status", f"is {device.status}")
    if device.relay_only:
        return Exclusion(device, "relay_only", "a blind relay runs no kernels")
    if every_rule and needs.scope not in device.scopes:
        held = ",".join(device.scopes) or "none"
        return Exclusion(device, "scope", f"may not hold {needs.scope} data (scopes: {held})")
    if not device.runs_kernels:
        return Exclusion(device, "executor", f"runs no kernels (executor {device.executor!r})")
    if kernel not in device.kernels:
        return Exclusion(device, "kernel", f"does not have the kernel {kernel}")
    wanted = needs.accelerator
    if every_rule and wanted is not None and wanted not in device.accelerators:
        return Exclusion(device, "accelerator", f"has no {wanted}")
    if every_rule and device.memory_free_mb < needs.memory_mb:
        return Exclusion(
            device,
            "memory",
            f"{device.memory_free_mb:.0f} MB free, needs {needs.memory_mb:.0f} MB",
        )
    floored = device.role in config.floor_roles and device.on_battery
    if every_rule and floored and needs.energy != "tiny":
        floor = config.floor(needs.energy)
        battery = device.battery_percent
        assert battery is not None
        if battery < floor:
            return Exclusion(
                device,
                "battery",
                f"on battery at {battery:.0f}%, below the {floor:.0f}% floor "
                f"for {needs.energy} work",
            )
    if failed and device.id in failed:
        return Exclusion(device, "failed", f"failed this run: {failed[device.id]}")
    return None


# -- the score ---------------------------------------------------------------------------------


def _score(needs: Needs, d: DeviceView, work_s: float, config: PolicyConfig) -> Candidate:
    speed = config.speed[d.role] * (1.0 - config.load_slowdown * d.cpu_percent / 100.0)
    compute = work_s / speed
    if d.local:
        network = 0.0
    else:
        rtt = config.unknown_rtt_s if d.rtt_s is None else d.rtt_s
        network = rtt + config.remote_overhead_s
    queue = d.queue * compute
    latency = network + queue + compute
    energy = compute * config.watts[d.role]
    if d.on_battery:
        battery = d.battery_percent if d.battery_percent is not None else 0.0
        price = config.battery_price + config.battery_drain_price * (100.0 - battery)
    else:
        price = 1.0
    cost = latency + config.joule_s * energy * price
    if needs.stateful and d.on_battery:
        cost += config.stateful_battery_s
    return Candidate(
        device=d,
        cost_s=cost,
        latency_s=latency,
        network_s=network,
        queue_s=queue,
        compute_s=compute,
        energy_j=energy,
        price=price,
        over_budget=latency > needs.latency_budget_s,
    )


def _rank(c: Candidate) -> tuple[bool, float, str]:
    return (c.over_budget, c.cost_s, c.device.id)


def _check_view(view: Sequence[DeviceView]) -> None:
    ids = {d.id for d in view}
    if len(ids) != len(view):
        raise InvalidArgument("a view lists each device once")


def place(
    kernel: str,
    needs: Needs,
    view: Sequence[DeviceView],
    *,
    config: PolicyConfig = DEFAULT_CONFIG,
    compute_s: float | None = None,
    failed: Mapping[str, str] | None = None,
) -> Decision:
    """Where ``kernel`` with ``needs`` should run in ``view``.

    ``compute_s`` is this input's compute on the reference device (default ``needs.compute_s``);
    ``failed`` maps devices that already failed this run to what went wrong (re-placement).
    """
    return _place(kernel, needs, view, config, compute_s, failed, every_rule=True)


def _place(
    kernel: str,
    needs: Needs,
    view: Sequence[DeviceView],
    config: PolicyConfig,
    compute_s: float | None,
    failed: Mapping[str, str] | None,
    *,
    every_rule: bool,
) -> Decision:
    """``place``; without ``every_rule``, with the baselines' rules (see ``_rule_out``)."""
    _check_view(view)
    work = needs.compute_s if compute_s is None else compute_s
    candidates: list[Candidate] = []
    excluded: list[Exclusion] = []
    for d in view:
        out = _rule_out(kernel, needs, d, config, failed, every_rule=every_rule)
        if out is None:
            candidates.append(_score(needs, d, work, config))
        else:
            excluded.append(out)
    candidates.sort(key=_rank)
    excluded.sort(key=lambda e: e.device.id)
    return Decision(kernel, needs, tuple(candidates), tuple(excluded))


# -- baselines ---------------------------------------------------------------------------------


class Policy(Protocol):
    """What ``place`` and the baselines have in common, for a simulator to call."""

    def __call__(
        self,
        kernel: str,
        needs: Needs,
        view: Sequence[DeviceView],
        *,
        config: PolicyConfig = ...,
        compute_s: float | None = ...,
        failed: Mapping[str, str] | None = ...,
    ) -> Decision: ...


_Pick = Callable[[list[Candidate]], Candidate | None]


def _baseline(name: str) -> Callable[[_Pick], Policy]:
    """Turns how a baseline picks among the devices it may use (by id) into a ``Policy``."""

    def make(pick: _Pick) -> Policy:
        def decide(
            kernel: str,
            needs: Needs,
            view: Sequence[DeviceView],
            *,
            config: PolicyConfig = DEFAULT_CONFIG,
            compute_s: float | None = None,
            failed: Mapping[str, str] | None = None,
        ) -> Decision:
            able = _place(kernel, needs, view, config, compute_s, failed, every_rule=False)
            candidates = sorted(able.candidates, key=lambda c: c.device.id)
            chosen = pick(candidates)
            passed = [
                Exclusion(c.device, "baseline", f"not chosen by {name}")
                for c in candidates
                if c is not chosen
            ]
            excluded = sorted([*able.excluded, *passed], key=lambda e: e.device.id)
            return Decision(
                kernel, needs, (chosen,) if chosen else (), tuple(excluded), policy=name
            )

        decide.__name__ = decide.__qualname__ = pick.__name__
        decide.__doc__ = pick.__doc__
        return decide

    return make


@_baseline("always-local")
def always_local(able: list[Candidate]) -> Candidate | None:
    """Baseline: the deciding device, whatever it is."""
    return next((c for c in able if c.device.local), None)


@_baseline("always-server")
def always_server(able: list[Candidate]) -> Candidate | None:
    """Baseline: a server (the nearest, then by id); the deciding device if none is up."""
    servers = [c for c in able if c.device.role == "server"]
    if servers:
        return min(servers, key=lambda c: (c.network_s, c.device.id))
    return next((c for c in able if c.device.local), None)


@_baseline("latency-greedy")
def latency_greedy(able: list[Candidate]) -> Candidate | None:
    """Baseline: the lowest expected latency (RTT + queue + compute), nothing else."""
    return min(able, key=lambda c: (c.latency_s, c.device.id), default=None)


def random_policy(rng: random.Random) -> Policy:
    """Baseline: any device able to run kernels, uniformly, drawn from ``rng``."""

    @_baseline("random")
    def random_device(able: list[Candidate]) -> Candidate | None:
        return rng.choice(able) if able else None

    return random_device


def baselines(rng: random.Random) -> dict[str, Policy]:
    """Our policy and every baseline, by name, for a simulation to compare on one trace."""
    return {
        "swarm": place,
        "always-local": always_local,
        "always-server": always_server,
        "random": random_policy(rng),
        "latency-greedy": latency_greedy,
    }


def violations(decision: Decision, *, config: PolicyConfig = DEFAULT_CONFIG) -> list[Exclusion]:
    """The rules the chosen device breaks (for scoring baselines): ``[]`` for ``place``'s."""
    chosen = decision.device
    if chosen is None:
        return []
    broken = admit(decision.kernel, decision.needs, chosen, config=config)
    return [broken] if broken is not None else []
