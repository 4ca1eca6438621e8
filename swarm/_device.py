"""A device's own state: what it gossips about itself, its wire form, and how it is sampled.

Rules:

- ``DeviceState`` is a frozen value, validated when built (``InvalidArgument``, a ``ValueError``),
  and the only thing of this module msgpack sees. Its floats are kept to one decimal when built,
  so a state equals what comes back from the wire. The lead's membership code carries it inside
  a signed "alive" record; nothing here signs.
- The wire form is a positional list led by ``WIRE_VERSION``; floats travel as integer tenths
  (``87.3`` -> ``873``) to stay small. ``DeviceState.from_wire`` takes what a peer sent, checks it
  against ``STATE_WIRE`` (``homeswarm.wire``) and raises ``MalformedMessage`` (a
  ``ProtocolViolation``) with a short reason for any bad shape, type or value, never anything else.
- Sizes are bounded so that any valid state packs to well under 1 KB (room for the signature and
  the record around it in one gossip message): at most ``MAX_ADDRS`` addresses of at most
  ``MAX_ADDR_CHARS`` characters and ``MAX_ADDRS_TOTAL`` together; at most ``MAX_KERNELS`` kernel
  names of at most ``MAX_KERNEL_CHARS`` and ``MAX_KERNELS_TOTAL`` together. ``sample_state`` drops
  addresses that do not fit rather than fail.
- ``accelerator`` is the kind of this device's accelerator (``cuda``, ``mps``; None: none) and
  ``accelerator_mb`` its memory in whole MB (0: not known), as ``_sensors`` found it or
  ``swarm.toml`` [device] accelerator declares it; a kernel that needs one is placed where one is.
- A new sample is worth gossiping when ``meaningfully_different`` says so (or, the caller's rule,
  when 60 s have passed since the last one).
- Power comes from a ``Power``: ``SimulatedPower`` here is a linear battery model that only moves
  when asked with a later ``now``; the machine's own battery (``DevicePower``) and load
  (``LoadSampler``) are read in ``_sensors``, the one module that imports psutil. This module does
  no I/O and reads no clock (time is an argument), so the simulator and the codec never load it.
  Only the simulated power source may be changed at run time; ``FixedLoad`` stands in for a
  machine's load in tests and simulations.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

import msgpack

from homeswarm.errors import InvalidArgument, ProtocolViolation
from homeswarm.kernels import ACCELERATORS
from homeswarm.vocabulary import ROLES, SCOPES
from homeswarm.wire import Field, Schema

from ._config import PowerSettings, Settings, _device_name

log = logging.getLogger("swarm.device")

WIRE_VERSION = 2  # 2: the accelerator
MAX_NAME_CHARS = 64
MAX_ADDRS = 8
MAX_ADDR_CHARS = 128
MAX_ADDRS_TOTAL = 400
MAX_KERNELS = 32
MAX_KERNEL_CHARS = 32
MAX_KERNELS_TOTAL = 256
MAX_EXECUTOR_CHARS = 16
MAX_MINUTES = 1e7  # about 19 years; longer estimates are shown as this
MAX_MEMORY_MB = 1e9  # a petabyte
MAX_VERSION = 2**63 - 1
SAVER_BELOW_PERCENT = 30.0
MAX_LEASE_S = 86_400

_TENTHS = MAX_MEMORY_MB * 10  # the largest figure a state carries, in tenths


def _tenths_field(name: str, *, optional: bool = False) -> Field:
    return Field(name, int, least=0, most=_TENTHS, optional=optional)


# the wire form, in order (the value type checks the rest when built)
STATE_WIRE = Schema(
    "device state",
    Field("wire_version", int, equals=WIRE_VERSION),
    Field("name", str),
    Field("role", str),
    Field("addrs", list),
    _tenths_field("battery", optional=True),
    Field("plugged", bool, optional=True),
    _tenths_field("minutes_left", optional=True),
    _tenths_field("cpu"),
    _tenths_field("memory_free_mb"),
    Field("scopes", list),
    Field("relay_only", bool),
    Field("executor", str),
    Field("kernels", list),
    Field("version", int),
    Field("lease_s", int),
    Field("accelerator", str, optional=True, most=8),
    Field("accelerator_mb", int, least=0, most=MAX_MEMORY_MB),
    positional=True,
)

# an accelerator as sampled: its kind (None: none) and its memory in MB (0: not known)
Accelerator = tuple[str | None, float]
NO_ACCELERATOR: Accelerator = (None, 0.0)


# -- the state ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What a device says about itself; ``version`` grows with each new state of one device."""

    name: str
    role: str
    addrs: tuple[str, ...]
    battery_percent: float | None
    plugged: bool | None
    minutes_left: float | None
    cpu_percent: float
    memory_free_mb: float
    scopes: tuple[str, ...]
    relay_only: bool
    executor: str
    kernels: tuple[str, ...]
    version: int
    lease_s: int = 0  # a light member's lease (it is not probed; see _membership); 0: a full one
    accelerator: str | None = None  # cuda or mps; None: none
    accelerator_mb: float = 0.0  # its memory, whole MB; 0: not known

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or _device_name(self.name) is not None:
            raise InvalidArgument("name must be empty or 1-64 letters, digits, '.', '_', '-'")
        if self.role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
        addrs = _texts("addrs", self.addrs, MAX_ADDRS, MAX_ADDR_CHARS, MAX_ADDRS_TOTAL)
        if not all(a.startswith("/") for a in addrs):
            raise InvalidArgument("addrs must be multiaddrs (starting with '/')")
        scopes = _texts("scopes", self.scopes, len(SCOPES), 16, 64)
        if not set(scopes) <= set(SCOPES) or len(set(scopes)) != len(scopes):
            raise InvalidArgument(f"scopes must be distinct names from {', '.join(SCOPES)}")
        kernels = _texts("kernels", self.kernels, MAX_KERNELS, MAX_KERNEL_CHARS, MAX_KERNELS_TOTAL)
        _texts("executor", (self.executor,), 1, MAX_EXECUTOR_CHARS, MAX_EXECUTOR_CHARS)
        for flag in ("plugged", "relay_only"):
            value = getattr(self, flag)
            if not (isinstance(value, bool) or (value is None and flag == "plugged")):
                raise InvalidArgument(f"{flag} must be a boolean")
        if not _is_int(self.version) or not 0 <= self.version <= MAX_VERSION:
            raise InvalidArgument("version must be a non-negative integer")
        if not _is_int(self.lease_s) or not 0 <= self.lease_s <= MAX_LEASE_S:
            raise InvalidArgument(f"lease_s must be a whole number of seconds, 0-{MAX_LEASE_S}")
        if self.accelerator is not None and self.accelerator not in ACCELERATORS:
            raise InvalidArgument(f"accelerator must be none or one of {', '.join(ACCELERATORS)}")
        mb = self.accelerator_mb
        if not _is_number(mb) or not 0 <= mb <= MAX_MEMORY_MB or (mb and not self.accelerator):
            raise InvalidArgument("accelerator_mb must be 0-1e9 MB, and 0 without an accelerator")
        set_ = object.__setattr__
        set_(self, "addrs", addrs)
        set_(self, "scopes", scopes)
        set_(self, "kernels", kernels)
        set_(self, "battery_percent", _optional_tenth("battery_percent", self.battery_percent, 100))
        set_(self, "minutes_left", _optional_tenth("minutes_left", self.minutes_left, MAX_MINUTES))
        set_(self, "cpu_percent", _tenth("cpu_percent", self.cpu_percent, 100))
        set_(self, "memory_free_mb", _tenth("memory_free_mb", self.memory_free_mb, MAX_MEMORY_MB))
        set_(self, "accelerator_mb", float(round(mb)))

    def to_wire(self) -> list[Any]:
        """The compact, msgpack-able form, positional, floats as integer tenths (or None).

        ``[1, name, role, [addrs], battery, plugged, minutes_left, cpu, memory_free_mb,
        [scopes], relay_only, executor, [kernels], version, lease_s, accelerator,
        accelerator_mb]`` (the wire version is 2)
        """
        return [
            WIRE_VERSION,
            self.name,
            self.role,
            list(self.addrs),
            _to_tenths(self.battery_percent),
            self.plugged,
            _to_tenths(self.minutes_left),
            _to_tenths(self.cpu_percent),
            _to_tenths(self.memory_free_mb),
            list(self.scopes),
            self.relay_only,
            self.executor,
            list(self.kernels),
            self.version,
            self.lease_s,
            self.accelerator,
            round(self.accelerator_mb),
        ]

    @classmethod
    def from_wire(cls, obj: object) -> DeviceState:
        """A state a peer sent; raises ``MalformedMessage`` for anything that is not one."""
        f = STATE_WIRE.check(obj)
        try:
            return cls(
                name=f["name"],
                role=f["role"],
                addrs=tuple(f["addrs"]),
                battery_percent=_from_tenths(f["battery"]),
                plugged=f["plugged"],
                minutes_left=_from_tenths(f["minutes_left"]),
                cpu_percent=f["cpu"] / 10,
                memory_free_mb=f["memory_free_mb"] / 10,
                scopes=tuple(f["scopes"]),
                relay_only=f["relay_only"],
                executor=f["executor"],
                kernels=tuple(f["kernels"]),
                version=f["version"],
                lease_s=f["lease_s"],
                accelerator=f["accelerator"],
                accelerator_mb=f["accelerator_mb"],
            )
        except InvalidArgument as exc:
            raise STATE_WIRE.fail(str(exc)) from None

    def as_status(self) -> dict[str, Any]:
        """The parts of a ``swarm status --json`` row that come from this state."""
        return {
            "name": self.name,
            "role": self.role,
            "power": {
                "battery_percent": self.battery_percent,
                "plugged": self.plugged,
                "minutes_left": self.minutes_left,
            },
            "load": {"cpu_percent": self.cpu_percent, "memory_free_mb": self.memory_free_mb},
            "privacy": {"scopes": list(self.scopes), "relay_only": self.relay_only},
            "lease_s": self.lease_s,
            "capabilities": {
                "executor": self.executor,
                "kernels": list(self.kernels),
                "accelerator": (
                    None
                    if self.accelerator is None
                    else {"kind": self.accelerator, "memory_mb": self.accelerator_mb or None}
                ),
            },
        }

    def meaningfully_different(self, other: DeviceState) -> bool:
        """Whether ``other`` is worth gossiping after ``self`` (symmetric; ignores ``version``).

        True for any change of name, role, addrs, scopes, relay_only, executor, kernels, plugged,
        lease, accelerator (or its memory),
        or of whether there is a battery (or a minutes-left estimate); for battery moving >= 1
        point; cpu moving >= 20 points; free memory or minutes left moving >= 10% of the larger.
        """
        if (
            self.name != other.name
            or self.role != other.role
            or self.addrs != other.addrs
            or self.scopes != other.scopes
            or self.relay_only != other.relay_only
            or self.executor != other.executor
            or self.kernels != other.kernels
            or self.plugged != other.plugged
            or self.lease_s != other.lease_s
            or self.accelerator != other.accelerator
            or self.accelerator_mb != other.accelerator_mb
        ):
            return True
        a, b = self.battery_percent, other.battery_percent
        if (a is None) != (b is None) or (a is not None and b is not None and abs(a - b) >= 1):
            return True
        if abs(self.cpu_percent - other.cpu_percent) >= 20:
            return True
        if _moved(self.memory_free_mb, other.memory_free_mb, 0.1):
            return True
        m, n = self.minutes_left, other.minutes_left
        return (m is None) != (n is None) or (m is not None and n is not None and _moved(m, n, 0.1))


