"""The local DP-SGD step as a kernel: ``dp-step``, run on the device's own executor.

The kernel computes what the trainer computes (the same numbers) from the model as data and the
sampled records; each device's steps run on the executor placement picked for it and are
counted as that executor's runs and in the placement metrics; a step that raises inside the
kernel declines its round, says why in ``learn status`` and spends nothing.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest
from test_learn_service import LAPTOP, PHONE, SERVER, finished, swarm
from test_placement_swarm import make_homes
from torch import nn

from homeswarm.cli._learn import render
from homeswarm.kernels import InvalidInput, dp_step, model_layers
from homeswarm.learning import Digits, Records, Split, TorchTrainer, get_task
from homeswarm.swarm._home import load_identity
from homeswarm.swarm._metrics import exposition
from homeswarm.swarm._placement_service import PlacementService


def _step(task: Any, rate: float = 0.3, seed: int = 1) -> tuple[TorchTrainer, Any, np.ndarray]:
    split = task.split(["a"], alpha=0.5, seed=3)
    trainer = TorchTrainer(task.model(), split.devices["a"])
    rng = np.random.default_rng(seed)
    params = trainer.initial() + rng.normal(0.0, 0.1, trainer.size)
    rows = np.flatnonzero(rng.random(trainer.records) < rate)
    return trainer, params, rows


@pytest.mark.parametrize("hidden", [0, 16])
def test_the_kernel_computes_what_the_trainer_computes(hidden):
    trainer, params, rows = _step(Digits(hidden=hidden))
    value = trainer.step_input(params, rows, 1.0)
    assert value is not None
    out = dp_step.run(value)
    assert (out["samples"], out["steps"]) == (len(rows), 1)
    got = np.frombuffer(out["sum"], dtype="<f8")
    np.testing.assert_allclose(got, trainer.clipped_sum(params, rows, 1.0), rtol=1e-6, atol=1e-7)
    assert 0 < np.linalg.norm(got) <= len(rows) + 1e-6  # each gradient clipped to norm 1
    # no record sampled: a zero sum, and still one step
    empty = dp_step.run(trainer.step_input(params, rows[:0], 1.0))
    assert (empty["samples"], np.frombuffer(empty["sum"], dtype="<f8").any()) == (0, False)


def test_a_model_is_data_only_when_the_kernel_can_build_it():
    assert model_layers(nn.Linear(64, 10)) == [["linear", 64, 10]]
    assert model_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))) == [
        ["linear", 4, 3],
        ["relu"],
        ["linear", 3, 2],
    ]
    assert model_layers(nn.Linear(4, 3, bias=False)) is None
    assert model_layers(nn.Sequential(nn.Conv1d(1, 1, 3), nn.Linear(3, 2))) is None
    assert model_layers(nn.Tanh()) is None  # it must start with a linear layer


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"clip": 0}, "clip must be a positive number"),
        ({"model": [["conv", 3, 3]]}, r"model\[0\] must be"),
        ({"model": [["linear", 64, 10], ["linear", 9, 2]]}, "takes 9 inputs"),
        ({"params": b"\0" * 8}, "params must be 5200 bytes"),
        ({"y": b"\0" * 7}, "y must be the labels"),
        ({"x": "pixels"}, "x must be"),
        ({"model": [["linear", 64, 4096], ["linear", 4096, 100]]}, "over 400000"),
        (
            {"model": [["linear", 1, 30000], ["linear", 30000, 9]], "y": b"\0" * 8 * 200},
            "over 50000000 per-sample",
        ),
    ],
)
def test_a_bad_step_input_is_one_clear_line(change, message):
    trainer, params, rows = _step(Digits())
    value = {**trainer.step_input(params, rows, 1.0), **change}  # type: ignore[dict-item]
    with pytest.raises(InvalidInput, match=f"^dp-step: .*{message}"):
        dp_step.validate(value)
    with pytest.raises(InvalidInput, match=r"^dp-step: input must be"):
        dp_step.validate({"model": value["model"]})


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")
def test_the_executor_is_the_roles(tmp_path):
    """What `swarm up` gives each device (auto): Ray on a laptop and a server, inline on a
    phone; nothing is started until a run asks for it."""
    identities = make_homes(tmp_path, (PHONE, LAPTOP, SERVER))
    kinds = {}
    for ident in identities:
        service = PlacementService(load_identity(ident.home).settings)
        kinds[ident.settings.device.role] = service.executor_name
    assert kinds == {"phone": "inline", "laptop": "ray", "server": "ray"}


class BrokenOnOne(Digits):
    """``digits``, but the first device's records carry labels the model has no output for:
    its steps raise inside the kernel (cross-entropy's target out of range)."""

    def split(self, devices: list[str], *, alpha: float, seed: int) -> Split:
        split = super().split(devices, alpha=alpha, seed=seed)
        first = sorted(devices)[0]
        r = split.devices[first]
        split.devices[first] = Records(r.ids, r.x, r.y + 10)
        return split


def broken_digits(name: str) -> Any:
    return BrokenOnOne() if name == "digits" else get_task(name)


async def test_each_step_is_a_kernel_run_and_a_failing_one_spends_nothing(tmp_path, autojump_clock):
    async with swarm(tmp_path, (PHONE, LAPTOP, SERVER), tasks=broken_digits) as peers:
        laptop = peers["laptop"]
        started = await laptop.control(
            "learn.start", {"task": "digits", "epsilon": 2.0, "rounds": 4}
        )
        status = await finished(laptop, started["job"])
        job = started["job"]
    by_id = {p.identity.device_id: name for name, p in peers.items()}
    broken = by_id[min(by_id)]
    rows = {d["name"]: d for d in status["devices"]}
    assert status["round"] == 4
    for name, peer in peers.items():
        row = rows[name]
        learn: Any = peer.services["learn"]
        local = learn.local(job)
        held = {h.kernel: h for h in peer.services["kernels"].executor.hosts()}  # type: ignore[attr-defined]
        scraped = exposition(peer)[0].decode()
        assert row["executor"] == "inline", name  # the executor these tests give every device
        # every step was a run of the kernel on this device's executor, counted as such
        assert held["dp-step"].runs == 1 + 4, name  # readied when it joined, then 4 steps
        if name == broken:
            assert row["state"] == "step failed"
            assert "dp-step: IndexError: Target" in row["error"]
            assert "out of bounds" in row["error"]
            assert (row["epsilon_spent"], local.epsilon, local.steps) == (0.0, 0.0, 0)
            assert local.rounds_taken == 0
            assert 'kernel="dp-step",reason="KernelFailed"} 4.0' in scraped
            assert "step failed" in "\n".join(render(status))
        else:
            assert row["state"] in ("done", "out of budget")
            assert "error" not in row
            assert local.steps == local.rounds_taken == 4
            assert 0 < row["epsilon_spent"] == pytest.approx(local.epsilon, abs=1e-4)
            ran = f'device="{name}",executor="inline",kernel="dp-step"}} 5.0'
            assert ran in scraped, scraped


class NoBias(Digits):
    """``digits`` on a model the kernel does not build (a linear layer without bias)."""

    def model(self) -> Any:
        return nn.Linear(64, 10, bias=False)


async def test_a_model_the_kernel_cannot_build_steps_in_the_peer(tmp_path, autojump_clock):
    def tasks(name: str) -> Any:
        return NoBias() if name == "digits" else get_task(name)

    async with swarm(tmp_path, (LAPTOP, SERVER), tasks=tasks) as peers:
        laptop = peers["laptop"]
        started = await laptop.control(
            "learn.start", {"task": "digits", "epsilon": 2.0, "rounds": 2}
        )
        status = await finished(laptop, started["job"])
    for row in status["devices"]:
        assert row["epsilon_spent"] > 0
        assert row["executor"] == "inline"  # in the peer's process (a thread, out of tests)
    for peer in peers.values():
        held = peer.services["kernels"].executor.hosts()  # type: ignore[attr-defined]
        assert "dp-step" not in {h.kernel for h in held}
