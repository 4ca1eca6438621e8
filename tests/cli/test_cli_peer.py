"""The peer commands of the ``swarm`` CLI as a user types them: init options, the commands that
need a running peer (with and without one), join's refusals, power, and every command's --help.

Bad input is one line on stderr and exit 2; a failure elsewhere (no peer, an unreachable inviter)
is one line and exit 1; never a traceback.
"""

from __future__ import annotations

import json
import random
import re
import socket
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from homeswarm.cli import main
from homeswarm.cli._status import check_status_shape
from homeswarm.swarm._daemon import Daemon
from homeswarm.swarm._device import REAL_POWER, FixedLoad
from homeswarm.swarm._home import Identity, init_home, load_identity, load_roster
from homeswarm.swarm._invite import Invites
from homeswarm.swarm._peer import Peer, PeerOptions
from homeswarm.transports import InvalidArgument, MemoryNetwork

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
NETWORK: dict[str, object] = {"listen": LOOPBACK, "mdns": False}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``swarm ARGV``: its exit code (also from argparse's SystemExit), stdout and stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str) -> None:
    assert err.endswith("\n"), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def files(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


def config(home: Path) -> dict[str, dict[str, object]]:
    return tomllib.loads((home / "swarm.toml").read_text())


def a_code(tmp_path: Path, *, addrs: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/9",)) -> str:
    """A well-formed code from a swarm that is not running."""
    ident = init_home(tmp_path / "issuer", name="issuer", role="laptop")
    invites = Invites(ident.swarm_id, ident.device_id)
    code = invites.create(addrs=addrs, ttl=600, now=time.time(), rng=random.Random(3))
    return code.encode()


# --- init ----------------------------------------------------------------------------------------


def test_init_writes_scopes_and_relay_only(tmp_path, capsys):
    home = tmp_path / "h"
    code, out, err = run(
        capsys,
        "init",
        "--name",
        "relay",
        "--role",
        "server",
        "--scopes",
        "public",
        "--relay-only",
        "--home",
        str(home),
    )
    assert code == 0, err
    assert err == ""
    device = config(home)["device"]
    assert device["scopes"] == ["public"]
    assert device["relay_only"] is True
    assert "scopes: public (relay only)" in out
    settings = load_identity(home).settings.device
    assert settings.effective_scopes() == ("public",)
    assert settings.relay_only is True


def test_init_json_reports_scopes(tmp_path, capsys):
    home = tmp_path / "h"
    code, out, _ = run(
        capsys, "init", "--name", "p", "--role", "phone", "--scopes", " private , public ",
        "--home", str(home), "--json",
    )  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["scopes"] == ["private", "public"]
    assert doc["relay_only"] is False
    assert config(home)["device"]["scopes"] == ["private", "public"]


@pytest.mark.parametrize(
    ("role", "scopes"),
    [
        ("phone", ["public", "personal"]),
        ("laptop", ["public", "personal", "private"]),
        ("server", ["public", "personal", "private"]),
    ],
)
def test_init_default_scopes_follow_the_role(tmp_path, capsys, role, scopes):
    home = tmp_path / role
    code, out, err = run(capsys, "init", "--name", "d", "--role", role, "--home", str(home))
    assert code == 0, err
    device = config(home)["device"]
    assert device["role"] == role
    assert device["scopes"] == scopes
    assert device["relay_only"] is False
    assert f"scopes: {','.join(scopes)}\n" in out
    assert list(load_identity(home).settings.device.effective_scopes()) == scopes


@pytest.mark.parametrize(
    ("scopes", "problem"),
    [
        ("bogus", "'bogus' is not a scope"),
        ("", "at least one scope"),
        (",", "at least one scope"),
        ("public,bogus", "'bogus' is not a scope"),
        ("public,public", "twice"),
        ("Public", "'Public' is not a scope"),
    ],
)
def test_init_bad_scopes_exit_2_and_write_nothing(tmp_path, capsys, scopes, problem):
    home = tmp_path / "h"
    code, out, err = run(
        capsys, "init", "--name", "d", "--role", "phone", "--scopes", scopes, "--home", str(home)
    )
    assert code == 2
    assert out == ""
    assert_one_line(err)
    assert "--scopes" in err
    assert problem in err
    assert not home.exists()


# --- commands that need a running peer, when none runs -------------------------------------------


NEEDS_A_PEER = [
    ["status"],
    ["status", "--json"],
    ["invite"],
    ["invite", "--ttl", "60", "--json"],
    ["revoke", "x"],
    ["power", "--battery", "5"],
    ["power", "--plugged"],
]


@pytest.mark.parametrize("argv", NEEDS_A_PEER, ids=" ".join)
@pytest.mark.parametrize("initialised", [True, False], ids=["initialised", "empty home"])
def test_without_a_running_peer_exit_1_in_one_line(tmp_path, capsys, argv, initialised):
    home = tmp_path / "h"
    if initialised:
        init_home(home, name="d", role="laptop")
    before = files(home)
    code, out, err = run(capsys, *argv, "--home", str(home))
    assert code == 1
    assert out == ""
    assert_one_line(err)
    assert "no peer is running" in err
    assert f"swarm up --home {home}" in err  # says what to do
    assert files(home) == before


def test_power_needs_something_to_change(tmp_path, capsys):
    code, out, err = run(capsys, "power", "--home", str(tmp_path))
    assert code == 2
    assert out == ""
    assert_one_line(err)
    assert "--battery" in err
    assert "--plugged" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["power", "--plugged", "--unplugged"],
        ["power", "--battery", "half"],
        ["invite", "--ttl", "soon"],
        ["revoke"],
        ["status", "--interval", "x"],
    ],
    ids=" ".join,
)
def test_malformed_arguments_exit_2_in_one_line(tmp_path, capsys, argv):
    code, out, err = run(capsys, *argv, "--home", str(tmp_path))
    assert code == 2
    assert out == ""
    assert_one_line(err)


# --- join's refusals, before any network ---------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["hello", "", "swarm1-", "swarm1-!!!!", "swarm9-abcdef", "http://example.com/"]
)
def test_join_with_garbage_exits_2_in_one_line(tmp_path, capsys, text):
    home = tmp_path / "phone"
    code, out, err = run(
        capsys, "join", text, "--name", "phone", "--role", "phone", "--home", str(home)
    )
    assert code == 2
    assert out == ""
    assert_one_line(err)
    assert "code" in err
    assert files(home) == []


