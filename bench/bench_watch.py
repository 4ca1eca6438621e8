"""What watching a device's own telemetry costs: the watch service's HTM models, per sample.

    python bench/bench_watch.py [--rounds 800] [--series 8] [--seeds 3] [--json]

One run feeds ``--series`` synthetic telemetry series (cpu around 10 %, free memory, RTTs, vault
lag; Gaussian noise) through ``swarm._watch_service.Watch`` for ``--rounds`` sampling rounds, then
a cpu jump to 100 %, twice: with the service's parameter set (``TELEMETRY_PARAMS``) and with the
kernel's default (Numenta's NAB) parameters, and prints side by side: the time of one round (all
series; p50, p99, max; CPU time of this process, so a busy shared machine does not inflate it),
the CPU time to create a model, each model's memory, the share of one core
the service takes at the default 5 s interval, and the round at which the jump was flagged.

Measured (``--seeds 5``, defaults; a shared 2-core machine under a load average of 9-10; CPU time):

                                 telemetry set    NAB default   NAB / ours
    one round of 8 series, ms    5.4 (p99 8.7)    7.9 (p99 11.9)    1.47
    one row, ms                  0.67             0.99              1.47
    creating a model, ms         5.2              39.7              7.6
    memory per model, KiB        326              3,036             9.3
    share of a core at 5 s       0.11 %           0.16 %
    false episodes per series-h  0.0225           0.0225  (800 steady rounds; NAB scores 200)
    jump flagged after rows      1.4              1.4
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

from homeswarm.kernels import anomaly_model
from homeswarm.swarm._config import AnomalySettings
from homeswarm.swarm._watch_service import KIND_PARAMS, TELEMETRY_PARAMS, Watch

KINDS = ("cpu", "memory_free_mb", "rtt:a", "rtt:b", "vault_ahead:a", "vault_sync_age:a")
CENTRES = {"cpu": 10.0, "memory_free_mb": 8000.0, "rtt": 3.0, "vault_ahead": 0.0}


def _series(n: int) -> list[str]:
    names = list(KINDS[:n])
    while len(names) < n:
        names.append(f"rtt:peer{len(names)}")
    return names


def _value(name: str, rng: random.Random, i: int) -> float:
    kind = name.partition(":")[0]
    if kind == "vault_sync_age":
        return float(i % 6) * 5  # a sawtooth: a sync every 30 s
    centre = CENTRES.get(kind, 1.0)
    return max(0.0, centre + rng.gauss(0, max(centre * 0.05, 0.5)))


def run(params: dict[str, Any], rounds: int, n: int, seed: int = 1) -> dict[str, Any]:
    watch = Watch(AnomalySettings().threshold, params)
    rng = random.Random(seed)
    names = _series(n)
    for i in range(-n, 0):  # every model created (one a round), before the measured rounds
        watch.feed({name: _value(name, rng, 0) for name in names}, i * 5.0)
    created = time.process_time()
    for name in names:
        anomaly_model(params={**params, **KIND_PARAMS.get(name.partition(":")[0], {})})
    create_ms = (time.process_time() - created) * 1000 / n
    times = []
    for i in range(0, rounds):
        row = {name: _value(name, rng, i) for name in names}
        began = time.process_time()
        watch.feed(row, i * 5.0)
        times.append((time.process_time() - began) * 1000)
    flagged_at = None
    false_before = sum(watch.episodes.values())
    for i in range(rounds, rounds + 20):
        row = {name: _value(name, rng, i) for name in names}
        row["cpu"] = 100.0
        watch.feed(row, i * 5.0)
        if flagged_at is None and "cpu" in watch.open:
            flagged_at = i - rounds + 1
    times.sort()
    memory = [m.memory_bytes() for m in watch.models.values()]
    mean = statistics.fmean(times)
    return {
        "round_ms_p50": times[len(times) // 2],
        "round_ms_p99": times[int(len(times) * 0.99)],
        "round_ms_max": times[-1],
        "round_ms_mean": mean,
        "row_ms_mean": mean / n,
        "create_ms_per_model": create_ms,
        "memory_kib_per_model": statistics.median(memory) / 1024,
        "core_share_at_5s": mean / 5000,
        "warming_after": watch.warming(),
        "false_episodes_before_jump": false_before,
        "false_per_series_hour": false_before / (n * rounds * 5 / 3600),
        "jump_flagged_after_rows": flagged_at,
    }


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's mean over the seeds (a jump never flagged counts as None)."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        out[key] = None if None in values else statistics.fmean(values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=800, help="steady rounds before the jump")
    parser.add_argument("--series", type=int, default=8, help="series per round")
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds (figures: their mean)")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    seeds = range(1, max(1, args.seeds) + 1)
    ours = _mean([run(TELEMETRY_PARAMS, args.rounds, args.series, s) for s in seeds])
    nab = _mean([run({}, args.rounds, args.series, s) for s in seeds])
    if args.json:
        print(json.dumps({"telemetry": ours, "nab_default": nab}))
        return
    print(
        f"{args.series} series, {args.rounds} steady rounds then cpu 10 -> 100 %,"
        f" mean of {len(seeds)} seeds"
    )
    print(f"{'':28} {'telemetry set':>14} {'NAB default':>14} {'NAB / ours':>10}")
    for key in ours:
        a, b = ours[key], nab[key]
        ratio = f"{b / a:10.2f}" if isinstance(a, float | int) and a and b is not None else ""
        show = [f"{v:14.4g}" if isinstance(v, float) else f"{v!s:>14}" for v in (a, b)]
        print(f"{key:28} {show[0]} {show[1]} {ratio}")


if __name__ == "__main__":
    main()
