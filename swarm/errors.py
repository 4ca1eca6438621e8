"""The project's exception tree (defined in the lowest layer, ``transports``, so all can use it)."""

from homeswarm.errors import (
    AdmissionRefused,
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    InvalidConfig,
    LocalError,
    PeerUnreachable,
    ProtocolViolation,
    RemoteError,
    RemoteHandlerError,
    RequestTimeout,
    SwarmError,
    TransportError,
)

from ._certs import InvalidCertificate
from ._control import ControlFailure, ControlUsageError, NoPeerRunning, PeerAlreadyRunning
from ._home import AlreadyInitialised, NotInitialised
from ._invite import InvalidCode
from ._join import PairingFailed

__all__ = [
    "AdmissionRefused",
    "AlreadyInitialised",
    "ConnectionClosed",
    "ControlFailure",
    "ControlUsageError",
    "FrameTooLarge",
    "InvalidArgument",
    "InvalidCertificate",
    "InvalidCode",
    "InvalidConfig",
    "LocalError",
    "NoPeerRunning",
    "NotInitialised",
    "PairingFailed",
    "PeerAlreadyRunning",
    "PeerUnreachable",
    "ProtocolViolation",
    "RemoteError",
    "RemoteHandlerError",
    "RequestTimeout",
    "SwarmError",
    "TransportError",
]
