"""Test kit for learning tasks: a small ``intents`` data set and an embedder that needs no model.

``examples(per_label)`` are ``(vault key, label, text)`` for four intents from templates and a
fixed seed (``EXAMPLES``: 30 each); ``bag_of_words`` embeds a text as its hashed words (unit
length, 384 numbers), which separates these intents well and costs microseconds;
``tiny_intents`` is the ``intents`` task with it (a task factory for
``LearnService(task_factory=...)``).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np

from ._intents import Intents
from ._task import get_task

_WORDS = {
    "lights_on": ["turn on the lights", "lights on", "switch the lamp on", "make it bright"],
    "weather": ["what is the weather", "will it rain", "forecast for tomorrow", "is it cold out"],
    "timer": ["set a timer", "remind me in ten minutes", "start a countdown", "timer for pasta"],
    "music": ["play some music", "put on a song", "play jazz", "next track please"],
}
_FILLER = ["please", "now", "thanks", "hey", "could you", "today", "quickly", "again"]


def examples(per_label: int = 30, seed: int = 7) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    out = []
    for label, phrases in _WORDS.items():
        for i in range(per_label):
            words = [rng.choice(phrases), rng.choice(_FILLER)]
            rng.shuffle(words)
            out.append((f"intents/{label}-{i:03d}", label, " ".join(words)))
    return out


EXAMPLES: list[tuple[str, str, str]] = examples()


def bag_of_words(texts: list[str]) -> np.ndarray:
    """Each text as its words hashed into 384 buckets, unit length."""
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, hashlib.sha256(word.encode()).digest()[0] + 128 * (len(word) % 2)] += 1.0
        norm = float(np.linalg.norm(out[row]))
        if norm:
            out[row] /= norm
    return out


def tiny_intents(name: str = "intents") -> Any:
    """A task factory: ``intents`` with the bag-of-words embedder, any other task as usual."""
    if name == "intents":
        return Intents(embedder=bag_of_words)
    return get_task(name)
