"""``swarm ui``: open the running peer's live page in a browser (or print its address)."""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from homeswarm.errors import InvalidArgument

from ._args import EXIT_OK, command, home_of, report


def add_ui_command(sub: Any) -> None:
    about = "open the live page of this device's peer (devices, vault, kernels)"
    p = command(sub, "ui", _cmd_ui, about)
    p.add_argument("--no-browser", action="store_true", help="print the address only")
    p.add_argument(
        "--results",
        metavar="DIR",
        help="instead, show the plots and figures of a `swarm simulate ... --out DIR` run"
        " (served from here, on loopback, until Ctrl-C)",
    )


def _cmd_ui(args: argparse.Namespace) -> int:
    if args.results:
        return _serve_results(args)
    from homeswarm.swarm import ask

    endpoints = ask(home_of(args), "status").get("endpoints") or {}
    url = endpoints.get("ui")
    if not url:
        raise InvalidArgument("this peer serves no page: [http] listen is empty in its swarm.toml")
    opened = False
    if not args.no_browser and not args.json:
        opened = _open(url)
    lines = [f"swarm ui: {url}"] + ([] if opened else ["  (open it in a browser on this device)"])
    report(args, {"ui": url, "metrics": endpoints.get("metrics"), "opened": opened}, *lines)
    return EXIT_OK


def _open(url: str) -> bool:
    import webbrowser

    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


def results_page(directory: Path, token: str = "") -> bytes:
    """One page with a run's figures (``result.json``) and every plot in it."""
    try:
        result = json.loads((directory / "result.json").read_text())
    except (OSError, ValueError):
        result = None
    plots = sorted(p.name for p in directory.glob("*.png"))
    if result is None and not plots:
        raise InvalidArgument(f"{directory}: no result.json and no plots (from `--out DIR`)")
    title = html.escape(f"swarm simulate: {directory.name}")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{title}</title><style>body{{font:14px system-ui;margin:1.5rem}}"
        "img{max-width:100%;display:block;margin:1rem 0}pre{background:#f6f8fa;padding:.8rem;"
        "overflow:auto;max-height:30rem}</style></head><body>",
        f"<h1>{title}</h1>",
    ]
    for name in plots:
        label, link = html.escape(name), html.escape(f"{quote(name)}?token={quote(token)}")
        parts.append(f"<h2>{label}</h2><img alt='{label}' src='plot/{link}'>")
    if result is not None:
        figures = html.escape(json.dumps(result, indent=2))
        parts.append(f"<h2>result.json</h2><pre>{figures}</pre>")
    parts.append("</body></html>")
    return "".join(parts).encode()


def _serve_results(args: argparse.Namespace) -> int:
    import secrets
    from functools import partial

    import trio

    from homeswarm.swarm import HttpServer, Request, Response

    directory = Path(args.results).expanduser()
    if not directory.is_dir():
        raise InvalidArgument(f"--results: no directory {directory}")
    token = secrets.token_urlsafe(18)
    page = results_page(directory, token)
    plots = {quote(p.name): p for p in directory.glob("*.png")}

    def index(request: Request) -> Response:
        return Response(200, page, "text/html; charset=utf-8")

    def plot(request: Request) -> Response:
        return Response(200, plots[request.path.removeprefix("/plot/")].read_bytes(), "image/png")

    routes = {"/": index, **{f"/plot/{link}": plot for link in plots}}
    server = HttpServer(routes, token=token)

    async def serve() -> None:
        listeners = await server.bind("127.0.0.1:0")
        url = f"{server.url}/?token={token}"
        report(args, {"ui": url}, f"swarm ui: {url}", "  Ctrl-C to stop")
        sys.stdout.flush()
        if not args.no_browser and not args.json:
            _open(url)
        await server.serve(listeners)

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(partial(serve))
    return EXIT_OK
