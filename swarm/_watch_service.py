"""The watch service: the swarm watches itself with one HTM anomaly model per telemetry series.

Every ``[anomaly] interval_s`` the service samples this device's own figures and feeds each to
its own model (``kernels.anomaly_model``, created at the series' first sample, one new model per
round at most, so the event loop is never held for long):

- ``cpu`` (percent) and ``memory_free_mb``: the peer's load source (``LoadSource.read``);
- ``battery_drain`` (percent per hour, negative while charging): the change of the peer's power
  readings over the last ``DRAIN_WINDOW_S``; absent without a battery;
- ``rtt:NAME``: the round-trip time (ms) membership last measured to each alive member;
- ``vault_ahead:NAME`` (updates that device holds and we lack) and ``vault_sync_age:NAME``
  (seconds since the last sync with it): from the vault service, when the peer hosts one.

``Watch`` is the sans-I/O part (series in, episodes out, virtual time in tests): a row whose
likelihood is at least ``[anomaly] threshold`` (0.9999 by default, the threshold Numenta's NAB
detectors use) opens an episode, logged once with the series, its value and the likelihood;
further such rows join it, and it closes (logged too) after ``HOLD_S`` without one.

``status()`` (``swarm status --json``, under "anomaly")::

    {"series": 6, "warming": 2, "sample_ms": 1.3,
     "anomalies": [{"series": "cpu", "likelihood": 0.99999, "since_s": 12.0}]}

``warming`` counts the series whose models have not yet seen enough rows to score a likelihood
(``WARMUP_ROWS``); ``sample_ms`` is the mean time one sampling round took in the event loop (all
series); ``anomalies`` lists the open episodes, the newest first, with the highest likelihood seen
in each. ``metrics()`` exports each series' last likelihood (``swarm_anomaly_likelihood``) and the
episodes seen (``swarm_anomaly_episodes``).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from homeswarm.kernels import TELEMETRY_PARAMS

from ._config import AnomalySettings
from ._service import Service
from ._stream_service import StreamService

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from ._peer import Peer

log = logging.getLogger("swarm.anomaly")

# One small parameter set for every telemetry series: ``kernels.TELEMETRY_PARAMS``.
WARMUP_ROWS = TELEMETRY_PARAMS["learning_rows"] + TELEMETRY_PARAMS["estimation_rows"] + 1
# the range of each kind of series: a fixed range, or the width of one encoder bucket
KIND_PARAMS: dict[str, dict[str, Any]] = {
    "cpu": {"value_min": 0.0, "value_max": 100.0},
    "memory_free_mb": {"resolution": 64.0},
    "battery_drain": {"resolution": 0.5},
    "rtt": {"resolution": 1.0},
    "vault_ahead": {"resolution": 1.0},
    "vault_sync_age": {"resolution": 5.0},
}
HOLD_S = 300.0  # an episode closes after this long without an anomalous row
STALE_S = 600.0  # a series not sampled for this long (a member gone) is forgotten
MAX_SERIES = 64  # at most this many models (a huge swarm's RTTs do not eat the memory)
NEW_PER_ROUND = 1  # models created per round, at most (one takes ~30 ms of CPU: the loop's)
DRAIN_WINDOW_S = 300.0


def series_params(series: str) -> dict[str, Any]:
    """The HTM parameters of one series: the telemetry set, with its kind's range."""
    return {**TELEMETRY_PARAMS, **KIND_PARAMS.get(series.partition(":")[0], {})}


@dataclass
class Episode:
    series: str
    started: float
    last: float
    likelihood: float


class Watch:
    """Models, one per series, and the anomaly episodes they raise; time is given, not read."""

    def __init__(self, threshold: float, params: dict[str, Any] | None = None) -> None:
        self.threshold = threshold
        self.params = TELEMETRY_PARAMS if params is None else params
        self.models: dict[str, Any] = {}
        self.seen: dict[str, float] = {}
        self.likelihood: dict[str, float] = {}
        self.open: dict[str, Episode] = {}
        self.episodes: collections.Counter[str] = collections.Counter()

    def feed(self, samples: dict[str, float], now: float) -> list[Episode]:
        """Learn one row of each series; the episodes this round opened."""
        from homeswarm.kernels import anomaly_model

        opened = []
        created = 0
        for series, value in samples.items():
            model = self.models.get(series)
            if model is None:
                if len(self.models) >= MAX_SERIES or created >= NEW_PER_ROUND:
                    continue  # a new series starts a round or more later
                kind = series.partition(":")[0]
                model = anomaly_model(params={**self.params, **KIND_PARAMS.get(kind, {})})
                self.models[series] = model
                created += 1
            episode = self.judge(series, value, model.step(value).likelihood, now)
            if episode is not None:
                opened.append(episode)
        self._age(now)
        return opened

    def judge(self, series: str, value: float, likelihood: float, now: float) -> Episode | None:
        """One row's likelihood (from a model here, or a hosted instance's answer): the
        episode it opened, if it did."""
        self.seen[series] = now
        self.likelihood[series] = likelihood
        if likelihood < self.threshold:
            return None
        episode = self.open.get(series)
        new = episode is None
        if episode is None:
            episode = self.open[series] = Episode(series, now, now, likelihood)
            self.episodes[series] += 1
            log.warning(
                "anomaly: %s at %.6g (likelihood %.6f, tail %.1e)",
                series,
                value,
                likelihood,
                1.0 - likelihood,
            )
        episode.last = now
        episode.likelihood = max(episode.likelihood, likelihood)
        return episode if new else None

    def _age(self, now: float) -> None:
        for series, episode in list(self.open.items()):
            if now - episode.last >= HOLD_S:
                del self.open[series]
                log.info("anomaly over: %s, after %.0f s", series, episode.last - episode.started)
        for series, at in list(self.seen.items()):
            if now - at >= STALE_S:
                for table in (self.models, self.seen, self.likelihood, self.open):
                    table.pop(series, None)

    def warming(self) -> int:
        return sum(model.rows < WARMUP_ROWS for model in self.models.values())

    def anomalies(self, now: float) -> list[dict[str, Any]]:
        return [
            {
                "series": e.series,
                "likelihood": round(e.likelihood, 6),
                "since_s": round(max(now - e.started, 0.0), 1),
            }
            for e in sorted(self.open.values(), key=lambda e: (-e.started, e.series))
        ]


