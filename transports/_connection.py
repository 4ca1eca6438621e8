"""A connection: request/response and one-way messages over one authenticated byte stream.

Every transport hands this class a ``trio.abc.Stream`` whose far end is an authenticated peer; all
framing, matching of responses to requests, concurrency, limits and error handling live here, once.

Rules:
- Any malformed input from the peer (a truncated or oversized frame, undecodable bytes, an envelope
  of the wrong shape, a response to a request never made, or a handler raising
  ``ProtocolViolation``) closes the connection with a logged reason. Nothing escapes ``run``.
- Requests are served concurrently, each in its own task, at most ``max_requests`` at once per
  connection: a request beyond that is answered at once with an error (``busy``), never queued,
  so a peer cannot pile up tasks on this one. One-way messages are handled one at a time, in
  the order they arrived, by a single worker (so order holds and the reader never blocks on a
  slow handler beyond a bounded queue, which is the back-pressure).
- When the connection ends, every request still waiting fails at once with ``ConnectionClosed``,
  and requests being served are cancelled; one-way messages that arrived before the end are still
  handled, in order (a peer's last gossip or its leave is not lost because it closed at once
  after), unless the end was a protocol violation.
- ``active_at`` is the time of the last frame sent or received and ``in_use`` says whether closing
  now would lose anything (a request waiting or served, a one-way message queued, a write under
  way): what a connection manager needs to close idle connections safely.

Five shortcuts, each taken only when it changes nothing but the work trio does (a simulation of
a thousand peers delivers millions of frames and opens and closes connections all the time): a
one-way message that a ``HandlerNow`` can take without waiting is handled in the reader rather
than handed to the worker; on a stream that can offer what arrives before its reader wakes (the
memory network's: a ``take_now`` method), such a message is taken when it arrives, while the
reader goes on waiting, in the order it would have read it; ``send_nowait`` writes a one-way
message at once to a stream that never blocks (the memory network's: a ``send_all_nowait``
method) when no other write is under way; a stream whose close never blocks (``close_nowait``)
is closed without a shielded timeout, and closed as soon as the connection ends, which is what
stops its reader (no cancel scope); and ``run(nursery)`` serves requests and runs the one-way
worker in a long-lived nursery it is given (the transport's) rather than one of its own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from homeswarm.errors import (
    ConnectionClosed,
    InvalidArgument,
    ProtocolViolation,
    RemoteHandlerError,
    RequestTimeout,
    SwarmError,
)
from homeswarm.ids import short

from ._frames import DEFAULT_MAX_FRAME, Envelope, FrameDecoder, Kind, encode_frame

log = logging.getLogger("transports.connection")

Handler = Callable[["Connection", Any], Awaitable[Any]]
"""Called with the connection and a message body; a request's reply is what it returns."""

HandlerNow = Callable[["Connection", Any], bool]
"""Optional, beside a ``Handler``: takes a one-way message at once, in the reader, when it can do
so without waiting (True), or leaves it to the ``Handler`` (False). It runs only when no one-way
message is queued or being handled, so their order holds; what it raises is taken as the
``Handler``'s would be."""

ONEWAY_QUEUE = 64
MAX_REQUESTS = 256  # requests served at once on one connection
BUSY = "busy"  # the start of the error a request beyond the limit gets
READ_CHUNK = 65536
CLOSE_TIMEOUT = 1.0


async def no_handler(conn: Connection, body: Any) -> Any:
    raise LookupError("this peer serves no requests")


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    frames_sent: int
    frames_received: int
    bytes_sent: int
    bytes_received: int
    requests_waiting: int
    requests_serving: int


class _Pending:
    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        if not self.event.is_set():
            self.value, self.error = value, error
            self.event.set()


