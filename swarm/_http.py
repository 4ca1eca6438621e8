"""A small HTTP/1.1 server on trio for this device's own loopback endpoints (``/metrics``, the
page ``swarm ui`` opens and its event stream).

It runs in the peer's event loop, so a handler reads live state without locks or threads. It
reads one request per connection (the head only, at most ``MAX_HEAD`` bytes, within
``READ_TIMEOUT_S``), answers ``GET`` and ``HEAD`` and closes; anything else gets a status line,
never a traceback. A handler answers with a ``Response`` or, for server-sent events, a ``Stream``
of chunks that ends when the client leaves. It only ever listens on loopback (``[http] listen`` is
checked).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import trio

log = logging.getLogger("swarm.http")

MAX_HEAD = 8192
# a page loads nothing from elsewhere: its own inline script and style, its events and images
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline';"
    " connect-src 'self'; img-src 'self'"
)
READ_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    query: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Stream:
    """A response sent as it comes (no length): the chunks until they end or the client leaves."""

    chunks: AsyncIterator[bytes]
    content_type: str = "text/event-stream"


Handler = Callable[[Request], Response | Stream]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


def parse_request_line(head: bytes) -> tuple[str, Request] | None:
    """``(method, request)`` of a request head, or None when it is not HTTP/1.x."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    path, _, query = target.partition("?")
    return method, Request(path, {k: v[-1] for k, v in parse_qs(query).items()})


def render(response: Response, *, head_only: bool = False) -> bytes:
    head = _head(response.status, response.content_type, len(response.body))
    return head if head_only else head + response.body


def _head(status: int, content_type: str, length: int | None) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
        f"Content-Type: {content_type}",
        *([] if length is None else [f"Content-Length: {length}"]),
        "Connection: close",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Referrer-Policy: no-referrer",
        f"Content-Security-Policy: {CSP}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class HttpServer:
    """Routes: path -> handler. ``url`` is known once ``serve`` has started.

    With a ``token``, every path but the ``public`` ones answers only a request whose query
    carries ``token=`` that token (compared in constant time); any other gets 403.
    """

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        token: str | None = None,
        public: Collection[str] = (),
    ) -> None:
        self.routes = routes
        self.token = token
        self.public = frozenset(public)
        self.url: str | None = None

    async def bind(self, listen: str) -> Sequence[trio.SocketListener]:
        """Listen on ``HOST:PORT`` (port 0: any free one); sets ``url``. Raises ``OSError``."""
        host, _, port = listen.rpartition(":")
        listeners = await trio.open_tcp_listeners(int(port), host=host)
        bound = listeners[0].socket.getsockname()
        self.url = f"http://{bound[0]}:{bound[1]}"
        return listeners

    async def serve(self, listeners: Sequence[trio.SocketListener]) -> None:
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                head = await self._read_head(stream)
                method, answer = self._answer(head)
                if isinstance(answer, Response):
                    await stream.send_all(render(answer, head_only=method == "HEAD"))
                    return
                await stream.send_all(_head(200, answer.content_type, None))
                if method == "HEAD":
                    return
                async for chunk in answer.chunks:
                    await stream.send_all(chunk)
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

    def _answer(self, head: bytes) -> tuple[str, Response | Stream]:
        parsed = parse_request_line(head)
        if parsed is None:
            return "GET", Response(400, b"bad request\n")
        method, request = parsed
        if method not in ("GET", "HEAD"):
            return method, Response(405, b"only GET\n")
        handler = self.routes.get(request.path)
        if handler is None:
            return method, Response(404, b"not found\n")
        if self.token is not None and request.path not in self.public:
            given = request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return method, Response(403, b"open the address `swarm ui` prints (its token)\n")
        try:
            return method, handler(request)
        except Exception:
            log.exception("http: %s failed", request.path)
            return method, Response(500, b"internal error (see the peer's log)\n")


__all__ = ["HttpServer", "Request", "Response", "Stream", "parse_request_line", "render"]
