"""The live page ``swarm ui`` opens: the routes the daemon's HTTP server adds for it.

``/`` is one static page (``ui.html``: plain HTML and a little JavaScript, nothing loaded from
elsewhere); ``/events`` streams the peer's view as server-sent events, one ``status`` event a
second: the devices with state, battery and RTT, the vault's sync state, the kernel instances
per device and the last runs placed from here with why they went where they did. Both need the
token the peer made at start (``secrets.token_urlsafe``): it is in the address ``swarm ui``
prints, which only this device's user can learn (from the control socket, mode 0600), so another
local user or a web page that guesses the port gets 403.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import trio

from ._http import Handler, Request, Response, Stream

if TYPE_CHECKING:
    from ._peer import Peer

EVERY_S = 1.0


def snapshot(peer: Peer) -> dict[str, Any]:
    """What the page shows: the status, plus the vault's section and the recent runs."""
    out = peer.status()
    vault = peer.services.get("vault")
    section = getattr(vault, "section", None)
    if section is not None:
        out["vault"] = section()
    kernels = peer.services.get("kernels")
    ledger = getattr(kernels, "ledger", None)
    out["runs"] = list(ledger.recent) if ledger is not None else []
    return out


def ui_routes(peer: Callable[[], Peer | None]) -> dict[str, Handler]:
    """The page and its events (the server checks the token: ``HttpServer(token=...)``)."""
    page = resources.files(__package__).joinpath("ui.html").read_bytes()

    def index(request: Request) -> Response:
        return Response(200, page, "text/html; charset=utf-8")

    def events(request: Request) -> Stream:
        return Stream(_events(peer))

    return {"/": index, "/events": events}


async def _events(peer: Callable[[], Peer | None]) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    while True:
        current = peer()
        if current is not None and current.core is not None:
            data = json.dumps(snapshot(current), separators=(",", ":"))
            yield f"event: status\ndata: {data}\n\n".encode()
        await trio.sleep(EVERY_S)


__all__ = ["snapshot", "ui_routes"]
