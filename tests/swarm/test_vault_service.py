"""The vault as a user meets it: the ``vault`` service inside real peers (on the memory network,
in virtual time), and ``swarm vault ...`` on the command line, with and without a running peer.

The issue's "done when", device by device: a fact put on one device is readable on the others
within a second; a private fact is readable neither on a device without that scope nor on a
relay; a device stopped while both sides write converges once restarted; after a revocation new
entries are unreadable to the revoked device; no value written is in any file of the homes.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pyrage
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from homeswarm.cli import main
from homeswarm.cli._status import check_status_shape
from homeswarm.swarm._audit import NotPermitted
from homeswarm.swarm._certs import Grant, issue_certificate
from homeswarm.swarm._daemon import Daemon
from homeswarm.swarm._device import FixedLoad
from homeswarm.swarm._files import VIEW_FILE
from homeswarm.swarm._home import (
    ROOT_KEY,
    Identity,
    device_config,
    init_home,
    load_identity,
    load_roster,
    public_bytes,
    save_roster,
    write_home,
)
from homeswarm.swarm._peer import Peer, PeerOptions
from homeswarm.swarm._trust import grant_device
from homeswarm.swarm._vault_service import VaultService
from homeswarm.swarm._vault_view import read_view
from homeswarm.transports import Link, MemoryNetwork, peer_id_from_public_key
from homeswarm.vault import ScopeNotAllowed

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
WALL = float(int(time.time()) + 100_000)  # after init_home (real clock): dates order authority


# --- homes of one swarm, without the network ------------------------------------------------------


# every device a full member, its view whole at once: a phone is light by default and hears
# the others only at its heartbeats (that is tests/swarm/test_light_status.py's)
FULL = {"membership": {"light": "off"}}


def make_homes(root: Path, specs: list[dict[str, object]]) -> list[Identity]:
    """Homes of one swarm, every one knowing every other (as after pairing)."""
    first = specs[0]
    network = first.get("network")
    ident = init_home(
        root / str(first["name"]),
        name=str(first["name"]),
        role=str(first["role"]),
        scopes=first.get("scopes"),  # type: ignore[arg-type]
        relay_only=bool(first.get("relay_only", False)),
        network=network,  # type: ignore[arg-type]
        extra=FULL,
    )
    key = serialization.load_pem_private_key((ident.home / ROOT_KEY).read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    roster = load_roster(ident)
    idents = [ident]
    for spec in specs[1:]:
        device = Ed25519PrivateKey.generate()
        age = pyrage.x25519.Identity.generate()
        device_id = peer_id_from_public_key(public_bytes(device))
        cert = issue_certificate(
            key,
            issuer="root",
            swarm=ident.swarm_id,
            device=device_id,
            name=str(spec["name"]),
            role=str(spec["role"]),
            age_recipient=str(age.to_public()),
            now=WALL - 1000.0,  # before the peers' clocks start (a grant is later)
            scopes=spec.get("scopes"),  # type: ignore[arg-type]
            relay_only=bool(spec.get("relay_only", False)),
        )
        roster.add_chain((cert,))
        edited = spec.get("edited", {})  # what its owner (or a thief) wrote in swarm.toml
        assert isinstance(edited, dict)
        config = device_config(
            name=str(spec["name"]),
            role=str(spec["role"]),
            scopes=edited.get("scopes", spec.get("scopes")),
            relay_only=bool(edited.get("relay_only", spec.get("relay_only", False))),
            swarm=ident.swarm_id,
            root_public=public_bytes(key),
            network=spec.get("network"),  # type: ignore[arg-type]
            extra=FULL,
        )
        home = root / str(spec["name"])
        write_home(home, device=device, age=age, root=None, config=config, roster=roster.encode())
        idents.append(load_identity(home))
    for i in idents:
        save_roster(i.home, roster)
    return idents


SPECS: list[dict[str, object]] = [
    {"name": "server", "role": "server"},
    {"name": "laptop", "role": "laptop"},
    {"name": "phone", "role": "phone"},  # public, personal
    {"name": "relay", "role": "server", "relay_only": True},
]


# --- peers on the memory network, in virtual time ---------------------------------------------


class Device:
    def __init__(self, network: MemoryNetwork, ident: Identity, seeds: list[tuple[str, list[str]]]):
        self.network = network
        self.ident = ident
        self.seeds = seeds
        self.transport = network.transport(ident.device_id)
        self.vault = VaultService(ident)
        self.peer = Peer(
            ident,
            load_roster(ident),
            PeerOptions(
                listen_addrs=lambda: self.transport.addrs,
                seeds=seeds,
                rng=random.Random(ident.device_id),
                wall_clock=lambda: WALL + trio.current_time(),
                load=FixedLoad(10.0, 1000.0),
                persist=False,
                services=[self.vault],
            ),
        )
        self.scope = trio.CancelScope()

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            async with self.transport:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.peer.run, self.transport)
                    task_status.started()
                    await trio.sleep_forever()

    def stop(self) -> None:
        self.network.crash(self.ident.device_id)
        self.scope.cancel()

    async def put(self, key: str, value: object, scope: str | None = None) -> dict:
        return await self.vault.control(
            "put", {"key": key, "value": json.dumps(value), "scope": scope}
        )

    def get(self, key: str) -> object:
        node = self.vault.node
        entry = None if node is None else node.get(key)
        return None if entry is None else json.loads(entry.text)


async def until(check: Callable[[], bool], *, within: float, what: str) -> float:
    start = trio.current_time()
    with trio.move_on_after(within):
        while True:
            if check():
                break
            await trio.sleep(0.02)
    assert check(), f"not within {within} s: {what}"
    return trio.current_time() - start


@asynccontextmanager
async def memory_swarm(idents: list[Identity]) -> AsyncIterator[tuple[MemoryNetwork, list[Device]]]:
    network = MemoryNetwork(random.Random(7), default_link=Link(latency=0.005, jitter=0.002))
    first = idents[0].device_id
    devices = [
        Device(network, i, [] if i.device_id == first else [(first, [f"/memory/{first}"])])
        for i in idents
    ]
    async with trio.open_nursery() as nursery:
        for d in devices:
            await nursery.start(d.serve)
        await until(
            lambda: all(len(d.vault._alive_now()) == len(devices) - 1 for d in devices),
            within=40.0,
            what="everyone alive",
        )
        await trio.sleep(2.0)  # the vault services see each other's scopes
        yield network, devices
        nursery.cancel_scope.cancel()


async def test_a_device_that_edits_its_own_settings_gets_no_key_beyond_its_certificate(
    tmp_path, autojump_clock
):
    # the phone was admitted with public only and the relay as a blind relay; each edits its
    # swarm.toml (scopes = ["private", ...], relay_only = false) and (re)starts
    idents = make_homes(
        tmp_path,
        [
            {"name": "server", "role": "server"},
            {
                "name": "phone",
                "role": "phone",
                "scopes": ("public",),
                "edited": {"scopes": ("public", "personal", "private")},
            },
            {
                "name": "relay",
                "role": "server",
                "relay_only": True,
                "edited": {"relay_only": False},
            },
        ],
    )
    assert idents[1].settings.device.scopes == ("public", "personal", "private")
    assert not idents[2].settings.device.relay_only
    async with memory_swarm(idents) as (_network, devices):
        server, phone, relay = devices
        await server.put("facts/pin", "1234", "private")
        await server.put("facts/home", "street", "personal")
        await server.put("facts/weather", "sunny", "public")
        await until(
            lambda: phone.get("facts/weather") == "sunny",
            within=5.0,
            what="the public fact on the phone",
        )
        await until(
            lambda: relay.vault.node.replica.vectors() == server.vault.node.replica.vectors(),
            within=5.0,
            what="the relay to hold everything",
        )
        await trio.sleep(3.0)  # several directory refreshes: a seal would have happened
        assert phone.get("facts/pin") is None
        assert phone.get("facts/home") is None
        assert relay.get("facts/weather") is None
        assert relay.get("facts/pin") is None
        assert relay.get("facts/home") is None
        # and no key was sealed to them: a thief with its own code would read nothing either
        keyring = server.vault.node.replica.keyring
        for scope, excluded in (("private", (phone, relay)), ("personal", (phone, relay))):
            for epoch in keyring.epochs_of(scope):
                holders = keyring.holders(epoch.key)
                assert not holders & {d.ident.device_id for d in excluded}, scope
        for epoch in keyring.epochs_of("public"):
            assert relay.ident.device_id not in keyring.holders(epoch.key)
        # what the server saw: each claim audited once, with the device and no value
        claims = [e for e in server.peer.audit.memory if e.action == "claim"]
        assert {e.device for e in claims} == {phone.ident.device_id, relay.ident.device_id}
        assert len(claims) == 2
        assert all("1234" not in e.reason and "street" not in e.reason for e in claims)


async def test_a_grant_is_a_new_certificate_from_an_admin(tmp_path, autojump_clock):
    idents = make_homes(tmp_path, SPECS[:3])  # server (admin), laptop, phone
    async with memory_swarm(idents) as (_network, devices):
        server, laptop, phone = devices
        with pytest.raises(NotPermitted, match="grant server: this device is not an admin"):
            grant_device(phone.peer, "server", Grant(scopes=("public", "personal", "private")))
        assert [e.action for e in phone.peer.audit.memory] == ["grant"]
        reply = grant_device(server.peer, "phone", Grant(scopes=("public",)))
        assert reply["rotated"] == ["personal"]
        assert reply["scopes"] == ["public"]
        await until(
            lambda: laptop.peer.roster.certificate(phone.ident.device_id).scopes == ("public",),
            within=5.0,
            what="the new certificate to spread",
        )
        # what the others will seal to it from now on: public only
        access = laptop.vault.node.replica.directory.devices[phone.ident.device_id]
        assert access.scopes == frozenset({"public"})


async def test_a_grant_that_takes_a_scope_away_starts_a_new_epoch(tmp_path, autojump_clock):
    idents = make_homes(tmp_path, SPECS[:3])
    async with memory_swarm(idents) as (_network, devices):
        server, laptop, phone = devices
        await laptop.put("facts/before", "old")
        await until(lambda: phone.get("facts/before") == "old", within=5.0, what="personal")
        grant_device(server.peer, "phone", Grant(scopes=("public",)))
        await server.put("facts/after", "new")
        await server.put("facts/weather", "rain", "public")
        await until(lambda: phone.get("facts/weather") == "rain", within=5.0, what="public")
        assert phone.get("facts/after") is None, "written after the grant: not for the phone"


async def test_done_when_on_four_devices(tmp_path, autojump_clock):
    idents = make_homes(tmp_path, SPECS)
    values: list[str] = []

    def secret(tag: str) -> str:
        values.append(f"{tag}-{random.Random(tag).getrandbits(64):016x}")
        return values[-1]

    async with memory_swarm(idents) as (network, devices):
        server, laptop, phone, relay = devices
        # a fact put on one device is readable on the others within a second
        home = secret("home")
        await laptop.put("facts/home", home)
        took = await until(
            lambda: server.get("facts/home") == phone.get("facts/home") == home,
            within=1.0,
            what="the fact on the server and the phone",
        )
        assert took < 1.0
        # a private fact: not on the phone (no such scope), not on the relay (blind)
        pin = secret("pin")
        assert (await server.put("facts/pin", pin, "private"))["scope"] == "private"
        await until(lambda: laptop.get("facts/pin") == pin, within=1.0, what="private on laptop")
        await until(
            lambda: relay.vault.node.replica.vectors() == server.vault.node.replica.vectors(),
            within=2.0,
            what="the relay to hold everything",
        )
        assert phone.get("facts/pin") is None
        assert relay.get("facts/pin") is None
        assert relay.get("facts/home") is None
        with pytest.raises(ScopeNotAllowed, match="may not hold private"):
            await phone.put("facts/x", "y", "private")

        # stop the phone, write on both sides, restart it: both converge
        phone.stop()
        await laptop.put("memories/while-away", secret("away"))
        # the phone starts again cut off from the others, and writes on its own
        restarted = Device(network, phone.ident, phone.seeds)
        network.isolate(phone.ident.device_id)
        async with trio.open_nursery() as nursery:
            await nursery.start(restarted.serve)
            await restarted.put("questions/while-alone", secret("alone"))
            network.heal(phone.ident.device_id)
            await until(
                lambda: (
                    restarted.get("memories/while-away") is not None
                    and laptop.get("questions/while-alone") is not None
                ),
                within=15.0,
                what="the restarted phone and the others to converge",
            )
            # revoke the phone: entries written afterwards are unreadable to it
            server.peer.revoke("phone")
            await until(
                lambda: not laptop.peer.roster.admits(phone.ident.device_id),
                within=5.0,
                what="the revocation to spread",
            )
            after = secret("after")
            await laptop.put("facts/after-revoke", after)
            await trio.sleep(2.0)
            assert restarted.get("facts/after-revoke") is None
            # even holding the ciphertext it cannot read it: it was not sealed to the phone
            records = [*laptop.vault.node.replica.keyring.records()]
            for scope in ("public", "personal"):
                for origin in laptop.vault.node.replica.vectors().get(scope, {}):
                    records += laptop.vault.node.replica.log(scope, origin)
            restarted.vault.node.replica.receive(records)
            assert restarted.get("facts/after-revoke") is None
            assert restarted.get("facts/home") == home  # what it had stays with it
            status = server.vault.section()
            assert status is not None
            assert set(status["scopes"]) == {"public", "personal", "private"}
            assert status["scopes"]["personal"]["epochs"] >= 2
            assert status["peers"]
            nursery.cancel_scope.cancel()
    # grep finds no value written in any file under the homes
    disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert len(values) == 5
    for v in values:
        assert v.encode() not in disk


# --- the command line ---------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> None:
    assert err.endswith("\n"), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def exercise_cli(capsys: pytest.CaptureFixture[str], home: str) -> None:
    """Every vault command and its refusals, on one home (with a peer running or not)."""
    h = ("--home", home)
    assert run(capsys, "vault", "put", "facts/b", "Lisbon", *h)[:2] == (
        0,
        "put facts/b (personal)\n",
    )
    code, out, _ = run(capsys, "vault", "put", "facts/a", '{"n": [1, 2]}', "--json", *h)
    assert code == 0
    assert json.loads(out) == {"key": "facts/a", "scope": "personal"}
    assert run(capsys, "vault", "put", "memories/m", "x", "--scope", "private", *h)[0] == 0
    assert run(capsys, "vault", "get", "facts/b", *h)[:2] == (0, "Lisbon\n")
    assert run(capsys, "vault", "get", "facts/b", "--json", *h)[:2] == (0, '"Lisbon"\n')
    assert run(capsys, "vault", "get", "facts/a", *h)[:2] == (0, '{"n": [1, 2]}\n')
    code, out, _ = run(capsys, "vault", "ls", *h)
    assert code == 0
    assert out == (
        'facts/a\tpersonal\t{"n": [1, 2]}\nfacts/b\tpersonal\t"Lisbon"\nmemories/m\tprivate\t"x"\n'
    )
    assert run(capsys, "vault", "ls", "facts/", *h)[1].count("\n") == 2
    assert run(capsys, "vault", "ls", "questions/", *h)[:2] == (0, "")
    code, out, _ = run(capsys, "vault", "ls", "--json", "memories", *h)
    assert json.loads(out) == {
        "entries": [{"key": "memories/m", "scope": "private", "value": "x", "expires_at": None}]
    }
    # memory tiers: context is working memory (48 h unless --ttl), the rest keeps until removed
    before = time.time()
    assert run(capsys, "vault", "put", "context/now", "reading", *h)[0] == 0
    assert run(capsys, "vault", "put", "facts/soon", "x", "--ttl", "90m", *h)[0] == 0
    code, out, _ = run(capsys, "vault", "ls", "context/", *h)
    assert out == 'context/now\tpersonal\t"reading"\texpires in 1d23h\n'
    code, out, _ = run(capsys, "vault", "ls", "--json", *h)
    expiry = {e["key"]: e["expires_at"] for e in json.loads(out)["entries"]}
    assert before + 48 * 3600 <= expiry["context/now"] <= time.time() + 48 * 3600
    assert before + 5400 <= expiry["facts/soon"] <= time.time() + 5400
    assert expiry["facts/a"] is None
    # a put without --ttl in a long-term collection takes the expiry away again
    assert run(capsys, "vault", "put", "facts/soon", "kept", *h)[0] == 0
    code, out, _ = run(capsys, "vault", "get", "facts/soon", *h)
    assert out == "kept\n"
    assert "expires" not in run(capsys, "vault", "ls", "facts/soon", *h)[1]
    # an entry whose time is up is gone (a millisecond: the store opens slower than that)
    assert run(capsys, "vault", "put", "context/gone", "x", "--ttl", "0.001", *h)[0] == 0
    assert run(capsys, "vault", "get", "context/gone", *h)[0] == 1
    assert "context/gone" not in run(capsys, "vault", "ls", *h)[1]
    for bad in ("0", "-5m", "soon", "1e400"):
        got, out, err = run(capsys, "vault", "put", "context/x", "y", "--ttl", bad, *h)
        assert (got, out) == (2, ""), (bad, err)
        one_line(err)
    assert run(capsys, "vault", "rm", "context/now", *h)[0] == 0
    assert run(capsys, "vault", "rm", "facts/soon", *h)[0] == 0
    assert run(capsys, "vault", "rm", "facts/b", *h)[:2] == (0, "removed facts/b (personal)\n")
    for argv, code, says in [
        (["get", "facts/b"], 1, "no entry 'facts/b'"),
        (["rm", "facts/b"], 1, "no entry 'facts/b'"),
        (["get", "notes/x"], 2, "COLLECTION/NAME"),
        (["put", "facts/x", "{bad", "--json"], 2, "not valid JSON"),
        (["put", "facts/x", "y" * 40000], 2, "over the limit"),
        (["put", "facts/x", "y", "--scope", "secret"], 2, "invalid choice"),
        (["get"], 2, "required"),
    ]:
        got, out, err = run(capsys, "vault", *argv, *h)
        assert (got, out) == (code, ""), (argv, err)
        one_line(err)
        assert says in err, (argv, err)
    code, out, _ = run(capsys, "vault", "status", "--json", *h)
    status = json.loads(out)
    assert status["scopes"]["personal"]["entries"]["facts"] == 1
    assert status["bytes_on_disk"] > 0
    code, out, _ = run(capsys, "vault", "status", *h)
    assert code == 0
    assert "personal" in out
    assert "epoch" in out


def test_the_vault_cli_without_a_running_peer(tmp_path, capsys):
    ident = init_home(tmp_path / "solo", name="solo", role="laptop")
    exercise_cli(capsys, str(ident.home))
    # a phone may not hold private entries
    phone = init_home(tmp_path / "phone", name="phone", role="phone")
    code, out, err = run(
        capsys, "vault", "put", "facts/x", "1", "--scope", "private", "--home", str(phone.home)
    )
    assert (code, out) == (2, "")
    one_line(err)
    assert "may not hold private" in err


async def test_the_vault_cli_through_a_running_peer(tmp_path, capsys):
    ident = init_home(
        tmp_path / "up", name="up", role="laptop", network={"listen": LOOPBACK, "mdns": False}
    )
    # a view left by a direct open (here: a get with no peer) goes when the peer starts
    assert main(["vault", "get", "facts/none", "--home", str(ident.home)]) == 1
    capsys.readouterr()
    assert read_view(ident.home) is not None
    daemon = Daemon(ident, listen=LOOPBACK, mdns=False)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            assert not (ident.home / VIEW_FILE).exists()
            await trio.to_thread.run_sync(exercise_cli, capsys, str(ident.home))
            assert daemon.peer is not None
            vault = daemon.peer.services["vault"]
            assert isinstance(vault, VaultService)
            assert vault.node is not None
            assert vault.node.commits >= 4  # the writes went through the running peer
            status = vault.section()
            assert status is not None
            assert status["scopes"]["private"]["entries"]["memories"] == 1
            assert check_status_shape(daemon.peer.status()) == []
            nursery.cancel_scope.cancel()


async def test_a_fact_reaches_another_device_over_libp2p_when_written(tmp_path, capsys):
    """Pushed on write (no wall-clock bound asserted here: a loaded machine is slow; the
    demo and the benchmark measure it, well under a second)."""
    net = {"listen": LOOPBACK, "mdns": False}
    laptop, phone = make_homes(
        tmp_path,
        [
            {"name": "laptop", "role": "laptop", "network": net},
            {"name": "phone", "role": "phone", "network": net},
        ],
    )
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            first = Daemon(laptop, listen=LOOPBACK, mdns=False)
            addrs = await nursery.start(first.run)
            second = Daemon(phone, listen=LOOPBACK, mdns=False)
            await nursery.start(second.run)
            assert second.peer is not None
            second.peer.join([(laptop.device_id, [a.split("/p2p/")[0] for a in addrs])])
            services = [d.peer.services["vault"] for d in (first, second) if d.peer is not None]
            while True:
                if all(len(s._alive_now()) == 1 for s in services):
                    break
                await trio.sleep(0.05)
            cli = partial(run, capsys)
            code, _, err = await trio.to_thread.run_sync(
                cli, "vault", "put", "facts/city", "Porto", "--home", str(laptop.home)
            )
            assert code == 0, err
            start = trio.current_time()
            while True:
                code, out, _ = await trio.to_thread.run_sync(
                    cli, "vault", "get", "facts/city", "--home", str(phone.home)
                )
                if code == 0 or trio.current_time() - start > 15.0:
                    break
                await trio.sleep(0.05)
            assert (code, out) == (0, "Porto\n")
            code, _, err = await trio.to_thread.run_sync(
                cli, "vault", "put", "facts/pin", "1234", "--scope", "private",
                "--home", str(laptop.home),
            )  # fmt: skip
            assert code == 0, err
            await trio.sleep(0.5)
            code, out, err = await trio.to_thread.run_sync(
                cli, "vault", "get", "facts/pin", "--home", str(phone.home)
            )
            assert (code, out) == (1, "")
            assert "may not read" in err
            code, out, err = await trio.to_thread.run_sync(
                cli, "status", "--json", "--home", str(phone.home)
            )
            assert code == 0, err
            assert check_status_shape(json.loads(out)) == []
            code, out, err = await trio.to_thread.run_sync(
                cli, "vault", "status", "--json", "--home", str(phone.home)
            )
            assert code == 0, err
            peers = json.loads(out)["peers"]
            assert peers[laptop.device_id]["behind"] == 0
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("put", ["KEY", "VALUE", "--scope", "--json", "--home"]),
        ("get", ["KEY", "--json", "--home"]),
        ("ls", ["PREFIX", "--json", "--home"]),
        ("rm", ["KEY", "--home"]),
        ("status", ["--json", "--home"]),
    ],
)
def test_help_of_each_vault_command(capsys, command, options):
    code, out, err = run(capsys, "vault", command, "--help")
    assert (code, err) == (0, "")
    assert out.startswith(f"usage: swarm vault {command}")
    for option in options:
        assert option in out


def test_vault_without_a_command_shows_its_commands(capsys):
    code, out, _ = run(capsys, "vault")
    assert code == 2
    assert "COMMAND" in out
    code, out, _ = run(capsys, "--help")
    assert "vault" in out
