"""Settings: read from ``swarm.toml`` with tomllib into frozen, validated values.

The schema is the dataclasses below: every setting, its type, its default and its one-line
documentation (``doc``). The loader is generic over them, so adding a setting means adding a
field. Any unknown section or key, wrong type, bad value or malformed file raises ``InvalidConfig``
with one line naming the file, the key and the problem.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from homeswarm.errors import InvalidConfig
from homeswarm.vocabulary import ACCELERATORS, SCOPES, Role, scopes_problem

from ._files import CONFIG_NAME as CONFIG_NAME  # re-exported: the face names it here

ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "phone": ("public", "personal"),
    "laptop": SCOPES,
    "server": SCOPES,
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def setting(default: Any, doc: str, check: Callable[[Any], str | None] | None = None) -> Any:
    meta = {"doc": doc, "check": check}
    if isinstance(default, list | dict):
        raise TypeError("use a tuple for a list default")
    return field(default=default, metadata=meta)


def _positive(value: float) -> str | None:
    return None if value > 0 and math.isfinite(value) else "must be a positive number"


def _device_name(value: str) -> str | None:
    if value == "" or _NAME.match(value):
        return None
    return "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def _percent(value: float) -> str | None:
    return None if 0 <= value <= 100 else "must be between 0 and 100"


def _lease(value: float) -> str | None:
    return None if 30 <= value <= 86_400 else "must be between 30 and 86400 seconds"


def _multiaddrs(value: tuple[str, ...]) -> str | None:
    for addr in value:
        if not addr.startswith("/"):
            return f"{addr!r} is not a multiaddr (like /ip4/127.0.0.1/tcp/4747)"
    return None


_ACCELERATOR = re.compile(r"^([a-z]+)(?::([0-9]+(?:\.[0-9]+)?)(GiB|GB|MiB|MB))?$")
_MB_PER = {"GiB": 1024, "GB": 1024, "MiB": 1, "MB": 1}


def parse_accelerator(value: str) -> tuple[str | None, float] | None:
    """``[device] accelerator``: None for ``auto`` (detect it), ``(None, 0.0)`` for ``none``,
    else the declared ``(kind, memory MB)``: ``cuda``, ``mps``, ``cuda:24GiB``, ``mps:16384MiB``
    (GB and MB are taken as GiB and MiB; no memory: 0, not known). ``ValueError`` for others."""
    if value == "auto":
        return None
    if value == "none":
        return (None, 0.0)
    found = _ACCELERATOR.match(value)
    if found is None or found[1] not in ACCELERATORS:
        kinds = ", ".join(ACCELERATORS)
        raise ValueError(f"must be auto, none, or one of {kinds} with an optional :MEMORY")
    memory = float(found[2]) * _MB_PER[found[3]] if found[2] else 0.0
    if memory > 1e9:
        raise ValueError("must declare at most 1e9 MB of accelerator memory")
    return (found[1], memory)


def _accelerator(value: str) -> str | None:
    try:
        parse_accelerator(value)
    except ValueError as exc:
        return f"{exc} (like cuda:24GiB), got {value[:40]!r}"
    return None


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    name: str = setting("", "this device's name, shown in `swarm status`", _device_name)
    role: Role = setting("laptop", "phone, laptop or server: sets defaults for scopes and power")
    scopes: tuple[str, ...] = setting(
        (),
        "data scopes this device may hold: public, personal, private (empty: role's)",
        scopes_problem,
    )
    relay_only: bool = setting(False, "a blind relay: stores and forwards data it may not read")
    accelerator: str = setting(
        "auto",
        "this device's accelerator, gossiped so kernels that need one land here: auto (detect a"
        " CUDA or Apple MPS device), none, or declared: cuda, mps, cuda:24GiB",
        _accelerator,
    )

    def effective_scopes(self) -> tuple[str, ...]:
        return self.scopes or ROLE_SCOPES[self.role]


@dataclass(frozen=True, slots=True)
class SwarmSettings:
    id: str = setting("", "the swarm this device belongs to (written by `swarm init`/`join`)")
    root: str = setting("", "the swarm root's Ed25519 public key, hex (written by init/join)")


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    listen: tuple[str, ...] = setting(
        ("/ip4/0.0.0.0/tcp/4747",), "libp2p addresses to listen on", _multiaddrs
    )
    bootstrap: tuple[str, ...] = setting(
        (), "peers to dial at start: multiaddrs ending in /p2p/PEER_ID", _multiaddrs
    )
    mdns: bool = setting(True, "find peers of this swarm on the LAN with mDNS")
    max_frame_bytes: int = setting(
        4 * 1024 * 1024, "largest message accepted from a peer, in bytes", _positive
    )
    dial_timeout_s: float = setting(5.0, "give up dialing a peer after this long", _positive)
    request_timeout_s: float = setting(
        10.0, "give up waiting for a reply after this long", _positive
    )


PowerSource = Literal["device", "simulated"]
Profile = Literal["auto", "normal", "on-battery", "battery-saver"]
Light = Literal["auto", "on", "off"]


@dataclass(frozen=True, slots=True)
class PowerSettings:
    source: PowerSource = setting(
        "device", "device: read the battery with psutil; simulated: the model below"
    )
    battery_percent: float = setting(100.0, "simulated: charge at start, percent", _percent)
    plugged: bool = setting(True, "simulated: on mains power at start")
    capacity_wh: float = setting(50.0, "simulated: battery capacity, watt-hours", _positive)
    draw_w: float = setting(6.0, "simulated: average draw when unplugged, watts", _positive)
    charge_w: float = setting(30.0, "simulated: charging power when plugged, watts", _positive)


@dataclass(frozen=True, slots=True)
class MembershipSettings:
    profile: Profile = setting(
        "auto",
        "auto (on-battery when unplugged, battery-saver below 30%), normal, on-battery or"
        " battery-saver",
    )
    sample_period_s: float = setting(5.0, "sample this device's state this often", _positive)
    tombstone_s: float = setting(3600.0, "forget dead and departed devices after", _positive)
    light: Light = setting(
        "auto",
        "a light member is not probed and probes nobody; it renews a lease instead (auto: a "
        "phone unless plugged in on an unmetered link, and any device on a metered link), on or"
        " off",
    )
    lease_s: float = setting(
        900.0, "a light member renews its lease twice per this many seconds", _lease
    )


ExecutorKind = Literal["auto", "inline", "ray", "none"]
_KERNEL_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")


def _kernel_names(value: tuple[str, ...]) -> str | None:
    for name in value:
        if not _KERNEL_NAME.match(name):
            return f"{name!r} is not a kernel name (lowercase letters, digits, '.', '_', '-')"
    return None if len(set(value)) == len(value) else "lists a kernel twice"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


@dataclass(frozen=True, slots=True)
class PlacementSettings:
    executor: ExecutorKind = setting(
        "auto",
        "auto (ray on a laptop or server with Ray installed, else inline), inline, ray, none",
    )
    ray_address: str = setting("", "empty: start a local Ray runtime; else the Ray cluster to join")
    ray_trusted: bool = setting(
        False, "the Ray cluster of ray_address may run private kernels (it sees their data)"
    )
    ray_num_cpus: int = setting(0, "cores the local Ray runtime may use (0: all)", _non_negative)
    kernels: tuple[str, ...] = setting(
        (), "kernels this device offers (empty: every installed one)", _kernel_names
    )
    floor_small: float = setting(
        30.0, "a phone on battery below this % runs no small kernel", _percent
    )
    floor_medium: float = setting(
        50.0, "a phone on battery below this % runs no medium kernel", _percent
    )
    floor_large: float = setting(
        80.0, "a phone on battery below this % runs no large kernel", _percent
    )
    tiny_only_below: float = setting(
        20.0, "any device on battery below this % runs tiny kernels only", _percent
    )
    prefer_cheaper_below: float = setting(
        50.0,
        "a device on battery below this % runs a kernel's cheaper variant where it declares one",
        _percent,
    )
    run_timeout_s: float = setting(120.0, "give up on one kernel run after this long", _positive)


def _loopback_listen(value: str) -> str | None:
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        return f"{value!r} is not HOST:PORT (port 0: any free port)"
    if host not in ("127.0.0.1", "localhost") and not host.startswith("127."):
        return f"{value!r}: only a loopback address (127.0.0.0/8) is allowed"
    return None


@dataclass(frozen=True, slots=True)
class HttpSettings:
    listen: str = setting(
        "127.0.0.1:0",
        "this device's web endpoints, loopback only: Prometheus metrics at /metrics and the page"
        " `swarm ui` opens (port 0: any free port, shown by `swarm status --json` under"
        " endpoints; empty: off)",
        _loopback_listen,
    )


def _url(value: str) -> str | None:
    if value and not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        return f"{value!r} is not an http:// or https:// URL"
    return None


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    endpoint: str = setting(
        "",
        "also push the metrics to this OpenTelemetry collector over OTLP/HTTP, e.g."
        " http://127.0.0.1:4318/v1/metrics (needs homeswarm[otlp]; empty: off)",
        _url,
    )
    interval_s: float = setting(15.0, "push every this many seconds", _positive)


def _likelihood(value: float) -> str | None:
    return None if 0.5 < value < 1 else "must be between 0.5 and 1 (exclusive)"


def _series_names(value: tuple[str, ...]) -> str | None:
    known = ("cpu", "memory_free_mb", "battery_drain")
    bad = [v for v in value if v not in known]
    return f"series are from {', '.join(known)}" if bad else None


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    watch: bool = setting(
        True,
        "watch this device's own telemetry (cpu, memory, battery drain, RTTs, vault sync lag)"
        " with HTM and show anomalies in `swarm status`",
    )
    interval_s: float = setting(5.0, "sample the telemetry this often", _positive)
    threshold: float = setting(
        0.9999,
        "a likelihood at least this high is an anomaly (NAB's detectors: 0.9999)",
        _likelihood,
    )
    hosted: tuple[str, ...] = setting(
        ("cpu",),
        "series whose HTM instance the kernel mesh places (on this device or another, moved"
        " with its checkpoint when that device dies); the rest are scored here",
        _series_names,
    )
    checkpoint_s: float = setting(
        300.0,
        "a hosted instance checkpoints into the vault this often (at most this long of events"
        " is replayed after a move)",
        _positive,
    )


@dataclass(frozen=True, slots=True)
class Settings:
    device: DeviceSettings = field(default_factory=DeviceSettings)
    swarm: SwarmSettings = field(default_factory=SwarmSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    power: PowerSettings = field(default_factory=PowerSettings)
    membership: MembershipSettings = field(default_factory=MembershipSettings)
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    otlp: OtlpSettings = field(default_factory=OtlpSettings)
    anomaly: AnomalySettings = field(default_factory=AnomalySettings)


SECTIONS: dict[str, type[Any]] = {
    f.name: typing.get_type_hints(Settings)[f.name] for f in dataclasses.fields(Settings)
}


def load_settings(path: Path) -> Settings:
    """Read and validate a settings file; a missing file gives the defaults."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfig(f"{path}: cannot read: {exc}") from None
    return parse_settings(text, str(path))


