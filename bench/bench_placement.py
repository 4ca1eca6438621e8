"""Placement benchmarks: the policy's decision time, our overhead on embed, remote round trips.

    python bench/bench_placement.py [--quick] [--json] [--only policy|mesh|embed|round_trips]

1. Decision time of ``placement.place`` over random views of 10, 100 and 1000 devices (target:
   under 100 us at 100, on a machine where the plain Python loop of 10^7 additions printed
   first takes 1.0 s), and apart, the decision with its explanation read in full.
1b. The kernel mesh (``--only mesh``): 1,000,000 instances placed on 10 devices in one batch
   (target <= 10 s), the instances of the device that held the most re-placed when it dies
   (target <= 1 s for 100,000), a rebalance when the phones are unplugged, bytes an instance
   in the registry (target <= 200).
2. ``embed`` of 1,000 short sentences through ``swarm run`` on the Ray executor, against the same
   call made directly with sentence-transformers in this process, in the same run: the overhead
   ratio (target <= 1.2x). Two paths are timed: the peer's ``kernels.run`` (placement, the Ray
   actor, the checks at the boundary) and the whole CLI (``swarm run embed - --json`` through the
   control socket: JSON both ways, printing), against a peer of this process.
3. The round trip of a trivial remote kernel (``echo`` placed on another peer, over libp2p on
   loopback) against a trivial local Ray task, in the same run (target: remote <= 3x Ray).

Every figure is measured in this run and the ratios are between figures of this run; nothing is
asserted. ``--quick`` takes fewer samples; ``BENCH_VERBOSE=1`` prints every embed sample. Other
work on the machine skews the Ray worker more than this process: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from homeswarm.kernels import builtin_registry  # noqa: E402
from homeswarm.kernels.testing import make_registry  # noqa: E402
from homeswarm.placement import (  # noqa: E402
    DEFAULT_CONFIG,
    InlineExecutor,
    RayExecutor,
    RayRuntime,
    place,
)
from homeswarm.placement.testing import random_view  # noqa: E402

TOPICS = ["the weather", "a song", "dinner", "the train", "a meeting", "my sister", "the garden"]


def sentences(n: int) -> list[str]:
    return [f"note {i}: remember to ask about {TOPICS[i % len(TOPICS)]} tomorrow" for i in range(n)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- 1. the policy -----------------------------------------------------------------------------


def python_loop_s() -> float:
    """A plain Python loop of 10^7 additions: this machine's speed, beside every figure."""
    t0 = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - t0


