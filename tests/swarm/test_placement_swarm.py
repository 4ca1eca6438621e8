"""Placement through real peers: a phone, a laptop and a server on the memory network, each with
its placement service, in virtual time (MockClock, autojump).

A run is placed with the peer's own view (membership, RTT, gossiped state), run here or sent to the
chosen member, which checks it again under its own policy; a failure (the device dies mid-work, its
executor crashes, it refuses) is re-placed once, or fails in one clear line.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyrage
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from homeswarm.cli._status import check_status_shape
from homeswarm.kernels import InvalidInput, KernelFailed, Registry, UnknownKernel
from homeswarm.kernels.testing import make_registry
from homeswarm.placement import (
    Executor,
    InlineExecutor,
    Refused,
    RunFailed,
    RunReply,
    RunRequest,
)
from homeswarm.placement.testing import FailingExecutor, SlowExecutor
from homeswarm.swarm import Peer, PeerOptions, decode_state
from homeswarm.swarm._certs import issue_certificate
from homeswarm.swarm._daemon import device_services
from homeswarm.swarm._device import FixedLoad
from homeswarm.swarm._home import (
    Identity,
    device_config,
    init_home,
    load_identity,
    load_roster,
    public_bytes,
    save_roster,
    write_home,
)
from homeswarm.swarm._placement_service import PlacementService
from homeswarm.swarm._stream_service import StreamService
from homeswarm.transports import Link, MemoryNetwork, MemoryTransport, peer_id_from_public_key

WALL_START = 1_000.0
LINK = Link(latency=0.001, jitter=0.0005)


@dataclass(frozen=True)
class Spec:
    name: str
    role: str
    battery: float | None = None
    plugged: bool = True
    scopes: tuple[str, ...] | None = None
    relay_only: bool = False
    # what its swarm.toml claims instead of what its certificate says (an edited config)
    claims: tuple[str, ...] | None = None
    claims_relay_only: bool | None = None
    # swarm.toml [device] accelerator ("none": these tests mean the same on a machine with one)
    accelerator: str = "none"
    # [membership] light: "off" by default here, every device a full member (probed, so every
    # view has RTTs at once; a phone is light by default, and sees the others at its heartbeats)
    light: str = "off"


PHONE = Spec("phone", "phone", battery=82.0, plugged=False)
LAPTOP = Spec("laptop", "laptop", battery=64.0, plugged=True)
SERVER = Spec("server", "server")


def _extra(spec: Spec) -> dict[str, dict[str, object]]:
    full = {"membership": {"light": spec.light}}
    if spec.battery is None:
        return {"power": {"source": "device"}, **full}
    return {
        "power": {"source": "simulated", "battery_percent": spec.battery, "plugged": spec.plugged},
        **full,
    }


def make_homes(root: Path, specs: Sequence[Spec]) -> list[Identity]:
    """Homes of one swarm, as invite/join would leave them (the first device paired the rest)."""
    first_spec, *rest = specs
    first = init_home(
        root / first_spec.name,
        name=first_spec.name,
        role=first_spec.role,
        scopes=first_spec.scopes,
        relay_only=first_spec.relay_only,
        extra=_extra(first_spec),
    )
    roster = load_roster(first)
    own = roster.chain(first.device_id)
    assert own is not None
    homes = [first.home]
    for spec in rest:
        key = Ed25519PrivateKey.generate()
        age = pyrage.x25519.Identity.generate()
        device = peer_id_from_public_key(public_bytes(key))
        cert = issue_certificate(
            first.signing_key,
            issuer=first.device_id,
            swarm=first.swarm_id,
            device=device,
            name=spec.name,
            role=spec.role,
            age_recipient=str(age.to_public()),
            now=time.time(),
            scopes=spec.scopes,
            relay_only=spec.relay_only,
        )
        roster.add_chain((cert, *own))
        claims_relay = spec.claims_relay_only
        config = device_config(
            name=spec.name,
            role=spec.role,
            scopes=spec.claims or spec.scopes,
            relay_only=spec.relay_only if claims_relay is None else claims_relay,
            swarm=first.swarm_id,
            root_public=roster.root_public,
            extra=_extra(spec),
        )
        home = root / spec.name
        write_home(home, device=key, age=age, root=None, config=config, roster=roster.encode())
        homes.append(home)
    for home, spec in zip(homes, specs, strict=True):
        save_roster(home, roster)
        config_path = home / "swarm.toml"
        text = config_path.read_text(encoding="utf-8")
        declared = f'[device]\naccelerator = "{spec.accelerator}"\n'
        config_path.write_text(text.replace("[device]\n", declared, 1), encoding="utf-8")
    return [load_identity(h) for h in homes]


@dataclass
class Device:
    ident: Identity
    transport: MemoryTransport
    peer: Peer
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def id(self) -> str:
        return self.ident.device_id

    @property
    def service(self) -> PlacementService:
        service = self.peer.services["kernels"]
        assert isinstance(service, PlacementService)
        return service

    @property
    def streams(self) -> StreamService:
        service = self.peer.services["streams"]
        assert isinstance(service, StreamService)
        return service

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            async with self.transport:
                await self.peer.run(self.transport, task_status=task_status)

    async def run(self, kernel: str, value: Any = None, **args: Any) -> dict[str, Any]:
        reply: dict[str, Any] = await self.peer.control(
            "kernels.run", {"kernel": kernel, "input": value, **args}
        )
        return reply


class Swarm:
    def __init__(self, network: MemoryNetwork, devices: dict[str, Device]) -> None:
        self.network = network
        self.devices = devices

    def __getitem__(self, name: str) -> Device:
        return self.devices[name]

    def crash(self, name: str) -> None:
        """The device's process dies: its connections reset and it says nothing more."""
        device = self.devices[name]
        self.network.crash(device.id)
        device.scope.cancel()

    def sees(self, observer: str, name: str) -> str | None:
        member = self[observer].peer.core.members.get(self[name].id)  # type: ignore[union-attr]
        return member.status if member else None


