"""The attacks DESIGN.md measured in py-libp2p 0.8.1, each refused while the peer keeps serving."""

from __future__ import annotations

import random

import pytest
import trio

from homeswarm.errors import PeerUnreachable
from homeswarm.transports import ConnectionLimits
from homeswarm.transports.libp2p import Libp2pTransport
from homeswarm.transports.testing import echo, wait_for


def _port(transport: Libp2pTransport) -> int:
    return int(transport.addrs[0].split("/tcp/")[1].split("/")[0])


async def test_plaintext_dial_claiming_a_known_id_is_refused():
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

    rng = random.Random(1)
    server = Libp2pTransport(rng.randbytes(32))
    friend = Libp2pTransport(rng.randbytes(32))
    async with server, friend:
        server.set_handler(echo)
        server.set_admission(lambda peer: peer == friend.peer_id)
        attacker_keys = create_new_key_pair(rng.randbytes(32))
        attacker = new_host(
            key_pair=attacker_keys,
            sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(attacker_keys)},
            listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")],
        )
        async with attacker.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            target = PeerInfo(
                ID.from_base58(server.peer_id),
                [multiaddr.Multiaddr(server.addrs[0].split("/p2p/")[0])],
            )
            with trio.fail_after(15):
                with pytest.raises(Exception) as info:  # noqa: PT011 - any libp2p failure
                    await attacker.connect(target)
            assert (
                "plaintext" not in str(info.value).lower()
                or "not supported" in str(info.value).lower()
            )
            assert not server.connections()
            for peer in list(attacker.get_network().connections):
                await attacker.get_network().close_peer(peer)
        conn = await friend.dial(server.peer_id, server.addrs)
        assert await conn.request("still here") == {"echo": "still here", "peer": friend.peer_id}


async def test_random_bytes_on_the_port_do_not_hurt():
    rng = random.Random(2)
    server = Libp2pTransport(rng.randbytes(32), dial_timeout=1.0)
    client = Libp2pTransport(rng.randbytes(32))
    async with server, client:
        server.set_handler(echo)
        sockets = []
        for size in (1, 100, 5000):
            sock = await trio.open_tcp_stream("127.0.0.1", _port(server))
            await sock.send_all(rng.randbytes(size))
            sockets.append(sock)
        # while the garbage sockets hang, the peer serves others
        conn = await client.dial(server.peer_id, server.addrs)
        assert await conn.request(1) == {"echo": 1, "peer": client.peer_id}
        # and it drops each garbage socket within its upgrade timeout
        with trio.fail_after(10):
            for sock in sockets:
                try:
                    while await sock.receive_some(4096):
                        pass
                except trio.BrokenResourceError:
                    pass
                await sock.aclose()
        assert await conn.request(2) == {"echo": 2, "peer": client.peer_id}


async def test_dial_to_a_wrong_peer_id_fails():
    rng = random.Random(3)
    server = Libp2pTransport(rng.randbytes(32))
    client = Libp2pTransport(rng.randbytes(32))
    impostor = Libp2pTransport(rng.randbytes(32))
    async with server, client:
        with pytest.raises(PeerUnreachable):
            await client.dial(impostor.peer_id, [server.addrs[0].split("/p2p/")[0]], timeout=10)


async def test_restarted_peer_is_reachable_at_once():
    rng = random.Random(4)
    seed = rng.randbytes(32)
    client = Libp2pTransport(rng.randbytes(32), dial_timeout=3.0)
    async with client:
        first = Libp2pTransport(seed)
        async with first:
            first.set_handler(echo)
            addrs = first.addrs
            conn = await client.dial(first.peer_id, addrs)
            assert await conn.request(1)
        # the peer is gone: dialing fails, and libp2p would block it for 60 s after that
        with pytest.raises(PeerUnreachable):
            await client.dial(first.peer_id, addrs)
        again = Libp2pTransport(seed, [addrs[0].split("/p2p/")[0]])
        async with again:
            again.set_handler(echo)
            conn = await client.dial(again.peer_id, again.addrs)
            assert await conn.request(2) == {"echo": 2, "peer": client.peer_id}


