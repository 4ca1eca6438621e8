"""The Ray executor, on one local Ray runtime shared by the run (it takes seconds to start).

Ray's worker processes really run the kernels: each kernel type has one long-lived actor, in a
process other than this one, that serves every run of it; Ray's errors come back as ours; a dead
actor is replaced at the next run, never retried by Ray behind the policy's back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
from functools import partial

import psutil
import pytest
import trio

from homeswarm.kernels import InvalidInput, KernelFailed, embed
from homeswarm.kernels.testing import boom, echo, make_registry, nap, pid
from homeswarm.placement import (
    ExecutorFailed,
    ExecutorTimeout,
    ExecutorUnavailable,
    InlineExecutor,
    RayExecutor,
    RayRuntime,
)

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture
def runtime(ray_runtime: RayRuntime) -> RayRuntime:
    return ray_runtime  # (the run's one runtime: tests/conftest.py)


def executor() -> RayExecutor:
    """An executor on the module's runtime (it joins it, so it never shuts it down)."""
    return RayExecutor(RayRuntime())


def is_ray_worker(process_id: int) -> bool:
    proc = psutil.Process(process_id)
    return "ray::" in " ".join(proc.cmdline()) or "default_worker" in " ".join(proc.cmdline())


@pytest.mark.skipif(not embed.is_available(), reason="the model is not installed")
async def test_ray_workers_run_embed_in_one_long_lived_actor(runtime):
    ex = executor()
    first = await ex.run(embed, "hello world", timeout=120)
    assert len(first.output) == 384
    assert first.executor == "ray"
    assert first.pid is not None
    assert first.pid != os.getpid()
    assert is_ray_worker(first.pid)
    # the next runs reuse the actor: no process per kernel, and the model is not loaded again
    batch = await ex.run(embed, ["a", "b", "c"], timeout=30)
    assert batch.pid == first.pid
    assert len(batch.output) == 3
    assert batch.elapsed_s < first.elapsed_s
    (host,) = ex.hosts()
    assert (host.kernel, host.executor, host.pid, host.runs, host.running) == (
        "embed",
        "ray",
        first.pid,
        2,
        0,
    )
    await ex.aclose()
    assert ray.is_initialized()  # it joined the runtime: it leaves it running


async def test_each_kernel_type_has_its_own_actor_and_the_kernel_runs_there(runtime):
    ex = executor()
    a = await ex.run(pid, None, timeout=30)
    b = await ex.run(pid, None, timeout=30)
    c = await ex.run(echo, [1, "x"], timeout=30)
    assert a.output == a.pid == b.pid  # the kernel itself saw the worker's pid
    assert c.output == [1, "x"]
    assert c.pid != a.pid
    assert {h.kernel for h in ex.hosts()} == {"pid", "echo"}
    async with trio.open_nursery() as nursery:  # tiny kernels: concurrent runs in one actor
        for _ in range(8):
            nursery.start_soon(partial(ex.run, pid, None, timeout=30))
    assert [h.runs for h in ex.hosts() if h.kernel == "pid"] == [10]


async def test_ray_errors_come_back_as_ours(runtime):
    ex = executor()
    with pytest.raises(KernelFailed, match="boom, as asked"):
        await ex.run(boom, None, timeout=30)
    with pytest.raises(InvalidInput, match="nap: input must be a number of seconds"):
        await ex.run(nap, "long", timeout=30)
    with pytest.raises(ExecutorTimeout):
        await ex.run(nap, 5, timeout=0.5)
    # the actor survives its kernel's failures
    assert (await ex.run(nap, 0, timeout=30)).output == 0


async def test_a_dead_actor_is_replaced_at_the_next_run_not_retried(runtime):
    ex = executor()
    before = (await ex.run(pid, None, timeout=30)).pid
    assert before is not None
    psutil.Process(before).kill()  # the worker process dies
    with pytest.raises(ExecutorFailed, match="died"):
        await ex.run(pid, None, timeout=30)  # Ray does not retry it somewhere on its own
    after = await ex.run(pid, None, timeout=30)
    assert after.pid not in (None, before)


