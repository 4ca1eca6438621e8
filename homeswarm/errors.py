"""The one exception tree of the project.

It lives below every layer and imports nothing, so that every package can raise and catch it and
a command can report it without loading the network stack. Each class says whose fault it is:
``LocalError`` for this side (bad arguments, bad config, misuse), ``RemoteError`` for what a peer
sent us, and ``TransportError`` for the network between us.
"""

from __future__ import annotations


class SwarmError(Exception):
    """Root of every error swarm raises on purpose."""


class LocalError(SwarmError):
    """This side is at fault: the user's input, our config, or misuse of an API."""


class InvalidArgument(LocalError, ValueError):
    """A caller passed a value that cannot be used."""


class InvalidConfig(LocalError, ValueError):
    """A configuration file or value is malformed."""


class RemoteError(SwarmError):
    """A peer is at fault."""


class ProtocolViolation(RemoteError):
    """A peer sent bytes or a message that break the protocol; the connection is closed."""


class MalformedMessage(ProtocolViolation):
    """A peer's message does not have the shape its schema declares (``homeswarm.wire``)."""


class FrameTooLarge(ProtocolViolation):
    """A frame header announced more bytes than the limit allows."""


class RemoteHandlerError(RemoteError):
    """The peer's handler failed on our request and said so."""


class TransportError(SwarmError):
    """The connection between us and a peer failed."""


class ConnectionClosed(TransportError):
    """The connection was closed, by either side, before the operation completed."""


class PeerUnreachable(TransportError):
    """Dialing a peer failed: nothing listening, refused, unreachable, or timed out."""


class AdmissionRefused(TransportError):
    """A peer is not admitted to this swarm (or refused us)."""


class RequestTimeout(TransportError, TimeoutError):
    """No response arrived before the deadline."""


def swarm_error_in(exc: BaseException) -> SwarmError | None:
    """The SwarmError to report, also from inside trio's exception groups; None if there is none."""
    if isinstance(exc, SwarmError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = swarm_error_in(inner)
            if found is not None:
                return found
    return None
