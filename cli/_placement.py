"""``swarm run`` and ``swarm kernels``: placing kernels from the command line.

``swarm run KERNEL [INPUT]`` asks the local peer to place and run a kernel and prints the result
and ``placed on DEVICE (EXECUTOR)``; ``--explain`` adds each device's score, or the constraint
that ruled it out. INPUT is text, or JSON when it starts with ``[`` or ``{`` (``-`` reads it from
stdin). An unknown kernel, an input of the wrong shape or no device allowed to run it is one line
on stderr and exit 2; a run that failed where it was placed and again where it was re-placed is
one line and exit 1.

``swarm kernels`` lists the kernels this device has and what each needs; with a running peer,
also the devices that offer each and the ones holding it now.
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

    command(sub, "kernels", _cmd_kernels, "list the kernels this device has, with their needs")


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
    lines.append(f"placed on {_clean(reply['device'])} ({_clean(reply['executor'])})")
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


def _cmd_kernels(args: argparse.Namespace) -> int:
    from homeswarm.swarm import NoPeerRunning, ask

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
    return ("kernels: " + "; ".join(parts)) if parts else None