class WatchService(Service):
    """Samples this device's telemetry into a ``Watch`` (see the module doc)."""

    name = "anomaly"

    def __init__(self, settings: AnomalySettings, params: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.watch = Watch(settings.threshold, params)
        self._peer: Peer | None = None
        self._power: collections.deque[tuple[float, float]] = collections.deque()
        self._rounds = 0
        self._cost_s = 0.0

    async def run(self, peer: Peer, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._peer = peer
        streams = peer.services.get("streams")
        hosted = set(self.settings.hosted) if isinstance(streams, StreamService) else set()
        if isinstance(streams, StreamService):
            streams.judge = self.watch.judge  # a hosted instance's scores come back here
        task_status.started()
        while True:
            await trio.sleep(self.settings.interval_s)
            began = time.perf_counter()
            samples = self.sample()
            if hosted:
                assert isinstance(streams, StreamService)
                when = peer.options.wall_clock()
                for series in sorted(hosted & samples.keys()):
                    streams.emit(series, samples.pop(series), when)
            self.watch.feed(samples, trio.current_time())
            self._cost_s += time.perf_counter() - began
            self._rounds += 1

    def sample(self) -> dict[str, float]:
        """This device's figures now, by series name."""
        peer = self._peer
        assert peer is not None
        out: dict[str, float] = {}
        cpu, memory = peer.load.read()
        out["cpu"], out["memory_free_mb"] = cpu, memory
        drain = self._drain(peer)
        if drain is not None:
            out["battery_drain"] = drain
        me = peer.identity.device_id
        if peer.core is not None:
            for node, member in peer.core.members.items():
                if node != me and member.status == "alive" and member.rtt is not None:
                    out[f"rtt:{self._name(node)}"] = member.rtt * 1000
        vault = peer.services.get("vault")
        section = getattr(vault, "section", None)
        state = section() if callable(section) else None
        for node, sync in sorted(((state or {}).get("peers") or {}).items()):
            if sync.get("ahead") is not None:
                out[f"vault_ahead:{self._name(node)}"] = float(sync["ahead"])
            if sync.get("last_sync_s") is not None:
                out[f"vault_sync_age:{self._name(node)}"] = float(sync["last_sync_s"])
        return out

    def _drain(self, peer: Peer) -> float | None:
        """Percent per hour the battery lost over the last few minutes (None: no battery yet)."""
        now = peer.options.wall_clock()
        percent = peer.power.read(now).battery_percent
        if percent is None:
            self._power.clear()
            return None
        self._power.append((now, percent))
        while len(self._power) > 2 and now - self._power[1][0] >= DRAIN_WINDOW_S:
            self._power.popleft()
        first_at, first = self._power[0]
        if now - first_at < 60:
            return None
        return (first - percent) * 3600 / (now - first_at)

    def _name(self, node: str) -> str:
        assert self._peer is not None
        cert = self._peer.roster.certificate(node)
        return cert.name if cert is not None and cert.name else node[-8:]

    def status(self) -> dict[str, Any] | None:
        watch = self.watch
        return {
            "series": len(watch.seen),
            "warming": watch.warming(),
            "sample_ms": round(self._cost_s * 1000 / self._rounds, 3) if self._rounds else 0.0,
            "anomalies": watch.anomalies(trio.current_time()),
        }

    def metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        likelihood = GaugeMetricFamily(
            "swarm_anomaly_likelihood",
            "the HTM anomaly likelihood of this device's telemetry series, last sample",
            labels=["series"],
        )
        for series, value in sorted(self.watch.likelihood.items()):
            likelihood.add_metric([series], value)
        yield likelihood
        episodes = CounterMetricFamily(
            "swarm_anomaly_episodes", "anomaly episodes seen, by series", labels=["series"]
        )
        for series, n in sorted(self.watch.episodes.items()):
            episodes.add_metric([series], n)
        yield episodes