def test_join_with_a_mistyped_code_says_mistyped(tmp_path, capsys):
    good = a_code(tmp_path)
    home = tmp_path / "phone"
    middle = len(good) // 2
    for at in (len("swarm1-"), middle, len(good) - 1):
        typo = good[:at] + ("b" if good[at] == "a" else "a") + good[at + 1 :]
        code, out, err = run(
            capsys, "join", typo, "--name", "phone", "--role", "phone", "--home", str(home)
        )
        assert code == 2
        assert out == ""
        assert_one_line(err)
        assert "mistyped" in err
    assert files(home) == []


def test_join_with_an_expired_code_says_expired(tmp_path, capsys):
    ident = init_home(tmp_path / "issuer", name="issuer", role="laptop")
    invites = Invites(ident.swarm_id, ident.device_id)
    old = invites.create(
        addrs=["/ip4/127.0.0.1/tcp/9"], ttl=60, now=time.time() - 120, rng=random.Random(4)
    )
    home = tmp_path / "phone"
    code, out, err = run(
        capsys, "join", old.encode(), "--name", "phone", "--role", "phone", "--home", str(home)
    )
    assert code == 2
    assert out == ""
    assert_one_line(err)
    assert "expired" in err
    assert "swarm invite" in err
    assert files(home) == []


def test_join_into_an_initialised_home_exits_2_and_changes_nothing(tmp_path, capsys):
    home = tmp_path / "phone"
    init_home(home, name="phone", role="phone")
    before = {p.name: p.read_bytes() for p in home.iterdir()}
    code, out, err = run(
        capsys, "join", a_code(tmp_path), "--name", "phone", "--role", "phone", "--home", str(home)
    )
    assert code == 2
    assert out == ""
    assert_one_line(err)
    assert "already holds a swarm identity" in err
    assert {p.name: p.read_bytes() for p in home.iterdir()} == before


def test_join_with_bad_scopes_exits_2_before_anything(tmp_path, capsys):
    home = tmp_path / "phone"
    code, _, err = run(
        capsys, "join", a_code(tmp_path), "--name", "phone", "--role", "phone",
        "--scopes", "secret", "--home", str(home),
    )  # fmt: skip
    assert code == 2
    assert_one_line(err)
    assert "'secret' is not a scope" in err
    assert files(home) == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_join_when_the_inviter_is_not_running_exits_1_in_one_line(tmp_path, capsys):
    code_text = a_code(tmp_path, addrs=(f"/ip4/127.0.0.1/tcp/{_closed_port()}",))
    home = tmp_path / "phone"
    started = time.monotonic()
    code, out, err = run(
        capsys, "join", code_text, "--name", "phone", "--role", "phone", "--home", str(home)
    )
    assert time.monotonic() - started < 10
    assert code == 1
    assert out == ""
    assert_one_line(err)
    assert "cannot reach the inviter" in err
    assert files(home) == []


