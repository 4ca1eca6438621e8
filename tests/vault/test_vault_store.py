"""The vault on disk: SQLite round trips, file modes, the lock, other devices' files, and the two
promises of the issue: no plaintext on disk or on the wire, and no acknowledged write lost to a
SIGKILL at any moment.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import trio

from homeswarm.transports import Link, MemoryNetwork
from homeswarm.vault import (
    SCOPES,
    LocalVault,
    SqliteStore,
    StorageFailure,
    VaultLocked,
    VaultNode,
)
from homeswarm.vault.testing import SWARM, NetPeer, directory_of, make_device, make_replica

ALL = frozenset(SCOPES)


def open_store(path: Path, device_id: str) -> SqliteStore:
    return SqliteStore(path, swarm=SWARM, device=device_id)


def test_sqlite_round_trip_modes_and_lock(tmp_path):
    rng = random.Random(1)
    devices = [make_device(rng, ALL), make_device(rng, {"public"})]
    directory = directory_of(devices)
    where = tmp_path / "vault"
    store = open_store(where, devices[0].id)
    local = LocalVault(lambda: make_replica(devices[0], directory), store)
    local.put("facts/a", '"A"')
    local.put("memories/b", '{"n":1}', "private")
    local.put("facts/c", '"C"', "public")
    assert local.delete("facts/c") == ["public"]
    store.save_directory(directory)
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    for name in ("vault.db", "vault.db-wal", "lock"):
        assert stat.S_IMODE((where / name).stat().st_mode) == 0o600, name
    with pytest.raises(VaultLocked, match="open in another process"):
        open_store(where, devices[0].id)
    before = local.items()
    size = store.size()
    assert size > 0
    local.close()
    # reopened: the same entries, and the directory it cached
    store = open_store(where, devices[0].id)
    again = LocalVault(lambda: make_replica(devices[0], directory_of([])), store)
    assert again.items() == before
    assert again.replica.directory == directory
    assert again.status()["bytes_on_disk"] > 0
    again.close()
    # the vault of another device is refused
    with pytest.raises(StorageFailure, match="another device"):
        open_store(where, devices[1].id)


def test_a_failing_store_acknowledges_nothing_and_keeps_what_it_held(tmp_path):
    rng = random.Random(2)
    device = make_device(rng, ALL)
    store = open_store(tmp_path / "v", device.id)
    local = LocalVault(lambda: make_replica(device, directory_of([device])), store)
    local.put("facts/kept", "1")
    store._db.close()  # the disk goes away
    with pytest.raises(StorageFailure, match="cannot write"):
        local.put("facts/lost", "2")
    local.close()
    again = LocalVault(
        lambda: make_replica(device, directory_of([device]), seed=1),
        open_store(tmp_path / "v", device.id),
    )
    assert again.get("facts/kept") is not None
    assert again.get("facts/lost") is None
    again.close()


# --- no plaintext on disk or on the wire ---------------------------------------------------------


async def test_no_written_value_is_in_any_file_or_on_the_wire(tmp_path, autojump_clock):
    rng = random.Random(3)
    devices = [
        make_device(rng, ALL),
        make_device(rng, {"public", "personal"}),
        make_device(rng, frozenset()),
    ]
    directory = directory_of(devices)
    network = MemoryNetwork(rng, default_link=Link(latency=0.002))
    traffic: list[bytes] = []
    network.tap = lambda at, src, dst, data: traffic.append(bytes(data))
    peers = [
        NetPeer(network, d, directory, store=open_store(tmp_path / f"d{i}", d.id), seed=i)
        for i, d in enumerate(devices)
    ]
    for p in peers:
        p.alive = {q.id for q in peers if q is not p}
    markers = {f"zq{rng.getrandbits(64):016x}" for _ in range(12)}
    names = {f"name{rng.getrandbits(48):012x}" for _ in range(6)}
    async with trio.open_nursery() as nursery:
        for p in peers:
            await nursery.start(p.serve)
        writer = peers[0].node
        for i, marker in enumerate(sorted(markers)):
            name = sorted(names)[i % len(names)]
            scope = SCOPES[i % 3]
            await writer.put(f"facts/{name}-{i}", json.dumps({"secret": marker}), scope)
        await peers[1].node.put(f"memories/{sorted(names)[0]}", json.dumps(sorted(markers)[0]))
        for scope in SCOPES:
            writer.compact(scope)
        await trio.sleep(10.0)  # every session done, compaction spread
        assert peers[1].node.replica.vectors() == writer.replica.vectors()
        assert peers[2].node.replica.vectors() == writer.replica.vectors()
        nursery.cancel_scope.cancel()
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert {f.name for f in files} >= {"vault.db", "vault.db-wal", "vault.db-shm"}
    disk = b"".join(f.read_bytes() for f in files)
    for p in peers:
        p.store.close()  # a checkpoint moves the log into the database file
    disk += b"".join(f.read_bytes() for f in tmp_path.rglob("*") if f.is_file())
    wire = b"".join(traffic)
    assert len(wire) > 10_000
    for secret in markers | names:
        for encoded in (secret.encode(), secret.encode("utf-16-le")):
            assert encoded not in disk, secret
            assert encoded not in wire, secret
    # and the test would see them, were they there
    assert devices[0].id.encode() in disk


# --- SIGKILL at random moments -------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import json, random, sys
    from pathlib import Path
    import pyrage, trio
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from homeswarm.vault import SqliteStore, VaultNode
    from homeswarm.vault.testing import SWARM, VaultDevice, directory_of, make_replica

    seed, age, path, run = bytes.fromhex(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    from homeswarm.transports import peer_id_from_public_key
    from cryptography.hazmat.primitives import serialization
    key = Ed25519PrivateKey.from_private_bytes(seed)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    scopes = frozenset({"public", "personal", "private"})
    identity = pyrage.x25519.Identity.from_str(age)
    device = VaultDevice(peer_id_from_public_key(raw), key, identity, scopes)
    directory = directory_of([device])

    async def main():
        store = SqliteStore(path, swarm=SWARM, device=device.id)
        node = VaultNode(lambda: make_replica(device, directory), store, rng=random.Random(0))
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)

            async def writer(w):
                for i in range(10**9):
                    key = f"facts/r{run}-w{w}-{i}"
                    scope = ("public", "personal", "private")[i % 3]
                    await node.put(key, json.dumps([run, w, i]), scope)
                    print(key, flush=True)

            for w in range(16):
                nursery.start_soon(writer, w)

    trio.run(main)
    """
)


