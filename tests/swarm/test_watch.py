"""The swarm watches itself: HTM models over each device's own telemetry (swarm/_watch_service.py).

The ``Watch`` core is fed rows directly; the service runs on real peers over the memory network in
virtual time, with a ``FixedLoad`` whose cpu figure the test moves.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from test_placement_swarm import Spec, make_homes, memory_swarm, until

from homeswarm.cli._status import check_status_shape, render_table
from homeswarm.swarm._config import AnomalySettings, Settings
from homeswarm.swarm._daemon import device_services
from homeswarm.swarm._device import FixedLoad
from homeswarm.swarm._metrics import PeerCollector
from homeswarm.swarm._peer import Peer
from homeswarm.swarm._watch_service import HOLD_S, STALE_S, WARMUP_ROWS, Watch, WatchService


def noisy(rng: random.Random, centre: float) -> float:
    return max(0.0, centre + rng.gauss(0, 1.5))


def test_a_cpu_that_jumps_from_10_to_100_percent_is_an_anomaly_and_a_steady_one_is_not(caplog):
    watch = Watch(threshold=0.9999)
    rng = random.Random(7)
    now = 0.0
    with caplog.at_level(logging.INFO, logger="swarm.anomaly"):
        for _ in range(250):
            now += 5
            assert watch.feed({"cpu": noisy(rng, 10), "steady": noisy(rng, 10)}, now) == []
        assert watch.warming() == 0
        assert watch.anomalies(now) == []
        opened = []
        for _ in range(10):
            now += 5
            opened += watch.feed({"cpu": 100.0, "steady": noisy(rng, 10)}, now)
    assert [e.series for e in opened] == ["cpu"]  # one episode, however many rows are unusual
    (shown,) = watch.anomalies(now)
    assert shown["series"] == "cpu"
    assert shown["likelihood"] >= 0.9999
    assert 0 < shown["since_s"] <= 50
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(logged) == 1
    assert logged[0].startswith("anomaly: cpu at 100 (likelihood ")


def test_an_episode_closes_after_a_quiet_hold_and_a_silent_series_is_forgotten():
    watch = Watch(threshold=0.9999)
    rng = random.Random(3)
    now = 0.0
    for _ in range(200):
        now += 5
        watch.feed({"cpu": noisy(rng, 10), "rtt:phone": noisy(rng, 20)}, now)
    for _ in range(3):
        now += 5
        watch.feed({"cpu": 100.0, "rtt:phone": noisy(rng, 20)}, now)
    assert [a["series"] for a in watch.anomalies(now)] == ["cpu"]
    gone = now
    while now < gone + max(STALE_S, HOLD_S + 100):  # cpu stays high: the new normal
        now += 5
        watch.feed({"cpu": 100.0}, now)  # the phone is gone: no RTT any more
    assert watch.anomalies(now) == []
    assert watch.episodes["cpu"] == 1  # and no second episode
    assert set(watch.models) == {"cpu"}  # rtt:phone unseen for STALE_S


def test_a_model_warms_up_before_it_scores():
    watch = Watch(threshold=0.9999)
    for i in range(WARMUP_ROWS - 1):
        watch.feed({"cpu": 10.0 if i < 50 else 100.0}, float(i))
    assert watch.warming() == 1
    assert watch.likelihood["cpu"] == 0.5
    assert watch.anomalies(float(WARMUP_ROWS)) == []


def test_the_anomaly_section_of_settings_and_services(tmp_path):
    assert Settings().anomaly == AnomalySettings(watch=True, interval_s=5.0, threshold=0.9999)
    (ident,) = make_homes(tmp_path, [Spec("solo", "server")])
    assert "anomaly" in [s.name for s in device_services(ident)]


# ---- on running peers ---------------------------------------------------------------------------


@asynccontextmanager
async def two_devices(tmp_path, loads: dict[str, FixedLoad]) -> AsyncIterator[dict[str, Peer]]:
    """A laptop on battery and a server, each watching itself every second (virtual time)."""
    specs = [Spec("laptop", "laptop", battery=64.0, plugged=False), Spec("server", "server")]
    async with memory_swarm(
        specs,
        make_homes(tmp_path, specs),
        lambda i, spec, ident: [WatchService(AnomalySettings(interval_s=1.0))],
        loads=lambda i, spec: loads[spec.name],
    ) as s:
        yield {name: device.peer for name, device in s.devices.items()}


def watching(peer: Peer) -> Watch:
    service = peer.services["anomaly"]
    assert isinstance(service, WatchService)
    return service.watch


async def test_a_cpu_hog_on_a_device_shows_in_its_status_and_metrics(tmp_path, autojump_clock):
    loads = {"laptop": FixedLoad(10.0, 8000.0), "server": FixedLoad(10.0, 16000.0)}
    async with two_devices(tmp_path, loads) as peers:
        laptop, server = peers["laptop"], peers["server"]

        def warm() -> bool:
            models = [watching(p).models.get("cpu") for p in peers.values()]
            return all(m is not None and m.rows >= WARMUP_ROWS + 20 for m in models)

        await until(warm, within=WARMUP_ROWS + 40, what="the cpu models warmed up")
        series = set(watching(laptop).models)
        assert {"cpu", "memory_free_mb", "battery_drain", "rtt:server"} <= series
        assert "rtt:laptop" in watching(server).models
        assert "battery_drain" not in watching(server).models  # a server has no battery
        assert all(a["series"] != "cpu" for p in peers.values() for a in watching(p).anomalies(0))

        loads["server"].cpu_percent = 100.0  # the hog starts on the server

        def flagged() -> bool:
            return any(a["series"] == "cpu" for a in watching(server).anomalies(0))

        await until(flagged, within=10, what="the server's cpu flagged")
        status = server.status()
        assert check_status_shape(status) == []
        section = status["anomaly"]
        assert section["series"] == len(watching(server).models)
        assert section["warming"] == watching(server).warming()
        assert section["sample_ms"] > 0
        (cpu,) = [a for a in section["anomalies"] if a["series"] == "cpu"]
        assert cpu["likelihood"] >= 0.9999
        assert 0 <= cpu["since_s"] <= 10
        table = render_table(status)
        line = next(x for x in table.splitlines() if x.startswith("anomaly: "))
        shown = re.search(r"cpu \(likelihood ([0-9.]+),", line)
        assert shown is not None
        assert float(shown.group(1)) >= 0.9999  # (printed to 5 places: 1.00000 is above)
        assert f"watching {section['series']} series" in line
        # the laptop's steady cpu is not flagged
        assert all(a["series"] != "cpu" for a in laptop.status()["anomaly"]["anomalies"])
        metrics = {m.name: m for m in PeerCollector(server).collect()}
        samples = {s.labels["series"]: s.value for s in metrics["swarm_anomaly_likelihood"].samples}
        assert set(samples) == set(watching(server).models)
        episodes = {s.labels["series"]: s.value for s in metrics["swarm_anomaly_episodes"].samples}
        assert episodes["cpu"] == 1


def test_the_table_line_without_anomalies():
    from homeswarm.cli._status import _anomaly_line

    assert _anomaly_line({"series": 6, "warming": 2, "anomalies": []}) == (
        "anomaly: none; watching 6 series (2 warming up)"
    )
    assert (
        _anomaly_line(
            {
                "series": 3,
                "warming": 0,
                "anomalies": [{"series": "rtt:ph\x1bone", "likelihood": 1.0, "since_s": 75.0}],
            }
        )
        == "anomaly: rtt:ph?one (likelihood 1.00000, 1m ago); watching 3 series"
    )
