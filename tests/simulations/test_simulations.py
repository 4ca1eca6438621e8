"""The simulator: determinism, scenarios as a user runs them, models, plots, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from homeswarm.cli import main
from homeswarm.errors import InvalidArgument, InvalidConfig
from homeswarm.simulations import (
    SCENARIOS,
    DeviceModel,
    Result,
    load_models,
    parse_models,
    random_schedule,
    simulate,
)
from homeswarm.simulations._plots import write_outputs
from homeswarm.simulations._world import DeviceSpec, World, age_identity, bech32
from homeswarm.swarm._membership import Ack, Gossip, Nack, Ping, PingReq, Sync, encode_message
from homeswarm.transports import Envelope, Kind, encode_frame

ROOT = Path(__file__).resolve().parents[2]


# ---- determinism ---------------------------------------------------------------------------


def test_same_seed_same_trace_and_a_different_seed_a_different_one():
    a = simulate("faults", peers=4, seed=11, hours=0.02)
    b = simulate("faults", peers=4, seed=11, hours=0.02)
    c = simulate("faults", peers=4, seed=12, hours=0.02)
    assert a.trace_digest == b.trace_digest
    assert a.metrics == b.metrics
    assert a.log == b.log
    assert c.trace_digest != a.trace_digest


def test_a_frames_energy_cause_from_a_peek_is_the_one_decoding_it_gives():
    world = World([DeviceSpec("a", "laptop"), DeviceSpec("b", "server")], seed=1)
    a, b = (d.id for d in world.devices)
    messages = [Ping(1, b, ()), Ack(1, ()), PingReq(2, b, ()), Nack(3), Gossip(()), Sync(True, ())]
    seen = []
    for msg in messages:
        frame = encode_frame(Envelope(Kind.ONEWAY, 0, encode_message(msg)).pack())
        seen.append(world._cause(a, b, frame))
        assert seen[-1] == world._decoded_cause(a, b, frame)
    assert seen == ["probes", "acks", "probes", "acks", "gossip", "gossip"]
    # anything else is decoded: a request's cause is its response's too
    request = encode_frame(Envelope(Kind.REQUEST, 7, {"op": "vault.sync"}).pack())
    assert world._cause(a, b, request) == "vault sync"
    response = encode_frame(Envelope(Kind.RESPONSE, 7, {"ok": True}).pack())
    assert world._cause(b, a, response) == "vault sync"


def test_the_trace_does_not_depend_on_the_process_or_its_hash_seed():
    """trio's scheduler is seeded, and nothing iterates a set of strings or objects on the way."""
    code = (
        "from homeswarm.simulations import simulate;"
        "print(simulate('churn', peers=5, seed=3, hours=0.01).trace_digest)"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert digests == {simulate("churn", peers=5, seed=3, hours=0.01).trace_digest}


# ---- scenarios -----------------------------------------------------------------------------


def test_gossip_reaches_every_peer_and_measures_it():
    r = simulate("gossip", peers=12, seed=1)
    m = r.metrics
    assert m["missed"] == 0
    assert 0 < m["dissemination_p50_s"] <= m["dissemination_p99_s"] < 2.0
    assert m["bytes_per_peer_per_s"] > 0
    assert len(r.series["dissemination"]) == m["events"] * 11
    assert r.invariants["violations"] == []


def test_failure_detects_every_crash_without_false_deaths():
    r = simulate("failure", peers=6, seed=2, hours=0.05)
    m = r.metrics
    assert m["crashes"] >= 4
    # suspicion takes 4 * probe interval at least, and Lifeguard keeps it under ~30 s here
    assert 2.0 < m["detection_p50_s"] <= m["detection_p99_s"] < 30.0
    assert m["false_deaths"] == 0
    assert r.invariants["violations"] == []


def test_partition_heals_and_the_views_agree_again():
    r = simulate("partition", peers=6, seed=3, hours=0.03)
    assert r.metrics["reconverge_s"] is not None
    assert r.metrics["reconverge_s"] < 90.0
    assert r.invariants["violations"] == []
    seen_during = [row for row in r.series["views"] if 20 < row[0] < 50]
    assert seen_during
    assert all(row[4] <= 3 for row in seen_during)  # nobody sees across the cut


def test_churn_keeps_views_mostly_right():
    r = simulate("churn", peers=6, seed=4, hours=0.05)
    assert r.metrics["joins"] > 0
    assert r.metrics["leaves"] + r.metrics["crashes"] > 0
    assert 0.8 < r.metrics["view_accuracy"] <= 1.0
    assert r.invariants["violations"] == []


def test_a_few_hours_of_a_day_drain_and_charge_batteries():
    """Midnight to 09:00: the phone unplugs at 07:00 (on battery it becomes a light member) and
    leaves at 08:30; the laptop wakes at 07:30."""
    r = simulate("day", seed=5, hours=9.0)
    m = r.metrics
    # the swarm's own energy, by cause, adds up to it, on every device: Wi-Fi's and Ethernet's
    # wake-ups, tails and bytes cost something too (the server's, on Ethernet, very little)
    assert set(m["swarm_wh"]) == {"phone", "laptop", "server"}
    for name, by_cause in m["swarm_wh_by_cause"].items():
        assert {"probes", "acks", "gossip", "heartbeats", "vault sync", "kernels"} <= set(by_cause)
        assert sum(by_cause.values()) == pytest.approx(m["swarm_wh"][name], abs=0.002)
        assert m["radio_wh"][name] <= m["swarm_wh"][name] + 0.005  # tails, and wake-ups, bytes
    phone = m["swarm_wh_by_cause"]["phone"]
    assert 0 < phone["heartbeats"] < 0.05  # half an hour away, a light member: a few heartbeats
    assert phone["probes"] > 10 * phone["heartbeats"]  # at home on Wi-Fi, a full member
    assert 0 < m["swarm_wh"]["laptop"] < m["swarm_wh"]["phone"]  # asleep until 07:30
    assert 0 < m["swarm_wh"]["server"] < 0.01
    # from the battery: only what the phone spent on battery (from 07:00, a light member), not
    # its probes plugged in at night
    battery = m["swarm_battery_wh"]
    assert set(battery) == {"phone", "laptop"}
    assert 0 < battery["phone"] <= phone["heartbeats"] + 0.001
    assert battery["phone"] < m["swarm_wh"]["phone"] / 5
    assert 0 < battery["laptop"] <= m["swarm_wh"]["laptop"]
    base = m["no_swarm_battery_min_percent"]
    assert set(base) == {"phone", "laptop"}  # the server has no battery
    assert base["phone"] - 0.5 <= m["battery_min_percent"]["phone"] <= base["phone"]
    assert len(r.series["battery_no_swarm"]["phone"]) == len(r.series["battery"]["phone"])
    assert set(m["battery_end_percent"]) == {"phone", "laptop", "server"}
    assert m["battery_end_percent"]["server"] is None
    assert m["battery_end_percent"]["phone"] < 100.0
    assert m["energy_wh"]["server"] == pytest.approx((10.0 + 0.05 * 20) * 9, rel=0.01)
    assert m["radio_wh"]["phone"] > 0  # away on cellular from 08:30
    assert 0.5 < m["view_accuracy"] <= 1.0
    assert r.invariants["violations"] == []
    moves = [(round(at / 3600, 2), what, d) for at, what, d in r.log if what in ("moves", "wakes")]
    assert (7.5, "wakes", "laptop") in moves
    assert (8.5, "moves", "phone away") in moves


def test_the_day_with_each_devices_vault_counts_its_syncs():
    """``--services vault``: every device runs its vault service, as ``swarm up`` does; its
    pulls cost energy and show as vault sync (the phone's Wi-Fi, plugged in at night; the server's
    Ethernet costs too little to show in half an hour; the laptop sleeps). Without it,
    membership alone: no vault sync anywhere."""
    r = simulate("day", seed=1, hours=0.5, options={"services": "vault"})
    by = r.metrics["swarm_wh_by_cause"]
    assert by["phone"]["vault sync"] > 0
    assert by["laptop"]["vault sync"] == 0
    assert r.replay.endswith("--services vault")
    assert r.invariants["violations"] == []
    plain = simulate("day", seed=1, hours=0.5)
    assert all(c["vault sync"] == 0 for c in plain.metrics["swarm_wh_by_cause"].values())
    assert plain.metrics["swarm_wh"]["phone"] < r.metrics["swarm_wh"]["phone"]
    with pytest.raises(InvalidArgument, match="--services must be none or vault, got 'all'"):
        simulate("day", options={"services": "all"})
    with pytest.raises(InvalidArgument, match="the day scenario takes no --epsilon"):
        simulate("day", options={"epsilon": 2.0})


# ---- models ----------------------------------------------------------------------------------


def test_each_second_of_radio_tail_belongs_to_the_transfer_that_extended_it():
    models = load_models()
    phone = DeviceModel(models.devices["phone"], models, start_hour=10.0)  # away: cellular
    lte = phone.link
    assert (lte.radio_w, lte.tail_s, lte.metered) == (0.8, 10.0, True)
    wake = lte.wake_j / 3600  # the promotion (Huang et al.: 1210.7 mW for 260.1 ms)
    assert wake == pytest.approx(0.315 / 3600)
    phone.traffic(100.0, "probes")  # radio on 100-110
    phone.traffic(105.0, "gossip")  # extends it to 115: 5 s are gossip's
    phone.traffic(108.0, "acks")  # to 118: 3 s
    phone.traffic(200.0, "heartbeats", sent=1000)  # a new burst, 200-210, and its bytes
    phone.advance(300.0)
    by = phone.wh_by_cause
    assert by["probes"] == pytest.approx(0.8 * 10 / 3600 + wake)  # it woke the radio
    assert by["gossip"] == pytest.approx(0.8 * 5 / 3600)  # in the tail: no wake-up
    assert by["acks"] == pytest.approx(0.8 * 3 / 3600)
    assert by["heartbeats"] == pytest.approx(0.8 * 10 / 3600 + wake + 1000 * 3.51e-6 / 3600)
    assert phone.swarm_wh == pytest.approx(phone.radio_wh + 2 * wake + 1000 * 3.51e-6 / 3600)


def test_wifi_and_ethernet_cost_a_wake_up_a_tail_and_their_bytes():
    models = load_models()
    home = DeviceModel(models.devices["phone"], models, start_hour=20.0)  # on battery, wifi
    assert not home.link.metered
    home.traffic(10.0, "probes", sent=100)  # wakes it: up until 10.2381
    home.traffic(10.1, "acks", received=100)  # within its tail: to 10.3381
    home.traffic(20.0, "probes", sent=100)  # idle again: a new wake-up
    home.advance(100.0)
    # Huang et al. (MobiSys 2012): promotion 124.4 mW x 79.1 ms, tail 119.3 mW x 238.1 ms
    tail, wake = 0.1193 * 0.2381, 0.1244 * 0.0791
    by = home.wh_by_cause
    assert by["probes"] * 3600 == pytest.approx(2 * (tail + wake + 100 * 2.27e-6), rel=1e-3)
    assert by["acks"] * 3600 == pytest.approx(0.1193 * 0.1 + 100 * 1.10e-6, rel=1e-3)
    quiet = DeviceModel(models.devices["phone"], models, start_hour=20.0)
    quiet.advance(100.0)
    assert quiet.energy_wh - home.energy_wh == pytest.approx(home.swarm_wh)  # the battery pays
    server = DeviceModel(models.devices["server"], models, start_hour=12.0)
    for i in range(1000):  # a thousand frames a second apart: a thousand Ethernet wake-ups
        server.traffic(float(i), "gossip", sent=300)
    server.advance(1000.0)
    per_frame = 0.5 * 16.5e-6 + 0.5 * 182e-6 + 300 * 0.05e-6  # wake, sleep time, bytes
    assert server.wh_by_cause["gossip"] * 3600 == pytest.approx(1000 * per_frame, rel=1e-3)


def test_the_shipped_models_load_and_a_phone_drains_on_battery_and_charges_plugged():
    models = load_models()
    assert {"phone", "laptop", "server"} <= set(models.devices)
    phone = DeviceModel(models.devices["phone"], models, start_hour=8.0)
    start = phone.percent
    assert start is not None
    phone.advance(3600.0)  # 08:00-09:00: unplugged
    assert phone.percent is not None
    assert phone.percent < start
    assert not phone.plugged
    night = DeviceModel(models.devices["phone"], models, start_hour=0.0)
    night.energy_wh = 1.0
    night.advance(3600.0)  # 00:00-01:00: plugged, charging fast below 80%
    assert night.plugged
    assert night.percent is not None
    assert night.percent > 50.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, r"needs a \[links.NAME\] table"),
        ({"links": {"x": {"loss": 2}}}, "loss must be within"),
        ({"links": {"x": {}}, "p": {"role": "toaster"}}, "role must be one of"),
        ({"links": {"x": {"metered": 1}}, "p": {}}, "metered must be true or false"),
        ({"links": {"x": {"tail_s": -1}}, "p": {}}, "tail_s must be within"),
        ({"links": {"x": {}}, "p": {"radio_tail_s": 10}}, "radio_tail_s is the link's now"),
        (
            {"links": {"x": {}}, "p": {"role": "phone", "home_link": "x", "away_link": "y"}},
            "away_link must name one of",
        ),
        (
            {
                "links": {"x": {}},
                "p": {
                    "role": "phone",
                    "home_link": "x",
                    "away_link": "x",
                    "day": [{"from": 0, "to": 12}],
                },
            },
            "must end at 24",
        ),
    ],
)
def test_bad_models_are_one_clear_line(data, message):
    with pytest.raises(InvalidConfig, match=message):
        parse_models(data)


