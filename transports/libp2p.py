"""The libp2p transport: py-libp2p over TCP, hardened as DESIGN.md describes.

- Noise is the only security protocol offered (no /plaintext/2.0.0, no secio, no TLS), so a
  dialer cannot claim a peer id it does not hold the key of.
- Admission runs inside the Noise handshake: once the remote key is proven, a peer the allow-list
  does not admit is refused before a muxer exists, let alone a stream.
- ``max_connections_per_peer=1`` (the default makes ``connect()`` take ~250 ms).
- The one stream handler we register is guarded: nothing raised in it reaches the host.
- libp2p pubsub is not used; our gossip runs over our own streams.
- libp2p's own initiative is switched off, since the membership layer decides whom to talk to:
  no identify or ping protocols, no auto-connector re-dialing the peerstore every 10 s, no dial
  retries, and no 60 s "negative cache" block on a peer after a failed dial (a restarted peer
  must be reachable at once).
- Its TCP listeners set SO_REUSEPORT, so a second host could bind a port already in use and
  silently take half its connections: a fixed listen port is probed first and refused if taken.

Each ``Connection`` is one libp2p stream of protocol ``/swarm/frames/1``; framing, limits and
garbage handling are the shared ``Connection`` code, the same as over the memory transport. When
the connection manager reaps the last stream to a peer, the libp2p connection under it (its TCP
socket, Noise session and muxer task) is closed too, unless a stream to that peer has opened or
is being dialed since: libp2p itself would keep it open for as long as both ends live.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import trio

from homeswarm.errors import InvalidArgument, PeerUnreachable
from homeswarm.ids import short

from ._base import Transport

log = logging.getLogger("transports.libp2p")

PROTOCOL = "/swarm/frames/1"
READ_CHUNK = 65536

# libp2p's loggers do not propagate (their warnings would bypass our logging set-up) and some
# force themselves to INFO; route them through ours at WARNING.
for _name in ("libp2p", "multiaddr", "libp2p.network.auto_connector"):
    logging.getLogger(_name).setLevel(logging.WARNING)
logging.getLogger("libp2p").propagate = True


def _strip_p2p(addr: str) -> str:
    base, sep, _ = addr.partition("/p2p/")
    return base if sep else addr


class _StreamAdapter(trio.abc.Stream):
    """A libp2p stream seen as a trio stream; libp2p's errors translated at this boundary."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        from libp2p.exceptions import BaseLibp2pError

        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        try:
            await self._stream.write(bytes(data))
        except (BaseLibp2pError, OSError) as exc:
            raise trio.BrokenResourceError(f"libp2p stream: {type(exc).__name__}") from None

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        from libp2p.exceptions import BaseLibp2pError

        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        try:
            data: bytes = await self._stream.read(max_bytes or READ_CHUNK)
        except EOFError:
            return b""
        except (BaseLibp2pError, OSError) as exc:
            if self._closed:
                raise trio.ClosedResourceError("stream is closed") from None
            raise trio.BrokenResourceError(f"libp2p stream: {type(exc).__name__}") from None
        return data

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            await self._stream.close()
        except Exception:
            with contextlib.suppress(Exception):
                await self._stream.reset()