def state_bytes(state: DeviceState) -> bytes:
    """The state as a member's alive record carries it: its wire form, packed."""
    return msgpack.packb(state.to_wire(), use_bin_type=True)  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=4096)
@functools.lru_cache(maxsize=2048)
def decode_state(blob: bytes) -> DeviceState | None:
    """A member's state from its alive record, ``None`` if it is not one (memoised for the
    process: membership asks twice for each record it takes, status and the services for every
    member, and a simulated swarm's peers for the same records; a state is a frozen value)."""
    try:
        return DeviceState.from_wire(msgpack.unpackb(blob, raw=False))
    except (ProtocolViolation, ValueError, TypeError, msgpack.UnpackException):
        return None


def lease_of(blob: bytes) -> float:
    """A member's lease, from its state: > 0 for a light member."""
    state = decode_state(blob)
    lease = state.lease_s if state is not None else 0
    return float(lease) if lease else 0.0  # (the one 0.0: a full member's costs no float)


def battery_saver(state: DeviceState) -> bool:
    """Whether the device runs on battery below 30%: "auto" membership then saves battery."""
    return (
        state.plugged is False
        and state.battery_percent is not None
        and state.battery_percent < SAVER_BELOW_PERCENT
    )


def light_lease(settings: Settings, plugged: bool | None, metered: bool) -> int:
    """The lease this device holds its place with, in whole seconds; 0: it is a full member.

    ``[membership] light``: "on" or "off" decide; "auto" makes a phone light unless it is plugged
    in on an unmetered link, and any device on a metered (cellular) link. A phone's every probe
    and ack wakes its radio, on home Wi-Fi too: a full member whenever at home, it spent 0.96 Wh
    of the simulated day and reached 3.0 % (5.2 % with no swarm); light on battery, 0.18 Wh of
    its battery and 4.0 % (``swarm simulate day``). Plugged in, it costs the charger, not the
    battery, and the phone is a full member: probed, and a home for stateful work overnight.
    """
    m = settings.membership
    if m.light == "off":
        return 0
    phone = settings.device.role == "phone"
    if m.light == "on" or metered or (phone and plugged is not True):
        return max(1, round(m.lease_s))
    return 0


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _texts(what: str, value: object, count: int, chars: int, total: int) -> tuple[str, ...]:
    if not isinstance(value, tuple | list):
        raise InvalidArgument(f"{what} must be a tuple of strings")
    if len(value) > count:
        raise InvalidArgument(f"{what}: at most {count} allowed")
    for item in value:
        if not isinstance(item, str) or not item or not item.isprintable() or " " in item:
            raise InvalidArgument(f"{what}: each must be a non-empty printable string, no spaces")
        if len(item) > chars:
            raise InvalidArgument(f"{what}: each at most {chars} characters")
    if sum(map(len, value)) > total:
        raise InvalidArgument(f"{what}: at most {total} characters together")
    return tuple(value)


