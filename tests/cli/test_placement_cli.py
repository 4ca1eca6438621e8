"""``swarm run`` and ``swarm kernels`` as a user types them, against peers on the memory network
(real clock: the CLI talks to each peer's real control socket from a worker thread).

The user's "done when": ``swarm run embed "hello world" --explain`` returns 384 numbers and says why
the device was chosen; a private kernel never lands on a device without that scope; unplugging the
laptop moves work to the server. Bad input and refusals are one line and exit 2.
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from test_placement_swarm import LAPTOP, PHONE, SERVER, Spec, make_homes

from homeswarm.cli import main
from homeswarm.cli._placement import parse_input
from homeswarm.cli._status import kernels_line
from homeswarm.kernels import embed
from homeswarm.kernels.testing import make_registry
from homeswarm.placement import InlineExecutor
from homeswarm.swarm import Peer, PeerOptions, decode_state
from homeswarm.swarm._control import control_path, serve_control
from homeswarm.swarm._device import FixedLoad
from homeswarm.swarm._placement_service import PlacementService
from homeswarm.transports import InvalidArgument, Link, MemoryNetwork


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return await trio.to_thread.run_sync(partial(run, capsys, *argv))


def one_line(err: str) -> None:
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


@asynccontextmanager
async def running(tmp_path: Path, specs: Sequence[Spec]) -> AsyncIterator[dict[str, Peer]]:
    """Each device's peer, on a memory network, with its control socket in its home."""
    network = MemoryNetwork(random.Random(2), default_link=Link(latency=0.0005))
    registry = make_registry(with_builtins=True)
    idents = make_homes(tmp_path, specs)
    peers: dict[str, Peer] = {}
    async with trio.open_nursery() as nursery:
        for i, (spec, ident) in enumerate(zip(specs, idents, strict=True)):
            transport = network.transport(ident.device_id)
            service = PlacementService(ident.settings, registry=registry, executor=InlineExecutor())
            seeds = [(idents[0].device_id, ["/memory/" + idents[0].device_id])] if i else []
            peer = Peer(
                ident,
                load_roster_of(ident),
                PeerOptions(
                    listen_addrs=lambda t=transport: t.addrs,  # type: ignore[misc]
                    seeds=seeds,
                    rng=random.Random(i),
                    load=FixedLoad(10.0, 8000.0),
                    persist=False,
                    services=[service],
                ),
            )
            peers[spec.name] = peer
            await nursery.start(_serve, peer, transport)
            await nursery.start(serve_control, control_path(ident.home), partial(_control, peer))

        def ready() -> bool:
            for a in peers.values():
                for b in peers.values():
                    member = a.core.members.get(b.identity.device_id)  # type: ignore[union-attr]
                    if member is None or member.status != "alive" or not member.state:
                        return False
                    state = decode_state(member.state)
                    if state is None or not state.kernels:
                        return False
            return True

        with trio.fail_after(20):
            while not ready():  # noqa: ASYNC110 - polling peers' state, which has no event
                await trio.sleep(0.05)
        yield peers
        nursery.cancel_scope.cancel()


def load_roster_of(ident: Any) -> Any:
    from homeswarm.swarm._home import load_roster

    return load_roster(ident)


