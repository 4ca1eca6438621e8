"""Records and who trains on them: every record has an id and trains on exactly one device.

A record may sit on several devices (the vault replicates); ``assign_owners`` picks one owner per
record id by rendezvous hashing over the devices that hold it, so every device computes the same
answer from the same holdings, in any order, with no coordination. ``dirichlet_split`` deals a
labelled data set across devices with a Dirichlet(alpha) label skew from a seed (the usual way of
making federated data non-IID: small alpha, each device sees few classes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from homeswarm.errors import InvalidArgument


@dataclass(frozen=True)
class Records:
    """One device's training records: ids, features (float32 rows) and integer labels."""

    ids: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.x) or len(self.ids) != len(self.y):
            raise InvalidArgument("records: ids, features and labels differ in length")
        if len(set(self.ids)) != len(self.ids):
            raise InvalidArgument("records: an id appears twice")

    def __len__(self) -> int:
        return len(self.ids)

    def only(self, ids: Iterable[str]) -> Records:
        """The records whose id is in ``ids``, in this order."""
        keep = set(ids)
        rows = [i for i, rid in enumerate(self.ids) if rid in keep]
        return Records(tuple(self.ids[i] for i in rows), self.x[rows], self.y[rows])


def poisson(rng: np.random.Generator, records: int, sample_rate: float) -> np.ndarray:
    """The rows of ``records`` a Poisson sample at ``sample_rate`` takes (DP-SGD's sampling)."""
    return np.flatnonzero(rng.random(records) < sample_rate)


def _rank(record: str, device: str) -> bytes:
    return hashlib.sha256(f"{record}\x00{device}".encode()).digest()


def assign_owners(holdings: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """Device -> the record ids it trains on; each id held anywhere goes to exactly one holder."""
    holders: dict[str, list[str]] = {}
    for device, ids in holdings.items():
        for rid in ids:
            holders.setdefault(rid, []).append(device)
    owned: dict[str, set[str]] = {device: set() for device in holdings}
    for rid, devices in holders.items():
        owned[max(devices, key=lambda d: _rank(rid, d))].add(rid)
    return {device: frozenset(ids) for device, ids in owned.items()}


def dirichlet_split(
    labels: Sequence[int] | np.ndarray, devices: int, alpha: float, seed: int
) -> list[np.ndarray]:
    """Row indices per device: each class's rows dealt by proportions drawn from Dir(alpha)."""
    if devices < 1:
        raise InvalidArgument("dirichlet_split: at least one device")
    if not alpha > 0:
        raise InvalidArgument("dirichlet_split: alpha must be positive")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(devices)]
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rng.shuffle(rows)
        shares = rng.dirichlet(np.full(devices, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
        for device, chunk in enumerate(np.split(rows, cuts)):
            parts[device].extend(chunk.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


@dataclass(frozen=True)
class Split:
    """A task's data as the devices hold it: records per device and the held-out test set."""

    devices: dict[str, Records]
    test: Records
