"""The real driver over the memory transport, in virtual time (trio's MockClock, autojump).

Each peer is a ``MemoryTransport`` whose handler gives membership bodies to its
``MembershipDriver``; addresses are ``/memory/<id>``. What the pure-core tests show with hand-moved
messages must hold here too, with dials, framing and connection pooling in the way.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from homeswarm.swarm._device import FixedLoad
from homeswarm.swarm._home import init_home, load_roster
from homeswarm.swarm._membership import BATTERY_SAVER, NORMAL, ON_BATTERY
from homeswarm.swarm._peer import Peer, PeerOptions
from homeswarm.swarm.testing import DriverPeer, device_keys
from homeswarm.transports import Link, MemoryNetwork

LINK = Link(latency=0.005, jitter=0.002)


@asynccontextmanager
async def swarm(
    n: int, *, link: Link = LINK, seed: int = 0, state: bytes = b""
) -> AsyncIterator[tuple[MemoryNetwork, list[DriverPeer]]]:
    """``n`` peers that joined through the first and all see each other alive."""
    rng = random.Random(seed)
    network = MemoryNetwork(rng, default_link=link)
    peers = [
        DriverPeer(network, node, key, state=state, rng=random.Random(node))
        for node, key in device_keys(n, rng)
    ]
    async with trio.open_nursery() as nursery:
        for peer in peers:
            await nursery.start(peer.serve)
        for peer in peers[1:]:
            peer.core.join([peers[0].id], trio.current_time())
            peer.driver.poke()
        # by gossip, or at the latest by the first push-pull (30 s): in a burst of joins a
        # newcomer's record can miss a member, all of whose gossip partners happened to be others
        await until(lambda: all_see(peers, "alive"), within=35.0, what="everyone alive")
        yield network, peers
        nursery.cancel_scope.cancel()


def all_see(peers: list[DriverPeer], status: str, about: list[DriverPeer] | None = None) -> bool:
    return all(
        observer.status(peer.id) == status
        for observer in peers
        for peer in (about or peers)
        if observer is not peer
    )


async def until(check: Callable[[], bool], *, within: float, what: str) -> float:
    """Wait (virtual time) until ``check()`` holds; how long it took."""
    start = trio.current_time()
    with trio.move_on_after(within):
        while True:
            if check():
                break
            await trio.sleep(0.05)
    assert check(), f"not within {within} s: {what}"
    return trio.current_time() - start


def crash(network: MemoryNetwork, peer: DriverPeer) -> None:
    """The process dies: its connections reset, and it sends nothing more."""
    network.crash(peer.id)
    peer.scope.cancel()


# ---- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 5])
async def test_everyone_sees_everyone_alive_with_their_state(autojump_clock, n):
    async with swarm(n, state=b"x" * 300) as (_, peers):
        await trio.sleep(2.0 * n)  # a round of probes: everyone has pinged everyone
        for observer in peers:
            for peer in peers:
                member = observer.core.members[peer.id]
                assert (member.status, member.state) == ("alive", b"x" * 300)
                if observer is not peer:
                    assert member.rtt is not None
                    assert 0.01 <= member.rtt <= 0.03
        # a state change reaches everyone within a second
        t = trio.current_time()
        peers[1].core.update_state(b"y" * 300, t)
        peers[1].driver.poke()
        took = await until(
            lambda: all(p.core.members[peers[1].id].state == b"y" * 300 for p in peers),
            within=1.0,
            what="the new state everywhere",
        )
        assert took < 0.2


@pytest.mark.parametrize("n", [3, 5])
async def test_a_crashed_peer_is_dead_everywhere_within_20_s(autojump_clock, n):
    async with swarm(n) as (network, peers):
        *live, victim = peers
        crash(network, victim)
        took = await until(
            lambda: all(p.status(victim.id) == "dead" for p in live),
            within=20.0,
            what="the crashed peer declared dead",
        )
        assert took > 4.0  # a suspicion lasts at least 4 s
        # and nobody else was ever suspected
        for p in live:
            assert {c.node for c in p.changes if c.status != "alive"} == {victim.id}
        assert all_see(live, "alive")


async def test_a_malformed_membership_frame_closes_that_connection_only(autojump_clock):
    async with swarm(4) as (network, peers):
        victim = peers[0]
        rogue = network.transport("rogue")
        async with rogue:
            for body in ([1, "ping", "not a number", "x", []], {"hello": 1}, [1, "gossip", [[]]]):
                conn = await rogue.dial(victim.id, victim.transport.addrs)
                await conn.send(body)
                with trio.fail_after(1.0):
                    await conn.wait_closed()
            # a member too: one of its connections is cut, its membership goes on over a new one
            member = peers[1]
            conn = await member.transport.dial(victim.id, victim.transport.addrs)
            await conn.send([1, "sync", "yes", []])
            with trio.fail_after(1.0):
                await conn.wait_closed()
        assert victim.transport.statistics().violations == 4
        mark = [len(p.changes) for p in peers]
        await trio.sleep(30.0)
        assert all_see(peers, "alive")
        for p, seen in zip(peers, mark, strict=True):
            assert [c for c in p.changes[seen:] if c.status != "alive"] == []


async def test_a_peer_that_leaves_is_left_everywhere(autojump_clock):
    async with swarm(4) as (_, peers):
        *stay, leaver = peers
        t = trio.current_time()
        await leaver.driver.leave()
        leaver.scope.cancel()
        took = await until(
            lambda: all(p.status(leaver.id) == "left" for p in stay),
            within=1.0,
            what="everyone to see the leave",
        )
        assert took < 0.1
        await trio.sleep(60.0)  # and it stays "left", never "dead"
        for p in stay:
            assert p.status(leaver.id) == "left"
            assert [c.status for c in p.changes if c.node == leaver.id and c.at >= t] == ["left"]
        assert all_see(stay, "alive")


async def test_a_full_peer_follows_its_power_into_and_out_of_the_battery_profiles(
    tmp_path, autojump_clock
):
    # the peer's hook: plugged -> normal, on battery -> on-battery, below 30% -> battery-saver
    power = {"source": "simulated", "battery_percent": 80.0, "plugged": True}
    ident = init_home(tmp_path / "sim", name="sim", role="laptop", extra={"power": power})
    transport = MemoryNetwork(random.Random(5)).transport(ident.device_id)
    peer = Peer(
        ident,
        load_roster(ident),
        PeerOptions(
            listen_addrs=lambda: transport.addrs,
            rng=random.Random(6),
            wall_clock=lambda: 1_000.0 + trio.current_time(),
            load=FixedLoad(10.0, 1000.0),
            persist=False,
        ),
    )
    async with transport, trio.open_nursery() as nursery:
        await nursery.start(peer.run, transport)
        assert peer.core is not None
        assert not peer.core.light
        assert peer.core.profile is NORMAL
        peer.set_power(None, False)
        assert peer.core.profile is ON_BATTERY
        peer.set_power(20.0, None)
        assert peer.core.profile is BATTERY_SAVER
        peer.set_power(None, True)
        assert peer.core.profile is NORMAL
        nursery.cancel_scope.cancel()
