"""Pairing as a user meets it: a real inviter (``Daemon`` on loopback libp2p), ``join_swarm`` in a
worker thread (it runs trio itself), and everything a careless or hostile joiner might try.

Each test waits on conditions under a deadline, never on a fixed sleep.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import random
import stat
import time
import tomllib
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import psutil
import pytest
import trio

from homeswarm.cli._status import check_status_shape
from homeswarm.errors import (
    ConnectionClosed,
    InvalidArgument,
    RemoteHandlerError,
    SwarmError,
    TransportError,
)
from homeswarm.swarm._audit import NotPermitted, audit_entries
from homeswarm.swarm._certs import ROOT, Grant
from homeswarm.swarm._control import ControlUsageError, ask_async
from homeswarm.swarm._daemon import Daemon
from homeswarm.swarm._home import (
    AlreadyInitialised,
    Identity,
    init_home,
    load_identity,
    load_roster,
)
from homeswarm.swarm._invite import InvalidCode, InviteCode
from homeswarm.swarm._join import Joined, PairingFailed, join_swarm
from homeswarm.swarm._peer import Peer
from homeswarm.transports.libp2p import Libp2pTransport
from homeswarm.transports.testing import wait_for

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
NETWORK: dict[str, object] = {"listen": LOOPBACK, "mdns": False}
TEST_DEADLINE = 25.0


def new_home(path: Path, name: str = "laptop", role: str = "laptop") -> Identity:
    return init_home(path, name=name, role=role, network=NETWORK)


@asynccontextmanager
async def running(ident: Identity) -> AsyncIterator[Daemon]:
    """``swarm up`` for ``ident``, in this trio run, on loopback, until the block ends."""
    daemon = Daemon(ident, listen=LOOPBACK, mdns=False)
    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            yield daemon
            nursery.cancel_scope.cancel()


def peer_of(daemon: Daemon) -> Peer:
    assert daemon.peer is not None
    return daemon.peer


def refused(daemon: Daemon) -> int:
    transport = peer_of(daemon).transport
    assert transport is not None
    return transport.statistics().refused


def violations(daemon: Daemon) -> int:
    transport = peer_of(daemon).transport
    assert transport is not None
    return transport.statistics().violations


def outstanding(daemon: Daemon) -> int:
    return peer_of(daemon).invites.outstanding(time.time())


def bare(exc: BaseException) -> BaseException:
    """The one error inside trio's single-exception groups (see the xfail test below)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def join(
    home: Path, code: str, *, name: str = "phone", role: str = "phone", **options: object
) -> Joined:
    """``join_swarm`` in a worker thread; its failure unwrapped from trio's exception group."""
    call = partial(join_swarm, home, code, name=name, role=role, **options)
    try:
        return await trio.to_thread.run_sync(call)
    except BaseExceptionGroup as group:
        raise bare(group) from None


