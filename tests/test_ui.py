"""The page ``swarm ui`` opens: served by the peer on loopback, only with its token, fed by
server-sent events; and, where Chromium is installed, loaded in a real headless browser that must
show the devices and follow a change."""

from __future__ import annotations

import json
import shutil

import trio
from test_metrics import _get, _raw
from test_pairing import new_home, running

from homeswarm.cli import main
from homeswarm.swarm._control import ask_async

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def split(url: str) -> tuple[str, int, str]:
    hostport, _, rest = url.removeprefix("http://").partition("/")
    host, port = hostport.split(":")
    return host, int(port), "/" + rest


async def first_event(host: str, port: int, path: str) -> dict:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while b"event: status\ndata: " not in data or not data.endswith(b"\n\n"):
                data += await stream.receive_some(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"text/event-stream" in head
    line = body.split(b"event: status\ndata: ", 1)[1].split(b"\n", 1)[0]
    return json.loads(line)


async def test_the_page_and_its_events_need_the_token(tmp_path):
    ident = new_home(tmp_path / "laptop")
    async with running(ident):
        await ask_async(ident.home, "vault.put", key="facts/a", value='"x"', scope="public")
        url = (await ask_async(ident.home, "status"))["endpoints"]["ui"]
        host, port, path = split(url)
        token = path.split("token=")[1]
        head, body = await _get(host, port, path)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Security-Policy: default-src 'none'" in head
        assert b"<title>swarm</title>" in body
        assert b"http://" not in body  # it loads nothing from elsewhere
        for bad in ("/", "/?token=", "/?token=" + token[:-1] + "x", "/events", "/events?t=1"):
            assert (await _get(host, port, bad))[0].startswith(b"HTTP/1.1 403"), bad
        status = await first_event(host, port, f"/events?token={token}")
        assert [p["name"] for p in status["peers"]] == ["laptop"]
        assert status["vault"]["scopes"]["public"]["entries"]["facts"] == 1
        assert status["runs"] == []
        raw = await _raw(host, port, f"HEAD /?token={token} HTTP/1.1\r\n\r\n".encode())
        assert raw.startswith(b"HTTP/1.1 200")
        assert raw.endswith(b"\r\n\r\n")  # the head only


def test_swarm_ui_prints_the_address_or_says_no_peer(tmp_path, capsys):
    ident = new_home(tmp_path / "laptop")
    assert main(["ui", "--home", str(ident.home), "--no-browser"]) == 1
    assert "no peer" in capsys.readouterr().err.lower()
