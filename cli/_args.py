"""What the commands share: the parser, common options, number parsing, how results print.

Imports nothing heavy: ``swarm --help`` loads this and the command tables only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from homeswarm.errors import InvalidArgument
from homeswarm.vocabulary import parse_scopes

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

Command = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2) instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def command(
    sub: Any, name: str, run: Command, about: str, *, home: bool = True, json: bool = True
) -> argparse.ArgumentParser:
    """A subcommand ``name`` that runs ``run(args)``, with ``--home`` and ``--json`` unless told
    not to (listed apart in its help, after its own options); add its own arguments to the
    parser it returns."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=about)
    p.set_defaults(run=run)
    common = p.add_argument_group("common options")
    if home:
        add_home(common)
    if json:
        add_json(common)
    return p


def command_group(sub: Any, name: str, about: str) -> Any:
    """A command ``name`` whose subcommands are added to what it returns (``command(group,
    ...)``); ``swarm NAME`` alone prints its usage and exits 2."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=about)
    inner = parser.add_subparsers(
        dest=f"{name}_command", metavar="COMMAND", parser_class=type(parser)
    )

    def usage(args: argparse.Namespace) -> int:
        parser.print_usage()
        return EXIT_USAGE

    parser.set_defaults(run=usage)
    return inner


def add_home(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--home",
        metavar="DIR",
        help="this device's home directory (default: $SWARM_HOME, else the user data dir)",
    )


def home_of(args: argparse.Namespace) -> Path:
    """The home a command works on: ``--home``, else ``$SWARM_HOME``, else the user data dir."""
    if args.home:
        return Path(args.home).expanduser()
    env = os.environ.get("SWARM_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs  # (only where neither says: it costs a fifth of start-up)

    return Path(platformdirs.user_data_dir("swarm", appauthor=False))


def add_json(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object for scripts")


def seconds(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``48h``, ``7d``: positive seconds."""
    unit = UNITS.get(text[-1:].lower()) if text else None
    try:
        value = float(text[:-1] if unit else text) * (unit or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (a number of seconds, or with s, m, h or d)"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive duration, got {text!r}")
    return value


def until_text(at: float, now: float) -> str:
    """``in 47h59m``, ``in 5m``, ``expired``: how long until ``at``, for people."""
    left = at - now
    if left <= 0:
        return "expired"
    minutes = int(left // 60)
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"in {days}d{hours}h"
    if hours:
        return f"in {hours}h{mins:02d}m"
    return f"in {mins}m" if mins else f"in {int(left)}s"


def percent(text: str) -> float:
    value = number(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100, got {text!r}")
    return value


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def scopes_arg(text: str) -> tuple[str, ...]:
    try:
        return parse_scopes(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def report(args: argparse.Namespace, value: Any, *lines: str) -> int:
    """A command's result: one JSON object with --json, else its lines for people."""
    if args.json:
        print(json.dumps(value, indent=None, sort_keys=True))
    else:
        print("\n".join(lines))
    return EXIT_OK


# ---- what a peer sent, shown -------------------------------------------------------------------


def clean(text: object) -> str:
    """Text from a peer, with anything that could drive the terminal replaced."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def holdings(held: Any) -> dict[str, list[str]]:
    """``{device: ["embed (ray, pid 4242, 3 runs)", ...]}``; malformed entries are left out."""
    by_device: dict[str, list[str]] = {}
    for h in held if isinstance(held, list) else []:
        try:
            runs, running = int(h["runs"]), int(h["running"])
            text = f"{clean(h['kernel'])} ({clean(h['executor'])}"
            text += f", pid {int(h['pid'])}" if h.get("pid") is not None else ""
            text += f", {runs} run{'' if runs == 1 else 's'}"
            text += f", {running} running)" if running else ")"
            by_device.setdefault(str(h["device"]), []).append(text)
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
    return by_device
