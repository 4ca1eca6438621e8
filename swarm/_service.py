"""Services: what a peer hosts besides membership (the vault, placement), through one mechanism.

A service has a name, which prefixes its operations: a member's request ``{"op": "vault.sync",
...}`` goes to the ``vault`` service's ``handle``, a local CLI request ``vault.put`` (over the
control socket) to its ``control``. The peer starts each service's ``run`` once membership is up,
tells it when the roster changes, and puts its ``status()`` into ``swarm status --json`` under its
name. Override what you need; the defaults refuse or do nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from homeswarm.transports import Connection, InvalidArgument, ProtocolViolation

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from ._peer import Peer


class Service:
    name = ""

    async def run(self, peer: Peer, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Background work while the peer runs; cancelled when it stops."""
        task_status.started()

    async def handle(self, conn: Connection, op: str, body: dict[str, Any]) -> Any:
        """A request from an admitted member; raise ``ProtocolViolation`` for a malformed one."""
        raise ProtocolViolation(f"unknown operation {self.name}.{op}")

    async def control(self, op: str, args: dict[str, Any]) -> Any:
        """A request from this device's CLI; raise ``InvalidArgument`` for bad arguments."""
        raise InvalidArgument(f"unknown request {self.name}.{op}")

    def roster_changed(self, devices: list[str]) -> None:
        """These devices were added to or revoked from the roster."""

    def metrics(self) -> Iterable[Metric]:
        """Prometheus metric families for ``/metrics`` (names ``swarm_<service>_...``)."""
        return ()

    def status(self) -> dict[str, Any] | None:
        """This service's part of ``swarm status --json`` (None: nothing to show)."""
        return None


def split_op(op: object) -> tuple[str, str] | None:
    """``"vault.put"`` -> ``("vault", "put")``; anything else -> None."""
    if not isinstance(op, str) or "." not in op:
        return None
    name, _, rest = op.partition(".")
    return (name, rest) if name and rest else None
