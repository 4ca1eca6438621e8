"""Vault convergence in the simulator: how long after a partition heals every replica agrees.

    python bench/bench_sim_vault.py [--seeds 20] [--peers 5] [--hours 0.05] [--json]

Each seed is one ``swarm simulate vault`` run: real peers (membership and the vault service, each
device's store kept across its crashes) on the memory network, in virtual time. Every device
writes (puts and deletes) through a random fault schedule of ``--hours``, then through 30 s of a
partition into two random halves; then the partition heals and the crashed devices restart.
``converge_s`` is the virtual time from the heal until every replica holds the same records and
shows the same content (polled every 0.1 s): membership noticing the others are back, then the
vault's anti-entropy; ``views_converge_s``, beside it, is the first part alone (when the
membership views agreed). Every run must also end with every replica agreeing and no
acknowledged write lost; a run that does not is reported with its replay command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from homeswarm.simulations import simulate


def bench(seeds: int, peers: int, hours: float) -> dict[str, Any]:
    times: list[float] = []
    views: list[float] = []
    runs = []
    bad = []
    start = time.perf_counter()
    for seed in range(seeds):
        r = simulate("vault", peers=peers, seed=seed, hours=hours)
        m = r.metrics
        runs.append({"seed": seed, "wall_s": r.wall_seconds, **m})
        if r.invariants["violations"] or m["writes_lost"] or not m["replicas_agree"]:
            bad.append(f"{r.replay} --hours {hours}")
        if m["converge_s"] is not None:
            times.append(m["converge_s"])
        if m["views_converge_s"] is not None:  # (null: the replicas agreed first)
            views.append(m["views_converge_s"])
    return {
        "peers": peers,
        "hours": hours,
        "seeds": seeds,
        "converge_median_s": statistics.median(times) if times else None,
        "converge_max_s": max(times) if times else None,
        "views_converge_median_s": statistics.median(views) if views else None,
        "views_converge_max_s": max(views) if views else None,
        "writes_acknowledged": sum(r["writes_acknowledged"] for r in runs),
        "writes_lost": sum(r["writes_lost"] for r in runs),
        "runs_failed": bad,
        "wall_s": time.perf_counter() - start,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (default 20)")
    parser.add_argument("--peers", type=int, default=5, help="devices per run (default 5)")
    parser.add_argument("--hours", type=float, default=0.05, help="of faults (default 0.05)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = bench(args.seeds, args.peers, args.hours)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for r in result["runs"]:
        print(
            f"  seed {r['seed']:>3}: converge {r['converge_s']} s (views "
            f"{r['views_converge_s']} s), {r['writes_acknowledged']} "
            f"writes acknowledged, {r['writes_lost']} lost, faults {', '.join(r['kinds'])} "
            f"({r['wall_s']:.1f} s wall)"
        )
    v = result
    print(
        f"vault convergence after a partition heals, in the simulator: {v['peers']} devices, "
        f"{v['hours'] * 3600:.0f} s of random faults then 30 s split, {v['seeds']} seeds: "
        f"median {v['converge_median_s']:.1f} s, max {v['converge_max_s']:.1f} s (virtual; "
        f"the membership views alone: median {v['views_converge_median_s']:.1f} s, max "
        f"{v['views_converge_max_s']:.1f} s); "
        f"{v['writes_acknowledged']} writes acknowledged, {v['writes_lost']} lost; "
        f"{v['wall_s']:.0f} s wall"
    )
    for replay in v["runs_failed"]:
        print(f"  FAILED: {replay}")
    if v["runs_failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
