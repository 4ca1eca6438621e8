"""How fast the ``swarm`` command answers: --help, status with no peer, vault get with no peer.

Each command runs N times in a fresh process; beside it, a bare ``python -P -c pass`` in the same
run, so the ratio says what our imports cost over the interpreter's own start; and the CPU time
(user + system) of each, which a loaded machine disturbs less than the wall time.

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
        cases = {
            "python -c pass": [sys.executable, "-P", "-c", "pass"],
            "swarm --help": [*swarm, "--help"],
            "swarm status (no peer)": [*swarm, "status"],
            "swarm vault get (no peer)": [*swarm, "vault", "get", "facts/x"],
        }
        measured = {name: timed(cmd, args.runs, env) for name, cmd in cases.items()}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    figures = {name: wall for name, (wall, _) in measured.items()}
    cpu = {name: used for name, (_, used) in measured.items()}
    base, cpu_base = figures["python -c pass"], cpu["python -c pass"]
    if args.json:
        ratio = {k: v / base for k, v in figures.items()}
        print(json.dumps({"median_s": figures, "ratio_to_python": ratio, "median_cpu_s": cpu}))
        return
    print(f"{'command':28} {'median s':>9} {'x python':>9} {'cpu s':>7} {'x python':>9}  target")
    for name, value in figures.items():
        target = "" if name.startswith("python") else "<= 0.15 s"
        used = cpu[name]
        ratios = f"{value / base:9.1f} {used:7.3f} {used / cpu_base:9.1f}"
        print(f"{name:28} {value:9.3f} {ratios}  {target}")


if __name__ == "__main__":
    main()
