"""Running a kernel where the policy says, re-placing once when that fails; serving others' runs.

``Runner.run`` is what ``swarm run`` does on the deciding device:

1. look the kernel up (``UnknownKernel``), raise its scope if asked (never lower it), validate
   the input (``InvalidInput``): all before anything is placed;
2. ``place`` it on the current view, with its cheaper variant when it names one that this
   device has (and that takes the input): a device low on battery runs that instead (the energy
   tiers of ``_policy``); no device allowed: ``Refused``, naming each device's constraint;
3. run it on the chosen device: the local executor, or the remote executor (a request to that
   peer, which checks it again under its own policy);
4. when that fails (the peer died or refused, a timeout, an executor error), place again on a
   fresh view with the failed device ruled out (constraint ``failed``), and run it there, once.
   If that fails too, or no other device may run it, ``RunFailed`` says what happened on each.

The kernel's own failure (``KernelFailed``) and a bad input are not re-placed: they would fail
the same way anywhere. Every attempt is reported in the ``RunOutcome``.

``Runner.serve`` is the receiving side: a member's request is checked against this device's own
policy (scope, relay, battery floor, memory...) and refused if it may not run it here, whatever
the requester believed; otherwise it runs on the local executor. It never raises: the reply says.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from homeswarm.errors import ProtocolViolation, RemoteError, TransportError
from homeswarm.kernels import (
    ExecutionError,
    InvalidInput,
    Kernel,
    KernelFailed,
    Registry,
    check_value,
    energy_rank,
    scope_rank,
)

from ._executors import Executor, ExecutorUnavailable, HeldKernel, RunResult
from ._policy import (
    DEFAULT_CONFIG,
    Calibration,
    Candidate,
    Decision,
    PolicyConfig,
    Variant,
    admit,
    place,
)
from ._remote import RunReply, RunRequest
from ._view import DeviceView

log = logging.getLogger("placement.runner")

Send = Callable[[DeviceView, RunRequest, float], Awaitable[RunReply]]
REPLACEMENTS = 1


class RunFailed(ExecutionError):
    """A kernel could not be run: it failed where it was placed, and again (or nowhere else)."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


