"""Equal values that many peers of one process hold are held once (a simulated swarm runs a
thousand peers in one process): an alive record taken from the wire, a roster entry's packed
fact, a decoded device state. What each peer sees is unchanged."""

from __future__ import annotations

import gc
import random

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from homeswarm.swarm import Roster, decode_state, issue_certificate, public_bytes, swarm_id_of
from homeswarm.swarm._device import DeviceState, state_bytes
from homeswarm.swarm._driver import Ed25519Crypto
from homeswarm.swarm._membership import (
    _ALIVE,
    Alive,
    Gossip,
    Membership,
    decode_message,
    encode_message,
)
from homeswarm.swarm._roster_facts import RosterFacts
from homeswarm.swarm.testing import OpenFacts, device_keys


def _core(node: str, key: Ed25519PrivateKey) -> Membership:
    return Membership(
        node,
        state=b"state",
        crypto=Ed25519Crypto(key),
        facts=OpenFacts(),
        rng=random.Random(node),
        now=0.0,
    )


def _signed(key: Ed25519PrivateKey, node: str, version: int, state: bytes) -> Alive:
    unsigned = Alive(node, 0, version, state, b"")
    return Alive(node, 0, version, state, key.sign(unsigned.signed_part(b"")))


def _over_the_wire(record: Alive) -> Gossip:
    """The record as a peer receives it: decoded from its own copy of the bytes."""
    body = msgpack.unpackb(msgpack.packb(encode_message(Gossip((record,)))), raw=False)
    msg = decode_message(body)
    assert isinstance(msg, Gossip)
    return msg


def test_views_of_one_member_hold_one_alive_record_and_a_newer_one_replaces_it():
    keys = dict(device_keys(4, random.Random(3)))
    a, b, c, x = sorted(keys)
    cores = [_core(a, keys[a]), _core(b, keys[b]), _core(c, keys[c])]
    first = _signed(keys[x], x, 1, b"state one " * 30)
    copies = [_over_the_wire(first) for _ in cores]
    assert copies[0].records[0] is not copies[1].records[0]  # (each decoded its own)
    for core, msg in zip(cores, copies, strict=True):
        core.receive(x, msg, 1.0)
    held = [core.members[x].alive for core in cores]
    assert held[0] == first
    assert held[0] is held[1] is held[2]
    assert held[0].state is held[1].state

    newer = _signed(keys[x], x, 2, b"state two " * 30)
    for core in cores:
        core.receive(x, _over_the_wire(newer), 2.0)
    assert [core.members[x].version for core in cores] == [2, 2, 2]
    assert cores[0].members[x].alive is cores[2].members[x].alive
    del held, copies, first
    gc.collect()
    # the old record is no longer held by any view: the table lets it go
    assert not any(r.node == x and r.version == 1 for r in _ALIVE.values())


def test_a_record_unlike_the_held_one_is_never_swapped_for_it():
    """Interning finds records by signature, but takes the held one only if it is equal."""
    keys = dict(device_keys(2, random.Random(4)))
    a, x = sorted(keys)
    core = _core(a, keys[a])
    record = _signed(keys[x], x, 1, b"s")
    impostor = Alive(x, 0, 1, b"other", record.signature)  # (its signature does not verify)
    _ALIVE[impostor.signature] = impostor
    core.receive(x, _over_the_wire(record), 1.0)
    assert core.members[x].alive == record
    assert core.members[x].state == b"s"


def test_every_peers_roster_snapshot_holds_the_same_packed_entries():
    rng = random.Random(5)
    root = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    swarm = swarm_id_of(public_bytes(root))
    rosters = [Roster(swarm, public_bytes(root)) for _ in range(3)]
    for node, _ in device_keys(3, rng):
        cert = issue_certificate(
            root,
            issuer="root",
            swarm=swarm,
            device=node,
            name="d" + node[-4:],
            role="server",
            age_recipient="age1" + "q" * 58,
            now=0.0,
        )
        for roster in rosters:
            roster.add_chain((cert,))
    snapshots = [RosterFacts(r, lambda changed: None).snapshot() for r in rosters]
    assert len(snapshots[0]) == 3
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert all(x is y for x, y in zip(snapshots[0], snapshots[2], strict=True))


def test_a_decoded_state_is_one_frozen_value_for_equal_bytes():
    assert decode_state(b"not msgpack") is None
    state = DeviceState(
        name="laptop",
        role="laptop",
        addrs=("/memory/x",),
        battery_percent=50.0,
        plugged=True,
        minutes_left=None,
        cpu_percent=5.0,
        memory_free_mb=2048.0,
        scopes=("public",),
        relay_only=False,
        executor="inline",
        kernels=(),
        version=1,
    )
    blob = state_bytes(state)
    decoded = decode_state(blob)
    assert decoded == state
    assert decode_state(bytes(bytearray(blob))) is decoded
