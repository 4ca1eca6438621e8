"""Stateful anomaly instances in running peers: a phone's cpu series scored by an HTM instance the
kernel mesh put on another device, checkpointed into the vault, moved when its device dies.

Real peers on the memory network in virtual time (MockClock, autojump), each with its placement,
vault, stream and watch services: the phone's watch samples its cpu (a load that says a varying
series) every second and hands it to its stream service, whose instance lives where the policy
says (the server: the phone is on battery). The server dies; once the phone's membership
declares it dead the mesh moves the instance to the laptop, which restores the checkpoint from
its own vault replica, and the phone replays what the checkpoint does not cover.
"""

from __future__ import annotations

import base64
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from test_placement_swarm import (
    LAPTOP,
    PHONE,
    SERVER,
    Device,
    Spec,
    Swarm,
    make_homes,
    memory_swarm,
    until,
)

from homeswarm.cli._status import check_status_shape, render_table
from homeswarm.errors import ConnectionClosed, RemoteError
from homeswarm.kernels import Checkpoint, anomaly_model
from homeswarm.kernels.testing import make_registry
from homeswarm.placement import InlineExecutor
from homeswarm.swarm._config import AnomalySettings
from homeswarm.swarm._home import Identity, load_identity
from homeswarm.swarm._local_vault import open_store
from homeswarm.swarm._placement_service import PlacementService
from homeswarm.swarm._stream_service import StreamService, state_prefix
from homeswarm.swarm._vault_service import VaultService
from homeswarm.swarm._watch_service import WatchService, series_params
from homeswarm.vault import MemoryStore, Store

CHECKPOINT_S = 20.0
TABLET = Spec("tablet", "laptop", scopes=("public",))  # may hold public data only


@dataclass
class Wave:
    """A cpu that says a wave with noise."""

    seed: int
    reads: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def read(self) -> tuple[float, float]:
        self.reads += 1
        value = round(40 + 30 * math.sin(self.reads / 9.0) + self.rng.uniform(-5, 5), 2)
        return value, 8000.0


def _with_anomaly(ident: Identity) -> Identity:
    """The device's swarm.toml with a quick watch: a sample a second, a checkpoint every 20 s."""
    path = ident.home / "swarm.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text + f'\n[anomaly]\ninterval_s = 1.0\ncheckpoint_s = {CHECKPOINT_S}\nhosted = ["cpu"]\n',
        encoding="utf-8",
    )
    return load_identity(ident.home)


@asynccontextmanager
async def swarm(
    tmp_path: Path, specs: Sequence[Spec], *, on_disk: bool = True
) -> AsyncIterator[Swarm]:
    """The devices of ``specs``, running; their vaults in SQLite in their homes, or (not
    ``on_disk``) in memory. Either way a write's flush runs in the event loop, not in a worker
    thread: the autojump clock jumps while a thread works, seconds of virtual time for a
    millisecond's fsync, and a request then times out that would not have."""
    registry = make_registry(with_builtins=True)
    stores: list[Store] = []

    def services(i: int, spec: Spec, ident: Identity) -> list[Any]:
        if on_disk:
            sqlite = open_store(ident)
            sqlite.flush_blocks = False  # type: ignore[misc]
            stores.append(sqlite)
        else:
            stores.append(MemoryStore())
        settings: AnomalySettings = ident.settings.anomaly
        return [
            PlacementService(
                ident.settings, registry=registry, executor=InlineExecutor(threaded=False)
            ),
            VaultService(ident, store=stores[-1]),
            StreamService(
                hosted=settings.hosted, checkpoint_s=settings.checkpoint_s, params=series_params
            ),
            WatchService(settings),
        ]

    idents = [_with_anomaly(i) for i in make_homes(tmp_path, specs)]
    try:
        async with memory_swarm(specs, idents, services, loads=lambda i, spec: Wave(i)) as s:
            yield s
    finally:
        for store in stores:
            store.close()