class Libp2pTransport(Transport):
    """Real device-to-device traffic. ``private_seed`` is the device's raw 32-byte Ed25519 key."""

    def __init__(
        self,
        private_seed: bytes,
        listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
        **options: Any,
    ) -> None:
        from libp2p.crypto.ed25519 import create_new_key_pair
        from libp2p.peer.id import ID

        if len(private_seed) != 32:
            raise InvalidArgument("an Ed25519 private seed is 32 bytes")
        self._key_pair = create_new_key_pair(private_seed)
        super().__init__(ID.from_pubkey(self._key_pair.public_key).to_base58(), **options)
        self._listen = [str(a) for a in listen]
        self._host: Any = None
        self._stopped = trio.Event()
        self._dialing: dict[str, int] = {}  # streams being opened, by peer
        self._opened: dict[str, int] = {}  # streams opened either way, by peer (a count)

    def libp2p_peers(self) -> list[str]:
        """The peers a libp2p connection is open with, whatever streams run on it or not."""
        if self._host is None:
            return []
        network = self._host.get_network()
        return sorted(p.to_base58() for p, conns in network.connections.items() if conns)

    @property
    def addrs(self) -> list[str]:
        if self._host is None:
            return []
        return [f"{a}/p2p/{self.peer_id}" for a in self._host.get_transport_addrs()]

    def _build_host(self) -> Any:
        import multiaddr
        from libp2p import new_host
        from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
        from libp2p.custom_types import TProtocol
        from libp2p.network.config import ConnectionConfig
        from libp2p.security.exceptions import HandshakeFailure
        from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
        from libp2p.security.noise.transport import Transport as NoiseTransport

        transport = self

        class AdmittingNoise(NoiseTransport):
            """Noise, refusing peers the allow-list does not admit, right after the handshake."""

            async def _admit(self, conn: Any) -> Any:
                remote = conn.get_remote_peer().to_base58()
                if not transport.admits(remote):
                    transport._refused += 1
                    log.info(
                        "%s: refused %s: not admitted", short(transport.peer_id), short(remote)
                    )
                    await conn.close()
                    raise HandshakeFailure("peer not admitted")
                return conn

            async def secure_inbound(self, conn: Any) -> Any:
                return await self._admit(await super().secure_inbound(conn))

            async def secure_outbound(self, conn: Any, peer_id: Any) -> Any:
                return await self._admit(await super().secure_outbound(conn, peer_id))

        noise = AdmittingNoise(self._key_pair, noise_privkey=create_x25519().private_key)
        host = new_host(
            key_pair=self._key_pair,
            sec_opt={NOISE_ID: noise},
            # a socket that never finishes its upgrade (garbage, a slowloris) is dropped
            # after the dial timeout, not libp2p's 10-30 s defaults
            connection_config=ConnectionConfig(
                max_connections_per_peer=1,
                dial_timeout=self.dial_timeout,
                inbound_upgrade_timeout=self.dial_timeout,
                outbound_upgrade_timeout=self.dial_timeout,
                inbound_stream_protocol_negotiation_timeout=self.dial_timeout,
                outbound_stream_protocol_negotiation_timeout=self.dial_timeout,
            ),
            negotiate_timeout=max(1, round(self.dial_timeout)),
            enable_mDNS=False,
            enable_upnp=False,
            enable_quic=False,
            enable_autotls=False,
            listen_addrs=[multiaddr.Multiaddr(a) for a in self._listen],
        )
        host.set_stream_handler(TProtocol(PROTOCOL), self._on_stream)
        _quieten(host)
        return host

    async def _start(self, nursery: trio.Nursery) -> None:
        _check_listen(self._listen)
        self._host = self._build_host()
        await nursery.start(self._run_host)

    async def _run_host(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        import multiaddr

        try:
            # shielded: cancelling the transport's owner must not interrupt libp2p's connection
            # tasks half-way through closing (that leaks their sockets); `_stop` ends this
            with trio.CancelScope(shield=True):
                listen = [multiaddr.Multiaddr(a) for a in self._listen]
                async with self._host.run(listen_addrs=listen):
                    await self._host.get_network().auto_connector.stop()
                    task_status.started()
                    await self._stopped.wait()
        except OSError as exc:
            raise PeerUnreachable(f"cannot listen on {', '.join(self._listen)}: {exc}") from None

    async def _stop(self) -> None:
        # libp2p leaves its TCP sockets open at exit unless each peer is closed first ...
        with trio.move_on_after(2.0):
            await self._close_peers()
        # ... and its listeners run in trio system tasks that outlive host.run(): close them, or
        # the port keeps accepting for a dead host (a restarted peer then loses half its dials)
        if self._host is not None:
            for listener in list(self._host.get_network().listeners.values()):
                with contextlib.suppress(Exception), trio.move_on_after(2.0):
                    await listener.close()
        self._stopped.set()

    async def _on_stream(self, stream: Any) -> None:
        """The one handler we register with libp2p: nothing may escape it."""
        try:
            peer = stream.muxed_conn.peer_id.to_base58()
            self._opened[peer] = self._opened.get(peer, 0) + 1
            await self._serve_inbound(_StreamAdapter(stream), peer, None)
        except Exception:
            log.exception("%s: inbound stream failed", short(self.peer_id))
            with contextlib.suppress(Exception):
                await stream.reset()

    async def _open_stream(
        self, peer_id: str, addrs: Sequence[str]
    ) -> tuple[trio.abc.Stream, str | None]:
        stream = await self._new_stream(peer_id, addrs)
        return _StreamAdapter(stream), None

    async def _new_stream(self, peer_id: str, addrs: Sequence[str]) -> Any:
        import multiaddr
        from libp2p.exceptions import BaseLibp2pError
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo

        if self._host is None:
            raise PeerUnreachable("transport is not open")
        try:
            pid = ID.from_base58(peer_id)
            maddrs = [multiaddr.Multiaddr(_strip_p2p(a)) for a in addrs]
        except Exception:
            raise InvalidArgument(f"bad peer id or address for {peer_id[:60]!r}") from None
        network = self._host.get_network()
        info = PeerInfo(pid, maddrs)
        self._dialing[peer_id] = self._dialing.get(peer_id, 0) + 1
        try:
            try:
                return await self._connect_and_open(network, info)
            except (BaseLibp2pError, OSError):
                # libp2p may hold a dead connection to a peer that went away (so connect() is
                # a no-op and new_stream fails): drop it and dial afresh, once
                with contextlib.suppress(BaseLibp2pError, OSError):
                    await network.close_peer(pid)
            try:
                return await self._connect_and_open(network, info)
            except (BaseLibp2pError, OSError) as exc:
                raise PeerUnreachable(f"cannot reach {short(peer_id)}: {_brief(exc)}") from None
        finally:
            left = self._dialing.pop(peer_id) - 1
            if left:
                self._dialing[peer_id] = left
            self._opened[peer_id] = self._opened.get(peer_id, 0) + 1

    def _unused(self, peer_id: str) -> None:
        if self._nursery is not None and self._host is not None:
            self._nursery.start_soon(self._close_unused, peer_id, self._opened.get(peer_id, 0))

    async def _close_unused(self, peer_id: str, opened: int) -> None:
        """Close the libp2p connections to ``peer_id`` unless a stream to it was opened, or is
        being dialed, since its last one was reaped (``opened`` streams then): that stream
        runs on one of them. Only those connections: libp2p's ``close_peer`` would also drop
        from its table one that a dial opens meanwhile."""
        from libp2p.peer.id import ID

        if self._opened.get(peer_id, 0) != opened or peer_id in self._dialing:
            return
        network = self._host.get_network()
        with trio.move_on_after(self.dial_timeout):
            for conn in network.get_connections(ID.from_base58(peer_id)):
                try:
                    await conn.close()
                except Exception:
                    log.debug("closing an idle connection failed", exc_info=True)

    async def _connect_and_open(self, network: Any, info: Any) -> Any:
        from libp2p.custom_types import TProtocol
        from libp2p.exceptions import BaseLibp2pError
        from libp2p.peer.peerinfo import PeerInfo

        # libp2p dials only the first TCP address its peerstore holds for a peer, and addresses
        # it remembers come before new ones: a device restarted on a new port or address would
        # never be dialed there. So the peerstore holds one address at a time, ours, tried in
        # the order given (the caller's newest first), until one connects.
        cache = getattr(network, "_negative_peer_cache", None)
        peerstore = self._host.get_peerstore()
        if not info.addrs:  # only what the peerstore remembers
            if cache is not None:
                cache.evict(str(info.peer_id))
            await self._host.connect(info)
        for i, addr in enumerate(info.addrs):
            if cache is not None:
                cache.evict(str(info.peer_id))  # we decide when to retry, not a 60 s block
            if not network.get_connections(info.peer_id):
                peerstore.clear_addrs(info.peer_id)
            try:
                await self._host.connect(PeerInfo(info.peer_id, [addr]))
                break
            except (BaseLibp2pError, OSError):
                if i == len(info.addrs) - 1:
                    raise
                log.debug("%s: %s not at %s", short(self.peer_id), short(str(info.peer_id)), addr)
        return await self._host.new_stream(info.peer_id, [TProtocol(PROTOCOL)])

    async def open_raw(self, peer_id: str, addrs: Sequence[str]) -> trio.abc.Stream:
        """A raw, authenticated stream to a peer, bypassing framing: for tests that send garbage."""
        return _StreamAdapter(await self._new_stream(peer_id, addrs))

    async def crash(self) -> None:
        """Drop every connection without a goodbye, as when the process dies (for tests)."""
        await self._close_peers()

    async def _close_peers(self) -> None:
        if self._host is None:
            return
        network = self._host.get_network()

        async def close(peer: Any) -> None:
            try:
                await network.close_peer(peer)
            except Exception:
                log.debug("closing %s failed", peer, exc_info=True)

        async with trio.open_nursery() as nursery:
            for peer in list(network.connections):
                nursery.start_soon(close, peer)


def _check_listen(addrs: Sequence[str]) -> None:
    """Refuse a malformed listen address, or a fixed TCP port something already holds."""
    import socket

    import multiaddr

    for addr in addrs:
        try:
            parsed = multiaddr.Multiaddr(addr)
            protocols = [p.name for p in parsed.protocols()]
            family = socket.AF_INET6 if "ip6" in protocols else socket.AF_INET
            host = parsed.value_for_protocol("ip6" if "ip6" in protocols else "ip4")
            port = int(parsed.value_for_protocol("tcp"))
        except Exception:
            raise InvalidArgument(
                f"listen address {addr!r} is not a TCP multiaddr like /ip4/0.0.0.0/tcp/4747"
            ) from None
        if port == 0:
            continue
        # a connect succeeds only if something listens there (a bind probe would also trip on
        # the TIME_WAIT sockets a restarted peer leaves behind)
        target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        probe = socket.socket(family, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            taken = probe.connect_ex((target, port)) == 0
        finally:
            probe.close()
        if taken:
            raise InvalidArgument(f"cannot listen on {addr}: the port is already in use")


def _quieten(host: Any) -> None:
    """Switch off what libp2p does on its own initiative (libp2p is pinned; see the docstring)."""
    # libp2p's loggers do not propagate and have no handler, so Python's last-resort handler
    # printed its warnings (tracebacks of its own shutdown races) raw on stderr; we log our own
    libp2p_log = logging.getLogger("libp2p")
    if not libp2p_log.handlers:
        libp2p_log.addHandler(logging.NullHandler())
    from libp2p.custom_types import TProtocol
    from libp2p.host.ping import ID as PING
    from libp2p.identity.identify.identify import ID as IDENTIFY
    from libp2p.identity.identify_push.identify_push import ID_PUSH
    from libp2p.network.config import RetryConfig

    for protocol in (PING, IDENTIFY, ID_PUSH):
        host.remove_stream_handler(TProtocol(protocol))
    host._schedule_identify = lambda *args, **kwargs: None
    host.get_network().retry_config = RetryConfig(max_retries=0)


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
