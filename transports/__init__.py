"""Bytes between peers: the Transport interface and its two implementations.

``Libp2pTransport`` carries real device-to-device traffic; ``MemoryNetwork`` is a simulated network
that runs the same connection code in virtual time. Nothing above this package touches sockets.
"""

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
    swarm_error_in,
)
from homeswarm.ids import is_peer_id, peer_id_from_public_key, public_key_from_peer_id

from ._alarm import Alarm
from ._base import Admission, Transport, TransportStatistics
from ._connection import Connection, ConnectionStatistics, Handler
from ._frames import DEFAULT_MAX_FRAME, Envelope, FrameDecoder, Kind, encode_frame, peek_kind
from ._manager import UNLIMITED, ConnectionLimits, Idle, Reaping, reap
from ._memory import Link, MemoryNetwork, MemoryStream, MemoryTransport, NetworkStatistics

__all__ = [
    "DEFAULT_MAX_FRAME",
    "UNLIMITED",
    "Admission",
    "AdmissionRefused",
    "Alarm",
    "Connection",
    "ConnectionClosed",
    "ConnectionLimits",
    "ConnectionStatistics",
    "Envelope",
    "FrameDecoder",
    "FrameTooLarge",
    "Handler",
    "Idle",
    "InvalidArgument",
    "InvalidConfig",
    "Kind",
    "Link",
    "LocalError",
    "MemoryNetwork",
    "MemoryStream",
    "MemoryTransport",
    "NetworkStatistics",
    "PeerUnreachable",
    "ProtocolViolation",
    "Reaping",
    "RemoteError",
    "RemoteHandlerError",
    "RequestTimeout",
    "SwarmError",
    "Transport",
    "TransportError",
    "TransportStatistics",
    "encode_frame",
    "is_peer_id",
    "peek_kind",
    "peer_id_from_public_key",
    "public_key_from_peer_id",
    "reap",
    "swarm_error_in",
]
