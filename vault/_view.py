"""A sealed view of what this device reads, so a read with no peer running skips the replay.

Opening the vault replays every stored record into pycrdt documents: right for a peer that runs
for days, too slow for one ``swarm vault get`` (pycrdt's import alone costs more than the whole
answer may). So whoever opens the store directly (the CLI, when no peer runs) leaves behind a
view: every entry it can read, as ``[key, scope, value, expires_at]``, age-encrypted to this
device's own key and authenticated with a key only this device holds (the recipient is public in
the roster: encryption alone would let anyone who can write the home forge a view).

A view answers only while it is exactly current. It names the store's *stamp* (a random value
the store rewrites in every write's own transaction, ``STAMP_KEY`` in its ``meta`` table) and a
``context`` digest the caller gives (what else narrows the reading: the roster and the settings).
Any write, a restored backup, a changed roster or settings, a damaged or forged file: the view
is ignored (``None``), and the caller opens the store the slow way and leaves a new view. It is
derived state: deleting it loses nothing.

Only sqlite3, msgpack and pyrage load here (not the replica): this module is the quick path.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyrage

from homeswarm.wire import pack

from ._model import Entry, check_prefix, split_key

DB_NAME = "vault.db"  # the store's database, in the store's directory
STAMP_KEY = "stamp"  # its meta row that every write replaces
FORMAT = 1
_MAC = 32


def new_stamp() -> bytes:
    return os.urandom(16)


def store_stamp(directory: Path) -> bytes | None:
    """The stamp of the store in ``directory``, read without its lock (None: no store, or none
    written yet). SQLite's write-ahead log gives a reader the last committed write."""
    path = directory / DB_NAME
    if not path.exists():
        return None
    with contextlib.suppress(sqlite3.Error):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (STAMP_KEY,)).fetchone()
        finally:
            db.close()
        return row[0] if row is not None and isinstance(row[0], bytes) else None
    return None


class View:
    """The entries of an opened view, read as ``LocalVault`` reads the store: the same key and
    prefix checks, expiry by this device's wall clock (``clock``), key order. Each key holds one
    entry already, of the most restrictive scope the device reads."""

    def __init__(self, entries: Iterable[Entry], clock: Callable[[], float] | None = None) -> None:
        self._entries = {e.key: e for e in entries}
        self._clock = clock or (lambda: time.time())

    def get(self, key: str) -> Entry | None:
        split_key(key)
        entry = self._entries.get(key)
        return None if entry is None or entry.expired(self._clock()) else entry

    def items(self, prefix: str = "") -> list[Entry]:
        check_prefix(prefix)
        now = self._clock()
        keys = sorted(k for k in self._entries if k.startswith(prefix))
        return [self._entries[k] for k in keys if not self._entries[k].expired(now)]


def seal_view(
    entries: Iterable[Entry], *, stamp: bytes, context: bytes, recipient: str, mac_key: bytes
) -> bytes:
    """The view's bytes: a MAC, then the age ciphertext of the entries with what they hold for."""
    rows = [[e.key, e.scope, e.text, e.expires_at] for e in entries]
    plain = pack([FORMAT, stamp, context, rows])
    sealed: bytes = pyrage.encrypt(plain, [pyrage.x25519.Recipient.from_str(recipient)])
    return _mac(mac_key, sealed) + sealed


def open_view(
    blob: bytes, *, stamp: bytes | None, context: bytes, identity: Any, mac_key: bytes
) -> View | None:
    """The view's entries, if ``blob`` is a view this device made for exactly this
    ``stamp`` and ``context``; else None (never an error: the caller takes the slow way)."""
    if stamp is None or len(blob) <= _MAC:
        return None
    if not hmac.compare_digest(blob[:_MAC], _mac(mac_key, blob[_MAC:])):
        return None
    try:
        import msgpack

        version, made_for, made_in, rows = msgpack.unpackb(pyrage.decrypt(blob[_MAC:], [identity]))
        if (version, made_for, made_in) != (FORMAT, stamp, context):
            return None
        return View(Entry(key, text, scope, at) for key, scope, text, at in rows)
    except (pyrage.DecryptError, ValueError, TypeError, IndexError, msgpack.UnpackException):
        return None


def _mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, key=key, digest_size=_MAC, person=b"swarm-vault-view").digest()