# --- --help --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("init", ["--name", "--role", "--scopes", "--relay-only", "--home", "--json"]),
        ("invite", ["--ttl", "--home", "--json"]),
        ("join", ["CODE", "--name", "--role", "--scopes", "--relay-only", "--home", "--json"]),
        ("revoke", ["DEVICE", "--home", "--json"]),
        ("status", ["--home", "--json", "--watch", "--interval"]),
        ("power", ["--battery", "--plugged", "--unplugged", "--home", "--json"]),
        ("demo", ["--peers", "--seconds", "--json"]),
    ],
)
def test_help_of_each_command(capsys, command, options):
    code, out, err = run(capsys, command, "--help")
    assert code == 0
    assert err == ""
    assert out.startswith(f"usage: swarm {command}")
    for option in options:
        assert option in out, option


def test_top_level_help_lists_every_command(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("init", "invite", "join", "revoke", "up", "status", "power", "demo"):
        assert command in out


# --- against a running peer ----------------------------------------------------------------------


@asynccontextmanager
async def running(ident: Identity) -> AsyncIterator[Daemon]:
    daemon = Daemon(ident, listen=LOOPBACK, mdns=False)
    with trio.fail_after(25):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            yield daemon
            nursery.cancel_scope.cancel()


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``swarm ARGV`` in a worker thread, so this trio run keeps serving the daemon."""
    return await trio.to_thread.run_sync(partial(run, capsys, *argv))


async def test_invite_join_status_revoke_through_the_cli(tmp_path, capsys):
    laptop = init_home(tmp_path / "laptop", name="laptop", role="laptop", network=NETWORK)
    home, phone_home = str(laptop.home), str(tmp_path / "phone")
    async with running(laptop) as daemon:
        code, out, err = await cli(capsys, "invite", "--home", home)
        assert code == 0, err
        assert out.startswith("swarm1-")
        assert out.count("\n") == 1
        invite = out.strip()

        code, out, err = await cli(
            capsys, "join", invite, "--name", "phone", "--role", "phone", "--home", phone_home
        )
        assert code == 0, err
        assert f"joined swarm {laptop.swarm_id} (2 devices)" in out
        phone = load_identity(Path(phone_home))
        assert phone.device_id in out
        assert f"swarm up --home {phone_home}" in out
        assert daemon.peer is not None
        assert daemon.peer.roster.admits(phone.device_id)

        # the same code again: refused in one line, nothing written
        code, out, err = await cli(
            capsys,
            "join",
            invite,
            "--name",
            "tab",
            "--role",
            "laptop",
            "--home",
            str(tmp_path / "t"),
        )
        assert code in (1, 2)
        assert out == ""
        assert_one_line(err)
        assert files(tmp_path / "t") == []

        code, out, err = await cli(capsys, "status", "--json", "--home", home)
        assert code == 0, err
        status = json.loads(out)
        assert check_status_shape(status) == []
        assert [p["id"] for p in status["peers"] if p["self"]] == [laptop.device_id]

        code, out, err = await cli(capsys, "status", "--home", home)
        assert code == 0, err
        assert "laptop" in out

        code, out, err = await cli(capsys, "invite", "--ttl", "30", "--json", "--home", home)
        assert code == 0, err
        assert json.loads(out)["ttl"] == 30
        assert json.loads(out)["code"].startswith("swarm1-")

        for ttl in ("0", "-5", "86401", "nan", "inf"):
            code, out, err = await cli(capsys, "invite", "--ttl", ttl, "--home", home)
            assert code == 2, ttl
            assert out == ""
            assert_one_line(err)
            # (nan and inf are refused before the peer sees them, as "not JSON")
            assert "24 hours" in err or "positive number" in err or "finite" in err

        code, out, err = await cli(capsys, "revoke", "phone", "--home", home)
        assert code == 0, err
        assert f"revoked phone ({phone.device_id})" in out
        assert not daemon.peer.roster.admits(phone.device_id)
        assert not load_roster(laptop).admits(phone.device_id)

        for who, problem in [
            ("phone", "no device 'phone'"),
            ("nobody", "no device 'nobody'"),
            ("laptop", "cannot revoke itself"),
            (laptop.device_id, "cannot revoke itself"),
        ]:
            code, out, err = await cli(capsys, "revoke", who, "--home", home)
            assert code == 2, who
            assert out == ""
            assert_one_line(err)
            assert problem in err

        # this device reads its real battery: power cannot be set
        code, out, err = await cli(capsys, "power", "--battery", "5", "--home", home)
        assert code == 2
        assert out == ""
        assert_one_line(err)
        assert "simulated" in err


async def test_power_of_a_simulated_device_through_the_cli(tmp_path, capsys):
    ident = init_home(
        tmp_path / "sim",
        name="sim",
        role="phone",
        network=NETWORK,
        extra={"power": {"source": "simulated", "battery_percent": 50.0, "plugged": True}},
    )
    home = str(ident.home)
    async with running(ident) as daemon:
        code, out, err = await cli(
            capsys, "power", "--battery", "5", "--unplugged", "--json", "--home", home
        )
        assert code == 0, err
        reading = json.loads(out)
        assert reading["battery_percent"] == 5.0
        assert reading["plugged"] is False
        assert reading["minutes_left"] == pytest.approx(25.0)  # 5 % at 6 W of 50 Wh: 12 %/h

        code, out, err = await cli(capsys, "status", "--json", "--home", home)
        assert code == 0, err
        me = json.loads(out)["peers"][0]
        assert me["power"]["plugged"] is False
        assert me["power"]["battery_percent"] == pytest.approx(5.0, abs=0.1)

        code, out, err = await cli(capsys, "power", "--plugged", "--home", home)
        assert code == 0, err
        assert re.fullmatch(r"power: \d+\.\d%, plugged in\n", out), out  # one decimal
        assert daemon.peer is not None
        assert daemon.peer.power.read(time.time()).plugged is True

        for battery in ("150", "-1", "nan"):
            code, out, err = await cli(capsys, "power", "--battery", battery, "--home", home)
            assert code == 2, battery
            assert out == ""
            assert_one_line(err)
            assert "between 0 and 100" in err or "finite" in err
        # a refused change changes nothing
        assert daemon.peer.power.read(time.time()).battery_percent == pytest.approx(5.0, abs=0.1)


# --- Peer.set_power, on the memory network in virtual time ---------------------------------------


WALL_START = 1_000.0  # a simulator's wall clock, far from the real one


@asynccontextmanager
async def memory_peer(tmp_path: Path, power: dict[str, object]) -> AsyncIterator[Peer]:
    ident = init_home(tmp_path / "sim", name="sim", role="phone", extra={"power": power})
    network = MemoryNetwork(random.Random(5))
    transport = network.transport(ident.device_id)
    peer = Peer(
        ident,
        load_roster(ident),
        PeerOptions(
            listen_addrs=lambda: transport.addrs,
            rng=random.Random(6),
            wall_clock=lambda: WALL_START + trio.current_time(),
            load=FixedLoad(10.0, 1000.0),
            persist=False,
        ),
    )
    async with transport, trio.open_nursery() as nursery:
        await nursery.start(peer.run, transport)
        yield peer
        nursery.cancel_scope.cancel()


def own_power(peer: Peer) -> dict[str, object]:
    power: dict[str, object] = peer.status()["peers"][0]["power"]
    return power


async def test_set_power_on_real_power_is_refused(tmp_path, autojump_clock):
    async with memory_peer(tmp_path, {"source": "device"}) as peer:
        before = own_power(peer)
        with pytest.raises(InvalidArgument, match="simulated") as info:
            peer.set_power(5.0, None)
        assert str(info.value) == REAL_POWER
        with pytest.raises(InvalidArgument):
            peer.set_power(None, True)
        assert own_power(peer) == before


async def test_set_power_on_a_simulated_device(tmp_path, autojump_clock):
    sim = {"source": "simulated", "battery_percent": 80.0, "plugged": True}
    async with memory_peer(tmp_path, sim) as peer:
        version = peer.state.version if peer.state else -1
        assert peer.set_power(5.0, False) == {
            "battery_percent": 5.0,
            "plugged": False,
            "minutes_left": pytest.approx(25.0),
        }
        # the new state is sampled and gossiped at once
        assert peer.state is not None
        assert peer.state.version > version
        assert own_power(peer) == {
            "battery_percent": 5.0,
            "plugged": False,
            "minutes_left": pytest.approx(25.0),
        }
        # refused values change nothing
        for battery, plugged in [(150.0, None), (-0.1, None), (float("nan"), None), (None, 1)]:
            with pytest.raises(InvalidArgument):
                peer.set_power(battery, plugged)
        assert own_power(peer)["battery_percent"] == 5.0
        assert own_power(peer)["plugged"] is False


async def test_set_power_follows_the_peers_wall_clock(tmp_path, autojump_clock):
    sim = {"source": "simulated", "battery_percent": 80.0, "plugged": False}
    async with memory_peer(tmp_path, sim) as peer:
        reading = peer.set_power(None, False)  # only confirms "unplugged"
        assert reading["battery_percent"] == pytest.approx(80.0, abs=0.1)
        peer.set_power(50.0, None)
        await trio.sleep(3600)  # virtual: an hour unplugged at 12 %/h
        peer.refresh_state(force=True)
        assert own_power(peer)["battery_percent"] == pytest.approx(38.0, abs=0.5)