@pytest.mark.slow
def test_every_acknowledged_write_survives_sigkill(tmp_path):
    rng = random.Random()
    device = make_device(rng, ALL)
    seed = rng.randbytes(32)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(seed)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    from homeswarm.transports import peer_id_from_public_key

    device_id = peer_id_from_public_key(raw)
    age = str(device.age)
    where = tmp_path / "vault"
    acked: list[str] = []
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    for run in range(4):
        out = tmp_path / f"acked-{run}.txt"
        with open(out, "wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-c", WRITER, seed.hex(), age, str(where), str(run)],
                stdout=sink,
                stderr=subprocess.PIPE,
                env=env,
            )
        started = time.monotonic()
        while out.stat().st_size == 0:  # wait for the first acknowledged write
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() - started < 20, "the writer never wrote"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
        lines = out.read_bytes().split(b"\n")[:-1]  # the last line may be cut short
        acked.extend(line.decode() for line in lines)
    assert len(acked) > 100
    replica = make_replica(type(device)(device_id, key, device.age, ALL), directory_of([]), seed=7)
    local = LocalVault(lambda: replica, open_store(where, device_id))
    try:
        for k in acked:
            entry = local.get(k)
            assert entry is not None, k
            run, w, i = k.removeprefix("facts/r").replace("-w", " ").replace("-", " ").split()
            assert json.loads(entry.text) == [run, int(w), int(i)]
    finally:
        local.close()


# --- the fsync off the trio thread ---------------------------------------------------------------


async def test_a_write_is_acknowledged_after_an_fsync_made_in_a_worker_thread(tmp_path):
    """The fsync used to run on the trio thread, so membership probes waited behind the disk."""
    rng = random.Random(9)
    device = make_device(rng, ALL)
    store = open_store(tmp_path / "v", device.id)
    flushed: list[tuple[bool, int]] = []
    real_flush = store.flush

    def flush() -> None:
        on_trio = threading.current_thread() is threading.main_thread()
        real_flush()
        flushed.append((on_trio, store.size()))

    store.flush = flush  # type: ignore[method-assign]
    node = VaultNode(
        lambda: make_replica(device, directory_of([device])), store, rng=random.Random(1)
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        await node.put("facts/x", '"x"')
        assert flushed, "acknowledged before any flush"
        assert not any(on_trio for on_trio, _ in flushed)
        nursery.cancel_scope.cancel()
    store.close()
