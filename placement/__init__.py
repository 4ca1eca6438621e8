"""placement: where a kernel runs.

- the policy (pure, deterministic, explained): ``place(kernel, needs, view) -> Decision`` over
  ``DeviceView``s, plus baselines of the same shape for simulations;
- executors: ``InlineExecutor`` (this process), ``RayExecutor`` (a Ray actor per kernel type),
  and the remote executor's messages (``RunRequest``, ``RunReply``);
- ``Mesh``: the registry of long-lived kernel instances, in columns, placed, re-placed after a
  death and rebalanced after a power change in batches, as the policy would one by one;
- ``Runner``: place, run, re-place once on failure; and serve other devices' runs under this
  device's own policy.

``placement.testing`` holds device views and scripted executors for tests and simulations.
"""

from ._executors import (
    Executor,
    ExecutorFailed,
    ExecutorTimeout,
    ExecutorUnavailable,
    FallbackExecutor,
    HeldKernel,
    InlineExecutor,
    RunResult,
)
from ._mesh import STATES as MESH_STATES
from ._mesh import Mesh, MeshChange
from ._policy import (
    CONSTRAINTS,
    DEFAULT_CONFIG,
    Calibration,
    Candidate,
    Decision,
    Estimate,
    Exclusion,
    Policy,
    PolicyConfig,
    Refused,
    Variant,
    admit,
    always_local,
    always_server,
    baselines,
    energy_greedy,
    latency_greedy,
    place,
    random_policy,
    violations,
)
from ._ray import RayExecutor, RayRuntime
from ._remote import RemoteRefused, RunReply, RunRequest
from ._runner import Attempt, Observation, RunFailed, Runner, RunOutcome
from ._view import NO_EXECUTOR, ROLES, STATUSES, DeviceView

__all__ = [
    "CONSTRAINTS",
    "DEFAULT_CONFIG",
    "MESH_STATES",
    "NO_EXECUTOR",
    "ROLES",
    "STATUSES",
    "Attempt",
    "Calibration",
    "Candidate",
    "Decision",
    "DeviceView",
    "Estimate",
    "Exclusion",
    "Executor",
    "ExecutorFailed",
    "ExecutorTimeout",
    "ExecutorUnavailable",
    "FallbackExecutor",
    "HeldKernel",
    "InlineExecutor",
    "Mesh",
    "MeshChange",
    "Observation",
    "Policy",
    "PolicyConfig",
    "RayExecutor",
    "RayRuntime",
    "Refused",
    "RemoteRefused",
    "RunFailed",
    "RunOutcome",
    "RunReply",
    "RunRequest",
    "RunResult",
    "Runner",
    "Variant",
    "admit",
    "always_local",
    "always_server",
    "baselines",
    "energy_greedy",
    "latency_greedy",
    "place",
    "random_policy",
    "violations",
]
