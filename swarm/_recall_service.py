"""Recall as a service of the peer: an index of what this device may read, kept current.

The service follows the vault service's node (``VaultService.node``): whenever the node's
``version`` moves (a local write committed, records from a peer stored, a reload from the
store), it diffs the long-term collections (``facts``, ``memories``) of every scope this device
reads against what ``swarm._recall.RecallIndex`` holds, embeds what is new or changed, and
removes what is gone. It looks every ``POLL`` seconds and before each query, so a query sees
every write acknowledged before it (waiting at most ``QUERY_WAIT``). Embedding runs in batches
(in a worker thread unless the embedder is cheap), so a start-up rebuild of a large vault never
blocks the peer, and queries meanwhile answer from what is indexed so far (``pending`` says
how much is not yet).

The index is built at the first query (a peer whose person never recalls anything never loads
the model nor spends a phone's battery embedding), then kept current in the background.

Its vectors outlive a restart: after a change, at most every ``SAVE_EVERY`` seconds and when the
peer stops, the index (entries, texts and vectors, with the embedder's name) is written to
``HOME/recall.age``, age-encrypted to this device's own key (an embedding reveals its text, and
the texts are in it; 0600, replaced atomically). At the next start the index comes back from it,
and only what changed in the vault since is embedded again; a cache of another embedder, or one
that does not decrypt or parse, is ignored (one warning) and the index is built afresh.

Before an answer leaves, each hit is checked against the vault as it is now: an entry deleted,
moved or overwritten since it was indexed is never answered.

Control requests (this device's CLI): ``recall.query`` ``{"query", "k", "scope", "collection"}``
-> ``{"results": [{"key", "scope", "score", "value"}], "device", "executor", "embedder",
"indexed", "pending"}`` (``value`` is the entry's JSON text), and ``recall.status``. With
``"on": DEVICE`` (a name or id) the query goes to that member (``recall.query`` over the
transport), which answers only from the scopes both it and the ASKER's certificate may read:
a phone may ask the server, and never learns a private entry that way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyrage
import trio

from homeswarm.transports import (
    Connection,
    InvalidArgument,
    ProtocolViolation,
    RemoteError,
    TransportError,
)
from homeswarm.vault import SCOPES, VaultError, VaultNode

from ._home import write_atomically
from ._recall import (
    MAX_K,
    MAX_QUERY_CHARS,
    RECALLED,
    Doc,
    Embedder,
    RecallIndex,
    Vectors,
    default_embedder,
    document_text,
)
from ._service import Service

if TYPE_CHECKING:
    from ._peer import Peer
    from ._vault_service import VaultService

log = logging.getLogger("swarm.recall")

POLL = 1.0  # seconds between checks of the vault's version
SAVE_EVERY = 600.0  # seconds between writes of the encrypted cache, at most
CACHE_FILE = "recall.age"  # HOME/recall.age
BATCH = 256  # entries embedded at once
ASK_TIMEOUT = 30.0  # seconds to wait for another device's answer
QUERY_WAIT = 20.0  # seconds a query waits for the index to catch up (then: what it holds)


class RecallService(Service):
    name = "recall"

    def __init__(self, vault: VaultService, embedder: Embedder | None = None) -> None:
        self.vault = vault
        self._embedder = embedder  # None: the model (else feature hashing), made on first use
        self.active = False  # the index is built at the first query, then kept current
        self.index: RecallIndex | None = None
        self._node: VaultNode | None = None
        self._seen = -1  # the node version the index matches
        self._lock = trio.Lock()
        self.pending = 0  # entries waiting to be embedded
        self.rebuild_s: float | None = None  # the first full build after start-up
        self.device = vault.identity.device_id
        self._peer: Peer | None = None
        self._dirty = False  # the index changed since the cache was written
        self._saved_at = -float("inf")
        self.restored = 0  # entries the index took from the cache at start-up

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    @embedder.setter
    def embedder(self, embedder: Embedder) -> None:
        """Use ``embedder`` from now on (the index starts over)."""
        self._embedder, self._node, self.index = embedder, None, None

    # ---- running -----------------------------------------------------------------------------

    async def run(self, peer: Peer, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._peer = peer
        self.active = self.active or (self._cache_path() is not None and self._cache_exists())
        task_status.started()
        try:
            while True:
                await trio.sleep(POLL)
                if self.active:
                    await self.refresh()
                    if self._dirty and trio.current_time() - self._saved_at >= SAVE_EVERY:
                        await self._save()
        finally:
            if self._dirty:
                with trio.CancelScope(shield=True):
                    await self._save()

    # ---- the encrypted cache -----------------------------------------------------------------

    def _cache_path(self) -> Path | None:
        peer = self._peer
        persist = peer is not None and peer.options.persist
        return self.vault.identity.home / CACHE_FILE if persist else None

    def _cache_exists(self) -> bool:
        path = self._cache_path()
        return path is not None and path.exists()

    async def _save(self) -> None:
        path, index = self._cache_path(), self.index
        if path is None or index is None:
            return
        self._dirty, self._saved_at = False, trio.current_time()
        recipient = self.vault.identity.age_identity.to_public()
        name = self.embedder.name

        def write() -> None:
            write_atomically(path, pyrage.encrypt(index.export(name), [recipient]))

        try:
            await trio.to_thread.run_sync(write)
        except OSError as exc:
            log.warning("recall: cannot write %s (%s)", path, exc.strerror)

    def _restore(self) -> RecallIndex | None:
        path = self._cache_path()
        if path is None or not path.exists():
            return None
        embedder = self.embedder
        try:
            data = pyrage.decrypt(path.read_bytes(), [self.vault.identity.age_identity])
            return RecallIndex.restore(data, embedder.name, embedder.dimensions)
        except (OSError, ValueError, pyrage.DecryptError) as exc:
            log.warning("recall: the cache %s is not usable (%s): building afresh", path, exc)
            return None

    async def refresh(self) -> None:
        """Make the index match the vault now (if another refresh runs, wait for it)."""
        async with self._lock:
            node = self.vault.node
            if node is None:
                return
            if node is not self._node:  # the vault (re)opened: start over
                self._node, self._seen, self.index = node, -1, None
            while self._seen != node.version and node is self.vault.node:
                await self._catch_up(node)

    async def _catch_up(self, node: VaultNode) -> None:
        version = node.version
        started = trio.current_time()
        first = self.index is None
        embedder = self.embedder
        if self.index is None:
            cached = await trio.to_thread.run_sync(self._restore)
            self.restored = len(cached) if cached is not None else 0
            self.index = cached or RecallIndex(embedder.dimensions)
        index = self.index
        current = [Doc(e.key, e.scope, e.text) for c in RECALLED for e in node.items(c + "/")]
        fresh, gone = index.diff(current)
        self._dirty = self._dirty or bool(fresh or gone)
        index.remove(gone)
        self.pending = len(fresh)
        for start in range(0, len(fresh), BATCH):
            batch = fresh[start : start + BATCH]
            vectors = await self._embed([document_text(d.key, d.text) for d in batch])
            index.put(batch, vectors)
            self.pending -= len(batch)
            if node is not self.vault.node:
                return  # reopened meanwhile: the next refresh starts over
        self._seen = version
        if first:
            self.rebuild_s = trio.current_time() - started
            log.info(
                "recall: %d entries indexed in %.2f s (%s)",
                len(index),
                self.rebuild_s,
                embedder.name,
            )

    async def _embed(self, texts: Sequence[str]) -> Vectors:
        embedder = self.embedder
        if embedder.cheap:
            await trio.lowlevel.checkpoint()
            return embedder.embed(texts)
        return await trio.to_thread.run_sync(embedder.embed, texts)

    # ---- requests ----------------------------------------------------------------------------

    async def control(self, op: str, args: dict[str, Any]) -> Any:
        if op == "query":
            on = args.get("on")
            if on is not None and not isinstance(on, str):
                raise InvalidArgument("recall: on is a device name or id")
            query = _query_args(args)
            device = None if on is None else self._device_named(on)
            if device is None:
                return await self.query(**query)
            return await self._ask(device, query)
        if op == "status":
            return self.section()
        raise InvalidArgument(f"unknown request recall.{op}")

    async def handle(self, conn: Connection, op: str, body: dict[str, Any]) -> Any:
        """A member asks this device (a phone asking the server): answered only from the scopes
        its certificate allows it to read."""
        if op != "query":
            raise ProtocolViolation(f"unknown operation recall.{op[:20]!r}")
        try:
            query = _query_args(body)
        except InvalidArgument as exc:
            raise ProtocolViolation(str(exc)) from None
        peer = self._peer
        cert = None if peer is None else peer.roster.certificate(conn.peer_id)
        conflicted = peer is not None and conn.peer_id in peer.roster.conflicted()
        allowed = frozenset() if cert is None or conflicted else cert.readable()
        return await self.query(**query, allowed=allowed, asker="the asking device")

    def _device_named(self, on: str) -> str | None:
        """The device ``--on`` names (None: this one); ``InvalidArgument`` if none is."""
        peer = self._peer
        if peer is None:
            raise VaultError("the peer is still starting; try again in a moment")
        cert = peer.roster.find(on)
        if cert is None or not peer.roster.admits(cert.device):
            raise InvalidArgument(f"recall: no device {on!r} in this swarm")
        return None if cert.device == self.device else cert.device

    async def _ask(self, device: str, query: dict[str, Any]) -> dict[str, Any]:
        peer = self._peer
        assert peer is not None
        transport = peer.transport
        assert transport is not None
        try:
            open_ = transport.connections(device)
            conn = open_[0] if open_ else await transport.dial(device, peer.addrs_of(device))
            reply = await conn.request({"op": "recall.query", **query}, timeout=ASK_TIMEOUT)
        except RemoteError as exc:
            raise VaultError(f"{device[-8:]} answered: {exc}") from None
        except TransportError as exc:
            raise VaultError(f"cannot reach {device[-8:]}: {exc}") from None
        return _checked_reply(reply, device)

    async def query(
        self,
        query: str,
        k: int = 10,
        scope: str | None = None,
        collection: str | None = None,
        *,
        allowed: frozenset[str] | None = None,
        asker: str = "this device",
    ) -> dict[str, Any]:
        """Search for ``query``; only scopes both this device and ``allowed`` (None: any) read."""
        node = self.vault.node
        if node is None:
            raise VaultError("the vault is still opening; try again in a moment")
        readable = [s for s in SCOPES if s in node.replica.readable]
        if allowed is not None:
            readable = [s for s in readable if s in allowed]
        if not readable:
            raise VaultError(f"{asker} may read no vault entries here to recall")
        if scope is not None and scope not in readable:
            raise VaultError(
                f"{asker} may not read {scope} entries here (only: {', '.join(readable)})"
            )
        self.active = True
        with trio.move_on_after(QUERY_WAIT):
            await self.refresh()  # every write acknowledged before the query is seen
        index = self.index
        (vector,) = await self._embed([query])
        hits = (
            []
            if index is None
            else index.search(
                vector,
                k,
                scopes=[scope] if scope is not None else readable,
                collections=None if collection is None else [collection],
            )
        )
        results = []
        for hit in hits:
            entry = node.get(hit.key)
            if entry is None or entry.scope != hit.scope or entry.text != hit.text:
                continue  # changed since it was indexed: never answered
            results.append(
                {"key": hit.key, "scope": hit.scope, "score": hit.score, "value": hit.text}
            )
        return {
            "results": results,
            "device": self.device,
            "executor": "inline",
            "embedder": self.embedder.name,
            "indexed": 0 if index is None else len(index),
            "pending": self.pending,
        }

    def section(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "embedder": None if self._embedder is None else self._embedder.name,
            "indexed": 0 if self.index is None else len(self.index),
            "pending": self.pending,
            "rebuild_s": None if self.rebuild_s is None else round(self.rebuild_s, 3),
            "restored": self.restored,  # entries the index took from its cache at start-up
        }


def _checked_reply(reply: Any, device: str) -> dict[str, Any]:
    """Another device's answer, as far as this one relies on it."""
    try:
        results = reply["results"]
        ok = reply["device"] == device and isinstance(results, list)
        ok = ok and all(
            isinstance(r["key"], str)
            and r["scope"] in SCOPES
            and isinstance(r["score"], float | int)
            and isinstance(r["value"], str)
            for r in results
        )
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise VaultError(f"{device[-8:]} sent a malformed recall answer")
    return dict(reply)


def _query_args(args: dict[str, Any]) -> dict[str, Any]:
    query = args.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InvalidArgument("recall: the query is a non-empty string")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidArgument(f"recall: the query is over {MAX_QUERY_CHARS} characters")
    k = args.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidArgument(f"recall: k is a whole number from 1 to {MAX_K}")
    scope = args.get("scope")
    if scope is not None and scope not in SCOPES:
        raise InvalidArgument(f"recall: scope is one of {', '.join(SCOPES)}")
    collection = args.get("collection")
    if collection is not None and collection not in RECALLED:
        raise InvalidArgument(f"recall: collection is one of {', '.join(RECALLED)}")
    return {"query": query, "k": k, "scope": scope, "collection": collection}


__all__ = ["RecallService"]
