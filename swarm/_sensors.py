"""The machine's own sensors: its battery and its load, read through psutil.

The only module of the peer that imports psutil; ``_device`` (the state, its wire form, the
simulated battery, sampling) stays pure, so the simulator and the codec never load it. Reads never
raise: a failing sensor reads as no battery, or as zero load, and says so at debug level.
"""

from __future__ import annotations

import logging
import math

import psutil

from homeswarm.errors import InvalidArgument

from ._config import PowerSettings
from ._device import (
    MAX_MINUTES,
    NO_BATTERY,
    REAL_POWER,
    Power,
    PowerReading,
    SimulatedPower,
    _clamp,
    _is_number,
)

log = logging.getLogger("swarm.sensors")

_NO_POWER_TIME = {psutil.POWER_TIME_UNLIMITED, psutil.POWER_TIME_UNKNOWN}


class DevicePower:
    """The machine's own battery, through ``psutil.sensors_battery()``; never raises on read."""

    simulated = False

    def read(self, now: float) -> PowerReading:
        try:
            battery = psutil.sensors_battery()
            if battery is None:
                return NO_BATTERY
            percent = float(battery.percent)
            plugged = None if battery.power_plugged is None else bool(battery.power_plugged)
            secs = battery.secsleft
        except Exception as exc:
            log.debug("reading the battery failed: %s: %s", type(exc).__name__, exc)
            return NO_BATTERY
        if not math.isfinite(percent):
            log.debug("the battery reports %r percent", percent)
            return NO_BATTERY
        minutes = None
        if plugged is not True and _is_number(secs) and secs not in _NO_POWER_TIME:
            minutes = _clamp(secs / 60, MAX_MINUTES) if secs >= 0 else None
        return PowerReading(_clamp(percent, 100.0), plugged, minutes)

    def set(
        self, *, battery_percent: float | None = None, plugged: bool | None = None, now: float
    ) -> PowerReading:
        raise InvalidArgument(REAL_POWER)


class LoadSampler:
    """This machine's load through psutil; cpu is the average since the previous read."""

    def __init__(self) -> None:
        self.read()  # psutil's first cpu_percent(interval=None) only primes it and says 0.0

    def read(self) -> tuple[float, float]:
        try:
            cpu = float(psutil.cpu_percent(interval=None))
            memory = psutil.virtual_memory().available / 2**20
        except Exception as exc:
            log.debug("reading the load failed: %s: %s", type(exc).__name__, exc)
            return 0.0, 0.0
        return cpu, float(memory)


def make_power(settings: PowerSettings, now: float) -> Power:
    """The power source ``[power] source`` names: "device" or "simulated"."""
    if settings.source == "device":
        return DevicePower()
    if settings.source == "simulated":
        return SimulatedPower(settings, now)
    raise InvalidArgument(f"[power] source must be device or simulated, got {settings.source!r}")
