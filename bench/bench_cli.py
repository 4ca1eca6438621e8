"""How fast the ``swarm`` command answers: --help, status with no peer, vault get with no peer.

Each command runs N times in a fresh process; beside it, a bare ``python -P -c pass`` in the same
run, so the ratio says what our imports cost over the interpreter's own start.

    python bench/bench_cli.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed(cmd: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
        figures = {name: timed(cmd, args.runs, env) for name, cmd in cases.items()}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    base = figures["python -c pass"]
    if args.json:
        print(
            json.dumps(
                {"median_s": figures, "ratio_to_python": {k: v / base for k, v in figures.items()}}
            )
        )
        return
    print(f"{'command':28} {'median s':>9} {'x python':>9}  target")
    for name, value in figures.items():
        target = "" if name.startswith("python") else "<= 0.15 s"
        print(f"{name:28} {value:9.3f} {value / base:9.1f}  {target}")


if __name__ == "__main__":
    main()