def reference(values: list[float]) -> list[tuple[float, float]]:
    """The scores of an instance that never moved: one model fed every value once, in order."""
    model = anomaly_model(params=series_params("cpu"))
    return [(float(s.raw), float(s.likelihood)) for s in (model.step(v) for v in values)]


def check_scores(out: Any) -> int:
    """Every event of the stream scored, each as a model that never moved scores it (and
    any scored again scored the same); how many were scored again."""
    values: dict[int, float] = {}
    for seq, value, _, _ in out.history:
        assert values.setdefault(seq, value) == value, f"event {seq} sent with two values"
    assert sorted(values) == list(range(1, out.scored + 1)), "an event never scored"
    assert out.scored >= out.producer.last - 1
    expected = reference([values[seq] for seq in sorted(values)])
    for seq, _, score, likelihood in out.history:
        assert (score, likelihood) == expected[seq - 1], f"event {seq}"
    return len(out.history) - len(values)


def status_of(device: Device, name: str) -> str | None:
    assert device.peer.core is not None
    member = device.peer.core.members.get(name)
    return member.status if member else None


async def test_the_instance_moves_when_its_host_dies_and_its_scores_continue(
    tmp_path, autojump_clock
):
    async with swarm(tmp_path, (PHONE, LAPTOP, SERVER, TABLET)) as s:
        phone, laptop, server, tablet = (s[n] for n in ("phone", "laptop", "server", "tablet"))
        mine = phone.streams

        def serving_on(device: Device) -> bool:
            out = mine.out.get("cpu")
            return out is not None and out.state == "serving" and out.home == device.id

        # the phone is on battery: the policy homes its stateful instance on a plugged-in device,
        # the server, or the laptop when the phone placed it before it heard of the server
        await until(
            lambda: serving_on(server) or serving_on(laptop), within=60.0, what="the cpu homed"
        )
        names = {"server": "server", "laptop": "laptop"}
        if serving_on(laptop):  # from here on, "server" is the home and "laptop" the other
            laptop, server, names = server, laptop, {"server": "laptop", "laptop": "server"}
        out = mine.out["cpu"]
        # a while of scores, checkpoints stored and the events they cover forgotten
        # (past the model's warm-up, 121 rows, so the likelihoods after the move mean something)
        await until(
            lambda: out.producer.acked >= 130, within=300.0, what="checkpoints acknowledged"
        )
        hosted = server.streams.hosting[(phone.id, "cpu")]
        assert hosted.stored == out.producer.acked
        assert len(out.producer.kept) == out.producer.last - out.producer.acked
        await trio.sleep(7.0)  # events beyond the checkpoint: they will be replayed
        assert out.producer.last - out.producer.acked >= 5

        # the checkpoint is in every replica that may read personal data, encrypted on disk
        checkpoint = laptop.streams.latest(phone.id, "cpu")
        assert checkpoint is not None
        assert checkpoint.applied >= 130
        assert tablet.streams.latest(phone.id, "cpu") is None  # public only: it cannot read it
        assert laptop.peer.services["vault"].node.items(state_prefix(phone.id, "cpu"))  # type: ignore[attr-defined]
        state = checkpoint.state
        raw = [state[i : i + 48] for i in range(0, len(state) - 48, max(1, len(state) // 8))]
        encoded = base64.b64encode(Checkpoint.to_bytes(checkpoint)).decode()[100:160].encode()
        for home in (laptop.ident.home, tablet.ident.home, server.ident.home):
            for path in home.rglob("*"):  # the vault, and anything else in the home
                if path.is_file():
                    data = path.read_bytes()
                    assert not any(piece in data for piece in raw), path
                    assert encoded not in data, path

        # the server dies; the phone's membership declares it dead; the mesh moves the instance
        emitted_before = out.producer.last
        assert mine.counts["failed"] == 0  # (no request timed out: nothing sent twice yet)
        server.transport.network.crash(server.id)  # its process dies: no goodbye
        server.scope.cancel()
        await until(
            lambda: status_of(phone, server.id) == "dead", within=30.0, what="server declared dead"
        )
        declared = trio.current_time()
        await until(lambda: serving_on(laptop), within=10.0, what="the instance on the laptop")
        await until(
            lambda: out.served_at is not None and out.scored >= out.producer.last - 1,
            within=10.0,
            what="the laptop caught up",
        )
        assert out.served_at is not None
        took = out.served_at - declared
        assert took <= 2.0, f"served again {took:.2f} s after the server was declared dead"
        assert out.moves == 1
        assert out.moved_from == server.id
        assert out.producer.resent > 0  # the events after the checkpoint were replayed
        await trio.sleep(30.0)  # and it carries on there
        assert out.producer.last > emitted_before + 25

        # its scores are those of an instance that never moved: none lost, none counted twice;
        # the events after the checkpoint scored again, the same (one more may have been sent
        # to the server as it died, never to be answered)
        rescored = check_scores(out)
        assert 0 < rescored <= out.producer.resent
        assert any(likelihood != 0.5 for *_, likelihood in out.history)  # past its warm-up
        moved = laptop.streams.hosting[(phone.id, "cpu")].instance
        assert moved.model.rows == moved.applied == out.scored  # each event applied once
        assert moved.duplicates == 0

        # what a person sees
        status = phone.peer.status()
        assert check_status_shape(status) == []
        cpu = status["streams"]["streams"][0]
        assert (cpu["series"], cpu["home"], cpu["moved_from"], cpu["moves"]) == (
            "cpu",
            names["laptop"],
            names["server"],
            1,
        )
        line = render_table(status).splitlines()[-1]
        assert line.startswith(f"streams: cpu on {names['laptop']} (moved from {names['server']} ")
        hosting = laptop.streams.status()
        assert hosting is not None
        hosts = {(h["producer"], h["series"]): h for h in hosting["hosting"]}
        assert hosts[("phone", "cpu")]["applied"] == out.scored
        print(line, f"(served again {took:.2f} s after the server was declared dead)")


async def test_a_home_below_its_battery_floor_hands_the_instance_over_first(
    tmp_path, autojump_clock
):
    """A planned move: the instance's home (the server, here on a battery as a laptop would be,
    or the laptop if the phone placed it before it heard of the server) runs low; the mesh moves
    the instance, the home checkpoints and lets go, the other restores that checkpoint from its
    replica: nothing is replayed."""
    ups = Spec("server", "server", battery=90.0, plugged=True)
    async with swarm(tmp_path, (PHONE, LAPTOP, ups), on_disk=False) as s:
        phone, laptop, server = (s[n] for n in ("phone", "laptop", "server"))
        await until(
            lambda: (
                "cpu" in phone.streams.out
                and phone.streams.out["cpu"].home in (server.id, laptop.id)
            ),
            within=60.0,
            what="the phone's cpu on a plugged-in device",
        )
        if phone.streams.out["cpu"].home == laptop.id:  # "server": the home; "laptop": the other
            laptop, server = server, laptop
        out = phone.streams.out["cpu"]
        await until(lambda: out.producer.acked >= 20, within=120.0, what="a checkpoint")
        await trio.sleep(5.0)
        server.peer.set_power(15.0, False)  # unplugged, below the floor of small work
        await until(
            lambda: out.home == laptop.id and out.state == "serving",
            within=30.0,
            what="the instance on the laptop",
        )
        assert (server.id, "cpu") not in server.streams.hosting  # it let go
        await trio.sleep(5.0)
        assert out.moves == 1
        assert phone.streams.counts["failed"] == 0
        # the hosted instance's scores reach the phone's watch (its anomalies in swarm status)
        watch = phone.peer.services["anomaly"]
        assert isinstance(watch, WatchService)
        assert "cpu" in watch.watch.likelihood
        assert "cpu" not in watch.watch.models  # not scored on the phone itself
        assert out.producer.resent == 0  # the server's last checkpoint covered all it was sent
        assert check_scores(out) == 0
        moved = laptop.streams.hosting[(phone.id, "cpu")].instance
        assert moved.model.rows == moved.applied == out.scored


async def test_a_malformed_request_closes_its_connection_and_a_device_without_the_scope_refuses(
    tmp_path, autojump_clock
):
    async with swarm(tmp_path, (PHONE, LAPTOP, TABLET), on_disk=False) as s:
        phone, laptop, tablet = (s[n] for n in ("phone", "laptop", "tablet"))
        await until(
            lambda: "cpu" in phone.streams.out and phone.streams.out["cpu"].state == "serving",
            within=60.0,
            what="the phone's cpu served",
        )
        assert phone.streams.out["cpu"].home == laptop.id  # never the public-only tablet
        conn = await phone.transport.dial(laptop.id, ["/memory/" + laptop.id])
        bad = {"op": "streams.feed", "v": 1, "series": "cpu", "epoch": "x", "events": []}
        with pytest.raises((ConnectionClosed, RemoteError)):
            await conn.request(bad, timeout=5.0)
        # the tablet may not hold personal data: it hosts nothing of it, restores nothing
        body = {"op": "streams.open", "v": 1, "series": "cpu", "scope": "personal", "acked": 0}
        reply = await tablet.streams.serve(phone.id, "open", {**body, "params": {}})
        assert set(reply) == {"refused"}
        assert tablet.streams.hosting == {}
        # a home whose replica holds no checkpoint as new as the producer's acknowledged events
        # says so (and syncs) rather than start from an older one: those events are gone
        stale = {**body, "series": "memory_free_mb", "acked": 10, "params": {}}
        assert await laptop.streams.serve(phone.id, "open", stale) == {"behind": 0}
        assert (phone.id, "memory_free_mb") not in laptop.streams.hosting
        # and the laptop carries on
        before = phone.streams.out["cpu"].scored
        await trio.sleep(5.0)
        assert phone.streams.out["cpu"].scored > before


async def test_scores_of_an_answer_lost_with_its_host_come_back_from_the_checkpoint(
    tmp_path, autojump_clock
):
    """The server applies ten events, stores a checkpoint of them and dies before its answer
    reaches the producer: the laptop restores that checkpoint, and answers the producer's replay
    of those ten with the scores the checkpoint's manifest kept."""
    async with swarm(tmp_path, (PHONE, LAPTOP, SERVER), on_disk=False) as s:
        phone, laptop, server = (s[n] for n in ("phone", "laptop", "server"))
        await until(
            lambda: "cpu" in phone.streams.out and phone.streams.out["cpu"].state == "serving",
            within=60.0,
            what="the swarm up",
        )
        server.streams.checkpoint_s = 0.0  # a checkpoint at every feed
        values = [float(v) for v in (5, 7, 9, 60, 8, 6, 5, 7, 90, 4, 5, 6)]
        events = [[i + 1, None, v] for i, v in enumerate(values)]
        base = {"v": 1, "series": "x", "scope": "personal"}
        opened = await server.streams.serve(
            phone.id, "open", {**base, "acked": 0, "params": series_params("cpu")}
        )
        assert opened == {"applied": 0}
        feed = {**base, "epoch": 1, "events": events[:10], "scored": 0}
        lost = await server.streams.serve(phone.id, "feed", feed)
        assert lost["stored"] == 10  # (and this answer never arrives)
        await until(
            lambda: (cp := laptop.streams.latest(phone.id, "x")) is not None and cp.applied == 10,
            within=10.0,
            what="the checkpoint in the laptop's replica",
        )
        reopened = await laptop.streams.serve(
            phone.id, "open", {**base, "acked": 0, "params": series_params("cpu")}
        )
        assert reopened == {"applied": 10}
        replay = {**base, "epoch": 2, "events": events, "scored": 0}
        answer = await laptop.streams.serve(phone.id, "feed", replay)
        assert answer["scores"][:10] == lost["scores"]
        expected = reference(values)
        assert [tuple(x[1:]) for x in answer["scores"]] == expected
        instance = laptop.streams.hosting[(phone.id, "x")].instance
        assert instance.model.rows == instance.applied == 12
