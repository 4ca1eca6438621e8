"""The thin trio driver around the membership core: timers, and messages over a Transport.

Membership messages travel as one-way frames on a pooled connection per peer (either direction),
like SWIM's datagrams: a message that cannot be delivered (no address, the dial failed, the
connection broke) is dropped, and the protocol's own retries take care of it. A malformed message
raises ``ProtocolViolation`` in the handler, which closes that connection; the peer keeps running.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from homeswarm.transports import (
    Alarm,
    Connection,
    Transport,
    TransportError,
    public_key_from_peer_id,
)

from ._membership import Change, Membership, Message, decode_message, encode_message

log = logging.getLogger("swarm.driver")

AddressBook = Callable[[str], Sequence[str]]


@functools.lru_cache(maxsize=4096)  # names come from peers: bounded
def _public_key(node: str) -> Ed25519PublicKey | None:
    """The key inside a peer id: one cache for the process (a key object is ~370 bytes; a
    simulated swarm of a thousand peers, each with a cache of its own, held a million)."""
    try:
        return Ed25519PublicKey.from_public_bytes(public_key_from_peer_id(node))
    except (ValueError, TypeError):
        return None


class Ed25519Crypto:
    """Signs with this device's key; verifies with the key inside the signer's peer id."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def verify(self, node: str, data: bytes, signature: bytes) -> bool:
        public = _public_key(node)
        if public is None:
            return False
        try:
            public.verify(signature, data)
        except InvalidSignature:
            return False
        return True


class MembershipDriver:
    """Runs one ``Membership`` core on a transport until cancelled."""

    def __init__(
        self,
        transport: Transport,
        core: Membership,
        *,
        addresses: AddressBook,
        on_changes: Callable[[list[Change]], None] | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        self.transport = transport
        self.core = core
        self.addresses = addresses
        self.on_changes = on_changes
        self.on_sent = on_sent  # after each flush that sent something (the radio is up)
        self.dropped = 0
        self._sleep: Alarm | None = None  # the run loop's wait for the next timer
        self._dialing: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._received: trio.Event | None = None  # set at the next message (see ``until``)

    async def handle(self, conn: Connection, body: Any) -> None:
        """The transport handler's share: one membership message from ``conn``'s peer."""
        self.handle_now(conn, body)

    def handle_now(self, conn: Connection, body: Any) -> None:
        """``handle`` without waiting (it never waits): for a transport's ``HandlerNow``."""
        msg = decode_message(body)  # ProtocolViolation closes the connection
        self.core.receive(conn.peer_id, msg, trio.current_time())
        if self._nursery is not None:
            self._flush()  # the answer goes out now; the loop only wakes for a sooner timer
        self._retime()
        if self._received is not None:
            self._received.set()
            self._received = None

    async def until(self, check: Callable[[], bool]) -> None:
        """Wait until ``check()`` holds, looked at after each message the core receives."""
        while not check():
            if self._received is None:
                self._received = trio.Event()
            await self._received.wait()

    def poke(self) -> None:
        """Something changed outside a timer: run the core and flush its messages now."""
        if self._sleep is not None:
            self._sleep.cancel()

    def _retime(self) -> None:
        # later too: an ack ends its probe's timeout, and a wake-up for it would do nothing
        # (half of a simulated day's ticks did nothing); unchanged, it is left alone (setting
        # it costs trio work)
        if self._sleep is not None:
            at = self.core.next_deadline()
            if at != self._sleep.deadline:
                self._sleep.deadline = at

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                self._sleep = Alarm(self._tick(), on_due=self._due)
                try:
                    await self._sleep.wait()
                finally:
                    self._sleep = None

    def _tick(self) -> float:
        """Run the core's timers and send what they made: when to tick again."""
        self.core.tick(trio.current_time())
        self._flush()
        return self.core.next_deadline()

    def _due(self) -> bool:
        """The loop's timer, taken in the clock's (under a clock with timers: ``Alarm``): the
        same tick, without waking the loop's task."""
        assert self._sleep is not None
        self._sleep.deadline = self._tick()
        return False

    def _flush(self) -> None:
        core = self.core
        if core.changes:  # (looked at before popping: most flushes have nothing to hand on)
            changes = core.pop_changes()
            if self.on_changes is not None:
                self.on_changes(changes)
        if core.outbox:
            for dst, msg in core.pop_outbox():
                self.send(dst, msg)
            if self.on_sent is not None:
                self.on_sent()

    def send(self, dst: str, msg: Message) -> None:
        assert self._nursery is not None
        body = encode_message(msg)
        for conn in self.transport.connections(dst):  # the pooled one, at once if it can take it
            try:
                if conn.send_nowait(body):
                    return
            except TransportError:
                self.dropped += 1
                return
            break
        self._nursery.start_soon(self._deliver, dst, body)

    async def _deliver(self, dst: str, body: Any) -> None:
        conn = await self._connection(dst)
        if conn is None:
            self.dropped += 1
            return
        try:
            if not conn.send_nowait(body):  # (a new connection: no scheduler pass for it)
                await conn.send(body)
        except TransportError:
            self.dropped += 1

    async def _connection(self, dst: str) -> Connection | None:
        for conn in self.transport.connections(dst):
            return conn
        pending = self._dialing.get(dst)
        if pending is not None:
            await pending.wait()
            return next(iter(self.transport.connections(dst)), None)
        addrs = list(self.addresses(dst))
        if not addrs:
            return None
        done = self._dialing[dst] = trio.Event()
        try:
            return await self.transport.dial(dst, addrs)
        except TransportError as exc:
            log.debug("%s: cannot reach %s: %s", self.core.node[-8:], dst[-8:], exc)
            return None
        finally:
            del self._dialing[dst]
            done.set()

    async def leave(self, grace: float = 0.5) -> None:
        """Leave gracefully: tell the others, and give the messages ``grace`` seconds to go."""
        self.core.leave(trio.current_time())
        with trio.move_on_after(grace):
            async with trio.open_nursery() as nursery:
                for dst, msg in self.core.pop_outbox():
                    nursery.start_soon(self._deliver, dst, encode_message(msg))
