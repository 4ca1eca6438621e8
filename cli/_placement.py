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

from ._args import command, home_of, report, seconds
from ._status import _clean

__all__ = ["add_placement_commands", "kernels_line"]

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
    placed = f"placed on {_clean(reply['device'])} ({_clean(reply['executor'])})"
    if reply.get("variant"):
        placed += f", as its cheaper variant {_clean(reply['variant'])} (low battery)"
    lines.append(placed)
    lines.extend(explain_lines(reply["explain"]))
    return report(args, reply, *lines)


def _attempt_lines(reply: dict[str, Any]) -> list[str]:
    return [
        f"re-placed: {_clean(a['device'])} failed ({_clean(a['error'])})"
        for a in reply.get("attempts", [])
    ]


def explain_lines(entries: list[dict[str, Any]]) -> list[str]:
    """One line per device: its verdict, and its score or the constraint that ruled it out."""
    if not entries:
        return []
    names = [_clean(e["name"] or e["device"][-8:]) for e in entries]
    width = max(len(n) for n in names)
    lines = []
    for name, e in zip(names, entries, strict=True):
        verdict = e["verdict"]
        if verdict == "excluded":
            why = f"{e['constraint']}: {_clean(e['reason'])}"
        else:
            why = _clean(e["reason"])
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
            _clean(r["device"]) if r["device"] is not None else "(parked)",
            _clean(r["kernel"]),
            _clean(r["scope"]),
            _clean(r["state"]),
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
    line = f"stopped {n} {_clean(reply['kernel'])} instance{'' if n == 1 else 's'}"
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
    placed = ", ".join(f"{_clean(d)} {n}" for d, n in sorted(reply["placed"].items()))
    n = reply["ids"][1] - reply["ids"][0] + 1
    lines = [
        f"started {n} {_clean(reply['kernel'])} instance{'' if n == 1 else 's'} "
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
            _clean(r["kernel"]),
            _clean(r["device"]),
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
    by_device = _holdings(held)
    lines = ["", "held now:"] if by_device else []
    for device in sorted(by_device, key=lambda d: (names.get(d, d), d)):
        name = _clean(names.get(device, device[-8:]))
        lines.append(f"  {name}: {'; '.join(by_device[device])}")
    return lines


def _holdings(held: Any) -> dict[str, list[str]]:
    """``{device: ["embed (ray, pid 4242, 3 runs)", ...]}``; malformed entries are left out."""
    by_device: dict[str, list[str]] = {}
    for h in held if isinstance(held, list) else []:
        try:
            runs, running = int(h["runs"]), int(h["running"])
            text = f"{_clean(h['kernel'])} ({_clean(h['executor'])}"
            text += f", pid {int(h['pid'])}" if h.get("pid") is not None else ""
            text += f", {runs} run{'' if runs == 1 else 's'}"
            text += f", {running} running)" if running else ")"
            by_device.setdefault(str(h["device"]), []).append(text)
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
    return by_device


def _kernel_table(kernels: list[dict[str, Any]]) -> list[str]:
    header = ["KERNEL", "ENERGY", "SCOPE", "CPU", "MEMORY", "BUDGET", "STATE", "DEVICES", "WHAT"]
    rows = []
    for k in kernels:
        needs = k["needs"]
        devices = k["devices"]
        where = "-" if devices is None else (",".join(_clean(d) for d in devices) or "none")
        rows.append(
            [
                _clean(k["name"]),
                needs["energy"],
                needs["scope"],
                f"{needs['cpu']:g}",
                f"{needs['memory_mb']:g} MB",
                f"{needs['latency_budget_s']:g} s",
                "yes" if needs["stateful"] else "no",
                where,
                _clean(k["doc"]),
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ] + [
        f"{_clean(k['name'])} is unavailable here: {_clean(k['unavailable'])}"
        for k in kernels
        if isinstance(k.get("unavailable"), str)
    ]


def kernels_line(section: Any, names: dict[str, str]) -> str | None:
    """The ``swarm status`` line for the "kernels" section: which device holds which kernel.

    ``kernels: ray here; laptop holds embed (ray, pid 4242, 3 runs); server holds embed (ray,
    pid 5151, 0 runs, 1 running)``. ``names`` maps device ids to names. Anything malformed (the
    section is what the peer sent) is left out; None when there is nothing to say.
    """
    if not isinstance(section, dict):
        return None
    parts = []
    executor = section.get("executor")
    if isinstance(executor, str):
        parts.append(f"{_clean(executor)} here")
    unavailable = section.get("unavailable")
    if isinstance(unavailable, dict):
        parts += [
            f"{_clean(name)} unavailable here ({_clean(why)})"
            for name, why in sorted(unavailable.items())
            if isinstance(name, str) and isinstance(why, str)
        ]
    by_device = _holdings(section.get("held"))
    for device in sorted(by_device, key=lambda d: (names.get(d, d), d)):
        name = _clean(names.get(device, device[-8:]))
        parts.append(f"{name} holds {', '.join(by_device[device])}")
    instances = section.get("instances")
    if isinstance(instances, dict) and isinstance(instances.get("by_device"), dict):
        homes = [
            f"{_clean(names.get(d, d[-8:]))} {n}"
            for d, n in sorted(
                instances["by_device"].items(), key=lambda kv: names.get(kv[0], kv[0])
            )
            if isinstance(d, str) and isinstance(n, int)
        ]
        parked = instances.get("parked")
        if isinstance(parked, int) and parked:
            homes.append(f"{parked} parked")
        parts.append("instances " + ", ".join(homes))
    return ("kernels: " + "; ".join(parts)) if parts else None
