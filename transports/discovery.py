"""Finding peers: mDNS on the LAN and a static bootstrap list.

What goes on the LAN says nothing about who we are. A record of ``_swarm._tcp.local.`` carries an
address and port, a random salt, and two salted hashes: of the swarm id and of the device id. A
stranger learns only that some swarm device is there; a member, who knows the swarm id and the
member ids, recognises its swarm and which member it is (``Sighting.is_swarm``/``device_in``).
The salt changes at every start, so records cannot be linked across restarts by their hashes.

The codec is pure; ``MdnsDiscovery`` is the thin driver. zeroconf calls back on its own thread,
so the driver hops into trio with a ``TrioToken`` and hands sightings over a memory channel.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import random
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from homeswarm.errors import InvalidArgument

log = logging.getLogger("transports.discovery")

SERVICE = "_swarm._tcp.local."
VERSION = "1"
_HASH_BYTES = 16


def _tag(salt: bytes, kind: bytes, value: str) -> str:
    return hashlib.sha256(kind + b"\0" + salt + value.encode()).digest()[:_HASH_BYTES].hex()


@dataclass(frozen=True, slots=True)
class Advertisement:
    """What one device publishes: no names, no keys, only salted hashes."""

    salt: bytes
    swarm_tag: str
    device_tag: str

    @classmethod
    def create(cls, swarm_id: str, device_id: str, rng: random.Random) -> Advertisement:
        salt = rng.randbytes(8)
        return cls(salt, _tag(salt, b"swarm", swarm_id), _tag(salt, b"device", device_id))

    def properties(self) -> dict[str, str]:
        return {"v": VERSION, "s": self.salt.hex(), "h": self.swarm_tag, "d": self.device_tag}

    @classmethod
    def from_properties(cls, props: Mapping[bytes | str, bytes | str | None]) -> Advertisement:
        def get(key: str) -> str:
            value = props.get(key.encode(), props.get(key))
            if value is None:
                raise InvalidArgument(f"record lacks {key!r}")
            return value.decode("ascii", "replace") if isinstance(value, bytes) else value

        if get("v") != VERSION:
            raise InvalidArgument("unknown record version")
        try:
            salt = bytes.fromhex(get("s"))
        except ValueError:
            raise InvalidArgument("salt is not hex") from None
        swarm_tag, device_tag = get("h"), get("d")
        if (
            len(salt) != 8
            or len(swarm_tag) != 2 * _HASH_BYTES
            or len(device_tag) != 2 * _HASH_BYTES
        ):
            raise InvalidArgument("record fields have the wrong length")
        return cls(salt, swarm_tag, device_tag)


@dataclass(frozen=True, slots=True)
class Sighting:
    """A swarm device seen on the LAN: its advertisement and where it listens."""

    advert: Advertisement
    addrs: tuple[str, ...]

    def is_swarm(self, swarm_id: str) -> bool:
        return hmac.compare_digest(
            _tag(self.advert.salt, b"swarm", swarm_id), self.advert.swarm_tag
        )

    def device_in(self, device_ids: Iterable[str]) -> str | None:
        """Which of the given devices published this, if any."""
        for device in device_ids:
            if hmac.compare_digest(
                _tag(self.advert.salt, b"device", device), self.advert.device_tag
            ):
                return device
        return None

    def dial_addrs(self, device_id: str) -> list[str]:
        return [f"{addr}/p2p/{device_id}" for addr in self.addrs]


def parse_bootstrap(addrs: Iterable[str]) -> list[tuple[str, str]]:
    """Split bootstrap multiaddrs ``.../p2p/PEER`` into (peer id, address) pairs."""
    out = []
    for addr in addrs:
        base, sep, peer = addr.rpartition("/p2p/")
        if not sep or not peer or "/" in peer or not base:
            raise InvalidArgument(f"bootstrap address {addr!r} must end in /p2p/PEER_ID")
        out.append((peer, addr))
    return out


def _tcp_addrs(addresses: Iterable[bytes], port: int) -> tuple[str, ...]:
    out = []
    for raw in addresses:
        try:
            ip = ipaddress.ip_address(raw)
        except ValueError:
            continue
        proto = "ip4" if ip.version == 4 else "ip6"
        out.append(f"/{proto}/{ip}/tcp/{port}")
    return tuple(out)


class MdnsDiscovery:
    """Advertise this device on the LAN and report other swarm devices seen there.

    ``async with MdnsDiscovery(...) as d: async for sighting in d.sightings: ...``
    """

    def __init__(
        self,
        advert: Advertisement,
        *,
        port: int,
        addresses: Iterable[str],
        interfaces: list[str] | None = None,
    ) -> None:
        self.advert = advert
        self.port = port
        self.addresses = [socket.inet_aton(a) for a in addresses]
        self.interfaces = interfaces
        self.sightings: trio.MemoryReceiveChannel[Sighting]
        self._send, self.sightings = trio.open_memory_channel[Sighting](64)
        self._zc: Any = None
        self._browser: Any = None
        self._info: Any = None

    async def __aenter__(self) -> MdnsDiscovery:
        await trio.to_thread.run_sync(self._start, trio.lowlevel.current_trio_token())
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._stop)
        self._send.close()

    def _start(self, token: trio.lowlevel.TrioToken) -> None:
        from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

        kwargs: dict[str, Any] = {"ip_version": IPVersion.V4Only}
        if self.interfaces:
            kwargs["interfaces"] = self.interfaces
        zc = Zeroconf(**kwargs)
        name = f"{self.advert.device_tag[:16]}.{SERVICE}"
        self._info = ServiceInfo(
            SERVICE,
            name,
            addresses=self.addresses,
            port=self.port,
            properties=self.advert.properties(),
            server=f"{self.advert.device_tag[:16]}.local.",
        )
        zc.register_service(self._info)
        own = name

        def changed(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
            if name == own or state_change is ServiceStateChange.Removed:
                return
            try:
                info = zeroconf.get_service_info(service_type, name, timeout=2000)
                if info is None:
                    return
                advert = Advertisement.from_properties(info.properties or {})
                sighting = Sighting(advert, _tcp_addrs(info.addresses, info.port))
            except InvalidArgument as exc:
                log.debug("ignoring mDNS record %s: %s", name, exc)
                return
            except Exception:
                log.exception("reading mDNS record %s failed", name)
                return
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._deliver, sighting, trio_token=token)

        self._browser = ServiceBrowser(zc, SERVICE, handlers=[changed])
        self._zc = zc

    def _deliver(self, sighting: Sighting) -> None:
        try:
            self._send.send_nowait(sighting)
        except (trio.WouldBlock, trio.ClosedResourceError):
            log.debug("dropping an mDNS sighting: nobody is reading")

    def _stop(self) -> None:
        if self._zc is None:
            return
        try:
            if self._browser is not None:
                self._browser.cancel()
            self._zc.unregister_service(self._info)
        finally:
            self._zc.close()
            self._zc = None
