"""A command that only asks the running peer loads only what it runs (issue 11).

``swarm vault get/put/ls``, ``swarm status`` and ``swarm --help`` talk to the local peer over its
control socket (or print the commands): none may import the network stack, the CRDT, age, the
kernels, Ray or torch, nor another command's module. bench/bench_cli.py times them; here the import
set is asserted, which a loaded machine cannot blur.
"""

from __future__ import annotations

import json
import os
import sys

import trio

from homeswarm.cli import _main
from homeswarm.swarm._daemon import Daemon
from homeswarm.swarm._home import init_home

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]

# what a command asking the peer must never load
HEAVY = (
    "trio",
    "libp2p",
    "pycrdt",
    "pyrage",
    "cryptography",
    "msgpack",
    "sqlite3",
    "psutil",
    "numpy",
    "torch",
    "ray",
    "homeswarm.transports",
    "homeswarm.kernels",
    "homeswarm.placement",
    "homeswarm.simulations",
    "homeswarm.learning",
    "homeswarm.vault._replica",
    "homeswarm.swarm._control",  # the server side
    "homeswarm.cli._service",
    "homeswarm.cli._demo",
    "homeswarm.cli._simulate",
)

PROBE = (
    "import json, sys\n"
    "from homeswarm.cli import main\n"
    "try:\n"
    "    rc = main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    rc = exc.code\n"
    "heavy = json.loads(sys.stdin.read())\n"
    "print('\\n' + json.dumps([rc, sorted(m for m in heavy if m in sys.modules)]))\n"
)


async def loaded_by(*argv: str) -> tuple[object, list[str]]:
    """The exit code of ``swarm ARGV`` in a fresh interpreter, and which of HEAVY it loaded."""
    done = await trio.run_process(
        [sys.executable, "-P", "-c", PROBE, *argv],
        stdin=json.dumps(HEAVY).encode(),
        capture_stdout=True,
        capture_stderr=True,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )
    rc, heavy = json.loads(done.stdout.decode().splitlines()[-1])
    assert isinstance(heavy, list)
    return rc, heavy


async def test_commands_that_ask_the_peer_load_only_what_they_run(tmp_path):
    ident = init_home(
        tmp_path / "up", name="up", role="laptop", network={"listen": LOOPBACK, "mdns": False}
    )
    home = ("--home", str(ident.home))
    daemon = Daemon(ident, listen=LOOPBACK, mdns=False)
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            assert await loaded_by("vault", "put", "facts/x", "v", *home) == (0, [])
            assert await loaded_by("vault", "get", "facts/x", *home) == (0, [])
            assert await loaded_by("vault", "ls", *home) == (0, [])
            assert await loaded_by("status", *home) == (0, [])
            # the help lists every command, so every command module adds its own
            tables = [
                "homeswarm.cli._service",
                "homeswarm.cli._simulate",
            ]
            assert await loaded_by("--help") == (0, tables)
            nursery.cancel_scope.cancel()


async def test_the_probe_sees_a_heavy_import(tmp_path):
    # the check can fail: with no peer running, `vault get` opens the store itself and is caught
    # loading the replica (but still not the network stack)
    ident = init_home(tmp_path / "solo", name="solo", role="laptop")
    rc, heavy = await loaded_by("vault", "get", "facts/x", "--home", str(ident.home))
    assert rc == 1  # no such entry: the store was opened and asked
    assert {"pycrdt", "pyrage", "sqlite3", "homeswarm.vault._replica"} <= set(heavy)
    assert "trio" not in heavy
    assert "libp2p" not in heavy


def test_each_command_is_added_by_the_module_the_table_names():
    listed = [name for _, _, names in _main.COMMANDS for name in names]
    assert len(listed) == len(set(listed))
    full = _main.build_parser()
    (sub,) = (a for a in full._actions if a.dest == "command")
    assert list(sub.choices) == listed  # the table is complete and in the help's order
    for _, _, names in _main.COMMANDS:
        alone = _main.build_parser(names[0])
        (sub,) = (a for a in alone._actions if a.dest == "command")
        assert sorted(sub.choices) == sorted(names)
    unknown = _main.build_parser("no-such-command")
    (sub,) = (a for a in unknown._actions if a.dest == "command")
    assert list(sub.choices) == listed  # a typo gets every choice in its error


def test_the_command_is_the_first_word_that_is_not_an_option():
    assert _main.command_of(["-v", "vault", "get", "k"]) == "vault"
    assert _main.command_of(["--verbose", "--verbose", "status"]) == "status"
    assert _main.command_of(["--help"]) is None
    assert _main.command_of([]) is None


async def test_a_read_with_no_peer_running_takes_the_view_and_skips_the_replica(tmp_path):
    # the first direct open (here a put) leaves a view; a get after it reads only that: no
    # pycrdt, no replica, no device keys (cryptography), just the view's age, SQLite's stamp
    # and msgpack
    ident = init_home(tmp_path / "solo", name="solo", role="laptop")
    home = ("--home", str(ident.home))
    rc, heavy = await loaded_by("vault", "put", "facts/x", "v", *home)
    assert rc == 0
    assert "pycrdt" in heavy
    for argv in (("vault", "get", "facts/x"), ("vault", "ls")):
        rc, heavy = await loaded_by(*argv, *home)
        assert (rc, heavy) == (0, ["msgpack", "pyrage", "sqlite3"])
