"""The local control socket between the ``swarm`` CLI and this device's running peer.

Rules:

* The running peer serves a Unix socket at ``HOME/control.sock``, mode 0600. It is bound inside a
  fresh 0700 directory, chmod'ed, listening, and only then renamed into place, so it is never
  reachable with a looser mode and a client never finds a file that refuses it.
* One peer per home: the server holds an exclusive ``flock`` on ``HOME/control.lock`` (an empty
  file that stays; the OS drops the lock when the process dies). A second server, or a live
  socket answered by some other process, raises ``PeerAlreadyRunning``. A socket file nobody
  answers is stale and is replaced. The socket file is removed on exit if it is still ours.
* Unix socket paths are short (107 bytes on Linux, 103 on macOS); a longer one is refused with one
  line asking for a shorter ``--home``.
* Protocol: one request per connection. The client sends one JSON object and a newline,
  ``{"op": STR, ...args}``; the server answers one JSON object and a newline,
  ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "one line", "kind": KIND}`` and
  closes. ``kind`` is ``"usage"`` when the request is at fault (the handler raised ``LocalError``,
  or the request was not a JSON object with a string ``op``, or over 64 KiB) and ``"failure"``
  otherwise. Unexpected handler exceptions are logged with their traceback and answered
  ``"internal error"``. A client that sends no full request within ``REQUEST_TIMEOUT`` seconds is
  dropped without an answer. After answering an oversized request the server closes without
  reading the rest, so the client may see a reset after the answer line. Each connection is
  served in its own task; no client can stop the server.
* The client raises ``NoPeerRunning`` (nothing listens), ``ControlUsageError`` (a ``LocalError``:
  the CLI exits 2) for a "usage" answer, and ``ControlFailure`` (a ``RemoteError``: exit 1) for a
  "failure" answer, a timeout, or a malformed answer.

Building and parsing messages (``encode_request``, ``parse_request``, ``encode_reply``,
``parse_reply``) does no I/O; ``serve_control``, ``ask`` and ``ask_async`` move the bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import trio

from homeswarm.transports import InvalidArgument, LocalError, RemoteError, swarm_error_in

log = logging.getLogger("swarm.control")

CONTROL_NAME = "control.sock"
LOCK_NAME = "control.lock"
MAX_REQUEST = 64 * 1024  # bytes, newline excluded
MAX_REPLY = 16 * 1024 * 1024
REQUEST_TIMEOUT = 5.0  # seconds a client has to send its request (and to take the answer)
MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107  # bytes, sun_path less its NUL

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


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


# --- server --------------------------------------------------------------------------------------


async def serve_control(
    path: Path,
    handler: Handler,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler(op, args)`` on the Unix socket ``path`` until cancelled.

    ``task_status.started()`` once clients can connect. Raises ``PeerAlreadyRunning`` if another
    peer serves ``path``, ``InvalidArgument`` if ``path`` is too long for a Unix socket, and
    ``LocalError`` if the socket cannot be created there.
    """
    _check_path(path)
    home = path.parent
    with _exclusive(path.with_name(LOCK_NAME), home):
        await _refuse_if_live(path, home)
        sock, ours = await _bind_private(path)
        try:
            listener = trio.SocketListener(sock)
            async with listener, trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, partial(_serve_one, handler), [listener])
                log.info("control socket at %s", path)
                task_status.started()
        finally:
            sock.close()
            _remove_if_ours(path, ours)


