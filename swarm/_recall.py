"""Recall, the pure part: embedders and the approximate nearest-neighbour index. No trio, no I/O.

- An ``Embedder`` turns texts into unit-length float32 rows (so a dot product is the cosine).
  ``ModelEmbedder`` is the real one (the ``embed`` kernel's all-MiniLM-L6-v2, 384 numbers,
  seconds to load); ``HashEmbedder`` is small, deterministic and instant (feature hashing of the
  words): tests use it, and it is a fallback where the model is not installed.
- A ``RecallIndex`` holds one usearch HNSW index per (scope, collection), so filtering by scope
  or collection is exact and a search merges the per-part answers by score. Each vault key maps
  to a fresh integer label every time it is (re)indexed; ``remove`` drops the label from usearch
  and from the maps, and a search only ever answers labels the maps still hold, so a deleted or
  overwritten entry cannot come back.
- ``diff`` says what to (re)index and what to remove to match the vault's current entries.

The index is derived state: it lives in memory only and is rebuilt from the vault at start-up
(an embedding reveals its text, so it never reaches disk unencrypted).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

RECALLED: tuple[str, ...] = ("facts", "memories")  # the long-term collections recall searches
MAX_K = 100
MAX_QUERY_CHARS = 2000
MAX_DOCUMENT_CHARS = 10_000  # what the model reads of an entry (it truncates far sooner)

Vectors = NDArray[np.float32]


class Embedder(Protocol):
    """Texts -> an ``(n, dimensions)`` float32 array of unit rows."""

    name: str
    dimensions: int
    cheap: bool  # fast enough to run on the event loop (else: a worker thread)

    def embed(self, texts: Sequence[str]) -> Vectors: ...


_WORD = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    """Feature hashing: each lower-cased word (and each pair of neighbouring words) adds +-1 at a
    hashed position; the sum is scaled to unit length. Deterministic across processes (blake2b,
    not ``hash``). Shares words, not meaning: "capital" finds "capital", not "Lisbon"."""

    cheap = True

    def __init__(self, dimensions: int = 256) -> None:
        if dimensions < 2:
            raise ValueError("a hash embedding needs at least 2 dimensions")
        self.dimensions = dimensions
        self.name = f"hash-{dimensions}"

    def _features(self, text: str) -> Iterable[str]:
        words = _WORD.findall(text.lower())
        yield from words
        yield from (f"{a} {b}" for a, b in itertools.pairwise(words))

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
                n = int.from_bytes(digest, "little")
                out[row, (n >> 1) % self.dimensions] += 1.0 if n & 1 else -1.0
        return normalise(out)


class ModelEmbedder:
    """The ``embed`` kernel's model (all-MiniLM-L6-v2), loaded on first use."""

    cheap = False
    name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        from homeswarm.kernels import DIMENSIONS

        self.dimensions = DIMENSIONS

    def embed(self, texts: Sequence[str]) -> Vectors:
        from homeswarm.kernels import embed

        rows: list[list[float]] = []
        for start in range(0, len(texts), 256):
            batch = [t[:MAX_DOCUMENT_CHARS] or " " for t in texts[start : start + 256]]
            rows.extend(embed.fn(batch))
        return normalise(np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dimensions))


def default_embedder() -> Embedder:
    """The model where it can load here, else feature hashing (say which in results)."""
    from homeswarm.kernels import embed

    try:
        if embed.available is None or embed.available():
            return ModelEmbedder()
    except RuntimeError:
        pass
    return HashEmbedder()


def normalise(vectors: NDArray[np.float32]) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (vectors / norms).astype(np.float32)
    return out


def document_text(key: str, text: str) -> str:
    """What is embedded for an entry: its name (words of it) and its value (a string as it is,
    anything else as JSON)."""
    name = key.partition("/")[2]
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    words = " ".join(_WORD.findall(name.replace("_", " ")))
    return f"{words}: {shown}"[:MAX_DOCUMENT_CHARS]


EXPORT_VERSION = 1


