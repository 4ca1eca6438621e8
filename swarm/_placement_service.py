"""The placement service: kernels placed, run and served by this device's peer.

It is the I/O shell around ``placement.Runner``:

- the view: every member this peer knows, as ``DeviceView``s built from membership (status,
  measured RTT), the roster (name, role) and each device's gossiped state (power, load, scopes,
  relay_only, executor, kernels), plus the runs in flight from here (queue); what a device may
  hold is its CERTIFICATE's (``entitled_scopes``: the scopes it claims that its certificate
  allows; a relay by either its certificate or its claim), as the vault seals, so a device
  whose edited swarm.toml claims more is never a candidate for data it may not hold;
- the local executor: ``[placement] executor`` (auto: Ray on a laptop or server where Ray is
  installed, inline on a phone), whose name and kernels this device gossips as its capabilities;
- the remote executor: a ``kernels.run`` request over the peer's transport (an open connection
  to that member, else a new dial); replies also say which kernels that device holds;
- a member's ``kernels.run`` request: checked against this device's own policy and run here, or
  refused (``placement.Runner.serve``);
- CLI requests over the control socket: ``kernels.run`` (``swarm run``), ``kernels.list`` and
  ``kernels.status`` (``swarm kernels``), ``kernels.stats`` (``--stats``), ``kernels.start`` and
  ``kernels.ps`` (the mesh);
- the performance counters: each run placed from here (``Runner``'s ``observe``) is observed (where
  it ran, the compute predicted, declared and measured, the wait on a remote device), feeding the
  ``Calibration`` the policy places with and the ``RunLedger``'s per (kernel, device) stats;
- the kernel mesh (``placement.Mesh``): this device's long-lived instances, placed in batches;
  every ``MESH_CHECK_S`` the service re-places the instances of a home that died
  (``replace_dead``) and rebalances when a device's power, scopes or capabilities (or the roster)
  changed (``check_mesh``).

``status()`` (for ``swarm status --json``, under "kernels"): this device's executor and offered
kernels, and the kernels each device holds as far as this peer knows (itself: now; others: as
their last reply said, ``heard_s`` ago)::

    {"executor": "ray", "kernels": ["classify", "embed"],
     "held": [{"device": ID, "kernel": "embed", "executor": "ray", "pid": 4242, "runs": 3,
               "running": 0, "heard_s": 1.5}, ...]}
"""

from __future__ import annotations

import base64
import collections
import importlib.util
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from homeswarm.errors import InvalidArgument, ProtocolViolation, SwarmError
from homeswarm.kernels import (
    Kernel,
    Registry,
    default_registry,
)
from homeswarm.placement import (
    MESH_STATES,
    Calibration,
    DeviceView,
    Executor,
    ExecutorUnavailable,
    FallbackExecutor,
    HeldKernel,
    InlineExecutor,
    Mesh,
    MeshChange,
    Observation,
    PolicyConfig,
    RayExecutor,
    RayRuntime,
    Runner,
    RunOutcome,
    RunReply,
    RunRequest,
    RunResult,
)

from ._certs import Certificate
from ._config import PlacementSettings, Settings
from ._device import MAX_KERNEL_CHARS, MAX_KERNELS, MAX_KERNELS_TOTAL, decode_state
from ._home import write_atomically
from ._service import Service

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from homeswarm.transports import Connection

    from ._peer import Peer

log = logging.getLogger("swarm.placement")

REPLY_MARGIN_S = 5.0  # a remote run's reply may take this much longer than the run itself
CLOSE_TIMEOUT_S = 1.5  # stopping the executor (Ray's shutdown) may take this long, at most
HEARD_MAX = 512  # devices whose hosts we remember
MESH_CHECK_S = 1.0  # how often the mesh looks for dead homes and power changes
MIN_RUNS = 3  # runs of a kernel on a device before what they showed reaches the policy
MAX_START = 1_000_000  # instances one `swarm kernels start` may add
MESH_FILE = "mesh"  # HOME/mesh: the kernel mesh's registry (``Mesh.registry``)
GONE = ("dead", "left")  # a home in one of these (or out of the view): its instances move


__all__ = [
    "PlacementService",
    "device_capabilities",
    "executor_kind",
    "keep_mesh",
    "policy_config",
]


def policy_config(settings: PlacementSettings) -> PolicyConfig:
    return PolicyConfig(
        floor_small=settings.floor_small,
        floor_medium=settings.floor_medium,
        floor_large=settings.floor_large,
        tiny_only_below=settings.tiny_only_below,
        prefer_cheaper_below=settings.prefer_cheaper_below,
    )


