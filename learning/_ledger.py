"""A device's privacy spending on one task, on disk: a restart neither forgets nor double-spends.

The ledger is Opacus's accountant state (its ``history``: ``(noise_multiplier, sample_rate,
steps)`` runs) plus the budget, in a small JSON file per device and task written atomically
(temporary file, fsync, rename; mode 0600). A step is written *before* the update it pays for
leaves the device (write-ahead): a crash after the write and before the send costs budget that was
never used, never the reverse. ``epsilon`` is what Opacus's accountant reports for that history.
``affordable`` says whether one more step keeps the device within its budget; a device asks before
every step and never trains past the budget.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from homeswarm.errors import InvalidArgument, InvalidConfig

VERSION = 1
ACCOUNTANTS = ("rdp", "prv")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Opacus notes when the best RDP order is at the end of its range (a looser bound, never a
    wrong one); that note is not the user's business."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the")
        yield


def _opacus() -> tuple[Any, Any, Any]:
    """Opacus's accountants, its RDP analysis and its utilities (imported on first use)."""
    from opacus import accountants  # type: ignore[import-untyped]
    from opacus.accountants import utils  # type: ignore[import-untyped]
    from opacus.accountants.analysis import rdp  # type: ignore[import-untyped]

    return accountants, rdp, utils


def _accountant(kind: str, history: list[tuple[float, float, int]]) -> Any:
    accountants, _, _ = _opacus()
    accountant = accountants.RDPAccountant() if kind == "rdp" else accountants.PRVAccountant()
    accountant.history = [tuple(run) for run in history]
    return accountant


@functools.lru_cache(maxsize=256)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> Any:
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp

    return rdp.compute_rdp(
        q=sample_rate,
        noise_multiplier=noise_multiplier,
        steps=1,
        orders=RDPAccountant.DEFAULT_ALPHAS,
    )


def spent_epsilon(kind: str, history: list[tuple[float, float, int]], delta: float) -> float:
    """Opacus's epsilon for ``history`` at ``delta`` (0 for an empty history).

    For RDP this is Opacus's own sum (``compute_rdp`` is the one-step value times the steps), with
    the one-step values cached: a device asks before every step, and the series behind one value
    takes milliseconds per order.
    """
    if not history:
        return 0.0
    with _quiet():
        if kind == "rdp":
            accountants, rdp, _ = _opacus()
            total = sum([_rdp_per_step(s, q) * n for s, q, n in history])
            orders = accountants.RDPAccountant.DEFAULT_ALPHAS
            eps, _ = rdp.get_privacy_spent(orders=orders, rdp=total, delta=delta)
            return float(eps)
        return float(_accountant(kind, history).get_epsilon(delta))


@functools.lru_cache(maxsize=64)
def noise_for(
    *, epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp"
) -> float:
    """The noise multiplier that spends exactly ``epsilon`` over ``steps`` (Opacus's search, which
    takes seconds for small sample rates and few steps; remembered per process)."""
    _, _, utils = _opacus()
    with _quiet():
        return float(
            utils.get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
            )
        )


@dataclass
class Ledger:
    """The privacy spent by one device on one task, against its budget (epsilon, delta)."""

    path: Path | None
    task: str
    device: str
    epsilon_budget: float
    delta: float
    accountant: str = "rdp"
    history: list[tuple[float, float, int]] = field(default_factory=list)
    _checked: tuple[tuple[tuple[float, float, int], ...], bool] | None = field(
        default=None, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.epsilon_budget > 0 or not 0 < self.delta < 1:
            raise InvalidArgument("ledger: epsilon must be positive and delta in (0, 1)")
        if self.accountant not in ACCOUNTANTS:
            raise InvalidArgument(f"ledger: accountant must be one of {ACCOUNTANTS}")

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        task: str,
        device: str,
        epsilon_budget: float,
        delta: float,
        accountant: str = "rdp",
    ) -> Ledger:
        """The ledger at ``path``, or a fresh one. A stored one keeps its budget and delta."""
        if not path.exists():
            return cls(path, task, device, epsilon_budget, delta, accountant)
        try:
            data = json.loads(path.read_text())
            if data["version"] != VERSION or data["task"] != task or data["device"] != device:
                raise ValueError("written for another task or device")
            history = [(float(s), float(q), int(n)) for s, q, n in data["history"]]
            return cls(
                path,
                task,
                device,
                float(data["epsilon_budget"]),
                float(data["delta"]),
                str(data["accountant"]),
                history,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidConfig(
                f"{path}: not a privacy ledger of {task}/{device} ({exc})"
            ) from None

    @property
    def epsilon(self) -> float:
        return spent_epsilon(self.accountant, self.history, self.delta)

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.history)

    def _with_step(
        self, noise_multiplier: float, sample_rate: float
    ) -> list[tuple[float, float, int]]:
        history = list(self.history)
        if history and history[-1][:2] == (noise_multiplier, sample_rate):
            history[-1] = (noise_multiplier, sample_rate, history[-1][2] + 1)
        else:
            history.append((noise_multiplier, sample_rate, 1))
        return history

    def affordable(self, noise_multiplier: float, sample_rate: float) -> bool:
        """Whether one more step of this mechanism keeps the spent epsilon within the budget."""
        after = self._with_step(noise_multiplier, sample_rate)
        key = tuple(after)
        if self._checked is None or self._checked[0] != key:
            spent = spent_epsilon(self.accountant, after, self.delta)
            self._checked = (key, spent <= self.epsilon_budget)
        return self._checked[1]

    def spend(self, noise_multiplier: float, sample_rate: float) -> None:
        """Record one step (on disk first); refuses a step past the budget."""
        if not self.affordable(noise_multiplier, sample_rate):
            raise InvalidArgument(
                f"{self.device}: one more step would exceed epsilon {self.epsilon_budget}"
            )
        self.history = self._with_step(noise_multiplier, sample_rate)
        self.save()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "task": self.task,
            "device": self.device,
            "accountant": self.accountant,
            "epsilon_budget": self.epsilon_budget,
            "delta": self.delta,
            "history": [list(run) for run in self.history],
        }

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self.to_json(), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
