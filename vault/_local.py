"""The vault of this device opened directly, without a running peer, and what both ways share.

``LocalVault`` is what the CLI uses when no peer runs: each write is committed, durably, before
the call returns; close it to release the store's lock. ``restore`` loads a store into a new
replica (for a ``LocalVault`` and for a peer's ``VaultNode``); ``store_status`` is ``swarm vault
status``. Nothing here imports trio or the transports: a command that reads the vault with no
peer running loads only the replica, the store and their crypto.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ._model import SCOPES
from ._replica import Entry, Replica
from ._store import Store

log = logging.getLogger("vault.local")


def restore(replica: Replica, store: Store) -> Replica:
    """Load ``store`` into a new ``replica``; the replica."""
    stored = store.load()
    if stored.directory is not None:
        replica.set_directory(replica.directory.with_cache(stored.directory))
    problems = replica.restore(stored.keys, stored.snapshots, stored.updates, stored.evidence)
    replica.take_forks()  # (already reported when they arrived)
    for problem in problems:
        log.warning("%s: a stored record is unusable: %s", problem.record, problem.reason)
    if stored.damaged:
        log.warning("%d stored records did not decode and were skipped", stored.damaged)
    return replica


def store_status(
    replica: Replica, store: Store, *, commits: int, peers: dict[str, Any]
) -> dict[str, Any]:
    """``swarm vault status``: the replica's content and the store's size, with sync state."""
    inner = replica.status()
    return {
        "device": replica.device,
        "readable": sorted(replica.readable, key=SCOPES.index),
        "scopes": inner["scopes"],
        "rejected": inner["rejected"],
        "bytes_on_disk": store.size(),
        "commits": commits,
        "peers": peers,
    }


class LocalVault:
    """A vault opened directly, without a running peer (the CLI when no peer runs): each write
    is committed, durably, before the call returns. Close it to release the store's lock."""

    def __init__(self, new_replica: Callable[[], Replica], store: Store) -> None:
        self.store = store
        self.replica = restore(new_replica(), store)

    def get(self, key: str) -> Entry | None:
        return self.replica.get(key, time.time())

    def items(self, prefix: str = "") -> list[Entry]:
        return self.replica.items(prefix, time.time())

    def put(self, key: str, text: str, scope: str | None = None, ttl: float | None = None) -> str:
        used = self.replica.put(key, text, scope, ttl=ttl, now=time.time())
        self.store.apply(self.replica.commit_local())
        self.store.flush()
        return used

    def delete(self, key: str) -> list[str]:
        scopes = self.replica.delete(key)
        if scopes:
            self.store.apply(self.replica.commit_local())
            self.store.flush()
        return scopes

    def status(self) -> dict[str, Any]:
        return store_status(self.replica, self.store, commits=0, peers={})

    def close(self) -> None:
        self.store.close()
