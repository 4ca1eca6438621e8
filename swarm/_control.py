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
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import trio

from homeswarm.errors import LocalError, swarm_error_in

from ._control_client import (
    CONTROL_NAME,
    LOCK_NAME,
    MAX_REPLY,
    MAX_REQUEST,
    REQUEST_TIMEOUT,
    BadRequest,
    ControlFailure,
    ControlUsageError,
    NoPeerRunning,
    PeerAlreadyRunning,
    _check_path,
    _check_timeout,
    _no_peer,
    _result,
    _too_slow,
    ask,
    control_path,
    encode_error,
    encode_reply,
    encode_request,
    parse_request,
)

log = logging.getLogger("swarm.control")

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


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
