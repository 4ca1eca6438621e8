"""The control socket: protocol, errors by kind, a server no client can break, one peer per home."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest
import trio

from homeswarm.errors import InvalidArgument, LocalError, RemoteError, SwarmError
from homeswarm.swarm import _control
from homeswarm.swarm._control import (
    ControlFailure,
    ControlUsageError,
    NoPeerRunning,
    PeerAlreadyRunning,
    ask,
    ask_async,
    control_path,
    serve_control,
)
from homeswarm.swarm._control_client import encode_request, parse_reply, parse_request


@pytest.fixture
def home():
    # pytest's tmp_path can exceed the 107-byte limit of Unix socket paths
    path = Path(tempfile.mkdtemp(prefix="swc-", dir="/tmp"))
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def handler(op, args):
    if op == "echo":
        return {"op": op, "args": args}
    if op == "usage":
        raise InvalidArgument("--peer must name a device")
    if op == "failure":
        raise RemoteError("the vault is unreachable")
    if op == "group":
        raise ExceptionGroup("wrapped", [KeyError("x"), InvalidArgument("bad flag")])
    if op == "crash":
        raise KeyError("boom")
    if op == "not-json":
        return {1, 2}
    if op == "hang":
        await trio.sleep_forever()
    raise InvalidArgument(f"unknown op {op!r}")


@pytest.fixture
async def server(home, nursery):
    await nursery.start(serve_control, control_path(home), handler)
    return home


async def raw(home, data: bytes) -> bytes:
    """Send raw bytes; the server's answer line, after which it must close the connection.

    The server closes without reading all of an oversized request, so the connection may be reset
    after the answer; the answer itself always arrives first.
    """
    stream = await trio.open_unix_socket(str(control_path(home)))
    async with stream:
        await stream.send_all(data)
        reply = b""
        while b"\n" not in reply:
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed without an answer line: {reply!r}"
            reply += chunk
        with contextlib.suppress(trio.BrokenResourceError):  # reset: it did not read it all
            assert await stream.receive_some(65536) == b""
    return reply


async def test_round_trip_async_and_sync(server):
    assert await ask_async(server, "echo", x=1, y=[1, "a"]) == {
        "op": "echo",
        "args": {"x": 1, "y": [1, "a"]},
    }
    result = await trio.to_thread.run_sync(lambda: ask(server, "echo", name="laptop"))
    assert result == {"op": "echo", "args": {"name": "laptop"}}


async def test_socket_is_private_and_removed_on_exit(home):
    path = control_path(home)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, handler)
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        # nothing staged is left behind: only the socket and the lock file
        assert sorted(p.name for p in home.iterdir()) == ["control.lock", "control.sock"]
        nursery.cancel_scope.cancel()
    assert not path.exists()
    with pytest.raises(NoPeerRunning):
        await ask_async(home, "echo")


@pytest.mark.parametrize(
    ("op", "message"),
    [("usage", "--peer must name a device"), ("group", "bad flag"), ("nope", "unknown op 'nope'")],
)
async def test_local_errors_come_back_as_usage(server, op, message):
    with pytest.raises(ControlUsageError, match=rf"^{message}$") as info:
        await ask_async(server, op)
    assert isinstance(info.value, LocalError)
    with pytest.raises(ControlUsageError, match=rf"^{message}$"):
        await trio.to_thread.run_sync(lambda: ask(server, op))


async def test_other_swarm_errors_come_back_as_failure(server):
    with pytest.raises(ControlFailure, match=r"^the vault is unreachable$") as info:
        await ask_async(server, "failure")
    assert isinstance(info.value, RemoteError)
    with pytest.raises(ControlFailure, match=r"^the vault is unreachable$"):
        await trio.to_thread.run_sync(lambda: ask(server, "failure"))


@pytest.mark.parametrize("op", ["crash", "not-json"])
async def test_unexpected_errors_are_logged_and_answered_internal_error(server, op, caplog):
    with caplog.at_level(logging.ERROR, logger="swarm.control"):
        with pytest.raises(ControlFailure, match=r"^internal error$"):
            await ask_async(server, op)
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None
    assert await ask_async(server, "echo") == {"op": "echo", "args": {}}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not json\n", "request is not JSON"),
        (b"\xff\xfe\n", "request is not JSON"),
        (b"\n", "request is not JSON"),
        (b"[1, 2]\n", "request must be a JSON object, got list"),
        (b'{"x": 1}\n', 'request needs "op", a non-empty string'),
        (b'{"op": 3}\n', 'request needs "op", a non-empty string'),
        (b'{"op": ""}\n', 'request needs "op", a non-empty string'),
        (b"x" * (64 * 1024 + 1), "request is over 65536 bytes"),
        (b"x" * (200 * 1024), "request is over 65536 bytes"),
    ],
)
async def test_bad_requests_get_a_usage_error_and_the_server_keeps_serving(server, data, error):
    reply = await raw(server, data)
    assert reply.endswith(b"\n")
    assert reply.count(b"\n") == 1
    assert json.loads(reply) == {"ok": False, "error": error, "kind": "usage"}
    assert await ask_async(server, "echo", n=1) == {"op": "echo", "args": {"n": 1}}


async def test_request_at_the_size_limit_is_served(server):
    padding = "p" * (64 * 1024 - len(b'{"op":"echo","p":""}'))
    line = json.dumps({"op": "echo", "p": padding}, separators=(",", ":")).encode()
    assert len(line) == 64 * 1024
    reply = json.loads(await raw(server, line + b"\n"))
    assert reply["ok"] is True
    assert reply["result"]["args"]["p"] == padding


async def test_request_without_newline_before_eof_is_served(server):
    stream = await trio.open_unix_socket(str(control_path(server)))
    async with stream:
        await stream.send_all(b'{"op": "echo"}')
        await stream.send_eof()
        reply = await stream.receive_some(65536)
    assert json.loads(reply) == {"ok": True, "result": {"op": "echo", "args": {}}}


async def test_a_client_that_says_nothing_is_dropped(home, autojump_clock):
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, control_path(home), handler)
        silent = await trio.open_unix_socket(str(control_path(home)))
        start = trio.current_time()
        async with silent:
            assert await silent.receive_some(100) == b""  # closed without an answer
        assert trio.current_time() - start == pytest.approx(_control.REQUEST_TIMEOUT)
        assert await ask_async(home, "echo") == {"op": "echo", "args": {}}
        nursery.cancel_scope.cancel()


async def test_each_connection_is_served_in_its_own_task(server):
    slow = await trio.open_unix_socket(str(control_path(server)))
    async with slow:
        await slow.send_all(b'{"op": "hang"}\n')
        # the hanging request and a half-sent one do not hold up anyone else
        partial = await trio.open_unix_socket(str(control_path(server)))
        async with partial:
            await partial.send_all(b'{"op": "ec')
            assert await ask_async(server, "echo") == {"op": "echo", "args": {}}


async def test_timeouts(server):
    with pytest.raises(ControlFailure, match=r"^the peer did not answer within 0\.05 s$"):
        await ask_async(server, "hang", timeout=0.05)
    with pytest.raises(ControlFailure, match=r"^the peer did not answer within 0\.05 s$"):
        await trio.to_thread.run_sync(lambda: ask(server, "hang", timeout=0.05))
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InvalidArgument, match=r"timeout must be a positive number"):
            await ask_async(server, "echo", timeout=bad)
        with pytest.raises(InvalidArgument, match=r"timeout must be a positive number"):
            ask(server, "echo", timeout=bad)


async def test_no_peer_running_when_nothing_listens(home):
    message = f"^no peer is running for {home} \\(start one with `swarm up --home {home}`\\)$"
    with pytest.raises(NoPeerRunning, match=message) as info:
        ask(home, "status")
    assert isinstance(info.value, RemoteError)
    with pytest.raises(NoPeerRunning, match=message):
        await ask_async(home, "status")
    make_stale_socket(control_path(home))
    with pytest.raises(NoPeerRunning, match=message):
        ask(home, "status")
    with pytest.raises(NoPeerRunning, match=message):
        await ask_async(home, "status")


def make_stale_socket(path: Path) -> None:
    """A socket file that nobody listens on, as a killed peer leaves behind."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


