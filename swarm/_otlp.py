"""Optional OpenTelemetry export: the same figures as ``/metrics``, pushed over OTLP/HTTP.

Off unless ``[http] otlp_endpoint`` names a collector (``pip install homeswarm[otlp]``). Every
``otlp_interval_s`` the peer's event loop takes a snapshot of the families ``/metrics`` would
serve (``PeerCollector``); then, in a worker thread, the OpenTelemetry SDK reads that snapshot
through observable instruments (gauges as gauges, counters as monotonic counters named without
``_total``) and its OTLP exporter posts it. Live state is only ever read in the event loop.
Histograms are not exported (their buckets have no observable form); ``/metrics`` has them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from ._metrics import PeerCollector

if TYPE_CHECKING:
    from ._peer import Peer

log = logging.getLogger("swarm.otlp")

Snapshot = dict[str, tuple[str, str, list[tuple[dict[str, str], float]]]]


def snapshot(collector: PeerCollector) -> Snapshot:
    """name -> (kind, documentation, [(labels, value)]) for the gauges and counters."""
    out: Snapshot = {}
    for family in collector.collect():
        if family.type not in ("gauge", "counter"):
            continue
        points = [
            (dict(s.labels), float(s.value))
            for s in family.samples
            if s.name == family.name or s.name == family.name + "_total"
        ]
        out[family.name] = (family.type, family.documentation, points)
    return out


class OtlpBridge:
    """Observable instruments over the latest snapshot; ``export`` pushes it (blocking)."""

    def __init__(self, endpoint: str, resource: dict[str, str], exporter: Any = None) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter(endpoint=endpoint, timeout=10)
        # exports only when asked (``export``): the event loop decides when, not a timer thread
        self.reader = PeriodicExportingMetricReader(exporter, export_interval_millis=1e12)
        self.provider = MeterProvider(
            metric_readers=[self.reader], resource=Resource.create(resource)
        )
        self.meter = self.provider.get_meter("homeswarm")
        self.latest: Snapshot = {}
        self.known: set[str] = set()

    def update(self, latest: Snapshot) -> None:
        self.latest = latest
        for name, (kind, doc, _) in latest.items():
            if name in self.known:
                continue
            self.known.add(name)
            make = (
                self.meter.create_observable_counter
                if kind == "counter"
                else self.meter.create_observable_gauge
            )
            make(name, callbacks=[self._observer(name)], description=doc)

    def _observer(self, name: str) -> Any:
        from opentelemetry.metrics import Observation

        def observe(options: Any) -> Iterable[Observation]:
            _, _, points = self.latest.get(name, ("", "", []))
            return [Observation(value, labels) for labels, value in points]

        return observe

    def export(self) -> bool:
        return bool(self.provider.force_flush(timeout_millis=15_000))

    def close(self) -> None:
        self.provider.shutdown(timeout_millis=5_000)


async def push_metrics(peer: Peer, endpoint: str, interval_s: float, exporter: Any = None) -> None:
    """Push the peer's figures to ``endpoint`` every ``interval_s`` until cancelled."""
    ident = peer.identity
    resource = {
        "service.name": "swarm",
        "service.instance.id": ident.device_id,
        "swarm.device.name": ident.name,
        "swarm.id": ident.swarm_id,
    }
    bridge = OtlpBridge(endpoint, resource, exporter)
    collector = PeerCollector(peer)
    in_thread: Any = trio.to_thread.run_sync  # (the installed trio-stubs predate abandon_on_cancel)
    failing = False
    try:
        while True:
            await trio.sleep(interval_s)
            bridge.update(snapshot(collector))
            ok = await in_thread(bridge.export, abandon_on_cancel=True)
            if not ok and not failing:
                log.warning("otlp: could not export to %s (will keep trying)", endpoint)
            failing = not ok
    finally:
        await in_thread(bridge.close, abandon_on_cancel=True)


__all__ = ["OtlpBridge", "push_metrics", "snapshot"]
