"""``swarm logs``: read this device's log (what ``swarm up`` wrote), or follow it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._args import EXIT_FAIL, EXIT_OK, command, home_of

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # logging's, as the log names them


def add_logs_command(sub: Any) -> None:
    p = command(sub, "logs", _cmd_logs, "show this device's log (what `swarm up` wrote)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new entries")
    p.add_argument(
        "--level",
        type=str.upper,
        choices=LEVELS,
        default="INFO",
        metavar="LEVEL",
        help="the least severe level shown: DEBUG, INFO (default), WARNING, ERROR",
    )
    p.add_argument(
        "-n", "--lines", type=int, default=50, metavar="N", help="show the last N (default 50)"
    )


def _cmd_logs(args: argparse.Namespace) -> int:
    from homeswarm.swarm import follow_log, log_path, read_log

    home = home_of(args)
    if not home.is_dir():
        print(f"swarm logs: error: no swarm home at {home}", file=sys.stderr)
        return 2
    if not log_path(home).exists() and not args.follow:
        print(f"swarm logs: no log yet ({log_path(home)}): `swarm up` writes it", file=sys.stderr)
        return EXIT_FAIL
    last = list(read_log(home, level=args.level))[-args.lines :] if args.lines > 0 else []
    for entry in last:
        _show(entry, args.json)
    if args.follow:
        for entry in follow_log(home, level=args.level):
            _show(entry, args.json)
    return EXIT_OK


def _show(entry: Any, as_json: bool) -> None:
    print(json.dumps(entry.to_json()) if as_json else entry.line(), flush=True)
