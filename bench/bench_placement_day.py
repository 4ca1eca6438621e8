"""A day of kernels on a phone, a laptop and a home server: our policy against the baselines.

    python bench/bench_placement_day.py [--seed S] [--hours H] [--out DIR] [--json]

Runs the ``placement`` scenario (``swarm simulate placement``: the same figures, the same trace
digest) over 24 simulated hours by default, every policy on the same trace drawn from the seed,
and prints one row per policy: energy (all devices; the phone; what the phone's kernel runs and
transfers added), the phone's battery at the end and at its lowest and the hours it spent empty,
latency budget misses and the 95th percentile of latency, privacy violations, requests refused,
lost (the asking device was off) and failed (re-placed), and where the runs went. ``--out`` also
writes the plots. It takes about a minute of wall time per policy; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

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
    bad = r.invariants["violations"]
    print(f"  invariants: {r.invariants['checked']} checks, {len(bad)} violations")
    print(f"  trace digest {r.trace_digest}")
    print(f"  replay: swarm simulate placement --seed {r.seed} --hours {args.hours:g}")


if __name__ == "__main__":
    main()