def _tenth(what: str, value: object, top: float) -> float:
    if not _is_number(value) or not 0 <= value <= top:
        raise InvalidArgument(f"{what} must be a number from 0 to {top:g}")
    return round(float(value) * 10) / 10


def _optional_tenth(what: str, value: object, top: float) -> float | None:
    return None if value is None else _tenth(what, value, top)


def _to_tenths(value: float | None) -> int | None:
    return None if value is None else round(value * 10)


def _from_tenths(value: int | None) -> float | None:
    return None if value is None else value / 10


def _moved(a: float, b: float, fraction: float) -> bool:
    return a != b and abs(a - b) >= fraction * max(abs(a), abs(b))


# -- power -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PowerReading:
    """One reading of a power source; ``None`` where there is no battery or no estimate."""

    battery_percent: float | None
    plugged: bool | None
    minutes_left: float | None

    def __post_init__(self) -> None:
        b, p, m = self.battery_percent, self.plugged, self.minutes_left
        if b is not None and not (_is_number(b) and 0 <= b <= 100):
            raise InvalidArgument("battery_percent must be a number from 0 to 100")
        if p is not None and not isinstance(p, bool):
            raise InvalidArgument("plugged must be a boolean")
        if m is not None and not (_is_number(m) and 0 <= m < math.inf):
            raise InvalidArgument("minutes_left must be a non-negative finite number")