async def until(check: Callable[[], bool], *, within: float, what: str) -> None:
    """Wait (virtual time) until ``check()`` holds."""
    with trio.move_on_after(within):
        while not check():  # noqa: ASYNC110 - polling peers' state, which has no event
            await trio.sleep(0.05)
    assert check(), f"not within {within} s: {what}"


Services = Callable[[int, Spec, Identity], list[Any]]  # (index, spec, home) -> the peer's services


@asynccontextmanager
async def memory_swarm(
    specs: Sequence[Spec],
    idents: Sequence[Identity],
    services: Services,
    *,
    loads: Callable[[int, Spec], Any] = lambda i, spec: FixedLoad(10.0, 8000.0),
    link: Link = LINK,
) -> AsyncIterator[Swarm]:
    """A real peer for each of ``specs`` (homes ``idents``, paired) on one memory network in
    virtual time, with ``services(i, spec, ident)`` and ``loads(i, spec)``; started one after
    the other, the first the others' seed. Yields once all have started (not yet each seen)."""
    network = MemoryNetwork(random.Random(1), default_link=link)
    devices: dict[str, Device] = {}
    for i, (spec, ident) in enumerate(zip(specs, idents, strict=True)):
        transport = network.transport(ident.device_id)
        seeds = [(idents[0].device_id, ["/memory/" + idents[0].device_id])] if i else []
        peer = Peer(
            ident,
            load_roster(ident),
            PeerOptions(
                listen_addrs=lambda t=transport: t.addrs,  # type: ignore[misc]
                seeds=seeds,
                rng=random.Random(i),
                wall_clock=lambda: WALL_START + trio.current_time(),
                load=loads(i, spec),
                persist=False,
                services=services(i, spec, ident),
            ),
        )
        devices[spec.name] = Device(ident, transport, peer)
    async with trio.open_nursery() as nursery:
        for device in devices.values():
            await nursery.start(device.serve)
        yield Swarm(network, devices)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def swarm(
    tmp_path: Path,
    specs: Sequence[Spec] = (PHONE, LAPTOP, SERVER),
    *,
    executors: dict[str, Executor | None] | None = None,
    registry: Registry | None = None,
) -> AsyncIterator[Swarm]:
    """The devices of ``specs``, paired, running, each seeing every other alive with its state
    and a measured RTT. Executors: inline (no threads: virtual time) unless given (None: what
    the device's settings say); kernels: ``make_registry()``'s unless given."""
    kernels = make_registry() if registry is None else registry
    chosen = executors or {}

    def services(i: int, spec: Spec, ident: Identity) -> list[Any]:
        executor = chosen[spec.name] if spec.name in chosen else InlineExecutor(threaded=False)
        return [PlacementService(ident.settings, registry=kernels, executor=executor)]

    async with memory_swarm(specs, make_homes(tmp_path, specs), services) as s:
        devices = s.devices

        def ready() -> bool:
            for a in devices.values():
                for b in devices.values():
                    member = a.peer.core.members.get(b.id)  # type: ignore[union-attr]
                    if member is None or member.status != "alive" or not member.state:
                        return False
                    state = decode_state(member.state)
                    if state is None or (state.executor != "none" and not state.kernels):
                        return False
                    if a is not b and member.rtt is None:
                        return False
            return True

        await until(ready, within=40.0, what="everyone alive, with kernels and RTTs")
        yield s


