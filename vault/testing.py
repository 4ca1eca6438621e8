"""The vault's test kit: devices with real keys, replicas in a directory, and sessions between
pure replicas with messages going through msgpack exactly as on the wire (no transport, no trio).

The simulator and the tests build on it; ``tests/vault/test_vault_sync.py`` runs the same replicas
through the trio driver on the memory network.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import pyrage
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from homeswarm.transports import (
    Connection,
    MemoryNetwork,
    ProtocolViolation,
    peer_id_from_public_key,
)

from ._model import SCOPES
from ._node import NodeSettings, TransportLinks, VaultNode
from ._replica import Access, Changes, Directory, Rejection, Replica
from ._store import MemoryStore, Store
from ._sync import SYNC, Push, Session, SyncRequest, answer_push, answer_sync

SWARM = "swtest"


@dataclass(frozen=True)
class VaultDevice:
    id: str
    signing_key: Ed25519PrivateKey
    age: pyrage.x25519.Identity
    scopes: frozenset[str]  # what it may read (empty: a relay)

    @property
    def recipient(self) -> str:
        return str(self.age.to_public())


def make_device(rng: random.Random, scopes: Iterable[str] = SCOPES) -> VaultDevice:
    """A device with an Ed25519 key drawn from ``rng`` and a fresh age identity."""
    key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return VaultDevice(
        peer_id_from_public_key(raw), key, pyrage.x25519.Identity.generate(), frozenset(scopes)
    )


def directory_of(devices: Iterable[VaultDevice], revoked: Iterable[str] = ()) -> Directory:
    return Directory({d.id: Access(d.recipient, d.scopes) for d in devices}, frozenset(revoked))


def make_replica(
    device: VaultDevice, directory: Directory, *, seed: int = 0, swarm: str = SWARM
) -> Replica:
    return Replica(
        swarm=swarm,
        device=device.id,
        signing_key=device.signing_key,
        age_identity=device.age,
        readable=device.scopes,
        directory=directory,
        rng=random.Random(seed),
    )


def _wire(obj: object) -> object:
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


@dataclass
class SessionOutcome:
    client: Changes
    server: Changes
    rejections: list[Rejection]
    rounds: int
    bytes: int


def exchange(client: Replica, server: Replica, *, budget: int = 512 * 1024) -> SessionOutcome:
    """One whole session from ``client`` to ``server``, in memory."""
    session = Session(client, budget=budget)
    mine, theirs = Changes(), Changes()
    rejections: list[Rejection] = []
    rounds = size = 0
    while (message := session.next()) is not None:
        op, body = message
        raw = msgpack.packb(body, use_bin_type=True)
        size += len(raw)
        request = _wire(body)
        if op == SYNC:
            asked = SyncRequest.from_wire(request)
            theirs.extend(server.observe(asked.vectors))
            wire = answer_sync(server, asked, budget=budget).to_wire()
        else:
            answer, changes, refused = answer_push(server, Push.from_wire(request))
            theirs.extend(changes)
            rejections.extend(refused)
            wire = answer.to_wire()
        size += len(msgpack.packb(wire, use_bin_type=True))
        changes, refused = session.take(op, _wire(wire))
        if session.their_vectors is not None:
            changes.extend(client.observe(session.their_vectors))
        mine.extend(changes)
        rejections.extend(refused)
        rounds += 1
    return SessionOutcome(mine, theirs, rejections, rounds, size)


def contents(replicas: Mapping[str, Replica], scope: str) -> dict[str, dict[str, str]]:
    """Each replica's content of ``scope``, for those that may read it."""
    return {name: r.content(scope) for name, r in replicas.items() if scope in r.readable}


class NetPeer:
    """A vault node on the memory network, as the simulator runs one: its own transport, a
    store that outlives a crash (``MemoryStore`` by default), and a set of peers it believes
    alive (a test moves it by hand: no membership here)."""

    def __init__(
        self,
        network: MemoryNetwork,
        device: VaultDevice,
        directory: Directory,
        *,
        store: Store | None = None,
        settings: NodeSettings | None = None,
        seed: int = 0,
    ) -> None:
        self.network = network
        self.device = device
        self.id = device.id
        self.directory = directory
        self.store: Store = store if store is not None else MemoryStore()
        self.settings = settings
        self.seed = seed
        self.alive: set[str] = set()
        self.transport = network.transport(device.id)
        self.node = VaultNode(
            lambda: make_replica(device, directory, seed=seed),
            self.store,
            rng=random.Random(seed),
            settings=settings,
        )
        self.scope = trio.CancelScope()

    async def _handle(self, conn: Connection, body: Any) -> Any:
        op = body.get("op") if isinstance(body, dict) else None
        if not isinstance(op, str) or not op.startswith("vault."):
            raise ProtocolViolation("not a vault message")
        return await self.node.handle(conn, op.removeprefix("vault."), body)

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        links = TransportLinks(
            self.transport, alive=lambda: sorted(self.alive), addrs=lambda p: [f"/memory/{p}"]
        )
        with self.scope:
            async with self.transport:
                self.transport.set_handler(self._handle)
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.node.run, links)
                    task_status.started()
                    await trio.sleep_forever()

    def crash(self) -> None:
        """The process dies: connections reset, nothing unacknowledged survives."""
        self.network.crash(self.id)
        self.scope.cancel()

    def restarted(self, seed: int) -> NetPeer:
        """The same device started again on the same store."""
        fresh = NetPeer(
            self.network,
            self.device,
            self.directory,
            store=self.store,
            settings=self.settings,
            seed=seed,
        )
        fresh.alive = set(self.alive)
        return fresh
