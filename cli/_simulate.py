"""``swarm simulate SCENARIO``: the simulator's front end (``simulations`` does the work)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ._args import add_json, number

SCENARIO_HELP = """scenarios:
  gossip     one event at a time from a random peer: time until every peer knows it
  failure    peers crash at random (and come back): detection times, false deaths
  partition  split into halves, heal: time until the views agree again
  day        a phone, a laptop and a home server through 24 hours of their profiles:
             battery over the day and how well each peer's view tracked the others;
             the swarm's own energy by cause (--services vault: with each vault's syncs)
  churn      devices join, leave and crash continuously: how accurate the views stay
  faults     a random fault schedule from the seed (partitions, isolation, crashes, pauses,
             loss bursts, clock skew), then healing: the views must agree again
  vault      every device writes to the vault (puts, deletes) through a random fault schedule
             and a final partition, then healing: the replicas must agree with no acknowledged
             write lost (writes_lost 0); converge_s: the time to agree after the partition heals
  placement  a day of kernels asked for by a phone and a laptop, placed by our policy and by
             each baseline on the same trace: energy, phone battery, latency budget misses,
             privacy violations (any by our policy is an invariant violation)
  migration  HTM instances follow each device's cpu through a day of power changes and
             crashes, moved by the kernel mesh from checkpoints: events_lost and
             events_duplicated must be 0; migrations, downtime_p99_s
  learn      a real federated learning job (digits, epsilon 4, trust swarm: --task, --epsilon,
             --trust) across the day's devices from 9:00, rounds every 10 min (closer in
             shorter runs): accuracy over time, epsilon, steps, rounds sat out and energy per
             device; no device past its budget, no record trained on by two devices

Everything comes from --seed: the same seed gives the same trace_digest. The exit code is 1
when an invariant was violated (the violations are printed, with their times), 2 for bad input.
Device profiles: simulations/devices.toml; copy it, edit, and pass --models FILE."""


def add_simulate_commands(sub: Any) -> None:

    p = sub.add_parser(
        "simulate",
        help="simulate a swarm in virtual time: real peer code, device models, faults",
        description="Run a scenario with the real peer code on a simulated network, in virtual "
        "time, deterministic from --seed.",
        epilog=SCENARIO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "scenario",
        metavar="SCENARIO",
        help="gossip, failure, partition, day, churn, faults, vault, placement, migration, learn",
    )
    # ranges are checked by simulate(), which says what is wrong in one line
    p.add_argument("--peers", type=int, metavar="N", help="how many devices (default per scenario)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="the seed (default 0)")
    p.add_argument(
        "--hours", type=number, metavar="H", help="simulated hours (default per scenario)"
    )
    p.add_argument(
        "--loss", type=number, default=0.0, metavar="P", help="message loss on every link, 0-1"
    )
    p.add_argument("--models", type=Path, metavar="FILE", help="device and network profiles (TOML)")
    day = p.add_argument_group("day", "what the day scenario's devices run")
    day.add_argument(
        "--services",
        metavar="WHAT",
        help="none: membership alone (default); vault: each device's vault service too, syncing"
        " as `swarm up` does, its energy shown as vault sync",
    )
    learn = p.add_argument_group("learn", "the learning job of the learn scenario")
    learn.add_argument("--epsilon", type=number, metavar="E", help="privacy budget per device (4)")
    learn.add_argument(
        "--trust",
        choices=("swarm", "none"),
        help="swarm: the coordinator adds the noise once (default); none: each device adds its"
        " share and the updates are masked",
    )
    learn.add_argument("--task", metavar="TASK", help="the learning task (digits)")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="also write result.json and PNG plots here"
    )
    add_json(p)
    p.set_defaults(run=_cmd_simulate, exit_at_once=True)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from homeswarm.simulations import simulate

    bar = _Bar(sys.stderr) if sys.stderr.isatty() else None
    try:
        result = simulate(
            args.scenario,
            peers=args.peers,
            seed=args.seed,
            hours=args.hours,
            loss=args.loss,
            models=args.models,
            progress=bar.update if bar is not None else None,
            options={
                "epsilon": args.epsilon,
                "trust": args.trust,
                "task": args.task,
                "services": args.services,
            },
        )
    finally:
        if bar is not None:
            bar.done()
    written = []
    if args.out is not None:
        from homeswarm.simulations import write_outputs

        written = write_outputs(result, args.out)
    if args.json:
        print(json.dumps(result.as_json(), sort_keys=False))
    else:
        print(render_summary(result))
        for path in written:
            print(f"  wrote {path}")
    return 1 if result.invariants["violations"] else 0


def render_summary(result: Any) -> str:
    speed = result.sim_seconds / result.wall_seconds if result.wall_seconds > 0 else math.inf
    lines = [
        f"{result.scenario}: {result.peers} peers, seed {result.seed}: "
        f"{_duration(result.sim_seconds)} simulated in {result.wall_seconds:.1f} s "
        f"({speed:,.0f}x)",
    ]
    for key, value in result.metrics.items():
        if key == "policies" and isinstance(value, dict):
            from homeswarm.simulations import policy_table

            lines.append("  policies")
            lines.extend(f"    {row}" for row in policy_table(value))
            continue
        lines.append(f"  {key:<24} {_show(value)}")
    inv = result.invariants
    bad = inv["violations"]
    lines.append(f"  invariants               {inv['checked']} checks, {len(bad)} violations")
    for v in bad[:10]:
        lines.append(f"    at {v['at_s']:.3f}s {v['invariant']}: {v['detail']}")
    if len(bad) > 10:
        lines.append(f"    ... {len(bad) - 10} more (see --json)")
    lines.append(f"  trace digest             {result.trace_digest}")
    lines.append(f"  replay                   {result.replay}")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_show(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if value is None:
        return "-"
    return str(value)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


class _Bar:
    """A one-line progress bar on a terminal: simulated time done, and wall time spent."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.start = time.monotonic()
        self.shown = False

    def update(self, done: float, total: float) -> None:
        if time.monotonic() - self.start < 0.5:
            return  # short runs need no bar
        share = min(done / total, 1.0) if total > 0 else 1.0
        filled = int(share * 30)
        bar = "#" * filled + "-" * (30 - filled)
        spent = time.monotonic() - self.start
        self.out.write(f"\r  [{bar}] {share:4.0%} {_duration(done)} simulated, {spent:.0f} s")
        self.out.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.out.write("\r" + " " * 72 + "\r")
            self.out.flush()
