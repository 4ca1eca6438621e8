"""The control socket's messages and the blocking client the CLI uses (see ``_control``).

No trio here: a command that only asks the running peer loads nothing of the network stack.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from homeswarm.errors import InvalidArgument, LocalError, RemoteError

CONTROL_NAME = "control.sock"
LOCK_NAME = "control.lock"
MAX_REQUEST = 64 * 1024  # bytes, newline excluded
MAX_REPLY = 16 * 1024 * 1024
REQUEST_TIMEOUT = 5.0  # seconds a client has to send its request (and to take the answer)
MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107  # bytes, sun_path less its NUL


class PeerAlreadyRunning(LocalError):
    """A peer already serves this home's control socket."""


class NoPeerRunning(RemoteError):
    """No peer answers on this home's control socket."""


class ControlUsageError(LocalError):
    """The peer refused the request as bad input (the CLI exits 2)."""


class ControlFailure(RemoteError):
    """The peer failed the request, answered badly, or not in time (the CLI exits 1)."""


class BadRequest(ControlUsageError):
    """Bytes that are not a control request."""


def control_path(home: Path) -> Path:
    return home / CONTROL_NAME


# --- messages (no I/O) ---------------------------------------------------------------------------


def encode_request(op: str, args: dict[str, Any]) -> bytes:
    """One request line; ``InvalidArgument`` if it cannot be sent."""
    if not isinstance(op, str) or not op:
        raise InvalidArgument(f"control op must be a non-empty string, got {op!r}")
    if "op" in args:
        raise InvalidArgument("control request arguments cannot be named 'op'")
    try:
        data = json.dumps({"op": op, **args}, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"control request {op!r} is not JSON: {exc}") from None
    if len(data) > MAX_REQUEST:
        raise InvalidArgument(f"control request {op!r} is over {MAX_REQUEST} bytes")
    return data + b"\n"


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """``(op, args)`` from one request line (newline optional); ``BadRequest`` if it is not one."""
    if len(line.rstrip(b"\r\n")) > MAX_REQUEST:
        raise BadRequest(f"request is over {MAX_REQUEST} bytes")
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("request is not JSON") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"request must be a JSON object, got {type(obj).__name__}")
    op = obj.pop("op", None)
    if not isinstance(op, str) or not op:
        raise BadRequest('request needs "op", a non-empty string')
    return op, obj


def encode_reply(result: Any) -> bytes:
    """A success line; ``TypeError``/``ValueError`` if ``result`` is not JSON."""
    return json.dumps({"ok": True, "result": result}, allow_nan=False).encode() + b"\n"


def encode_error(message: str, kind: str) -> bytes:
    line = " ".join(message.split()) or "error"
    return json.dumps({"ok": False, "error": line, "kind": kind}).encode() + b"\n"


def parse_reply(data: bytes) -> Any:
    """The result of one reply line, or the exception its error names."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise ControlFailure("the peer sent a malformed answer") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise ControlFailure("the peer sent a malformed answer")
    if obj["ok"]:
        return obj.get("result")
    message = obj.get("error")
    if not isinstance(message, str) or not message:
        message = "the peer refused the request without saying why"
    if obj.get("kind") == "usage":
        raise ControlUsageError(message)
    raise ControlFailure(message)


def _check_path(path: Path) -> None:
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise InvalidArgument(
            f"the control socket path {path} is {size} bytes, over the {MAX_SOCKET_PATH}-byte "
            "limit of Unix sockets: use a shorter --home"
        )


def _no_peer(home: Path) -> NoPeerRunning:
    return NoPeerRunning(f"no peer is running for {home} (start one with `swarm up --home {home}`)")


def _too_slow(timeout: float) -> ControlFailure:
    return ControlFailure(f"the peer did not answer within {timeout:g} s")


# --- clients -------------------------------------------------------------------------------------


def ask(home: Path, op: str, timeout: float = 5.0, **args: Any) -> Any:
    """Send ``op`` with ``args`` to the peer running for ``home``; its result (blocking)."""
    path = control_path(home)
    _check_path(path)
    _check_timeout(timeout)
    request = encode_request(op, args)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.settimeout(_left(deadline, timeout))
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise _no_peer(home) from None
        except TimeoutError:
            raise _too_slow(timeout) from None
        except OSError as exc:
            raise ControlFailure(f"cannot reach the peer at {path}: {exc.strerror}") from None
        try:
            sock.sendall(request)
            data = bytearray()
            while b"\n" not in data:
                if len(data) > MAX_REPLY:
                    raise ControlFailure("the peer's answer is too large")
                sock.settimeout(_left(deadline, timeout))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise _too_slow(timeout) from None
        except OSError as exc:
            raise ControlFailure(f"the peer closed the connection ({exc.strerror})") from None
    return _result(bytes(data))


def _check_timeout(timeout: float) -> None:
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}")


def _left(deadline: float, timeout: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _too_slow(timeout)
    return left


def _result(data: bytes) -> Any:
    if not data:
        raise ControlFailure("the peer closed the connection without answering")
    if not data.endswith(b"\n"):
        raise ControlFailure("the peer's answer was cut short")
    return parse_reply(data)


__all__ = [
    "CONTROL_NAME",
    "LOCK_NAME",
    "BadRequest",
    "ControlFailure",
    "ControlUsageError",
    "NoPeerRunning",
    "PeerAlreadyRunning",
    "ask",
    "control_path",
]