async def _serve(
    peer: Peer, transport: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    async with transport:
        await peer.run(transport, task_status=task_status)


async def _control(peer: Peer, op: str, args: dict[str, Any]) -> Any:
    """What the daemon answers on the control socket (the parts these commands use)."""
    if op == "status":
        return peer.status()
    if op == "power":
        return peer.set_power(args.get("battery"), args.get("plugged"))
    return await peer.control(op, args)


def test_input_is_text_or_json():
    assert parse_input(None) is None
    assert parse_input("hello world") == "hello world"
    assert parse_input('["a", "b"]') == ["a", "b"]
    assert parse_input(' {"x": 1}') == {"x": 1}
    assert parse_input("42") == "42"  # text unless it starts like JSON
    assert parse_input("-", io.StringIO('["from", "stdin"]\n')) == ["from", "stdin"]
    with pytest.raises(InvalidArgument, match="starts like JSON but is not JSON"):
        parse_input("[1, 2")


def test_the_status_line_says_who_holds_what_and_survives_garbage():
    held = [
        {"device": "L", "kernel": "embed", "executor": "ray", "pid": 42, "runs": 3, "running": 0},
        {"device": "S", "kernel": "embed", "executor": "ray", "pid": None, "runs": 0, "running": 1},
        {"device": "S", "kernel": "\x1b[31mred"},  # malformed: left out
        "junk",
    ]
    section = {"executor": "ray", "kernels": ["embed"], "held": held}
    assert kernels_line(section, {"L": "laptop", "S": "server"}) == (
        "kernels: ray here; laptop holds embed (ray, pid 42, 3 runs); "
        "server holds embed (ray, 0 runs, 1 running)"
    )
    assert kernels_line({"executor": "inline", "held": []}, {}) == "kernels: inline here"
    assert kernels_line({"held": 5}, {}) is None
    assert kernels_line(None, {}) is None


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("run", ["KERNEL", "INPUT", "--explain", "--scope", "--timeout", "--home", "--json"]),
        ("kernels", ["--home", "--json"]),
    ],
)
def test_help(capsys, command, options):
    code, out, err = run(capsys, command, "--help")
    assert code == 0
    assert err == ""
    assert out.startswith(f"usage: swarm {command}")
    for option in options:
        assert option in out


def test_kernels_without_a_peer_lists_this_devices_registry(tmp_path, capsys):
    code, out, err = run(capsys, "kernels", "--home", str(tmp_path))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:7] == ["KERNEL", "ENERGY", "SCOPE", "CPU", "MEMORY", "BUDGET", "STATE"]
    assert any(line.startswith("embed ") and "medium" in line for line in lines)
    code, out, err = run(capsys, "kernels", "--json", "--home", str(tmp_path))
    doc = json.loads(out)
    (embed_entry,) = [k for k in doc["kernels"] if k["name"] == "embed"]
    assert embed_entry["needs"]["scope"] == "personal"
    assert embed_entry["devices"] is None


def test_run_without_a_peer_is_one_line_exit_1(tmp_path, capsys):
    code, out, err = run(capsys, "run", "echo", "x", "--home", str(tmp_path))
    assert code == 1
    assert out == ""
    one_line(err)
    assert "no peer is running" in err


@pytest.mark.parametrize(
    "argv",
    [["run"], ["run", "embed", "[1,"], ["run", "echo", "x", "--scope", "secret"]],
    ids=" ".join,
)
def test_malformed_arguments_exit_2_before_any_peer(tmp_path, capsys, argv):
    code, out, err = run(capsys, *argv, "--home", str(tmp_path))
    assert code == 2
    assert out == ""
    one_line(err)