def entitled_scopes(
    claimed: Sequence[str], cert: Certificate | None, conflicted: bool
) -> tuple[str, ...]:
    """The scopes placement may count on a device for: what it gossips it holds, narrowed by
    what its certificate allows (as the vault seals: nothing for a relay, for a device without
    a certificate, or for one whose age key is in doubt). A claim is never permission."""
    if cert is None or conflicted:
        return ()
    allowed = cert.readable()
    return tuple(s for s in claimed if s in allowed)


def executor_kind(settings: Settings) -> str:
    """``inline``, ``ray`` or ``none``: what ``[placement] executor`` means on this device."""
    kind = settings.placement.executor
    if kind != "auto":
        return kind
    if settings.device.relay_only:
        return "none"
    if settings.device.role == "phone" or importlib.util.find_spec("ray") is None:
        return "inline"
    return "ray"


def offered_kernels(settings: PlacementSettings, registry: Registry) -> tuple[str, ...]:
    """The kernels this device offers: installed, allowed by settings, fitting the gossip."""
    names = [n for n in registry.available() if not settings.kernels or n in settings.kernels]
    kept: list[str] = []
    total = 0
    for name in names:
        if len(kept) >= MAX_KERNELS or len(name) > MAX_KERNEL_CHARS:
            continue
        if total + len(name) > MAX_KERNELS_TOTAL:
            continue
        kept.append(name)
        total += len(name)
    if len(kept) < len(names):
        log.warning(
            "offering %d of %d kernels (the device state has room for no more)",
            len(kept),
            len(names),
        )
    return tuple(kept)


def device_capabilities(
    settings: Settings, registry: Registry | None = None
) -> tuple[str, tuple[str, ...]]:
    """``(executor, kernels)`` for ``PeerOptions``: what this device gossips it can run."""
    kind = executor_kind(settings)
    if kind == "none":
        return kind, ()
    return kind, offered_kernels(settings.placement, registry or default_registry())


def _make_executor(
    kind: str, settings: PlacementSettings, on_switch: Callable[[str], None]
) -> Executor | None:
    if kind == "none":
        return None
    if kind == "ray":
        runtime = RayRuntime(settings.ray_address, settings.ray_num_cpus)
        ray = RayExecutor(runtime, trusted=settings.ray_trusted)
        if settings.executor == "auto":  # Ray was our guess: if it will not start, run inline
            return FallbackExecutor(ray, InlineExecutor(), on_switch)
        return ray
    return InlineExecutor()


