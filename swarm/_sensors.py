"""The machine's own sensors: its battery and its load, read through psutil; its accelerator.

The only module of the peer that imports psutil; ``_device`` (the state, its wire form, the
simulated battery, sampling) stays pure, so the simulator and the codec never load it. Reads never
raise: a failing sensor reads as no battery, or as zero load, or as no accelerator, and says so at
debug level.

The accelerator (``AcceleratorProbe``): ``swarm.toml`` [device] accelerator ``none`` or a
declared one (``cuda:24GiB``) is taken as it stands; ``auto`` looks without importing torch,
which takes seconds and would hold a CUDA context (GPU memory) in the peer for as long as it
runs: an NVIDIA driver shows its GPUs under ``/proc/driver/nvidia/gpus`` (or at least
``/dev/nvidia0``), and Apple silicon (macOS on arm64) has MPS, with the machine's memory (it is
unified). A CUDA device's memory comes once, in a background thread, from ``nvidia-smi`` or
else from torch in a child process; until then the device says ``cuda`` with its memory not
known. Every probe of a process shares that one look.
"""

from __future__ import annotations

import logging
import math
import platform
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psutil

from homeswarm.errors import InvalidArgument

from ._config import PowerSettings, parse_accelerator
from ._device import (
    MAX_MINUTES,
    NO_ACCELERATOR,
    NO_BATTERY,
    REAL_POWER,
    Accelerator,
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


# -- the accelerator ---------------------------------------------------------------------------

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
NVIDIA_DEV = Path("/dev/nvidia0")
QUERY_TIMEOUT_S = 60.0
_TORCH_CUDA_MB = (
    "import torch; c = torch.cuda; "
    "print(max((c.get_device_properties(i).total_memory for i in range(c.device_count())), "
    "default=0) // 2**20 if c.is_available() else -1)"
)


def cuda_memory_mb() -> float | None:
    """The memory of this machine's largest CUDA device in MB, asking ``nvidia-smi`` or else
    torch in a child process (slow: seconds); None when neither says."""
    commands = []
    if (smi := shutil.which("nvidia-smi")) is not None:
        commands.append([smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"])
    commands.append([sys.executable, "-c", _TORCH_CUDA_MB])
    for command in commands:
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, check=True
            )
            figures = [float(line) for line in done.stdout.split() if line.strip()]
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            log.debug("%s says no accelerator memory: %s", Path(command[0]).name, exc)
            continue
        if figures and max(figures) > 0:
            return max(figures)
    return None


class AcceleratorProbe:
    """This machine's accelerator (see the module's rules); ``read()`` never blocks nor raises.

    ``gpus``, ``dev``, ``system``, ``machine``, ``total_mb`` and ``query_mb`` are where it looks
    (tests point them elsewhere).
    """

    def __init__(
        self,
        *,
        gpus: Path = NVIDIA_GPUS,
        dev: Path = NVIDIA_DEV,
        system: str = sys.platform,
        machine: str = platform.machine(),
        total_mb: Callable[[], float] = lambda: psutil.virtual_memory().total / 2**20,
        query_mb: Callable[[], float | None] = cuda_memory_mb,
    ) -> None:
        self._lock = threading.Lock()
        self._found: Accelerator | None = None
        self._thread: threading.Thread | None = None
        self._where = (gpus, dev, system, machine)
        self._total_mb = total_mb
        self._query_mb = query_mb

    def read(self) -> Accelerator:
        """What was found so far: ``(kind, memory MB)``, memory 0 while not known."""
        with self._lock:
            if self._found is None:
                self._found = self._look()
            return self._found

    def wait(self, timeout: float | None = None) -> Accelerator:
        """``read()``, once the background query (if any) has finished or ``timeout`` passed."""
        found = self.read()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return self.read()
        return found

    def _look(self) -> Accelerator:
        gpus, dev, system, machine = self._where
        try:
            if system == "darwin" and machine == "arm64":
                return ("mps", float(self._total_mb()))
            cuda = (gpus.is_dir() and any(gpus.iterdir())) or dev.exists()
        except Exception as exc:
            log.debug("looking for an accelerator failed: %s: %s", type(exc).__name__, exc)
            return NO_ACCELERATOR
        if not cuda:
            return NO_ACCELERATOR
        self._thread = threading.Thread(target=self._query, name="accelerator-probe", daemon=True)
        self._thread.start()
        return ("cuda", 0.0)

    def _query(self) -> None:
        try:
            mb = self._query_mb()
        except Exception as exc:
            log.debug("asking the accelerator's memory failed: %s: %s", type(exc).__name__, exc)
            mb = None
        log.info("found a CUDA device (%s MB)", f"{mb:.0f}" if mb else "memory not known")
        if mb:
            with self._lock:
                self._found = ("cuda", float(mb))


_AUTO = AcceleratorProbe()


def accelerator_source(setting: str, probe: AcceleratorProbe = _AUTO) -> Callable[[], Accelerator]:
    """What ``[device] accelerator`` says this device has, as a function to read it with:
    declared or none as it stands, ``auto`` from ``probe`` (this process's, by default)."""
    declared = parse_accelerator(setting)
    if declared is not None:
        return lambda: declared
    return probe.read