NO_BATTERY = PowerReading(None, None, None)
REAL_POWER = (
    "this device reports real power; only a simulated power source "
    '(swarm.toml [power] source = "simulated") can be changed'
)


class Power(Protocol):
    """Where a device's power figures come from."""

    @property
    def simulated(self) -> bool: ...

    def read(self, now: float) -> PowerReading: ...

    def set(
        self, *, battery_percent: float | None = None, plugged: bool | None = None, now: float
    ) -> PowerReading: ...


class SimulatedPower:
    """A battery model that moves linearly between the ``now`` values it is given.

    Unplugged it drains ``draw_w / capacity_wh * 100`` percent per hour, never below 0. Plugged it
    charges at ``charge_w / capacity_wh * 100`` percent per hour up to 80%, a quarter of that
    above (a simple taper), never above 100. Minutes left (unplugged only) is the level over the
    drain per minute. A ``now`` earlier than the last one given counts as no time passing.
    """

    simulated = True

    def __init__(self, settings: PowerSettings, now: float) -> None:
        for what in ("capacity_wh", "draw_w", "charge_w"):
            value = getattr(settings, what)
            if not (_is_number(value) and 0 < value < math.inf):
                raise InvalidArgument(f"[power] {what} must be a positive number")
        self._drain_per_h = settings.draw_w * 100 / settings.capacity_wh
        self._charge_per_h = settings.charge_w * 100 / settings.capacity_wh
        self._level = _battery_arg(settings.battery_percent)
        self._plugged = _plugged_arg(settings.plugged)
        self._at = now

    def read(self, now: float) -> PowerReading:
        self._advance(now)
        if self._plugged:
            return PowerReading(self._level, True, None)
        minutes = min(self._level * 60 / self._drain_per_h, MAX_MINUTES)
        return PowerReading(self._level, False, minutes)

    def set(
        self, *, battery_percent: float | None = None, plugged: bool | None = None, now: float
    ) -> PowerReading:
        level = None if battery_percent is None else _battery_arg(battery_percent)
        plug = None if plugged is None else _plugged_arg(plugged)
        self._advance(now)
        if level is not None:
            self._level = level
        if plug is not None:
            self._plugged = plug
        return self.read(now)

    def _advance(self, now: float) -> None:
        hours = max(0.0, now - self._at) / 3600
        self._at = max(self._at, now)
        if not hours:
            return
        if not self._plugged:
            self._level = max(0.0, self._level - self._drain_per_h * hours)
            return
        fast = self._charge_per_h
        if self._level < 80:
            to_80_h = (80 - self._level) / fast
            if hours <= to_80_h:
                self._level += fast * hours
                return
            self._level, hours = 80.0, hours - to_80_h
        self._level = min(100.0, self._level + fast / 4 * hours)


