"""Run a federated job in this process: ``python -m homeswarm.learning [options]``.

The devices are simulated in one process (the round cores are the real ones, messages are encoded
and checked); each device's privacy ledger lives under ``--home`` when given, so a second run
with the same home continues each device's spending and stops at its budget. Progress goes to
stderr every few rounds; ``--json`` prints the job's status as one object at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from homeswarm.errors import InvalidArgument, SwarmError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m homeswarm.learning",
        description="Train a task across simulated devices with differential privacy.",
    )
    parser.add_argument("--task", default="digits", help="task name (default digits)")
    parser.add_argument("--devices", type=int, default=10, help="devices (default 10)")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew (0.5)")
    parser.add_argument("--epsilon", type=float, default=4.0, help="budget per device (4)")
    parser.add_argument("--delta", type=float, default=1e-5, help="delta (1e-5)")
    parser.add_argument("--rounds", type=int, default=150, help="planned rounds (150)")
    parser.add_argument("--sample-rate", type=float, default=0.1, help="Poisson rate q (0.1)")
    parser.add_argument("--clip", type=float, default=1.0, help="per-sample clip norm (1.0)")
    parser.add_argument("--lr", type=float, default=2.0, help="learning rate (2.0)")
    parser.add_argument(
        "--trust", choices=("swarm", "none", "gossip"), default="swarm", help="(swarm)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of split, model, draws (0)")
    parser.add_argument("--home", type=Path, help="keep the devices' privacy ledgers here")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    return parser


def _check(args: argparse.Namespace) -> None:
    if not 1 <= args.devices <= 1000:
        raise InvalidArgument("--devices must be between 1 and 1000")
    if not args.epsilon > 0 or not 0 < args.delta < 1:
        raise InvalidArgument("--epsilon must be positive and --delta in (0, 1)")
    if not 0 < args.sample_rate <= 1 or args.rounds < 1 or not args.clip > 0 or not args.lr > 0:
        raise InvalidArgument("--sample-rate in (0, 1], --rounds >= 1, --clip and --lr > 0")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from ._federation import Mechanism
    from ._jobs import federation, gossip, prepare
    from ._ledger import noise_for
    from ._task import get_task

    _check(args)
    torch.set_num_threads(1)
    task = get_task(args.task)
    names = [f"device-{i:03d}" for i in range(args.devices)]
    split = task.split(names, alpha=args.alpha, seed=args.seed)
    sigma = noise_for(
        epsilon=args.epsilon, delta=args.delta, sample_rate=args.sample_rate, steps=args.rounds
    )
    job = prepare(
        task, split, epsilon=args.epsilon, delta=args.delta, seed=args.seed, home=args.home
    )
    survivors = max(1, (args.devices * 4) // 5) if args.trust == "none" else 1
    trust = "none" if args.trust == "gossip" else args.trust
    mechanism = Mechanism(trust, args.sample_rate, args.clip, sigma, args.lr, survivors)
    driver: Any = (
        gossip(job, mechanism, seed=args.seed)
        if args.trust == "gossip"
        else federation(job, mechanism, seed=args.seed)
    )
    every = max(1, args.rounds // 10)
    accuracy = job.accuracy(job.initial)
    for r in range(args.rounds):
        driver.run_round()
        if (r + 1) % every == 0 or r + 1 == args.rounds:
            params = driver.consensus() if args.trust == "gossip" else driver.params
            accuracy = job.accuracy(params)
            spent = max(ledger.epsilon for ledger in job.ledgers.values())
            line = f"round {r + 1}/{args.rounds}: accuracy {accuracy:.4f}, epsilon <= {spent:.3f}"
            print(line, file=sys.stderr, flush=True)
    states = {}
    for device in names:
        ledger = job.ledgers[device]
        affordable = ledger.affordable(sigma, args.sample_rate)
        states[device] = "out of budget" if not affordable else "done"
    return {
        "job": "local",
        "task": task.name,
        "trust": args.trust,
        "state": "done",
        "round": args.rounds,
        "accuracy": round(float(accuracy), 4),
        "epsilon_target": args.epsilon,
        "delta": args.delta,
        "noise_multiplier": sigma,
        "sample_rate": args.sample_rate,
        "clip": args.clip,
        "accountant": "rdp",
        "devices": [
            {
                "name": device,
                "state": states[device],
                "records": len(split.devices[device]),
                "epsilon_spent": round(job.ledgers[device].epsilon, 4),
            }
            for device in names
        ],
        "model_size": int(np.asarray(job.initial).size),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        status = run(args)
    except SwarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        print(f"accuracy {status['accuracy']:.4f} on the held-out set")
        for device in status["devices"]:
            print(
                f"  {device['name']}  {device['records']:>5} records  "
                f"epsilon {device['epsilon_spent']:.3f}  {device['state']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
