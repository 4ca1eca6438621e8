"""A device's state: validation, the wire form and its size, gossip-worthiness, power and load."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import subprocess
import sys
from collections import namedtuple

import msgpack
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeswarm.errors import InvalidArgument, ProtocolViolation
from homeswarm.swarm import _device, _sensors
from homeswarm.swarm._config import (
    SCOPES,
    DeviceSettings,
    MembershipSettings,
    PowerSettings,
    Settings,
)
from homeswarm.swarm._device import (
    MAX_ADDRS_TOTAL,
    MAX_KERNELS_TOTAL,
    MAX_MEMORY_MB,
    MAX_MINUTES,
    NO_BATTERY,
    DeviceState,
    FixedLoad,
    PowerReading,
    SimulatedPower,
    battery_saver,
    sample_state,
)
from homeswarm.swarm._sensors import DevicePower, LoadSampler, make_power

PEER = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE"
H = 3600.0


def state(**changes) -> DeviceState:
    base = DeviceState(
        name="pixel-7",
        role="phone",
        addrs=("/ip4/192.168.1.23/tcp/4747", "/ip6/fe80::1c2b:3aff:fe4d:5e6f/tcp/4747"),
        battery_percent=87.3,
        plugged=False,
        minutes_left=412.0,
        cpu_percent=12.5,
        memory_free_mb=2048.0,
        scopes=("public", "personal"),
        relay_only=False,
        executor="inline",
        kernels=("embed", "summarize", "dp-train"),
        version=17,
    )
    return dataclasses.replace(base, **changes)


def worst_case() -> DeviceState:
    """Each field at its largest: long name, 8 addrs filling the budget, 32 kernels, big numbers."""
    addr_len = MAX_ADDRS_TOTAL // 8
    kernel_len = MAX_KERNELS_TOTAL // 32
    return DeviceState(
        name="n" * 64,
        role="laptop",
        addrs=tuple(f"/dns/{i}".ljust(addr_len, "x") for i in range(8)),
        battery_percent=99.9,
        plugged=False,
        minutes_left=MAX_MINUTES,
        cpu_percent=99.9,
        memory_free_mb=MAX_MEMORY_MB,
        scopes=SCOPES,
        relay_only=True,
        executor="e" * 16,
        kernels=tuple(f"k{i}".ljust(kernel_len, "x") for i in range(32)),
        version=2**63 - 1,
        lease_s=86_400,
        accelerator="cuda",
        accelerator_mb=MAX_MEMORY_MB,
    )


def packed(s: DeviceState) -> bytes:
    return msgpack.packb(s.to_wire(), use_bin_type=True)


def unpacked(data: bytes) -> DeviceState:
    return DeviceState.from_wire(msgpack.unpackb(data, raw=False))


# -- strategies --------------------------------------------------------------------------------

names = st.just("") | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
addr_lists = st.lists(st.from_regex(r"/[a-z0-9/.:]{0,45}", fullmatch=True), max_size=8)
kernel_lists = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,7}", fullmatch=True), max_size=32)
percents = st.floats(0, 100)
states = st.builds(
    DeviceState,
    name=names,
    role=st.sampled_from(["phone", "laptop", "server"]),
    addrs=addr_lists.map(tuple),
    battery_percent=st.none() | percents,
    plugged=st.none() | st.booleans(),
    minutes_left=st.none() | st.floats(0, MAX_MINUTES),
    cpu_percent=percents,
    memory_free_mb=st.floats(0, MAX_MEMORY_MB),
    scopes=st.lists(st.sampled_from(SCOPES), unique=True).map(tuple),
    relay_only=st.booleans(),
    executor=st.sampled_from(["inline", "ray", "remote"]),
    kernels=kernel_lists.map(tuple),
    version=st.integers(0, 2**63 - 1),
    accelerator=st.none() | st.sampled_from(["cuda", "mps"]),
).flatmap(
    lambda s: st.builds(
        dataclasses.replace,
        st.just(s),
        accelerator_mb=st.just(0.0) if s.accelerator is None else st.floats(0, MAX_MEMORY_MB),
    )
)
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=200)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=16) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=30,
)


# -- the state ---------------------------------------------------------------------------------


def test_floats_are_kept_to_one_decimal_and_ints_become_floats():
    s = state(battery_percent=87.349, minutes_left=12, cpu_percent=0.04, memory_free_mb=1000.06)
    assert (s.battery_percent, s.minutes_left, s.cpu_percent, s.memory_free_mb) == (
        87.3,
        12.0,
        0.0,
        1000.1,
    )
    assert isinstance(s.minutes_left, float)
    assert state(addrs=["/ip4/1.2.3.4/tcp/1"]).addrs == ("/ip4/1.2.3.4/tcp/1",)


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "has space"},
        {"name": "n" * 65},
        {"name": 7},
        {"role": "toaster"},
        {"addrs": "/ip4/1.2.3.4/tcp/1"},
        {"addrs": ("ip4/1.2.3.4",)},
        {"addrs": ("/a",) * 9},
        {"addrs": ("/" + "a" * 128,)},
        {"addrs": ("/" + "a" * 100,) * 4},
        {"addrs": ("/a\x1b[2J",)},
        {"addrs": (1,)},
        {"battery_percent": 100.1},
        {"battery_percent": -0.1},
        {"battery_percent": math.nan},
        {"battery_percent": True},
        {"battery_percent": "50"},
        {"plugged": 1},
        {"minutes_left": -1.0},
        {"minutes_left": math.inf},
        {"cpu_percent": None},
        {"cpu_percent": 101.0},
        {"memory_free_mb": -0.5},
        {"memory_free_mb": math.inf},
        {"scopes": ("secret",)},
        {"scopes": ("public", "public")},
        {"relay_only": None},
        {"executor": ""},
        {"executor": "e" * 17},
        {"executor": "in line"},
        {"kernels": ("k",) * 33},
        {"kernels": ("k" * 33,)},
        {"kernels": ("k" * 30,) * 9},
        {"kernels": ("",)},
        {"version": -1},
        {"version": 2**63},
        {"version": 1.0},
        {"version": False},
        {"lease_s": -1},
        {"lease_s": 1.5},
        {"lease_s": True},
        {"lease_s": 86_401},
        {"accelerator": "gpu"},
        {"accelerator": "cuda", "accelerator_mb": -1},
        {"accelerator_mb": 1024},  # memory without an accelerator
    ],
)
def test_invalid_states_are_refused(changes):
    with pytest.raises(InvalidArgument):
        state(**changes)


def test_wire_form_is_positional_with_a_leading_version_and_tenths():
    wire = state().to_wire()
    assert wire[0] == 2
    assert wire == [
        2,
        "pixel-7",
        "phone",
        ["/ip4/192.168.1.23/tcp/4747", "/ip6/fe80::1c2b:3aff:fe4d:5e6f/tcp/4747"],
        873,
        False,
        4120,
        125,
        20480,
        ["public", "personal"],
        False,
        "inline",
        ["embed", "summarize", "dp-train"],
        17,
        0,
        None,
        0,
    ]
    assert DeviceState.from_wire(wire) == state()
    gpu = state(accelerator="cuda", accelerator_mb=24575.6)
    assert gpu.accelerator_mb == 24576.0  # whole MB
    assert gpu.to_wire()[-2:] == ["cuda", 24576]
    assert DeviceState.from_wire(gpu.to_wire()) == gpu


def test_no_battery_round_trips_as_none():
    s = state(role="server", battery_percent=None, plugged=None, minutes_left=None)
    assert unpacked(packed(s)) == s


@given(states)
def test_round_trip(s):
    assert unpacked(packed(s)) == s
    assert DeviceState.from_wire(s.to_wire()) == s


@given(states)
def test_every_valid_state_is_under_a_kilobyte(s):
    assert len(packed(s)) < 1024


def test_worst_case_is_well_under_a_kilobyte_and_typical_a_few_hundred_bytes():
    worst = packed(worst_case())
    assert unpacked(worst) == worst_case()
    assert len(worst) < 900
    typical = state(addrs=(f"/ip4/192.168.1.23/tcp/4747/p2p/{PEER}",))
    assert 100 < len(packed(typical)) < 300


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ({"v": 1}, "not a list"),
        ([], "0 fields"),
        ([1, *state().to_wire()[1:]], "version"),  # a peer from before the accelerator
        ([True, *state().to_wire()[1:]], "version"),
        (state().to_wire()[:-1], "16 fields"),
        ([*state().to_wire(), 0], "18 fields"),
    ],
)
def test_bad_shapes_say_why(wire, reason):
    with pytest.raises(ProtocolViolation, match=reason):
        DeviceState.from_wire(wire)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (1, b"pixel"),
        (2, "toaster"),
        (3, "/ip4/1.2.3.4/tcp/1"),
        (3, [b"/ip4"]),
        (4, 1001),
        (4, 87.3),
        (5, 0),
        (6, -1),
        (7, None),
        (7, True),
        (8, 10**30),
        (9, ["public", "public"]),
        (9, [["public"]]),
        (10, None),
        (11, None),
        (12, ["k" * 33]),
        (12, {"k": 1}),
        (13, -1),
        (13, 2**64 - 1),
        (15, "tpu"),
        (15, "c" * 9),
        (15, 1),
        (16, -1),
        (16, 1.5),
        (16, None),
        (16, 10),  # memory without an accelerator
    ],
)
def test_bad_fields_are_protocol_violations(index, value):
    wire = state().to_wire()
    wire[index] = value
    with pytest.raises(ProtocolViolation, match="device state"):
        DeviceState.from_wire(wire)


@given(msgpack_values)
def test_garbage_is_only_ever_a_protocol_violation(obj):
    with contextlib.suppress(ProtocolViolation):
        DeviceState.from_wire(obj)


@given(states, st.data())
def test_a_damaged_state_is_valid_or_a_protocol_violation(s, data):
    wire = s.to_wire()
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] = data.draw(msgpack_values)
    with contextlib.suppress(ProtocolViolation):
        DeviceState.from_wire(wire)


def test_as_status():
    status = state().as_status()
    assert status == {
        "name": "pixel-7",
        "role": "phone",
        "power": {"battery_percent": 87.3, "plugged": False, "minutes_left": 412.0},
        "load": {"cpu_percent": 12.5, "memory_free_mb": 2048.0},
        "privacy": {"scopes": ["public", "personal"], "relay_only": False},
        "lease_s": 0,
        "capabilities": {
            "executor": "inline",
            "kernels": ["embed", "summarize", "dp-train"],
            "accelerator": None,
        },
    }
    assert json.loads(json.dumps(status)) == status
    gpu = state(role="server", accelerator="cuda", accelerator_mb=24576).as_status()
    assert gpu["capabilities"]["accelerator"] == {"kind": "cuda", "memory_mb": 24576.0}
    mps = state(accelerator="mps").as_status()
    assert mps["capabilities"]["accelerator"] == {"kind": "mps", "memory_mb": None}


@pytest.mark.parametrize(
    ("changes", "different"),
    [
        ({}, False),
        ({"version": 18}, False),
        ({"name": "pixel-8"}, True),
        ({"role": "laptop"}, True),
        ({"addrs": ("/ip4/192.168.1.23/tcp/4747",)}, True),
        ({"scopes": ("public",)}, True),
        ({"relay_only": True}, True),
        ({"executor": "ray"}, True),
        ({"kernels": ("embed",)}, True),
        ({"plugged": True}, True),
        ({"accelerator": "cuda"}, True),
        ({"plugged": None}, True),
        ({"battery_percent": None}, True),
        ({"battery_percent": 86.4}, False),
        ({"battery_percent": 86.3}, True),
        ({"battery_percent": 88.3}, True),
        ({"cpu_percent": 32.4}, False),
        ({"cpu_percent": 32.5}, True),
        ({"cpu_percent": 0.0}, False),
        ({"memory_free_mb": 1850.0}, False),
        ({"memory_free_mb": 1843.0}, True),
        ({"memory_free_mb": 2250.0}, False),
        ({"memory_free_mb": 2275.6}, True),
        ({"minutes_left": 371.0}, False),
        ({"minutes_left": 370.7}, True),
        ({"minutes_left": 457.8}, True),
        ({"minutes_left": None}, True),
    ],
)
def test_meaningfully_different(changes, different):
    old, new = state(), state(**changes)
    assert old.meaningfully_different(new) is different
    assert new.meaningfully_different(old) is different


def test_free_memory_from_zero_is_a_change():
    assert state(memory_free_mb=0.0).meaningfully_different(state(memory_free_mb=0.1))
    assert not state(memory_free_mb=0.0).meaningfully_different(state(memory_free_mb=0.0))


@pytest.mark.parametrize(
    ("plugged", "battery", "saver"),
    [
        (False, 29.9, True),
        (False, 0.0, True),
        (False, 30.0, False),
        (True, 5.0, False),
        (None, 5.0, False),
        (None, None, False),
    ],
)
def test_battery_saver(plugged, battery, saver):
    assert battery_saver(state(plugged=plugged, battery_percent=battery)) is saver


# -- power -------------------------------------------------------------------------------------

Battery = namedtuple("Battery", "percent secsleft power_plugged")


@pytest.mark.parametrize(
    ("changes"),
    [
        {"battery_percent": 101.0},
        {"battery_percent": math.nan},
        {"plugged": 1},
        {"minutes_left": -1.0},
        {"minutes_left": math.inf},
    ],
)
def test_power_readings_are_validated(changes):
    with pytest.raises(InvalidArgument):
        dataclasses.replace(NO_BATTERY, **changes)


@pytest.mark.parametrize(
    ("battery", "reading"),
    [
        (None, NO_BATTERY),
        (Battery(87.3, 3600, False), PowerReading(87.3, False, 60.0)),
        (Battery(87, psutil.POWER_TIME_UNKNOWN, False), PowerReading(87.0, False, None)),
        (Battery(100, psutil.POWER_TIME_UNLIMITED, True), PowerReading(100.0, True, None)),
        (Battery(55, 7200, True), PowerReading(55.0, True, None)),
        (Battery(55, 90, None), PowerReading(55.0, None, 1.5)),
        (Battery(100.4, -7, False), PowerReading(100.0, False, None)),
        (Battery(math.nan, 60, False), NO_BATTERY),
        (Battery(50, None, False), PowerReading(50.0, False, None)),
    ],
)
def test_device_power_reads_psutil(monkeypatch, battery, reading):
    monkeypatch.setattr(psutil, "sensors_battery", lambda: battery)
    assert DevicePower().read(now=0.0) == reading


def test_device_power_failures_read_as_no_battery(monkeypatch, caplog):
    def broken():
        raise OSError("no /sys")

    monkeypatch.setattr(psutil, "sensors_battery", broken)
    with caplog.at_level(logging.DEBUG, logger="swarm.sensors"):
        assert DevicePower().read(now=0.0) == NO_BATTERY
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_device_power_cannot_be_set():
    power = DevicePower()
    assert power.simulated is False
    with pytest.raises(InvalidArgument) as info:
        power.set(plugged=False, now=0.0)
    assert str(info.value) == (
        "this device reports real power; only a simulated power source "
        '(swarm.toml [power] source = "simulated") can be changed'
    )
    assert "\n" not in str(info.value)


def simulated(level: float = 100.0, *, plugged: bool = False, now: float = 0.0) -> SimulatedPower:
    settings = PowerSettings(
        source="simulated", battery_percent=level, plugged=plugged, capacity_wh=50.0, draw_w=6.0
    )
    return SimulatedPower(settings, now)


def test_simulated_drain_is_12_percent_an_hour_for_6_w_from_50_wh():
    power = simulated(100.0, now=1000.0)
    assert power.simulated is True
    assert power.read(1000.0) == PowerReading(100.0, False, 500.0)
    first = power.read(1000.0 + H)
    assert first.battery_percent == pytest.approx(88.0)
    assert first.minutes_left == pytest.approx(440.0)
    assert power.read(1000.0 + H / 2) == first  # time never runs backwards
    assert power.read(1000.0 + 2 * H).battery_percent == pytest.approx(76.0)


def test_simulated_battery_stops_at_empty():
    power = simulated(6.0)
    assert power.read(H / 4).battery_percent == pytest.approx(3.0)
    assert power.read(H).battery_percent == 0.0
    assert power.read(10 * H) == PowerReading(0.0, False, 0.0)


def test_simulated_charge_is_60_percent_an_hour_then_a_quarter_above_80():
    power = simulated(20.0, plugged=True)
    assert power.read(0.0) == PowerReading(20.0, True, None)
    assert power.read(H).battery_percent == pytest.approx(80.0)
    assert power.read(2 * H).battery_percent == pytest.approx(95.0)
    assert power.read(3 * H).battery_percent == 100.0
    assert power.read(30 * H) == PowerReading(100.0, True, None)


def test_simulated_charge_crossing_80_in_one_step():
    # 70 -> 80 takes 10 minutes at 60%/h; the remaining 50 minutes add 15%/h * 5/6 h = 12.5.
    assert simulated(70.0, plugged=True).read(H).battery_percent == pytest.approx(92.5)


@given(
    start=st.floats(0, 100),
    plugged=st.booleans(),
    steps=st.lists(st.floats(0, 5 * H), min_size=1, max_size=20),
)
def test_simulated_level_does_not_depend_on_how_often_it_is_read(start, plugged, steps):
    often, once = simulated(start, plugged=plugged), simulated(start, plugged=plugged)
    now = 0.0
    for step in steps:
        now += step
        reading = often.read(now)
        assert 0.0 <= reading.battery_percent <= 100.0
    assert reading.battery_percent == pytest.approx(once.read(now).battery_percent, abs=1e-6)


def test_simulated_set_advances_to_now_first():
    power = simulated(100.0)
    reading = power.set(plugged=True, now=H)
    assert (reading.battery_percent, reading.plugged) == (pytest.approx(88.0), True)
    assert reading.minutes_left is None
    assert power.read(H + H / 6).battery_percent == pytest.approx(88.0 + 15.0 / 6)
    assert power.set(battery_percent=25, plugged=False, now=2 * H) == PowerReading(
        25.0, False, 125.0
    )
    assert power.set(now=2 * H) == PowerReading(25.0, False, 125.0)


@pytest.mark.parametrize(
    "changes",
    [
        {"battery_percent": 100.5},
        {"battery_percent": -1},
        {"battery_percent": math.nan},
        {"battery_percent": True},
        {"battery_percent": "50"},
        {"plugged": "yes"},
    ],
)
def test_simulated_set_refuses_bad_values_in_one_line_and_changes_nothing(changes):
    power = simulated(50.0)
    with pytest.raises(InvalidArgument) as info:
        power.set(**changes, now=0.0)
    assert "\n" not in str(info.value)
    assert power.read(0.0) == PowerReading(50.0, False, 250.0)


@pytest.mark.parametrize("field", ["capacity_wh", "draw_w", "charge_w"])
def test_simulated_power_refuses_bad_settings(field):
    with pytest.raises(InvalidArgument, match=field):
        SimulatedPower(PowerSettings(**{field: 0.0}), 0.0)


def test_make_power_follows_the_setting():
    assert isinstance(make_power(PowerSettings(), 0.0), DevicePower)
    power = make_power(PowerSettings(source="simulated", battery_percent=40.0), 5.0)
    assert isinstance(power, SimulatedPower)
    assert power.read(5.0) == PowerReading(40.0, True, None)
    with pytest.raises(InvalidArgument):
        make_power(PowerSettings(source="solar"), 0.0)  # type: ignore[arg-type]


# -- load and sampling -------------------------------------------------------------------------


def test_load_sampler_reads_psutil(monkeypatch):
    calls = []
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval: calls.append(interval) or 37.5)
    Memory = namedtuple("Memory", "available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory(3 * 2**30))
    sampler = LoadSampler()
    assert sampler.read() == (37.5, 3072.0)
    assert calls == [None, None]  # primed once, never blocking


def test_load_sampler_failures_read_as_zero(monkeypatch):
    sampler = LoadSampler()

    def broken():
        raise RuntimeError("gone")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    assert sampler.read() == (0.0, 0.0)


def test_load_sampler_on_this_machine():
    cpu, memory = LoadSampler().read()
    assert 0.0 <= cpu <= 100.0
    assert memory > 0


def sample(**overrides):
    args = {
        "settings": Settings(device=DeviceSettings(name="pixel-7", role="phone")),
        "addrs": ["/ip4/192.168.1.23/tcp/4747"],
        "power": simulated(50.0),
        "load": FixedLoad(12.5, 2048.0),
        "executor": "inline",
        "kernels": ["embed"],
        "version": 3,
        "now": H,
    }
    return sample_state(**{**args, **overrides})


def test_sample_state_from_settings_and_readings():
    assert sample() == DeviceState(
        name="pixel-7",
        role="phone",
        addrs=("/ip4/192.168.1.23/tcp/4747",),
        battery_percent=38.0,
        plugged=False,
        minutes_left=190.0,
        cpu_percent=12.5,
        memory_free_mb=2048.0,
        scopes=("public", "personal"),
        relay_only=False,
        executor="inline",
        kernels=("embed",),
        version=3,
        lease_s=900,  # a phone on battery is a light member
    )
    device = DeviceSettings(name="nas", role="server", scopes=("public",), relay_only=True)
    s = sample(settings=Settings(device=device), power=DevicePower())
    assert (s.name, s.role, s.scopes, s.relay_only) == ("nas", "server", ("public",), True)


@pytest.mark.parametrize(
    ("role", "light", "plugged", "metered", "lease"),
    [
        ("phone", "auto", False, False, 900),  # a phone on battery is light, on Wi-Fi too
        ("phone", "auto", True, False, 0),  # plugged in at home: a full member
        ("phone", "auto", True, True, 900),  # any device on a metered link
        ("laptop", "auto", False, False, 0),
        ("laptop", "auto", True, True, 900),
        ("server", "on", True, False, 900),
        ("phone", "off", False, True, 0),
    ],
)
def test_who_is_a_light_member(role, light, plugged, metered, lease):
    settings = Settings(
        device=DeviceSettings(name="d", role=role), membership=MembershipSettings(light=light)
    )
    power = simulated(50.0, plugged=plugged)
    assert sample(settings=settings, power=power, metered=metered).lease_s == lease


def test_sample_state_clamps_odd_load_readings():
    s = sample(load=FixedLoad(140.0, -5.0))
    assert (s.cpu_percent, s.memory_free_mb) == (100.0, 0.0)
    s = sample(load=FixedLoad(math.nan, math.inf))
    assert (s.cpu_percent, s.memory_free_mb) == (0.0, 0.0)


def test_sample_state_keeps_the_addresses_that_fit_in_order():
    long = "/dns/" + "h" * 95  # 100 characters; the budget is 400 together
    one, two = "/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/1"
    addrs = [one, "not-a-multiaddr", one, "/" + "x" * 200, long, long + "a", long + "b"]
    addrs += [long + "c", two] + [f"/ip4/10.0.1.{i}/tcp/1" for i in range(10)]
    kept = sample(addrs=addrs).addrs
    assert kept == (one, long, long + "a", long + "b", two, *addrs[9:12])
    assert sum(map(len, kept)) == 397


def test_sample_state_refuses_the_callers_bad_values():
    with pytest.raises(InvalidArgument):
        sample(kernels=[f"k{i}" for i in range(33)])
    with pytest.raises(InvalidArgument):
        sample(version=-1)


def test_logger_is_named():
    assert _device.log.name == "swarm.device"
    assert _sensors.log.name == "swarm.sensors"


def test_the_pure_device_state_never_imports_psutil():
    # the state, its codec, the simulated battery and sampling are pure: the simulator and the
    # wire codec must not load the OS sensors (swarm/_sensors.py is the one module that does)
    code = (
        "import sys; import homeswarm.swarm._device as d;"
        "d.DeviceState.from_wire(d.DeviceState('a', 'phone', (), None, None, None, 0, 0, (),"
        " False, 'inline', (), 0).to_wire());"
        "print('psutil' in sys.modules, 'homeswarm.swarm._sensors' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]
    code = "import sys; import homeswarm.swarm._sensors; print('psutil' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["True"]  # the check can fail: the sensors do load it