class PlacementService(Service):
    """Places and runs kernels for this device; runs what members place here, if allowed."""

    name = "kernels"

    def __init__(
        self,
        settings: Settings,
        *,
        registry: Registry | None = None,
        executor: Executor | None = None,
        kind: str | None = None,
    ) -> None:
        self.settings = settings.placement
        self.registry = registry if registry is not None else default_registry()
        if executor is None:
            kind = kind or executor_kind(settings)
            executor = _make_executor(kind, self.settings, self._executor_changed)
        self.executor = executor
        self.offered = (
            () if self.executor is None else offered_kernels(self.settings, self.registry)
        )
        self.config = policy_config(self.settings)
        self.peer: Peer | None = None
        self.calibration = Calibration(min_runs=MIN_RUNS)
        self.ledger = RunLedger()
        self.runner = Runner(
            self.registry,
            view=self.view,
            local=self.executor,
            send=self._send,
            offered=self.offered,
            config=self.config,
            timeout_s=self.settings.run_timeout_s,
            calibration=self.calibration,
            observe=self._observed,
        )
        self._heard: dict[str, tuple[float, tuple[HeldKernel, ...]]] = {}
        self.mesh = Mesh(config=self.config)
        self._homes: dict[str, tuple[Any, ...]] = {}  # what each home looked like last check
        self._roster_moved = False

    @property
    def executor_name(self) -> str:
        return self.executor.name if self.executor is not None else "none"

    def _executor_changed(self, name: str) -> None:
        """The local executor fell back to another: gossip the truth."""
        if self.peer is not None and self.peer.core is not None:
            self.peer.options.executor = name
            self.peer.refresh_state(force=True)

    # ---- running -----------------------------------------------------------------------------

    async def run(self, peer: Peer, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.peer = peer
        self._load_mesh()
        options = peer.options
        if options.executor != self.executor_name or tuple(options.kernels) != self.offered:
            # what this device gossips it can run is what this service really runs
            options.executor = self.executor_name
            options.kernels = self.offered
            peer.refresh_state(force=True)
        task_status.started()
        try:
            while True:
                await trio.sleep(MESH_CHECK_S)
                self.check_mesh()
        finally:
            if self.executor is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                    await self.executor.aclose()

    def _observed(self, observation: Observation) -> None:
        """A run placed from here finished: its counters teach the calibration."""
        o = observation
        if o.compute_s <= 0:
            return  # nothing measured (a clock too coarse for the run): no lesson in it
        # the first run of a kernel on a device is a cold start (Ray's actor, a model loading:
        # seconds, once): counted, but it does not teach what the next runs will take
        if self.ledger.observe(o):
            self.calibration.learn(o.kernel, o.device, o.declared_s, o.compute_s)

    def roster_changed(self, devices: list[str]) -> None:
        self._roster_moved = True

    # ---- the mesh's registry on disk (HOME/mesh): the instances outlive a restart ------------

    def _mesh_path(self) -> Path | None:
        peer = self.peer
        return peer.identity.home / MESH_FILE if peer is not None and peer.options.persist else None

    def _load_mesh(self) -> None:
        path = self._mesh_path()
        if path is None or not path.exists():
            return
        try:
            self.mesh = Mesh.restore(path.read_bytes(), config=self.config)
        except (OSError, InvalidArgument) as exc:
            log.warning("the kernel mesh in %s is not readable (%s): starting with none", path, exc)
            return
        log.info("the kernel mesh: %d instances from %s, to be placed", self.mesh.live(), path)

    def _save_mesh(self) -> None:
        path = self._mesh_path()
        if path is not None:
            write_atomically(path, self.mesh.registry())

    # ---- the mesh ----------------------------------------------------------------------------

    def check_mesh(self) -> list[MeshChange]:
        """Move the instances of homes that died and rebalance on a change (``keep_mesh``).
        Moved instances resume at once: an instance here is a registry entry, with no process
        to carry over."""
        if not len(self.mesh):
            return []
        changes, self._homes = keep_mesh(self.mesh, self.view(), self._homes, self._roster_moved)
        self._roster_moved = False
        if changes:
            self._settle()
        return changes

    def _settle(self) -> None:
        migrating = MESH_STATES.index("migrating")
        self.mesh.settle((self.mesh.column("state") == migrating).nonzero()[0])

    def _start(self, args: dict[str, Any]) -> dict[str, Any]:
        kernel = args.get("kernel")
        if not isinstance(kernel, str) or not kernel:
            raise InvalidArgument("start: name a kernel (see `swarm kernels`)")
        count = args.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_START:
            raise InvalidArgument(f"start: the count must be a whole number from 1 to {MAX_START}")
        scope = args.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise InvalidArgument("start: scope must be public, personal or private")
        k = self.registry.get(kernel)
        needs = k.needs if scope is None else k.needs.with_scope(scope)
        ids = self.mesh.add(kernel, needs, count)
        self._save_mesh()
        change = self.mesh.place(self.view(), ids)
        return {
            "kernel": kernel,
            "scope": needs.scope,
            "ids": [int(ids[0]), int(ids[-1])],
            **change.to_json(),
        }

    def _stop(self, args: dict[str, Any]) -> dict[str, Any]:
        kernel = args.get("kernel")
        if not isinstance(kernel, str) or not kernel:
            raise InvalidArgument("stop: name a kernel (see `swarm kernels ps`)")
        count = args.get("count")
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise InvalidArgument("stop: the count must be a whole number from 1")
        ids = self.mesh.stop(kernel, count)
        if not len(ids):
            raise InvalidArgument(f"stop: no {kernel} instances are running or waiting")
        self._save_mesh()
        log.info("stopped %d %s instances", len(ids), kernel)
        return {"kernel": kernel, "stopped": len(ids), "left": self.mesh.live()}

    def _ps(self) -> dict[str, Any]:
        return {"instances": self.mesh.ps(), "total": self.mesh.live()}

    def _stats(self) -> dict[str, Any]:
        return {"stats": self.ledger.stats(self.calibration)}

    # ---- the view ----------------------------------------------------------------------------

    def view(self) -> list[DeviceView]:
        """Every member this peer knows with a state, as the policy sees it."""
        peer = self.peer
        if peer is None or peer.core is None:
            return []
        me = peer.identity.device_id
        out: list[DeviceView] = []
        conflicted = peer.roster.conflicted()
        for node, member in peer.core.members.items():
            local = node == me
            if local:
                state = peer.state
            elif not peer.roster.admits(node) or not member.state:
                continue
            else:
                state = decode_state(member.state)
            if state is None:
                continue
            cert = peer.roster.certificate(node)
            if local:
                queue = sum(h.running for h in self.executor.hosts()) if self.executor else 0
            else:
                queue = self.runner.inflight.get(node, 0)
            out.append(
                DeviceView(
                    id=node,
                    name=cert.name if cert else state.name,
                    role=cert.role if cert else state.role,
                    status=member.status,
                    battery_percent=state.battery_percent,
                    plugged=state.plugged,
                    cpu_percent=state.cpu_percent,
                    memory_free_mb=state.memory_free_mb,
                    scopes=entitled_scopes(state.scopes, cert, node in conflicted),
                    relay_only=state.relay_only or cert is None or cert.relay_only,
                    executor=state.executor,
                    kernels=state.kernels,
                    accelerators=(state.accelerator,) if state.accelerator else (),
                    accelerator_mb=state.accelerator_mb,
                    rtt_s=0.0 if local else member.rtt,
                    queue=queue,
                    local=local,
                    light=member.light,
                )
            )
        return out

    def me(self) -> DeviceView | None:
        return next((d for d in self.view() if d.local), None)

    # ---- remote runs -------------------------------------------------------------------------

    async def _send(self, device: DeviceView, request: RunRequest, timeout: float) -> RunReply:
        peer = self.peer
        assert peer is not None
        assert peer.transport is not None
        transport = peer.transport
        open_ = transport.connections(device.id)
        conn = open_[0] if open_ else await transport.dial(device.id, peer.addrs_of(device.id))
        body = await conn.request(request.to_wire(), timeout=timeout + REPLY_MARGIN_S)
        reply = RunReply.from_wire(body)
        self._remember(device.id, reply.hosts)
        return reply

    def _remember(self, device: str, hosts: tuple[HeldKernel, ...]) -> None:
        self._heard.pop(device, None)
        self._heard[device] = (trio.current_time(), hosts)
        while len(self._heard) > HEARD_MAX:
            del self._heard[next(iter(self._heard))]

    async def handle(self, conn: Connection, op: str, body: dict[str, Any]) -> Any:
        if op != "run":
            raise ProtocolViolation(f"unknown operation kernels.{op}")
        request = RunRequest.from_wire(body)
        me = self.me()
        if me is None:
            reply = RunReply.refused("status", "this device is still starting")
        else:
            reply = await self.runner.serve(request, me)
        return reply.to_wire()

    # ---- the CLI -----------------------------------------------------------------------------

    async def control(self, op: str, args: dict[str, Any]) -> Any:
        if op == "run":
            return await self._run(args)
        if op == "list":
            return self._list()
        if op == "status":
            return self._status()
        if op == "start":
            return self._start(args)
        if op == "stop":
            return self._stop(args)
        if op == "ps":
            return self._ps()
        if op == "stats":
            return self._stats()
        raise InvalidArgument(f"unknown request kernels.{op}")

    async def _run(self, args: dict[str, Any]) -> dict[str, Any]:
        kernel = args.get("kernel")
        if not isinstance(kernel, str) or not kernel:
            raise InvalidArgument("run: name a kernel (see `swarm kernels`)")
        scope = args.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise InvalidArgument("run: scope must be public, personal or private")
        timeout = args.get("timeout_s")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
        ):
            raise InvalidArgument("run: the timeout must be a positive number of seconds")
        try:
            outcome = await self.runner.run(
                kernel,
                args.get("input"),
                scope=scope,
                timeout_s=None if timeout is None else float(timeout),
            )
        except SwarmError as exc:
            self.ledger.refused(kernel, type(exc).__name__)
            raise
        self.ledger.record(outcome)
        report = outcome.report()
        report["result"] = _jsonable(report["result"])
        return report

    async def run_here(self, kernel: Kernel, value: Any) -> RunResult:
        """``kernel`` on this device's own executor (the one placement picked for it: Ray on a
        laptop or server, inline on a phone), never on another device: for work whose input
        must not leave it (a learning step's records). Counted, observed and refused as every
        run placed from here is (``/metrics``, ``swarm kernels --stats``, the executor's
        hosts); raises what the executor raises."""
        try:
            if self.executor is None:
                raise ExecutorUnavailable("this device runs no kernels")
            result = await self.executor.run(kernel, value, timeout=self.settings.run_timeout_s)
        except SwarmError as exc:
            self.ledger.refused(kernel.name, type(exc).__name__)
            raise
        me = self.me()
        device = me.id if me is not None else "-"
        label = me.label if me is not None else "this device"
        self.ledger.ran(kernel.name, label, result.executor, result.elapsed_s, "this device only")
        self._observed(
            Observation(kernel.name, device, label, kernel.compute_s(value), result.elapsed_s, None)
        )
        return result

    def metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        yield from self.ledger.metrics()
        instances = GaugeMetricFamily(
            "swarm_placement_instances",
            "the kernel instances this device placed, by device, kernel and state",
            labels=["device", "kernel", "state"],
        )
        for row in self.mesh.ps():
            device = row["device"] or "(parked)"
            instances.add_metric([device, row["kernel"], row["state"]], row["instances"])
        yield instances

    def _list(self) -> dict[str, Any]:
        view = self.view()
        out = []
        for k in self.registry:
            described = k.describe()
            described["offered"] = k.name in self.offered
            described["unavailable"] = k.unavailable()
            described["devices"] = [
                d.label for d in view if d.status == "alive" and k.name in d.kernels
            ]
            out.append(described)
        names = {d.id: d.label for d in view}
        return {"kernels": out, "status": self._status(), "names": names}

    def status(self) -> dict[str, Any] | None:
        return self._status()

    def _status(self) -> dict[str, Any]:
        now = trio.current_time() if self.peer is not None else 0.0
        held: list[dict[str, Any]] = []
        if self.peer is not None and self.executor is not None:
            me = self.peer.identity.device_id
            held += [{"device": me, **h.to_wire(), "heard_s": 0.0} for h in self.executor.hosts()]
        known = set(self.peer.core.members) if self.peer and self.peer.core else set()
        for device, (at, hosts) in self._heard.items():
            if device in known:
                heard = round(max(now - at, 0.0), 1)
                held += [{"device": device, **h.to_wire(), "heard_s": heard} for h in hosts]
        out: dict[str, Any] = {
            "executor": self.executor_name,
            "kernels": list(self.offered),
            "unavailable": self.registry.problems(),
            "held": held,
        }
        live = self.mesh.live()
        if live:  # the mesh's long-lived instances this peer holds the registry of
            homed = self.mesh.counts()
            out["instances"] = {
                "total": live,
                "by_device": homed,
                "parked": live - sum(homed.values()),
            }
        return out


