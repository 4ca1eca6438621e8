"""``swarm learn ...``: federated learning with differential privacy on the running swarm.

Every command asks this home's running peer (``swarm up``) over the control socket; the device
where ``learn start`` runs coordinates the job.

- ``start TASK [--epsilon E] [--delta D] [--rounds R] [--trust swarm|none] [--json]``; TASK
  ``digits`` (the demo) or ``intents`` (a head on ``embed`` vectors, trained from the labelled
  examples in the vault's ``intents`` collection: key ``intents/NAME``, value ``LABEL<TAB>TEXT``);
- ``status [JOB] [--json]`` (default: the latest job): rounds, accuracy on the held-out set, and
  per device its state (training, waiting for power, away, out of budget, step failed, done),
  records used, epsilon spent and where its last local step ran (ray, inline, thread);
  ``--json`` prints ``{"job", "task", "state", "round", "accuracy", "epsilon_target", "delta",
  "devices": [{"name", "state", "records", "epsilon_spent", "executor"}], ...}`` (and
  ``"error"`` for a device whose step failed);
- ``stop JOB``; ``export JOB FILE``: the model as a torch state dict, and ``FILE.privacy.json``
  with its privacy statement (epsilon, delta, accountant, sampling rate, clipping).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._args import command, command_group, home_of, number, report

TIMEOUT = 30.0  # seconds: starting a job loads the task (the model's library on first use)


def add_learn_commands(sub: Any) -> None:
    """The ``learn`` command group, added to the CLI's subcommands."""
    learn = command_group(sub, "learn", "federated learning with differential privacy")
    about = "start a job across the swarm, coordinated from here"
    p = command(learn, "start", _cmd_start, about)
    p.add_argument(
        "task",
        metavar="TASK",
        help="a learning task (built in: digits; intents, from your labelled examples in the "
        "vault: swarm vault put intents/NAME 'LABEL<TAB>TEXT')",
    )
    p.add_argument("--epsilon", type=number, default=4.0, help="privacy budget per device (4)")
    p.add_argument("--delta", type=number, default=1e-5, help="delta (1e-5)")
    p.add_argument("--rounds", type=int, default=50, help="rounds the budget is spread over (50)")
    p.add_argument(
        "--trust",
        choices=("swarm", "none"),
        default="swarm",
        help="swarm: the coordinator adds the noise once; none: each device adds its share"
        " and updates are masked (secure aggregation)",
    )
    about = "rounds, accuracy, and each device's epsilon and state"
    p = command(learn, "status", _cmd_status, about)
    p.add_argument("job", metavar="JOB", nargs="?", help="a job id (default: the latest)")
    p = command(learn, "stop", _cmd_stop, "stop a job after its current round")
    p.add_argument("job", metavar="JOB")
    p = command(learn, "export", _cmd_export, "write the model and its privacy statement")
    p.add_argument("job", metavar="JOB")
    p.add_argument("file", metavar="FILE", help="where the torch state dict goes")


def _ask(args: argparse.Namespace, op: str, **request: Any) -> Any:
    from homeswarm.swarm import ask

    return ask(home_of(args), f"learn.{op}", timeout=TIMEOUT, **request)


def render(status: dict[str, Any]) -> list[str]:
    """A job's status, for people."""
    if "job" not in status:
        return ["no learning jobs on this device (start one: swarm learn start digits)"]
    shown = _figure(status["accuracy"])
    lines = [
        f"{status['job']}: {status['task']} {status['state']}, round {status['round']}"
        f"/{status.get('rounds', '?')}, accuracy {shown}, epsilon {status['epsilon_target']:g}"
        f" (delta {status['delta']:g}, trust {status.get('trust', 'swarm')})"
    ]
    if status.get("term"):  # another device started it; this one took it over
        lines[0] += f", taken over (term {status['term']})"
    for d in status["devices"]:
        where = f"  (steps: {d['executor']})" if d.get("executor") else ""
        why = f": {d['error']}" if d.get("error") else ""
        lines.append(
            f"  {d['name']:<16} {d['records']:>5} records  epsilon {d['epsilon_spent']:.3f}"
            f"  {d['state']}{why}{where}"
        )
    return lines


def _cmd_start(args: argparse.Namespace) -> int:
    status = _ask(
        args, "start", task=args.task, epsilon=args.epsilon, delta=args.delta,
        rounds=args.rounds, trust=args.trust,
    )  # fmt: skip
    return report(args, status, *render(status), f"follow it: swarm learn status {status['job']}")


def _cmd_status(args: argparse.Namespace) -> int:
    status = _ask(args, "status", job=args.job)
    return report(args, status, *render(status))


def _cmd_stop(args: argparse.Namespace) -> int:
    status = _ask(args, "stop", job=args.job)
    return report(args, status, *render(status))


def _cmd_export(args: argparse.Namespace) -> int:
    path = Path(args.file).expanduser().resolve()
    reply = _ask(args, "export", job=args.job, file=str(path))
    return report(
        args,
        reply,
        f"wrote {reply['model']} (round {reply['rounds']}, accuracy {_figure(reply['accuracy'])})",
        f"and {reply['privacy']}: epsilon {reply['epsilon']:.3f} <= {reply['epsilon_target']:g},"
        f" delta {reply['delta']:g}, {reply['accountant']} accountant,"
        f" sampling {reply['sample_rate']:g}, clip {reply['clip']:g}",
    )


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
