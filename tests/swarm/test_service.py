"""``swarm service``: the unit and the agent it writes, what it refuses, and the peer's side of
``Type=notify`` (READY, then watchdog pings from the event loop).

Nothing here enables a real service: installs use ``--no-start`` and a temporary
``XDG_CONFIG_HOME``. The unit is checked by systemd's own ``systemd-analyze verify``.
"""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from homeswarm.cli import main
from homeswarm.cli._service import launchd_plist, ours, plan, systemd_unit, up_command
from homeswarm.swarm._daemon import _tell_systemd, sd_notify
from homeswarm.swarm._home import init_home

NETWORK: dict[str, object] = {"listen": ["/ip4/127.0.0.1/tcp/0"], "mdns": False}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    init_home(tmp_path / "home dir", name="server", role="server", network=NETWORK)
    return tmp_path / "home dir"


def unit_path(home: Path) -> Path:
    return home.parent / "config" / "systemd" / "user" / "swarm-server.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path):
    unit = tmp_path / "swarm-server.service"
    unit.write_text(systemd_unit(sys.executable, tmp_path / "a home with spaces", "server"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    broken = tmp_path / "swarm-broken.service"
    broken.write_text(systemd_unit("/no/such/python", tmp_path, "broken"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0  # the check is real: a missing interpreter fails it


def test_the_unit_runs_this_interpreter_on_this_home_and_restarts_on_failure(tmp_path):
    home = tmp_path / "50% of $HOME"
    text = systemd_unit("/opt/venv/bin/python", home, "server")
    assert text.startswith("# Written by `swarm service install`")
    lines = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")
    assert lines["Type"] == "notify"
    assert lines["Restart"] == "on-failure"
    assert int(lines["WatchdogSec"]) > 0
    assert lines["ExecStart"] == (
        '/opt/venv/bin/python -P -m homeswarm.cli up --home "' + str(tmp_path) + '/50%% of $$HOME"'
    )


def test_the_launchd_agent_round_trips(tmp_path):
    data = plistlib.loads(launchd_plist("/opt/venv/bin/python", tmp_path, "laptop"))
    assert data["Label"] == "org.homeswarm.laptop"
    assert data["ProgramArguments"] == up_command("/opt/venv/bin/python", tmp_path)
    assert data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["RunAtLoad"] is True
    agent = tmp_path / "org.homeswarm.laptop.plist"
    agent.write_bytes(launchd_plist("/opt/venv/bin/python", tmp_path, "laptop"))
    assert ours(agent)
    agent.write_bytes(plistlib.dumps({"Label": "com.example.other", "ProgramArguments": ["x"]}))
    assert not ours(agent)
    agent.write_bytes(b"not a plist")
    assert not ours(agent)
    assert plan(tmp_path, "laptop", platform="launchd").path.name == "org.homeswarm.laptop.plist"


def test_install_status_uninstall(home, capsys):
    assert main(["service", "install", "--dry-run", "--home", str(home)]) == 0
    shown = capsys.readouterr().out
    assert f"# {unit_path(home)}" in shown
    assert "ExecStart=" in shown
    assert not unit_path(home).exists()  # a dry run writes nothing

    assert main(["service", "status", "--home", str(home)]) == 1
    assert "not installed" in capsys.readouterr().out

    assert main(["service", "install", "--no-start", "--home", str(home), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["installed"] is True
    assert out["started"] is False
    assert out["path"] == str(unit_path(home))
    assert unit_path(home).read_text() == out["file"]
    assert stat.S_IMODE(unit_path(home).stat().st_mode) == 0o644

    assert main(["service", "install", "--no-start", "--home", str(home)]) == 2
    assert "already installed" in capsys.readouterr().err

    assert main(["service", "status", "--home", str(home), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["installed"] is True

    assert main(["service", "uninstall", "--home", str(home)]) == 0
    assert not unit_path(home).exists()
    capsys.readouterr()
    assert main(["service", "uninstall", "--home", str(home)]) == 1
    assert "not installed" in capsys.readouterr().err


def test_a_unit_it_did_not_write_is_never_touched(home, capsys):
    unit_path(home).parent.mkdir(parents=True)
    unit_path(home).write_text("[Service]\nExecStart=/bin/true\n")
    assert main(["service", "install", "--no-start", "--home", str(home)]) == 2
    assert "not written by swarm" in capsys.readouterr().err
    assert main(["service", "uninstall", "--home", str(home)]) == 2
    assert "not written by swarm" in capsys.readouterr().err
    assert unit_path(home).read_text() == "[Service]\nExecStart=/bin/true\n"


def test_service_needs_a_home(tmp_path, capsys):
    assert main(["service", "install", "--home", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Traceback" not in err


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_notify_does_nothing_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False


async def test_ready_then_watchdog_pings_from_the_loop(notify_socket, monkeypatch, autojump_clock):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    with trio.move_on_after(9.0):  # virtual: pings at 0, 2, 4, 6 and 8 s
        await _tell_systemd()
    got = []
    notify_socket.setblocking(False)
    while True:
        try:
            got.append(notify_socket.recv(64).decode())
        except BlockingIOError:
            break
    assert got == ["READY=1"] + ["WATCHDOG=1"] * 5


async def test_no_watchdog_when_systemd_watches_another_process(
    notify_socket, monkeypatch, autojump_clock
):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    with trio.fail_after(1):
        await _tell_systemd()  # returns at once
    assert notify_socket.recv(64) == b"READY=1"


@pytest.mark.slow
def test_swarm_up_tells_systemd_it_is_ready_and_stopping(home, notify_socket):
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.getsockname(), "PYTHONSAFEPATH": "1"}
    proc = subprocess.Popen(
        [*up_command(sys.executable, home)[:-2], "--home", str(home), "--no-mdns"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.monotonic()
        assert notify_socket.recv(64) == b"READY=1"
        assert time.monotonic() - started < 30
        proc.terminate()
        assert notify_socket.recv(64) == b"STOPPING=1"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