async def test_swarm_run_as_a_user_types_it(tmp_path, capsys):
    async with running(tmp_path, (PHONE, LAPTOP, SERVER)) as peers:
        phone, laptop = str(tmp_path / "phone"), str(tmp_path / "laptop")

        # text in, result and placement out
        code, out, err = await cli(capsys, "run", "echo", "hello", "--home", laptop)
        assert code == 0, err
        assert out.splitlines() == ['"hello"', "placed on laptop (inline)"]

        # --json: one object with the documented keys
        code, out, err = await cli(
            capsys, "run", "echo", '{"a": [1, 2]}', "--json", "--home", phone
        )
        assert code == 0, err
        doc = json.loads(out)
        assert {"kernel", "device", "executor", "result", "elapsed_ms", "explain"} <= set(doc)
        assert (doc["kernel"], doc["device"], doc["result"]) == ("echo", "phone", {"a": [1, 2]})
        assert doc["explain"] == []  # only with --explain
        assert doc["elapsed_ms"] >= 0

        # a private kernel never lands on the phone, and --explain says why
        code, out, err = await cli(capsys, "run", "secret", "x", "--explain", "--home", phone)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0] == '"x"'
        assert lines[1] in ("placed on laptop (inline)", "placed on server (inline)")
        explained = {line.split()[0]: line for line in lines[2:]}
        assert set(explained) == {"phone", "laptop", "server"}
        assert "excluded   scope: may not hold private data" in explained["phone"]
        chosen = lines[1].split()[2]
        assert "chosen" in explained[chosen]
        assert "cost " in explained[chosen]

        # unplugging the laptop moves work to the server (once the laptop has measured its RTT)
        server_id = peers["server"].identity.device_id
        with trio.fail_after(10):
            while peers["laptop"].core.members[server_id].rtt is None:  # type: ignore[union-attr]  # noqa: ASYNC110
                await trio.sleep(0.05)
        code, out, err = await cli(capsys, "run", "medium", "x", "--home", laptop)
        assert out.splitlines()[-1] == "placed on laptop (inline)"
        code, out, err = await cli(
            capsys, "power", "--unplugged", "--battery", "30", "--home", laptop
        )
        assert code == 0, err
        code, out, err = await cli(capsys, "run", "medium", "x", "--home", laptop)
        assert code == 0, err
        assert out.splitlines()[-1] == "placed on server (inline)"

        # unknown kernel, wrong shape, refusal: one line, exit 2
        for argv, words in [
            (["run", "nope"], "unknown kernel 'nope'"),
            (["run", "classify", "just text"], "classify: input must be {"),
            (["run", "secret", "x", "--scope", "public"], "would lower it"),
        ]:
            code, out, err = await cli(capsys, *argv, "--home", phone)
            assert code == 2, argv
            assert out == ""
            one_line(err)
            assert words in err

        # a kernel that fails is exit 1, one line
        code, out, err = await cli(capsys, "run", "boom", "--home", laptop)
        assert code == 1
        one_line(err)
        assert "boom, as asked" in err

        # swarm kernels, with a peer: which devices offer each kernel, and which hold it
        code, out, err = await cli(capsys, "kernels", "--json", "--home", laptop)
        assert code == 0, err
        doc = json.loads(out)
        by_name = {k["name"]: k for k in doc["kernels"]}
        assert sorted(by_name["echo"]["devices"]) == ["laptop", "phone", "server"]
        assert "echo" in [h["kernel"] for h in doc["held"]]
        code, out, err = await cli(capsys, "kernels", "--home", laptop)
        assert code == 0, err
        table, held = out.split("\nheld now:\n")
        assert table.splitlines()[0].split()[-2:] == ["DEVICES", "WHAT"]
        rows = dict(line.strip().split(": ", 1) for line in held.splitlines())
        assert rows["laptop"].startswith(f"echo (inline, pid {os.getpid()}, ")
        assert "medium (inline" in rows["server"]


async def test_no_device_allowed_is_one_line_naming_the_constraints(tmp_path, capsys):
    specs = (PHONE, Spec("laptop", "laptop", scopes=("public", "personal")))
    async with running(tmp_path, specs):
        code, out, err = await cli(capsys, "run", "secret", "x", "--home", str(tmp_path / "phone"))
        assert code == 2
        assert out == ""
        one_line(err)
        assert "no device may run secret (private data, tiny work)" in err
        assert "laptop: scope: may not hold private data" in err
        assert "phone: scope: may not hold private data" in err


@pytest.mark.skipif(not embed.is_available(), reason="the model is not installed")
async def test_embed_hello_world_explained(tmp_path, capsys):
    async with running(tmp_path, (LAPTOP, PHONE)):
        home = str(tmp_path / "laptop")
        code, out, err = await cli(
            capsys, "run", "embed", "hello world", "--explain", "--home", home
        )
        assert code == 0, err
        first, placed, *why = out.splitlines()
        vector = json.loads(first)
        assert len(vector) == 384
        assert all(isinstance(x, float) for x in vector)
        assert placed == "placed on laptop (inline)"
        assert why[0].split()[:2] == ["laptop", "chosen"]
        assert "latency" in why[0]
        assert "energy" in why[0]
        assert why[1].split()[:2] == ["phone", "candidate"]
