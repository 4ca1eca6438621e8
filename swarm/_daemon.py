"""``swarm up``: run this device's peer in the foreground, with its control socket.

The daemon is the I/O shell around ``Peer``: a libp2p transport, mDNS, the bootstrap list and the
addresses learned at pairing or remembered from last time (``peers.json``), and the control socket
the CLI talks to (``swarm status``, ``invite``, ``revoke``, ``power``). Ctrl-C or SIGTERM leaves
the swarm gracefully (the others see "left", not "dead") and exits within two seconds.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import random
import secrets
import signal
import socket
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import trio

from homeswarm.errors import InvalidArgument
from homeswarm.transports.discovery import Advertisement, MdnsDiscovery, parse_bootstrap

from ._control import control_path, serve_control
from ._home import Identity, load_identity, load_roster, write_atomically
from ._learn_service import LearnService
from ._logs import close_log, open_log
from ._peer import Peer, PeerOptions
from ._placement_service import PlacementService, device_capabilities
from ._recall_service import RecallService
from ._service import Service
from ._stream_service import StreamService
from ._vault_service import VaultService
from ._watch_service import WatchService, series_params

log = logging.getLogger("swarm.daemon")

PEERS_FILE = "peers.json"
LEAVE_GRACE = 0.5


def device_services(identity: Identity) -> list[Service]:
    """The services a device's peer hosts (``swarm up`` and the demo): one line per service."""
    services: list[Service] = []
    services.append(PlacementService(identity.settings))
    vault = VaultService(identity)
    services.append(vault)
    services.append(RecallService(vault))
    anomaly = identity.settings.anomaly
    if anomaly.watch:
        if anomaly.hosted:  # its scores go to the watch, which hands it the hosted series
            services.append(
                StreamService(
                    hosted=anomaly.hosted, checkpoint_s=anomaly.checkpoint_s, params=series_params
                )
            )
        services.append(WatchService(anomaly))
    services.append(LearnService(identity))
    return services


def advertised(addrs: Sequence[str]) -> list[str]:
    """Dialable forms of our listen addresses: no /p2p suffix, 0.0.0.0 expanded to interfaces."""
    out: list[str] = []
    for addr in addrs:
        base = addr.split("/p2p/")[0]
        parts = base.split("/")
        if len(parts) > 2 and parts[1] == "ip4" and parts[2] == "0.0.0.0":
            for ip in _interface_ips():
                out.append("/".join([*parts[:2], ip, *parts[3:]]))
        else:
            out.append(base)
    return list(dict.fromkeys(out))[:8]


def _interface_ips() -> list[str]:
    ips = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family.name == "AF_INET":
                ip = ipaddress.ip_address(entry.address)
                if not ip.is_link_local:
                    ips.append(str(ip))
    # loopback last: the others are what other devices can reach
    return sorted(set(ips), key=lambda ip: (ipaddress.ip_address(ip).is_loopback, ip))


