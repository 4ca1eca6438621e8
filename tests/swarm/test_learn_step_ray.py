"""The local DP-SGD step on real Ray workers (the run's one local Ray runtime, tests/conftest.py).

A step runs in a Ray worker process and gives, bit for bit, what it gives inline; in a swarm
whose devices run the executor their role picks (``swarm up``'s auto), the laptop's and the
server's steps run on Ray and the phone's inline, and ``learn status`` says so per device.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import trio
from test_learn_service import LAPTOP, PHONE, SERVER, finished, swarm

from homeswarm.kernels import dp_step
from homeswarm.learning import Digits, TorchTrainer
from homeswarm.placement import InlineExecutor, RayExecutor, RayRuntime

pytest.importorskip("ray")

pytestmark = pytest.mark.slow


def step_input() -> dict[str, Any]:
    task = Digits()
    trainer = TorchTrainer(task.model(), task.split(["a"], alpha=0.5, seed=3).devices["a"])
    rng = np.random.default_rng(5)
    rows = np.flatnonzero(rng.random(trainer.records) < 0.1)
    value = trainer.step_input(trainer.initial(), rows, 1.0)
    assert value is not None
    return value


async def test_a_step_in_a_ray_worker_gives_what_it_gives_inline(ray_runtime):
    value = step_input()
    ray = RayExecutor(RayRuntime())  # joins the run's runtime
    first = await ray.run(dp_step, value, timeout=120)
    second = await ray.run(dp_step, value, timeout=60)
    here = await InlineExecutor().run(dp_step, value, timeout=60)
    assert (first.executor, here.executor) == ("ray", "inline")
    assert first.pid == second.pid != os.getpid()  # one long-lived actor, not this process
    assert first.output == second.output == here.output  # the same bytes
    (host,) = ray.hosts()
    assert (host.kernel, host.runs) == ("dp-step", 2)
    await ray.aclose()


async def test_laptop_and_server_step_on_ray_and_the_phone_inline(ray_runtime, tmp_path):
    """Real clock: Ray's workers run in real time. Each device's executor is the one its
    settings pick (None: the placement service makes it), as `swarm up` would."""
    async with swarm(
        tmp_path, (PHONE, LAPTOP, SERVER), executor=lambda settings: None, threaded=True
    ) as peers:
        # a Ray actor's first start takes seconds (it imports torch): not the rounds' business
        value = step_input()
        async with trio.open_nursery() as nursery:
            for peer in peers.values():
                nursery.start_soon(peer.services["kernels"].run_here, dp_step, value)  # type: ignore[attr-defined]
        laptop = peers["laptop"]
        started = await laptop.control(
            "learn.start", {"task": "digits", "epsilon": 4.0, "rounds": 3}
        )
        status = await finished(laptop, started["job"], within=120.0)
        held = {
            name: {h.kernel: h for h in peer.services["kernels"].executor.hosts()}  # type: ignore[attr-defined]
            for name, peer in peers.items()
        }
    rows = {d["name"]: d for d in status["devices"]}
    assert {name: row["executor"] for name, row in rows.items()} == {
        "phone": "inline",
        "laptop": "ray",
        "server": "ray",
    }
    for name, row in rows.items():
        assert row["epsilon_spent"] > 0, name  # it took part: its steps ran, and were spent
        assert held[name]["dp-step"].runs >= 2, name  # the warm-up, then its steps
        assert (held[name]["dp-step"].executor == "ray") == (name != "phone")
