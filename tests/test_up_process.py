"""`swarm up` as a user runs it: a real process, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import trio

from swarm.cli import main


def up_command(home, listen: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "swarm.cli",
        "up",
        "--home",
        str(home),
        "--no-mdns",
        "--listen",
        listen,
    ]


async def _ping(addr: str) -> dict:
    from transports.libp2p import Libp2pTransport

    async with Libp2pTransport(os.urandom(32)) as client:
        conn = await client.dial(addr.split("/p2p/")[1], [addr])
        return await conn.request({"type": "ping"})


@pytest.mark.slow
def test_up_serves_and_stops_on_sigterm(tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["init", "--name", "srv", "--role", "server", "--home", str(home)]) == 0
    capsys.readouterr()
    proc = subprocess.Popen(
        up_command(home, "/ip4/127.0.0.1/tcp/0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "listening on /ip4/127.0.0.1/tcp/" in line or not line:
                break
        addr = next(line for line in lines if "listening on" in line).split()[-1]
        # the peer really serves: a libp2p client gets a pong from it
        reply = trio.run(_ping, addr)
        assert reply["type"] == "pong"
        assert addr.endswith(reply["device"])
        # and a second peer on the same port is refused with one line
        second = subprocess.run(
            up_command(home, addr.split("/p2p/")[0]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1
        assert "already in use" in second.stderr
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 2.0
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