async def test_only_our_protocol_is_served():
    rng = random.Random(5)
    server = Libp2pTransport(rng.randbytes(32))
    async with server:
        protocols = set(server._host.get_mux().handlers)
    assert protocols == {"/swarm/frames/1"}


async def test_closing_releases_the_port():
    transport = Libp2pTransport(random.Random(6).randbytes(32))
    async with transport:
        port = _port(transport)
    with pytest.raises(OSError, match="connect"):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_peer_restarted_on_a_new_port_is_dialed_there():
    # py-libp2p dials only the first TCP address it remembers for a peer: after a power cut a
    # device that comes back on a new port must still be found at the new one
    rng = random.Random(7)
    seed = rng.randbytes(32)
    client = Libp2pTransport(rng.randbytes(32), dial_timeout=3.0)
    async with client:
        first = Libp2pTransport(seed)
        async with first:
            first.set_handler(echo)
            old = first.addrs
            conn = await client.dial(first.peer_id, old)
            assert await conn.request(1)
        again = Libp2pTransport(seed)
        async with again:
            again.set_handler(echo)
            new = again.addrs
            assert _port(again) != int(old[0].split("/tcp/")[1].split("/")[0])
            conn = await client.dial(again.peer_id, old + new)
            assert await conn.request(2) == {"echo": 2, "peer": client.peer_id}
            # and with the new address first, the old one is never needed
            await conn.aclose()
            await client.crash()
            conn = await client.dial(again.peer_id, new + old)
            assert await conn.request(3) == {"echo": 3, "peer": client.peer_id}


async def test_reaping_the_last_stream_to_a_peer_closes_the_connection_under_it():
    # libp2p would keep the TCP socket, the Noise session and the muxer's task for as long as
    # both ends live: when the manager reaps our last stream to a peer, they go too, on both
    # sides; the next dial opens a new connection
    rng = random.Random(8)
    server = Libp2pTransport(rng.randbytes(32), limits=ConnectionLimits(idle_timeout=60.0))
    client = Libp2pTransport(rng.randbytes(32), limits=ConnectionLimits(idle_timeout=0.3))
    async with server, client:
        server.set_handler(echo)
        conn = await client.dial(server.peer_id, server.addrs)
        assert await conn.request(1)
        assert client.libp2p_peers() == [server.peer_id]
        assert server.libp2p_peers() == [client.peer_id]
        await wait_for(lambda: conn.closed, "the idle stream reaped")
        assert conn.close_reason == "closed idle"
        await wait_for(lambda: not client.libp2p_peers(), "the client's connection closed")
        await wait_for(lambda: not server.libp2p_peers(), "the server's side closed too")
        again = await client.dial(server.peer_id, server.addrs)
        assert await again.request(2) == {"echo": 2, "peer": client.peer_id}
        assert client.libp2p_peers() == [server.peer_id]


async def test_a_stream_still_open_to_the_peer_keeps_the_connection():
    rng = random.Random(9)
    server = Libp2pTransport(rng.randbytes(32), limits=ConnectionLimits(idle_timeout=60.0))
    client = Libp2pTransport(rng.randbytes(32), limits=ConnectionLimits(idle_timeout=0.3))
    async with server, client:
        server.set_handler(echo)
        first = await client.dial(server.peer_id, server.addrs)
        assert await first.request(1)
        second = await client.dial(server.peer_id, server.addrs)
        with trio.fail_after(10):
            while not first.closed:  # keep the second busy while the first is reaped
                assert await second.request(2)
                await trio.sleep(0.05)
        assert first.close_reason == "closed idle"
        assert await second.request(3)  # the connection under it still there
        assert client.libp2p_peers() == [server.peer_id]
