"""Where a replica's records live between runs: SQLite on a device, memory in the simulator.

Both hold the same thing: every record the replica holds, as its signed wire bytes (updates by
``(scope, origin, seq)``, with their key epoch beside them; snapshots and keyring records by
id; the other sides of forks, kept as evidence, by id), and a cached copy of the directory.
There is nothing else: no secret, no plaintext (the epoch secrets are inside seals, and a replica
decrypts what it needs when it is restored). Nothing in a store says which stream its replica
writes under: each opening writes under a new one (``_replica``), so a copy of the store (a
backup restored, a wiped directory) never reuses a sequence number.

``apply(changes)`` stores one replica step: every added record and every drop, in one
transaction. When it returns the step survives a crash of the process (SQLite: WAL,
``synchronous=NORMAL``: the transaction is in the write-ahead log, in the operating system's
hands); when it raises ``StorageFailure`` nothing of the step is stored. ``flush()`` then makes
every step stored so far survive a power cut too (an fsync of the log, on a disk that honours
it). It blocks (``flush_blocks``): the trio driver runs it in a worker thread, so the peer's
other work (membership probes) never waits behind a disk; ``apply`` stays on the trio thread, so
steps reach the store in the order the replica made them. A caller acknowledges a write only
after ``apply`` and ``flush`` returned, and groups writes so that one fsync carries many.

``SqliteStore`` takes a directory (``HOME/vault``, mode 0700) with ``vault.db`` (0600, and its
``-wal``/``-shm`` companions, which SQLite creates with the same mode) and ``lock``: an exclusive
``flock`` held while the store is open, so two processes never write one vault (``VaultLocked``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgpack

from homeswarm.wire import pack

from ._errors import RejectedRecord, StorageFailure, VaultLocked
from ._records import (
    KeyRecord,
    Snapshot,
    Update,
    decode_record,
    encode_record,
)
from ._replica import Changes, Directory
from ._view import DB_NAME, STAMP_KEY, new_stamp

FORMAT = 1
LOCK_NAME = "lock"


@dataclass
class Stored:
    keys: list[KeyRecord] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    evidence: list[Update] = field(default_factory=list)
    directory: Directory | None = None
    damaged: int = 0  # rows that did not decode (skipped)


class Store(Protocol):
    flush_blocks: bool  # whether flush() waits for a disk (run it in a thread)

    def load(self) -> Stored: ...

    def apply(self, changes: Changes) -> None: ...

    def flush(self) -> None: ...

    def save_directory(self, directory: Directory) -> None: ...

    def size(self) -> int: ...

    def close(self) -> None: ...


class MemoryStore:
    """Records as bytes in dictionaries: the simulator's disk (it survives a simulated crash of
    the replica that uses it, as a disk would)."""

    flush_blocks = False

    def __init__(self) -> None:
        self.evidence: dict[bytes, bytes] = {}
        self.updates: dict[tuple[str, str, int], bytes] = {}
        self.snapshots: dict[bytes, tuple[str, bytes]] = {}
        self.keys: dict[bytes, bytes] = {}
        self.directory: bytes | None = None
        self.fail_next = False  # a test's hook: the next apply fails, storing nothing

    def load(self) -> Stored:
        out = Stored()
        for data in self.keys.values():
            _add(out, data)
        for _, data in self.snapshots.values():
            _add(out, data)
        for data in self.updates.values():
            _add(out, data)
        for data in self.evidence.values():
            _add(out, data, evidence=True)
        if self.directory is not None:
            out.directory = Directory.from_wire(msgpack.unpackb(self.directory, raw=False))
        return out

    def apply(self, changes: Changes) -> None:
        if self.fail_next:
            self.fail_next = False
            raise StorageFailure("the vault store failed (simulated)")
        for record in changes.added:
            data = encode_record(record)
            if isinstance(record, Update):
                self.updates[record.scope, record.origin, record.seq] = data
            elif isinstance(record, Snapshot):
                self.snapshots[record.id] = (record.scope, data)
            else:
                self.keys[record.id] = data
        for update in changes.evidence:
            data = encode_record(update)
            self.evidence[_evidence_id(data)] = data
        for scope, origin, first, last in changes.dropped_updates:
            for key in [
                k for k in self.updates if k[:2] == (scope, origin) and first <= k[2] <= last
            ]:
                del self.updates[key]
        for snapshot_id in changes.dropped_snapshots:
            self.snapshots.pop(snapshot_id, None)

    def save_directory(self, directory: Directory) -> None:
        self.directory = pack(directory.to_wire())

    def flush(self) -> None:
        pass

    def size(self) -> int:
        return (
            sum(map(len, self.updates.values()))
            + sum(map(len, self.evidence.values()))
            + sum(len(d) for _, d in self.snapshots.values())
            + sum(map(len, self.keys.values()))
        )

    def blobs(self) -> list[bytes]:
        """Everything stored, for tests that scan it."""
        return [
            *self.updates.values(),
            *self.evidence.values(),
            *(d for _, d in self.snapshots.values()),
            *self.keys.values(),
            *([self.directory] if self.directory else []),
        ]

    def close(self) -> None:
        pass


def _evidence_id(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:16]


def _add(out: Stored, data: bytes, *, evidence: bool = False) -> None:
    try:
        record = decode_record(data)
    except RejectedRecord:
        out.damaged += 1
        return
    if evidence:
        if isinstance(record, Update):
            out.evidence.append(record)
        else:
            out.damaged += 1
    elif isinstance(record, Update):
        out.updates.append(record)
    elif isinstance(record, Snapshot):
        out.snapshots.append(record)
    else:
        out.keys.append(record)


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS updates (scope TEXT NOT NULL, origin TEXT NOT NULL,"
    " seq INTEGER NOT NULL, epoch INTEGER NOT NULL, epoch_creator TEXT NOT NULL,"
    " data BLOB NOT NULL, PRIMARY KEY (scope, origin, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS snapshots (id BLOB PRIMARY KEY, scope TEXT NOT NULL,"
    " data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS keyring (id BLOB PRIMARY KEY, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS evidence (id BLOB PRIMARY KEY, data BLOB NOT NULL)",
]


class SqliteStore:
    """A replica's records in ``DIR/vault.db``; see the module doc."""

    flush_blocks = True

    def __init__(self, directory: Path, *, swarm: str, device: str) -> None:
        self.path = directory / DB_NAME
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock = os.open(
                directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise StorageFailure(f"cannot open the vault in {directory}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise VaultLocked(f"the vault in {directory} is open in another process") from None
        try:
            self._db = self._open(swarm, device)
        except BaseException:
            os.close(self._lock)
            raise

    def _open(self, swarm: str, device: str) -> sqlite3.Connection:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StorageFailure(f"cannot open {self.path}: {_why(exc)}") from None
        try:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageFailure(f"{self.path}: SQLite refused write-ahead logging")
            db.execute("PRAGMA synchronous = NORMAL")  # fsync: flush(), and checkpoints
            db.execute("PRAGMA journal_size_limit = 1048576")  # the WAL shrinks back after use
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                db.execute(statement)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                meta = {"format": FORMAT, "swarm": swarm, "device": device}
                db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
                db.execute("INSERT INTO meta VALUES (?, ?)", (STAMP_KEY, new_stamp()))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.close()
            raise StorageFailure(f"{self.path}: {_why(exc)}") from None
        if (meta.get("swarm"), meta.get("device")) != (swarm, device):
            db.close()
            raise StorageFailure(f"{self.path} is the vault of another device or swarm")
        if meta.get("format") != FORMAT:
            db.close()
            raise StorageFailure(f"{self.path}: unknown format {meta.get('format')!r}")
        return db

    def load(self) -> Stored:
        out = Stored()
        try:
            for (data,) in self._db.execute("SELECT data FROM keyring"):
                _add(out, data)
            for (data,) in self._db.execute("SELECT data FROM snapshots"):
                _add(out, data)
            for (data,) in self._db.execute("SELECT data FROM updates ORDER BY scope, origin, seq"):
                _add(out, data)
            for (data,) in self._db.execute("SELECT data FROM evidence"):
                _add(out, data, evidence=True)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'directory'").fetchone()
        except sqlite3.Error as exc:
            raise StorageFailure(f"cannot read {self.path}: {_why(exc)}") from None
        if row is not None:
            with contextlib.suppress(ValueError, msgpack.UnpackException):
                out.directory = Directory.from_wire(msgpack.unpackb(row[0], raw=False))
        return out

    def apply(self, changes: Changes) -> None:
        if not changes:
            return
        updates, snapshots, keys = [], [], []
        for record in changes.added:
            data = encode_record(record)
            if isinstance(record, Update):
                updates.append(
                    (record.scope, record.origin, record.seq, record.epoch, record.creator, data)
                )
            elif isinstance(record, Snapshot):
                snapshots.append((record.id, record.scope, data))
            else:
                keys.append((record.id, data))
        evidence = [(_evidence_id(d), d) for d in map(encode_record, changes.evidence)]
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR IGNORE INTO keyring VALUES (?, ?)", keys)
                db.executemany("INSERT OR IGNORE INTO snapshots VALUES (?, ?, ?)", snapshots)
                db.executemany("INSERT OR IGNORE INTO updates VALUES (?, ?, ?, ?, ?, ?)", updates)
                db.executemany("INSERT OR IGNORE INTO evidence VALUES (?, ?)", evidence)
                db.executemany(
                    "DELETE FROM updates WHERE scope = ? AND origin = ? AND seq BETWEEN ? AND ?",
                    changes.dropped_updates,
                )
                db.executemany(
                    "DELETE FROM snapshots WHERE id = ?", [(i,) for i in changes.dropped_snapshots]
                )
                # a view of the store (``_view``) holds for this stamp only: any write ends it
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (STAMP_KEY, new_stamp()))
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            if changes.dropped_updates or changes.dropped_snapshots:
                db.execute("PRAGMA incremental_vacuum")
        except sqlite3.Error as exc:
            raise StorageFailure(f"cannot write {self.path}: {_why(exc)}") from None

    def flush(self) -> None:
        """fsync the write-ahead log (and the directory, which holds its name)."""
        try:
            for path in (f"{self.path}-wal", self.path.parent):
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except FileNotFoundError:
            return  # no log: everything is in the database, which checkpoints fsync
        except OSError as exc:
            raise StorageFailure(f"cannot flush {self.path}: {_why(exc)}") from None

    def save_directory(self, directory: Directory) -> None:
        data = pack(directory.to_wire())
        try:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('directory', ?)", (data,))
        except sqlite3.Error as exc:
            raise StorageFailure(f"cannot write {self.path}: {_why(exc)}") from None

    def size(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        with contextlib.suppress(OSError):
            os.close(self._lock)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__