# ---- capabilities and the view -----------------------------------------------------------------


async def test_each_device_gossips_what_its_service_runs(tmp_path, autojump_clock):
    failing = FailingExecutor()
    async with swarm(tmp_path, executors={"server": failing}) as s:
        phone = s["phone"]
        view = {d.name: d for d in phone.service.view()}
        assert set(view) == {"phone", "laptop", "server"}
        assert view["phone"].local
        assert view["phone"].rtt_s == 0.0
        assert view["server"].executor == "broken"
        assert view["laptop"].executor == "inline"
        assert set(view["laptop"].kernels) == set(make_registry().names())
        assert view["phone"].scopes == ("public", "personal")
        assert view["phone"].on_battery
        assert view["server"].battery_percent is None or view["server"].plugged is not False
        assert all(d.status == "alive" for d in view.values())
        assert 0 < view["laptop"].rtt_s < 0.05  # type: ignore[operator]


async def test_tiny_work_runs_where_it_is_asked(tmp_path, autojump_clock):
    async with swarm(tmp_path) as s:
        for name in ("phone", "laptop", "server"):
            reply = await s[name].run("echo", {"n": [1, 2.5, "x"]})
            assert reply["result"] == {"n": [1, 2.5, "x"]}
            assert reply["device"] == name
            assert reply["device_id"] == s[name].id
            assert reply["executor"] == "inline"
            assert reply["attempts"] == []
            assert set(reply) >= {"kernel", "device", "executor", "result", "elapsed_ms", "explain"}


async def test_a_private_kernel_never_lands_on_a_device_without_that_scope(
    tmp_path, autojump_clock
):
    async with swarm(tmp_path) as s:
        for _ in range(3):
            reply = await s["phone"].run("secret", "my diary")
            assert reply["device"] in ("laptop", "server")
            excluded = {e["name"]: e for e in reply["explain"] if e["verdict"] == "excluded"}
            assert excluded["phone"]["constraint"] == "scope"
        # and data the user marks private, for a kernel that is only personal
        reply = await s["phone"].run("medium", "x", scope="private")
        assert reply["device"] in ("laptop", "server")
        assert reply["scope"] == "private"


