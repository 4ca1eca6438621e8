"""learning: federated learning with differential privacy across the devices, no server.

- tasks are plugins (``Task``: a model, the records on each device, an evaluation); built in:
  ``digits`` and ``intents`` (a head on ``embed`` vectors, from labelled examples in the vault's
  ``intents`` collection); others from the ``homeswarm.learning.tasks`` entry-point group;
- records carry ids and train on exactly one device (``assign_owners``);
- each device's privacy spending is a ``Ledger`` (Opacus's accountant state, persisted
  atomically, write-ahead), and a device never trains past its budget;
- a round is a pair of sans-I/O cores, ``Coordinator`` and ``Participant``, exchanging the
  messages of ``_messages``: trust ``swarm`` (clipped updates, the coordinator adds the noise
  once) or ``none`` (each device adds its share of the noise; pairwise-masked secure aggregation,
  ``secagg``, tolerant of drop-outs); ``Gossip`` averaging needs no coordinator;
- ``Federation`` drives the cores in one process (tests, benchmark, simulator).

Nothing here imports torch; ``TorchTrainer`` and ``predictor`` (``_torch``) load it on first use.
"""

from typing import Any

from . import _secagg as secagg
from ._digits import Digits
from ._federation import Faults, Federation, Mechanism, RoundReport
from ._gossip import Gossip
from ._intents import Intents, parse_example
from ._ledger import ACCOUNTANTS, Ledger, noise_for, spent_epsilon
from ._messages import (
    Decline,
    Message,
    Reveal,
    RevealRequest,
    RoundResult,
    RoundStart,
    Update,
    from_wire,
    params_bytes,
)
from ._records import Records, assign_owners, dirichlet_split
from ._round import (
    Coordinator,
    KernelTrainer,
    Participant,
    RoundOutcome,
    Step,
    Trainer,
    coordinator_for,
    successor,
)
from ._task import ENTRY_POINT_GROUP, Split, Task, get_task, task_names

_TORCH = ("TorchTrainer", "predictor")

__all__ = [
    "ACCOUNTANTS",
    "ENTRY_POINT_GROUP",
    "Coordinator",
    "Decline",
    "Digits",
    "Faults",
    "Federation",
    "Gossip",
    "Intents",
    "KernelTrainer",
    "Ledger",
    "Mechanism",
    "Message",
    "Participant",
    "Records",
    "Reveal",
    "RevealRequest",
    "RoundOutcome",
    "RoundReport",
    "RoundResult",
    "RoundStart",
    "Split",
    "Step",
    "Task",
    "TorchTrainer",
    "Trainer",
    "Update",
    "assign_owners",
    "coordinator_for",
    "dirichlet_split",
    "from_wire",
    "get_task",
    "noise_for",
    "params_bytes",
    "parse_example",
    "predictor",
    "secagg",
    "spent_epsilon",
    "successor",
    "task_names",
]


def __getattr__(name: str) -> Any:
    if name in _TORCH:
        from . import _torch

        return getattr(_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
