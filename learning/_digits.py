"""``digits``: scikit-learn's 8x8 handwritten digits, dealt across devices with a label skew.

1797 images, 10 classes. A seeded 20 % stratified held-out test set; the rest is split across the
devices by ``dirichlet_split``. Features are pixel intensities scaled to [0, 1]. Record ids are
``digits/<row>``, so a record's id is the same wherever it is replicated.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._records import Records, Split, dirichlet_split

TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    """The images and labels. scikit-learn's ``load_digits`` reads one CSV file that ships in the
    package; importing scikit-learn takes seconds, so the file is read directly when it is there
    (rows: 64 pixel intensities 0..16, then the label)."""
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            data, target = table[:, :-1], table[:, -1]
            break
    else:
        from sklearn.datasets import load_digits  # type: ignore[import-untyped]

        bunch = load_digits()
        data, target = bunch.data, bunch.target
    return (data / 16.0).astype(np.float32), target.astype(np.int64)


class Digits:
    name = "digits"

    def __init__(self, hidden: int = 0) -> None:
        self.hidden = hidden  # 0: multinomial logistic regression

    def model(self) -> Any:
        from torch import nn

        if self.hidden:
            return nn.Sequential(nn.Linear(64, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 10))
        return nn.Linear(64, 10)

    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        return _load()

    def split(self, devices: list[str], *, alpha: float, seed: int) -> Split:
        x, y = self._data()
        rng = np.random.default_rng(seed)
        test_rows: list[int] = []
        for label in range(10):
            rows = np.flatnonzero(y == label)
            test_rows += rng.choice(rows, round(len(rows) * TEST_FRACTION), replace=False).tolist()
        test = np.sort(np.asarray(test_rows))
        train = np.setdiff1d(np.arange(len(y)), test)
        parts = dirichlet_split(y[train], len(devices), alpha, seed)
        held = {}
        for device, part in zip(devices, parts, strict=True):
            rows = train[part]
            held[device] = Records(tuple(f"digits/{r}" for r in rows), x[rows], y[rows])
        return Split(held, Records(tuple(f"digits/{r}" for r in test), x[test], y[test]))

    def evaluate(self, predict: Callable[[Any], Any], test: Records) -> float:
        predicted = np.asarray(predict(test.x))
        return float((predicted == test.y).mean())
