"""The Ray executor: kernels run in Ray worker processes, one long-lived actor per kernel type.

Rules:

- ``RayRuntime`` is this process's link to Ray, started once and lazily (the first run waits for
  it): with no address, a new local Ray runtime with this device's cores (``address="local"``,
  so two peers on one machine never share one by accident), bound to loopback with no dashboard:
  Ray binds its GCS, raylet, workers and agents to every interface otherwise (measured with Ray
  2.60), and turns ``_node_ip_address="127.0.0.1"`` back into the machine's reachable address
  unless it runs in its single-machine mode (the one it uses on macOS and Windows,
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), which this sets; with an address, that Ray
  cluster (a home lab's). It is shut down only if this process started it. Ray from 2.59 on
  turns its token authentication on for local runtimes (``pyproject.toml``'s floor).
- A Ray cluster on another machine sees every input and output of what it runs: a ``private``
  kernel is refused there (``ExecutorUnavailable``, so the policy re-places it) unless the
  executor is told the cluster is trusted (``trusted=True``). A cluster on loopback is this
  machine: trusted.
- Each kernel type gets one actor, created at its first run and kept: it loads what the kernel
  keeps (``Kernel.prepare``: the embedding model) once, and serves every later run of that kernel,
  so many micro-kernels never mean many processes. The actor reserves no CPU (an idle host must
  not starve other kernel types of Ray's scheduler); its threads are told the runtime's core count
  and it runs at the peer's own priority (Ray's workers would otherwise run at nice 15).
- Ray never retries on its own (``max_restarts=0``, ``max_task_retries=0``): a failure comes back
  to the policy, which re-places, so Ray's retries never override a scope or battery constraint.
- Ray's exceptions are translated here and nowhere else: the kernel's own errors come back as
  themselves (``InvalidInput``, ``KernelFailed``), a dead actor or worker as ``ExecutorFailed``
  (the actor is then forgotten, and made anew at the next run), a timeout as
  ``ExecutorTimeout``, and a runtime that cannot start as ``ExecutorUnavailable``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import sys
import threading
from typing import Any
from urllib.parse import urlsplit

import trio

from homeswarm.errors import SwarmError
from homeswarm.kernels import Kernel, KernelFailed

from ._executors import (
    ExecutorFailed,
    ExecutorTimeout,
    ExecutorUnavailable,
    HeldKernel,
    RunResult,
    Tally,
    in_thread,
)

log = logging.getLogger("placement.ray")

NAMESPACE = "swarm"
THREADED_CONCURRENCY = 4  # runs at once in one actor of a tiny or small kernel
LOOPBACK = "127.0.0.1"
_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _single_machine() -> None:
    """Ray's single-machine mode, where its node address is loopback (see the module doc)."""
    try:
        from ray._private import ray_constants
    except ImportError:  # (another Ray layout: the environment variable is all there is)
        return
    ray_constants.ENABLE_RAY_CLUSTER = False


def is_loopback(address: str) -> bool:
    """Whether a Ray address (``HOST:PORT``, ``ray://HOST:PORT``) names this machine."""
    try:
        host = urlsplit(address if "://" in address else f"ray://{address}").hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


