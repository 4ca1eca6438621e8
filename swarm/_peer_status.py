"""``swarm status --json``: the rows of what this peer knows about each member. Pure.

A row per member that has a state or a certificate, this device first, then by name: its id,
name and role (the certificate's, else what it said about itself), membership status and
incarnation, how long since it was last heard (``now`` is an argument), its round-trip time,
then the power, load, privacy and capabilities of its gossiped state (``DeviceState.as_status``;
empty figures for a member whose state we do not have). Each service with something to show adds
its section under its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._certs import Roster
from ._device import decode_state
from ._membership import Member
from ._service import Service


def status_json(
    *,
    me: str,
    swarm: str,
    members: Mapping[str, Member],
    roster: Roster,
    services: Mapping[str, Service],
    now: float,
) -> dict[str, Any]:
    """The whole status document; see the module's rules."""
    rows = []
    for node, member in members.items():
        state = decode_state(member.state) if member.state else None
        cert = roster.certificate(node)
        if state is None and cert is None:
            continue
        own = node == me
        heard = member.last_heard if member.last_heard is not None else member.changed_at
        row: dict[str, Any] = {
            "id": node,
            "name": cert.name if cert else (state.name if state else ""),
            "role": cert.role if cert else (state.role if state else "laptop"),
            "self": own,
            "state": member.status,
            "incarnation": member.incarnation,
            "last_seen_s": 0.0 if own else round(max(now - heard, 0.0), 1),
            "latency_ms": None if own or member.rtt is None else round(member.rtt * 1000, 2),
        }
        parts = state.as_status() if state else _no_state()
        parts.pop("name", None)
        parts.pop("role", None)
        row.update(parts)
        rows.append(row)
    rows.sort(key=lambda r: (not r["self"], r["name"], r["id"]))
    out: dict[str, Any] = {"self": me, "swarm": swarm, "peers": rows}
    for name, service in services.items():
        part = service.status()
        if part is not None:
            out[name] = part
    return out


def _no_state() -> dict[str, Any]:
    return {
        "power": {"battery_percent": None, "plugged": None, "minutes_left": None},
        "load": {"cpu_percent": 0.0, "memory_free_mb": 0.0},
        "privacy": {"scopes": [], "relay_only": False},
        "lease_s": 0,
        "capabilities": {"executor": "unknown", "kernels": []},
    }
