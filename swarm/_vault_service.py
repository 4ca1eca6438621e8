"""The vault as a service of the peer: its node on the peer's transport, its requests, its status.

What the peer gives the vault (``vault`` itself knows nothing of the peer):

- the directory: every admitted device's age recipient and the scopes it may read, both from its
  CERTIFICATE (none for a relay); what a device gossips about itself (its ``[device] scopes``)
  can only narrow that, and a claim beyond the certificate is audited once and ignored, so a
  device that edits its own ``swarm.toml`` gains nothing. This device's own from its settings,
  narrowed by its certificate too; and the revoked devices;
- links: the members alive now, their addresses, and the peer's transport;
- ``vault.sync``/``vault.push`` requests from members, and ``vault.put/get/ls/rm/status`` from
  this device's CLI over the control socket.

Every second the service refreshes the directory (sealing epochs to devices that became
eligible) and starts a sync with every member newly seen alive (a device back from a restart or
a partition catches up at once). A revocation made by this device starts a new epoch for every
scope it may read; other devices start one when they next write (see ``vault._keys``).

The store is ``HOME/vault`` (SQLite). Without a running peer the CLI opens it directly
(``open_local``); the store's lock keeps the two from writing at once.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio

from homeswarm.transports import Connection, InvalidArgument
from homeswarm.vault import (
    SCOPES,
    Directory,
    EntryNotFound,
    NodeSettings,
    Store,
    TransportLinks,
    VaultError,
    VaultLocked,
    VaultNode,
    check_ttl,
)

from ._device import decode_state
from ._local_vault import directory_from, new_replica, open_store, readable_scopes
from ._service import Service
from ._vault_view import drop_view, entry_json, not_found

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from ._home import Identity
    from ._peer import Peer

log = logging.getLogger("swarm.vault")

REFRESH = 1.0  # seconds between directory and liveness checks
OPEN_TIMEOUT = 10.0  # seconds to wait for a CLI that has the store open
SHOW_IN_STATUS = True  # status() goes into `swarm status --json` under "vault"


class VaultService(Service):
    name = "vault"

    def __init__(
        self,
        identity: Identity,
        *,
        store: Store | None = None,
        settings: NodeSettings | None = None,
    ) -> None:
        self.identity = identity
        self._store = store  # None: SQLite in the home
        self._settings = settings
        self.node: VaultNode | None = None
        self._peer: Peer | None = None
        self._alive: set[str] = set()

    # ---- running -----------------------------------------------------------------------------

    async def run(self, peer: Peer, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._peer = peer
        assert peer.transport is not None
        store = self._store if self._store is not None else await self._open_store()
        if self._store is None:  # a running peer writes: the view would soon be stale, and
            drop_view(self.identity.home)  # it may hold a scope this device is losing
        rng = random.Random(peer.rng.random())
        try:
            self.node = VaultNode(
                lambda: new_replica(self.identity, self._directory(), rng, peer.roster),
                store,
                rng=random.Random(rng.random()),
                settings=self._settings,
                wall_clock=peer.options.wall_clock,
            )
            links = TransportLinks(
                peer.transport, alive=self._alive_now, addrs=peer.addrs_of, radio=peer.radio
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(self.node.run, links)
                nursery.start_soon(self._watch)
                task_status.started()
        finally:
            self.node = None
            if self._store is None:
                store.close()

    async def _open_store(self) -> Store:
        with trio.move_on_after(OPEN_TIMEOUT):
            while True:
                try:
                    return open_store(self.identity)
                except VaultLocked:
                    await trio.sleep(0.1)  # a CLI has it open for a moment
        return open_store(self.identity)  # raises VaultLocked, saying why

    async def _watch(self) -> None:
        while True:
            self._refresh()
            await trio.sleep(REFRESH)

    def _refresh(self) -> None:
        node = self.node
        if node is None:
            return
        node.set_directory(self._directory())
        alive = set(self._alive_now())
        for peer in sorted(alive - self._alive):
            node.sync_soon(peer)  # back, or new: catch up both ways at once
        self._alive = alive

    def _alive_now(self) -> list[str]:
        peer = self._peer
        if peer is None or peer.core is None:
            return []
        me = self.identity.device_id
        alive = [
            (node, member.light)
            for node, member in peer.core.members.items()
            if node != me and member.status == "alive" and peer.roster.admits(node)
        ]
        # the peers this vault syncs with: light members pull at their own radio bursts, and a
        # sync from here (a pull, a push on write) would wake a phone's radio; only while
        # nobody else is alive, the light members
        full = [node for node, light in alive if not light]
        return sorted(full or [node for node, _ in alive])

    def _directory(self) -> Directory:
        peer = self._peer
        assert peer is not None
        me = self.identity.device_id
        own = frozenset(readable_scopes(self.identity, peer.roster))

        def scopes_of(device: str) -> frozenset[str] | None:
            if device == me:
                return own
            member = peer.core.members.get(device) if peer.core is not None else None
            state = decode_state(member.state) if member is not None and member.state else None
            if state is None:
                return None
            return frozenset() if state.relay_only else frozenset(state.scopes)

        def excess(device: str, claimed: frozenset[str], allowed: frozenset[str]) -> None:
            beyond = ",".join(sorted(claimed - allowed))
            peer.audit.refuse(
                device,
                "claim",
                f"gossips scopes {beyond} beyond its certificate"
                f" ({','.join(sorted(allowed)) or 'relay: none'}); ignored",
            )

        live = directory_from(peer.roster, scopes_of, excess)
        return live if self.node is None else live.with_cache(self.node.replica.directory)

    def roster_changed(self, devices: list[str]) -> None:
        node, peer = self.node, self._peer
        if node is None or peer is None:
            return
        node.set_directory(self._directory())
        mine = {
            rev[2]
            for rev in peer.roster.to_wire()["revocations"]
            if rev[3] == self.identity.device_id
        }
        if mine & set(devices):
            log.warning("a device this one revoked is cut off: new epochs for every scope")
            node.rotate(SCOPES)

    # ---- requests ----------------------------------------------------------------------------

    async def handle(self, conn: Connection, op: str, body: dict[str, Any]) -> Any:
        if self.node is None:
            raise VaultError("the vault is not open yet")
        return await self.node.handle(conn, op, body)

    async def control(self, op: str, args: dict[str, Any]) -> Any:
        node = self.node
        if node is None:
            raise VaultError("the vault is still opening; try again in a moment")
        if op == "put":
            key, text, scope = _text_arg(args, "key"), _text_arg(args, "value"), args.get("scope")
            if scope is not None and not isinstance(scope, str):
                raise InvalidArgument("vault.put: scope is a string")
            ttl = args.get("ttl")
            used = await node.put(key, text, scope, None if ttl is None else check_ttl(ttl))
            return {"key": key, "scope": used}
        if op == "get":
            key = _text_arg(args, "key")
            entry = node.get(key)
            if entry is None:
                raise EntryNotFound(not_found(key))
            return entry_json(entry)
        if op == "ls":
            prefix = args.get("prefix") or ""
            if not isinstance(prefix, str):
                raise InvalidArgument("vault.ls: prefix is a string")
            return {"entries": [entry_json(e) for e in node.items(prefix)]}
        if op == "rm":
            key = _text_arg(args, "key")
            scopes = await node.delete(key)
            if not scopes:
                raise EntryNotFound(not_found(key))
            return {"key": key, "scopes": scopes}
        if op == "status":
            return node.status()
        raise InvalidArgument(f"unknown request vault.{op}")

    def status(self) -> dict[str, Any] | None:
        return self.section() if SHOW_IN_STATUS else None

    def metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        section = self.section()
        if section is None:
            return
        entries = GaugeMetricFamily(
            "swarm_vault_entries", "entries this device can read", labels=["scope", "collection"]
        )
        for scope, part in section["scopes"].items():
            for collection, n in (part["entries"] or {}).items():
                entries.add_metric([scope, collection], n)
        yield entries
        yield GaugeMetricFamily(
            "swarm_vault_bytes", "the vault's database on disk", value=section["bytes_on_disk"]
        )
        yield CounterMetricFamily(
            "swarm_vault_rejected",
            "updates refused (bad signature, scope)",
            value=section["rejected"],
        )
        yield CounterMetricFamily("swarm_vault_commits", "local writes", value=section["commits"])
        labels = ["peer"]
        behind = GaugeMetricFamily(
            "swarm_vault_sync_behind_updates",
            "updates that peer has and this one lacks",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "swarm_vault_sync_age_seconds",
            "seconds since the last sync with that peer",
            labels=labels,
        )
        failures = CounterMetricFamily("swarm_vault_sync_failures", "failed syncs", labels=labels)
        for peer, state in section["peers"].items():
            if state["ahead"] is not None:
                behind.add_metric([peer], state["ahead"])
            if state["last_sync_s"] is not None:
                age.add_metric([peer], state["last_sync_s"])
            failures.add_metric([peer], state["failures"])
        yield from (behind, age, failures)

    def section(self) -> dict[str, Any] | None:
        """The vault's part of the status (``swarm vault status`` shows it in any case)."""
        return None if self.node is None else self.node.status()


def _text_arg(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} is a string")
    return value


__all__ = ["VaultService"]