def files(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


def snapshot(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in home.iterdir() if p.is_file()}


def forge(code: str, **changes: object) -> str:
    return dataclasses.replace(InviteCode.decode(code), **changes).encode()


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text
    assert "\n" not in text, text
    assert "Traceback" not in text
    return text


async def non_member_dial(daemon: Daemon, seed: bytes) -> None:
    """Dial the inviter with a key it does not admit; the dial must fail, leaving nothing open."""
    transport = peer_of(daemon).transport
    assert transport is not None
    async with Libp2pTransport(seed, LOOPBACK, dial_timeout=5.0) as stranger:
        with pytest.raises(TransportError):
            await stranger.dial(transport.peer_id, transport.addrs)
        assert not transport.connections(stranger.peer_id)


# --- a join that works ---------------------------------------------------------------------------


async def test_join_writes_a_complete_home_that_both_sides_admit(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    phone_home = tmp_path / "phone"
    async with running(inviter) as daemon:
        peer = peer_of(daemon)
        code = peer.invite(600)
        assert code.startswith("swarm1-")
        joined = await join(phone_home, code)

        assert joined.swarm == inviter.swarm_id
        assert joined.inviter == inviter.device_id
        assert joined.members == 2
        assert joined.home == phone_home
        # the inviter admits the new device at once, in memory and on disk, and the code is spent
        assert peer.roster.admits(joined.device)
        assert load_roster(inviter).admits(joined.device)
        assert outstanding(daemon) == 0
        advertised = [a.split("/p2p/")[0] for a in peer.options.listen_addrs()]

    # the new home: keys private, no root key, settings naming the inviter's swarm
    assert files(phone_home) == ["age.key", "device.key", "roster.bin", "swarm.toml"]
    for name in ("device.key", "age.key"):
        assert stat.S_IMODE(os.stat(phone_home / name).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(phone_home).st_mode) == 0o700
    config = tomllib.loads((phone_home / "swarm.toml").read_text())
    assert config["swarm"]["id"] == inviter.swarm_id
    assert config["swarm"]["root"] == inviter.settings.swarm.root
    assert config["device"] == {
        "name": "phone",
        "role": "phone",
        "scopes": ["public", "personal"],
        "relay_only": False,
    }
    bootstrap = config["network"]["bootstrap"]
    assert bootstrap
    assert all(entry.endswith(f"/p2p/{inviter.device_id}") for entry in bootstrap)
    assert {entry.split("/p2p/")[0] for entry in bootstrap} == set(advertised)

    phone = load_identity(phone_home)
    assert phone.device_id == joined.device
    assert phone.swarm_id == inviter.swarm_id
    assert phone.settings.network.bootstrap == tuple(bootstrap)
    roster = load_roster(phone)
    assert roster.admits(phone.device_id)
    assert roster.admits(inviter.device_id)
    assert {c.device for c in roster.members()} == {phone.device_id, inviter.device_id}
    cert = roster.certificate(phone.device_id)
    assert cert is not None
    assert cert.issuer == inviter.device_id
    assert (cert.name, cert.role, cert.age_recipient) == ("phone", "phone", phone.age_recipient)
    chain = roster.chain(phone.device_id)
    assert chain is not None
    assert [c.issuer for c in chain] == [inviter.device_id, ROOT]


async def test_a_pasted_code_survives_capitals_line_breaks_and_dashes(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        code = peer_of(daemon).invite(600)
        body = code.removeprefix("swarm1-").upper()
        wrapped = "  SWARM1-" + "\n".join(body[i : i + 20] for i in range(0, len(body), 20))
        wrapped = wrapped[:30] + "-" + wrapped[30:] + "\n"
        joined = await join(tmp_path / "tablet", wrapped, name="tablet", role="laptop")
        assert peer_of(daemon).roster.admits(joined.device)


async def test_join_options_land_in_the_new_home(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        code = peer_of(daemon).invite(600)
        await join(
            tmp_path / "relay",
            code,
            name="relay",
            role="server",
            scopes=("public",),
            relay_only=True,
            network={"mdns": False},
        )
    settings = load_identity(tmp_path / "relay").settings
    assert settings.device.scopes == ("public",)
    assert settings.device.relay_only is True
    assert settings.network.mdns is False
    assert settings.network.bootstrap  # the join's own entries survive the extra network options


async def test_the_invite_fixes_what_the_joiner_may_do_and_join_may_ask_only_for_less(tmp_path):
    inviter = new_home(tmp_path / "server", name="server", role="server")
    async with running(inviter) as daemon:
        peer = peer_of(daemon)
        # asking for more than the invite grants: refused, one line, nothing written
        code = peer.invite(600, Grant(scopes=("public",)))
        with pytest.raises(InvalidCode, match="allows scopes public, not personal") as info:
            await join(tmp_path / "phone", code, scopes=("public", "personal"))
        one_line(info.value)
        assert files(tmp_path / "phone") == []
        # the code is not used up: without --scopes the joiner gets the invite's; its
        # certificate says so
        phone = await join(tmp_path / "phone", code)
        cert = peer.roster.certificate(phone.device)
        assert cert is not None
        assert (cert.scopes, cert.relay_only, cert.admin) == (("public",), False, False)
        assert load_identity(tmp_path / "phone").settings.device.scopes == ("public",)
        # a relay invite makes a relay, whatever the joiner asks; an admin invite an admin
        relay = await join(
            tmp_path / "relay", peer.invite(600, Grant(relay_only=True)), name="relay"
        )
        assert peer.roster.certificate(relay.device).relay_only  # type: ignore[union-attr]
        assert load_identity(tmp_path / "relay").settings.device.relay_only
        laptop = await join(
            tmp_path / "laptop", peer.invite(600, Grant(admin=True)), name="laptop", role="laptop"
        )
        assert peer.roster.is_admin(laptop.device)
        assert not peer.roster.is_admin(phone.device)


# --- codes that must not work --------------------------------------------------------------------


async def test_a_used_code_is_refused_and_writes_nothing(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        peer = peer_of(daemon)
        code = peer.invite(600)
        await join(tmp_path / "phone", code)
        other = peer.invite(600)  # keeps the door open, so the inviter can say what is wrong
        with pytest.raises(InvalidCode, match="already used"):
            await join(tmp_path / "thief", code, name="thief")
        assert files(tmp_path / "thief") == []
        assert len(peer.roster.members()) == 2
        # the other code was not touched
        assert outstanding(daemon) == 1
        await join(tmp_path / "tablet", other, name="tablet")
        assert len(peer.roster.members()) == 3


async def test_a_used_code_is_refused_cleanly_when_no_other_code_is_outstanding(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        peer = peer_of(daemon)
        code = peer.invite(600)
        await join(tmp_path / "phone", code)
        before = refused(daemon)
        with pytest.raises((InvalidCode, PairingFailed)) as info:
            await join(tmp_path / "thief", code, name="thief")
        one_line(info.value)
        assert files(tmp_path / "thief") == []
        assert len(peer.roster.members()) == 2
        assert refused(daemon) > before  # refused at the handshake: no invite is outstanding


async def test_a_used_code_says_it_was_used(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        code = peer_of(daemon).invite(600)
        await join(tmp_path / "phone", code)
        with pytest.raises(InvalidCode, match="already used"):
            await join(tmp_path / "thief", code, name="thief")


async def test_join_failures_are_plain_swarm_errors(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        peer = peer_of(daemon)
        code = peer.invite(600)
        peer.invite(600)
        wrong = forge(code, secret=bytes(16))
        call = partial(join_swarm, tmp_path / "phone", wrong, name="phone", role="phone")
        with pytest.raises(InvalidCode, match="secret does not match"):
            await trio.to_thread.run_sync(call)


@pytest.mark.parametrize("how", ["expires_at in the past", "ttl of a microsecond"])
async def test_an_expired_code_is_refused_before_dialing(tmp_path, how):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        peer = peer_of(daemon)
        if how == "ttl of a microsecond":
            code = peer.invite(1e-6)
            assert InviteCode.decode(code).expired(time.time())
        else:
            code = forge(peer.invite(600), expires_at=time.time() - 1)
        with pytest.raises(InvalidCode, match="expired") as info:
            await join(tmp_path / "phone", code)
        assert "swarm invite" in one_line(info.value)  # says how to get a new one
        assert files(tmp_path / "phone") == []
        # never dialed: the inviter saw nobody, and a good code it holds was not spent
        assert refused(daemon) == 0
        assert len(peer.roster.members()) == 1
        if how == "expires_at in the past":
            assert outstanding(daemon) == 1


async def test_an_inviter_whose_clock_says_expired_refuses(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        peer = peer_of(daemon)
        code = peer.invite(60)
        peer.options.wall_clock = lambda: time.time() + 3600  # the inviter's clock is ahead
        with pytest.raises((InvalidCode, PairingFailed)) as info:
            await join(tmp_path / "phone", code)
        one_line(info.value)
        assert files(tmp_path / "phone") == []
        assert len(peer.roster.members()) == 1


async def test_a_mistyped_code_is_refused_before_dialing(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        code = peer_of(daemon).invite(600)
        start = len("swarm1-")
        for at in (start, start + 1, len(code) // 2, len(code) - 2, len(code) - 1):
            letter = "a" if code[at] != "a" else "b"
            typo = code[:at] + letter + code[at + 1 :]
            with pytest.raises(InvalidCode, match="mistyped"):
                await join(tmp_path / "phone", typo)
        for cut in (code[:-1], code[: len(code) // 2]):
            with pytest.raises(InvalidCode, match="mistyped or truncated"):
                await join(tmp_path / "phone", cut)
        assert files(tmp_path / "phone") == []
        assert refused(daemon) == 0
        assert outstanding(daemon) == 1  # still good for the real thing
        await join(tmp_path / "phone", code)


@pytest.mark.parametrize("fields", [("swarm", "inviter"), ("inviter",), ("swarm",)])
async def test_a_code_forged_for_another_swarm_is_refused_cleanly(tmp_path, fields):
    inviter = new_home(tmp_path / "laptop")
    stranger = new_home(tmp_path / "elsewhere", name="other")  # another swarm, not running
    assert stranger.swarm_id != inviter.swarm_id
    replacements = {"swarm": stranger.swarm_id, "inviter": stranger.device_id}
    async with running(inviter) as daemon:
        peer = peer_of(daemon)
        real = peer.invite(600)
        forged = forge(real, **{f: replacements[f] for f in fields})
        with pytest.raises((InvalidCode, PairingFailed)) as info:
            await join(tmp_path / "phone", forged)
        one_line(info.value)
        assert files(tmp_path / "phone") == []
        assert [c.device for c in peer.roster.members()] == [inviter.device_id]
        if fields == ("swarm",):
            # our inviter answered (the proof binds the swarm id, so it cannot match) ...
            assert isinstance(info.value, InvalidCode)
            assert "secret does not match" in str(info.value)
        else:
            # ... otherwise Noise proves our inviter is not the peer the code names: the port
            # answers, so the joiner says it was refused (a usage error, exit 2)
            assert isinstance(info.value, InvalidCode)
            assert "refused this device" in str(info.value)


async def test_a_wrong_secret_is_refused_and_burns_the_code(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        peer = peer_of(daemon)
        code = peer.invite(600)
        spare = peer.invite(600)  # keeps the door open so the second refusal is explicit
        guessed = forge(code, secret=random.Random(7).randbytes(16))
        with pytest.raises(InvalidCode, match="secret does not match") as info:
            await join(tmp_path / "guesser", guessed, name="guesser")
        one_line(info.value)
        assert files(tmp_path / "guesser") == []
        assert outstanding(daemon) == 1  # the guessed code is spent; the spare is not
        # the holder of the real code now learns it was used up, and nothing is written for it
        with pytest.raises(InvalidCode, match="already used"):
            await join(tmp_path / "phone", code)
        assert files(tmp_path / "phone") == []
        assert len(peer.roster.members()) == 1
        # the spare still works
        await join(tmp_path / "phone", spare)
        assert len(peer.roster.members()) == 2


async def test_join_into_an_initialised_home_changes_nothing(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    taken = tmp_path / "phone"
    init_home(taken, name="phone", role="phone")
    before = snapshot(taken)
    async with running(inviter) as daemon:
        code = peer_of(daemon).invite(600)
        with pytest.raises(AlreadyInitialised, match="already holds a swarm identity") as info:
            await join(taken, code)
        one_line(info.value)
        assert snapshot(taken) == before
        # refused before dialing: the code is still good
        assert refused(daemon) == 0
        assert outstanding(daemon) == 1
        # a home holding any one identity file is just as taken
        partial_home = tmp_path / "half"
        partial_home.mkdir()
        (partial_home / "age.key").write_text("mine\n")
        with pytest.raises(AlreadyInitialised):
            await join(partial_home, code)
        assert snapshot(partial_home) == {"age.key": b"mine\n"}
        assert outstanding(daemon) == 1


@pytest.mark.parametrize(
    ("name", "role"), [("bad name", "phone"), ("", "phone"), ("ok", "toaster")]
)
async def test_join_with_a_bad_name_or_role_is_refused_before_dialing(tmp_path, name, role):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        code = peer_of(daemon).invite(600)
        with pytest.raises(InvalidArgument) as info:
            await join(tmp_path / "phone", code, name=name, role=role)
        one_line(info.value)
        assert files(tmp_path / "phone") == []
        assert outstanding(daemon) == 1


# --- admission -----------------------------------------------------------------------------------


async def test_non_members_are_refused_at_the_handshake_unless_an_invite_is_outstanding(tmp_path):
    rng = random.Random(11)
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        # no invite yet: a stranger does not get in
        await non_member_dial(daemon, rng.randbytes(32))
        assert refused(daemon) >= 1
        # an invite is made and redeemed: the door is shut again
        await join(tmp_path / "phone", peer_of(daemon).invite(600))
        before = refused(daemon)
        await non_member_dial(daemon, rng.randbytes(32))
        assert refused(daemon) > before


async def test_while_an_invite_is_outstanding_a_stranger_may_only_ask_to_pair(tmp_path):
    rng = random.Random(12)
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        peer = peer_of(daemon)
        transport = peer.transport
        assert transport is not None
        code = peer.invite(600)
        async with Libp2pTransport(rng.randbytes(32), LOOPBACK) as stranger:
            # let in (it might be the joiner), but a membership message closes the connection
            conn = await stranger.dial(transport.peer_id, transport.addrs)
            with pytest.raises(ConnectionClosed):
                await conn.request(["ping", 1, b"x"])
            await wait_for(lambda: violations(daemon) >= 1, "the inviter to count a violation")
            assert not transport.connections(stranger.peer_id)

            # a pairing request for a code this device never issued: refused, nothing spent
            conn = await stranger.dial(transport.peer_id, transport.addrs)
            fake = {"op": "pair", "invite": bytes(8), "proof": bytes(32), "request": b"\x90"}
            with pytest.raises(RemoteHandlerError, match="not issued by this device"):
                await conn.request(fake)
            # a malformed pairing request is a violation too
            with pytest.raises(ConnectionClosed):
                await conn.request({"op": "pair", "invite": "nope"})
            await wait_for(lambda: violations(daemon) >= 2, "a second violation")
            # any other request shape: also closed
            conn = await stranger.dial(transport.peer_id, transport.addrs)
            with pytest.raises(ConnectionClosed):
                await conn.request({"op": "status"})
        assert peer.roster.members()[0].device == inviter.device_id
        assert len(peer.roster.members()) == 1
        assert outstanding(daemon) == 1
        # and the real joiner still gets in
        await join(tmp_path / "phone", code)


# --- revoke --------------------------------------------------------------------------------------


async def test_revoke_shuts_a_paired_device_out(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        peer = peer_of(daemon)
        transport = peer.transport
        assert transport is not None
        joined = await join(tmp_path / "phone", peer.invite(600))
        phone = load_identity(tmp_path / "phone")
        # before: the phone's key gets through the handshake
        async with Libp2pTransport(phone.private_seed(), LOOPBACK) as as_phone:
            conn = await as_phone.dial(transport.peer_id, transport.addrs)
            await conn.aclose()
        await wait_for(lambda: not transport.connections(phone.device_id), "the phone to hang up")

        cert = peer.revoke("phone")
        assert (cert.device, cert.name) == (joined.device, "phone")
        assert not peer.roster.admits(joined.device)
        assert joined.device in peer.roster.revoked()
        assert not load_roster(inviter).admits(joined.device)  # saved
        before = refused(daemon)
        await non_member_dial(daemon, phone.private_seed())
        assert refused(daemon) > before
        # the name no longer finds anyone
        with pytest.raises(InvalidArgument, match="no device 'phone'"):
            peer.revoke("phone")


async def test_revoke_refuses_unknown_names_and_itself(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        peer = peer_of(daemon)
        for nobody in ("tablet", "12D3KooWNotAnyoneWeKnow", "x" * 300):
            with pytest.raises(InvalidArgument, match="no device") as info:
                peer.revoke(nobody)
            one_line(info.value)
        for me in ("laptop", inviter.device_id):
            with pytest.raises(InvalidArgument, match="cannot revoke itself") as info:
                peer.revoke(me)
            one_line(info.value)
        assert peer.roster.admits(inviter.device_id)
        assert not peer.roster.revoked()
        # the control socket gives the same answer, as a usage error
        with pytest.raises(ControlUsageError, match="no device 'tablet'"):
            await ask_async(inviter.home, "revoke", device="tablet")
        with pytest.raises(ControlUsageError, match="name a device"):
            await ask_async(inviter.home, "revoke", device="")


def sees(viewer: Peer, device: str, state: str) -> bool:
    return any(r["id"] == device and r["state"] == state for r in viewer.status()["peers"])


def finalise_quietly() -> None:
    """Collect now, quietly, the socket libp2p leaks when two connected daemons are cancelled
    (see ``test_stopping_connected_daemons_closes_their_sockets``), so no later test is blamed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_revoking_a_running_device_cuts_it_off(tmp_path):
    try:
        await _revoke_a_running_device(tmp_path)
    finally:
        finalise_quietly()


async def _revoke_a_running_device(tmp_path: Path) -> None:
    laptop = new_home(tmp_path / "laptop")
    async with running(laptop) as daemon:
        peer = peer_of(daemon)
        await join(tmp_path / "phone", peer.invite(600))  # light: no battery reading here
        phone = load_identity(tmp_path / "phone")
        async with running(phone) as phone_daemon:
            phone_peer = peer_of(phone_daemon)
            assert phone_peer.core is not None
            assert phone_peer.core.light  # roster facts reach it at once all the same
            # the phone finds the laptop from the bootstrap address the join wrote
            await wait_for(lambda: sees(peer, phone.device_id, "alive"), "the phone to be alive")
            await wait_for(lambda: sees(phone_peer, laptop.device_id, "alive"), "the laptop")
            status = peer.status()
            assert check_status_shape(status) == []
            assert [r["self"] for r in status["peers"]] == [True, False]
            # the phone is no admin: it may not pair a tablet (refused, and audited)
            with pytest.raises(NotPermitted, match="not an admin"):
                phone_peer.invite(600)
            with pytest.raises(NotPermitted, match="revoke laptop: this device is not an admin"):
                phone_peer.revoke("laptop")  # the stolen phone tries to revoke the laptop
            assert [e.action for e in audit_entries(phone.home)] == ["invite", "revoke"]
            assert peer.roster.admits(laptop.device_id)
            tablet = await join(tmp_path / "tablet", peer.invite(600), name="tablet")
            assert tablet.members == 3
            await wait_for(lambda: phone_peer.roster.admits(tablet.device), "the phone learns it")

            peer.revoke(phone.device_id)
            assert not peer.roster.admits(phone.device_id)
            assert peer.roster.admits(tablet.device)  # no cascade: it was paired by the laptop
            assert not load_roster(laptop).admits(phone.device_id)
            transport = peer.transport
            assert transport is not None
            await wait_for(
                lambda: not transport.connections(phone.device_id), "the phone to be dropped"
            )
            assert phone.device_id not in {r["id"] for r in peer.status()["peers"]}
            # and it stays out: its own retries are refused at the handshake
            before = refused(daemon)
            await wait_for(lambda: refused(daemon) > before, "the phone's next dial to be refused")
            assert phone.device_id not in {r["id"] for r in peer.status()["peers"]}
            assert check_status_shape(peer.status()) == []


def _sockets_to(ports: set[int]) -> list[str]:
    return [
        f"{c.laddr} -> {c.raddr} {c.status}"
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and (c.raddr.port in ports or c.laddr.port in ports)
    ]


def _port(daemon: Daemon) -> int:
    transport = peer_of(daemon).transport
    assert transport is not None
    return int(transport.addrs[0].split("/tcp/")[1].split("/")[0])


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_stopping_connected_daemons_closes_their_sockets(tmp_path):
    gc.disable()  # the check must see the sockets before a collection finalises them
    try:
        ports = await _two_connected_daemons(tmp_path)
        leaked = _sockets_to(ports)
    finally:
        gc.enable()
        finalise_quietly()
    assert leaked == []


async def _two_connected_daemons(tmp_path: Path) -> set[int]:
    """Run a laptop and a paired phone until they see each other; stop both; their ports."""
    laptop = new_home(tmp_path / "laptop")
    async with running(laptop) as daemon:
        await join(tmp_path / "phone", peer_of(daemon).invite(600))
        phone = load_identity(tmp_path / "phone")
        async with running(phone) as phone_daemon:
            ports = {_port(daemon), _port(phone_daemon)}
            phone_peer = peer_of(phone_daemon)
            await wait_for(lambda: sees(phone_peer, laptop.device_id, "alive"), "the laptop")
            assert _sockets_to(ports)
    return ports


# --- status --------------------------------------------------------------------------------------


async def test_status_of_a_lone_device(tmp_path):
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        status = peer_of(daemon).status()
        assert check_status_shape(status) == []
        assert status["self"] == inviter.device_id
        assert status["swarm"] == inviter.swarm_id
        assert len(status["peers"]) == 1
        me = status["peers"][0]
        assert me["self"] is True
        assert (me["id"], me["name"], me["role"]) == (inviter.device_id, "laptop", "laptop")
        assert me["state"] == "alive"
        # the same through the control socket (JSON on the way)
        remote = await ask_async(inviter.home, "status")
        assert check_status_shape(remote) == []
        assert [p["id"] for p in remote["peers"]] == [inviter.device_id]
        # a paired device that never started is not listed as a peer
        await join(tmp_path / "phone", peer_of(daemon).invite(600))
        status = peer_of(daemon).status()
        assert check_status_shape(status) == []
        assert [p["id"] for p in status["peers"]] == [inviter.device_id]


async def test_every_failure_is_a_swarm_error(tmp_path):
    """Whatever a joiner pastes, the answer is a SwarmError of one line (what the CLI prints)."""
    inviter = new_home(tmp_path / "laptop")
    async with running(inviter) as daemon:
        code = peer_of(daemon).invite(600)
        texts = [
            "",
            "   ",
            "swarm1-",
            "swarm2-abc",
            "hello",
            code + "a",
            code[:-3],
            "swarm1-" + "a" * 9,
        ]
        for text in texts:
            with pytest.raises(SwarmError) as info:
                await join(tmp_path / "phone", text)
            one_line(info.value)
        assert files(tmp_path / "phone") == []
        assert outstanding(daemon) == 1
