"""The ``swarm`` command line.

Bad input gets one line on stderr and exit code 2, never a traceback.

A command loads only its own module: ``COMMANDS`` says which module adds each command to the
parser, and ``main`` builds the parser with that module alone (``swarm vault get`` never imports
the service, placement or simulator commands). Without a known command (``swarm --help``, a
typo) every module adds its commands, so the help lists them all and a typo gets argparse's
"invalid choice" with the choices.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from homeswarm.errors import InvalidArgument, LocalError, SwarmError, swarm_error_in
from homeswarm.swarm import __version__
from homeswarm.vocabulary import ROLES

from ._args import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    command,
    home_of,
    percent,
    report,
    scopes_arg,
    seconds,
)

# (module, its function that adds commands to the subparsers, the commands it adds), in the
# order `swarm --help` lists them; a test checks the names against the parser
COMMANDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        __name__,
        "add_peer_commands",
        ("init", "invite", "join", "revoke", "up", "status", "power", "demo"),
    ),
    ("._placement", "add_placement_commands", ("run", "kernels")),
    ("._logs", "add_logs_command", ("logs",)),
    ("._service", "add_service_commands", ("service",)),
    ("._ui", "add_ui_command", ("ui",)),
    ("._simulate", "add_simulate_commands", ("simulate",)),
    ("._vault", "add_vault_commands", ("vault",)),
    ("._recall", "add_recall_command", ("recall",)),
    ("._trust", "add_trust_commands", ("audit", "grant", "recover")),
    ("._anomaly", "add_anomaly_commands", ("anomaly",)),
    ("._learn", "add_learn_commands", ("learn",)),
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only`` (a command's name) just that command's module adds its
    commands, else every module does."""
    parser = Parser(
        prog="swarm",
        description="A peer-to-peer agent swarm across your own devices.",
        epilog="Run `swarm COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"swarm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    chosen = [entry for entry in COMMANDS if only in entry[2]] or COMMANDS
    for module, adder, _ in chosen:
        getattr(importlib.import_module(module, __package__), adder)(sub)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, if any: its first word that is not an option (the top-level
    options take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def add_peer_commands(sub: Any) -> None:
    """The commands of this device's peer and its membership."""
    p = command(sub, "init", _cmd_init, "create a new swarm with this device as its first member")
    p.add_argument("--name", required=True, help="this device's name, e.g. laptop")
    p.add_argument("--role", required=True, choices=ROLES, help="what kind of device this is")
    _add_device_options(p)
    p.add_argument(
        "--keep-root-key",
        action="store_true",
        help="also keep the swarm's root key in this home (root.key): whoever steals this device"
        " is then the swarm's root; by default only the recovery code printed once holds it",
    )

    p = command(sub, "invite", _cmd_invite, "print a one-time code that lets a new device join")
    p.add_argument(
        "--ttl",
        type=seconds,
        default=600.0,
        metavar="SECONDS",
        help="how long the code stays valid (default 600)",
    )
    from ._trust import add_grant_options

    add_grant_options(p)

    p = command(sub, "join", _cmd_join, "join a swarm with a code from `swarm invite`")
    p.add_argument("code", metavar="CODE", help="the code `swarm invite` printed on a member")
    p.add_argument("--name", required=True, help="this device's name, e.g. phone")
    p.add_argument("--role", required=True, choices=ROLES, help="what kind of device this is")
    _add_device_options(p)

    p = command(sub, "revoke", _cmd_revoke, "remove a device from the swarm for good")
    p.add_argument("device", metavar="DEVICE", help="the device's name or id")

    p = command(sub, "up", _cmd_up, "run this device's peer in the foreground", json=False)
    p.add_argument(
        "--listen",
        metavar="ADDR",
        action="append",
        help="multiaddr to listen on (repeatable; default from swarm.toml)",
    )
    p.add_argument("--no-mdns", action="store_true", help="do not use mDNS on the LAN")

    about = "show the devices of the swarm, as the local peer sees them"
    p = command(sub, "status", _cmd_status, about)
    p.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    p.add_argument(
        "--interval", type=seconds, default=1.0, metavar="SECONDS", help="--watch refresh period"
    )

    p = command(sub, "power", _cmd_power, "change this device's simulated power source")
    p.add_argument("--battery", type=percent, metavar="PCT", help="battery level, 0-100")
    plug = p.add_mutually_exclusive_group()
    plug.add_argument("--plugged", dest="plugged", action="store_true", default=None)
    plug.add_argument("--unplugged", dest="plugged", action="store_false")

    about = "run a local swarm of several devices on loopback"
    p = command(sub, "demo", _cmd_demo, about, home=False)
    p.add_argument("--peers", type=int, default=3, metavar="N", help="how many devices (3)")
    p.add_argument(
        "--seconds", type=seconds, default=None, help="stop after this long (default: Ctrl-C)"
    )
    p.add_argument(
        "--relay", action="store_true", help="add a blind relay (relay_only: reads no vault data)"
    )


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scopes",
        type=scopes_arg,
        metavar="LIST",
        help="data scopes this device may hold, comma-separated from public, personal, private"
        " (default: phone public,personal; laptop and server all three)",
    )
    p.add_argument(
        "--relay-only",
        action="store_true",
        help="a blind relay: stores and forwards data it may not read",
    )


def _cmd_init(args: argparse.Namespace) -> int:
    from homeswarm.swarm import init_home, new_root, recovery_code

    home = home_of(args)
    root = new_root()
    ident = init_home(
        home,
        name=args.name,
        role=args.role,
        scopes=args.scopes,
        relay_only=args.relay_only,
        root=root,
        keep_root=args.keep_root_key,
    )
    scopes = list(ident.settings.device.effective_scopes())
    code = recovery_code(root)
    return report(
        args,
        {
            "home": str(home),
            "device": ident.device_id,
            "swarm": ident.swarm_id,
            "name": ident.name,
            "role": args.role,
            "scopes": scopes,
            "relay_only": args.relay_only,
            "admin": True,
            "recovery_code": code,
        },
        f"created swarm {ident.swarm_id} in {home}",
        f"device {ident.name} ({args.role}, admin): {ident.device_id}",
        f"scopes: {','.join(scopes)}{' (relay only)' if args.relay_only else ''}",
        "",
        "recovery code (shown once: write it down and keep it away from your devices; with it",
        "`swarm recover CODE` makes any device an admin again if every admin device is lost):",
        f"  {code}",
    )


def _cmd_invite(args: argparse.Namespace) -> int:
    from homeswarm.swarm import ask

    from ._trust import grant_args

    reply = ask(home_of(args), "trust.invite", ttl=args.ttl, **grant_args(args))
    return report(args, reply, reply["code"])


def _cmd_join(args: argparse.Namespace) -> int:
    from homeswarm.swarm import join_swarm

    home = home_of(args)
    joined = join_swarm(
        home,
        args.code,
        name=args.name,
        role=args.role,
        scopes=args.scopes,
        relay_only=args.relay_only,
    )
    return report(
        args,
        {
            "home": str(home),
            "device": joined.device,
            "swarm": joined.swarm,
            "inviter": joined.inviter,
            "members": joined.members,
        },
        f"joined swarm {joined.swarm} ({joined.members} devices) in {home}",
        f"device {args.name} ({args.role}): {joined.device}",
        f"start it with: swarm up --home {home}",
    )


def _cmd_revoke(args: argparse.Namespace) -> int:
    from homeswarm.swarm import ask

    from ._trust import revoke_lines

    reply = ask(home_of(args), "trust.revoke", device=args.device)
    return report(args, reply, *revoke_lines(reply))


def _cmd_status(args: argparse.Namespace) -> int:
    from homeswarm.swarm import ask

    from ._status import render_table, watch

    home = home_of(args)
    if args.watch:
        watch(
            lambda: ask(home, "status"),
            interval=args.interval,
            out=sys.stdout,
            color=sys.stdout.isatty(),
        )
        return EXIT_OK
    status = ask(home, "status")
    return report(args, status, render_table(status, color=sys.stdout.isatty()))


def _cmd_power(args: argparse.Namespace) -> int:
    from homeswarm.swarm import ask

    if args.battery is None and args.plugged is None:
        raise InvalidArgument("say what to change: --battery PCT, --plugged or --unplugged")
    reply = ask(home_of(args), "power", battery=args.battery, plugged=args.plugged)
    plugged = {True: "plugged in", False: "on battery", None: "unknown"}[reply["plugged"]]
    percent = reply["battery_percent"]
    battery = "no battery" if percent is None else f"{percent:.1f}%"
    return report(args, reply, f"power: {battery}, {plugged}")


def _cmd_up(args: argparse.Namespace) -> int:
    from homeswarm.swarm import run_up

    return run_up(home_of(args), listen=args.listen, mdns=not args.no_mdns)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(
        args.peers,
        seconds=args.seconds,
        json_out=args.json,
        relay=args.relay,
        verbose=args.verbose,
    )


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_of(words))
    args = parser.parse_args(words)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.run(args)
        if argv is None and getattr(args, "exit_at_once", False):
            # the process ends here: a command that built a large heap (a simulated swarm of a
            # thousand peers: a minute to free) leaves without freeing it, its output flushed
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    except (SwarmError, BaseExceptionGroup) as exc:
        error = swarm_error_in(exc)
        if error is None:
            raise
        if isinstance(error, LocalError):
            print(f"swarm {args.command}: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        print(f"swarm {args.command}: {error}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `swarm status | head -1`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
