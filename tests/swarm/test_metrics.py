"""``/metrics``: the peer's figures in Prometheus's text format, on loopback only.

The families are read back with prometheus_client's own parser, so a name or a format that a
Prometheus server would refuse fails here. Placement and membership figures come from real peers
on the memory network (virtual time); the HTTP side from a real daemon on loopback.
"""

from __future__ import annotations

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from test_pairing import new_home, running
from test_placement_swarm import swarm

from homeswarm.errors import InvalidConfig
from homeswarm.kernels import UnknownKernel
from homeswarm.swarm._config import parse_settings
from homeswarm.swarm._control import ask_async
from homeswarm.swarm._http import Request, parse_request_line
from homeswarm.swarm._metrics import exposition


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, metric: str, **labels: str) -> float:
    return found[(metric, tuple(sorted(labels.items())))]


async def test_placement_and_membership_figures_move_with_what_the_peers_do(
    tmp_path, autojump_clock
):
    async with swarm(tmp_path) as s:
        laptop = s["laptop"]
        before = samples(exposition(laptop.peer)[0])
        assert value(before, "swarm_members", state="alive") == 3
        assert value(before, "swarm_members", state="dead") == 0
        assert value(before, "swarm_membership_messages_sent_total", kind="ping") > 0
        assert value(before, "swarm_device_battery_percent", device=s["phone"].id, name="phone")
        assert value(before, "swarm_device_rtt_seconds", device=s["server"].id, name="server") > 0
        for n in range(3):
            await laptop.run("echo", n, scope="public")
        with pytest.raises(UnknownKernel):
            await laptop.run("nope")
        s.crash("server")
        after_crash = await _until_dead(laptop.peer, s["server"].id)
        found = samples(after_crash)
        runs = {
            k: v for (name, k), v in found.items() if name == "swarm_placement_runs_total" and v > 0
        }
        assert sum(runs.values()) == 3
        assert value(found, "swarm_placement_run_seconds_count") == 3
        assert value(found, "swarm_placement_refusals_total", kernel="nope", reason="UnknownKernel")
        assert value(found, "swarm_members", state="dead") == 1
        sent_before = value(before, "swarm_membership_messages_sent_total", kind="ping")
        assert value(found, "swarm_membership_messages_sent_total", kind="ping") > sent_before


async def _until_dead(peer, device: str) -> bytes:
    with trio.fail_after(120):
        while peer.core.members[device].status != "dead":  # noqa: ASYNC110 - virtual time
            await trio.sleep(0.5)
    return exposition(peer)[0]


async def test_the_daemon_serves_metrics_on_loopback_and_says_where(tmp_path):
    ident = new_home(tmp_path / "laptop")
    async with running(ident):
        status = await ask_async(ident.home, "status")
        url = status["endpoints"]["metrics"]
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/metrics")
        assert status["endpoints"]["ui"].startswith(url.removesuffix("metrics") + "?token=")
        host, port = url.removeprefix("http://").split("/")[0].split(":")
        secret = '"a secret value"'
        await ask_async(ident.home, "vault.put", key="facts/k1", value=secret, scope="personal")
        head, body = await _get(host, int(port), "/metrics")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"text/plain" in head
        found = samples(body)
        assert value(found, "swarm_members", state="alive") == 1
        assert value(found, "swarm_vault_entries", scope="personal", collection="facts") == 1
        assert b"a secret value" not in body
        assert b"k1" not in body
        assert (await _get(host, int(port), "/nothing"))[0].startswith(b"HTTP/1.1 404")
        assert (await _raw(host, int(port), b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(
            b"HTTP/1.1 405"
        )
        assert (await _raw(host, int(port), b"\x00\xff junk\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (await ask_async(ident.home, "status"))["peers"]  # the peer is still there


async def test_metrics_can_be_turned_off(tmp_path):
    ident = new_home(tmp_path / "laptop")
    (ident.home / "swarm.toml").write_text(
        (ident.home / "swarm.toml").read_text() + '\n[http]\nlisten = ""\n'
    )
    from homeswarm.swarm._home import load_identity

    async with running(load_identity(ident.home)):
        status = await ask_async(ident.home, "status")
        assert status["endpoints"] == {"metrics": None, "ui": None}


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("0.0.0.0:9100", "only a loopback address"),
        ("192.168.1.4:9100", "only a loopback address"),
        ("127.0.0.1", "not HOST:PORT"),
        ("127.0.0.1:99999", "not HOST:PORT"),
    ],
)
def test_metrics_listen_only_on_loopback(listen, problem):
    with pytest.raises(InvalidConfig, match=problem):
        parse_settings(f'[http]\nlisten = "{listen}"\n')


def test_request_lines():
    assert parse_request_line(b"GET /metrics?x=1&t=a%20b HTTP/1.1\r\nHost: a\r\n\r\n") == (
        "GET",
        Request("/metrics", {"x": "1", "t": "a b"}),
    )
    assert parse_request_line(b"GET /metrics\r\n\r\n") is None
    assert parse_request_line(b"") is None
    assert parse_request_line(b"G\xffT / HTTP/1.1\r\n\r\n") is None


async def _get(host: str, port: int, path: str) -> tuple[bytes, bytes]:
    reply = await _raw(host, port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head, _, body = reply.partition(b"\r\n\r\n")
    return head, body


async def _raw(host: str, port: int, request: bytes) -> bytes:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(request)
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data
