"""Issue 12's revoke steps as a user types them on the demo swarm: the server (the first device),
the laptop (invited with ``--admin``, as ``swarm demo`` does) and the phone (not an admin), each
a daemon in this process on loopback, driven through the CLI.

`swarm revoke server` on the phone is refused in one line and audited; `swarm revoke phone` on
the laptop counts at once (one admin suffices for a non-admin) and the server drops the phone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from test_placement_cli import cli

from homeswarm.swarm._audit import audit_entries
from homeswarm.swarm._daemon import Daemon
from homeswarm.swarm._home import init_home, load_identity, load_roster

NETWORK: dict[str, object] = {"listen": ["/ip4/127.0.0.1/tcp/0"], "mdns": False}


@asynccontextmanager
async def running(home: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(load_identity(home), listen=["/ip4/127.0.0.1/tcp/0"], mdns=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        yield daemon
        nursery.cancel_scope.cancel()


async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait for a condition on the daemons' state, with a deadline (polled: nothing signals
    a roster change from outside the peer)."""
    with trio.move_on_after(timeout):
        while not check():  # noqa: ASYNC110 - no event to wait on
            await trio.sleep(0.05)
        return
    pytest.fail(f"not within {timeout:g} s: {what}")


async def test_the_phone_cannot_revoke_the_server_and_the_laptop_revokes_the_phone(
    tmp_path, capsys
):
    server = init_home(tmp_path / "server", name="server", role="server", network=NETWORK)
    homes = {"server": server.home, "laptop": tmp_path / "laptop", "phone": tmp_path / "phone"}
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            daemons = {"server": await stack.enter_async_context(running(server.home))}
            for name, admin in (("laptop", True), ("phone", False)):
                code, out, err = await cli(
                    capsys, "invite", *(["--admin"] * admin), "--home", str(server.home)
                )
                assert code == 0, err
                code, out, err = await cli(
                    capsys,
                    "join",
                    out.strip(),
                    "--name",
                    name,
                    "--role",
                    name,
                    "--home",
                    str(homes[name]),
                )
                assert code == 0, err
                daemons[name] = await stack.enter_async_context(running(homes[name]))
            ids = {name: load_identity(home).device_id for name, home in homes.items()}
            peers = {name: d.peer for name, d in daemons.items()}
            assert all(p is not None for p in peers.values())
            await until(
                lambda: all(
                    p.roster.admits(ids[n])
                    for p in peers.values()
                    for n in ids  # type: ignore[union-attr]
                ),
                "every device knows every other",
            )
            assert peers["server"].roster.admins() == {ids["server"], ids["laptop"]}  # type: ignore[union-attr]

            # the phone is no admin: refused in one line, nothing signed, audited
            code, out, err = await cli(capsys, "revoke", "server", "--home", str(homes["phone"]))
            assert code != 0
            assert out == ""
            assert err.count("\n") == 1, err
            assert "not an admin" in err
            assert "Traceback" not in err
            assert not peers["phone"].roster.revocations_of(ids["server"])  # type: ignore[union-attr]
            entries = audit_entries(homes["phone"])
            assert [(e.action, e.device) for e in entries] == [("revoke", ids["phone"])]

            # the laptop, an admin, revokes the phone alone: it counts at once, everywhere
            code, out, err = await cli(
                capsys, "revoke", "phone", "--json", "--home", str(homes["laptop"])
            )
            assert code == 0, err
            reply = json.loads(out)
            assert reply["counts"] is True
            assert reply["signed_by"] == ["laptop"]
            await until(
                lambda: not peers["server"].roster.admits(ids["phone"]),  # type: ignore[union-attr]
                "the server drops the phone",
            )
            assert peers["server"].roster.admits(ids["laptop"])
            assert peers["laptop"].roster.admins() == {ids["server"], ids["laptop"]}  # type: ignore[union-attr]
    assert not load_roster(load_identity(server.home)).admits(ids["phone"])
