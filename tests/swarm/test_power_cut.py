"""A home that loses power comes back together: every device restarts at once on a new address,
knowing only the others' old ones, and the views converge once they see each other on the LAN."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
import trio.testing

from homeswarm.simulations._faults import Fault, play
from homeswarm.simulations._world import DeviceSpec, World, _addr


def _agree(world: World) -> bool:
    for device in world.devices:
        core = device.peer.core if device.peer is not None else None
        if core is None or not device.up:
            return False
        alive = {n for n, m in core.members.items() if m.status == "alive"}
        if alive != {d.id for d in world.devices}:
            return False
    return True


async def _until(check: Callable[[], bool], deadline: float) -> float:
    start = trio.current_time()
    while not check():
        if trio.current_time() - start > deadline:
            raise AssertionError(f"not converged after {deadline:g} s")
        await trio.sleep(0.5)
    return trio.current_time() - start


def _run(body: Callable[[World], Awaitable[None]], n: int = 5, seed: int = 1) -> World:
    world = World([DeviceSpec(f"d{i}", "server") for i in range(n)], seed=seed)

    async def main() -> None:
        await world.run(body)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return world


def test_every_device_restarts_on_a_new_address_and_the_views_converge():
    took: list[float] = []

    async def body(world: World) -> None:
        await _until(lambda: _agree(world), 30.0)
        before = {d.id: _addr(d) for d in world.devices}
        lives = [d.lives for d in world.devices]
        await world.power_cut()
        assert all(_addr(d) != before[d.id] for d in world.devices)
        assert [d.lives for d in world.devices] == [n + 1 for n in lives]
        took.append(await _until(lambda: _agree(world), 60.0))
        # each knows the others at their new address
        for device in world.devices:
            assert device.peer is not None
            for other in world.devices:
                if other is not device:
                    assert device.peer.addrs_of(other.id)[0] == _addr(other)

    _run(body)
    assert len(took) == 1
    assert took[0] < 60.0


def test_without_a_sighting_nobody_is_found_at_the_old_addresses():
    # the attack-style control: the old addresses alone lead nowhere, so the sightings matter
    async def body(world: World) -> None:
        await _until(lambda: _agree(world), 30.0)
        old = {d.id: [_addr(d)] for d in world.devices}
        for device in world.devices:
            world.crash(device)
        for device in world.devices:
            device.moves += 1
            device.remembered = {k: v for k, v in old.items() if k != device.id}
        for device in world.devices:
            await world.start(device)  # no seeds: only the old addresses it remembers
        await trio.sleep(60.0)
        assert not _agree(world)

    _run(body, n=3)


def test_the_power_fault_plays_from_a_schedule():
    async def body(world: World) -> None:
        await play(world, [Fault(1.0, "power", (), 0.0)], 2.0)
        assert all(d.moves == 1 and d.up for d in world.devices)
        await _until(lambda: _agree(world), 60.0)

    _run(body, n=3)


def test_a_device_seen_at_a_new_address_is_dialed_there_first():
    # one device comes back on a new address; the others still hold its old record, whose
    # address leads nowhere: the LAN sighting's address must come first
    async def body(world: World) -> None:
        await _until(lambda: _agree(world), 30.0)
        moved, others = world.devices[0], world.devices[1:]
        world.crash(moved)
        moved.moves += 1
        moved.remembered = {}  # it knows nobody: the others must find it
        await world.start(moved)
        for device in others:
            world.sight(device)
            assert device.peer is not None
            assert device.peer.addrs_of(moved.id)[0] == _addr(moved)
        await _until(lambda: _agree(world), 60.0)

    _run(body, n=4)


def test_what_a_peer_learns_leaves_the_address_table_it_was_given_as_it_was():
    # a world gives all its peers one table of addresses (a thousand copies of a thousand
    # entries were most of a big swarm's address memory): a peer that wrote to it would change
    # what every other peer knows
    async def body(world: World) -> None:
        await _until(lambda: _agree(world), 30.0)
        peers = [d.peer for d in world.devices if d.peer is not None]
        given = peers[1].options.known_addrs
        assert given is not None
        assert given is peers[2].options.known_addrs
        before = {k: list(v) for k, v in given.items()}
        moved = world.devices[0]
        world.crash(moved)
        moved.moves += 1
        moved.remembered = {}
        await world.start(moved)
        for device in world.devices[1:]:
            world.sight(device)
            assert device.peer is not None
            assert device.peer.addrs_of(moved.id)[0] == _addr(moved)
        assert {k: list(v) for k, v in given.items()} == before
        await _until(lambda: _agree(world), 60.0)

    _run(body, n=3)
