"""Gossip averaging: no coordinator at all, the fallback and the baseline.

Every round each device takes one local DP-SGD step on its own records (the noise added on the
device, so its records are protected from everyone, but the noise is scaled to its own small
batch), then the live devices pair up at random and each pair averages its models (push-pull).
The released model is the average of the devices' models. Each device's ledger pays for each step
exactly as in the coordinated modes, and a device out of budget only averages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from ._ledger import Ledger
from ._messages import params_bytes


class LocalTrainer(Protocol):
    def dp_step(
        self,
        params: np.ndarray,
        *,
        sample_rate: float,
        clip: float,
        noise_multiplier: float,
        lr: float,
        rng: np.random.Generator,
    ) -> np.ndarray: ...


class Gossip:
    def __init__(
        self,
        trainers: Mapping[str, LocalTrainer],
        ledgers: Mapping[str, Ledger],
        rngs: Mapping[str, np.random.Generator],
        *,
        sample_rate: float,
        clip: float,
        noise_multiplier: float,
        lr: float,
        params: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        self.trainers = dict(trainers)
        self.ledgers = dict(ledgers)
        self.rngs = dict(rngs)
        self.sample_rate, self.clip, self.noise_multiplier, self.lr = (
            sample_rate, clip, noise_multiplier, lr
        )  # fmt: skip
        self.models = {d: np.array(params, dtype=np.float64) for d in self.trainers}
        self.rng = rng
        self.live = set(self.trainers)

    def run_round(self) -> dict[str, int]:
        """One local step everywhere, then a pairwise averaging; bytes moved per device."""
        for device in sorted(self.live):
            ledger = self.ledgers[device]
            if not ledger.affordable(self.noise_multiplier, self.sample_rate):
                continue
            ledger.spend(self.noise_multiplier, self.sample_rate)
            self.models[device] = self.trainers[device].dp_step(
                self.models[device],
                sample_rate=self.sample_rate,
                clip=self.clip,
                noise_multiplier=self.noise_multiplier,
                lr=self.lr,
                rng=self.rngs[device],
            )
        moved = dict.fromkeys(self.trainers, 0)
        order = [str(d) for d in self.rng.permutation(sorted(self.live))]
        for a, b in zip(order[::2], order[1::2], strict=False):
            mean = (self.models[a] + self.models[b]) / 2
            self.models[a] = mean
            self.models[b] = mean.copy()
            size = 2 * len(params_bytes(mean))  # each sends its model to the other
            moved[a] += size
            moved[b] += size
        return moved

    def consensus(self) -> np.ndarray:
        models = [self.models[d] for d in sorted(self.live)]
        mean: np.ndarray = np.mean(models, axis=0)
        return mean