async def test_stale_socket_is_replaced(home, nursery):
    make_stale_socket(control_path(home))
    await nursery.start(serve_control, control_path(home), handler)
    assert await ask_async(home, "echo") == {"op": "echo", "args": {}}
    assert stat.S_IMODE(os.lstat(control_path(home)).st_mode) == 0o600


async def test_second_server_is_refused_and_the_first_keeps_serving(server):
    with pytest.raises(PeerAlreadyRunning, match=rf"^a peer is already running for {server}$"):
        await serve_control(control_path(server), handler)
    assert issubclass(PeerAlreadyRunning, LocalError)
    assert await ask_async(server, "echo") == {"op": "echo", "args": {}}


async def test_live_socket_of_another_process_is_refused(home):
    # a peer that holds no lock (say, an older version) but answers on the socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(control_path(home)))
        other.listen(1)
        with pytest.raises(PeerAlreadyRunning, match=rf"^a peer is already running for {home}$"):
            await serve_control(control_path(home), handler)
    assert control_path(home).exists()  # not ours to remove


async def test_a_file_in_the_way_is_not_removed(home):
    control_path(home).write_text("notes")
    with pytest.raises(LocalError, match=r"exists and is not a socket"):
        await serve_control(control_path(home), handler)
    assert control_path(home).read_text() == "notes"