@dataclass(frozen=True, slots=True)
class Attempt:
    """A device a run was placed on that failed, and how."""

    device: DeviceView
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device.label, "device_id": self.device.id, "error": self.error}


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A finished run: where it ran, what it gave, and what was tried before."""

    kernel: str
    scope: str
    device: DeviceView
    result: RunResult
    elapsed_s: float
    decision: Decision  # the first decision (what --explain shows)
    final: Decision  # the decision that placed the run that succeeded
    attempts: tuple[Attempt, ...]
    variant: str | None = None  # the cheaper variant that ran instead (the battery said so)

    def report(self) -> dict[str, Any]:
        """The ``swarm run --json`` object."""
        return {
            "kernel": self.kernel,
            "scope": self.scope,
            "device": self.device.label,
            "device_id": self.device.id,
            "executor": self.result.executor,
            "pid": self.result.pid,
            "result": self.result.output,
            "elapsed_ms": round(self.elapsed_s * 1000, 3),
            "explain": self.decision.explain(),
            "attempts": [a.to_json() for a in self.attempts],
            "variant": self.variant,
        }


@dataclass(frozen=True, slots=True)
class Observation:
    """A run's performance counters: where it ran, its compute as the kernel's declaration
    predicts it there, the compute measured (the executor's, or the remote reply's), and the time
    it waited on that device besides (remote: the round trip less the network and the compute;
    None when not known)."""

    kernel: str
    device: str
    label: str
    declared_s: float
    compute_s: float
    wait_s: float | None


class Runner:
    """Places and runs kernels for this device, and serves the runs others place here.

    With a ``calibration`` its decisions use the observed costs; ``observe`` is told each
    successful run's counters (an ``Observation``), to feed that calibration or anything else.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        view: Callable[[], Sequence[DeviceView]],
        local: Executor | None,
        send: Send,
        offered: Collection[str] | None = None,
        config: PolicyConfig = DEFAULT_CONFIG,
        timeout_s: float = 120.0,
        calibration: Calibration | None = None,
        observe: Callable[[Observation], None] | None = None,
    ) -> None:
        self.registry = registry
        self.calibration = calibration
        self.observe = observe
        self.view = view
        self.local = local
        self.send = send
        self.offered = set(registry.names() if offered is None else offered)
        self.config = config
        self.timeout_s = timeout_s
        self.inflight: Counter[str] = Counter()  # runs this device has placed, by device

    # ---- placing and running -----------------------------------------------------------------

    def prepare(self, name: str, value: Any, scope: str | None = None) -> tuple[Kernel, Any, str]:
        """The kernel, the checked input and the scope of a run (raises for bad ones)."""
        k = self.registry.get(name)
        needs = k.needs if scope is None else k.needs.with_scope(scope)
        return k, k.validate(value), needs.scope

    async def run(
        self,
        name: str,
        value: Any,
        *,
        scope: str | None = None,
        timeout_s: float | None = None,
    ) -> RunOutcome:
        start = trio.current_time()
        k, value, scope_ = self.prepare(name, value, scope)
        needs = k.needs.with_scope(scope_)
        work = k.compute_s(value)
        variant = self._variant(k, value, scope_)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        failed: dict[str, str] = {}
        attempts: list[Attempt] = []
        first: Decision | None = None
        for _ in range(1 + REPLACEMENTS):
            decision = place(
                name,
                needs,
                self.view(),
                config=self.config,
                compute_s=work,
                failed=failed,
                calibration=self.calibration,
                variant=variant,
            )
            if first is None:
                first = decision
                decision.check()  # Refused: no device may run it at all
            elif not decision.ok:
                raise RunFailed(f"{_tried(name, attempts)}; {decision.refusal()}")
            chosen = decision.check()
            device = chosen.device
            if self.calibration is not None:
                self.calibration.passed_over(name, device.id)  # the slow ones age (exploration)
            runs = self.registry.get(chosen.kernel) if chosen.variant else k
            try:
                result = await self._run_on(device, runs, value, scope_, timeout)
            except (InvalidInput, KernelFailed):
                raise
            except (ExecutionError, TransportError, RemoteError) as exc:
                error = one_line(exc)
                log.info("%s failed on %s: %s", name, device.label, error)
                failed[device.id] = error
                attempts.append(Attempt(device, error))
                continue
            if self.observe is not None:
                # its declared compute: the chosen one without the calibration's ratio
                ran = chosen.kernel or name
                ratios = self.calibration.ratios if self.calibration is not None else {}
                declared = chosen.compute_s / ratios.get((ran, device.id), 1.0)
                self.observe(_observation(ran, chosen, declared, result))
            return RunOutcome(
                name,
                scope_,
                device,
                result,
                trio.current_time() - start,
                first,
                decision,
                tuple(attempts),
                chosen.kernel if chosen.variant else None,
            )
        raise RunFailed(_tried(name, attempts))

    def _variant(self, k: Kernel, value: Any, scope: str) -> Variant | None:
        """``k``'s cheaper variant for this input, as ``place`` takes it; None when it names
        none, or one this device does not have, that is not cheaper, or that refuses the input."""
        if k.cheaper is None or k.cheaper not in self.registry:
            return None
        v = self.registry.get(k.cheaper)
        if energy_rank(v.needs.energy) >= energy_rank(k.needs.energy):
            log.info("%s: its variant %s is not cheaper (%s work)", k.name, v.name, v.needs.energy)
            return None
        try:
            checked = v.validate(value)
        except InvalidInput as exc:
            log.debug("%s: its variant %s refuses this input: %s", k.name, v.name, exc)
            return None
        needs = v.needs.with_scope(max(scope, v.needs.scope, key=scope_rank))
        return Variant(v.name, needs, v.compute_s(checked))

    async def _run_on(
        self, device: DeviceView, k: Kernel, value: Any, scope: str, timeout: float
    ) -> RunResult:
        self.inflight[device.id] += 1
        try:
            if device.local:
                if self.local is None:
                    raise ExecutorUnavailable("this device runs no kernels")
                return await self.local.run(k, value, timeout=timeout)
            start = trio.current_time()
            request = RunRequest(k.name, value, scope, timeout)
            reply = await self.send(device, request, timeout)
            output = reply.output_or_raise(device.label)
            try:
                check_value(output, f"{device.label}: output")
            except InvalidInput as exc:
                raise ProtocolViolation(str(exc)) from None
            elapsed = trio.current_time() - start
            return RunResult(output, reply.executor, reply.pid, elapsed, reply.elapsed_s)
        finally:
            self.inflight[device.id] -= 1
            if not self.inflight[device.id]:
                del self.inflight[device.id]

    # ---- serving -----------------------------------------------------------------------------

    async def serve(self, request: RunRequest, me: DeviceView) -> RunReply:
        """Run a member's request here if this device's own policy allows it; never raises."""
        name = request.kernel
        if name not in self.registry:
            return self._refuse("kernel", f"{me.label} does not have the kernel {name}")
        k = self.registry.get(name)
        scope = max(request.scope, k.needs.scope, key=scope_rank)
        needs = k.needs.with_scope(scope)
        try:
            value = k.validate(request.input)
        except InvalidInput as exc:
            return RunReply.failed("input", one_line(exc), self._hosts())
        ruled_out = admit(name, needs, me, config=self.config)
        if ruled_out is not None:
            why = f"{ruled_out.constraint}: {ruled_out.detail}"
            return self._refuse(ruled_out.constraint, f"{me.label} may not run {name}: {why}")
        if self.local is None:
            return self._refuse("executor", f"{me.label} runs no kernels")
        if name not in self.offered:
            return self._refuse("kernel", f"{me.label} does not offer the kernel {name}")
        timeout = min(request.timeout_s, self.timeout_s)
        try:
            result = await self.local.run(k, value, timeout=timeout)
        except InvalidInput as exc:
            return RunReply.failed("input", one_line(exc), self._hosts())
        except KernelFailed as exc:
            return RunReply.failed("kernel", one_line(exc), self._hosts())
        except ExecutionError as exc:
            return RunReply.failed("executor", one_line(exc), self._hosts())
        return RunReply(
            True,
            result.output,
            result.executor,
            result.pid,
            result.elapsed_s,
            hosts=self._hosts(),
        )

    def _refuse(self, constraint: str, error: str) -> RunReply:
        log.info("refused a run: %s", error)
        return RunReply.refused(constraint, error, self._hosts())

    def _hosts(self) -> tuple[HeldKernel, ...]:
        return tuple(self.local.hosts()) if self.local is not None else ()


def _tried(name: str, attempts: Sequence[Attempt]) -> str:
    parts = [f"on {a.device.label} ({a.error})" for a in attempts]
    return f"{name} failed " + " and ".join(parts)


def _observation(
    kernel: str, chosen: Candidate, uncalibrated: float, result: RunResult
) -> Observation:
    """``uncalibrated``: the chosen device's compute as the kernel's declaration predicts it."""
    d = chosen.device
    if d.local or result.compute_s is None:
        return Observation(kernel, d.id, d.label, uncalibrated, result.elapsed_s, None)
    wait = max(0.0, result.elapsed_s - chosen.network_s - result.compute_s)
    return Observation(kernel, d.id, d.label, uncalibrated, result.compute_s, wait)