def bench_policy(quick: bool) -> dict[str, Any]:
    """``place(...).device`` (the decision: filter, score, choice) and, apart, the decision with
    its explanation read in full (every candidate ranked, every exclusion worded)."""
    embed = builtin_registry().get("embed")
    work = embed.compute_s("hello world")
    out: dict[str, Any] = {}
    for n in (10, 100, 1000):
        view = random_view(random.Random(n), n)
        reps = max(20, (2000 if not quick else 300) // max(1, n // 10))
        times, explained = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            chosen = place("embed", embed.needs, view, compute_s=work).device
            t1 = time.perf_counter()
            d = place("embed", embed.needs, view, compute_s=work)
            read = (d.candidates, d.excluded)
            t2 = time.perf_counter()
            times.append(t1 - t0)
            explained.append(t2 - t1)
            assert read[0][0].device is chosen
        decision = place("embed", embed.needs, view, compute_s=work)
        # the plain policy (one function call per rule and per score, a candidate object per
        # device: the reference the tests hold the fast one to), in the same run
        from test_placement_policy import _reference_place

        plain = []
        for _ in range(reps):
            t0 = time.perf_counter()
            _reference_place("embed", embed.needs, view, DEFAULT_CONFIG, work, {})
            plain.append(time.perf_counter() - t0)
        out[str(n)] = {
            "p50_us": round(1e6 * pct(times, 0.5), 1),
            "p99_us": round(1e6 * pct(times, 0.99), 1),
            "plain_p50_us": round(1e6 * pct(plain, 0.5), 1),
            "ratio_vs_plain": round(pct(times, 0.5) / pct(plain, 0.5), 3),
            "explained_p50_us": round(1e6 * pct(explained, 0.5), 1),
            "candidates": len(decision.candidates),
            "samples": reps,
        }
    return out


# ---- the kernel mesh ---------------------------------------------------------------------------


def mesh_view(n: int) -> list[Any]:
    """``n`` devices able to hold the mesh: a server, laptops and phones, on mains or battery."""
    from homeswarm.placement.testing import laptop, phone, server

    kernels = tuple(f"k{i}" for i in range(20))
    out = []
    for i in range(n):
        make = (server, laptop, laptop, phone)[i % 4]
        out.append(
            make(
                f"dev-{i:02d}",
                name=f"{make.__name__}-{i}",
                kernels=kernels,
                memory_free_mb=4e6,
                cpu_percent=float(5 * i),
                local=i == 1,
            )
        )
    return out


def bench_mesh(quick: bool) -> dict[str, Any]:
    """1,000,000 instances of 20 kernels (every scope and energy class) placed on 10 devices in
    one batch; the device holding the most dies and its instances are re-placed; the phones
    are unplugged at 30% and the mesh rebalances. Nothing asserted; the targets beside."""
    from dataclasses import replace

    from homeswarm.kernels import ENERGY_CLASSES, SCOPES, Needs
    from homeswarm.placement import Mesh

    total = 100_000 if quick else 1_000_000
    view = mesh_view(10)
    mesh = Mesh()
    t0 = time.perf_counter()
    for i in range(20):
        needs = Needs(
            scope=SCOPES[i % len(SCOPES)],
            energy=ENERGY_CLASSES[i % len(ENERGY_CLASSES)],
            memory_mb=float(1 + i % 5),
            latency_budget_s=(0.05, 1.0, 30.0)[i % 3],
            stateful=i % 2 == 0,
            compute_s=0.001 * (1 + i),
        )
        mesh.add(f"k{i}", needs, total // 20)
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    placed = mesh.place(view)
    t_place = time.perf_counter() - t0
    counts = mesh.counts()
    victim = max(counts, key=lambda d: counts[d])
    dead = [replace(d, status="dead") if d.id == victim else d for d in view]
    t0 = time.perf_counter()
    moved = mesh.replace_dead(dead, victim)
    t_dead = time.perf_counter() - t0
    unplugged = [
        replace(d, plugged=False, battery_percent=30.0) if d.role == "phone" else d for d in dead
    ]
    t0 = time.perf_counter()
    rebalanced = mesh.rebalance(unplugged)
    t_rebalance = time.perf_counter() - t0
    return {
        "instances": len(mesh),
        "devices": len(view),
        "add_s": round(t_add, 3),
        "place_s": round(t_place, 3),
        "placed": sum(placed.placed.values()),
        "parked": placed.parked,
        "dead_device_instances": moved.moved,
        "replace_dead_s": round(t_dead, 3),
        "replace_dead_parked": moved.parked,
        "rebalance_moved": rebalanced.moved,
        "rebalance_s": round(t_rebalance, 3),
        "bytes_per_instance": round(mesh.bytes_per_instance(), 1),
        "column_bytes_per_instance": sum(
            mesh.column(c).itemsize for c in ("kernel", "spec", "scope", "home", "state")
        ),
    }


# ---- a peer of this process --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def peers_on_libp2p(
    root: Path, specs: list[Any], options: dict[str, dict[str, Any]], registry: Any
) -> AsyncIterator[dict[str, Any]]:
    """Paired peers of this process on libp2p (loopback), each with its placement service and
    control socket, once every one sees every other alive with a measured RTT."""
    from test_placement_swarm import make_homes

    from homeswarm.swarm import (
        FixedLoad,
        Peer,
        PeerOptions,
        PlacementService,
        advertised,
        control_path,
        load_roster,
        serve_control,
    )
    from homeswarm.transports.libp2p import Libp2pTransport

    idents = make_homes(root, specs)
    peers: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        first_addrs: list[str] = []
        for i, (spec, ident) in enumerate(zip(specs, idents, strict=True)):
            transport = await stack.enter_async_context(Libp2pTransport(ident.private_seed()))
            addrs = advertised(transport.addrs)
            if i == 0:
                first_addrs = addrs
            service = PlacementService(ident.settings, registry=registry, **options[spec.name])
            peer = Peer(
                ident,
                load_roster(ident),
                PeerOptions(
                    listen_addrs=lambda a=addrs: a,  # type: ignore[misc]
                    seeds=[(idents[0].device_id, first_addrs)] if i else [],
                    load=FixedLoad(10.0, 8000.0),
                    persist=False,
                    services=[service],
                ),
            )
            await nursery.start(peer.run, transport)

            async def control(op: str, args: dict[str, Any], peer: Any = peer) -> Any:
                return peer.status() if op == "status" else await peer.control(op, args)

            await nursery.start(serve_control, control_path(ident.home), control)
            peers[spec.name] = peer

        def ready() -> bool:
            return all(
                (m := a.core.members.get(b.identity.device_id)) is not None
                and m.status == "alive"
                and (a is b or m.rtt is not None)
                for a in peers.values()
                for b in peers.values()
            )

        with trio.fail_after(30):
            while not ready():  # noqa: ASYNC110 - polling peers' state, which has no event
                await trio.sleep(0.05)
        yield peers
        nursery.cancel_scope.cancel()


# ---- 2. embed: our overhead --------------------------------------------------------------------


async def bench_embed(root: Path, quick: bool) -> dict[str, Any]:
    from test_placement_swarm import Spec

    from homeswarm.cli import main
    from homeswarm.kernels import load_model

    texts = sentences(1000)
    reps = 2 if quick else 5
    model = load_model()
    model.encode(texts[:64])  # warm

    def direct() -> float:
        t0 = time.perf_counter()
        model.encode(texts, batch_size=64)
        return time.perf_counter() - t0

    registry = builtin_registry()
    laptop = Spec("laptop", "laptop")
    ray_ex = RayExecutor(RayRuntime())
    async with peers_on_libp2p(root, [laptop], {"laptop": {"executor": ray_ex}}, registry) as peers:
        peer = peers["laptop"]
        home = str(root / "laptop")
        t0 = time.perf_counter()
        first = await peer.control("kernels.run", {"kernel": "embed", "input": texts})
        cold = time.perf_counter() - t0
        assert first["executor"] == "ray"
        assert first["pid"] != os.getpid()
        assert len(first["result"]) == 1000

        async def service() -> float:
            t0 = time.perf_counter()
            reply = await peer.control("kernels.run", {"kernel": "embed", "input": texts})
            took = time.perf_counter() - t0
            assert len(reply["result"]) == 1000
            return took

        def cli() -> float:
            stdin, stdout = sys.stdin, sys.stdout
            sys.stdin, sys.stdout = io.StringIO(json.dumps(texts)), io.StringIO()
            try:
                t0 = time.perf_counter()
                code = main(["run", "embed", "-", "--json", "--home", home])
                took = time.perf_counter() - t0
                assert code == 0
                assert len(json.loads(sys.stdout.getvalue())["result"]) == 1000
            finally:
                sys.stdin, sys.stdout = stdin, stdout
            return took

        # interleaved, so drift hits every path alike
        runs: dict[str, list[float]] = {"direct": [], "service": [], "cli": []}
        for _ in range(reps):
            runs["direct"].append(await trio.to_thread.run_sync(direct))
            runs["service"].append(await service())
            runs["cli"].append(await trio.to_thread.run_sync(cli))
    med = {k: statistics.median(v) for k, v in runs.items()}
    if os.environ.get("BENCH_VERBOSE"):
        print({k: [round(x, 2) for x in v] for k, v in runs.items()}, file=sys.stderr)
    return {
        "sentences": len(texts),
        "samples": reps,
        "direct_s": round(med["direct"], 3),
        "swarm_run_service_s": round(med["service"], 3),
        "swarm_run_cli_s": round(med["cli"], 3),
        "first_run_cold_s": round(cold, 3),
        "ratio_service": round(med["service"] / med["direct"], 3),
        "ratio_cli": round(med["cli"] / med["direct"], 3),
        "ray_worker_pid": first["pid"],
        "bench_pid": os.getpid(),
    }


# ---- 3. a trivial remote kernel vs a trivial Ray task ------------------------------------------


async def bench_round_trips(root: Path, quick: bool) -> dict[str, Any]:
    import ray
    from test_placement_swarm import Spec

    rounds = 100 if quick else 400

    @ray.remote
    def trivial(x: Any) -> Any:
        return x

    ray.get(trivial.remote(0))  # warm (a worker started)
    ray_times = []
    for i in range(rounds):
        t0 = time.perf_counter()
        ray.get(trivial.remote(i))
        ray_times.append(time.perf_counter() - t0)

    ray_ex = RayExecutor(RayRuntime())
    actor_times = []
    echo = make_registry().get("echo")
    await ray_ex.run(echo, 0, timeout=60)
    for i in range(rounds):
        t0 = time.perf_counter()
        await ray_ex.run(echo, i, timeout=60)
        actor_times.append(time.perf_counter() - t0)

    # the laptop runs no kernels itself: echo is placed on the server, over libp2p
    from homeswarm.placement import RunRequest

    specs = [Spec("laptop", "laptop"), Spec("server", "server")]
    options = {"laptop": {"kind": "none"}, "server": {"executor": InlineExecutor()}}
    async with peers_on_libp2p(root, specs, options, make_registry()) as peers:
        laptop = peers["laptop"]
        service = laptop.services["kernels"]
        remote_times, wire_times = [], []
        reply = await laptop.control("kernels.run", {"kernel": "echo", "input": 0})
        assert reply["device"] == "server"
        for i in range(rounds):
            t0 = time.perf_counter()
            reply = await laptop.control("kernels.run", {"kernel": "echo", "input": i})
            remote_times.append(time.perf_counter() - t0)
        assert reply["result"] == rounds - 1
        server = next(d for d in service.view() if d.name == "server")
        request = RunRequest("echo", 1, "public", 10.0)
        for _ in range(rounds):
            t0 = time.perf_counter()
            await service._send(server, request, 10.0)
            wire_times.append(time.perf_counter() - t0)
    ray_p50 = pct(ray_times, 0.5)
    return {
        "rounds": rounds,
        "ray_task_p50_us": round(1e6 * ray_p50, 1),
        "ray_actor_p50_us": round(1e6 * pct(actor_times, 0.5), 1),
        "remote_swarm_run_p50_us": round(1e6 * pct(remote_times, 0.5), 1),
        "remote_swarm_run_p99_us": round(1e6 * pct(remote_times, 0.99), 1),
        "remote_request_only_p50_us": round(1e6 * pct(wire_times, 0.5), 1),
        "ratio_remote_vs_ray_task": round(pct(remote_times, 0.5) / ray_p50, 3),
        "ratio_request_only_vs_ray_task": round(pct(wire_times, 0.5) / ray_p50, 3),
    }


# ---- main --------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    loop = results["python_loop_s"]
    lines = [f"a plain Python loop of 10^7 additions: {loop:.2f} s (this machine, this run)"]
    if "policy" in results:
        lines.append("policy decision time (place(...).device, random views):")
    for n, r in results.get("policy", {}).items():
        lines.append(
            f"  {n:>5} devices: p50 {r['p50_us']:8.1f} us  p99 {r['p99_us']:8.1f} us  "
            f"(p50 {r['p50_us'] / loop:6.1f} us scaled to a 1.0 s loop; with the explanation read "
            f"{r['explained_p50_us']:8.1f} us; the plain reference {r['plain_p50_us']:8.1f} us,"
            f" ratio {r['ratio_vs_plain']:.2f}x; {r['candidates']} candidates, "
            f"{r['samples']} samples)"
        )
    m = results.get("mesh")
    if m:
        lines += [
            f"kernel mesh ({m['instances']:,} instances, {m['devices']} devices, one core):",
            f"  register                  {m['add_s']:7.3f} s",
            f"  place all in one batch    {m['place_s']:7.3f} s   (target <= 10 s; "
            f"{m['placed']:,} placed, {m['parked']:,} parked)",
            f"  a device dies: re-place   {m['replace_dead_s']:7.3f} s   (target <= 1 s for "
            f"100,000; it held {m['dead_device_instances']:,}; "
            f"{m['replace_dead_parked']:,} parked)",
            f"  phones unplugged at 30%   {m['rebalance_s']:7.3f} s   "
            f"({m['rebalance_moved']:,} moved off them)",
            f"  registry memory           {m['bytes_per_instance']:7.1f} bytes an instance "
            f"(target <= 200; columns {m['column_bytes_per_instance']} bytes, the rest room "
            f"to grow)",
        ]
    e = results.get("embed")
    if e:
        lines += [
            f"embed of {e['sentences']} short sentences (median of {e['samples']}):",
            f"  sentence-transformers directly   {e['direct_s']:.3f} s",
            f"  swarm run, peer (Ray executor)   {e['swarm_run_service_s']:.3f} s"
            f"   ratio {e['ratio_service']:.2f}x",
            f"  swarm run, whole CLI (--json)    {e['swarm_run_cli_s']:.3f} s"
            f"   ratio {e['ratio_cli']:.2f}x",
            f"  (first run, cold: Ray actor start and model load: {e['first_run_cold_s']:.1f} s;"
            f" Ray worker pid {e['ray_worker_pid']}, this process {e['bench_pid']})",
        ]
    r = results.get("round_trips")
    if r:
        lines += [
            f"round trips (p50 of {r['rounds']}):",
            f"  trivial local Ray task            {r['ray_task_p50_us']:8.1f} us",
            f"  trivial kernel, local Ray actor   {r['ray_actor_p50_us']:8.1f} us",
            f"  trivial remote kernel, swarm run  {r['remote_swarm_run_p50_us']:8.1f} us"
            f"   ratio {r['ratio_remote_vs_ray_task']:.2f}x the Ray task",
            f"  (the request alone over libp2p    {r['remote_request_only_p50_us']:8.1f} us"
            f"   ratio {r['ratio_request_only_vs_ray_task']:.2f}x)",
        ]
    return "\n".join(lines)


async def run_all(quick: bool, only: Callable[[str], bool]) -> dict[str, Any]:
    results: dict[str, Any] = {"python_loop_s": round(python_loop_s(), 3)}
    if only("policy"):
        results["policy"] = bench_policy(quick)
    if only("mesh"):
        results["mesh"] = bench_mesh(quick)
    if only("embed") or only("round_trips"):
        runtime = RayRuntime()
        await trio.to_thread.run_sync(runtime.start)
        try:
            with tempfile.TemporaryDirectory(prefix="swbench-", dir="/tmp") as tmp:
                if only("embed"):
                    results["embed"] = await bench_embed(Path(tmp) / "e", quick)
                if only("round_trips"):
                    results["round_trips"] = await bench_round_trips(Path(tmp) / "r", quick)
        finally:
            await trio.to_thread.run_sync(runtime.shutdown)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--only",
        choices=["policy", "mesh", "embed", "round_trips"],
        action="append",
        help="(repeatable)",
    )
    args = parser.parse_args()
    chosen = set(args.only or ["policy", "mesh", "embed", "round_trips"])
    results = trio.run(run_all, args.quick, chosen.__contains__)
    print(json.dumps(results, indent=1) if args.json else report(results))


if __name__ == "__main__":
    main()