async def test_missing_home_is_one_line():
    missing = Path(tempfile.gettempdir()) / "swc-missing-home-for-test"
    with pytest.raises(LocalError, match=r"^cannot create .*control.lock: No such file"):
        await serve_control(control_path(missing), handler)


async def test_too_long_path_is_a_local_error():
    home = Path("/tmp") / ("h" * 100)
    with pytest.raises(InvalidArgument, match=r"use a shorter --home$") as info:
        await serve_control(control_path(home), handler)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidArgument, match=r"use a shorter --home$"):
        ask(home, "status")
    with pytest.raises(InvalidArgument, match=r"use a shorter --home$"):
        await ask_async(home, "status")


def test_requests_that_cannot_be_sent_are_refused_locally():
    assert encode_request("status", {}) == b'{"op":"status"}\n'
    with pytest.raises(InvalidArgument, match=r"not JSON"):
        encode_request("echo", {"x": object()})
    with pytest.raises(InvalidArgument, match=r"not JSON"):
        encode_request("echo", {"x": float("nan")})
    with pytest.raises(InvalidArgument, match=r"over 65536 bytes"):
        encode_request("echo", {"x": "y" * 65536})
    with pytest.raises(InvalidArgument, match=r"non-empty string"):
        encode_request("", {})
    with pytest.raises(InvalidArgument, match=r"'op'"):
        encode_request("echo", {"op": "other"})


def test_parse_request():
    assert parse_request(b'{"op": "status", "watch": true}\n') == ("status", {"watch": True})
    assert parse_request(b'{"op": "status"}') == ("status", {})


@pytest.mark.parametrize(
    ("data", "exc", "message"),
    [
        (b"garbage\n", ControlFailure, "the peer sent a malformed answer"),
        (b"[]\n", ControlFailure, "the peer sent a malformed answer"),
        (b'{"ok": 1}\n', ControlFailure, "the peer sent a malformed answer"),
        (b'{"ok": false}\n', ControlFailure, "the peer refused the request without saying why"),
        (b'{"ok": false, "error": "no", "kind": "odd"}\n', ControlFailure, "no"),
        (b'{"ok": false, "error": "no", "kind": "usage"}\n', ControlUsageError, "no"),
    ],
)
def test_parse_reply_errors(data, exc, message):
    with pytest.raises(exc, match=rf"^{message}$"):
        parse_reply(data)


def test_parse_reply_results():
    assert parse_reply(b'{"ok": true, "result": [1]}\n') == [1]
    assert parse_reply(b'{"ok": true}\n') is None


async def test_peer_that_closes_without_answering(home, nursery):
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(str(control_path(home)))
    listener.listen(1)

    async def rude() -> None:
        with listener:
            conn, _ = await listener.accept()
            with conn:
                await conn.recv(1000)
                await conn.send(b'{"ok": tr')

    nursery.start_soon(rude)
    with pytest.raises(ControlFailure, match=r"^the peer's answer was cut short$"):
        await ask_async(home, "status")


def test_error_classes():
    for cls in (PeerAlreadyRunning, ControlUsageError, _control.BadRequest):
        assert issubclass(cls, LocalError)
    for cls in (NoPeerRunning, ControlFailure):
        assert issubclass(cls, RemoteError)
    assert all(issubclass(c, SwarmError) for c in (PeerAlreadyRunning, NoPeerRunning))
