"""The encrypted CRDT vault (DESIGN.md, "The vault"): facts, memories, context and questions,
replicated among one person's devices with no server.

Layers, each in its own module, lowest first:

- ``_model``: keys (``COLLECTION/NAME``), scopes, values and their limits;
- ``_records``: the signed records (updates, snapshots, epochs, seals) and their wire form;
- ``_keys``: epochs and seals: one age key per scope and epoch, sealed to each allowed device;
- ``_replica``: ``Replica``, the pure core (documents, logs, checks, compaction);
- ``_sync``: anti-entropy messages and ``Session``, sans I/O;
- ``_store``: ``SqliteStore`` (a device) and ``MemoryStore`` (the simulator);
- ``_view``: a sealed view of what a device reads, the quick read when no peer runs;
- ``_local``: ``LocalVault``, the store opened directly, without a running peer (no trio);
- ``_node``: ``VaultNode``, the thin trio driver (group commit, sync with peers).

``vault.testing`` is the test kit. This package never imports ``swarm``. Its face loads lazily:
the errors and the model at once, the rest on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    EntryNotFound,
    InvalidEntry,
    RejectedRecord,
    ScopeNotAllowed,
    StorageFailure,
    VaultError,
    VaultLocked,
)
from ._model import (
    COLLECTIONS,
    DEFAULT_SCOPE,
    MAX_VALUE_BYTES,
    MEMORY_TIERS,
    SCOPES,
    TTL_DEFAULT_S,
    Entry,
    check_prefix,
    check_ttl,
    decode_value,
    encode_value,
    parse_json,
    split_key,
)

# name -> the private module that defines it, loaded on first use (PEP 562): the errors and the
# model above are light, the rest (pycrdt, age, trio) loads only for what a command touches, so
# `swarm vault get` with no peer running never loads trio or the transports
_FACE = {
    "Links": "_node",
    "NodeSettings": "_node",
    "TransportLinks": "_node",
    "VaultNode": "_node",
    "LocalVault": "_local",
    "Epoch": "_records",
    "Seal": "_records",
    "Snapshot": "_records",
    "Update": "_records",
    "decode_record": "_records",
    "sign": "_records",
    "stream_device": "_records",
    "Access": "_replica",
    "Changes": "_replica",
    "Directory": "_replica",
    "Rejection": "_replica",
    "Replica": "_replica",
    "Vectors": "_replica",
    "MemoryStore": "_store",
    "SqliteStore": "_store",
    "Store": "_store",
    "Session": "_sync",
    "answer_push": "_sync",
    "answer_sync": "_sync",
    "lacking": "_sync",
    "View": "_view",
    "open_view": "_view",
    "seal_view": "_view",
    "store_stamp": "_view",
}

if TYPE_CHECKING:
    from ._local import LocalVault
    from ._node import Links, NodeSettings, TransportLinks, VaultNode
    from ._records import Epoch, Seal, Snapshot, Update, decode_record, sign, stream_device
    from ._replica import Access, Changes, Directory, Rejection, Replica, Vectors
    from ._store import MemoryStore, SqliteStore, Store
    from ._sync import Session, answer_push, answer_sync, lacking
    from ._view import View, open_view, seal_view, store_stamp


def __getattr__(name: str) -> Any:
    module = _FACE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The face (``__all__``) and the module's own dunders: not the helpers it imports."""
    return sorted({*__all__, *(n for n in globals() if n.startswith("__"))})


__all__ = [
    "COLLECTIONS",
    "DEFAULT_SCOPE",
    "MAX_VALUE_BYTES",
    "MEMORY_TIERS",
    "SCOPES",
    "TTL_DEFAULT_S",
    "Access",
    "Changes",
    "Directory",
    "Entry",
    "EntryNotFound",
    "Epoch",
    "InvalidEntry",
    "Links",
    "LocalVault",
    "MemoryStore",
    "NodeSettings",
    "RejectedRecord",
    "Rejection",
    "Replica",
    "ScopeNotAllowed",
    "Seal",
    "Session",
    "Snapshot",
    "SqliteStore",
    "StorageFailure",
    "Store",
    "TransportLinks",
    "Update",
    "VaultError",
    "VaultLocked",
    "VaultNode",
    "Vectors",
    "View",
    "answer_push",
    "answer_sync",
    "check_prefix",
    "check_ttl",
    "decode_record",
    "decode_value",
    "encode_value",
    "lacking",
    "open_view",
    "parse_json",
    "seal_view",
    "sign",
    "split_key",
    "store_stamp",
    "stream_device",
]