@contextlib.contextmanager
def _exclusive(lock: Path, home: Path) -> Iterator[None]:
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LocalError(f"cannot create {lock}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PeerAlreadyRunning(f"a peer is already running for {home}") from None
        yield
    finally:
        os.close(fd)  # also releases the lock


async def _refuse_if_live(path: Path, home: Path) -> None:
    """Raise if something answers on ``path``; a socket file nobody answers is stale."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise LocalError(f"{path} exists and is not a socket: move it away")
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError:
        log.info("replacing the stale control socket %s", path)
        return
    await stream.aclose()
    raise PeerAlreadyRunning(f"a peer is already running for {home}")


async def _bind_private(path: Path) -> tuple[trio.socket.SocketType, tuple[int, int]]:
    """A listening socket at ``path``, mode 0600, never exposed before that; its (dev, inode)."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        private = Path(tempfile.mkdtemp(prefix=".c", dir=path.parent))  # mode 0700
        try:
            staged = private / "s"  # no longer than `control.sock`
            await sock.bind(str(staged))
            os.chmod(staged, 0o600)
            sock.listen(64)
            os.rename(staged, path)  # atomically replaces a stale socket
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(private / "s")
            os.rmdir(private)
        st = os.stat(path)
    except OSError as exc:
        sock.close()
        raise LocalError(f"cannot create the control socket {path}: {exc.strerror}") from None
    except BaseException:
        sock.close()
        raise
    return sock, (st.st_dev, st.st_ino)


def _remove_if_ours(path: Path, ours: tuple[int, int]) -> None:
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == ours:
            os.unlink(path)
    except OSError:
        pass


async def _serve_one(handler: Handler, stream: trio.SocketStream) -> None:
    """Read one request, answer it, close. Never raises (but for cancellation)."""
    async with stream:
        try:
            with trio.move_on_after(REQUEST_TIMEOUT) as waited:
                line = await _read_request(stream)
            if waited.cancelled_caught:
                log.debug("dropped a control client that sent no request")
                return
            if not line:
                return  # connected and left (e.g. another server probing)
            reply = await _answer(handler, line)
            with trio.move_on_after(REQUEST_TIMEOUT):
                await stream.send_all(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("control client went away: %r", exc)
        except Exception:  # a bug here must not stop the server
            log.exception("serving a control client failed")


async def _read_request(stream: trio.SocketStream) -> bytes:
    """Up to and including the newline, or what came before EOF; over the limit: all so far."""
    data = bytearray()
    while b"\n" not in data and len(data) <= MAX_REQUEST:
        chunk = await stream.receive_some(MAX_REQUEST + 1 - len(data) + 1)
        if not chunk:
            break
        data += chunk
    end = data.find(b"\n")
    return bytes(data if end < 0 else data[: end + 1])


async def _answer(handler: Handler, line: bytes) -> bytes:
    try:
        op, args = parse_request(line)
    except BadRequest as exc:
        log.debug("bad control request: %s", exc)
        return encode_error(str(exc), "usage")
    try:
        result = await handler(op, args)
    except Exception as exc:
        error = swarm_error_in(exc)
        if isinstance(error, LocalError):
            return encode_error(str(error) or type(error).__name__, "usage")
        if error is not None:
            return encode_error(str(error) or type(error).__name__, "failure")
        log.exception("control op %r failed", op)
        return encode_error("internal error", "failure")
    try:
        return encode_reply(result)
    except (TypeError, ValueError):
        log.exception("control op %r returned a result that is not JSON", op)
        return encode_error("internal error", "failure")


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


async def ask_async(home: Path, op: str, timeout: float = 5.0, **args: Any) -> Any:
    """``ask`` for trio code."""
    path = control_path(home)
    _check_path(path)
    _check_timeout(timeout)
    request = encode_request(op, args)
    try:
        with trio.fail_after(timeout):
            try:
                stream = await trio.open_unix_socket(str(path))
            except (FileNotFoundError, ConnectionRefusedError):
                raise _no_peer(home) from None
            except OSError as exc:
                raise ControlFailure(f"cannot reach the peer at {path}: {exc.strerror}") from None
            async with stream:
                try:
                    await stream.send_all(request)
                    data = bytearray()
                    while b"\n" not in data:
                        if len(data) > MAX_REPLY:
                            raise ControlFailure("the peer's answer is too large")
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            break
                        data += chunk
                except (trio.BrokenResourceError, OSError) as exc:
                    raise ControlFailure(f"the peer closed the connection ({exc})") from None
    except trio.TooSlowError:
        raise _too_slow(timeout) from None
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
    "BadRequest",
    "ControlFailure",
    "ControlUsageError",
    "NoPeerRunning",
    "PeerAlreadyRunning",
    "ask",
    "ask_async",
    "control_path",
    "serve_control",
]