def test_age_keys_from_a_seed_are_real_age_keys():
    assert bech32("a", b"") == "a12uel5l"  # BIP-173's own test vector
    one, two = age_identity(bytes(32)), age_identity(bytes(31) + b"\x01")
    assert str(one.to_public()).startswith("age1")
    assert str(one.to_public()) != str(two.to_public())


def test_fault_schedules_come_from_the_seed():
    import random

    a = random_schedule(random.Random(1), 5, 300.0)
    assert a == random_schedule(random.Random(1), 5, 300.0)
    assert a != random_schedule(random.Random(2), 5, 300.0)
    assert {f.kind for f in a} <= {"partition", "isolate", "crash", "pause", "loss", "skew"}
    assert all(0 <= f.at < 300.0 for f in a)


# ---- arguments and the CLI -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scenario": "nope"},
        {"scenario": "gossip", "peers": 0},
        {"scenario": "gossip", "hours": -1.0},
        {"scenario": "gossip", "loss": 1.5},
        {"scenario": "partition", "peers": 1},
    ],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(InvalidArgument):
        simulate(**kwargs)


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "bogus"],
        ["simulate", "gossip", "--peers", "0"],
        ["simulate", "gossip", "--peers", "x"],
        ["simulate", "gossip", "--hours", "0"],
        ["simulate", "gossip", "--loss", "1"],
        ["simulate", "day", "--models", "/nonexistent/devices.toml"],
        ["simulate", "gossip", "--epsilon", "2"],
        ["simulate", "learn", "--epsilon", "-1"],
        ["simulate", "learn", "--trust", "maybe"],
        ["simulate", "learn", "--task", "intents"],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_cli_json_has_the_documented_shape(capsys):
    assert main(["simulate", "gossip", "--peers", "4", "--seed", "9", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == [
        "scenario",
        "peers",
        "seed",
        "sim_seconds",
        "wall_seconds",
        "metrics",
        "invariants",
        "trace_digest",
    ]
    assert out["scenario"] == "gossip"
    assert out["peers"] == 4
    assert out["seed"] == 9
    assert {"dissemination_p50_s", "dissemination_p99_s", "bytes_per_peer_per_s"} <= set(
        out["metrics"]
    )
    assert set(out["invariants"]) == {"checked", "violations"}
    assert out["invariants"]["checked"] > 0
    assert len(out["trace_digest"]) == 64


def test_cli_summary_and_plots(tmp_path, capsys):
    assert (
        main(["simulate", "partition", "--peers", "4", "--hours", "0.02", "--out", str(tmp_path)])
        == 0
    )
    out = capsys.readouterr().out
    assert "reconverge_s" in out
    assert "replay" in out
    assert "swarm simulate partition --peers 4 --seed 0" in out
    assert json.loads((tmp_path / "result.json").read_text())["scenario"] == "partition"
    png = (tmp_path / "membership_view.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert len(png) > 10_000


def test_day_plots_show_the_no_swarm_baseline_and_the_energy_by_cause(tmp_path):
    hours = [h / 4 for h in range(97)]
    battery = {"phone": [(h, 90 - 3 * h) for h in hours], "server": [(h, None) for h in hours]}
    baseline = {"phone": [(h, 90 - 2.9 * h) for h in hours]}
    by_cause = {"phone": {"heartbeats": 0.17, "gossip": 0.002, "probes": 0.0}, "server": {}}
    result = Result(
        "day",
        2,
        0,
        86400.0,
        1.0,
        {"swarm_wh_by_cause": by_cause, "swarm_battery_wh": {"phone": 0.05}},
        {},
        "",
        {"battery": battery, "battery_no_swarm": baseline},
        [(8.5 * 3600, "moves", "phone away"), (18 * 3600, "moves", "phone home")],
    )
    written = {p.name for p in write_outputs(result, tmp_path)}
    assert {"battery.png", "energy_by_cause.png"} <= written
    for name in ("battery.png", "energy_by_cause.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    series = json.loads((tmp_path / "series.json").read_text())
    assert series["battery_no_swarm"]["phone"][0] == [0.0, 90.0]


def test_every_scenario_is_listed_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    out = capsys.readouterr().out
    for name in SCENARIOS:
        assert f"  {name} " in out
