"""The whole exception tree in one place: every error the project raises on purpose.

The root and its branches (``LocalError``: this side's fault; ``RemoteError``: a peer's;
``TransportError``: the network's) live in the floor, ``homeswarm.errors``, so every layer can
raise them; each layer adds its own leaves, gathered here for whoever catches them.
"""

from homeswarm.errors import (
    AdmissionRefused,
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    InvalidConfig,
    LocalError,
    MalformedMessage,
    PeerUnreachable,
    ProtocolViolation,
    RemoteError,
    RemoteHandlerError,
    RequestTimeout,
    SwarmError,
    TransportError,
)
from homeswarm.kernels import ExecutionError, InvalidInput, KernelFailed, UnknownKernel
from homeswarm.placement import (
    ExecutorFailed,
    ExecutorTimeout,
    ExecutorUnavailable,
    Refused,
    RemoteRefused,
    RunFailed,
)
from homeswarm.vault import (
    EntryNotFound,
    InvalidEntry,
    RejectedRecord,
    ScopeNotAllowed,
    StorageFailure,
    VaultError,
    VaultLocked,
)

from ._audit import NotPermitted
from ._certs import InvalidCertificate, MalformedCertificate
from ._control_client import (
    BadRequest,
    ControlFailure,
    ControlUsageError,
    NoPeerRunning,
    PeerAlreadyRunning,
)
from ._home import AlreadyInitialised, NotInitialised
from ._invite import InvalidCode
from ._join import PairingFailed
from ._trust import InvalidRecoveryCode

__all__ = [
    "AdmissionRefused",
    "AlreadyInitialised",
    "BadRequest",
    "ConnectionClosed",
    "ControlFailure",
    "ControlUsageError",
    "EntryNotFound",
    "ExecutionError",
    "ExecutorFailed",
    "ExecutorTimeout",
    "ExecutorUnavailable",
    "FrameTooLarge",
    "InvalidArgument",
    "InvalidCertificate",
    "InvalidCode",
    "InvalidConfig",
    "InvalidEntry",
    "InvalidInput",
    "InvalidRecoveryCode",
    "KernelFailed",
    "LocalError",
    "MalformedCertificate",
    "MalformedMessage",
    "NoPeerRunning",
    "NotInitialised",
    "NotPermitted",
    "PairingFailed",
    "PeerAlreadyRunning",
    "PeerUnreachable",
    "ProtocolViolation",
    "Refused",
    "RejectedRecord",
    "RemoteError",
    "RemoteHandlerError",
    "RemoteRefused",
    "RequestTimeout",
    "RunFailed",
    "ScopeNotAllowed",
    "StorageFailure",
    "SwarmError",
    "TransportError",
    "UnknownKernel",
    "VaultError",
    "VaultLocked",
]