def keep_mesh(
    mesh: Mesh, view: list[DeviceView], homes: dict[str, tuple[Any, ...]], moved: bool
) -> tuple[list[MeshChange], dict[str, tuple[Any, ...]]]:
    """Move the instances of homes that died (one ``replace_dead`` batch each), and
    ``rebalance`` when a device's power, scopes, capabilities or lightness changed since
    ``homes`` (what they looked like at the last check) or ``moved`` (the roster changed),
    which also places parked instances a new device may now take. The changes, and the homes
    to pass next time."""
    by_id = {d.id: d for d in view}
    changes: list[MeshChange] = []
    for device in mesh.counts():
        d = by_id.get(device)
        if d is None or d.status in GONE:
            change = mesh.replace_dead(view, device)
            log.info("mesh: %s is %s: %s", device[-8:], d.status if d else "gone", change)
            changes.append(change)
    now = {d.id: _power(d) for d in view}
    if now != homes or moved:
        # a suspect device keeps its instances until it is declared dead: no migration
        # for a missed probe
        hopeful = [replace(d, status="alive") if d.status == "suspect" else d for d in view]
        change = mesh.rebalance(hopeful)
        if change.moved or change.placed:
            log.info("mesh: rebalanced: %s", change)
            changes.append(change)
    return changes, now


