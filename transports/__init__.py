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

from ._base import Admission, Transport, TransportStatistics
from ._connection import Connection, ConnectionStatistics, Handler
from ._frames import DEFAULT_MAX_FRAME, Envelope, FrameDecoder, Kind, encode_frame
from ._memory import Alarm, Link, MemoryNetwork, MemoryStream, MemoryTransport, NetworkStatistics

__all__ = [
    "DEFAULT_MAX_FRAME",
    "Admission",
    "AdmissionRefused",
    "Alarm",
    "Connection",
    "ConnectionClosed",
    "ConnectionStatistics",
    "Envelope",
    "FrameDecoder",
    "FrameTooLarge",
    "Handler",
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
    "RemoteError",
    "RemoteHandlerError",
    "RequestTimeout",
    "SwarmError",
    "Transport",
    "TransportError",
    "TransportStatistics",
    "encode_frame",
    "is_peer_id",
    "peer_id_from_public_key",
    "public_key_from_peer_id",
    "swarm_error_in",
]
