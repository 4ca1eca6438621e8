"""Accelerators: declared or detected, gossiped in the signed device state, shown by status, and
a kernel that needs one placed where one is (or refused in one line).

Our machines have none: the swarm tests declare one in a device's swarm.toml (as a user whose
detection fails would), and the probe looks at a driver's files laid out in a temporary folder.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
from test_placement_swarm import LAPTOP, PHONE, SERVER, Spec, swarm

from homeswarm.cli._status import check_status_shape, render_table
from homeswarm.errors import InvalidConfig
from homeswarm.kernels import Needs, Registry, kernel
from homeswarm.kernels.testing import make_registry
from homeswarm.placement import Refused, place
from homeswarm.placement.testing import laptop, phone, server
from homeswarm.swarm import decode_state
from homeswarm.swarm._config import parse_accelerator, parse_settings
from homeswarm.swarm._device import FixedLoad, SimulatedPower, sample_state, state_bytes
from homeswarm.swarm._sensors import AcceleratorProbe, accelerator_source


@kernel("train", needs=Needs(energy="large", accelerator="cuda", accelerator_mb=16384))
def train(value: object) -> object:
    return {"trained": value}


@kernel("render", needs=Needs(energy="medium", accelerator="gpu"))
def render(value: object) -> object:
    return value


def registry() -> Registry:
    r = make_registry()
    r.add(train)
    r.add(render)
    return r


# ---- the setting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("auto", None),
        ("none", (None, 0.0)),
        ("cuda", ("cuda", 0.0)),
        ("mps", ("mps", 0.0)),
        ("cuda:24GiB", ("cuda", 24576.0)),
        ("cuda:24GB", ("cuda", 24576.0)),
        ("mps:16384MiB", ("mps", 16384.0)),
        ("cuda:7.5GiB", ("cuda", 7680.0)),
    ],
)
def test_the_setting_says_auto_none_or_what_the_device_has(value, parsed):
    assert parse_accelerator(value) == parsed
    settings = parse_settings(f'[device]\naccelerator = "{value}"\n')
    assert settings.device.accelerator == value


@pytest.mark.parametrize(
    "value", ["gpu", "tpu", "cuda:", "cuda:24", "cuda:24TB", "CUDA", "cuda 24GiB"]
)
def test_a_bad_accelerator_setting_is_one_line_naming_the_key(value):
    with pytest.raises(InvalidConfig) as info:
        parse_settings(f'[device]\naccelerator = "{value}"\n', "home/swarm.toml")
    text = str(info.value)
    assert text.startswith("home/swarm.toml: [device] accelerator: must be auto, none, or one of")
    assert "cuda:24GiB" in text
    assert "\n" not in text


def test_a_declared_accelerator_is_taken_as_it_stands_and_auto_asks_the_probe(tmp_path):
    assert accelerator_source("none")() == (None, 0.0)
    assert accelerator_source("mps:16GiB")() == ("mps", 16384.0)
    probe = AcceleratorProbe(gpus=tmp_path / "none", dev=tmp_path / "none0", system="linux")
    assert accelerator_source("auto", probe)() == (None, 0.0)


# ---- detection ---------------------------------------------------------------------------------


def driver_files(root: Path, gpus: int) -> Path:
    """``/proc/driver/nvidia/gpus`` as the NVIDIA driver lays it out: a folder per GPU."""
    folder = root / "gpus"
    folder.mkdir()
    for i in range(gpus):
        (folder / f"0000:0{i + 1}:00.0").mkdir()
        (folder / f"0000:0{i + 1}:00.0" / "information").write_text("Model: Test GPU\n")
    return folder


def test_no_driver_no_accelerator_and_nothing_is_asked(tmp_path):
    asked: list[bool] = []
    probe = AcceleratorProbe(
        gpus=driver_files(tmp_path, 0),
        dev=tmp_path / "nvidia0",
        system="linux",
        machine="x86_64",
        query_mb=lambda: asked.append(True) or 1.0,
    )
    assert probe.wait(5) == (None, 0.0)
    assert asked == []


def test_a_cuda_device_is_seen_at_once_and_its_memory_comes_in_the_background(tmp_path):
    release = threading.Event()

    def query() -> float:  # as slow as a child process importing torch: it waits to be let go
        assert release.wait(10)
        return 24576.0

    probe = AcceleratorProbe(
        gpus=driver_files(tmp_path, 2), dev=tmp_path / "nvidia0", system="linux", query_mb=query
    )
    assert probe.read() == ("cuda", 0.0)  # at once: the memory is not known yet
    assert probe.read() == ("cuda", 0.0)
    release.set()
    assert probe.wait(10) == ("cuda", 24576.0)
    assert probe.read() == ("cuda", 24576.0)


def test_a_device_node_alone_is_a_cuda_device_and_a_failing_query_leaves_memory_unknown(tmp_path):
    (tmp_path / "nvidia0").write_text("")

    def query() -> float:
        raise RuntimeError("no nvidia-smi, no torch")

    probe = AcceleratorProbe(
        gpus=tmp_path / "absent", dev=tmp_path / "nvidia0", system="linux", query_mb=query
    )
    assert probe.wait(10) == ("cuda", 0.0)


def test_apple_silicon_has_mps_with_its_unified_memory(tmp_path):
    probe = AcceleratorProbe(
        gpus=tmp_path / "absent",
        dev=tmp_path / "absent0",
        system="darwin",
        machine="arm64",
        total_mb=lambda: 16384.0,
    )
    assert probe.read() == ("mps", 16384.0)
    intel = AcceleratorProbe(
        gpus=tmp_path / "absent", dev=tmp_path / "absent0", system="darwin", machine="x86_64"
    )
    assert intel.read() == (None, 0.0)


# ---- the state ---------------------------------------------------------------------------------


def test_the_sampled_state_carries_the_accelerator_through_the_wire():
    settings = parse_settings('[device]\nname = "box"\nrole = "server"\n')
    power = SimulatedPower(settings.power, 0.0)

    def sample(accelerator: tuple[str | None, float]) -> object:
        return sample_state(
            settings=settings,
            addrs=["/ip4/127.0.0.1/tcp/4747"],
            power=power,
            load=FixedLoad(5.0, 8000.0),
            executor="ray",
            kernels=["train"],
            version=3,
            now=0.0,
            accelerator=accelerator,
        )

    state = sample(("cuda", 24576.0))
    blob = state_bytes(state)  # type: ignore[arg-type]
    back = decode_state(blob)
    assert back == state
    assert (back.accelerator, back.accelerator_mb) == ("cuda", 24576.0)  # type: ignore[union-attr]
    assert len(blob) < 120  # a few bytes more than without one
    none = sample((None, 0.0))
    assert (none.accelerator, none.accelerator_mb) == (None, 0.0)  # type: ignore[attr-defined]
    # the memory becoming known is worth gossiping
    assert sample(("cuda", 0.0)).meaningfully_different(state)  # type: ignore[attr-defined]
    # a sensor's odd figure is clamped, never a failed sample
    assert sample(("cuda", float("nan"))).accelerator_mb == 0.0  # type: ignore[attr-defined]


# ---- the policy --------------------------------------------------------------------------------


def test_the_policy_places_a_cuda_kernel_on_the_one_device_with_enough_of_one():
    view = [
        phone(local=True, rtt_s=0.0),
        laptop(accelerators=("mps",), accelerator_mb=16384.0),
        server(accelerators=("cuda",), accelerator_mb=8192.0),
        server("big-id", name="big", accelerators=("cuda",), accelerator_mb=24576.0, rtt_s=0.05),
    ]
    view = [replace(d, kernels=(*d.kernels, "train", "render")) for d in view]
    decision = place("train", train.needs, view)
    assert decision.device is not None
    assert decision.device.name == "big"
    why = {e.device.name: e.detail for e in decision.excluded}
    assert why["phone"] == "has no cuda accelerator"
    assert why["laptop"] == "has no cuda accelerator (it has mps 16384 MB)"
    assert why["server"] == "its cuda 8192 MB has less than the 16384 MB it needs"
    # "gpu": either kind will do; the policy's usual score picks among them
    assert {c.device.name for c in place("render", render.needs, view).candidates} == {
        "laptop",
        "server",
        "big",
    }


# ---- through real peers ------------------------------------------------------------------------


async def test_a_cuda_kernel_lands_on_the_device_that_declared_one(tmp_path, autojump_clock):
    specs = (PHONE, Spec("laptop", "laptop", accelerator="cuda:24GiB"), SERVER)
    async with swarm(tmp_path, specs, registry=registry()) as s:
        for asking in ("phone", "server", "laptop"):
            reply = await s[asking].run("train", [1, 2], explain=True)
            assert reply["device"] == "laptop"
            assert reply["result"] == {"trained": [1, 2]}
            excluded = {e["name"]: e for e in reply["explain"] if e["verdict"] == "excluded"}
            assert excluded["server"]["constraint"] == "accelerator"
            assert excluded["server"]["reason"] == "has no cuda accelerator"
        # it is in the signed state every peer gossips, and in `swarm status`
        view = {d.name: d for d in s["server"].service.view()}
        assert (view["laptop"].accelerators, view["laptop"].accelerator_mb) == (("cuda",), 24576.0)
        assert view["server"].accelerators == ()
        status = s["phone"].peer.status()
        assert check_status_shape(status) == []
        shown = {p["name"]: p["capabilities"]["accelerator"] for p in status["peers"]}
        assert shown == {
            "phone": None,
            "laptop": {"kind": "cuda", "memory_mb": 24576.0},
            "server": None,
        }
        assert "accelerators: laptop cuda 24.0 GB" in render_table(status).splitlines()


async def test_a_kernel_needing_an_accelerator_nobody_has_is_refused_in_one_line(
    tmp_path, autojump_clock
):
    specs = (PHONE, LAPTOP, Spec("server", "server", accelerator="mps:8GiB"))
    async with swarm(tmp_path, specs, registry=registry()) as s:
        with pytest.raises(Refused) as info:
            await s["laptop"].run("train", 1)
        text = str(info.value)
        assert "\n" not in text
        assert text.startswith("no device may run train (public data, large work): ")
        assert "laptop: accelerator: has no cuda accelerator" in text
        assert "server: accelerator: has no cuda accelerator (it has mps 8192 MB)" in text
        # a kernel that takes either kind runs on the mps device
        assert (await s["laptop"].run("render", "x"))["device"] == "server"