def _power(d: DeviceView) -> tuple[Any, ...]:
    """What of a device decides whether it may keep its instances (not its load: it changes
    every sample, and a home never sheds instances for room)."""
    return (d.battery_percent, d.plugged, d.scopes, d.relay_only, d.executor, d.kernels, d.light)


RECENT_RUNS = 20  # kept for the page `swarm ui` opens
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class _Counters:
    """One (kernel, device)'s runs: the first's compute, then sums over all (declared) and over
    the warm ones (observed, and the wait where known)."""

    first_s: float
    declared_s: float
    runs: int = 1
    observed_s: float = 0.0
    wait_s: float = 0.0
    waited: int = 0


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class RunLedger:
    """What the runs placed from this device did: for ``/metrics``."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str, str], int] = {}
        self.refusals: dict[tuple[str, str], int] = {}
        self.replacements = 0
        self.buckets = [0] * len(LATENCY_BUCKETS_S)
        self.count = 0
        self.total_s = 0.0
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_RUNS)
        self.counters: dict[tuple[str, str], _Counters] = {}  # by (kernel, device id)
        self.labels: dict[str, str] = {}

    def record(self, outcome: RunOutcome) -> None:
        self.replacements += len(outcome.attempts)
        why = [
            f"{e['name']}: {e['verdict']}" + (f" ({e['constraint']})" if e["constraint"] else "")
            for e in outcome.decision.explain()
        ]
        o = outcome
        self.ran(o.kernel, o.device.label, o.result.executor, o.elapsed_s, "; ".join(why))

    def ran(self, kernel: str, device: str, executor: str, elapsed_s: float, explain: str) -> None:
        """A run finished on ``device`` (its label) on ``executor``, ``elapsed_s`` after it was
        placed; ``explain``: why there."""
        key = (kernel, device, executor)
        self.runs[key] = self.runs.get(key, 0) + 1
        self.count += 1
        self.total_s += elapsed_s
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            if elapsed_s <= bound:
                self.buckets[i] += 1
        self.recent.append(
            {
                "kernel": kernel,
                "device": device,
                "executor": executor,
                "elapsed_ms": round(elapsed_s * 1000, 3),
                "explain": explain,
            }
        )

    def observe(self, o: Observation) -> bool:
        """A run's counters, per (kernel, device) for ``swarm kernels --stats``; False for the
        first (the cold start: kept apart from the warm runs' means)."""
        key = (o.kernel, o.device)
        self.labels[o.device] = o.label
        c = self.counters.get(key)
        if c is None:
            self.counters[key] = _Counters(first_s=o.compute_s, declared_s=o.declared_s)
            return False
        c.runs += 1
        c.declared_s += o.declared_s
        c.observed_s += o.compute_s
        if o.wait_s is not None:
            c.wait_s += o.wait_s
            c.waited += 1
        return True

    def stats(self, calibration: Calibration) -> list[dict[str, Any]]:
        """Per (kernel, device): runs, the first's compute (the cold start), the warm runs' mean
        declared and observed compute (None: no warm run yet) and wait (None: not known), and
        the calibration's ratio (observed over declared) and its spread."""
        rows = []
        for (kernel, device), c in sorted(self.counters.items()):
            e = calibration.estimates.get((kernel, device))
            warm = c.runs - 1
            rows.append(
                {
                    "kernel": kernel,
                    "device": self.labels.get(device, device[-8:]),
                    "device_id": device,
                    "runs": c.runs,
                    "first_ms": _ms(c.first_s),
                    "declared_ms": _ms(c.declared_s / c.runs),
                    "observed_ms": _ms(c.observed_s / warm) if warm else None,
                    "wait_ms": _ms(c.wait_s / c.waited) if c.waited else None,
                    "ratio": round(e.ratio, 4) if e else 1.0,
                    "sd": round(e.sd, 4) if e else 0.0,
                }
            )
        return rows

    def refused(self, kernel: str, reason: str) -> None:
        self.refusals[(kernel, reason)] = self.refusals.get((kernel, reason), 0) + 1

    def metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        from ._metrics import counted

        yield counted(
            "swarm_placement_runs",
            "kernel runs placed from this device, by kernel, device and executor",
            ["kernel", "device", "executor"],
            self.runs,
        )
        yield counted(
            "swarm_placement_refusals",
            "runs that could not be placed or failed everywhere, by kernel and reason",
            ["kernel", "reason"],
            self.refusals,
        )
        yield CounterMetricFamily(
            "swarm_placement_replacements",
            "runs placed again on another device after the first one failed",
            value=self.replacements,
        )
        yield HistogramMetricFamily(
            "swarm_placement_run_seconds",
            "a run's time from placing to its result, as the placing device saw it",
            buckets=[(str(b), n) for b, n in zip(LATENCY_BUCKETS_S, self.buckets, strict=True)]
            + [("+Inf", self.count)],
            sum_value=self.total_s,
        )


def _jsonable(value: Any) -> Any:
    """A msgpack value (already checked) as JSON can carry it: bytes become ``{"base64": ...}``."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        if value and type(value[0]) is float:
            return value  # (a vector: checked, all floats)
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
