"""kernels: the micro-kernel API, the registry and the built-in kernels (``embed``, ``classify``,
``dp-step``, ``anomaly``).

A kernel is a Python callable declared with what it needs::

    from homeswarm.kernels import Needs, kernel

    @kernel("shout", needs=Needs(scope="public", energy="tiny"))
    def shout(text):
        return text.upper()

Third-party kernels plug in through the ``homeswarm.kernels`` entry-point group (see
``kernels._registry``); ``kernels.testing`` holds trivial kernels for tests.

A stateful instance's stream survives its device with ``StreamProducer`` (numbers the events,
keeps those no stored ``Checkpoint`` covers) and ``StreamInstance`` (applies each exactly once,
checkpoints its model with the last event it applied): ``kernels._stream``.
"""

from ._anomaly import TELEMETRY_PARAMS, anomaly, anomaly_model, parse_time, parse_value
from ._api import (
    ACCELERATOR_NEEDS,
    ACCELERATORS,
    ANY_GPU,
    DEFAULT_COMPUTE_S,
    ENERGY_CLASSES,
    MAX_NAME_CHARS,
    SCOPES,
    ExecutionError,
    InvalidInput,
    Kernel,
    KernelFailed,
    Needs,
    UnknownKernel,
    check_name,
    check_value,
    energy_rank,
    kernel,
    scope_rank,
)
from ._builtin import DIMENSIONS, classify, clipped_sum, dp_step, embed, load_model, model_layers
from ._registry import ENTRY_POINT_GROUP, Registry, builtin_registry, default_registry
from ._stream import Checkpoint, StreamEvent, StreamInstance, StreamProducer

__all__ = [
    "ACCELERATORS",
    "ACCELERATOR_NEEDS",
    "ANY_GPU",
    "DEFAULT_COMPUTE_S",
    "DIMENSIONS",
    "ENERGY_CLASSES",
    "ENTRY_POINT_GROUP",
    "MAX_NAME_CHARS",
    "SCOPES",
    "TELEMETRY_PARAMS",
    "Checkpoint",
    "ExecutionError",
    "InvalidInput",
    "Kernel",
    "KernelFailed",
    "Needs",
    "Registry",
    "StreamEvent",
    "StreamInstance",
    "StreamProducer",
    "UnknownKernel",
    "anomaly",
    "anomaly_model",
    "builtin_registry",
    "check_name",
    "check_value",
    "classify",
    "clipped_sum",
    "default_registry",
    "dp_step",
    "embed",
    "energy_rank",
    "kernel",
    "load_model",
    "model_layers",
    "parse_time",
    "parse_value",
    "scope_rank",
]
