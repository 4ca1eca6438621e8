"""Putting a job together: a task's split, a trainer, a ledger, an X25519 key and a random
generator per device, and the driver (``Federation`` or ``Gossip``) over them.

The benchmark, the tests and the simulator start here. Generators come from one seed, so the
same seed gives the same run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ._federation import Faults, Federation, Mechanism
from ._gossip import Gossip
from ._ledger import Ledger
from ._records import Records, assign_owners
from ._round import Participant
from ._task import Split, Task


@dataclass
class Job:
    task: Task
    split: Split
    trainers: dict[str, Any]
    ledgers: dict[str, Ledger]
    rngs: dict[str, np.random.Generator]
    initial: np.ndarray

    def accuracy(self, params: np.ndarray) -> float:
        from ._torch import predictor

        return self.task.evaluate(predictor(self.task.model(), params), self.split.test)


def _key(seed: int, device: str) -> X25519PrivateKey:
    material = np.random.default_rng([seed, *device.encode()]).bytes(32)
    return X25519PrivateKey.from_private_bytes(material)


def prepare(
    task: Task,
    split: Split,
    *,
    epsilon: float,
    delta: float,
    seed: int,
    home: Path | None = None,
    job: str = "job",
    accountant: str = "rdp",
) -> Job:
    """Trainers, ledgers (under ``home/<device>/`` if given) and generators for every device;
    each device trains on the records it owns (``assign_owners``) among those it holds."""
    import torch

    from ._torch import TorchTrainer, flat

    torch.manual_seed(seed)
    model = task.model()
    initial = flat(model)
    trainers: dict[str, Any] = {}
    ledgers: dict[str, Ledger] = {}
    rngs: dict[str, np.random.Generator] = {}
    # a record held by several devices (the vault replicates) trains on exactly one of them
    owners = assign_owners({device: records.ids for device, records in split.devices.items()})
    for index, (device, held) in enumerate(sorted(split.devices.items())):
        records = held.only(owners[device])
        copy = task.model()
        copy.load_state_dict(model.state_dict())
        trainers[device] = TorchTrainer(copy, records)
        path = None if home is None else home / device / f"{job}.{task.name}.privacy.json"
        ledgers[device] = (
            Ledger(None, task.name, device, epsilon, delta, accountant)
            if path is None
            else Ledger.open(
                path, task=task.name, device=device, epsilon_budget=epsilon, delta=delta,
                accountant=accountant,
            )
        )  # fmt: skip
        rngs[device] = np.random.default_rng([seed, 1, index])
    return Job(task, split, trainers, ledgers, rngs, initial)


def federation(
    job: Job, mechanism: Mechanism, *, seed: int, faults: Faults | None = None, name: str = "job"
) -> Federation:
    keys = {device: _key(seed, device) for device in job.trainers}
    public = {device: key.public_key() for device, key in keys.items()}
    participants = {
        device: Participant(
            device,
            trainer=job.trainers[device],
            ledger=job.ledgers[device],
            rng=job.rngs[device],
            key=keys[device],
            public_keys={d: k for d, k in public.items() if d != device},
        )
        for device in job.trainers
    }
    return Federation(
        name,
        participants,
        records={d: t.records for d, t in job.trainers.items()},
        mechanism=mechanism,
        params=job.initial,
        rng=np.random.default_rng([seed, 2]),
        faults=faults,
    )


def gossip(job: Job, mechanism: Mechanism, *, seed: int) -> Gossip:
    return Gossip(
        job.trainers,
        job.ledgers,
        job.rngs,
        sample_rate=mechanism.sample_rate,
        clip=mechanism.clip,
        noise_multiplier=mechanism.noise_multiplier,
        lr=mechanism.lr,
        params=job.initial,
        rng=np.random.default_rng([seed, 3]),
    )


def pooled(split: Split) -> Records:
    parts = list(split.devices.values())
    return Records(
        tuple(i for p in parts for i in p.ids),
        np.concatenate([p.x for p in parts]),
        np.concatenate([p.y for p in parts]),
    )
