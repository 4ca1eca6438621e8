"""A small HTTP/1.1 server on trio for this device's own loopback endpoints (``/metrics``).

It runs in the peer's event loop, so a handler reads live state without locks or threads. It
reads one request per connection (the head only, at most ``MAX_HEAD`` bytes, within
``READ_TIMEOUT_S``), answers ``GET`` and ``HEAD`` and closes; anything else gets a status line,
never a traceback. It only ever listens on loopback (``[metrics] listen`` is checked).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

log = logging.getLogger("swarm.http")

MAX_HEAD = 8192
READ_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[], Awaitable[Response] | Response]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


def parse_request_line(head: bytes) -> tuple[str, str] | None:
    """``(method, path)`` of a request head, or None when it is not HTTP/1.x."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    return method, target.split("?", 1)[0]


def render(response: Response, *, head_only: bool = False) -> bytes:
    reason = _REASONS.get(response.status, "")
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        "Cache-Control: no-store",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head if head_only else head + response.body


class HttpServer:
    """Routes: path -> handler. ``url`` is known once ``serve`` has started."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.url: str | None = None

    async def bind(self, listen: str) -> list[trio.SocketListener]:
        """Listen on ``HOST:PORT`` (port 0: any free one); sets ``url``. Raises ``OSError``."""
        host, _, port = listen.rpartition(":")
        listeners = await trio.open_tcp_listeners(int(port), host=host)
        bound = listeners[0].socket.getsockname()
        self.url = f"http://{bound[0]}:{bound[1]}"
        return listeners

    async def serve(self, listeners: list[trio.SocketListener]) -> None:
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                head = await self._read_head(stream)
                await stream.send_all(await self._answer(head))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client left; nothing to tell it

    async def _read_head(self, stream: trio.SocketStream) -> bytes:
        data = b""
        with trio.move_on_after(READ_TIMEOUT_S):
            while b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
                chunk = await stream.receive_some(MAX_HEAD)
                if not chunk:
                    break
                data += chunk
        return data

    async def _answer(self, head: bytes) -> bytes:
        parsed = parse_request_line(head)
        if parsed is None:
            return render(Response(400, b"bad request\n"))
        method, path = parsed
        if method not in ("GET", "HEAD"):
            return render(Response(405, b"only GET\n"))
        handler = self.routes.get(path)
        if handler is None:
            return render(Response(404, b"not found\n"))
        try:
            result = handler()
            response = await result if not isinstance(result, Response) else result
        except Exception:
            log.exception("http: %s failed", path)
            response = Response(500, b"internal error (see the peer's log)\n")
        return render(response, head_only=method == "HEAD")


__all__ = ["HttpServer", "Response", "parse_request_line", "render"]