class _NotOurs(ValueError):
    """Bytes ``RecallIndex.restore`` will not read (its message says why, in one line)."""


@dataclass(frozen=True, slots=True)
class Doc:
    """An entry as the index sees it."""

    key: str
    scope: str
    text: str  # the value's JSON text

    @property
    def collection(self) -> str:
        return self.key.partition("/")[0]


@dataclass(frozen=True, slots=True)
class Hit:
    key: str
    scope: str
    score: float  # cosine similarity, 1 best
    text: str


@dataclass(frozen=True, slots=True)
class _Held:
    doc: Doc
    label: int


class RecallIndex:
    """Vault entries by meaning: one HNSW index per (scope, collection)."""

    def __init__(
        self,
        dimensions: int,
        *,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
    ) -> None:
        self.dimensions = dimensions
        self._params = (connectivity, expansion_add, expansion_search)
        self._parts: dict[tuple[str, str], object] = {}  # (scope, collection) -> usearch Index
        self._held: dict[str, _Held] = {}  # key -> what is indexed for it
        self._keys: dict[int, str] = {}  # label -> key
        self._next = 0

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        return key in self._held

    def docs(self) -> list[Doc]:
        return [h.doc for h in self._held.values()]

    def export(self, embedder: str) -> bytes:
        """Everything indexed (the entries, and each part's HNSW graph as usearch saves it,
        vectors included) with the name of the ``embedder`` that made the vectors, as bytes
        ``restore`` reads: a cache, to encrypt before it reaches disk (an embedding reveals its
        text, and the texts are in it)."""
        from homeswarm.wire import pack

        held = [[h.doc.key, h.doc.scope, h.doc.text, h.label] for h in self._held.values()]
        parts = [[s, c, bytes(part.save())] for (s, c), part in self._parts.items()]  # type: ignore[attr-defined]
        return pack([EXPORT_VERSION, embedder, self.dimensions, self._next, held, parts])

    @classmethod
    def restore(cls, data: bytes, embedder: str, dimensions: int) -> RecallIndex:
        """An index from ``export``'s bytes made by ``embedder`` at ``dimensions`` (the graphs
        loaded as they were, not built again); ``ValueError`` (one line) for anything else, a
        stale version or another embedder."""
        import msgpack
        from usearch.index import Index

        index = cls(dimensions)
        try:
            version, made_by, dims, next_label, held, parts = msgpack.unpackb(data, raw=False)
            if version != EXPORT_VERSION:
                raise _NotOurs(f"a recall cache of version {version!r}")
            if made_by != embedder or dims != dimensions:
                raise _NotOurs(f"made by {made_by!r} ({dims}), not {embedder!r} ({dimensions})")
            _, expansion_add, expansion_search = index._params
            for scope, collection, graph in parts:
                part: Any = Index.restore(bytes(graph))
                if part is None or part.ndim != dimensions:
                    raise _NotOurs("a graph of another size")
                part.expansion_add, part.expansion_search = expansion_add, expansion_search
                index._parts[(str(scope), str(collection))] = part
            for key, scope, text, label in held:
                doc = Doc(str(key), str(scope), str(text))
                part = index._parts[(doc.scope, doc.collection)]
                if not 0 <= int(label) < int(next_label) or int(label) not in part:
                    raise _NotOurs("an entry its graph does not hold")
                index._held[doc.key] = _Held(doc, int(label))
                index._keys[int(label)] = doc.key
            if sum(len(p) for p in index._parts.values()) != len(index._held):  # type: ignore[misc,arg-type]
                raise _NotOurs("graphs that hold more than the entries")
            index._next = int(next_label)
        except _NotOurs:
            raise
        except Exception as exc:  # msgpack's zoo, usearch's, rows that are not what we wrote
            raise _NotOurs(f"not a recall cache ({type(exc).__name__})") from None
        return index

    def _part(self, scope: str, collection: str) -> object:
        part = self._parts.get((scope, collection))
        if part is None:
            from usearch.index import Index

            connectivity, expansion_add, expansion_search = self._params
            part = Index(
                ndim=self.dimensions,
                metric="cos",
                dtype="f32",
                connectivity=connectivity,
                expansion_add=expansion_add,
                expansion_search=expansion_search,
            )
            self._parts[(scope, collection)] = part
        return part

    def diff(self, current: Iterable[Doc]) -> tuple[list[Doc], list[str]]:
        """``(to_index, to_remove)`` that make the index hold exactly ``current``."""
        now = {d.key: d for d in current}
        fresh = [d for key, d in now.items() if (h := self._held.get(key)) is None or h.doc != d]
        gone = [key for key in self._held if key not in now]
        return fresh, gone

    def put(self, docs: Sequence[Doc], vectors: Vectors) -> None:
        """Index ``docs`` (replacing what was indexed for their keys) with their vectors."""
        if len(docs) != len(vectors):
            raise ValueError(f"{len(docs)} entries but {len(vectors)} vectors")
        if not docs:
            return
        if vectors.shape[1] != self.dimensions:
            raise ValueError(f"vectors of {vectors.shape[1]} numbers, expected {self.dimensions}")
        self.remove(d.key for d in docs)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, doc in enumerate(docs):
            groups.setdefault((doc.scope, doc.collection), []).append(i)
        for (scope, collection), rows in groups.items():
            labels = np.arange(self._next, self._next + len(rows), dtype=np.uint64)
            self._next += len(rows)
            self._part(scope, collection).add(labels, vectors[rows])  # type: ignore[attr-defined]
            for row, label in zip(rows, labels.tolist(), strict=True):
                doc = docs[row]
                self._held[doc.key] = _Held(doc, label)
                self._keys[label] = doc.key

    def remove(self, keys: Iterable[str]) -> int:
        """Forget ``keys`` (those not indexed are ignored); how many were."""
        removed = 0
        for key in list(keys):
            held = self._held.pop(key, None)
            if held is None:
                continue
            del self._keys[held.label]
            part = self._parts[(held.doc.scope, held.doc.collection)]
            part.remove(held.label)  # type: ignore[attr-defined]
            removed += 1
        return removed

    def search(
        self,
        vector: Vectors,
        k: int = 10,
        *,
        scopes: Iterable[str] | None = None,
        collections: Iterable[str] | None = None,
    ) -> list[Hit]:
        """The ``k`` entries nearest ``vector`` (best first), only of ``scopes`` and
        ``collections`` if given."""
        if k < 1:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        wanted_scopes = None if scopes is None else set(scopes)
        wanted_collections = None if collections is None else set(collections)
        hits: list[Hit] = []
        for (scope, collection), part in self._parts.items():
            if wanted_scopes is not None and scope not in wanted_scopes:
                continue
            if wanted_collections is not None and collection not in wanted_collections:
                continue
            size = len(part)  # type: ignore[arg-type]
            if not size:
                continue
            found = part.search(query, min(k, size))  # type: ignore[attr-defined]
            for label, distance in zip(found.keys.tolist(), found.distances.tolist(), strict=True):
                key = self._keys.get(int(label))
                if key is None:  # not held any more: never answered
                    continue
                doc = self._held[key].doc
                hits.append(Hit(key, doc.scope, round(1.0 - float(distance), 6), doc.text))
        hits.sort(key=lambda h: (-h.score, h.key))
        return hits[:k]


def exact_search(
    docs: Sequence[Doc], vectors: Vectors, query: Vectors, k: int
) -> list[tuple[str, float]]:
    """Brute force (the reference for tests and the benchmark): ``(key, cosine)`` best first."""
    if not docs:
        return []
    scores = vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(docs[i].key, float(scores[i])) for i in order.tolist()]


__all__ = [
    "MAX_K",
    "MAX_QUERY_CHARS",
    "RECALLED",
    "Doc",
    "Embedder",
    "HashEmbedder",
    "Hit",
    "ModelEmbedder",
    "RecallIndex",
    "default_embedder",
    "document_text",
    "exact_search",
    "normalise",
]