def _battery_arg(value: object) -> float:
    if not _is_number(value) or not 0 <= value <= 100:
        raise InvalidArgument(f"battery percent must be a number from 0 to 100, got {value!r:.20}")
    return float(value)


def _plugged_arg(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"plugged must be true or false, got {value!r:.20}")
    return value


# -- load --------------------------------------------------------------------------------------


class LoadSource(Protocol):
    """Where cpu and free memory figures come from."""

    def read(self) -> tuple[float, float]:
        """``(cpu_percent, memory_free_mb)``."""
        ...


@dataclass(slots=True)
class FixedLoad:
    """A load that says what it is told (tests, simulations); change the fields to move it."""

    cpu_percent: float
    memory_free_mb: float

    def read(self) -> tuple[float, float]:
        return self.cpu_percent, self.memory_free_mb


# -- sampling ----------------------------------------------------------------------------------


def sample_state(
    *,
    settings: Settings,
    addrs: Iterable[str],
    power: Power,
    load: LoadSource,
    executor: str,
    kernels: Iterable[str],
    version: int,
    now: float,
    metered: bool = False,
    accelerator: Accelerator = NO_ACCELERATOR,
) -> DeviceState:
    """This device's state now, from its settings and its power and load readings.

    Readings are clamped into range (a sensor's odd value never fails a sample); addresses that
    are not multiaddrs, repeat, or do not fit the size bounds are left out, in order. Bad
    ``executor``, ``kernels`` or ``version`` raise ``InvalidArgument``: they are the caller's.
    ``metered``: the device's link costs energy per burst (cellular), which can make it light.
    ``accelerator``: what ``_sensors.AcceleratorProbe`` says (kind, memory MB), a memory out of
    range read as not known.
    """
    reading = power.read(now)
    cpu, memory = load.read()
    minutes = reading.minutes_left
    return DeviceState(
        name=settings.device.name,
        role=settings.device.role,
        addrs=_fit_addrs(addrs),
        battery_percent=reading.battery_percent,
        plugged=reading.plugged,
        minutes_left=None if minutes is None else min(minutes, MAX_MINUTES),
        cpu_percent=_clamp(cpu, 100.0),
        memory_free_mb=_clamp(memory, MAX_MEMORY_MB),
        scopes=settings.device.effective_scopes(),
        relay_only=settings.device.relay_only,
        executor=executor,
        kernels=tuple(kernels),
        version=version,
        lease_s=light_lease(settings, reading.plugged, metered),
        accelerator=accelerator[0],
        accelerator_mb=_clamp(accelerator[1], MAX_MEMORY_MB) if accelerator[0] else 0.0,
    )


def _clamp(value: float, top: float) -> float:
    return 0.0 if not math.isfinite(value) else min(max(value, 0.0), top)


def _fit_addrs(addrs: Iterable[str]) -> tuple[str, ...]:
    kept: list[str] = []
    total = 0
    for addr in addrs:
        fits = (
            addr.startswith("/")
            and addr.isprintable()
            and " " not in addr
            and len(addr) <= MAX_ADDR_CHARS
            and total + len(addr) <= MAX_ADDRS_TOTAL
            and len(kept) < MAX_ADDRS
        )
        if addr in kept:
            continue
        if not fits:
            log.debug("left out of the device state: address %.40r", addr)
            continue
        kept.append(addr)
        total += len(addr)
    return tuple(kept)
