"""The encrypted CRDT vault (DESIGN.md, "The vault"): facts, memories, context and questions,
replicated among one person's devices with no server.

Layers, each in its own module, lowest first:

- ``_model``: keys (``COLLECTION/NAME``), scopes, values and their limits;
- ``_records``: the signed records (updates, snapshots, epochs, seals) and their wire form;
- ``_keys``: epochs and seals: one age key per scope and epoch, sealed to each allowed device;
- ``_replica``: ``Replica``, the pure core (documents, logs, checks, compaction);
- ``_sync``: anti-entropy messages and ``Session``, sans I/O;
- ``_store``: ``SqliteStore`` (a device) and ``MemoryStore`` (the simulator);
- ``_node``: ``VaultNode``, the thin trio driver (group commit, sync with peers), and
  ``LocalVault`` (the store opened directly, without a running peer).

``vault.testing`` is the test kit. This package never imports ``swarm``.
"""

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
    SCOPES,
    check_prefix,
    decode_value,
    encode_value,
    parse_json,
    split_key,
)
from ._node import Links, LocalVault, NodeSettings, TransportLinks, VaultNode
from ._records import Epoch, Seal, Snapshot, Update, decode_record, sign, stream_device
from ._replica import Access, Changes, Directory, Entry, Rejection, Replica, Vectors
from ._store import MemoryStore, SqliteStore, Store
from ._sync import Session, answer_push, answer_sync, lacking

__all__ = [
    "COLLECTIONS",
    "DEFAULT_SCOPE",
    "MAX_VALUE_BYTES",
    "SCOPES",
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
    "answer_push",
    "answer_sync",
    "check_prefix",
    "decode_record",
    "decode_value",
    "encode_value",
    "lacking",
    "parse_json",
    "sign",
    "split_key",
    "stream_device",
]