class Connection:
    # (slots: a simulated peer holds a score of connections, a thousand peers twenty thousand)
    __slots__ = (
        "_bytes_received",
        "_bytes_sent",
        "_children",
        "_children_done",
        "_close_now",
        "_closed",
        "_decoder",
        "_frames_received",
        "_frames_sent",
        "_handler",
        "_handler_now",
        "_next_id",
        "_oneway_queued",
        "_oneway_send",
        "_pending",
        "_scope",
        "_send_lock",
        "_send_now",
        "_serving",
        "_stream",
        "_violated",
        "active_at",
        "busy",
        "close_reason",
        "local_id",
        "max_frame",
        "max_requests",
        "outbound",
        "peer_id",
        "remote_addr",
        "request_timeout",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        local_id: str,
        peer_id: str,
        handler: Handler,
        handler_now: HandlerNow | None = None,
        remote_addr: str | None = None,
        outbound: bool,
        max_frame: int = DEFAULT_MAX_FRAME,
        request_timeout: float = 10.0,
        max_requests: int = MAX_REQUESTS,
    ) -> None:
        self.local_id = local_id
        self.max_requests = max_requests
        self.peer_id = peer_id
        self.remote_addr = remote_addr
        self.outbound = outbound
        self.max_frame = max_frame
        self.request_timeout = request_timeout
        self.close_reason: str | None = None
        self._stream = stream
        self._handler = handler
        self._handler_now = handler_now
        self._send_now: Callable[[bytes], None] | None = getattr(stream, "send_all_nowait", None)
        self._close_now: Callable[[], None] | None = getattr(stream, "close_nowait", None)
        self._decoder = FrameDecoder(max_frame)
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._send_lock = trio.Lock()
        self._closed = trio.Event()
        self._scope: trio.CancelScope | None = None  # the reader's: cancelled when it ends
        # the one-way worker and its queue, made when a message first has to wait (most never
        # do: a HandlerNow takes them), so an idle connection holds no task and no channel
        self._oneway_send: trio.MemorySendChannel[Any] | None = None
        self._oneway_queued = 0  # one-way messages given to the worker and not yet handled
        self._serving: dict[trio.CancelScope, None] = {}  # the requests being served
        self.active_at = trio.current_time()
        self._violated = False
        # run() in a nursery not its own: the tasks it started there and not yet ended, and
        # what wakes it when they have (None: a nursery of its own)
        self._children: int | None = None
        self._children_done: trio.Event | None = None
        self.busy = 0  # requests refused for being over max_requests
        self._frames_sent = self._frames_received = 0
        self._bytes_sent = self._bytes_received = 0

    def __repr__(self) -> str:
        arrow = "->" if self.outbound else "<-"
        return f"<Connection {short(self.local_id)} {arrow} {short(self.peer_id)}>"

    # ---- public face -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.close_reason is not None  # (set with ``_closed``, and cheaper to ask)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def request(self, body: Any, *, timeout: float | None = None) -> Any:
        """Send ``body`` as a request and return the peer's reply."""
        limit = self.request_timeout if timeout is None else timeout
        ident = self._next_id
        self._next_id += 1
        slot = _Pending()
        self._pending[ident] = slot
        try:
            with trio.move_on_after(limit):
                await self._write(Envelope(Kind.REQUEST, ident, body))
                await slot.event.wait()
        finally:
            self._pending.pop(ident, None)
        if not slot.event.is_set():
            raise RequestTimeout(f"no reply from {short(self.peer_id)} within {limit:g} s")
        if slot.error is not None:
            raise slot.error
        return slot.value

    async def send(self, body: Any) -> None:
        """Send ``body`` as a one-way message."""
        await self._write(Envelope(Kind.ONEWAY, 0, body))

    def send_nowait(self, body: Any) -> bool:
        """Send ``body`` as a one-way message at once if the stream takes it without waiting and
        no other write is under way: True if sent; False if it must go with ``await send()``.
        Raises as ``send`` does (``ConnectionClosed``, ``InvalidArgument``)."""
        if self._send_now is None or self._send_lock.locked():
            return False
        frame = encode_frame(Envelope(Kind.ONEWAY, 0, body).pack(), self.max_frame)
        self._check_open()
        try:
            self._send_now(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._lost()
        self._frames_sent += 1
        self._bytes_sent += len(frame)
        self.active_at = trio.current_time()
        return True

    async def aclose(self) -> None:
        self._finish("closed locally")
        await self._close_stream()

    def close_soon(self, reason: str = "closed locally") -> None:
        """Start closing: pending requests fail now; the connection's task closes the stream."""
        self._finish(reason)

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            self._frames_sent,
            self._frames_received,
            self._bytes_sent,
            self._bytes_received,
            len(self._pending),
            len(self._serving),
        )

    @property
    def in_use(self) -> bool:
        """Whether closing now would lose something: a request waiting for its reply or being
        served, a one-way message not yet handled, a write under way."""
        return bool(
            self._pending or self._serving or self._oneway_queued or self._send_lock.locked()
        )

    # ---- the driver --------------------------------------------------------------------------

    async def run(self, nursery: trio.Nursery | None = None) -> None:
        """Read and dispatch until the connection ends. Never raises for anything the peer does.

        ``nursery``: where requests are served and the one-way worker runs, if given (a
        long-lived one, the transport's: the connection then waits for what it started there
        before it returns); by default a nursery of its own. (Opening and closing a nursery
        costs a scheduler pass, for each of the connections a simulation opens and closes.)"""
        try:
            if nursery is None:
                async with trio.open_nursery() as own:
                    await self._run(own)
            else:
                self._children = 0
                try:
                    await self._run(nursery)
                finally:
                    while self._children:  # (as a nursery's end waits, even when cancelled)
                        self._children_done = trio.Event()
                        with trio.CancelScope(shield=True):
                            await self._children_done.wait()
        finally:
            self._finish("connection ended")
            await self._close_stream()

    async def _run(self, nursery: trio.Nursery) -> None:
        take_now = getattr(self._stream, "take_now", None)
        try:
            # the reader is stopped by a cancel scope, or, on a stream whose close never waits,
            # by closing the stream at once (``_finish``): no scope to enter, cancel and leave by
            # an exception
            reader = trio.CancelScope() if self._close_now is None else _NO_SCOPE
            with reader as self._scope:
                if take_now is not None and self._handler_now is not None:
                    take_now(self._take_now)
                if not self.closed:
                    try:
                        await self._read_loop(nursery)
                    except ProtocolViolation as exc:
                        log.warning(
                            "%s: closing connection with %s: %s",
                            short(self.local_id),
                            short(self.peer_id),
                            exc,
                        )
                        self._violated = True
                        self._finish(f"protocol violation: {exc}")
            self._finish("connection ended")
        finally:
            # the requests being served are cut off (their replies could not go); the one-way
            # messages already here are handled, then the worker stops
            for scope in list(self._serving):
                scope.cancel()
            if self._oneway_send is not None:
                self._oneway_send.close()
            if take_now is not None:
                take_now(None)
            self._finish("connection ended")

    def _start(self, nursery: trio.Nursery, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start ``fn(*args)`` in ``nursery``, counted while it runs if that is not our own."""
        if self._children is None:
            nursery.start_soon(fn, *args)
            return
        self._children += 1
        nursery.start_soon(self._child, fn, *args)

    async def _child(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await fn(*args)
        finally:
            assert self._children is not None
            self._children -= 1
            if not self._children and self._children_done is not None:
                self._children_done.set()

    def _take_now(self, data: bytes) -> bool:
        """The stream's offer of ``data`` while the reader waits (``take_now``): one whole
        one-way frame that the ``HandlerNow`` takes is handled now (True), exactly as the reader
        would have handled it; anything else, or a frame it declines, is left to the reader
        (False), untouched."""
        if self._oneway_queued or self.closed:
            return False
        payload = self._decoder.single(data)
        if payload is None:
            return False
        try:
            env = Envelope.unpack(payload)
        except ProtocolViolation:
            return False  # (the reader finds it again, and closes)
        if env.kind is not Kind.ONEWAY:
            return False
        self.active_at = trio.current_time()
        if not self._call_now(env.body):
            return False
        self._bytes_received += len(data)
        self._frames_received += 1
        return True

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        while await self._read_some(nursery):
            pass

    async def _read_some(self, nursery: trio.Nursery) -> bool:
        """Read once and dispatch what came: whether to go on. (Its own frame, so that what it
        read is not held while the loop waits for more: a thousand idle connections would each
        keep their last frame three times over.)"""
        try:
            data = await self._stream.receive_some(READ_CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._finish("connection lost")
            return False
        if not data:
            if self._decoder.buffered:
                raise ProtocolViolation(f"truncated frame ({self._decoder.buffered} bytes)")
            self._finish("closed by peer")
            return False
        self._bytes_received += len(data)
        self.active_at = trio.current_time()
        for payload in self._decoder.feed(data):
            self._frames_received += 1
            await self._dispatch(Envelope.unpack(payload), nursery)
            if self.closed:  # (a handler that took a message at once found it malformed)
                return False
        return True

    async def _dispatch(self, env: Envelope, nursery: trio.Nursery) -> None:
        if env.kind is Kind.REQUEST:
            if len(self._serving) >= self.max_requests:
                self.busy += 1
                if self.busy == 1 or self.busy % 1000 == 0:
                    log.warning(
                        "%s: %s sends more than %d requests at once: refusing the excess (%d)",
                        short(self.local_id),
                        short(self.peer_id),
                        self.max_requests,
                        self.busy,
                    )
                text = f"{BUSY}: {self.max_requests} requests already being served"
                await self._write_quietly(Envelope(Kind.ERROR, env.id, text))
                return
            scope = trio.CancelScope()
            self._serving[scope] = None
            self._start(nursery, self._serve, env, scope)
        elif env.kind is Kind.ONEWAY:
            if not self._oneway_queued and self._call_now(env.body):
                return
            if self._oneway_send is None:
                self._oneway_send, receive = trio.open_memory_channel[Any](ONEWAY_QUEUE)
                self._start(nursery, self._oneway_worker, receive)
            self._oneway_queued += 1
            try:
                self._oneway_send.send_nowait(env.body)  # (no extra trip through the scheduler)
            except trio.WouldBlock:
                await self._oneway_send.send(env.body)
        else:
            if env.id >= self._next_id or env.id == 0:
                raise ProtocolViolation(f"reply to a request never made (id {env.id})")
            slot = self._pending.get(env.id)
            if slot is None:
                return  # its requester gave up (timeout); a late reply is no fault
            if env.kind is Kind.RESPONSE:
                slot.resolve(env.body)
            else:
                slot.resolve(error=RemoteHandlerError(f"{short(self.peer_id)}: {env.body}"))

    async def _serve(self, env: Envelope, scope: trio.CancelScope) -> None:
        try:
            with scope:
                await self._reply(env)
        finally:
            del self._serving[scope]

    async def _reply(self, env: Envelope) -> None:
        reply = await self._call(env.body)
        if reply is _CLOSE:
            return
        if isinstance(reply, _Failure):
            out = Envelope(Kind.ERROR, env.id, reply.text)
        else:
            out = Envelope(Kind.RESPONSE, env.id, reply)
        try:
            await self._write(out)
        except InvalidArgument as exc:  # not msgpack-able, or over the frame limit
            log.error("%s: cannot send a reply: %s", short(self.local_id), exc)
            await self._write_quietly(Envelope(Kind.ERROR, env.id, "reply could not be sent"))
        except ConnectionClosed:
            pass

    async def _oneway_worker(self, receive: trio.MemoryReceiveChannel[Any]) -> None:
        async for body in receive:
            try:
                if not self._violated:  # after a violation, the rest is not handled
                    await self._call(body)
            finally:
                self._oneway_queued -= 1

    async def _call(self, body: Any) -> Any:
        """Run the handler; map its failures to a reply, or close on a protocol violation."""
        try:
            return await self._handler(self, body)
        except Exception as exc:
            return self._failed(exc)

    def _call_now(self, body: Any) -> bool:
        """Offer a one-way message to the ``HandlerNow``, if any: whether it took it."""
        if self._handler_now is None:
            return False
        try:
            return self._handler_now(self, body)
        except Exception as exc:
            self._failed(exc)
            return True

    def _failed(self, exc: Exception) -> Any:
        """What a handler's exception becomes (called while handling it): a reply saying so, or
        a close on a protocol violation."""
        if isinstance(exc, ProtocolViolation):
            log.warning(
                "%s: closing connection with %s: %s", short(self.local_id), short(self.peer_id), exc
            )
            self._violated = True
            self._finish(f"protocol violation: {exc}")
            return _CLOSE
        if isinstance(exc, SwarmError):
            return _Failure(str(exc))
        log.exception(
            "%s: handler failed on a message from %s", short(self.local_id), short(self.peer_id)
        )
        return _Failure("internal error")

    async def _write_quietly(self, env: Envelope) -> None:
        with contextlib.suppress(ConnectionClosed, InvalidArgument):
            await self._write(env)

    async def _write(self, env: Envelope) -> None:
        frame = encode_frame(env.pack(), self.max_frame)
        # the lock, without a trip through the scheduler when nobody holds it (send_all is this
        # call's checkpoint); otherwise wait for it
        if self._send_lock.locked():
            await self._send_lock.acquire()
        else:
            self._send_lock.acquire_nowait()
        try:
            self._check_open()
            try:
                await self._stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._lost()
        finally:
            self._send_lock.release()
        self._frames_sent += 1
        self._bytes_sent += len(frame)
        self.active_at = trio.current_time()

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionClosed(f"connection to {short(self.peer_id)}: {self.close_reason}")

    def _lost(self) -> None:
        self._finish("connection lost")
        raise ConnectionClosed(
            f"connection to {short(self.peer_id)}: {self.close_reason}"
        ) from None

    def _finish(self, reason: str) -> None:
        if self.closed:
            return
        self.close_reason = reason
        self._closed.set()
        error = ConnectionClosed(f"connection to {short(self.peer_id)}: {reason}")
        for slot in self._pending.values():
            slot.resolve(error=error)
        if self._close_now is not None:
            self._close_now()  # (a reader waiting on the stream wakes to find it closed)
        elif self._scope is not None:
            self._scope.cancel()

    async def _close_stream(self) -> None:
        if self._close_now is not None:  # (a stream whose close never waits: no timeout)
            self._close_now()
            return
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._stream.aclose()


class _Failure:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text[:500]


_CLOSE: Any = object()
_NO_SCOPE: Any = contextlib.nullcontext()
