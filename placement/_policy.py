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
  ``accelerator`` the kernel needs an accelerator (``cuda``, ``mps``, ``gpu``: either) the device
                  lacks, or one with less memory than the kernel takes
  ``memory``      less free memory than the kernel needs
  ``battery``     on battery below its floor for the kernel's energy class (see the tiers)
  ``light``       a stateful kernel on a light member: its death would be seen only when its
                  lease lapses (up to 15 min), and its instance would wait that long to move
  ``failed``      it already failed this run (re-placement)

Energy tiers (the Sovereign seed's), one mechanism, the battery floor: a device on battery below
``tiny_only_below`` (20%) runs tiny work only; a phone (``floor_roles``) also has a floor per
class (small 30%, medium 50%, large 80%: configurable; the higher of the two applies). Tiny work
has no floor. Below ``prefer_cheaper_below`` (50%) a device on battery prefers small work: when
the kernel names a cheaper variant (``place(..., variant=...)``: another kernel of a lower energy
class taking the same input), that device runs the variant instead, and a device that the floor
rules out for the kernel may still run the variant. A variant's candidates rank after the
kernel's own at the same standing against the budget (the full kernel where a device can afford
it), and ``Candidate.kernel`` names what runs there.

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
ignore scopes and battery floors, which is what a simulation compares against. A stronger one,
``energy_greedy``, keeps every rule of the filter and takes the device whose run costs the least
energy (at the battery's price), whatever the latency.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from homeswarm.errors import InvalidArgument, LocalError
from homeswarm.kernels import ACCELERATORS, ANY_GPU, Needs, energy_rank

from ._view import NO_EXECUTOR, DeviceView

CONSTRAINTS = (
    "status",
    "relay_only",
    "scope",
    "executor",
    "kernel",
    "accelerator",
    "memory",
    "battery",
    "light",
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
    tiny_only_below: float = 20.0
    prefer_cheaper_below: float = 50.0
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
        for name in (
            "floor_small",
            "floor_medium",
            "floor_large",
            "tiny_only_below",
            "prefer_cheaper_below",
        ):
            value = getattr(self, name)
            if not 0 <= value <= 100:
                raise InvalidArgument(f"{name} must be between 0 and 100, got {value!r}")
        for table in (self.speed, self.watts):
            if any(v <= 0 for v in table.values()):
                raise InvalidArgument("speeds and watts must be positive")
        if not 0 <= self.load_slowdown < 1:
            raise InvalidArgument("load_slowdown must be at least 0 and below 1")

    def floor(self, energy: str, role: str) -> float:
        """The battery percent below which a device of ``role`` on battery may not run work of
        this class (the module's energy tiers)."""
        if energy == "tiny":
            return 0.0
        if role not in self.floor_roles:
            return self.tiny_only_below
        return max(
            self.tiny_only_below,
            {"small": self.floor_small, "medium": self.floor_medium, "large": self.floor_large}[
                energy
            ],
        )


DEFAULT_CONFIG = PolicyConfig()


_ID = attrgetter("id")
_NO_EXECUTOR = frozenset(NO_EXECUTOR)
_new = tuple.__new__  # builds a named tuple without its Python-level __new__, at a third the cost


class Exclusion(NamedTuple):
    """A device ruled out, by which constraint, and why in words. (A named tuple, not a frozen
    dataclass: a decision builds one per device ruled out, and a tuple is built four times as
    fast.)"""

    device: DeviceView
    constraint: str
    detail: str

    def line(self) -> str:
        return f"{self.device.label}: {self.constraint}: {self.detail}"


class Candidate(NamedTuple):
    """A device that may run the kernel, with the parts of its score (seconds, joules). (A named
    tuple, for the speed of building one per device, as ``Exclusion``.)"""

    device: DeviceView
    cost_s: float
    latency_s: float
    network_s: float
    queue_s: float
    compute_s: float
    energy_j: float
    price: float
    over_budget: bool
    kernel: str = ""  # the kernel that runs there: the one placed, or its cheaper variant
    variant: bool = False  # that kernel is the cheaper variant (the battery said so)

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
        cheaper = f"runs the cheaper variant {self.kernel} (low battery); " if self.variant else ""
        return (
            f"{cheaper}cost {_ms(self.cost_s)}: latency {_ms(self.latency_s)} (compute "
            f"{_ms(self.compute_s)}, {where}{queue}), energy {self.energy_j:.2g} J on {power}, "
            f"cpu {d.cpu_percent:.0f}%{budget}"
        )


class Decision:
    """Where a kernel should run: candidates best first, and the devices ruled out.

    Immutable once built. ``place`` builds it deferred: its loop keeps each device's score as a
    plain tuple and each exclusion as (id, device, constraint); the chosen candidate is the least
    of those tuples, and the ranked ``candidates`` and the worded ``excluded`` are built the
    first time they are read (an explanation costs more than the decision, and most decisions
    are never explained). Either way a decision reads, compares and hashes the same.
    """

    __slots__ = (
        "_candidates",
        "_excluded",
        "_ranked",
        "_ruled_out",
        "_why",
        "kernel",
        "needs",
        "policy",
        "variant",
    )

    def __init__(
        self,
        kernel: str,
        needs: Needs,
        candidates: tuple[Candidate, ...],
        excluded: tuple[Exclusion, ...],
        policy: str = "swarm",
    ) -> None:
        self.kernel = kernel
        self.needs = needs
        self.policy = policy
        self.variant: str | None = None
        self._candidates: tuple[Candidate, ...] | None = tuple(candidates)
        self._excluded: tuple[Exclusion, ...] | None = tuple(excluded)
        self._ranked: list[_Scored] = []
        self._ruled_out: list[tuple[str, DeviceView, str]] = []
        self._why: _Why | None = None

    @classmethod
    def _deferred(
        cls,
        kernel: str,
        needs: Needs,
        ranked: list[_Scored],
        ruled_out: list[tuple[str, DeviceView, str]],
        why: _Why,
        variant: str | None = None,
    ) -> Decision:
        self = cls.__new__(cls)
        self.kernel, self.needs, self.policy, self.variant = kernel, needs, "swarm", variant
        self._candidates = self._excluded = None
        self._ranked, self._ruled_out, self._why = ranked, ruled_out, why
        return self

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        if self._candidates is None:
            self._ranked.sort()
            self._candidates = tuple([_candidate(s) for s in self._ranked])
        return self._candidates

    @property
    def excluded(self) -> tuple[Exclusion, ...]:
        if self._excluded is None:
            why = self._why
            assert why is not None
            self._ruled_out.sort()
            self._excluded = tuple(
                [_new(Exclusion, (d, rule, why.detail(rule, d))) for _, d, rule in self._ruled_out]
            )
        return self._excluded

    @property
    def ok(self) -> bool:
        return bool(self._ranked if self._candidates is None else self._candidates)

    @property
    def chosen(self) -> Candidate | None:
        if self._candidates is None:
            return _candidate(min(self._ranked)) if self._ranked else None
        return self._candidates[0] if self._candidates else None

    @property
    def device(self) -> DeviceView | None:
        if self._candidates is None:
            return min(self._ranked)[3] if self._ranked else None
        return self._candidates[0].device if self._candidates else None

    def _key(self) -> tuple[Any, ...]:
        return (self.kernel, self.needs, self.candidates, self.excluded, self.policy, self.variant)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Decision(kernel={self.kernel!r}, needs={self.needs!r}, "
            f"candidates={self.candidates!r}, excluded={self.excluded!r}, policy={self.policy!r})"
        )

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
        chosen = self.chosen
        if chosen is None:
            raise Refused(self.refusal(), self)
        return chosen

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
                    "kernel": c.kernel,
                    "variant": c.variant,
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


# -- the filter and the score ------------------------------------------------------------------


def admit(
    kernel: str,
    needs: Needs,
    device: DeviceView,
    *,
    config: PolicyConfig = DEFAULT_CONFIG,
    failed: Mapping[str, str] | None = None,
) -> Exclusion | None:
    """The first constraint that rules ``device`` out of running ``kernel``, or None."""
    decision = _place(kernel, needs, (device,), config, None, failed, every_rule=True)
    return decision.excluded[0] if decision.excluded else None


def place(
    kernel: str,
    needs: Needs,
    view: Sequence[DeviceView],
    *,
    config: PolicyConfig = DEFAULT_CONFIG,
    compute_s: float | None = None,
    failed: Mapping[str, str] | None = None,
    calibration: Calibration | None = None,
    variant: Variant | None = None,
) -> Decision:
    """Where ``kernel`` with ``needs`` should run in ``view``.

    ``compute_s`` is this input's compute on the reference device (default ``needs.compute_s``);
    ``failed`` maps devices that already failed this run to what went wrong (re-placement);
    ``calibration`` scales each device's compute (and so its latency and energy) by what runs
    of this kernel there have shown (none yet: the declaration, unscaled); ``variant`` is the
    kernel's cheaper variant, which devices low on battery run instead (the energy tiers).
    """
    ratios = calibration.ratios if calibration is not None else None
    decision = _place(
        kernel, needs, view, config, compute_s, failed, every_rule=True, ratios=ratios
    )
    if variant is None:
        return decision
    return _cheaper(decision, variant, config, failed, ratios)


class Variant(NamedTuple):
    """A kernel's cheaper variant as ``place`` takes it: its name, its needs (a lower energy
    class; the run's scope) and this input's compute on the reference device (None: its
    declaration's)."""

    kernel: str
    needs: Needs
    compute_s: float | None = None


def _cheaper(
    decision: Decision,
    variant: Variant,
    config: PolicyConfig,
    failed: Mapping[str, str] | None,
    ratios: Mapping[tuple[str, str], float] | None,
) -> Decision:
    """``decision`` with the devices low on battery running ``variant``: those below
    ``prefer_cheaper_below`` among its candidates, and those its battery floor ruled out, where
    the variant passes every rule (elsewhere they stay as they were)."""
    name, vneeds, work = variant
    if energy_rank(vneeds.energy) >= energy_rank(decision.needs.energy):
        raise InvalidArgument(
            f"{name} is not a cheaper variant of {decision.kernel}: it is {vneeds.energy} work, "
            f"{decision.kernel} {decision.needs.energy}"
        )
    prefer = config.prefer_cheaper_below
    again = [d for _, d, rule in decision._ruled_out if rule == "battery"]
    for s in decision._ranked:
        d = s[3]
        if (b := d.battery_percent) is not None and d.plugged is not True and b < prefer:
            again.append(d)
    if not again:
        return decision
    cheap = _place(
        name, vneeds, again, config, work, failed, every_rule=True, ratios=ratios, tier=1
    )
    took = {s[2] for s in cheap._ranked}
    if not took:
        return decision
    ranked = [s for s in decision._ranked if s[2] not in took] + cheap._ranked
    ruled_out = [e for e in decision._ruled_out if e[0] not in took]
    assert decision._why is not None
    return Decision._deferred(
        decision.kernel, decision.needs, ranked, ruled_out, decision._why, variant=name
    )


def _place(
    kernel: str,
    needs: Needs,
    view: Sequence[DeviceView],
    config: PolicyConfig,
    compute_s: float | None,
    failed: Mapping[str, str] | None,
    *,
    every_rule: bool,
    ratios: Mapping[tuple[str, str], float] | None = None,
    tier: int = 0,
) -> Decision:
    """``place``; without ``every_rule``, only what no device could do anyway (the baselines:
    they ignore the kernel's scope, accelerator, memory and battery floor).

    One pass over the view, the filter's rules in the module's order, then the score of each
    device that passes; written as one flat loop with everything that depends only on the
    kernel, its needs and the config hoisted out of it (a decision at 100 devices is a hundred
    trips through this loop: a function call or a property per device would double it).
    """
    if len(set(map(_ID, view))) != len(view):
        raise InvalidArgument("a view lists each device once")
    work = needs.compute_s if compute_s is None else compute_s
    scope = needs.scope
    wanted = needs.accelerator if every_rule else None
    kinds = None if wanted is None else frozenset(ACCELERATORS if wanted == ANY_GPU else (wanted,))
    accel_mb = needs.accelerator_mb
    memory = needs.memory_mb if every_rule else -math.inf
    energy_class = needs.energy
    floor_roles = config.floor_roles
    # the floor of a role in floor_roles (the same for each of them), and any other device's
    floor = config.floor(energy_class, floor_roles[0]) if every_rule and floor_roles else 0.0
    floor_any = config.floor(energy_class, "") if every_rule else 0.0
    floor_top = max(floor, floor_any)
    under_rank, over_rank = tier, 2 + tier  # within the budget first; a variant after
    budget = needs.latency_budget_s
    stateful = needs.stateful and every_rule
    stateful_s = config.stateful_battery_s if needs.stateful else 0.0
    speed, watts = config.speed, config.watts
    slowdown = config.load_slowdown
    unknown_rtt = config.unknown_rtt_s
    overhead = config.remote_overhead_s
    joule_s = config.joule_s
    price0, drain = config.battery_price, config.battery_drain_price
    failed = failed or {}
    ranked: list[_Scored] = []
    out: list[tuple[str, DeviceView, str]] = []  # (id, device, constraint): worded when read
    for d in view:
        if d.status != "alive":
            out.append((d.id, d, "status"))
        elif d.relay_only:
            out.append((d.id, d, "relay_only"))
        elif every_rule and scope not in d.scopes:
            out.append((d.id, d, "scope"))
        elif d.executor in _NO_EXECUTOR:
            out.append((d.id, d, "executor"))
        elif kernel not in d.kernels:
            out.append((d.id, d, "kernel"))
        elif kinds is not None and (
            kinds.isdisjoint(d.accelerators) or d.accelerator_mb < accel_mb
        ):
            out.append((d.id, d, "accelerator"))
        elif d.memory_free_mb < memory:
            out.append((d.id, d, "memory"))
        elif (
            (battery := d.battery_percent) is not None
            and d.plugged is not True
            and battery < floor_top
            and battery < (floor if d.role in floor_roles else floor_any)
        ):
            out.append((d.id, d, "battery"))
        elif stateful and d.light:
            out.append((d.id, d, "light"))
        elif d.id in failed:
            out.append((d.id, d, "failed"))
        else:  # the score
            role = d.role
            compute = work / (speed[role] * (1.0 - slowdown * d.cpu_percent / 100.0))
            if ratios:
                compute *= ratios.get((kernel, d.id), 1.0)
            if d.local:
                network = 0.0
            else:
                rtt = d.rtt_s
                network = (unknown_rtt if rtt is None else rtt) + overhead
            queue = d.queue * compute
            latency = network + queue + compute
            energy = compute * watts[role]
            if battery is not None and d.plugged is not True:
                price = price0 + drain * (100.0 - battery)
                cost = latency + joule_s * energy * price + stateful_s
            else:
                price = 1.0
                cost = latency + joule_s * energy * price
            # ranked by (over the budget and tier, cost, id): plain tuples, compared in C (ids
            # are unique, so a comparison never reaches the device)
            rank = over_rank if latency > budget else under_rank
            ranked.append(
                (rank, cost, d.id, d, latency, network, queue, compute, energy, price, kernel)
            )
    return Decision._deferred(
        kernel, needs, ranked, out, _new(_Why, (kernel, needs, config, failed or None))
    )


# a candidate as ``_place`` keeps it: (rank: 2 if over the budget, + 1 for a cheaper variant;
# cost, id, device, latency, network, queue, compute, energy, price, the kernel that runs)
_Scored = tuple[int, float, str, DeviceView, float, float, float, float, float, float, str]


def _candidate(s: _Scored) -> Candidate:
    rank, cost, _, d, latency, network, queue, compute, energy, price, kernel = s
    return _new(
        Candidate,
        (
            d,
            cost,
            latency,
            network,
            queue,
            compute,
            energy,
            price,
            rank >= 2,
            kernel,
            rank % 2 == 1,
        ),
    )


class _Why(NamedTuple):
    """What the words of an exclusion need besides the device."""

    kernel: str
    needs: Needs
    config: PolicyConfig
    failed: Mapping[str, str] | None

    def detail(self, constraint: str, d: DeviceView) -> str:
        needs = self.needs
        if constraint == "status":
            return f"is {d.status}"
        if constraint == "relay_only":
            return "a blind relay runs no kernels"
        if constraint == "scope":
            held = ",".join(d.scopes) or "none"
            return f"may not hold {needs.scope} data (scopes: {held})"
        if constraint == "executor":
            return f"runs no kernels (executor {d.executor!r})"
        if constraint == "kernel":
            return f"does not have the kernel {self.kernel}"
        if constraint == "accelerator":
            wanted = needs.accelerator
            has = d.accelerator_label
            if (wanted == ANY_GPU and d.accelerators) or wanted in d.accelerators:
                return f"its {has} has less than the {needs.accelerator_mb:.0f} MB it needs"
            wanted = "cuda or mps" if wanted == ANY_GPU else wanted
            return f"has no {wanted} accelerator" + (f" (it has {has})" if has else "")
        if constraint == "memory":
            return f"{d.memory_free_mb:.0f} MB free, needs {needs.memory_mb:.0f} MB"
        if constraint == "battery":
            floor = self.config.floor(needs.energy, d.role)
            return (
                f"on battery at {d.battery_percent:.0f}%, below the {floor:.0f}% floor "
                f"for {needs.energy} work"
            )
        if constraint == "light":
            return "a light member (its lease hides its death for minutes) holds no stateful work"
        assert self.failed is not None
        return f"failed this run: {self.failed[d.id]}"


# -- calibration -------------------------------------------------------------------------------


@dataclass(slots=True)
class Estimate:
    """Observed over predicted compute of one kernel on one device: an exponentially weighted
    mean and variance (West, 1979) over ``runs`` runs; 1.0 before any run (the declaration)."""

    ratio: float = 1.0
    var: float = 0.0
    runs: int = 0
    passed: int = 0  # decisions made without this device since its last run (``passed_over``)

    @property
    def sd(self) -> float:
        return math.sqrt(self.var)


class Calibration:
    """Performance counters that teach the policy: per (kernel, device id), how much longer (or
    shorter) runs took than the policy predicted, from the declaration on.

    ``observe(kernel, device, predicted_s, observed_s)`` takes a run's compute as the decision
    predicted it (with this calibration) and as it was measured; the weight of a new run is
    ``1 / runs`` for the first ``1 / alpha`` runs (a plain mean: no cold-start bias) and
    ``alpha`` after (it follows a device that changes). A ratio reaches ``ratios`` (what
    ``place`` reads) once ``min_runs`` runs back it: one run can be an anecdote (a model loading,
    a page fault). Pure: no clock, no I/O.

    Exploration: a device that ran slow is passed over, so it would never be measured again,
    whatever changed there (a hog gone, a charger plugged in). Evidence ages instead: every
    ``explore_after`` decisions made without a device its ratio above 1 moves halfway back to
    the declaration (in log terms: its square root), until a decision picks it again and a run
    says what it is now. How soon depends on what it lost by: a server that ran 3 x slow once
    and is 15 % faster than the laptop when well is tried again after three agings (3 -> 1.73
    -> 1.32 -> 1.15), and keeps the work if it is well again.
    """

    def __init__(self, *, alpha: float = 0.2, min_runs: int = 1, explore_after: int = 20) -> None:
        if not 0 < alpha <= 1:
            raise InvalidArgument(f"alpha must be in (0, 1], got {alpha!r}")
        self.alpha = alpha
        self.min_runs = min_runs  # runs that must back a ratio before ``place`` sees it
        self.explore_after = explore_after
        self.estimates: dict[tuple[str, str], Estimate] = {}
        self.ratios: dict[tuple[str, str], float] = {}  # what ``place`` reads
        self._slow: dict[str, set[str]] = {}  # kernel -> devices whose ratio is above 1

    def observe(self, kernel: str, device: str, predicted_s: float, observed_s: float) -> Estimate:
        key = (kernel, device)
        e = self.estimates.get(key)
        if e is None:
            e = self.estimates[key] = Estimate()
        if not (predicted_s > 0 and observed_s >= 0 and math.isfinite(observed_s)):
            return e
        x = observed_s / predicted_s * e.ratio  # the uncalibrated prediction's ratio
        e.runs += 1
        w = max(self.alpha, 1.0 / e.runs)
        delta = x - e.ratio
        e.ratio += w * delta
        e.var = (1.0 - w) * (e.var + w * delta * delta)
        e.passed = 0
        if e.runs >= self.min_runs:
            self._publish(kernel, device, e)
        return e

    def _publish(self, kernel: str, device: str, e: Estimate) -> None:
        self.ratios[(kernel, device)] = e.ratio
        slow = self._slow.setdefault(kernel, set())
        if e.ratio > 1.0:
            slow.add(device)
        else:
            slow.discard(device)

    def passed_over(self, kernel: str, chosen: str) -> None:
        """A decision placed ``kernel`` on ``chosen``: every other device it holds slow ages."""
        for device in list(self._slow.get(kernel, ())):
            if device == chosen:
                continue
            e = self.estimates[(kernel, device)]
            e.passed += 1
            if e.passed >= self.explore_after:
                e.passed = 0
                e.ratio = math.sqrt(e.ratio) if e.ratio > 1.01 else 1.0
                self._publish(kernel, device, e)

    def learn(self, kernel: str, device: str, declared_s: float, observed_s: float) -> Estimate:
        """``observe`` from the declaration: a run of ``kernel`` on ``device`` declared to take
        ``declared_s`` (no calibration applied) took ``observed_s``."""
        e = self.estimates.get((kernel, device))
        return self.observe(kernel, device, declared_s * (e.ratio if e else 1.0), observed_s)

    def stats(self) -> list[dict[str, Any]]:
        """One row per (kernel, device): runs, observed/declared ratio and its spread."""
        return [
            {
                "kernel": k,
                "device": d,
                "runs": e.runs,
                "ratio": round(e.ratio, 4),
                "sd": round(e.sd, 4),
            }
            for (k, d), e in sorted(self.estimates.items())
        ]


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


def _baseline(name: str, *, every_rule: bool = False) -> Callable[[_Pick], Policy]:
    """Turns how a baseline picks among the devices it may use (by id) into a ``Policy``;
    with ``every_rule``, the devices it may use are those ``place`` allows."""

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
            able = _place(kernel, needs, view, config, compute_s, failed, every_rule=every_rule)
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


@_baseline("energy-greedy", every_rule=True)
def energy_greedy(able: list[Candidate]) -> Candidate | None:
    """Baseline: among the devices our policy allows (scopes, floors, memory...), the one whose
    run takes the least energy, weighed by the price of a battery's charge; latency ignored."""
    return min(able, key=lambda c: (c.energy_j * c.price, c.device.id), default=None)


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
        "energy-greedy": energy_greedy,
    }


def violations(decision: Decision, *, config: PolicyConfig = DEFAULT_CONFIG) -> list[Exclusion]:
    """The rules the chosen device breaks (for scoring baselines): ``[]`` for ``place``'s."""
    chosen = decision.device
    if chosen is None:
        return []
    broken = admit(decision.kernel, decision.needs, chosen, config=config)
    return [broken] if broken is not None else []