async def test_a_runtime_that_will_not_start_is_unavailable(monkeypatch):
    def refuse(**options: object) -> None:
        raise ConnectionError(f"nothing at {options['address']}\nsecond line")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    ex = RayExecutor(RayRuntime(address="10.0.0.9:6379"))
    with pytest.raises(ExecutorUnavailable) as info:
        await ex.run(echo, 1, timeout=30)
    assert (
        str(info.value) == "cannot start Ray (10.0.0.9:6379): nothing at 10.0.0.9:6379 second line"
    )


async def test_a_peer_places_embed_on_the_servers_ray_workers(runtime, tmp_path):
    from test_placement_swarm import PHONE, SERVER, swarm

    if not embed.is_available():
        pytest.skip("the model is not installed")
    ray_server = RayExecutor(RayRuntime())
    async with swarm(
        tmp_path, (PHONE, SERVER), executors={"server": ray_server, "phone": InlineExecutor()}
    ) as s:
        s["phone"].service.registry = make_registry(with_builtins=True)
        reply = await s["phone"].run("pid")
        assert (reply["device"], reply["executor"]) == ("phone", "inline")
        assert reply["result"] == os.getpid()
        # the phone sends heavy work to the server, whose Ray worker runs it
        s["phone"].peer.set_power(40.0, False)  # below the 50% floor: medium work leaves it
        reply = await s["phone"].run("heavy", "x")
        assert (reply["device"], reply["executor"]) == ("server", "ray")
        assert reply["pid"] != os.getpid()
        assert is_ray_worker(reply["pid"])


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_loopback


def ray_listeners() -> list[tuple[str, str, int]]:
    """Listening TCP sockets of this process and its descendants (Ray's GCS, raylet, workers)."""
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            with contextlib.suppress(psutil.Error):
                out.append((psutil.Process(conn.pid).name(), conn.laddr.ip, conn.laddr.port))
    return out


async def test_the_local_runtime_listens_on_loopback_only(runtime):
    """Issue 12, attack 6: Ray used to bind its GCS and raylet to every interface."""
    ex = executor()
    await ex.run(echo, 1, timeout=60)  # a worker is up too
    listeners = ray_listeners()
    assert any(name in ("gcs_server", "raylet") for name, _, _ in listeners), listeners
    exposed = [x for x in listeners if not loopback(x[1])]
    assert exposed == []
    assert not any(port == 8265 for _, _, port in listeners)  # no dashboard
    await ex.aclose()


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:6379", True),
        ("localhost:6379", True),
        ("ray://127.0.0.1:10001", True),
        ("[::1]:6379", True),
        ("[::ffff:127.0.0.1]:1", True),
        ("192.168.1.20:6379", False),
        ("ray://homelab.local:10001", False),
        ("[::]:6379", False),
    ],
)
def test_which_addresses_are_this_machine(address, loopback):
    assert RayRuntime(address).remote is not loopback


async def test_a_remote_cluster_is_refused_private_kernels_unless_trusted():
    private = dataclasses.replace(echo, needs=dataclasses.replace(echo.needs, scope="private"))
    ex = RayExecutor(RayRuntime("192.0.2.1:6379"))
    with pytest.raises(ExecutorUnavailable, match="not trusted"):
        await ex.run(private, 1, timeout=5)
    # trusted, it would try (and here fail to reach the cluster: nothing listens there)
    assert RayExecutor(RayRuntime("192.0.2.1:6379"), trusted=True).trusted
    # a cluster on this machine is this machine
    assert not RayRuntime("127.0.0.1:6379").remote


OUTLIVES = """
import threading, ray
from homeswarm.placement import RayRuntime

runtime = RayRuntime(num_cpus=1)
starter = threading.Thread(target=runtime.start)  # as trio's worker threads start it
starter.start()
starter.join()  # the thread that started Ray is gone ...
one = ray.remote(lambda: 1)
print(ray.get(one.remote(), timeout=90))  # ... and Ray still answers: its GCS and raylet live
runtime.shutdown()
"""


def test_ray_outlives_the_thread_that_started_it():
    """Ray's processes die with the thread that forked them (PR_SET_PDEATHSIG): started from a
    worker thread that then ended, they were killed, and the peer itself a minute later (Ray's
    client exits when its GCS is gone). In a process of its own: this run's Ray is already up."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", OUTLIVES], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "1"
