"""Connections that don't pile up: in a simulated swarm larger than the connection manager's
mark, every peer probes and gossips with members at random, yet holds a bounded number of
connections open; membership is as good as with no bound, and the run stays deterministic."""

from __future__ import annotations

import trio

from homeswarm.simulations._world import DeviceSpec, VirtualClock, World, deterministic_trio
from homeswarm.transports import UNLIMITED, ConnectionLimits, Link

N = 24
LIMITS = ConnectionLimits(high=8, low=4, grace=0.5, idle_timeout=10.0)


def _swarm(limits: ConnectionLimits, seed: int = 3) -> tuple[World, list[int], bool]:
    """Run N peers for 20 simulated seconds with a state change every 2 s; the connections each
    peer had open at each sample after the first 2 s (every 0.25 s), and whether every view
    agrees at the end. At every sample, a peer over the high mark is over it only by connections
    in use or in their grace (in the first second after the swarm settles, every peer hears from
    one member, which then has a connection from each)."""
    world = World(
        [DeviceSpec(f"d{i:02d}", "server") for i in range(N)],
        seed=seed,
        link=Link(latency=0.002, jitter=0.001),
        limits=limits,
    )
    counts: list[int] = []
    agreed = False

    async def body(world: World) -> None:
        nonlocal agreed
        start = trio.current_time()
        while trio.current_time() - start < 20:
            if int((trio.current_time() - start) * 4) % 8 == 0:
                device = world.devices[int(trio.current_time()) % N]
                assert device.peer is not None
                device.load.cpu_percent = 10 + (trio.current_time() * 7) % 80
                device.peer.refresh_state(force=True)
            now = trio.current_time()
            for device in world.devices:
                assert device.peer is not None
                assert device.peer.transport is not None
                conns = device.peer.transport.connections()
                if len(conns) > limits.high:
                    # (>=: a grace ending at this very instant may be the manager's next task)
                    assert all(c.in_use or c.active_at + limits.grace >= now for c in conns)
                if now - start >= 2:
                    counts.append(len(conns))
            await trio.sleep(0.25)
        everyone = {d.id for d in world.devices}
        agreed = all(
            {n for n, m in d.peer.core.members.items() if m.status == "alive"} == everyone
            for d in world.devices
            if d.peer is not None and d.peer.core is not None
        )

    deterministic_trio(seed)
    trio.run(world.run, body, clock=VirtualClock())
    return world, counts, agreed


def test_connections_per_peer_stay_bounded_and_membership_does_not_suffer():
    bounded, counts, agreed = _swarm(LIMITS)
    # about the mark on average; at most the mark plus the connections used within the last
    # grace (here ~24 new contacts a second per peer: half a second's worth)
    assert sum(counts) / len(counts) <= LIMITS.high, sum(counts) / len(counts)
    assert max(counts) <= 2.5 * LIMITS.high, max(counts)
    assert agreed
    reaped = sum(
        d.peer.transport.statistics().reaped
        for d in bounded.devices
        if d.peer is not None and d.peer.transport is not None
    )
    assert reaped > 10 * N  # the bound was really in play
    # the same swarm with no bound: connections pile up towards one per member
    _, unbounded, agreed_unbounded = _swarm(UNLIMITED)
    assert agreed_unbounded
    assert max(unbounded) > 3 * LIMITS.high, max(unbounded)
    assert sum(unbounded) / len(unbounded) > 2 * LIMITS.high
    # and reaping keeps the run a function of the seed
    again, _, _ = _swarm(LIMITS)
    assert again.trace_digest == bounded.trace_digest
