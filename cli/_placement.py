"""``swarm run`` and ``swarm kernels``: placing kernels from the command line.

``swarm run KERNEL [INPUT]`` asks the local peer to place and run a kernel and prints the result
and ``placed on DEVICE (EXECUTOR)``; ``--explain`` adds each device's score, or the constraint
that ruled it out. INPUT is text, or JSON when it starts with ``[`` or ``{`` (``-`` reads it from
stdin). An unknown kernel, an input of the wrong shape or no device allowed to run it is one line
on stderr and exit 2; a run that failed where it was placed and again where it was re-placed is
one line and exit 1.

``swarm kernels`` lists the kernels this device has and what each needs; with a running peer,
also the devices that offer each and the ones holding it now. ``--stats`` shows, per kernel and
device, what the runs placed from this device measured: runs, the first run's compute (a cold
start: it does not teach), the compute declared and observed, the wait besides (remote runs),
and the calibration's ratio (observed over declared) with its spread, which the policy (and
``swarm run --explain``) uses once three warm runs back it.

The kernel mesh: ``swarm kernels start KERNEL [--count N] [--scope S]`` registers N long-lived
instances and places them in one batch; ``swarm kernels ps`` lists the instances by device,
kernel and state. The peer moves a dead device's instances, and rebalances on a power change.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from homeswarm.errors import InvalidArgument
from homeswarm.vocabulary import SCOPES

from ._args import clean, command, holdings, home_of, report, seconds

__all__ = ["add_placement_commands"]

RUN_MARGIN_S = 10.0  # the CLI waits this much longer than two runs (a failure and a re-placement)


def add_placement_commands(sub: Any) -> None:
    """Add ``run`` and ``kernels`` to the ``swarm`` subcommands."""

    p = command(sub, "run", _cmd_run, "place a kernel on the best device and run it")
    p.add_argument("kernel", metavar="KERNEL", help="the kernel's name (see `swarm kernels`)")
    p.add_argument(
        "input",
        metavar="INPUT",
        nargs="?",
        default=None,
        help="the kernel's input: text, or JSON if it starts with [ or {; - reads stdin",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="show each device's score, or the constraint that ruled it out",
    )
    p.add_argument(
        "--scope",
        choices=SCOPES,
        help="the data's scope, when above the kernel's own (e.g. private: only devices that "
        "may hold private data run it)",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        help="give up on a run after this long (default: [placement] run_timeout_s)",
    )

    p = command(
        sub,
        "kernels",
        _cmd_kernels,
        "list the kernels this device has, with their needs; start and list instances",
    )
    p.description = (
        "List the kernels this device has, with their needs. `swarm kernels ps` and `swarm "
        "kernels start` work on the kernel mesh: long-lived instances, placed in batches, moved "
        "when their device dies or may no longer run them."
    )
    p.add_argument(
        "--stats",
        action="store_true",
        help="per kernel and device: runs placed from here, declared vs observed compute, and "
        "the calibration the policy uses",
    )
    actions = p.add_subparsers(dest="action", metavar="{ps,start,stop}")
    q = actions.add_parser("ps", help="list the kernel instances by device, kernel and state")
    _sub_options(q)
    q.set_defaults(run=_cmd_ps)
    q = actions.add_parser("start", help="start long-lived instances of a kernel, placed at once")
    q.add_argument("kernel", metavar="KERNEL", help="the kernel's name (see `swarm kernels`)")
    q.add_argument(
        "--count", type=_count, default=1, metavar="N", help="how many instances (default 1)"
    )
    q.add_argument(
        "--scope",
        choices=SCOPES,
        help="the scope of the data they hold, when above the kernel's own",
    )
    _sub_options(q)
    q.set_defaults(run=_cmd_start)
    q = actions.add_parser("stop", help="stop long-lived instances of a kernel (all, or --count)")
    q.add_argument("kernel", metavar="KERNEL", help="the kernel's name (see `swarm kernels ps`)")
    q.add_argument(
        "--count", type=_count, metavar="N", help="how many, the newest first (default all)"
    )
    _sub_options(q)
    q.set_defaults(run=_cmd_stop)


def _sub_options(p: argparse.ArgumentParser) -> None:
    """``--home`` and ``--json`` on a ``kernels`` action, without hiding them given before it."""
    common = p.add_argument_group("common options")
    common.add_argument(
        "--home", metavar="DIR", default=argparse.SUPPRESS, help="this device's home"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object"
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def parse_input(text: str | None, stdin: Any = None) -> Any:
    """INPUT as the kernel gets it: None, text, or JSON (``[``/``{``); ``-`` reads ``stdin``."""
    if text is None:
        return None
    if text == "-":
        text = (stdin or sys.stdin).read().strip()
    if text.lstrip().startswith(("[", "{")):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise InvalidArgument(f"INPUT starts like JSON but is not JSON: {exc}") from None
    return text


def _cmd_run(args: argparse.Namespace) -> int:
    from homeswarm.swarm import CONFIG_NAME, ask, load_settings

    home = home_of(args)
    value = parse_input(args.input)
    budget = args.timeout or load_settings(home / CONFIG_NAME).placement.run_timeout_s
    reply = ask(
        home,
        "kernels.run",
        timeout=2 * budget + RUN_MARGIN_S,
        kernel=args.kernel,
        input=value,
        scope=args.scope,
        timeout_s=args.timeout,
    )
    if not args.explain:
        reply["explain"] = []
    if args.json:
        return report(args, reply)
    lines = [json.dumps(reply["result"])]
    lines.extend(_attempt_lines(reply))
    placed = f"placed on {clean(reply['device'])} ({clean(reply['executor'])})"
    if reply.get("variant"):
        placed += f", as its cheaper variant {clean(reply['variant'])} (low battery)"
    lines.append(placed)
    lines.extend(explain_lines(reply["explain"]))
    return report(args, reply, *lines)


def _attempt_lines(reply: dict[str, Any]) -> list[str]:
    return [
        f"re-placed: {clean(a['device'])} failed ({clean(a['error'])})"
        for a in reply.get("attempts", [])
    ]


def explain_lines(entries: list[dict[str, Any]]) -> list[str]:
    """One line per device: its verdict, and its score or the constraint that ruled it out."""
    if not entries:
        return []
    names = [clean(e["name"] or e["device"][-8:]) for e in entries]
    width = max(len(n) for n in names)
    lines = []
    for name, e in zip(names, entries, strict=True):
        verdict = e["verdict"]
        if verdict == "excluded":
            why = f"{e['constraint']}: {clean(e['reason'])}"
        else:
            why = clean(e["reason"])
        lines.append(f"  {name:<{width}}  {verdict:<9}  {why}")
    return lines


def _cmd_ps(args: argparse.Namespace) -> int:
    from homeswarm.swarm import ask

    reply = ask(home_of(args), "kernels.ps", timeout=10.0)
    return report(args, reply, *ps_lines(reply))


def ps_lines(reply: dict[str, Any]) -> list[str]:
    """The instances by device, kernel, scope and state, a row each with its count."""
    rows = reply.get("instances") or []
    if not rows:
        return ["no kernel instances (start some: swarm kernels start KERNEL --count N)"]
    header = ["DEVICE", "KERNEL", "SCOPE", "STATE", "INSTANCES"]
    table = [
        [
            clean(r["device"]) if r["device"] is not None else "(parked)",
            clean(r["kernel"]),
            clean(r["scope"]),
            clean(r["state"]),
            str(int(r["instances"])),
        ]
        for r in sorted(rows, key=lambda r: (r["device"] is None, r["device"] or "", r["kernel"]))
    ]
    total = int(reply.get("total", 0))
    return [*_columns(header, table), f"{total} instance{'' if total == 1 else 's'}"]


def _cmd_stop(args: argparse.Namespace) -> int:
    from homeswarm.swarm import ask

    reply = ask(home_of(args), "kernels.stop", timeout=60.0, kernel=args.kernel, count=args.count)
    n = reply["stopped"]
    line = f"stopped {n} {clean(reply['kernel'])} instance{'' if n == 1 else 's'}"
    return report(args, reply, f"{line}; {reply['left']} left in the mesh")


def _cmd_start(args: argparse.Namespace) -> int:
    from homeswarm.swarm import ask

    reply = ask(
        home_of(args),
        "kernels.start",
        timeout=60.0,
        kernel=args.kernel,
        count=args.count,
        scope=args.scope,
    )
    placed = ", ".join(f"{clean(d)} {n}" for d, n in sorted(reply["placed"].items()))
    n = reply["ids"][1] - reply["ids"][0] + 1
    lines = [
        f"started {n} {clean(reply['kernel'])} instance{'' if n == 1 else 's'} "
        f"({reply['scope']}): {placed or 'none placed'}"
    ]
    if reply["parked"]:
        lines.append(f"parked {reply['parked']}: no device may run them now (they wait)")
    return report(args, reply, *lines)


def stats_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per kernel and device: runs, the first (cold) run's compute, declared and observed
    (warm) compute, wait, ratio +- spread."""
    if not rows:
        return ["no runs placed from this device yet (swarm run KERNEL ...)"]
    header = ["KERNEL", "DEVICE", "RUNS", "FIRST", "DECLARED", "OBSERVED", "WAIT", "RATIO"]
    table = [
        [
            clean(r["kernel"]),
            clean(r["device"]),
            str(r["runs"]),
            f"{r['first_ms']:g} ms",
            f"{r['declared_ms']:g} ms",
            "-" if r["observed_ms"] is None else f"{r['observed_ms']:g} ms",
            "-" if r["wait_ms"] is None else f"{r['wait_ms']:g} ms",
            f"{r['ratio']:.3g} ± {r['sd']:.2g}",
        ]
        for r in rows
    ]
    return _columns(header, table)


def _columns(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _cmd_kernels(args: argparse.Namespace) -> int:
    from homeswarm.swarm import NoPeerRunning, ask

    if args.stats:
        reply = ask(home_of(args), "kernels.stats", timeout=5.0)
        return report(args, reply, *stats_lines(reply["stats"]))

    try:
        reply = ask(home_of(args), "kernels.list", timeout=5.0)
        kernels: list[dict[str, Any]] = reply["kernels"]
        held: list[dict[str, Any]] = reply["status"]["held"]
        names: dict[str, str] = reply["names"]
    except NoPeerRunning:
        from homeswarm.kernels import default_registry

        kernels = [
            {
                **k.describe(),
                "offered": k.is_available(),
                "unavailable": k.unavailable(),
                "devices": None,
            }
            for k in default_registry()
        ]
        held, names = [], {}
    value = {"kernels": kernels, "held": held}
    return report(args, value, *_kernel_table(kernels), *_held_lines(held, names))


def _held_lines(held: list[dict[str, Any]], names: dict[str, str]) -> list[str]:
    """Which device holds which kernel now (as far as this peer knows)."""
    by_device = holdings(held)
    lines = ["", "held now:"] if by_device else []
    for device in sorted(by_device, key=lambda d: (names.get(d, d), d)):
        name = clean(names.get(device, device[-8:]))
        lines.append(f"  {name}: {'; '.join(by_device[device])}")
    return lines


def _kernel_table(kernels: list[dict[str, Any]]) -> list[str]:
    header = ["KERNEL", "ENERGY", "SCOPE", "CPU", "MEMORY", "BUDGET", "STATE", "DEVICES", "WHAT"]
    rows = []
    for k in kernels:
        needs = k["needs"]
        devices = k["devices"]
        where = "-" if devices is None else (",".join(clean(d) for d in devices) or "none")
        rows.append(
            [
                clean(k["name"]),
                needs["energy"],
                needs["scope"],
                f"{needs['cpu']:g}",
                f"{needs['memory_mb']:g} MB",
                f"{needs['latency_budget_s']:g} s",
                "yes" if needs["stateful"] else "no",
                where,
                clean(k["doc"]),
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ] + [
        f"{clean(k['name'])} is unavailable here: {clean(k['unavailable'])}"
        for k in kernels
        if isinstance(k.get("unavailable"), str)
    ]
