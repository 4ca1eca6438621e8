"""The torch side: per-sample clipped gradients with Opacus, local steps, evaluation.

Imported only when a device trains (``homeswarm.learning`` itself loads no torch). Parameters
travel as one flat float vector; ``TorchTrainer`` loads a vector into its model, computes, and
returns a vector. Per-sample gradients come from Opacus's ``GradSampleModule``; clipping, Poisson
sampling and noise are the DP-SGD recipe (Abadi et al. 2016) that Opacus's ``DPOptimizer``
applies, split so that the noise can be added where the trust model says.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from opacus import GradSampleModule  # type: ignore[import-untyped]
from torch import nn

from homeswarm.kernels import clipped_sum, model_layers

from ._records import Records, poisson


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's note that Opacus's hooks fire with inputs that need no gradient."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


def flat(module: nn.Module) -> np.ndarray:
    return nn.utils.parameters_to_vector(module.parameters()).detach().double().numpy()


def load(module: nn.Module, params: np.ndarray) -> None:
    vector = torch.as_tensor(np.asarray(params), dtype=torch.float32)
    nn.utils.vector_to_parameters(vector, module.parameters())


class TorchTrainer:
    """One device's records and a copy of the task's model."""

    def __init__(self, model: nn.Module, records: Records) -> None:
        self.model = model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.sampled = GradSampleModule(model, loss_reduction="sum")
        self.x = torch.as_tensor(records.x)
        self.y = torch.as_tensor(records.y)
        self.size = int(sum(p.numel() for p in model.parameters()))
        self.layers = model_layers(model)  # the model as the dp-step kernel builds it
        self.gradients = 0  # per-sample gradients computed so far (a performance counter)

    @property
    def records(self) -> int:
        return len(self.y)

    def initial(self) -> np.ndarray:
        return flat(self.model)

    def clipped_sum(self, params: np.ndarray, rows: np.ndarray, clip: float) -> np.ndarray:
        """The sum of the per-sample gradients of the records at ``rows``, each clipped to norm
        ``clip`` (the ``dp-step`` kernel's computation, on this trainer's model, here)."""
        if len(rows) == 0:
            return np.zeros(self.size)
        self.gradients += len(rows)
        index = torch.as_tensor(rows)
        out: np.ndarray = clipped_sum(
            self.model, self.sampled, params, self.x[index], self.y[index], clip
        )
        return out

    def step_input(
        self, params: np.ndarray, rows: np.ndarray, clip: float
    ) -> dict[str, Any] | None:
        """The ``dp-step`` kernel's input for the records at ``rows`` (None: the model is not
        one the kernel can build; the step then runs here, ``clipped_sum``)."""
        if self.layers is None:
            return None
        index = torch.as_tensor(rows, dtype=torch.long)
        return {
            "model": self.layers,
            "params": np.asarray(params, dtype="<f8").tobytes(),
            "x": self.x[index].numpy().astype("<f4").tobytes(),
            "y": self.y[index].numpy().astype("<i8").tobytes(),
            "clip": float(clip),
        }

    def stepped(self, samples: int) -> None:
        """A step of ``samples`` records ran elsewhere (the kernel): count its gradients."""
        self.gradients += samples

    def dp_step(
        self,
        params: np.ndarray,
        *,
        sample_rate: float,
        clip: float,
        noise_multiplier: float,
        lr: float,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """One local DP-SGD step on this device's records alone (the noise added here)."""
        total = self.clipped_sum(params, poisson(rng, self.records, sample_rate), clip)
        total = total + rng.normal(0.0, noise_multiplier * clip, total.shape)
        return params - lr * total / max(sample_rate * self.records, 1e-12)

    def sgd(
        self, params: np.ndarray, *, epochs: int, batch: int, lr: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Plain minibatch SGD (the non-private baseline's local work)."""
        load(self.model, params)
        optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        for _ in range(epochs):
            order = torch.as_tensor(rng.permutation(len(self.y)))
            for start in range(0, len(order), batch):
                index = order[start : start + batch]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(self.model(self.x[index]), self.y[index])
                with _quiet():
                    loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
        for p in self.model.parameters():
            p.grad_sample = None  # type: ignore[attr-defined]
        return flat(self.model)


def predictor(model: nn.Module, params: np.ndarray) -> Any:
    """features -> predicted labels, for the model with ``params``."""
    load(model, params)

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = model(torch.as_tensor(x)).argmax(dim=1).numpy()
        return out

    return predict
