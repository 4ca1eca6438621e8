"""One local DP-SGD step (the ``dp-step`` kernel): inline beside a Ray worker, in the same run.

    python bench/bench_learn_step.py [--steps N] [--devices 3,10] [--json]

digits split across D devices (Dirichlet 0.5, seed 0); one device's share, Poisson-sampled at
rate 0.1, clipped to 1, on the logistic-regression model: the kernel's input as the learning
service builds it (``TorchTrainer.step_input``). Each step runs N times on each executor, one
after the other: ``trainer`` (the step computed in the peer's process on the trainer's own model,
what a device without placement does), ``inline`` (the kernel through ``InlineExecutor``, in a
worker thread: a phone) and ``ray`` (the kernel in the Ray actor that hosts it: a laptop or a
server). Reported: the median and the 90th percentile of the warm steps, their ratio to inline,
and the cold costs once: starting Ray (a local runtime of 2 cpus) and the actor's first step
(a worker process importing torch and Opacus). The sums are checked equal across executors.

Measured 2026-12-07 on the shared 2-core machine (load average 6, other engineers' tests
beside), one run, 50 steps each:

    cold: Ray start 10.53 s, the actor's first step 9.03 s
    3 devices (463 records, 47 sampled a step):   trainer 4.85 ms, inline 4.78 ms, ray 22.55 ms
                                                  (x4.72 of inline; p90 9.09 vs 74.69 ms)
    10 devices (114 records, 12 sampled a step):  trainer 3.27 ms, inline 3.16 ms, ray 42.01 ms
                                                  (x13.3 of inline; p90 4.08 vs 48.18 ms)

On a model this small a step is milliseconds and Ray's call (a task to the actor, its result
back through the object store, and the worker thread the executor waits in) is most of it: Ray
earns its place on the laptop and the server by keeping the work out of the peer's process and
on the cores Ray is given, not by speed; the cold start (about 20 s with Ray's own start) comes
once per process, and a step that would answer later than a round waits spends nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
import trio

from homeswarm.kernels import dp_step
from homeswarm.learning import Digits, TorchTrainer
from homeswarm.placement import InlineExecutor, RayExecutor, RayRuntime

SAMPLE_RATE = 0.1
CLIP = 1.0


def step_inputs(devices: int, steps: int) -> tuple[TorchTrainer, list[tuple[Any, np.ndarray]]]:
    task = Digits()
    names = [f"dev{i:02d}" for i in range(devices)]
    split = task.split(names, alpha=0.5, seed=0)
    trainer = TorchTrainer(task.model(), split.devices[names[0]])
    rng = np.random.default_rng(0)
    params = trainer.initial()
    inputs = []
    for _ in range(steps):
        rows = np.flatnonzero(rng.random(trainer.records) < SAMPLE_RATE)
        inputs.append((trainer.step_input(params, rows, CLIP), rows))
    return trainer, inputs


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 3),
    }


async def measure(devices: list[int], steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": steps, "cold": {}, "by_devices": {}}
    began = time.perf_counter()
    runtime = RayRuntime(num_cpus=2)
    ray = RayExecutor(runtime)
    await ray.start()
    out["cold"]["ray_start_s"] = round(time.perf_counter() - began, 2)
    inline = InlineExecutor()
    first = True
    for d in devices:
        trainer, inputs = step_inputs(d, steps)
        times: dict[str, list[float]] = {"trainer": [], "inline": [], "ray": []}
        sums: dict[str, list[bytes]] = {"inline": [], "ray": []}
        if first:  # the actor's first run: a worker process, torch and Opacus imported
            began = time.perf_counter()
            await ray.run(dp_step, inputs[0][0], timeout=300)
            out["cold"]["ray_first_step_s"] = round(time.perf_counter() - began, 2)
            await inline.run(dp_step, inputs[0][0], timeout=60)  # (the model built once here)
            first = False
        for value, rows in inputs:
            began = time.perf_counter()
            trainer.clipped_sum(trainer.initial(), rows, CLIP)
            times["trainer"].append(time.perf_counter() - began)
            for name, executor in (("inline", inline), ("ray", ray)):
                began = time.perf_counter()
                result = await executor.run(dp_step, value, timeout=60)
                times[name].append(time.perf_counter() - began)
                sums[name].append(result.output["sum"])
        assert sums["inline"] == sums["ray"], "the executors gave different sums"
        row = {name: summary(t) for name, t in times.items()}
        base = row["inline"]["median_ms"]
        for name in row:
            row[name]["ratio_to_inline"] = round(row[name]["median_ms"] / base, 2)
        row["records"] = trainer.records
        row["rows_per_step"] = round(float(np.mean([len(r) for _, r in inputs])), 1)
        out["by_devices"][str(d)] = row
    await ray.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per executor (50)")
    parser.add_argument("--devices", default="3,10", help="device counts to split over (3,10)")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    try:
        devices = [int(d) for d in args.devices.split(",")]
    except ValueError:
        parser.exit(2, "bench_learn_step: --devices takes whole numbers, e.g. 3,10\n")
    if args.steps < 2 or any(d < 1 for d in devices):
        parser.exit(2, "bench_learn_step: --steps from 2 and --devices from 1\n")
    out = trio.run(measure, devices, args.steps)
    if args.json:
        print(json.dumps(out))
        return
    cold = out["cold"]
    print(f"cold: Ray start {cold['ray_start_s']} s, the actor's first step "
          f"{cold['ray_first_step_s']} s")  # fmt: skip
    for d, row in out["by_devices"].items():
        print(f"{d} devices: one device's {row['records']} records, "
              f"{row['rows_per_step']} sampled per step, {out['steps']} steps each")  # fmt: skip
        for name in ("trainer", "inline", "ray"):
            r = row[name]
            print(f"  {name:<8} median {r['median_ms']:8.2f} ms  p90 {r['p90_ms']:8.2f} ms"
                  f"  x{r['ratio_to_inline']:.2f} of inline")  # fmt: skip


if __name__ == "__main__":
    main()
