"""How fast the ``swarm`` command answers: --help; status and vault get with no peer (from the
vault's view, and with no view: the store replayed); and
vault get, put, ls and status asking a running peer over its control socket.

Each command runs N times in a fresh process; beside it, a bare ``python -P -c pass`` in the same
run, so the ratio says what our imports cost over the interpreter's own start; and the CPU time
(user + system) of each, which a loaded machine disturbs less than the wall time. The peer's own
work is not in the CPU figure (it is another process's), only in the wall time.

    python bench/bench_cli.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from homeswarm.swarm._files import VIEW_FILE

PEER_START_TIMEOUT = 60.0  # seconds for `swarm up` to answer vault requests


def timed(cmd: list[str], runs: int, env: dict[str, str]) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (user + system) of ``runs`` fresh processes.

    CPU time is what the command costs; on a shared, loaded machine it moves far less than the
    wall time, which also counts waiting for a core."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="swarm-bench-cli-")
    env = {**os.environ, "SWARM_HOME": home, "PYTHONSAFEPATH": "1"}
    swarm = [sys.executable, "-P", "-m", "homeswarm.cli"]
    peer = None
    try:
        subprocess.run(
            [*swarm, "init", "--name", "b", "--role", "server"],
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*swarm, "vault", "put", "facts/x", '"1"'], env=env, check=True, capture_output=True
        )
        get = [*swarm, "vault", "get", "facts/x"]
        cases = {
            "python -c pass": [sys.executable, "-P", "-c", "pass"],
            "swarm --help": [*swarm, "--help"],
            "swarm status (no peer)": [*swarm, "status"],
            "swarm vault get (no peer)": get,
            # the same with no view (swarm/_vault_view.py) left: the store opened and replayed
            "swarm vault get (no peer, no view)": [
                "sh",
                "-c",
                f'rm -f "{home}/{VIEW_FILE}"; exec "$0" "$@"',
                *get,
            ],
        }
        measured = {name: timed(cmd, args.runs, env) for name, cmd in cases.items()}
        peer = start_peer(swarm, env, Path(home), get)
        cases = {
            "swarm vault get": get,
            "swarm vault put": [*swarm, "vault", "put", "facts/y", "v"],
            "swarm vault ls": [*swarm, "vault", "ls"],
            "swarm status": [*swarm, "status"],
            "python -c pass (again)": [sys.executable, "-P", "-c", "pass"],
        }
        measured |= {name: timed(cmd, args.runs, env) for name, cmd in cases.items()}
    finally:
        if peer is not None:
            peer.terminate()
            peer.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)
    figures = {name: wall for name, (wall, _) in measured.items()}
    cpu = {name: used for name, (_, used) in measured.items()}
    base, cpu_base = figures["python -c pass"], cpu["python -c pass"]
    if args.json:
        ratio = {k: v / base for k, v in figures.items()}
        cpu_ratio = {k: v / cpu_base for k, v in cpu.items()}
        print(
            json.dumps(
                {
                    "median_s": figures,
                    "ratio_to_python": ratio,
                    "median_cpu_s": cpu,
                    "cpu_ratio_to_python": cpu_ratio,
                }
            )
        )
        return
    print(f"{'command':28} {'median s':>9} {'x python':>9} {'cpu s':>7} {'x python':>9}  target")
    for name, value in figures.items():
        target = "" if name.startswith("python") else "<= 0.15 s cpu"
        used = cpu[name]
        ratios = f"{value / base:9.1f} {used:7.3f} {used / cpu_base:9.1f}"
        print(f"{name:28} {value:9.3f} {ratios}  {target}")


def start_peer(
    swarm: list[str], env: dict[str, str], home: Path, probe: list[str]
) -> subprocess.Popen[bytes]:
    """``swarm up`` on loopback for ``home``, once ``probe`` succeeds against it."""
    peer = subprocess.Popen(
        [*swarm, "up", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + PEER_START_TIMEOUT
    while time.monotonic() < deadline:
        if peer.poll() is not None:
            raise SystemExit(f"swarm up exited with {peer.returncode}")
        if (home / "control.sock").exists():
            done = subprocess.run(probe, env=env, capture_output=True, check=False)
            if done.returncode == 0:
                return peer
        time.sleep(0.2)
    peer.terminate()
    raise SystemExit(f"swarm up did not answer within {PEER_START_TIMEOUT:g} s")


if __name__ == "__main__":
    main()
