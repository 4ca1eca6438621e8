"""The memory transport: a simulated network inside one process, driven by trio's clock.

It is a first-class network, not a mock: peers get authenticated byte streams exactly as over
libp2p, and the same ``Connection`` code runs on top. What it simulates, per directed link:

- latency and jitter (uniform extra delay), with per-stream order always kept, like TCP;
- bandwidth, as serialisation delay that queues writes behind each other;
- loss, of whole writes: each frame is one write, so a lost write is a lost message, as for the
  datagrams SWIM is designed around (a real TCP link would turn loss into delay instead);
- partitions, set and healed at any time: nothing crosses between groups, in either direction,
  including what was already in flight;
- crashes: every stream of the crashed peer resets (its peers see a broken connection after one
  link latency, as with a TCP reset) and it stops listening until a new transport takes its id;
- pauses: a paused peer's traffic, both ways, is held until it resumes, then delivered (as for a
  process that stops answering while the kernel keeps its sockets);
- loss bursts: ``burst_loss`` adds to every link's loss while it is set.

A ``tap``, when set, sees every write that enters the network: ``tap(time, src, dst, data)``
(simulations count bytes and hash traces with it).

Time is ``trio.current_time()`` only, so under ``trio.testing.MockClock`` a simulated hour takes
as long as the work done in it; randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from homeswarm.errors import InvalidArgument, PeerUnreachable

from ._alarm import Alarm
from ._base import Transport

ADDR_PREFIX = "/memory/"


@dataclass(frozen=True, slots=True)
class Link:
    """How one direction of a link between two peers behaves."""

    latency: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    bandwidth: float | None = None  # bytes per second; None is unlimited

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency) and self.latency >= 0):
            raise InvalidArgument(f"latency must be >= 0 seconds, got {self.latency}")
        if not (math.isfinite(self.jitter) and self.jitter >= 0):
            raise InvalidArgument(f"jitter must be >= 0 seconds, got {self.jitter}")
        if not 0.0 <= self.loss <= 1.0:
            raise InvalidArgument(f"loss must be within [0, 1], got {self.loss}")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise InvalidArgument(f"bandwidth must be > 0 bytes/s, got {self.bandwidth}")


@dataclass(slots=True)
class NetworkStatistics:
    writes: int = 0
    bytes: int = 0
    delivered: int = 0
    lost: int = 0
    partitioned: int = 0
    dials: int = 0


class _Eof:
    pass


class _Reset:
    pass


_EOF = _Eof()
_RESET = _Reset()
_Item = bytes | _Eof | _Reset


class _Pipe:
    """One direction of a stream: timed items in delivery order.

    A reader with nothing due waits on an ``Alarm`` set for the first item's arrival (forever
    while the pipe is empty): a push moves the deadline, so the reader wakes once, when the item
    arrives, not once when it is sent and again when it lands.

    The faster path: while the reader waits, what arrives is offered to ``take`` (set by the
    reader's ``Connection``: ``MemoryStream.take_now``) in the clock's timer, in arrival order;
    what it takes is delivered there and then, and the reader goes on waiting for the next item.
    The reader wakes only for what ``take`` leaves (which it then reads as it always did), an end
    or a reset. Under a clock without timers nothing is offered: the reader reads everything.
    """

    __slots__ = ("dst", "last_at", "net", "queue", "reader", "src", "take", "tx_free_at")

    def __init__(self, net: MemoryNetwork, src: str, dst: str) -> None:
        self.net = net
        self.src, self.dst = src, dst
        # a list, not a deque: it holds a frame or two, and an empty deque takes 600 bytes
        self.queue: list[list[float | _Item]] = []
        self.last_at = -math.inf
        self.tx_free_at = -math.inf
        self.reader: Alarm | None = None
        self.take: Callable[[bytes], bool] | None = None

    def push(self, at: float, item: _Item) -> None:
        at = max(at, self.last_at)
        self.last_at = at
        self.queue.append([at, item])
        if self.reader is not None and at < self.reader.deadline:
            self.reader.deadline = at

    def wake(self) -> None:
        if self.reader is not None:
            self.reader.cancel()

    def due(self) -> bool:
        """The waiting reader's alarm is due: hand ``take`` what has arrived; whether the reader
        must wake (for what ``take`` left, an end, a reset), else it waits for the next item."""
        queue, reader = self.queue, self.reader
        assert reader is not None
        now = trio.current_time()
        while queue:
            entry = queue[0]
            at, item = entry
            assert isinstance(at, float)
            if at > now:
                reader.deadline = at
                return False
            take = self.take
            if take is None or not isinstance(item, bytes):
                return True
            queue.pop(0)  # (before it is handled, as a read would: its answer may come back)
            if self.net.blocked(self.src, self.dst):
                self.net.stats.partitioned += 1
                continue
            if not take(item):
                queue.insert(0, entry)
                return True
            self.net.stats.delivered += 1
        reader.deadline = math.inf
        return False


class MemoryStream(trio.abc.Stream):
    """One end of a simulated stream."""

    def __init__(self, network: MemoryNetwork, out: _Pipe, into: _Pipe) -> None:
        self._net = network
        self._out = out
        self._in = into
        self._closed = False
        self._broken = False

    @property
    def local(self) -> str:
        return self._out.src

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.send_all_nowait(data)

    def send_all_nowait(self, data: bytes | bytearray | memoryview) -> None:
        """``send_all`` without the checkpoint: a write here never waits (the network queues it
        behind the link's earlier writes), so a ``Connection`` may write at once."""
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if self._broken:
            raise trio.BrokenResourceError("connection reset")
        if data:
            self._net._transmit(self._out, bytes(data))

    def take_now(self, take: Callable[[bytes], bool] | None) -> None:
        """While this end's reader waits, offer what arrives to ``take`` first, in the clock's
        timer (``_Pipe.due``): it handles it there and then and returns True, or leaves it to
        the reader (False). ``None`` stops the offers."""
        self._in.take = take

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        pipe = self._in
        waited = False  # a wait was this call's checkpoint; otherwise it takes one below
        while True:
            if self._closed:
                raise trio.ClosedResourceError("stream is closed")
            entry = pipe.queue[0] if pipe.queue else None
            at = entry[0] if entry is not None else math.inf
            assert isinstance(at, float)
            if entry is None or at > trio.current_time():
                pipe.reader = Alarm(at, on_due=pipe.due)
                try:
                    await pipe.reader.wait()
                finally:
                    pipe.reader = None
                waited = True
                continue
            if not waited:
                await trio.lowlevel.checkpoint()
                waited = True
                continue
            item = entry[1]
            if isinstance(item, _Eof):
                return b""
            if isinstance(item, _Reset):
                self._broken = True
                raise trio.BrokenResourceError("connection reset by peer")
            assert isinstance(item, bytes)
            if self._net.blocked(pipe.src, pipe.dst):
                pipe.queue.pop(0)
                self._net.stats.partitioned += 1
                continue
            if max_bytes is None or len(item) <= max_bytes:
                pipe.queue.pop(0)
                self._net.stats.delivered += 1
                return item
            entry[1] = item[max_bytes:]
            return item[:max_bytes]

    async def aclose(self) -> None:
        self.close_nowait()
        await trio.lowlevel.checkpoint()

    def close_nowait(self) -> None:
        """``aclose`` without the checkpoint: closing here never waits, so a ``Connection`` that
        ends (a simulated peer's connections end all the time) closes at once."""
        if not self._closed:
            self._closed = True
            self._net._streams.pop(self, None)
            if not self._broken:
                self._out.push(self._net._arrival(self._out, 0), _EOF)
            self._in.take = None
            self._in.wake()

    def _reset(self) -> None:
        """This end's process died: the far end sees a reset after one latency."""
        self._closed = True
        self._out.queue.clear()
        self._out.push(self._net._arrival(self._out, 0), _RESET)
        self._in.take = None
        self._in.wake()


class MemoryNetwork:
    """A simulated network that hands out ``MemoryTransport``s and shapes what crosses it."""

    def __init__(self, rng: random.Random, *, default_link: Link | None = None) -> None:
        self.rng = rng
        self.default_link = default_link or Link()
        self.stats = NetworkStatistics()
        self._links: dict[tuple[str, str], Link] = {}
        self._group: dict[str, int] = {}
        self._next_group = 1
        self._listeners: dict[str, MemoryTransport] = {}
        # insertion-ordered (not a set): a crash resets streams in a fixed order, so a seeded
        # run draws its jitter in the same order every time
        self._streams: dict[MemoryStream, None] = {}
        self._held: dict[str, float] = {}  # peer -> paused until
        self.burst_loss = 0.0
        self.tap: Callable[[float, str, str, bytes], None] | None = None

    def transport(self, peer_id: str, **options: Any) -> MemoryTransport:
        return MemoryTransport(self, peer_id, **options)

    # ---- shaping --------------------------------------------------------------------------------

    def set_link(self, a: str, b: str, link: Link, *, both_ways: bool = True) -> None:
        self._links[a, b] = link
        if both_ways:
            self._links[b, a] = link

    def clear_link(self, a: str, b: str) -> None:
        self._links.pop((a, b), None)
        self._links.pop((b, a), None)

    def link(self, src: str, dst: str) -> Link:
        return self._links.get((src, dst), self.default_link)

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: each group talks within itself only; unnamed peers form one more."""
        self._group.clear()
        for members in groups:
            gid = self._next_group
            self._next_group += 1
            for peer in members:
                self._group[peer] = gid

    def isolate(self, peer: str) -> None:
        """Cut one peer off from everyone, keeping any partition already in force."""
        self._group[peer] = self._next_group
        self._next_group += 1

    def heal(self, peer: str | None = None) -> None:
        """End every partition, or only ``peer``'s isolation."""
        if peer is None:
            self._group.clear()
        else:
            self._group.pop(peer, None)

    def blocked(self, a: str, b: str) -> bool:
        return self._group.get(a, 0) != self._group.get(b, 0)

    def pause(self, peer: str, until: float) -> None:
        """Hold ``peer``'s traffic, both ways, until the time ``until``."""
        self._held[peer] = max(until, self._held.get(peer, -math.inf))

    def crash(self, peer_id: str) -> None:
        """The peer's process dies: its streams reset and it no longer listens."""
        self._listeners.pop(peer_id, None)
        for stream in [s for s in self._streams if s.local == peer_id]:
            self._streams.pop(stream, None)
            stream._reset()

    def listening(self) -> list[str]:
        return sorted(self._listeners)

    # ---- the wire -----------------------------------------------------------------------------

    def _arrival(
        self, pipe: _Pipe, size: int, link: Link | None = None, now: float | None = None
    ) -> float:
        if link is None:
            link = self.link(pipe.src, pipe.dst)
        if now is None:
            now = trio.current_time()
        start = max(now, pipe.tx_free_at)
        if self._held:
            start = max(start, self._held.get(pipe.src, start))
        if link.bandwidth is not None:
            start += size / link.bandwidth
        pipe.tx_free_at = start
        extra = self.rng.uniform(0.0, link.jitter) if link.jitter else 0.0
        at = start + link.latency + extra
        if self._held:
            at = max(at, self._held.get(pipe.dst, at))
        return at

    def _transmit(self, pipe: _Pipe, data: bytes) -> None:
        stats = self.stats
        stats.writes += 1
        stats.bytes += len(data)
        now = trio.current_time()
        src, dst = pipe.src, pipe.dst
        if self.tap is not None:
            self.tap(now, src, dst, data)
        if self._group and self.blocked(src, dst):
            stats.partitioned += 1
            return
        link = self._links.get((src, dst), self.default_link)  # (looked up once per frame)
        loss = link.loss + self.burst_loss
        if loss and self.rng.random() < loss:
            stats.lost += 1
            return
        pipe.push(self._arrival(pipe, len(data), link, now), data)

    def _listen(self, transport: MemoryTransport) -> None:
        current = self._listeners.get(transport.peer_id)
        if current is not None and current is not transport:
            raise InvalidArgument(f"{transport.peer_id} is already listening on this network")
        self._listeners[transport.peer_id] = transport

    def _unlisten(self, transport: MemoryTransport) -> None:
        if self._listeners.get(transport.peer_id) is transport:
            del self._listeners[transport.peer_id]

    async def _connect(
        self, src: str, peer_id: str, addrs: Sequence[str], deadline: float = math.inf
    ) -> tuple[MemoryStream, MemoryTransport] | None:
        """A stream to ``peer_id`` after a round trip; None if ``deadline`` comes first."""
        self.stats.dials += 1
        listening = self._listeners.get(peer_id)
        wanted = listening.address if listening is not None else ADDR_PREFIX + peer_id
        if wanted not in addrs:
            raise PeerUnreachable(f"no memory address for {peer_id[-8:]} among {list(addrs)}")
        rtt = self.link(src, peer_id).latency + self.link(peer_id, src).latency
        at = math.inf if self.blocked(src, peer_id) else trio.current_time() + rtt
        await Alarm(min(at, deadline)).wait()  # (a sleep, on the clock's own timers)
        if at > deadline:
            return None
        target = self._listeners.get(peer_id)
        if target is None or self.blocked(src, peer_id) or target.address not in addrs:
            raise PeerUnreachable(f"{peer_id[-8:]}: connection refused")
        there, back = _Pipe(self, src, peer_id), _Pipe(self, peer_id, src)
        near, far = MemoryStream(self, there, back), MemoryStream(self, back, there)
        self._streams[near] = self._streams[far] = None
        target._accept(far, src)
        return near, target


class MemoryTransport(Transport):
    """A peer's transport on a ``MemoryNetwork``; its address is ``/memory/<peer id>`` unless
    ``address`` names another (a device restarted on a new address: dials to the old one fail)."""

    def __init__(
        self, network: MemoryNetwork, peer_id: str, *, address: str | None = None, **options: Any
    ) -> None:
        super().__init__(peer_id, **options)
        self.network = network
        self.address = address or ADDR_PREFIX + peer_id
        self._listening = False

    @property
    def addrs(self) -> list[str]:
        return [self.address] if self._listening else []

    async def _start(self, nursery: trio.Nursery) -> None:
        self.network._listen(self)
        self._listening = True

    async def _stop(self) -> None:
        self._listening = False
        self.network._unlisten(self)

    async def _open_stream(
        self, peer_id: str, addrs: Sequence[str]
    ) -> tuple[trio.abc.Stream, str | None]:
        opened = await self._open_stream_by(peer_id, addrs, math.inf)
        assert opened is not None
        return opened

    async def _open_stream_by(
        self, peer_id: str, addrs: Sequence[str], deadline: float
    ) -> tuple[trio.abc.Stream, str | None] | None:
        opened = await self.network._connect(self.peer_id, peer_id, addrs, deadline)
        if opened is None:
            return None
        stream, target = opened
        return stream, target.address

    async def open_raw(self, peer_id: str) -> MemoryStream:
        """A raw stream to a peer, bypassing framing: for tests that send garbage."""
        listening = self.network._listeners.get(peer_id)
        addr = listening.address if listening is not None else ADDR_PREFIX + peer_id
        opened = await self.network._connect(self.peer_id, peer_id, [addr])
        assert opened is not None  # (no deadline)
        return opened[0]

    def _accept(self, stream: MemoryStream, from_id: str) -> None:
        nursery = self._nursery
        if nursery is None or not self._listening:
            stream._reset()
            return
        dialer = self.network._listeners.get(from_id)
        addr = dialer.address if dialer is not None else ADDR_PREFIX + from_id
        nursery.start_soon(self._serve_inbound, stream, from_id, addr)