async def test_placement_goes_by_the_certificate_not_by_an_edited_config(tmp_path, autojump_clock):
    # the attack: a phone admitted for public data whose owner (or thief) edited swarm.toml to
    # claim every scope, and a relay that edited relay_only = false; both restart and gossip it
    specs = (
        LAPTOP,  # the first device: it admits the rest
        Spec("phone", "phone", scopes=("public",), claims=("public", "personal", "private")),
        SERVER,
        Spec("relay", "server", relay_only=True, claims_relay_only=False),
    )
    async with swarm(tmp_path, specs) as s:
        gossiped = decode_state(s["laptop"].peer.core.members[s["phone"].id].state)
        assert gossiped is not None
        assert "private" in gossiped.scopes, "the claim is gossiped"
        assert not decode_state(s["laptop"].peer.core.members[s["relay"].id].state).relay_only
        for name in ("laptop", "phone", "relay"):
            view = {d.name: d for d in s[name].service.view()}
            assert view["phone"].scopes == ("public",), f"{name}: the phone's certificate"
            assert view["relay"].relay_only, f"{name}: the relay's certificate"
            assert view["relay"].scopes == ()
        for asker in ("laptop", "phone", "relay"):
            reply = await s[asker].run("medium", "x", scope="private")
            assert reply["device"] in ("laptop", "server")
            verdicts = {e["name"]: e for e in reply["explain"]}
            assert verdicts["phone"]["verdict"] == "excluded"
            assert verdicts["phone"]["constraint"] == "scope"
            assert verdicts["relay"]["verdict"] == "excluded"
            assert verdicts["relay"]["constraint"] == "relay_only"
        # with the honest devices gone, a private run is refused rather than landing on them
        s.crash("laptop")
        s.crash("server")
        await until(
            lambda: s.sees("phone", "server") != "alive" and s.sees("phone", "laptop") != "alive",
            within=20,
            what="laptop and server down",
        )
        with pytest.raises(Refused) as info:
            await s["phone"].run("medium", "x", scope="private")
        assert "phone: scope: may not hold private data (scopes: public)" in str(info.value)
        assert "relay: relay_only" in str(info.value)


async def test_no_device_allowed_is_a_refusal_naming_each_constraint(tmp_path, autojump_clock):
    specs = (PHONE, Spec("laptop", "laptop", scopes=("public", "personal")), SERVER)
    async with swarm(tmp_path, specs) as s:
        s.crash("server")
        await until(lambda: s.sees("phone", "server") != "alive", within=20, what="server down")
        with pytest.raises(Refused) as info:
            await s["phone"].run("secret", "x")
        text = str(info.value)
        assert text.startswith("no device may run secret (private data, tiny work): ")
        assert "laptop: scope: may not hold private data" in text
        assert "phone: scope: may not hold private data" in text
        assert "server: status: is " in text


async def test_bad_requests_from_the_cli_are_the_callers_errors(tmp_path, autojump_clock):
    async with swarm(tmp_path, (LAPTOP,)) as s:
        laptop = s["laptop"]
        with pytest.raises(UnknownKernel, match="unknown kernel 'nope'"):
            await laptop.run("nope")
        with pytest.raises(InvalidInput, match="numbers must be finite"):
            await laptop.run("echo", float("nan"))
        with pytest.raises(KernelFailed, match="boom, as asked"):
            await laptop.run("boom")
        for args in ({"kernel": ""}, {"kernel": "echo", "timeout_s": -1}, {"kernel": 5}):
            with pytest.raises(ValueError, match="run: "):
                await laptop.peer.control("kernels.run", args)
        with pytest.raises(ValueError, match="would lower it"):
            await laptop.run("secret", "x", scope="public")


async def test_unplugging_the_laptop_moves_work_to_the_server(tmp_path, autojump_clock):
    async with swarm(tmp_path) as s:
        laptop = s["laptop"]
        assert (await laptop.run("medium", "hello world"))["device"] == "laptop"
        laptop.peer.set_power(30.0, False)  # `swarm power --unplugged --battery 30`
        reply = await laptop.run("medium", "hello world")
        assert reply["device"] == "server"
        laptop.peer.set_power(None, True)
        assert (await laptop.run("medium", "hello world"))["device"] == "laptop"


async def test_a_phone_below_its_floor_is_ruled_out_and_refuses_itself(tmp_path, autojump_clock):
    specs = (Spec("phone", "phone", battery=20.0, plugged=False), LAPTOP, SERVER)
    async with swarm(tmp_path, specs) as s:
        phone = s["phone"]
        reply = await phone.run("medium", "x", explain=True)
        assert reply["device"] != "phone"
        (mine,) = [e for e in reply["explain"] if e["name"] == "phone"]
        assert mine["constraint"] == "battery"
        assert "on battery at 20%, below the 50% floor for medium work" in mine["reason"]
        # tiny work is no problem
        assert (await phone.run("echo", 1))["device"] == "phone"


# ---- the receiving device's own policy ---------------------------------------------------------


async def ask_directly(s: Swarm, sender: str, receiver: str, request: RunRequest) -> RunReply:
    transport = s[sender].transport
    conn = await transport.dial(s[receiver].id, ["/memory/" + s[receiver].id])
    return RunReply.from_wire(await conn.request(request.to_wire()))


