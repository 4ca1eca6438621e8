"""Federated learning with differential privacy: accuracy, time and bytes per round, one table.

    python bench/bench_learn.py [--quick] [--json] [--seeds N] [--rounds R]

digits (scikit-learn's 8x8 digits, 20 % held out) across 10 devices with a Dirichlet(0.5) label
skew, delta 1e-5, epsilon 1, 4 and 8, several seeds (the split, the initial model and every
sample and noise draw follow the seed). Every private method uses the same mechanism: Poisson
sampling at rate q, per-sample clipping to C, Gaussian noise of multiplier sigma chosen with
Opacus's RDP accountant so that R steps spend exactly epsilon, learning rate lr; a multinomial
logistic regression. Methods, all computed in the same run:

- central: DP-SGD on the pooled records with Opacus's own PrivacyEngine (the reference: the
  best any private method can hope for with this mechanism);
- swarm: ``--trust swarm``, R rounds of one step: devices send clipped sums, the coordinator adds
  the noise once;
- none: ``--trust none``, R rounds: each device adds its share of the noise (variance
  sigma^2 C^2 / 8, so that 8 of the 10 surviving still give the full noise) and the sums are
  pairwise-masked; the released sum carries 10/8 of the central variance;
- gossip: R rounds of one local DP-SGD step per device (its own noise on its own small batch) and
  one random pairwise averaging; the model is the devices' average;
- fedavg: non-private federated averaging (one local epoch per round, 30 rounds).

Wall time per round is the in-process driver's (every device's compute in this one process, one
after the other, plus encoding and checking every message); bytes are the messages as encoded,
sent plus received, per device per round: the mean over devices and the coordinator's.

Measured 2026-12-07 on the shared 2-core machine (load average 11-13, so times are inflated),
accuracy as mean over seeds, swarm/none minus central in points:

    --seeds 4   eps 1: central 0.866  swarm 0.868 (+0.21)  none 0.860 (-0.63)  gossip 0.446
                eps 4: central 0.927  swarm 0.924 (-0.28)  none 0.921 (-0.63)  gossip 0.804
                eps 8: central 0.931  swarm 0.926 (-0.56)  none 0.928 (-0.28)  gossip 0.873
                fedavg (non-private) 0.940; per round: swarm 104 ms 9.4 KiB/device (coordinator
                47 KiB), none 154 ms 14.0 KiB (70 KiB), gossip 83 ms 5.1 KiB; 759 s in all
    default (2 seeds): swarm -1.25 / -1.11 / -0.97, none -1.39 / -0.56 / +0.42; 526 s

swarm and central are the same mechanism (a test checks that a noiseless, fully sampled swarm
round is Opacus's step), so their gap is seed variance: two seeds are too few to show it under 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from typing import Any

import numpy as np
import torch

from homeswarm.learning import Digits, Mechanism, noise_for
from homeswarm.learning._jobs import federation, gossip, pooled, prepare

DEVICES = [f"dev{i:02d}" for i in range(10)]
DELTA = 1e-5
ALPHA = 0.5
SAMPLE_RATE = 0.1
CLIP = 1.0
LR = 2.0
SURVIVORS = 8


def central(task: Digits, split: Any, sigma: float, rounds: int, seed: int) -> tuple[float, float]:
    """Opacus's PrivacyEngine on the pooled records; (accuracy, epsilon it reports)."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from homeswarm.learning._torch import flat, predictor

    torch.manual_seed(seed)
    data = pooled(split)
    model = task.model()
    batch = int(np.ceil(len(data) * SAMPLE_RATE))
    loader = DataLoader(TensorDataset(torch.as_tensor(data.x), torch.as_tensor(data.y)), batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus: "Secure RNG turned off" (a benchmark)
        engine = PrivacyEngine(accountant="rdp")
        model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=LR),
            data_loader=loader,
            noise_multiplier=sigma,
            max_grad_norm=CLIP,
            poisson_sampling=True,
        )
        steps = 0
        while steps < rounds:
            for x, y in loader:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
                steps += 1
                if steps == rounds:
                    break
        epsilon = engine.get_epsilon(DELTA)
    params = flat(model._module)
    return task.evaluate(predictor(task.model(), params), split.test), float(epsilon)


def coordinated(task, split, trust, epsilon, sigma, rounds, seed) -> dict[str, Any]:
    job = prepare(task, split, epsilon=epsilon, delta=DELTA, seed=seed)
    survivors = SURVIVORS if trust == "none" else 1
    fed = federation(job, Mechanism(trust, SAMPLE_RATE, CLIP, sigma, LR, survivors), seed=seed)
    started = time.perf_counter()
    moved, coordinator = [], []
    for _ in range(rounds):
        report = fed.run_round()
        moved.append(statistics.fmean(report.bytes_by_device.values()))
        coordinator.append(report.bytes_by_device[report.coordinators[-1]])
    seconds = (time.perf_counter() - started) / rounds
    return {
        "accuracy": job.accuracy(fed.params),
        "round_s": seconds,
        "bytes": statistics.fmean(moved),
        "coordinator_bytes": statistics.fmean(coordinator),
        "epsilon_spent": max(ledger.epsilon for ledger in job.ledgers.values()),
    }


