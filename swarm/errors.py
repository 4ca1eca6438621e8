"""The project's exception tree (defined in the lowest layer, ``transports``, so all can use it)."""

from transports._errors import (
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

__all__ = [
    "AdmissionRefused",
    "ConnectionClosed",
    "FrameTooLarge",
    "InvalidArgument",
    "InvalidConfig",
    "LocalError",
    "PeerUnreachable",
    "ProtocolViolation",
    "RemoteError",
    "RemoteHandlerError",
    "RequestTimeout",
    "SwarmError",
    "TransportError",
]
