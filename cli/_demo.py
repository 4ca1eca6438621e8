"""``swarm demo``: a whole local swarm, as a new user would set it up, on loopback.

It creates N fresh homes in a temporary directory (a home server, a laptop and a phone, then
more of the same), pairs them through `invite` and `join` exactly as a person would, starts each
as its own `swarm up` process, shows the live status table, and at the end stops them gracefully
and removes the homes. The laptop and phone get simulated batteries so the demo shows power on a
host that has none.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homeswarm.errors import InvalidArgument, SwarmError
from homeswarm.swarm import ask, init_home, join_swarm

from ._status import watch

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class DeviceProfile:
    role: str
    power: dict[str, object]
    membership: dict[str, object] | None = None


PROFILES = (
    DeviceProfile("server", {"source": "device"}),
    DeviceProfile(
        "laptop",
        {"source": "simulated", "battery_percent": 64.0, "plugged": True, "capacity_wh": 56.0},
    ),
    DeviceProfile(
        "phone",
        {
            "source": "simulated",
            "battery_percent": 82.0,
            "plugged": False,
            "capacity_wh": 15.0,
            "draw_w": 1.5,
        },
        # a phone is a light member: a one-minute lease (not 15) so that `away` shows
        # within the demo when the phone stops (kill -STOP its `swarm up`; -CONT brings it back)
        {"lease_s": 60.0},
    ),
)
LOOPBACK = {"listen": ["/ip4/127.0.0.1/tcp/0"], "mdns": False}


class Swarm:
    """N peers in temporary homes, each a `swarm up` process."""

    def __init__(self, root: Path, verbose: int = 0) -> None:
        self.root = root
        self.verbose = verbose
        self.homes: list[Path] = []
        self.procs: dict[Path, subprocess.Popen[bytes]] = {}

    def name(self, i: int) -> str:
        if i < 0:
            return "relay"
        role = PROFILES[i % len(PROFILES)].role
        return role if i < len(PROFILES) else f"{role}-{i // len(PROFILES) + 1}"

    def create(self, n: int, progress: Any = None, *, relay: bool = False) -> None:
        for i in range(n):
            profile = PROFILES[i % len(PROFILES)]
            home = self.root / self.name(i)
            extra = {"power": profile.power}
            if profile.membership is not None:
                extra["membership"] = profile.membership
            if i == 0:
                init_home(home, name=self.name(i), role=profile.role, network=LOOPBACK, extra=extra)
                self.start(home)
                self.wait_ready(home)
            else:
                # the laptop is an admin too (`swarm invite --admin`), so that it alone can
                # revoke a lost phone; the phone and the rest are not
                admin = self.name(i) == "laptop"
                code = ask(self.homes[0], "trust.invite", ttl=120.0, admin=admin)["code"]
                join_swarm(
                    home, code, name=self.name(i), role=profile.role, network=LOOPBACK, extra=extra
                )
                self.start(home)
            self.homes.append(home)
            if progress is not None:
                progress(i + 1, n + relay)
        if relay:  # a blind relay: holds and forwards the vault's ciphertext, reads none of it
            home = self.root / "relay"
            code = ask(self.homes[0], "invite", ttl=120.0)["code"]
            join_swarm(home, code, name="relay", role="server", relay_only=True, network=LOOPBACK)
            self.start(home)
            self.homes.append(home)
            if progress is not None:
                progress(n + 1, n + 1)

    def start(self, home: Path) -> None:
        log = open(home / "up.log", "wb")  # noqa: SIM115 - the child writes to it
        cmd = [
            sys.executable,
            "-P",  # the working directory off sys.path: a repo folder must not shadow a package
            "-m",
            "homeswarm.cli",
            *(["-v"] * self.verbose),
            "up",
            "--home",
            str(home),
        ]
        self.procs[home] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def wait_ready(self, home: Path, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            proc = self.procs[home]
            if proc.poll() is not None:
                tail = (home / "up.log").read_text(errors="replace").strip().splitlines()[-1:]
                raise SwarmDemoError(f"the peer in {home.name} exited: {' '.join(tail)}")
            try:
                ask(home, "status", timeout=2.0)
                return
            except SwarmError:
                if time.monotonic() > deadline:
                    raise SwarmDemoError(f"the peer in {home.name} did not start") from None
                time.sleep(0.1)

    def wait_alive(self, n: int, timeout: float) -> dict[str, Any]:
        """The first device's status once it sees ``n`` devices alive, or at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            status: dict[str, Any] = ask(self.homes[0], "status")
            alive = sum(p["state"] == "alive" for p in status["peers"])
            if alive >= n or time.monotonic() > deadline:
                return status
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class SwarmDemoError(SwarmError):
    """A demo peer failed to start."""


def run_demo(
    peers: int = 3,
    *,
    seconds: float | None = None,
    json_out: bool = False,
    relay: bool = False,
    verbose: int = 0,
) -> int:
    """Pair ``peers`` devices (and a blind relay) on loopback and show them until ``seconds``."""
    if not 1 <= peers <= 32:
        raise InvalidArgument(f"--peers must be between 1 and 32, got {peers}")
    if seconds is not None and seconds <= 0:
        raise InvalidArgument(f"--seconds must be positive, got {seconds:g}")
    root = Path(tempfile.mkdtemp(prefix="swarm-demo-"))
    swarm = Swarm(root, verbose=verbose)
    tty = sys.stdout.isatty()
    try:
        talk = sys.stderr if json_out else sys.stdout
        print(f"swarm demo: {peers} devices in {root}", file=talk, flush=True)

        def progress(done: int, total: int) -> None:
            name = swarm.name(done - 1 if done <= peers else -1)
            print(f"  paired and started {done}/{total}: {name}", file=talk, flush=True)

        swarm.create(peers, progress, relay=relay)
        first = swarm.homes[0]
        laptop = swarm.homes[min(1, len(swarm.homes) - 1)]
        endpoints = ask(first, "status").get("endpoints") or {}
        hints = (
            "try, in another terminal:\n"
            f"  swarm vault put facts/home Lisbon --home {laptop}\n"
            f"  swarm vault get facts/home --home {first}\n"
            f'  swarm run embed "hello world" --explain --home {laptop}\n'
            f"  swarm power --unplugged --battery 30 --home {laptop}\n"
            f"  swarm ui --home {first}"
            + (f"\n  curl {endpoints['metrics']}" if endpoints.get("metrics") else "")
            + (f"\npage: {endpoints['ui']}" if endpoints.get("ui") else "")
        )
        if not (tty and not json_out):  # on a terminal they stay under the live table instead
            print(textwrap.indent(hints, "  "), file=talk, flush=True)
        interval = 1.0
        iterations = None if seconds is None else max(int(seconds / interval), 1)
        with contextlib.suppress(KeyboardInterrupt):
            if json_out:
                # for scripts: one status, once every device is alive (or --seconds ran out)
                everyone = peers + relay
                status = swarm.wait_alive(everyone, timeout=seconds or START_TIMEOUT)
                print(json.dumps(status, sort_keys=True))
            else:
                watch(
                    lambda: ask(first, "status"),
                    interval=interval,
                    out=sys.stdout,
                    iterations=iterations,
                    color=tty,
                    footer=hints,
                )
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            print("swarm demo: stopping the peers", file=sys.stderr, flush=True)
            swarm.stop()
            shutil.rmtree(root, ignore_errors=True)
    return 0