class RayRuntime:
    """This process's Ray: started on first use, with this device's resources or at an address."""

    def __init__(self, address: str = "", num_cpus: int = 0) -> None:
        self.address = address
        self.num_cpus = num_cpus or (os.cpu_count() or 1)
        self.started_here = False
        self._lock = threading.Lock()
        self._keeper: threading.Event | None = None  # set: the thread that started Ray may end

    @property
    def remote(self) -> bool:
        """Whether kernels run on a Ray cluster that may be on another machine."""
        return bool(self.address) and not is_loopback(self.address)

    def start(self) -> None:
        """Start or join Ray (blocking, idempotent); ``ExecutorUnavailable`` if it cannot."""
        with self._lock:
            # Ray's C++ core would print a stack dump on every SIGTERM the peer handles itself
            os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
            # kernels run at the peer's own priority, as inline ones do (Ray's default: nice 15)
            os.environ.setdefault("RAY_worker_niceness", "0")
            if not self.address:
                os.environ[_SINGLE_MACHINE] = "0"  # read when Ray is imported ...
            try:
                import ray
            except ImportError:
                raise ExecutorUnavailable("Ray is not installed: pip install swarm[ray]") from None
            if ray.is_initialized():
                return
            if not self.address:
                _single_machine()  # ... or, if it was imported already, here
            options: dict[str, Any] = {
                "namespace": NAMESPACE,
                "log_to_driver": False,
                "configure_logging": False,
                "include_dashboard": False,
            }
            if self.address:
                options["address"] = self.address
            else:
                options.update(address="local", num_cpus=self.num_cpus, _node_ip_address=LOOPBACK)
            try:
                self._init_in_keeper(ray, options)
            except Exception as exc:
                where = self.address or "a local runtime"
                raise ExecutorUnavailable(f"cannot start Ray ({where}): {_one_line(exc)}") from None
            self.started_here = not self.address
            if self.address:
                resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
                self.num_cpus = int(resources.get("CPU", self.num_cpus))
            log.info("Ray is up (%s, %d cpus)", self.address or "local", self.num_cpus)

    def _init_in_keeper(self, ray: Any, options: dict[str, Any]) -> None:
        """``ray.init`` in a thread that lives until ``shutdown``. Ray binds the processes it
        starts (its GCS, the raylet) to the life of the *thread* that forks them (Linux's
        PR_SET_PDEATHSIG): started from a pool thread (trio's, which ends after 10 s idle) they
        were killed with it, and a minute later Ray's client ended the whole peer ("Failed to
        connect to GCS within 60 seconds")."""
        started = threading.Event()
        failed: list[BaseException] = []
        keep = threading.Event()

        def keeper() -> None:
            try:
                ray.init(**options)
            except BaseException as exc:  # handed to the caller
                failed.append(exc)
                return
            finally:
                started.set()
            keep.wait()

        threading.Thread(target=keeper, name="ray-runtime", daemon=True).start()
        started.wait()
        if failed:
            raise failed[0]
        self._keeper = keep

    def shutdown(self) -> None:
        with self._lock:
            try:
                import ray
            except ImportError:
                return
            if ray.is_initialized():
                ray.shutdown()
            if self._keeper is not None:
                self._keeper.set()
                self._keeper = None
            self.started_here = False