async def test_a_device_refuses_what_its_own_policy_forbids(tmp_path, autojump_clock):
    specs = (Spec("phone", "phone", battery=20.0, plugged=False), LAPTOP, SERVER)
    async with swarm(tmp_path, specs) as s:
        cases = [
            (RunRequest("secret", "x", "private", 5.0), "scope", "may not hold private data"),
            (RunRequest("echo", "x", "private", 5.0), "scope", "may not hold private data"),
            (RunRequest("heavy", "x", "public", 5.0), "battery", "below the 80% floor"),
            (RunRequest("embed", "x", "personal", 5.0), "kernel", "does not have the kernel"),
        ]
        for request, constraint, words in cases:
            reply = await ask_directly(s, "laptop", "phone", request)
            assert not reply.ok
            assert (reply.kind, reply.constraint) == ("refused", constraint)
            assert words in reply.error
        # what it may run, it runs
        ok = await ask_directly(s, "laptop", "phone", RunRequest("echo", [1], "public", 5.0))
        assert (ok.ok, ok.output, ok.executor) == (True, [1], "inline")
        assert [h.kernel for h in ok.hosts] == ["echo"]
        # a bad input or a failing kernel is said, not raised
        bad = await ask_directly(s, "laptop", "server", RunRequest("echo", {1: 2}, "public", 5.0))
        assert (bad.kind, bad.constraint) == ("input", None)
        failed = await ask_directly(s, "laptop", "server", RunRequest("boom", 0, "public", 5.0))
        assert failed.kind == "kernel"
        assert "boom, as asked" in failed.error


async def test_a_relay_refuses_everything(tmp_path, autojump_clock):
    specs = (LAPTOP, Spec("relay", "server", relay_only=True))
    async with swarm(tmp_path, specs, executors={"relay": None}) as s:
        reply = await ask_directly(s, "laptop", "relay", RunRequest("echo", 1, "public", 5.0))
        assert (reply.kind, reply.constraint) == ("refused", "relay_only")
        view = {d.name: d for d in s["laptop"].service.view()}
        assert view["relay"].relay_only
        assert view["relay"].executor == "none"  # auto: a relay offers no executor


async def test_a_malformed_run_request_closes_that_connection(tmp_path, autojump_clock, caplog):
    caplog.set_level("WARNING", logger="transports.connection")
    async with swarm(tmp_path, (LAPTOP, SERVER)) as s:
        transport = s["laptop"].transport
        for body in (
            {"op": "kernels.run", "v": 1},
            {"op": "kernels.run", "v": 2, "kernel": "echo", "input": 1, "scope": "public",
             "timeout_s": 1.0},
            {"op": "kernels.run", "v": 1, "kernel": "Bad Name", "input": 1, "scope": "public",
             "timeout_s": 1.0},
            {"op": "kernels.nope"},
        ):  # fmt: skip
            conn = await transport.dial(s["server"].id, ["/memory/" + s["server"].id])
            with pytest.raises(Exception):  # noqa: B017, PT011 - closed, whatever the words
                await conn.request(body)
            assert conn.closed
        # each is logged in one line saying what was wrong (the wire checker's words)
        closing = [r.getMessage() for r in caplog.records if "closing connection" in r.getMessage()]
        assert any("kernels.run: kernel is missing" in m for m in closing), closing
        assert any("kernels.run: unsupported v '2'" in m for m in closing), closing
        assert any("kernels.run: kernel is not a kernel name" in m for m in closing), closing
        # and the server carries on
        assert (await s["laptop"].run("heavy", 1))["device"] == "server"


# ---- failures: re-placed once, or a clear failure ----------------------------------------------


