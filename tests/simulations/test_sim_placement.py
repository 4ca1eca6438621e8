"""The placement scenario: our policy against the baselines on one trace of kernel requests.

The full day takes a minute per policy (``bench/bench_placement_day.py``); these run windows of
it: 24 minutes of the morning at 2.5 times the usual request rate (the phone leaves home at
08:30), a few minutes of the night, and single requests on a given trace.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from homeswarm.cli import main
from homeswarm.cli._simulate import render_summary
from homeswarm.kernels import ENERGY_CLASSES, Needs
from homeswarm.placement import (
    DEFAULT_CONFIG,
    Decision,
    DeviceView,
    PolicyConfig,
    always_local,
    place,
)
from homeswarm.simulations import load_models
from homeswarm.simulations._placement import (
    FAIL_S,
    MISS_WH,
    POLICIES,
    WORKLOADS,
    Arrival,
    Option,
    Options,
    draw_trace,
    simulate_placement,
    solve_optimum,
)
from homeswarm.simulations._plots import write_outputs

MORNING = {"seed": 3, "start_hour": 8.3, "hours": 0.4, "rate": 2.5}


@pytest.fixture(scope="module")
def morning():
    return simulate_placement(**MORNING)


# ---- the trace -------------------------------------------------------------------------------


def test_the_trace_comes_from_the_seed_and_follows_the_day():
    models = load_models()
    devices = [(name, models.devices[name]) for name in ("phone", "laptop", "server")]
    day = 24 * 3600.0
    a = draw_trace(random.Random("t/1"), devices, day)
    assert a == draw_trace(random.Random("t/1"), devices, day)
    assert a != draw_trace(random.Random("t/2"), devices, day)
    assert [x.at for x in a] == sorted(x.at for x in a)
    assert 800 < len(a) < 1400
    by = {name: [x for x in a if x.device == name] for name, _ in devices}
    assert by["server"] == []
    assert len(by["phone"]) > 1.5 * len(by["laptop"]) > 0
    hours = [x.at / 3600 for x in by["laptop"]]
    assert all(7.5 <= h < 23.0 for h in hours)  # never while it sleeps
    phone_hours = [x.at / 3600 for x in by["phone"]]
    awake = sum(1 for h in phone_hours if 7.0 <= h < 23.0)
    assert awake > 0.9 * len(phone_hours)  # mostly while the person is up
    kinds = {x.kernel: next(w for w in WORKLOADS if w.name == x.kernel).needs for x in a}
    assert {n.energy for n in kinds.values()} == set(ENERGY_CLASSES)
    assert {n.scope for n in kinds.values()} == {"public", "personal", "private"}
    private = sum(1 for x in by["phone"] if kinds[x.kernel].scope == "private")
    assert 0.05 < private / len(by["phone"]) < 0.4
    assert all(x.work_s > 0 for x in a)


# ---- our policy against the baselines ----------------------------------------------------------


def test_every_policy_sees_the_same_trace(morning):
    policies = morning.metrics["policies"]
    assert list(policies) == list(POLICIES)
    kernels = {m["kernels"] for m in policies.values()}
    assert len(kernels) == 1
    assert kernels.pop() == morning.series["trace"]["requests"] > 20
    for m in policies.values():
        assert m["placed"] + m["refused"] + m["lost"] == m["kernels"]
        assert sum(m["placed_on"].values()) == m["placed"]


def test_our_policy_never_breaks_privacy_and_always_local_does(morning):
    policies = morning.metrics["policies"]
    assert policies["swarm"]["privacy_violations"] == 0
    assert policies["swarm"]["rules_broken"] == {}
    assert morning.metrics["privacy_violations"] == 0
    assert morning.invariants["violations"] == []
    # the phone may not hold private data: run there, a private kernel leaks
    local = policies["always-local"]
    assert local["privacy_violations"] > 0
    assert local["rules_broken"]["scope"] == local["privacy_violations"]
    assert policies["always-server"]["privacy_violations"] == 0


def test_always_server_spares_the_phone_and_our_policy_keeps_budgets(morning):
    policies = morning.metrics["policies"]
    server, local = policies["always-server"], policies["always-local"]
    assert server["placed_on"]["phone"] == 0
    # the phone's compute is spared; its whole energy need not be: a light member's radio sleeps
    # between bursts, and each kernel sent over cellular wakes it for LTE's tail (in this
    # morning on cellular that costs the phone more than the tiny kernels it spares)
    assert server["kernel_wh"]["phone"] < local["kernel_wh"]["phone"]
    # tiny kernels have budgets under a cellular round trip: the server misses them
    assert policies["swarm"]["budget_misses"] < server["budget_misses"]
    headline = {k: v for k, v in morning.metrics.items() if k != "policies"}
    assert headline["budget_misses"] == policies["swarm"]["budget_misses"]
    assert headline["energy_wh"] == policies["swarm"]["energy_wh"]


def test_the_same_seed_gives_the_same_metrics_and_digest(morning):
    again = simulate_placement(**MORNING)
    assert again.metrics == morning.metrics
    assert again.trace_digest == morning.trace_digest


# ---- the offline optimum and the stronger baseline -----------------------------------------------


def test_the_optimum_is_the_program_s_exact_answer():
    def opt(device: str, wh: float, latency: float = 0.1, compute: float = 1.0) -> Option:
        return Option(device, wh, latency, compute, "phone" if device == "a" else "server")

    requests = [
        # three heavy runs in one minute: the phone (2 cores: 120 s a minute) is cheapest for
        # each, but takes only two; the one that costs least more elsewhere goes elsewhere
        Options(0, 1.0, 100.0, (opt("a", 1e-3, compute=50.0), opt("b", 5e-3, compute=30.0))),
        Options(1, 2.0, 100.0, (opt("a", 2e-3, compute=50.0), opt("b", 3e-3, compute=30.0))),
        Options(2, 3.0, 100.0, (opt("a", 1e-3, compute=50.0), opt("b", 3e-3, compute=30.0))),
        # the cheapest device would miss the budget: a miss costs more than any energy
        Options(3, 4.0, 1.0, (opt("a", 1e-4, latency=2.0), opt("b", 1e-2, latency=0.5))),
        # nowhere to run: not in the plan (refused, as by any policy)
        Options(4, 5.0, 1.0, ()),
    ]
    best = solve_optimum(requests)
    assert best.status == "optimal"
    assert best.plan == {0: "a", 1: "b", 2: "a", 3: "b"}
    assert best.estimated_misses == 0
    assert best.estimated_kernel_wh == pytest.approx(1e-3 + 3e-3 + 1e-3 + 1e-2)
    assert (best.requests, best.variables) == (4, 8)
    # with room for all three, each goes to its cheapest; a miss when nothing else can run
    roomy = [replace(r, at=60.0 * i) for i, r in enumerate(requests[:3])]
    only = [Options(9, 0.0, 1.0, (opt("a", 1e-4, latency=2.0),))]
    relaxed = solve_optimum(roomy + only)
    assert relaxed.plan == {0: "a", 1: "a", 2: "a", 9: "a"}
    assert relaxed.estimated_misses == 1
    assert MISS_WH > 1e-2


def test_the_optimum_and_the_energy_greedy_baseline_keep_every_rule(morning):
    m = morning.metrics
    policies = m["policies"]
    best = policies["optimal"]
    assert m["optimum"]["status"] == "optimal"
    assert m["optimum"]["requests"] == best["kernels"] - best["lost"] > 20
    for name in ("optimal", "energy-greedy"):
        assert policies[name]["privacy_violations"] == 0
        assert policies[name]["rules_broken"] == {}
        assert policies[name]["refused"] == 0
    assert best["budget_misses"] == 0
    ours = policies["swarm"]
    assert m["energy_vs_optimal"] == round(ours["energy_wh"] / best["energy_wh"], 4)
    kernels = sum(ours["kernel_wh"].values()) / sum(best["kernel_wh"].values())
    assert m["kernel_energy_vs_optimal"] == round(kernels, 4)
    # the energy-greedy baseline sends everything it may to the server, budgets or not
    assert policies["energy-greedy"]["budget_misses"] > ours["budget_misses"]


def test_our_policy_learns_a_server_secretly_four_times_slower():
    window = {**MORNING, "policies": {"swarm": place}, "hidden_speed": {"server": 0.25}}
    blind = simulate_placement(**window)
    taught = simulate_placement(**window, calibrate=True)
    assert "calibration" not in blind.metrics
    learnt = {(r["kernel"], r["device"]): r for r in taught.metrics["calibration"]}
    on_server = [r for (_, device), r in learnt.items() if device == "server"]
    assert on_server
    for row in on_server:  # the truth, from its first run on
        assert row["ratio"] == pytest.approx(4.0, rel=0.01)
    assert all(
        r["ratio"] == pytest.approx(1.0, rel=0.01) for r in learnt.values() if r not in on_server
    )
    b, t = blind.metrics["policies"]["swarm"], taught.metrics["policies"]["swarm"]
    assert t["placed_on"]["server"] < b["placed_on"]["server"] / 2
    assert t["latency_p95_s"] < b["latency_p95_s"]
    assert t["privacy_violations"] == 0


# ---- the invariant and the re-placement ----------------------------------------------------------


def test_a_privacy_violation_by_our_policy_is_an_invariant_violation():
    trace = [Arrival(60.0, "phone", "message-search", 0.03)]
    r = simulate_placement(
        seed=1, start_hour=8.0, hours=0.05, trace=trace, policies={"swarm": always_local}
    )
    assert r.metrics["privacy_violations"] == 1
    bad = r.invariants["violations"]
    assert [v["invariant"] for v in bad] == ["privacy"]
    assert "message-search (private data) on phone" in bad[0]["detail"]


def _laptop_first(
    kernel: str,
    needs: Needs,
    view: Sequence[DeviceView],
    *,
    config: PolicyConfig = DEFAULT_CONFIG,
    compute_s: float | None = None,
    failed: Mapping[str, str] | None = None,
) -> Decision:
    """Insists on the laptop (asleep or not) until it failed; then our policy."""
    laptop = [d for d in view if d.name == "laptop"]
    if laptop and not failed:
        view = [replace(laptop[0], status="alive")]
    return place(kernel, needs, view, config=config, compute_s=compute_s, failed=failed)


def test_a_run_placed_on_a_sleeping_laptop_fails_and_is_placed_again():
    trace = [Arrival(30.0, "phone", "embed", 0.1)]
    r = simulate_placement(
        seed=2, start_hour=2.0, hours=0.03, trace=trace, policies={"swarm": _laptop_first}
    )
    m = r.metrics["policies"]["swarm"]
    assert m["failed"] == 1
    assert m["placed"] == 1
    assert m["placed_on"]["laptop"] == 0
    assert m["latency_p50_s"] > FAIL_S
    assert r.invariants["violations"] == []


# ---- output ------------------------------------------------------------------------------------


def test_the_summary_shows_a_table_and_the_plots_compare_policies(morning, tmp_path):
    text = render_summary(morning)
    assert "policies" in text
    table = text[text.index("  policies") :].splitlines()
    for name in POLICIES:
        assert any(line.strip().startswith(name) for line in table)
    written = {p.name for p in write_outputs(morning, tmp_path)}
    assert {"placement_policies.png", "placement_phone_battery.png", "result.json"} <= written


def test_cli_json_has_the_standard_shape_and_the_policies(capsys):
    assert main(["simulate", "placement", "--hours", "0.1", "--seed", "2", "--json"]) == 0
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
    assert (out["scenario"], out["peers"], out["seed"]) == ("placement", 3, 2)
    m = out["metrics"]
    assert set(POLICIES) == set(m["policies"])
    assert m["energy_vs_optimal"] > 0
    headline = {
        "kernels",
        "energy_wh",
        "phone_battery_end_percent",
        "phone_battery_min_percent",
        "budget_misses",
        "privacy_violations",
        "refused",
    }
    assert headline <= set(m)
    for policy in m["policies"].values():
        assert headline <= set(policy)
        assert {"energy_wh_by_device", "placed_on", "kernel_wh", "lost"} <= set(policy)
        assert set(policy["placed_on"]) == {"phone", "laptop", "server"}
    assert out["invariants"]["violations"] == []
    assert len(out["trace_digest"]) == 64
