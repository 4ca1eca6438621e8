"""The Transport interface: the only way the rest of the project moves bytes between peers.

A transport gives authenticated byte streams; this base class turns each into a ``Connection``
(framing, request/response, limits) so every implementation behaves the same above the stream.
Implementations provide ``_open_stream`` (dial) and call ``_serve_inbound`` for accepted streams.

Connections are pooled and closed when idle: the connection manager's policy (``_manager``) runs
in the transport's own task (under a clock with timers, in the clock's timer), closing the least
recently used idle connections while more than ``limits.high`` are open and any left idle for
``limits.idle_timeout``; whoever needs a peer again dials it again. So a peer that talks to every
member of a large swarm in turn holds a bounded number of connections, not one per member.

Use it as an async context manager::

    async with transport:
        transport.set_handler(handler)
        conn = await transport.dial(peer_id, addrs)
        reply = await conn.request({"hello": 1})
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import trio

from homeswarm.errors import AdmissionRefused, LocalError, PeerUnreachable
from homeswarm.ids import short

from ._alarm import Alarm
from ._connection import MAX_REQUESTS, Connection, Handler, HandlerNow, no_handler
from ._frames import DEFAULT_MAX_FRAME
from ._manager import ConnectionLimits, Idle, reap

log = logging.getLogger("transports")

IDLE = "closed idle"  # the close reason of a connection the manager reaped

Admission = Callable[[str], bool]
"""Given an authenticated peer id, says whether this peer may talk to us."""


@dataclass(frozen=True, slots=True)
class TransportStatistics:
    connections: int
    inbound: int
    outbound: int
    refused: int
    violations: int
    reaped: int  # connections the manager closed for being idle


class Transport(abc.ABC):
    """Listen, dial peers by id and address, and exchange framed messages with them."""

    def __init__(
        self,
        peer_id: str,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        request_timeout: float = 10.0,
        dial_timeout: float = 10.0,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.limits = limits or ConnectionLimits()
        self.max_frame = max_frame
        self.request_timeout = request_timeout
        self.dial_timeout = dial_timeout
        self.max_requests = MAX_REQUESTS  # served at once per connection (the excess: ``busy``)
        self._handler: Handler = no_handler
        self._handler_now: HandlerNow | None = None
        self._admit: Admission = _admit_all
        # by peer, insertion-ordered (dicts, not sets): the oldest connection to a peer is the one
        # used, the same one in every run (a seeded simulation stays deterministic)
        self._by_peer: dict[str, dict[Connection, None]] = {}
        self._live: dict[Connection, None] = {}  # the same connections, oldest first
        self._refused = 0
        self._violations = 0
        self._reaped = 0
        self._reaper: Alarm | None = None  # the manager's wait for its next look
        self._over = False  # whether its last look left more than limits.high open
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None

    # ---- what implementations provide ---------------------------------------------------------

    @property
    @abc.abstractmethod
    def addrs(self) -> list[str]:
        """The addresses this transport listens on, in a form ``dial`` accepts."""

    @abc.abstractmethod
    async def _open_stream(
        self, peer_id: str, addrs: Sequence[str]
    ) -> tuple[trio.abc.Stream, str | None]:
        """Open an authenticated stream to ``peer_id``; raise PeerUnreachable on failure."""

    async def _start(self, nursery: trio.Nursery) -> None:  # noqa: B027 - optional hook
        """Start listening; called on entry with the transport's nursery."""

    def _unused(self, peer_id: str) -> None:  # noqa: B027 - optional hook
        """The manager reaped the last connection to ``peer_id``: whatever lies under it (a
        libp2p connection the streams were multiplexed on) may go too."""

    async def _stop(self) -> None:  # noqa: B027 - optional hook
        """Stop listening and release resources; called on exit."""

    # ---- the common face ----------------------------------------------------------------------

    def set_handler(self, handler: Handler, now: HandlerNow | None = None) -> None:
        """What serves the peers' messages: ``handler``, and optionally ``now``, which takes a
        one-way message at once when it can (see ``HandlerNow``)."""
        self._handler = handler
        self._handler_now = now

    def set_admission(self, admit: Admission | None) -> None:
        """Install the allow-list hook; ``None`` admits every authenticated peer."""
        self._admit = admit or _admit_all

    def admits(self, peer_id: str) -> bool:
        try:
            return bool(self._admit(peer_id))
        except Exception:
            log.exception("%s: admission hook failed; refusing %s", short(self.peer_id), peer_id)
            return False

    def connections(self, peer_id: str | None = None) -> list[Connection]:
        if peer_id is None:
            return [c for pool in self._by_peer.values() for c in pool if not c.closed]
        return [c for c in self._by_peer.get(peer_id, {}) if not c.closed]

    def statistics(self) -> TransportStatistics:
        live = self.connections()
        outbound = sum(c.outbound for c in live)
        return TransportStatistics(
            len(live),
            len(live) - outbound,
            outbound,
            self._refused,
            self._violations,
            self._reaped,
        )

    async def dial(
        self, peer_id: str, addrs: Sequence[str], *, timeout: float | None = None
    ) -> Connection:
        """Open a new connection to ``peer_id`` at one of ``addrs``."""
        nursery = self._require_nursery()
        if not self.admits(peer_id):
            raise AdmissionRefused(f"{short(peer_id)} is not admitted")
        limit = self.dial_timeout if timeout is None else timeout
        opened = await self._open_stream_by(peer_id, addrs, trio.current_time() + limit)
        if opened is None:
            raise PeerUnreachable(f"dialing {short(peer_id)} timed out after {limit:g} s")
        stream, remote = opened
        conn = self._connection(stream, peer_id, remote, outbound=True)
        nursery.start_soon(self._run, conn)
        return conn

    async def _open_stream_by(
        self, peer_id: str, addrs: Sequence[str], deadline: float
    ) -> tuple[trio.abc.Stream, str | None] | None:
        """``_open_stream``, given up at ``deadline`` (None). A transport whose dial can wait
        for the deadline itself does so here (the memory network: no cancel scope per dial)."""
        with trio.move_on_at(deadline):
            return await self._open_stream(peer_id, addrs)
        return None

    async def _serve_inbound(
        self, stream: trio.abc.Stream, peer_id: str, remote_addr: str | None
    ) -> None:
        """Serve one accepted, authenticated stream until it ends. Never raises."""
        if not self.admits(peer_id):
            self._refused += 1
            log.info("%s: refused %s: not admitted", short(self.peer_id), short(peer_id))
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                with suppress(trio.BrokenResourceError):
                    await stream.aclose()
            return
        await self._run(self._connection(stream, peer_id, remote_addr, outbound=False))

    def _connection(
        self, stream: trio.abc.Stream, peer_id: str, remote: str | None, *, outbound: bool
    ) -> Connection:
        return Connection(
            stream,
            local_id=self.peer_id,
            peer_id=peer_id,
            handler=self._dispatch,
            handler_now=self._dispatch_now,
            remote_addr=remote,
            outbound=outbound,
            max_frame=self.max_frame,
            request_timeout=self.request_timeout,
            max_requests=self.max_requests,
        )

    async def _dispatch(self, conn: Connection, body: object) -> object:
        return await self._handler(conn, body)

    def _dispatch_now(self, conn: Connection, body: object) -> bool:
        now = self._handler_now
        return now is not None and now(conn, body)

    async def _run(self, conn: Connection) -> None:
        self._by_peer.setdefault(conn.peer_id, {})[conn] = None
        self._live[conn] = None
        reaper = self._reaper
        if reaper is not None:  # the manager looks now if over the mark, else by its timeout
            if len(self._live) > self.limits.high:
                # look now; or, if the last look left more than the mark open (all busy or in
                # their grace then), when this one leaves its grace, unless sooner: a look now
                # could close nothing the last could not, and a look per dial scans them all
                at = conn.active_at + self.limits.grace if self._over else conn.active_at
                if at < reaper.deadline:
                    reaper.deadline = at  # (in the clock's timer, if it has one)
            elif conn.active_at + self.limits.idle_timeout < reaper.deadline:
                reaper.deadline = conn.active_at + self.limits.idle_timeout
        try:
            await conn.run(self._nursery)  # (its requests and worker in ours: no nursery each)
        finally:
            del self._live[conn]
            mine = self._by_peer.get(conn.peer_id, {})
            mine.pop(conn, None)
            if not mine:
                self._by_peer.pop(conn.peer_id, None)
                if conn.close_reason == IDLE:
                    self._unused(conn.peer_id)
            if (conn.close_reason or "").startswith("protocol violation"):
                self._violations += 1

    async def _manage(self) -> None:
        """The connection manager: close what its policy says, wait until its next look (or until
        a new connection takes the count over the high mark). Under a clock with timers, each
        look is taken in the clock's timer (``Alarm``'s ``on_due``), without waking this task."""
        while True:
            self._reaper = Alarm(self._reap(), on_due=self._reap_due)
            try:
                await self._reaper.wait()
            finally:
                self._reaper = None

    def _reap_due(self) -> bool:
        assert self._reaper is not None
        self._reaper.deadline = self._reap()
        return False

    def _reap(self) -> float:
        """Close what the policy says now; when to look again. (Its own frame, so that the
        views of closed connections are not held while the manager waits.)"""
        views = [Idle(c, c.active_at, c.in_use) for c in self._live if not c.closed]
        decision = reap(views, trio.current_time(), self.limits)
        self._over = len(views) - len(decision.close) > self.limits.high
        for conn in decision.close:
            self._reaped += 1
            conn.close_soon(IDLE)
        return decision.next_at

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise LocalError("transport is not open: use it as `async with transport:`")
        return self._nursery

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise LocalError("transport is already open")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._nursery = await stack.enter_async_context(trio.open_nursery())
            await self._start(self._nursery)
            self._nursery.start_soon(self._manage)
        except BaseException:
            self._nursery = None
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        assert stack is not None
        # all at once (each connection's own task closes its stream): one by one, a peer with
        # hundreds of connections took a scheduler pass per connection to stop
        for conn in [c for pool in self._by_peer.values() for c in pool]:
            conn.close_soon()
        with trio.CancelScope(shield=True):
            await self._stop()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self._nursery = None
        return await stack.__aexit__(exc_type, exc, tb)


def _admit_all(peer_id: str) -> bool:
    return True
