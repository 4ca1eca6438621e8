"""The peer's figures in Prometheus's text format: what ``/metrics`` serves.

Nothing here counts anything itself. At each scrape, in the peer's own event loop, ``collect``
reads the figures the components already keep (membership's message counters and the members'
states, the transport's connections and refusals, each device's gossiped power and load, and
whatever each service reports through ``Service.metrics``) and turns them into metric families.
Names follow Prometheus's conventions: a ``swarm_`` prefix, ``_total`` on counters, units in the
name. Labels carry device names and ids, never a vault key or value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

if TYPE_CHECKING:
    from ._peer import Peer

STATES = ("alive", "suspect", "dead", "away", "left")


class PeerCollector:
    """A prometheus_client collector over one running peer."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    def collect(self) -> Iterator[Metric]:
        peer = self.peer
        core = peer.core
        if core is None:
            return
        yield from _membership(peer)
        yield from _devices(peer)
        if peer.transport is not None:
            stats = peer.transport.statistics()
            conns = GaugeMetricFamily(
                "swarm_transport_connections", "open connections", labels=["direction"]
            )
            conns.add_metric(["inbound"], stats.inbound)
            conns.add_metric(["outbound"], stats.outbound)
            yield conns
            yield CounterMetricFamily(
                "swarm_transport_refused",
                "connections refused at admission (not members of this swarm)",
                value=stats.refused,
            )
            yield CounterMetricFamily(
                "swarm_transport_violations",
                "connections closed for a malformed or oversized frame from the peer",
                value=stats.violations,
            )
        for service in peer.services.values():
            yield from service.metrics()


def counted(
    name: str, doc: str, labels: list[str], counts: Mapping[Any, int]
) -> CounterMetricFamily:
    """A counter family from counts kept by label value (a tuple when there are several)."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return family


def _membership(peer: Peer) -> Iterator[Metric]:
    core = peer.core
    assert core is not None
    members = GaugeMetricFamily(
        "swarm_members", "devices this peer knows, by membership state", labels=["state"]
    )
    counts = dict.fromkeys(STATES, 0)
    for member in core.members.values():
        counts[member.status] = counts.get(member.status, 0) + 1
    for state, n in counts.items():
        members.add_metric([state], n)
    yield members
    stats = core.stats
    yield counted(
        "swarm_membership_messages_sent", "membership messages sent, by kind", ["kind"], stats.sent
    )
    yield counted(
        "swarm_membership_messages_received",
        "membership messages received, by kind",
        ["kind"],
        stats.received,
    )
    yield CounterMetricFamily(
        "swarm_membership_rejected", "membership records refused", value=stats.rejected
    )
    yield CounterMetricFamily(
        "swarm_membership_stale", "membership records older than what was known", value=stats.stale
    )
    yield CounterMetricFamily(
        "swarm_membership_refutations",
        "times this peer refuted a suspicion about itself",
        value=stats.refutations,
    )


def _devices(peer: Peer) -> Iterator[Metric]:
    labels = ["device", "name"]
    battery = GaugeMetricFamily(
        "swarm_device_battery_percent", "battery charge as gossiped (absent: none)", labels=labels
    )
    plugged = GaugeMetricFamily(
        "swarm_device_plugged", "1 on mains power, 0 on battery", labels=labels
    )
    cpu = GaugeMetricFamily("swarm_device_cpu_percent", "processor load as gossiped", labels=labels)
    rtt = GaugeMetricFamily(
        "swarm_device_rtt_seconds", "round-trip time of this peer's last probe", labels=labels
    )
    seen = GaugeMetricFamily(
        "swarm_device_last_seen_seconds", "seconds since this peer last heard of it", labels=labels
    )
    for row in peer.status()["peers"]:
        key = [row["id"], row["name"]]
        power = row.get("power") or {}
        if power.get("battery_percent") is not None:
            battery.add_metric(key, power["battery_percent"])
        if power.get("plugged") is not None:
            plugged.add_metric(key, 1.0 if power["plugged"] else 0.0)
        cpu.add_metric(key, (row.get("load") or {}).get("cpu_percent", 0.0))
        if row.get("latency_ms") is not None:
            rtt.add_metric(key, row["latency_ms"] / 1000)
        seen.add_metric(key, row["last_seen_s"])
    yield from (battery, plugged, cpu, rtt, seen)


def exposition(peer: Peer) -> tuple[bytes, str]:
    """The text a scrape gets, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PeerCollector(peer))
    return generate_latest(registry), CONTENT_TYPE_LATEST


__all__ = ["PeerCollector", "exposition"]
