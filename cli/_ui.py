"""``swarm ui``: open the running peer's live page in a browser (or print its address)."""

from __future__ import annotations

import argparse
from typing import Any

from homeswarm.errors import InvalidArgument

from ._args import EXIT_OK, add_home, add_json, home_of, report


def add_ui_command(sub: Any) -> None:
    p = sub.add_parser(
        "ui",
        help="open the live page of this device's peer (devices, vault, kernels)",
        description="Print the address of the running peer's page (loopback only; the address"
        " carries a token, so keep it to yourself) and open it in the browser.",
    )
    p.add_argument("--no-browser", action="store_true", help="print the address only")
    add_home(p)
    add_json(p)
    p.set_defaults(run=_cmd_ui)


def _cmd_ui(args: argparse.Namespace) -> int:
    from homeswarm.swarm import ask

    endpoints = ask(home_of(args), "status").get("endpoints") or {}
    url = endpoints.get("ui")
    if not url:
        raise InvalidArgument("this peer serves no page: [http] listen is empty in its swarm.toml")
    opened = False
    if not args.no_browser and not args.json:
        import webbrowser

        opened = webbrowser.open(url)
    lines = [f"swarm ui: {url}"] + ([] if opened else ["  (open it in a browser on this device)"])
    report(args, {"ui": url, "metrics": endpoints.get("metrics"), "opened": opened}, *lines)
    return EXIT_OK
