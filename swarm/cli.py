"""The ``swarm`` command line.

Bad input gets one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from transports import LocalError, SwarmError

from . import __version__
from ._config import ROLES
from ._home import init_home, resolve_home

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2) instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_home(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--home",
        metavar="DIR",
        help="this device's home directory (default: $SWARM_HOME, else the user data dir)",
    )


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object for scripts")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="swarm",
        description="A peer-to-peer agent swarm across your own devices.",
        epilog="Run `swarm COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"swarm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("init", help="create a new swarm with this device as its first member")
    p.add_argument("--name", required=True, help="this device's name, e.g. laptop")
    p.add_argument("--role", required=True, choices=ROLES, help="what kind of device this is")
    _add_home(p)
    _add_json(p)
    p.set_defaults(run=_cmd_init)

    p = sub.add_parser("up", help="run this device's peer in the foreground")
    _add_home(p)
    p.add_argument(
        "--listen",
        metavar="ADDR",
        action="append",
        help="multiaddr to listen on (repeatable; default from swarm.toml)",
    )
    p.add_argument("--no-mdns", action="store_true", help="do not use mDNS on the LAN")
    p.set_defaults(run=_cmd_up)

    p = sub.add_parser("demo", help="run a local swarm on its embedded defaults")
    p.add_argument(
        "--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)"
    )
    p.set_defaults(run=_cmd_demo)
    return parser


def _cmd_init(args: argparse.Namespace) -> int:
    home = resolve_home(args.home)
    ident = init_home(home, name=args.name, role=args.role)
    if args.json:
        _print_json(
            {
                "home": str(home),
                "device": ident.device_id,
                "swarm": ident.swarm_id,
                "name": ident.name,
                "role": args.role,
            }
        )
    else:
        print(f"created swarm {ident.swarm_id} in {home}")
        print(f"device {ident.name} ({args.role}): {ident.device_id}")
    return EXIT_OK


def _cmd_up(args: argparse.Namespace) -> int:
    from ._daemon import run_up

    return run_up(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._daemon import run_demo

    return run_demo(args)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=None, sort_keys=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.run(args)
        return code
    except (SwarmError, BaseExceptionGroup) as exc:
        error = _our_error(exc)
        if error is None:
            raise
        if isinstance(error, LocalError):
            print(f"swarm {args.command}: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        print(f"swarm {args.command}: {error}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


def _our_error(exc: BaseException) -> SwarmError | None:
    """The SwarmError to report, also from inside trio's exception groups; None if there is none."""
    if isinstance(exc, SwarmError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _our_error(inner)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
