"""``swarm up`` and ``swarm demo``: run a peer in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio

from transports import Connection, TransportError
from transports._discovery import Advertisement, MdnsDiscovery, parse_bootstrap

from ._home import Identity, init_home, load_identity, resolve_home

log = logging.getLogger("swarm.daemon")


class Peer:
    """The running peer. For now: transport, discovery, bootstrap and a ping service."""

    def __init__(self, identity: Identity, *, listen: Sequence[str], mdns: bool) -> None:
        self.identity = identity
        self.listen = list(listen)
        self.mdns = mdns
        self.transport: Any = None

    async def _handle(self, conn: Connection, body: Any) -> Any:
        if isinstance(body, dict) and body.get("type") == "ping":
            return {"type": "pong", "device": self.identity.device_id}
        raise LookupError("unknown message")

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from transports.libp2p import Libp2pTransport

        net = self.identity.settings.network
        self.transport = Libp2pTransport(
            self.identity.private_seed(),
            self.listen,
            max_frame=net.max_frame_bytes,
            dial_timeout=net.dial_timeout_s,
            request_timeout=net.request_timeout_s,
        )
        async with self.transport, trio.open_nursery() as nursery:
            self.transport.set_handler(self._handle)
            for peer, addr in parse_bootstrap(net.bootstrap):
                nursery.start_soon(self._greet, peer, [addr])
            if self.mdns:
                await nursery.start(self._discover)
            task_status.started(self.transport.addrs)
            await trio.sleep_forever()  # serve until cancelled

    async def _greet(self, peer: str, addrs: list[str]) -> None:
        try:
            conn = await self.transport.dial(peer, addrs)
            reply = await conn.request({"type": "ping"})
            log.info("reached %s: %s", peer, reply)
            await conn.aclose()
        except TransportError as exc:
            log.warning("bootstrap peer %s: %s", peer[-8:], exc)

    async def _discover(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        advert = Advertisement.create(
            self.identity.swarm_id, self.identity.device_id, random.Random()
        )
        port, hosts = _port_and_hosts(self.transport.addrs)
        async with MdnsDiscovery(advert, port=port, addresses=hosts) as mdns:
            task_status.started()
            async for seen in mdns.sightings:
                if seen.is_swarm(self.identity.swarm_id):
                    log.info("saw a device of this swarm at %s", ", ".join(seen.addrs))


def _port_and_hosts(addrs: Sequence[str]) -> tuple[int, list[str]]:
    hosts, port = [], 0
    for addr in addrs:
        parts = addr.split("/")
        if len(parts) > 4 and parts[1] == "ip4" and parts[3] == "tcp":
            hosts.append(parts[2])
            port = int(parts[4])
    return port, hosts or ["127.0.0.1"]


async def _until_signal(peer: Peer, *, seconds: float | None, banner: bool) -> None:
    async with trio.open_nursery() as nursery:
        addrs = await nursery.start(peer.run)
        ident = peer.identity
        if banner:
            print(f"swarm up: {ident.name} ({ident.settings.device.role}) {ident.device_id}")
            for addr in addrs:
                print(f"  listening on {addr}")
            print("  Ctrl-C to stop", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            with trio.move_on_after(seconds if seconds is not None else float("inf")):
                async for _ in signals:
                    break
        nursery.cancel_scope.cancel()


def run_up(args: argparse.Namespace) -> int:
    identity = load_identity(resolve_home(args.home))
    listen = args.listen or list(identity.settings.network.listen)
    mdns = identity.settings.network.mdns and not args.no_mdns
    peer = Peer(identity, listen=listen, mdns=mdns)
    trio.run(partial(_until_signal, peer, seconds=None, banner=True))
    print("swarm up: stopped")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="swarm-demo-"))
    try:
        identity = init_home(root / "laptop", name="laptop", role="laptop")
        peer = Peer(identity, listen=["/ip4/127.0.0.1/tcp/0"], mdns=False)
        print(f"swarm demo: one peer on a temporary home ({root})", file=sys.stderr)
        trio.run(partial(_until_signal, peer, seconds=args.seconds, banner=True))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