class KernelHost:
    """The actor that holds one kernel type in a Ray worker process."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        if kernel.prepare is not None:
            kernel.prepare()

    def pid(self) -> int:
        return os.getpid()

    def run(self, value: Any) -> Any:
        return self.kernel.run(value)


@functools.cache
def _actor_class() -> Any:
    import ray

    return ray.remote(_WorkerHost)


class _WorkerHost(KernelHost):
    """A ``KernelHost`` in a Ray worker. Ray puts the driver's working directory on the worker's
    ``sys.path``; where that is a checkout of this project, its ``kernels/`` folder would shadow
    Hugging Face's ``kernels`` package, which transformers imports, and ``embed`` would fail to
    load. The worker drops such entries before it hosts anything (our code loads through the
    installed ``homeswarm`` package either way)."""

    def __init__(self, kernel: Kernel) -> None:
        sys.path[:] = [p for p in sys.path if not _is_checkout(p)]
        super().__init__(kernel)


def _is_checkout(entry: str) -> bool:
    return os.path.isfile(os.path.join(entry or os.curdir, "homeswarm", "__init__.py"))


class _Handle:
    def __init__(self, actor: Any, pid: int) -> None:
        self.actor = actor
        self.pid = pid


class RayExecutor:
    """Runs each kernel type in its own long-lived Ray actor."""

    name = "ray"

    def __init__(self, runtime: RayRuntime, *, trusted: bool = False) -> None:
        """``trusted``: a remote cluster (``runtime.remote``) may run ``private`` kernels."""
        self.runtime = runtime
        self.trusted = trusted
        self._hosts: dict[str, _Handle] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._start_lock = trio.Lock()
        self._started = False
        self._tally = Tally()

    async def start(self) -> None:
        """Start Ray now rather than at the first run (``ExecutorUnavailable`` if it cannot)."""
        async with self._start_lock:
            if not self._started:
                await in_thread(self.runtime.start)
                self._started = True

    async def run(self, kernel: Kernel, value: Any, *, timeout: float) -> RunResult:
        if kernel.needs.scope == "private" and self.runtime.remote and not self.trusted:
            raise ExecutorUnavailable(
                f"{kernel.name} touches private data: the Ray cluster at "
                f"{self.runtime.address} is not trusted with it"
            )
        begin = trio.current_time()
        with trio.move_on_after(timeout) as waited:
            await self.start()
            handle = await self._host(kernel, timeout)
            self._tally.start(kernel.name)
            try:
                output = await in_thread(
                    functools.partial(self._call, kernel, handle, value, timeout)
                )
            except ExecutorFailed:
                if self._hosts.get(kernel.name) is handle:
                    del self._hosts[kernel.name]  # the next run makes a new actor
                raise
            finally:
                self._tally.stop(kernel.name)
            return RunResult(output, self.name, handle.pid, trio.current_time() - begin)
        assert waited.cancelled_caught
        raise ExecutorTimeout(f"{kernel.name} took longer than {timeout:g} s on Ray")

    async def _host(self, kernel: Kernel, timeout: float) -> _Handle:
        lock = self._locks.setdefault(kernel.name, trio.Lock())
        async with lock:
            known = self._hosts.get(kernel.name)
            if known is not None:
                return known
            handle = await in_thread(functools.partial(self._create, kernel, timeout))
            self._hosts[kernel.name] = handle
            return handle

    def _create(self, kernel: Kernel, timeout: float) -> _Handle:
        import ray

        concurrency = THREADED_CONCURRENCY if kernel.needs.energy in ("tiny", "small") else 1
        options = {
            "num_cpus": 0,
            "max_restarts": 0,
            "max_task_retries": 0,
            "max_concurrency": concurrency,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(self.runtime.num_cpus)}},
        }
        try:
            actor = _actor_class().options(**options).remote(kernel)
            pid = int(ray.get(actor.pid.remote(), timeout=timeout))
        except Exception as exc:
            raise self._translate(kernel, exc, created=True) from None
        log.info("Ray worker %d hosts the kernel %s", pid, kernel.name)
        return _Handle(actor, pid)

    def _call(self, kernel: Kernel, handle: _Handle, value: Any, timeout: float) -> Any:
        import ray

        try:
            return ray.get(handle.actor.run.remote(value), timeout=timeout)
        except Exception as exc:
            raise self._translate(kernel, exc, created=False) from None

    def _translate(self, kernel: Kernel, exc: Exception, *, created: bool) -> SwarmError:
        """Ray's exception as one of ours (the boundary)."""
        from ray import exceptions as rx

        name = kernel.name
        if isinstance(exc, rx.GetTimeoutError):
            return ExecutorTimeout(f"{name} took longer than it was given on Ray")
        cause = getattr(exc, "cause", None)
        why = _one_line(cause if isinstance(cause, BaseException) else exc)
        if created:
            return ExecutorFailed(f"{name} could not start in a Ray worker: {why}")
        if isinstance(exc, rx.RayTaskError):
            return cause if isinstance(cause, SwarmError) else KernelFailed(f"{name}: {why}")
        if isinstance(exc, rx.RayActorError):
            return ExecutorFailed(f"the Ray worker running {name} died: {why}")
        if isinstance(exc, rx.RayError):
            return ExecutorFailed(f"Ray failed running {name}: {type(exc).__name__}: {why}")
        if isinstance(exc, SwarmError):
            return exc
        return ExecutorFailed(f"Ray failed running {name}: {type(exc).__name__}: {why}")

    def hosts(self) -> list[HeldKernel]:
        t = self._tally
        names = sorted(set(self._hosts) | set(t.names()))
        out = []
        for n in names:
            handle = self._hosts.get(n)
            out.append(
                HeldKernel(n, self.name, handle.pid if handle else None, t.runs[n], t.running[n])
            )
        return out

    def forget(self, name: str) -> None:
        """Drop the actor of ``name`` (tests: a dead worker); the next run makes a new one."""
        handle = self._hosts.pop(name, None)
        if handle is not None:
            import ray

            ray.kill(handle.actor, no_restart=True)

    async def aclose(self) -> None:
        self._hosts.clear()
        if self.runtime.started_here:
            await in_thread(self.runtime.shutdown)
