"""The Sovereign seed's energy tiers: on battery below 20% a device runs tiny work only; below 50%
it prefers small work, running a kernel's cheaper variant where the kernel names one, and
``--explain`` says so. One mechanism: the battery floor (a phone keeps its own, higher floors).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_placement_swarm import SERVER, Spec, swarm

from homeswarm.cli._placement import explain_lines
from homeswarm.errors import InvalidArgument
from homeswarm.kernels import Kernel, Needs, Registry, kernel
from homeswarm.kernels.testing import make_registry
from homeswarm.placement import DEFAULT_CONFIG, PolicyConfig, Variant, admit, place
from homeswarm.placement.testing import laptop, phone, server


@kernel("big", needs=Needs(energy="medium", memory_mb=1.0), cheaper="small-model")
def big(value: object) -> object:
    return {"model": "big", "input": value}


@kernel("small-model", needs=Needs(energy="small", memory_mb=1.0))
def small_model(value: object) -> object:
    return {"model": "small", "input": value}


KERNELS = ("big", "small-model")
CHEAPER = Variant("small-model", small_model.needs)


def on_battery(view_device, percent):  # type: ignore[no-untyped-def]
    return replace(
        view_device,
        plugged=False,
        battery_percent=percent,
        kernels=(*view_device.kernels, *KERNELS),
    )


def with_kernels(d):  # type: ignore[no-untyped-def]
    return replace(d, kernels=(*d.kernels, *KERNELS))


# ---- tiny work only below 20% ------------------------------------------------------------------


def test_below_20_percent_any_device_on_battery_runs_tiny_work_only():
    low = on_battery(laptop(), 19.0)
    for energy in ("small", "medium", "large"):
        out = admit("echo", Needs(energy=energy), low)
        assert out is not None
        assert (out.constraint, out.detail) == (
            "battery",
            f"on battery at 19%, below the 20% floor for {energy} work",
        )
    assert admit("echo", Needs(energy="tiny"), low) is None
    assert admit("echo", Needs(energy="small"), replace(low, plugged=True)) is None  # charging
    assert admit("echo", Needs(energy="large"), replace(low, battery_percent=20.0)) is None
    # a phone's floors are the same mechanism, and higher
    assert admit("echo", Needs(energy="small"), phone(battery_percent=25.0)).detail == (  # type: ignore[union-attr]
        "on battery at 25%, below the 30% floor for small work"
    )
    assert DEFAULT_CONFIG.floor("small", "server") == 20.0
    assert DEFAULT_CONFIG.floor("small", "phone") == 30.0
    assert DEFAULT_CONFIG.floor("tiny", "phone") == 0.0
    assert PolicyConfig(tiny_only_below=40.0).floor("small", "phone") == 40.0
    with pytest.raises(InvalidArgument):
        PolicyConfig(prefer_cheaper_below=120.0)


# ---- below 50% it prefers small work: the cheaper variant --------------------------------------


def test_a_device_below_50_percent_runs_the_cheaper_variant():
    me = on_battery(laptop(local=True, rtt_s=0.0), 45.0)
    decision = place("big", big.needs, [me], variant=CHEAPER)
    chosen = decision.check()
    assert (chosen.kernel, chosen.variant) == ("small-model", True)
    assert decision.variant == "small-model"
    assert chosen.line().startswith("runs the cheaper variant small-model (low battery); cost ")
    (entry,) = decision.explain()
    assert (entry["kernel"], entry["variant"]) == ("small-model", True)
    # the variant's own compute: a small model's, not the big one's
    full = place("big", big.needs, [me]).check()
    assert chosen.compute_s < full.compute_s
    # at 50% or more, or plugged in, the kernel itself
    for device in (replace(me, battery_percent=50.0), replace(me, plugged=True)):
        c = place("big", big.needs, [device], variant=CHEAPER).check()
        assert (c.kernel, c.variant) == ("big", False)


def test_a_device_the_floor_rules_out_may_still_run_the_variant():
    me = on_battery(phone(local=True, rtt_s=0.0), 40.0)  # medium: below the phone's 50% floor
    assert not place("big", big.needs, [me]).ok
    decision = place("big", big.needs, [me], variant=CHEAPER)
    assert decision.check().kernel == "small-model"
    assert decision.excluded == ()
    # below the variant's own floor too: ruled out, with the kernel's own reason
    lower = replace(me, battery_percent=25.0)
    refused = place("big", big.needs, [lower], variant=CHEAPER)
    assert not refused.ok
    assert refused.excluded[0].detail == "on battery at 25%, below the 50% floor for medium work"


def test_the_kernel_itself_where_a_device_can_afford_it_and_the_variant_elsewhere():
    view = [
        on_battery(phone(local=True, rtt_s=0.0), 40.0),
        with_kernels(server()),
        on_battery(laptop(), 30.0),
    ]
    decision = place("big", big.needs, view, variant=CHEAPER)
    ran = {c.device.name: (c.kernel, c.variant) for c in decision.candidates}
    assert ran == {
        "server": ("big", False),
        "phone": ("small-model", True),
        "laptop": ("small-model", True),
    }
    assert decision.check().device.name == "server"  # the full model first, where it is afforded
    # the server gone: the cheapest of the low devices runs the variant
    alone = place("big", big.needs, [view[0], view[2]], variant=CHEAPER)
    assert alone.check().kernel == "small-model"


def test_a_low_device_without_the_variant_runs_the_kernel_itself():
    me = replace(on_battery(laptop(local=True, rtt_s=0.0), 45.0), kernels=("big",))
    c = place("big", big.needs, [me], variant=CHEAPER).check()
    assert (c.kernel, c.variant) == ("big", False)


def test_a_variant_must_be_cheaper_and_without_one_nothing_changes():
    me = on_battery(laptop(local=True, rtt_s=0.0), 45.0)
    with pytest.raises(InvalidArgument, match="not a cheaper variant"):
        place("big", big.needs, [me], variant=Variant("small-model", Needs(energy="medium")))
    view = [me, with_kernels(server()), on_battery(phone(), 90.0)]
    assert place("big", big.needs, view, variant=None) == place("big", big.needs, view)
    # nobody low on battery: the same decision with or without a variant
    high = [replace(me, battery_percent=90.0), *view[1:]]
    assert (
        place("big", big.needs, high, variant=CHEAPER).candidates
        == place("big", big.needs, high).candidates
    )
    with pytest.raises(InvalidArgument):
        Kernel("big", big.fn, big.needs, cheaper="big")


# ---- through real peers ------------------------------------------------------------------------


def registry() -> Registry:
    r = make_registry()
    r.add(big)
    r.add(small_model)
    return r


async def test_a_laptop_low_on_battery_runs_the_small_model_and_says_so(tmp_path, autojump_clock):
    specs = (
        Spec("laptop", "laptop", battery=45.0, plugged=False),
        Spec("phone", "phone", battery=40.0, plugged=False),
    )
    async with swarm(tmp_path, specs, registry=registry()) as s:
        reply = await s["laptop"].run("big", "hello", explain=True)
        assert reply["result"] == {"model": "small", "input": "hello"}
        assert reply["variant"] == "small-model"
        assert reply["kernel"] == "big"
        entries = {e["name"]: e for e in reply["explain"]}
        assert entries[reply["device"]]["verdict"] == "chosen"
        assert entries["laptop"]["variant"]
        assert entries["phone"]["variant"]
        lines = explain_lines(reply["explain"])
        assert any("runs the cheaper variant small-model (low battery)" in ln for ln in lines)
        # plugged in, the laptop runs the big model again
        s["laptop"].peer.set_power(None, True)
        again = await s["laptop"].run("big", "hello")
        assert again["result"]["model"] == "big"
        assert (again["device"], again["variant"]) == ("laptop", None)


async def test_a_server_on_mains_runs_the_big_model_for_a_low_phone(tmp_path, autojump_clock):
    specs = (Spec("phone", "phone", battery=40.0, plugged=False), SERVER)
    async with swarm(tmp_path, specs, registry=registry()) as s:
        reply = await s["phone"].run("big", [1], explain=True)
        assert (reply["device"], reply["variant"]) == ("server", None)
        assert reply["result"]["model"] == "big"
        (mine,) = [e for e in reply["explain"] if e["name"] == "phone"]
        assert mine["verdict"] == "candidate"
        assert mine["kernel"] == "small-model"