def load_known_addrs(home: Path) -> dict[str, list[str]]:
    try:
        data = json.loads((home / PEERS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(k): [a for a in v if isinstance(a, str)][:8]
        for k, v in data.items()
        if isinstance(v, list)
    }


def save_known_addrs(home: Path, addrs: dict[str, list[str]]) -> None:
    write_atomically(home / PEERS_FILE, json.dumps(addrs, indent=1, sort_keys=True).encode())


class Daemon:
    """A Peer on libp2p, plus discovery, the control socket and the address memory."""

    def __init__(self, identity: Identity, *, listen: Sequence[str], mdns: bool) -> None:
        self.identity = identity
        self.listen = list(listen)
        self.mdns = mdns
        self.peer: Peer | None = None
        self.endpoints: dict[str, str | None] = {"metrics": None, "ui": None}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from homeswarm.transports.libp2p import Libp2pTransport

        ident = self.identity
        net = ident.settings.network
        roster = load_roster(ident)
        seeds = [(peer, [addr]) for peer, addr in parse_bootstrap(net.bootstrap)]
        async with trio.open_nursery() as nursery:
            # the control socket first: it refuses a second peer on this home before any port
            await nursery.start(serve_control, control_path(ident.home), self._control)
            transport = Libp2pTransport(
                ident.private_seed(),
                self.listen,
                max_frame=net.max_frame_bytes,
                dial_timeout=net.dial_timeout_s,
                request_timeout=net.request_timeout_s,
            )
            async with transport:
                addrs = advertised(transport.addrs)
                executor, kernels = device_capabilities(ident.settings)
                self.peer = Peer(
                    ident,
                    roster,
                    PeerOptions(
                        listen_addrs=lambda: addrs,
                        seeds=seeds,
                        known_addrs=load_known_addrs(ident.home),
                        services=device_services(ident),
                        executor=executor,
                        kernels=kernels,
                    ),
                )
                async with trio.open_nursery() as inner:
                    await inner.start(self.peer.run, transport)
                    if self.mdns:
                        await inner.start(self._discover, transport.addrs)
                    inner.start_soon(self._remember_addresses)
                    if ident.settings.http.listen:
                        await inner.start(self._serve_http, ident.settings.http.listen)
                    if ident.settings.otlp.endpoint:
                        inner.start_soon(self._push_otlp)
                    task_status.started(transport.addrs)
                    await trio.sleep_forever()

    async def _serve_http(
        self, listen: str, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """``/metrics`` and the page on loopback; a port in use costs those, never the peer."""
        from ._http import HttpServer, Request, Response
        from ._metrics import exposition
        from ._ui import ui_routes

        def metrics(request: Request) -> Response:
            assert self.peer is not None
            body, kind = exposition(self.peer)
            return Response(200, body, kind)

        token = secrets.token_urlsafe(18)
        routes = {"/metrics": metrics, **ui_routes(lambda: self.peer)}
        server = HttpServer(routes, token=token, public={"/metrics"})
        try:
            listeners = await server.bind(listen)
        except OSError as exc:
            log.error("http: cannot listen on %s (%s); no metrics, no page", listen, exc.strerror)
            task_status.started()
            return
        self.endpoints["metrics"] = f"{server.url}/metrics"
        self.endpoints["ui"] = f"{server.url}/?token={token}"
        log.info("metrics at %s/metrics", server.url)
        task_status.started()
        await server.serve(listeners)

    async def _push_otlp(self) -> None:
        settings = self.identity.settings.otlp
        from ._otlp import push_metrics

        try:
            import opentelemetry.exporter.otlp.proto.http  # noqa: F401
        except ImportError:
            log.error("otlp: [otlp] endpoint is set but homeswarm[otlp] is not installed")
            return
        assert self.peer is not None
        await push_metrics(self.peer, settings.endpoint, settings.interval_s)

    async def _control(self, op: str, args: dict[str, Any]) -> Any:
        peer = self.peer
        if peer is None:
            raise InvalidArgument("the peer is still starting; try again in a moment")
        if op == "status":
            return {**await peer.fresh_status(), "endpoints": self.endpoints}
        if op == "invite":
            ttl = args.get("ttl", 600.0)
            return {"code": peer.invite(ttl), "ttl": ttl}
        if op == "revoke":
            device = args.get("device")
            if not isinstance(device, str) or not device:
                raise InvalidArgument("revoke: name a device")
            cert = peer.revoke(device)
            return {"device": cert.device, "name": cert.name}
        if op == "power":
            return peer.set_power(args.get("battery"), args.get("plugged"))
        return await peer.control(op, args)

    async def _remember_addresses(self) -> None:
        peer = self.peer
        assert peer is not None
        saved: dict[str, list[str]] = {}
        while True:
            await trio.sleep(5.0)
            core = peer.core
            if core is None:
                continue
            now = {
                n: peer.addrs_of(n)
                for n in core.members
                if n != self.identity.device_id and peer.roster.admits(n)
            }
            now = {n: a for n, a in now.items() if a}
            if now != saved:
                with contextlib.suppress(OSError):
                    save_known_addrs(self.identity.home, now)
                saved = now

    async def _discover(
        self, addrs: Sequence[str], *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        ident = self.identity
        advert = Advertisement.create(ident.swarm_id, ident.device_id, random.Random())
        port, hosts = _port_and_hosts(addrs)
        async with MdnsDiscovery(advert, port=port, addresses=hosts) as mdns:
            task_status.started()
            async for seen in mdns.sightings:
                if not seen.is_swarm(ident.swarm_id) or self.peer is None:
                    continue
                others = [c.device for c in self.peer.roster.members()]
                device = seen.device_in(d for d in others if d != ident.device_id)
                if device is not None:
                    log.info("saw %s on the LAN at %s", device[-8:], ", ".join(seen.addrs))
                    self.peer.join([(device, list(seen.addrs))])


def _port_and_hosts(addrs: Sequence[str]) -> tuple[int, list[str]]:
    hosts, port = [], 0
    for addr in addrs:
        parts = addr.split("/")
        if len(parts) > 4 and parts[1] == "ip4" and parts[3] == "tcp":
            hosts.append(parts[2])
            port = int(parts[4])
    return port, hosts or ["127.0.0.1"]


async def _until_signal(daemon: Daemon, *, banner: bool) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            addrs = await nursery.start(daemon.run)
            ident = daemon.identity
            if banner:
                print(f"swarm up: {ident.name} ({ident.settings.device.role}) {ident.device_id}")
                print(f"  swarm {ident.swarm_id}")
                for addr in addrs:
                    print(f"  listening on {addr}")
                print("  Ctrl-C to stop", flush=True)
            nursery.start_soon(_tell_systemd)
            async for _ in signals:
                break
            sd_notify("STOPPING=1")
            if daemon.peer is not None:
                with trio.move_on_after(1.0):
                    await daemon.peer.leave(LEAVE_GRACE)
            nursery.cancel_scope.cancel()


def sd_notify(message: str) -> bool:
    """Tell systemd (``Type=notify``) how we are, when it started us; else do nothing."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(target)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("could not notify systemd: %s", exc)
        return False
    return True


async def _tell_systemd() -> None:
    """READY once the peer listens; then, if systemd keeps a watchdog, ping it from the event
    loop at half its period: a peer whose loop is stuck stops pinging and is restarted."""
    sd_notify("READY=1")
    try:
        period = int(os.environ.get("WATCHDOG_USEC", "0")) / 1e6
    except ValueError:
        period = 0.0
    if period <= 0 or os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return
    while True:
        if not sd_notify("WATCHDOG=1"):
            return
        await trio.sleep(period / 2)


def run_up(home: Path, *, listen: list[str] | None = None, mdns: bool = True) -> int:
    """Run the peer of ``home`` until a signal; ``listen`` and ``mdns`` narrow its settings."""
    identity = load_identity(home)
    listen = listen or list(identity.settings.network.listen)
    mdns = identity.settings.network.mdns and mdns
    handler = open_log(identity.home)
    log.info(
        "starting %s (%s) %s", identity.name, identity.settings.device.role, identity.device_id
    )
    try:
        trio.run(partial(_until_signal, Daemon(identity, listen=listen, mdns=mdns), banner=True))
    finally:
        log.info("stopped")
        close_log(handler)
    print("swarm up: left the swarm and stopped", flush=True)
    return 0