def parse_settings(text: str, source: str = CONFIG_NAME) -> Settings:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(f"{source}: not valid TOML: {exc}") from None
    return settings_from_mapping(data, source)


def settings_from_mapping(data: Mapping[str, Any], source: str = CONFIG_NAME) -> Settings:
    sections: dict[str, Any] = {}
    for name, table in data.items():
        cls = SECTIONS.get(name)
        if cls is None:
            known = ", ".join(sorted(SECTIONS))
            raise InvalidConfig(f"{source}: [{name}]: unknown section (known: {known})")
        if not isinstance(table, dict):
            raise InvalidConfig(f"{source}: {name}: must be a table [{name}]")
        sections[name] = _section(cls, name, table, source)
    return Settings(**sections)


def _section(cls: type[Any], name: str, table: dict[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        spec = fields.get(key)
        if spec is None:
            known = ", ".join(sorted(fields))
            raise InvalidConfig(f"{source}: [{name}] {key}: unknown setting (known: {known})")
        where = f"{source}: [{name}] {key}"
        value = _coerce(hints[key], raw, where)
        check = spec.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise InvalidConfig(f"{where}: {problem}")
        values[key] = value
    return cls(**values)


def _coerce(hint: Any, raw: Any, where: str) -> Any:
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if raw not in choices:
            raise InvalidConfig(
                f"{where}: must be one of {', '.join(map(str, choices))}, got {raw!r}"
            )
        return raw
    if origin is tuple:
        (item,) = {a for a in get_args(hint) if a is not Ellipsis}
        if not isinstance(raw, list):
            raise InvalidConfig(f"{where}: expected a list of {_kind(item)}, got {_show(raw)}")
        return tuple(_coerce(item, r, f"{where}[{i}]") for i, r in enumerate(raw))
    if origin in (types.UnionType, typing.Union):
        if raw is None:
            raise InvalidConfig(f"{where}: TOML has no null; leave the key out instead")
        (inner,) = [a for a in get_args(hint) if a is not type(None)]
        return _coerce(inner, raw, where)
    if hint is bool:
        if not isinstance(raw, bool):
            raise InvalidConfig(f"{where}: expected true or false, got {_show(raw)}")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise InvalidConfig(f"{where}: expected an integer, got {_show(raw)}")
        return raw
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise InvalidConfig(f"{where}: expected a number, got {_show(raw)}")
        return float(raw)
    if hint is str:
        if not isinstance(raw, str):
            raise InvalidConfig(f"{where}: expected a string, got {_show(raw)}")
        return raw
    raise TypeError(f"no rule for settings of type {hint!r}")


def _kind(hint: Any) -> str:
    return {str: "strings", int: "integers", float: "numbers", bool: "booleans"}.get(hint, "values")


def _show(raw: Any) -> str:
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(raw), type(raw).__name__)
    text = repr(raw)
    return f"{kind} ({text[:40]})" if len(text) <= 40 else kind


def describe() -> list[tuple[str, str, Any, str]]:
    """Every setting as (section, key, default, doc): the documented defaults."""
    out = []
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            out.append((name, f.name, f.default, f.metadata["doc"]))
    return out
