"""A day of kernels on a phone, a laptop and a home server: our policy against the baselines
and the offline optimum.

    python bench/bench_placement_day.py [--seed S] [--hours H] [--out DIR] [--json]
    python bench/bench_placement_day.py --sweep N [--hours H] [--start-hour H0] [--all]

Runs the ``placement`` scenario (``swarm simulate placement``: the same figures, the same trace
digest) over 24 simulated hours by default, every policy on the same trace drawn from the seed,
and prints one row per policy: energy (all devices; the phone; what the phone's kernel runs and
transfers added), the phone's battery at the end and at its lowest and the hours it spent empty,
latency budget misses and the 95th percentile of latency, privacy violations, requests refused,
lost (the asking device was off) and failed (re-placed), and where the runs went; then ours over
the optimum (the whole energy, and the energy the kernels added). ``--out`` also writes the
plots. It takes about a minute of wall time per policy; nothing is asserted.

``--sweep N`` runs seeds 0..N-1, by default with our policy, the energy-greedy baseline and the
optimum only (``--all``: every policy), and prints per seed ours / optimal energy, misses and
privacy violations of each, then the worst seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def sweep(seeds: int, hours: float, every: bool, start_hour: float) -> list[dict[str, Any]]:
    from homeswarm.placement import energy_greedy, place
    from homeswarm.simulations._placement import simulate_placement

    rows = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        policies = None if every else {"swarm": place, "energy-greedy": energy_greedy}
        r = simulate_placement(
            seed=seed, hours=hours, start_hour=start_hour, policies=policies, optimal=True
        )
        m = r.metrics
        row = {
            "seed": seed,
            "requests": m["kernels"],
            "energy_vs_optimal": m["energy_vs_optimal"],
            "kernel_energy_vs_optimal": m["kernel_energy_vs_optimal"],
            "optimum": m["optimum"],
            "wall_s": round(time.perf_counter() - t0, 1),
            "policies": {
                name: {
                    "energy_wh": p["energy_wh"],
                    "kernel_wh": round(sum(p["kernel_wh"].values()), 5),
                    "budget_misses": p["budget_misses"],
                    "privacy_violations": p["privacy_violations"],
                    "phone_battery_min_percent": p["phone_battery_min_percent"],
                }
                for name, p in m["policies"].items()
            },
        }
        rows.append(row)
        line = "  ".join(
            f"{n}: {p['energy_wh']:.3f} Wh (kernels {p['kernel_wh']:.4f}) misses "
            f"{p['budget_misses']} privacy {p['privacy_violations']}"
            for n, p in row["policies"].items()
        )
        print(
            f"seed {seed}: {row['requests']} requests; ours/optimal {row['energy_vs_optimal']}"
            f" (kernels {row['kernel_energy_vs_optimal']}); {line}; {row['wall_s']} s",
            file=sys.stderr,
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sweep", type=int, metavar="N", help="seeds 0..N-1")
    parser.add_argument("--all", action="store_true", help="with --sweep: every policy")
    parser.add_argument(
        "--start-hour", type=float, default=0.0, help="with --sweep: the window's start"
    )
    args = parser.parse_args()

    if args.sweep:
        rows = sweep(args.sweep, args.hours, args.all, args.start_hour)
        if args.json:
            print(json.dumps(rows, indent=1))
            return
        worst = max(rows, key=lambda r: r["energy_vs_optimal"] or 0.0)
        print(
            f"sweep of {len(rows)} seeds, {args.hours:g} h each: ours/optimal energy "
            f"{min(r['energy_vs_optimal'] for r in rows)}..{worst['energy_vs_optimal']} "
            f"(worst seed {worst['seed']}); kernels only "
            f"{min(r['kernel_energy_vs_optimal'] for r in rows)}.."
            f"{max(r['kernel_energy_vs_optimal'] for r in rows)}; our misses "
            f"{sum(r['policies']['swarm']['budget_misses'] for r in rows)}, privacy "
            f"{sum(r['policies']['swarm']['privacy_violations'] for r in rows)}"
        )
        return

    from homeswarm.simulations import simulate
    from homeswarm.simulations._placement import policy_table

    print(f"running placement, {args.hours:g} h, seed {args.seed} ...", file=sys.stderr, flush=True)
    r = simulate("placement", seed=args.seed, hours=args.hours)
    if args.out is not None:
        from homeswarm.simulations._plots import write_outputs

        write_outputs(r, args.out)
    if args.json:
        print(json.dumps(r.as_json(), indent=1))
        return
    trace = r.series["trace"]
    by_device = ", ".join(f"{k} {v}" for k, v in trace["by_device"].items())
    print(
        f"placement: {r.peers} devices, seed {r.seed}, {r.sim_seconds / 3600:.1f} h simulated "
        f"per policy in {r.wall_seconds:.0f} s; {trace['requests']} requests ({by_device})"
    )
    for line in policy_table(r.metrics["policies"]):
        print("  " + line)
    m = r.metrics
    print(
        f"  ours / optimal: energy {m['energy_vs_optimal']}, the kernels' energy "
        f"{m['kernel_energy_vs_optimal']} (optimum: {m['optimum']})"
    )
    bad = r.invariants["violations"]
    print(f"  invariants: {r.invariants['checked']} checks, {len(bad)} violations")
    print(f"  trace digest {r.trace_digest}")
    print(f"  replay: swarm simulate placement --seed {r.seed} --hours {args.hours:g}")


if __name__ == "__main__":
    main()