def gossiped(task, split, epsilon, sigma, rounds, seed) -> dict[str, Any]:
    job = prepare(task, split, epsilon=epsilon, delta=DELTA, seed=seed)
    run = gossip(job, Mechanism("none", SAMPLE_RATE, CLIP, sigma, LR), seed=seed)
    started = time.perf_counter()
    moved = []
    for _ in range(rounds):
        moved.append(statistics.fmean(run.run_round().values()))
    seconds = (time.perf_counter() - started) / rounds
    return {
        "accuracy": job.accuracy(run.consensus()),
        "round_s": seconds,
        "bytes": statistics.fmean(moved),
        "epsilon_spent": max(ledger.epsilon for ledger in job.ledgers.values()),
    }


def fedavg(task, split, seed, rounds=30) -> dict[str, Any]:
    job = prepare(task, split, epsilon=1.0, delta=DELTA, seed=seed)
    params = job.initial
    total = sum(t.records for t in job.trainers.values())
    started = time.perf_counter()
    for _ in range(rounds):
        local = [
            (t.records, t.sgd(params, epochs=1, batch=16, lr=0.5, rng=job.rngs[d]))
            for d, t in job.trainers.items()
        ]
        params = sum(n * p for n, p in local) / total
    return {
        "accuracy": job.accuracy(params),
        "round_s": (time.perf_counter() - started) / rounds,
        "bytes": 2 * 4 * len(params),  # the model down and back, float32, without framing
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, epsilon 4, fewer rounds")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 2; quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds R (default 150; quick 60)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = range(args.seeds or (1 if args.quick else 2))
    rounds = args.rounds or (60 if args.quick else 150)
    epsilons = [4.0] if args.quick else [1.0, 4.0, 8.0]
    task = Digits()
    rows: dict[str, dict[str, Any]] = {}
    figures: dict[str, list[dict[str, Any]]] = {}
    total_started = time.perf_counter()
    for seed in seeds:
        split = task.split(DEVICES, alpha=ALPHA, seed=seed)
        figures.setdefault("fedavg", []).append(fedavg(task, split, seed))
        for epsilon in epsilons:
            sigma = noise_for(epsilon=epsilon, delta=DELTA, sample_rate=SAMPLE_RATE, steps=rounds)
            accuracy, spent = central(task, split, sigma, rounds, seed)
            figures.setdefault(f"central/{epsilon:g}", []).append(
                {"accuracy": accuracy, "epsilon_spent": spent}
            )
            for trust in ("swarm", "none"):
                figures.setdefault(f"{trust}/{epsilon:g}", []).append(
                    coordinated(task, split, trust, epsilon, sigma, rounds, seed)
                )
            figures.setdefault(f"gossip/{epsilon:g}", []).append(
                gossiped(task, split, epsilon, sigma, rounds, seed)
            )
            if not args.json:
                print(f"seed {seed} epsilon {epsilon:g} (sigma {sigma:.3f}) done", flush=True)
    for name, runs in figures.items():
        rows[name] = {key: statistics.fmean(run[key] for run in runs) for key in runs[0]} | {
            "accuracy_by_seed": [round(run["accuracy"], 4) for run in runs]
        }
    result = {
        "devices": len(DEVICES),
        "alpha": ALPHA,
        "delta": DELTA,
        "sample_rate": SAMPLE_RATE,
        "clip": CLIP,
        "lr": LR,
        "rounds": rounds,
        "seeds": len(seeds),
        "rows": rows,
        "total_s": time.perf_counter() - total_started,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"\ndigits, {len(DEVICES)} devices, Dirichlet {ALPHA}, delta {DELTA:g}, q {SAMPLE_RATE},"
        f" C {CLIP}, lr {LR}, {rounds} rounds, {len(seeds)} seed(s); accuracy on the held-out set"
    )
    header = f"{'epsilon':>8} {'central':>8} {'swarm':>8} {'none':>8} {'gossip':>8}"
    print(header + f" {'swarm-central':>14} {'none-central':>13}")
    for epsilon in epsilons:
        a = {
            m: rows[f"{m}/{epsilon:g}"]["accuracy"] for m in ("central", "swarm", "none", "gossip")
        }
        print(
            f"{epsilon:>8g} {a['central']:>8.4f} {a['swarm']:>8.4f} {a['none']:>8.4f}"
            f" {a['gossip']:>8.4f} {100 * (a['swarm'] - a['central']):>+13.2f}p"
            f" {100 * (a['none'] - a['central']):>+12.2f}p"
        )
    print(f"non-private fedavg (30 rounds): {rows['fedavg']['accuracy']:.4f}")
    print("\nper round (mean over epsilons and seeds):")
    for method in ("swarm", "none", "gossip"):
        runs = [rows[f"{method}/{e:g}"] for e in epsilons]
        line = (
            f"  {method:<7} {1000 * statistics.fmean(r['round_s'] for r in runs):7.1f} ms,"
            f" {statistics.fmean(r['bytes'] for r in runs) / 1024:6.1f} KiB per device"
        )
        if "coordinator_bytes" in runs[0]:
            coordinator = statistics.fmean(r["coordinator_bytes"] for r in runs) / 1024
            line += f" ({coordinator:.1f} KiB the coordinator)"
        print(line)
    print(f"  fedavg  {1000 * rows['fedavg']['round_s']:7.1f} ms")
    print("\nepsilon spent (max over devices) / Opacus's for central:")
    for epsilon in epsilons:
        spent = [f"{m} {rows[f'{m}/{epsilon:g}']['epsilon_spent']:.3f}" for m in
                 ("central", "swarm", "none", "gossip")]  # fmt: skip
        print(f"  target {epsilon:g}: " + ", ".join(spent))
    print(f"\ntotal {result['total_s']:.0f} s")


if __name__ == "__main__":
    main()