async def test_a_device_killed_mid_work_gets_the_run_replaced(tmp_path, autojump_clock):
    slow = SlowExecutor(InlineExecutor(threaded=False), delay_s=5.0)
    async with swarm(tmp_path, executors={"server": slow}) as s:
        laptop = s["laptop"]
        results: list[dict[str, Any]] = []

        async def run() -> None:
            results.append(await laptop.run("heavy", {"job": 1}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await until(lambda: slow.started == 1, within=5, what="the server at work")
            s.crash("server")
        (reply,) = results
        assert reply["result"] == {"job": 1}
        assert reply["device"] != "server"
        (attempt,) = reply["attempts"]
        assert attempt["device"] == "server"
        assert "connection" in attempt["error"]


async def test_a_device_killed_mid_work_with_nowhere_else_to_go_is_a_clear_failure(
    tmp_path, autojump_clock
):
    slow = SlowExecutor(InlineExecutor(threaded=False), delay_s=5.0)
    specs = (PHONE, Spec("laptop", "laptop", scopes=("public", "personal")), SERVER)
    async with swarm(tmp_path, specs, executors={"server": slow}) as s:
        failures: list[BaseException] = []

        async def run() -> None:
            try:
                await s["phone"].run("secret", "x")
            except RunFailed as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await until(lambda: slow.started == 1, within=5, what="the server at work")
            s.crash("server")
        (failure,) = failures
        text = str(failure)
        assert text.startswith("secret failed on server (connection")
        assert "no device may run secret (private data, tiny work)" in text
        assert "laptop: scope: " in text
        assert "phone: scope: " in text
        assert "server: " in text
        assert "\n" not in text


async def test_an_executor_that_crashes_gets_the_run_replaced(tmp_path, autojump_clock):
    failing = FailingExecutor()
    async with swarm(tmp_path, executors={"server": failing}) as s:
        reply = await s["laptop"].run("heavy", "x")
        assert failing.calls == 1
        assert reply["device"] == "laptop"
        assert reply["attempts"] == [
            {
                "device": "server",
                "device_id": s["server"].id,
                "error": "server: the executor crashed running heavy",
            }
        ]


async def test_a_remote_refusal_gets_the_run_replaced(tmp_path, autojump_clock):
    async with swarm(tmp_path) as s:
        s["laptop"].peer.set_power(30.0, False)  # the phone's best choice is now the server
        await until(
            lambda: {d.name: d for d in s["phone"].service.view()}["laptop"].on_battery,
            within=5,
            what="the phone hears the laptop unplugged",
        )
        # the server stops offering secret; the phone's view (its gossip) still says it does
        s["server"].service.runner.offered.discard("secret")
        reply = await s["phone"].run("secret", "x")
        assert reply["device"] == "laptop"
        (attempt,) = reply["attempts"]
        assert attempt["device"] == "server"
        assert attempt["error"] == "server refused: server does not offer the kernel secret"


async def test_the_kernels_own_failure_is_not_replaced(tmp_path, autojump_clock):
    async with swarm(tmp_path) as s:
        s["laptop"].peer.set_power(10.0, False)  # boom goes to the server
        with pytest.raises(KernelFailed, match="boom, as asked"):
            await s["laptop"].run("boom")


async def test_runs_in_flight_count_as_a_queue(tmp_path, autojump_clock):
    slow = SlowExecutor(InlineExecutor(threaded=False), delay_s=1.0)
    async with swarm(tmp_path, executors={"server": slow}) as s:
        laptop = s["laptop"]
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(laptop.run, "heavy", i)
            await until(lambda: slow.started >= 1, within=5, what="work on the server")
            view = {d.name: d for d in laptop.service.view()}
            assert view["server"].queue >= 1


# ---- status ------------------------------------------------------------------------------------


async def test_status_says_which_kernels_each_device_holds(tmp_path, autojump_clock):
    async with swarm(tmp_path) as s:
        await s["laptop"].run("heavy", 1)  # on the server
        await s["laptop"].run("echo", 1)  # here
        status = await s["laptop"].peer.control("kernels.status", {})
        assert status["executor"] == "inline"
        assert "echo" in status["kernels"]
        held = {(h["device"], h["kernel"]): h for h in status["held"]}
        assert set(held) == {(s["laptop"].id, "echo"), (s["server"].id, "heavy")}
        on_server = held[(s["server"].id, "heavy")]
        assert (on_server["executor"], on_server["runs"], on_server["running"]) == ("inline", 1, 0)
        assert on_server["heard_s"] >= 0
        # and `swarm status --json` carries it, in the documented shape
        full = s["laptop"].peer.status()
        assert full["kernels"] == status
        assert check_status_shape(full) == []
        listed = await s["laptop"].peer.control("kernels.list", {})
        by_name = {k["name"]: k for k in listed["kernels"]}
        assert by_name["secret"]["devices"] == ["laptop", "server"] or set(
            by_name["secret"]["devices"]
        ) == {"laptop", "phone", "server"}
        with pytest.raises(ValueError, match=r"unknown request kernels\.nope"):
            await s["laptop"].peer.control("kernels.nope", {})


def test_device_services_include_placement(tmp_path):
    ident = init_home(tmp_path / "h", name="h", role="laptop")
    (service,) = [s for s in device_services(ident) if s.name == "kernels"]
    assert isinstance(service, PlacementService)


async def test_when_ray_will_not_start_auto_falls_back_to_inline(tmp_path, monkeypatch):
    # (real clock: starting Ray is a worker thread, past which a MockClock would jump)
    from homeswarm.placement import ExecutorUnavailable, RayRuntime

    def refuse(self: RayRuntime) -> None:
        raise ExecutorUnavailable("cannot start Ray (a local runtime): no room")

    monkeypatch.setattr(RayRuntime, "start", refuse)
    async with swarm(tmp_path, (LAPTOP,), executors={"laptop": None}) as s:
        laptop = s["laptop"]
        assert laptop.peer.state is not None
        assert laptop.peer.state.executor == "ray"  # auto, on a laptop with Ray installed
        reply = await laptop.run("echo", 1)
        assert (reply["device"], reply["executor"], reply["attempts"]) == ("laptop", "inline", [])
        assert laptop.peer.state.executor == "inline"  # and it says so from now on
        assert (await laptop.run("echo", 2))["executor"] == "inline"


def test_what_each_device_offers_follows_its_settings():
    from homeswarm.swarm._config import settings_from_mapping
    from homeswarm.swarm._placement_service import device_capabilities, executor_kind

    def settings(role: str, **placement: object) -> Any:
        device: dict[str, object] = {"role": role}
        if placement.pop("relay_only", False):
            device["relay_only"] = True
        return settings_from_mapping({"device": device, "placement": placement})

    registry = make_registry()
    assert executor_kind(settings("phone")) == "inline"
    assert executor_kind(settings("laptop")) == "ray"
    assert executor_kind(settings("server", relay_only=True)) == "none"
    assert executor_kind(settings("phone", executor="ray")) == "ray"
    assert device_capabilities(settings("phone"), registry) == ("inline", tuple(registry.names()))
    assert device_capabilities(settings("laptop", kernels=["echo", "nope"]), registry) == (
        "ray",
        ("echo",),
    )
    assert device_capabilities(settings("laptop", executor="none"), registry) == ("none", ())


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[placement]\nexecutor = "gpu"\n', "[placement] executor: must be one of auto, inline"),
        ('[placement]\nkernels = ["Embed"]\n', "[placement] kernels: 'Embed' is not a kernel name"),
        ('[placement]\nkernels = ["embed", "embed"]\n', "lists a kernel twice"),
        ("[placement]\nray_num_cpus = -1\n", "[placement] ray_num_cpus: must not be negative"),
        ("[placement]\nfloor_small = 120\n", "[placement] floor_small: must be between 0 and 100"),
        ("[placement]\nrun_timeout_s = 0\n", "[placement] run_timeout_s: must be a positive"),
    ],
)
def test_bad_placement_settings_are_one_line(text, needle):
    from homeswarm.swarm._config import parse_settings
    from homeswarm.transports import InvalidConfig

    with pytest.raises(InvalidConfig) as info:
        parse_settings(text)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("trusted", [False, True])
def test_ray_trusted_reaches_the_ray_executor(trusted):
    from homeswarm.placement import RayExecutor
    from homeswarm.swarm._config import parse_settings
    from homeswarm.swarm._placement_service import _make_executor

    # (nothing is dialed: the runtime starts at the first run)
    settings = parse_settings(
        f'[placement]\nexecutor = "ray"\nray_address = "ray://127.0.0.2:10001"\n'
        f"ray_trusted = {str(trusted).lower()}\n"
    ).placement
    executor = _make_executor("ray", settings, lambda _: None)
    assert isinstance(executor, RayExecutor)
    assert executor.trusted is trusted
