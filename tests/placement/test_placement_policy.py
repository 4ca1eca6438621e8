"""The placement policy: pure, deterministic, explained; its baselines; properties over random
swarm views (never a forbidden device; the same view, in any order, gives the same choice)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from homeswarm import placement
from homeswarm.errors import InvalidArgument, LocalError
from homeswarm.kernels import ENERGY_CLASSES, SCOPES, Needs, builtin_registry
from homeswarm.kernels.testing import make_registry
from homeswarm.placement import (
    DEFAULT_CONFIG,
    Calibration,
    DeviceView,
    PolicyConfig,
    Refused,
    admit,
    always_local,
    always_server,
    baselines,
    latency_greedy,
    place,
    random_policy,
    violations,
)
from homeswarm.placement.testing import ALL_KERNELS, laptop, phone, random_view, server

EMBED = builtin_registry().get("embed")
HELLO = EMBED.compute_s("hello world")


def names(decision: placement.Decision) -> list[str]:
    return [c.device.name for c in decision.candidates]


# ---- the rules, one by one ---------------------------------------------------------------------


def test_short_work_stays_on_a_plugged_laptop_and_moves_to_the_server_on_battery():
    view = [laptop(local=True, rtt_s=0.0), server(rtt_s=0.003), phone()]
    plugged = place("embed", EMBED.needs, view, compute_s=HELLO)
    assert plugged.device is not None
    assert plugged.device.name == "laptop"
    # `swarm power --unplugged --battery 30` on the laptop
    view[0] = replace(view[0], plugged=False, battery_percent=30.0)
    unplugged = place("embed", EMBED.needs, view, compute_s=HELLO)
    assert unplugged.device is not None
    assert unplugged.device.name == "server"


def test_heavy_work_goes_to_the_server_even_from_a_plugged_laptop():
    view = [laptop(local=True, rtt_s=0.0), server(), phone()]
    decision = place("heavy", Needs(energy="large", compute_s=2.0), view)
    assert names(decision) == ["server", "laptop", "phone"]  # the phone: 82%, above its 80% floor
    assert decision.excluded == ()


def test_a_private_kernel_never_lands_without_that_scope():
    view = [phone(local=True, rtt_s=0.0), laptop(), server()]
    decision = place("secret", Needs(scope="private", energy="tiny"), view)
    assert "phone" not in names(decision)
    (out,) = decision.excluded
    assert (out.device.name, out.constraint) == ("phone", "scope")
    assert out.detail == "may not hold private data (scopes: public,personal)"


def test_a_phone_on_battery_below_its_floor_runs_only_tiny_work():
    low = phone(local=True, rtt_s=0.0, battery_percent=20.0)
    view = [low, server(status="dead")]
    for energy in ENERGY_CLASSES:
        decision = place("echo", Needs(energy=energy), view)
        if energy == "tiny":
            assert names(decision) == ["phone"]
        else:
            assert not decision.ok
            rules = {e.device.name: e.constraint for e in decision.excluded}
            assert rules == {"phone": "battery", "server": "status"}
    # plugged in, or above the floor, it may
    assert place("echo", Needs(energy="large"), [replace(low, plugged=True)]).ok
    assert place("echo", Needs(energy="medium"), [replace(low, battery_percent=50.0)]).ok
    assert not place("echo", Needs(energy="medium"), [replace(low, battery_percent=49.9)]).ok


def test_floors_are_configurable_and_apply_to_phones_only():
    config = PolicyConfig(floor_small=10.0, floor_medium=10.0, floor_large=10.0)
    low_phone = phone(battery_percent=20.0)
    assert admit("echo", Needs(energy="large"), low_phone, config=config) is None
    assert admit("echo", Needs(energy="large"), low_phone) is not None
    # other roles have the energy tiers' floor only: below 20% on battery, tiny work only
    low_laptop = laptop(plugged=False, battery_percent=25.0)
    assert admit("echo", Needs(energy="large"), low_laptop) is None  # scored, not filtered
    lower = replace(low_laptop, battery_percent=19.0)
    out = admit("echo", Needs(energy="small"), lower)
    assert out is not None
    assert out.detail == "on battery at 19%, below the 20% floor for small work"
    assert admit("echo", Needs(energy="tiny"), lower) is None
    assert (
        admit("echo", Needs(energy="large"), lower, config=PolicyConfig(tiny_only_below=0)) is None
    )
    # a phone's own floors never go under that one
    config = PolicyConfig(floor_small=10.0)
    assert admit("echo", Needs(), phone(battery_percent=15.0), config=config) is not None
    with pytest.raises(InvalidArgument):
        PolicyConfig(floor_large=101)


def test_the_per_class_floors_follow_floor_roles_not_the_name_phone():
    laptops = PolicyConfig(floor_roles=("laptop",))
    low_laptop = laptop(plugged=False, battery_percent=25.0)
    out = admit("echo", Needs(energy="small"), low_laptop, config=laptops)
    assert out is not None  # a floor role now: 30% for small work
    assert out.detail == "on battery at 25%, below the 30% floor for small work"
    decision = place("echo", Needs(energy="small"), [low_laptop], config=laptops)
    assert not decision.ok  # place and its refusal agree
    assert admit("echo", Needs(energy="small"), phone(battery_percent=25.0), config=laptops) is None


@pytest.mark.parametrize(
    ("device", "constraint", "detail"),
    [
        (server(status="dead"), "status", "is dead"),
        (server(status="suspect"), "status", "is suspect"),
        (server(status="away"), "status", "is away"),  # a light member whose lease lapsed
        (server(status="left"), "status", "is left"),
        (server(relay_only=True), "relay_only", "a blind relay runs no kernels"),
        (server(executor="none"), "executor", "runs no kernels (executor 'none')"),
        (server(kernels=("embed",)), "kernel", "does not have the kernel echo"),
        (server(memory_free_mb=10.0), "memory", "10 MB free, needs 64 MB"),
    ],
)
def test_each_constraint_names_itself(device, constraint, detail):
    decision = place("echo", Needs(), [device])
    assert not decision.ok
    assert decision.excluded[0].constraint == constraint
    assert decision.excluded[0].detail == detail
    with pytest.raises(Refused) as info:
        decision.check()
    assert f"server: {constraint}: {detail}" in str(info.value)
    assert isinstance(info.value, LocalError)
    assert info.value.decision is decision


def test_a_light_member_runs_work_but_homes_no_stateful_instance():
    """A phone on cellular is light: nobody probes it, so its death shows only when its lease
    lapses (up to 15 min), and a stateful instance there would wait that long to move."""
    light = phone(light=True, battery_percent=90.0, plugged=True, local=True, rtt_s=0.0)
    assert place("echo", Needs(), [light]).ok
    decision = place("echo", Needs(stateful=True), [light, server()])
    assert decision.device is not None
    assert decision.device.role == "server"
    (excluded,) = decision.excluded
    assert excluded.constraint == "light"
    assert "light member" in excluded.detail
    assert not place("echo", Needs(stateful=True), [light]).ok


def test_an_accelerator_must_be_there():
    needs = Needs(accelerator="gpu")
    assert admit("echo", needs, server()).constraint == "accelerator"  # type: ignore[union-attr]
    assert admit("echo", needs, server(accelerators=("cuda",))) is None
    assert admit("echo", needs, server(accelerators=("mps",))) is None
    cuda = Needs(accelerator="cuda", accelerator_mb=16384)
    out = admit("echo", cuda, server(accelerators=("mps",), accelerator_mb=65536))
    assert out is not None
    assert out.detail == "has no cuda accelerator (it has mps 65536 MB)"
    out = admit("echo", cuda, server(accelerators=("cuda",), accelerator_mb=8192))
    assert out is not None
    assert out.detail == "its cuda 8192 MB has less than the 16384 MB it needs"
    assert admit("echo", cuda, server(accelerators=("cuda",), accelerator_mb=24576)) is None


def test_devices_that_failed_this_run_are_ruled_out():
    view = [laptop(local=True, rtt_s=0.0), server()]
    decision = place("heavy", Needs(energy="large"), view, failed={"server-id": "connection lost"})
    assert names(decision) == ["laptop"]
    (out,) = decision.excluded
    assert out.constraint == "failed"
    assert out.detail == "failed this run: connection lost"


def test_the_refusal_says_why_for_every_device():
    view = [phone(local=True, rtt_s=0.0), laptop(status="dead"), server(relay_only=True)]
    decision = place("secret", Needs(scope="private", energy="tiny"), view)
    assert decision.refusal() == (
        "no device may run secret (private data, tiny work): "
        "laptop: status: is dead; "
        "phone: scope: may not hold private data (scopes: public,personal); "
        "server: relay_only: a blind relay runs no kernels"
    )
    assert (
        place("x", Needs(), []).refusal()
        == "no device may run x (public data, small work): no devices known"
    )


def test_explain_scores_every_candidate_and_names_every_exclusion():
    view = [laptop(local=True, rtt_s=0.0), server(), phone(battery_percent=10.0)]
    decision = place("embed", EMBED.needs, view, compute_s=HELLO)
    entries = decision.explain()
    assert [(e["name"], e["verdict"]) for e in entries] == [
        ("laptop", "chosen"),
        ("server", "candidate"),
        ("phone", "excluded"),
    ]
    chosen = entries[0]
    assert chosen["score_ms"] < entries[1]["score_ms"]
    assert chosen["network_ms"] == 0.0
    assert "here" in chosen["reason"]
    assert entries[1]["network_ms"] == pytest.approx(12.0)  # 2 ms RTT + 10 ms overhead
    assert entries[2]["constraint"] == "battery"
    assert entries[2]["score_ms"] is None
    assert "below the 50% floor for medium work" in entries[2]["reason"]


def test_latency_budget_misses_come_last():
    tight = Needs(energy="large", compute_s=1.2, latency_budget_s=1.0)
    # the laptop (1.2 s of work) misses the 1 s budget; the server (1.5x as fast) meets it
    view = [laptop(local=True, rtt_s=0.0), server(cpu_percent=0.0)]
    decision = place("heavy", tight, view)
    assert [c.over_budget for c in decision.candidates] == [False, True]
    assert names(decision) == ["server", "laptop"]


def test_a_device_seen_twice_is_a_caller_error():
    with pytest.raises(InvalidArgument, match="each device once"):
        place("echo", Needs(), [server(), server()])


def test_device_views_are_checked():
    for fields in (
        {"id": ""},
        {"role": "toaster"},
        {"status": "sleepy"},
        {"scopes": ("secret",)},
        {"battery_percent": 101.0},
        {"cpu_percent": float("nan")},
        {"memory_free_mb": -1.0},
        {"rtt_s": -0.1},
        {"queue": -1},
        {"accelerators": ("tpu",)},
        {"accelerators": ("gpu",)},
        {"accelerator_mb": -1.0},
    ):
        with pytest.raises(InvalidArgument):
            replace(server(), **fields)
    assert phone().on_battery
    assert not server().on_battery
    assert not laptop().on_battery


# ---- the score's shape -------------------------------------------------------------------------


def cost_of(device: DeviceView, needs: Needs = EMBED.needs) -> float:
    decision = place("embed", needs, [device])
    assert decision.chosen is not None
    return decision.chosen.cost_s


def test_plugged_beats_battery_and_a_server_beats_a_phone():
    assert cost_of(laptop(plugged=True)) < cost_of(laptop(plugged=False))
    heavy = Needs(energy="large", compute_s=1.0)
    assert cost_of(server(rtt_s=0.02), heavy) < cost_of(phone(plugged=True), heavy)
    assert cost_of(laptop(), heavy) < cost_of(phone(plugged=True, rtt_s=0.005), heavy)


@given(
    battery=st.floats(20, 100),  # above the energy tiers' tiny-only floor: scored, not filtered
    more=st.floats(0, 100),
    cpu=st.floats(0, 100),
    rtt=st.floats(0, 1),
    extra_rtt=st.floats(0, 1),
    queue=st.integers(0, 10),
)
def test_more_charge_less_load_and_nearer_never_cost_more(
    battery, more, cpu, rtt, extra_rtt, queue
):
    base = laptop(plugged=False, battery_percent=battery, cpu_percent=cpu, rtt_s=rtt, queue=queue)
    fuller = min(battery + more, 100.0)
    assert cost_of(replace(base, battery_percent=fuller)) <= cost_of(base)
    assert cost_of(replace(base, plugged=True)) <= cost_of(base)
    assert cost_of(replace(base, cpu_percent=max(cpu - 10, 0.0))) <= cost_of(base)
    assert cost_of(replace(base, rtt_s=rtt + extra_rtt)) >= cost_of(base)
    assert cost_of(replace(base, queue=queue + 1)) >= cost_of(base)


# ---- properties over random views --------------------------------------------------------------


def device_views(local: bool = False) -> st.SearchStrategy[DeviceView]:
    return st.builds(
        DeviceView,
        id=st.text("abcdefgh", min_size=1, max_size=6),
        name=st.sampled_from(["", "phone", "laptop", "server", "x"]),
        role=st.sampled_from(placement.ROLES),
        status=st.sampled_from(placement.STATUSES),
        battery_percent=st.none() | st.floats(0, 100),
        plugged=st.none() | st.booleans(),
        cpu_percent=st.floats(0, 100),
        memory_free_mb=st.floats(0, 64000),
        scopes=st.lists(st.sampled_from(SCOPES), unique=True).map(tuple),
        relay_only=st.booleans(),
        executor=st.sampled_from(["inline", "ray", "none"]),
        kernels=st.lists(st.sampled_from(ALL_KERNELS), unique=True).map(tuple),
        accelerators=st.lists(st.sampled_from(["cuda", "mps"]), unique=True).map(tuple),
        accelerator_mb=st.sampled_from([0.0, 8192.0, 24576.0]),
        rtt_s=st.none() | st.floats(0, 2),
        queue=st.integers(0, 20),
        local=st.just(local),
        light=st.booleans(),
    )


views = st.tuples(device_views(local=True), st.lists(device_views(), max_size=12)).map(
    lambda pair: list({d.id: d for d in [pair[0], *pair[1]]}.values())
)
needs_ = st.builds(
    Needs,
    scope=st.sampled_from(SCOPES),
    energy=st.sampled_from(ENERGY_CLASSES),
    cpu=st.floats(0.1, 8),
    memory_mb=st.floats(0, 16000),
    accelerator=st.none() | st.sampled_from(["gpu", "cuda", "mps"]),
    latency_budget_s=st.floats(0.01, 10),
    stateful=st.booleans(),
    compute_s=st.floats(0, 5),
)
kernel_names = st.sampled_from(ALL_KERNELS)
configs = st.builds(
    PolicyConfig,
    floor_small=st.floats(0, 100),
    floor_medium=st.floats(0, 100),
    floor_large=st.floats(0, 100),
    tiny_only_below=st.floats(0, 100),
)


def has_accelerator(needs: Needs, d: DeviceView) -> bool:
    if needs.accelerator is None:
        return True
    kinds = {"gpu": ("cuda", "mps")}.get(needs.accelerator, (needs.accelerator,))
    return any(k in d.accelerators for k in kinds) and d.accelerator_mb >= needs.accelerator_mb


def allowed(kernel: str, needs: Needs, d: DeviceView, config: PolicyConfig) -> bool:
    """The rules, written out again, independently of the policy's code."""
    floor = {"tiny": 0.0, "small": config.floor_small, "medium": config.floor_medium}.get(
        needs.energy, config.floor_large
    )
    if needs.energy != "tiny":  # the energy tiers: tiny work only below tiny_only_below
        floor = (
            max(floor, config.tiny_only_below)
            if d.role in config.floor_roles
            else config.tiny_only_below
        )
    low = d.battery_percent is not None and d.plugged is not True and d.battery_percent < floor
    return (
        d.status == "alive"
        and not d.relay_only
        and needs.scope in d.scopes
        and d.executor != "none"
        and kernel in d.kernels
        and has_accelerator(needs, d)
        and d.memory_free_mb >= needs.memory_mb
        and not low
        and not (needs.stateful and d.light)
    )


@settings(max_examples=300)
@given(kernel_names, needs_, views, configs, st.randoms(use_true_random=False))
def test_the_policy_never_chooses_a_forbidden_device(kernel, needs, view, config, rnd):
    decision = place(kernel, needs, view, config=config)
    # every device is judged exactly once
    judged = [c.device.id for c in decision.candidates] + [e.device.id for e in decision.excluded]
    assert sorted(judged) == sorted(d.id for d in view)
    # candidates are exactly the allowed devices; the chosen one among them
    assert {c.device.id for c in decision.candidates} == {
        d.id for d in view if allowed(kernel, needs, d, config)
    }
    chosen = decision.device
    if chosen is not None:
        assert needs.scope in chosen.scopes
        assert not chosen.relay_only
        assert chosen.status == "alive"
        assert not (
            chosen.on_battery
            and needs.energy != "tiny"
            and chosen.battery_percent is not None
            and chosen.battery_percent < config.floor(needs.energy, chosen.role)
        )
        assert violations(decision, config=config) == []
    else:
        assert decision.refusal().startswith(f"no device may run {kernel} ")
    # best first, ties by id
    ranks = [(c.over_budget, c.cost_s, c.device.id) for c in decision.candidates]
    assert ranks == sorted(ranks)
    # the same view, in any order, gives the same decision
    shuffled = list(view)
    rnd.shuffle(shuffled)
    again = place(kernel, needs, shuffled, config=config)
    assert again.candidates == decision.candidates
    assert again.excluded == decision.excluded
    assert again.explain() == decision.explain()


@given(kernel_names, needs_, views, st.data())
def test_a_failed_device_is_never_chosen_again(kernel, needs, view, data):
    failed = {d.id: "gone" for d in data.draw(st.lists(st.sampled_from(view), max_size=3))}
    decision = place(kernel, needs, view, failed=failed)
    assert not {c.device.id for c in decision.candidates} & set(failed)


@given(kernel_names, needs_, views, st.integers(0, 2**32))
def test_baselines_choose_only_devices_that_can_run_anything(kernel, needs, view, seed):
    for name, policy in baselines(random.Random(seed)).items():
        decision = policy(kernel, needs, view)
        assert decision.policy == name
        assert len(decision.candidates) <= 1 or name == "swarm"
        chosen = decision.device
        if chosen is not None:
            assert chosen.status == "alive"
            assert not chosen.relay_only
            assert chosen.executor != "none"
            assert kernel in chosen.kernels
        judged = {c.device.id for c in decision.candidates} | {
            e.device.id for e in decision.excluded
        }
        assert judged == {d.id for d in view}


def test_baselines_ignore_what_the_policy_keeps():
    view = [phone(local=True, rtt_s=0.0, battery_percent=5.0), laptop(), server()]
    secret = Needs(scope="private", energy="large")
    local = always_local("secret", secret, view)
    assert local.device is not None
    assert local.device.name == "phone"
    assert {v.constraint for v in violations(local)} == {"scope"}
    assert always_server("secret", secret, view).device.name == "server"  # type: ignore[union-attr]
    assert latency_greedy("echo", Needs(energy="tiny"), view).device.name == "phone"  # type: ignore[union-attr]
    picks = {
        random_policy(random.Random(s))("echo", Needs(), view).device.name  # type: ignore[union-attr]
        for s in range(30)
    }
    assert picks == {"phone", "laptop", "server"}
    # no server up: always-server falls back to the deciding device
    no_server = [view[0], view[1], server(status="dead")]
    assert always_server("echo", Needs(), no_server).device.name == "phone"  # type: ignore[union-attr]


def test_random_views_for_simulations_are_reproducible():
    a = random_view(random.Random(5), 50)
    assert a == random_view(random.Random(5), 50)
    assert a[0].local
    assert sum(d.local for d in a) == 1
    first = place("embed", EMBED.needs, a)
    assert first == place("embed", EMBED.needs, random_view(random.Random(5), 50))


# ---- a swarm whose state keeps changing --------------------------------------------------------


class ChangingSwarm(RuleBasedStateMachine):
    """Devices unplug, drain, die, come back, change scopes; every decision keeps the rules."""

    def __init__(self) -> None:
        super().__init__()
        self.view: dict[str, DeviceView] = {}
        self.registry = make_registry()

    @initialize()
    def devices(self) -> None:
        self.view = {
            "phone-id": phone(local=True, rtt_s=0.0),
            "laptop-id": laptop(),
            "server-id": server(),
        }

    @rule(device=st.sampled_from(["phone-id", "laptop-id"]), battery=st.floats(0, 100))
    def battery(self, device: str, battery: float) -> None:
        self.view[device] = replace(self.view[device], battery_percent=battery)

    @rule(device=st.sampled_from(["phone-id", "laptop-id"]), plugged=st.booleans())
    def plug(self, device: str, plugged: bool) -> None:
        self.view[device] = replace(self.view[device], plugged=plugged)

    @rule(
        device=st.sampled_from(["laptop-id", "server-id"]),
        status=st.sampled_from(placement.STATUSES),
    )
    def status(self, device: str, status: str) -> None:
        self.view[device] = replace(self.view[device], status=status)

    @rule(
        device=st.sampled_from(["phone-id", "laptop-id", "server-id"]),
        scopes=st.lists(st.sampled_from(SCOPES), unique=True).map(tuple),
    )
    def scopes(self, device: str, scopes: tuple[str, ...]) -> None:
        self.view[device] = replace(self.view[device], scopes=scopes)

    @rule(device=st.sampled_from(["laptop-id", "server-id"]), cpu=st.floats(0, 100))
    def load(self, device: str, cpu: float) -> None:
        self.view[device] = replace(self.view[device], cpu_percent=cpu)

    @invariant()
    def every_kernel_lands_only_where_allowed(self) -> None:
        view = list(self.view.values())
        for k in self.registry:
            decision = place(k.name, k.needs, view)
            for c in decision.candidates:
                assert allowed(k.name, k.needs, c.device, DEFAULT_CONFIG)
            assert place(k.name, k.needs, view[::-1]).device == decision.device


TestChangingSwarm = ChangingSwarm.TestCase
TestChangingSwarm.settings = settings(max_examples=50, stateful_step_count=20, deadline=None)


def test_exports():
    for name in placement.__all__:
        assert getattr(placement, name) is not None


# ---- the fast policy decides as the plain one did ------------------------------------------------
# The policy's loop was flattened for speed (one pass, rules inlined, candidates kept as tuples
# and explained when read). What follows is the policy as it was written before (rule by rule,
# a scored candidate per device), kept here as the reference the fast one must equal exactly:
# the same candidates in the same order with the same figures, the same exclusions in the same
# words.


def _reference_rule(
    kernel: str, needs: Needs, d: DeviceView, config: PolicyConfig, failed: dict[str, str]
) -> tuple[str, str] | None:
    if d.status != "alive":
        return "status", f"is {d.status}"
    if d.relay_only:
        return "relay_only", "a blind relay runs no kernels"
    if needs.scope not in d.scopes:
        held = ",".join(d.scopes) or "none"
        return "scope", f"may not hold {needs.scope} data (scopes: {held})"
    if not d.runs_kernels:
        return "executor", f"runs no kernels (executor {d.executor!r})"
    if kernel not in d.kernels:
        return "kernel", f"does not have the kernel {kernel}"
    if not has_accelerator(needs, d):
        wanted = needs.accelerator
        if (wanted == "gpu" and d.accelerators) or wanted in d.accelerators:
            mb = needs.accelerator_mb
            return (
                "accelerator",
                f"its {d.accelerator_label} has less than the {mb:.0f} MB it needs",
            )
        wanted = "cuda or mps" if wanted == "gpu" else wanted
        has = f" (it has {d.accelerator_label})" if d.accelerators else ""
        return "accelerator", f"has no {wanted} accelerator{has}"
    if d.memory_free_mb < needs.memory_mb:
        return "memory", f"{d.memory_free_mb:.0f} MB free, needs {needs.memory_mb:.0f} MB"
    if d.on_battery and needs.energy != "tiny":
        floor = config.floor(needs.energy, d.role)
        assert d.battery_percent is not None
        if d.battery_percent < floor:
            return "battery", (
                f"on battery at {d.battery_percent:.0f}%, below the {floor:.0f}% floor "
                f"for {needs.energy} work"
            )
    if d.id in failed:
        return "failed", f"failed this run: {failed[d.id]}"
    return None


def _reference_score(
    kernel: str, needs: Needs, d: DeviceView, work: float, config: PolicyConfig
) -> tuple[object, ...]:
    speed = config.speed[d.role] * (1.0 - config.load_slowdown * d.cpu_percent / 100.0)
    compute = work / speed
    if d.local:
        network = 0.0
    else:
        rtt = config.unknown_rtt_s if d.rtt_s is None else d.rtt_s
        network = rtt + config.remote_overhead_s
    queue = d.queue * compute
    latency = network + queue + compute
    energy = compute * config.watts[d.role]
    if d.on_battery:
        battery = d.battery_percent if d.battery_percent is not None else 0.0
        price = config.battery_price + config.battery_drain_price * (100.0 - battery)
    else:
        price = 1.0
    cost = latency + config.joule_s * energy * price
    if needs.stateful and d.on_battery:
        cost += config.stateful_battery_s
    over = latency > needs.latency_budget_s
    return (d, cost, latency, network, queue, compute, energy, price, over, kernel, False)


def _reference_place(
    kernel: str,
    needs: Needs,
    view: list[DeviceView],
    config: PolicyConfig,
    work: float,
    failed: dict[str, str],
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    candidates, excluded = [], []
    for d in view:
        out = _reference_rule(kernel, needs, d, config, failed)
        if out is None:
            candidates.append(_reference_score(kernel, needs, d, work, config))
        else:
            excluded.append((d, *out))
    candidates.sort(key=lambda c: (c[8], c[1], c[0].id))  # type: ignore[attr-defined]
    excluded.sort(key=lambda e: e[0].id)  # type: ignore[attr-defined]
    return candidates, excluded


def _on_the_edges(view: list[DeviceView], rng: random.Random) -> list[DeviceView]:
    """``view`` with batteries on round figures (some exactly on a floor)."""
    out = []
    for d in view:
        if d.battery_percent is not None and rng.random() < 0.5:
            d = replace(d, battery_percent=float(rng.choice(range(0, 101, 10))))
        if rng.random() < 0.3:
            kinds = rng.choice([("cuda",), ("mps",), ("cuda", "mps")])
            d = replace(d, accelerators=kinds, accelerator_mb=rng.choice([0.0, 8192.0, 24576.0]))
        out.append(d)
    return out


fast_needs = st.builds(
    Needs,
    scope=st.sampled_from(SCOPES),
    energy=st.sampled_from(ENERGY_CLASSES),
    memory_mb=st.floats(0, 4000) | st.sampled_from([100.0, 32000.0]),
    accelerator=st.none() | st.none() | st.sampled_from(["gpu", "cuda", "mps"]),
    accelerator_mb=st.just(0.0),
    latency_budget_s=st.floats(0.01, 2),
    stateful=st.booleans(),
    compute_s=st.floats(0, 5),
)
round_floors = st.sampled_from([float(f) for f in range(0, 101, 10)])


@settings(max_examples=300)
@given(
    st.sampled_from(("embed", "classify", "echo", "heavy")),
    fast_needs,
    st.integers(1, 60),
    st.builds(PolicyConfig, floor_small=round_floors, floor_medium=round_floors),
    st.none() | st.floats(0, 10),
    st.integers(0, 2**32),
)
def test_the_fast_policy_decides_exactly_as_the_plain_one(kernel, needs, n, config, work, seed):
    rng = random.Random(seed)
    view = _on_the_edges(random_view(rng, max(n, rng.randrange(1, 60))), rng)
    failed = {d.id: f"reason {i}" for i, d in enumerate(view) if rng.random() < 0.1}
    decision = place(kernel, needs, view, config=config, compute_s=work, failed=failed)
    chosen = decision.device  # read before the explanation: the deferred path
    ok = decision.ok
    expected, ruled_out = _reference_place(
        kernel, needs, view, config, needs.compute_s if work is None else work, failed
    )
    assert [tuple(c) for c in decision.candidates] == expected
    assert [tuple(e) for e in decision.excluded] == ruled_out
    assert chosen is (expected[0][0] if expected else None)
    assert ok == bool(expected)
    for d in view:  # admit is the same filter, one device at a time
        one = admit(kernel, needs, d, config=config, failed=failed)
        assert (None if one is None else tuple(one)) == next(
            (e for e in ruled_out if e[0] is d), None
        )


def test_the_fast_policy_on_views_of_a_hundred_devices():
    for seed in range(30):
        view = random_view(random.Random(seed), 100)
        for kernel, needs in (("embed", EMBED.needs), ("heavy", Needs(energy="large"))):
            config = DEFAULT_CONFIG
            decision = place(kernel, needs, view, config=config, compute_s=0.3)
            expected, ruled_out = _reference_place(kernel, needs, view, config, 0.3, {})
            assert [tuple(c) for c in decision.candidates] == expected
            assert [tuple(e) for e in decision.excluded] == ruled_out


# ---- calibration from performance counters -------------------------------------------------------


def test_calibration_learns_a_device_s_true_speed_and_the_policy_uses_it():
    view = [laptop(local=True, rtt_s=0.0), server(rtt_s=0.003)]
    needs = Needs(energy="large", compute_s=2.0)
    assert names(place("heavy", needs, view)) == ["server", "laptop"]
    calibration = Calibration()
    # cold start: the declaration, unscaled (the same decision as without one)
    assert place("heavy", needs, view, calibration=calibration) == place("heavy", needs, view)
    rng = random.Random(1)
    for _ in range(40):
        decision = place("heavy", needs, view, calibration=calibration)
        # the server is secretly three times slower than its role says; runs vary by 10%
        chosen = decision.check()
        truth = 3.0 if chosen.device.name == "server" else 1.0
        observed = chosen.compute_s / calibration.ratios.get(("heavy", chosen.device.id), 1.0)
        calibration.observe(
            "heavy", chosen.device.id, chosen.compute_s, observed * truth * rng.uniform(0.9, 1.1)
        )
    learnt = calibration.estimates[("heavy", "server-id")]
    assert learnt.ratio == pytest.approx(3.0, rel=0.1)
    assert learnt.runs == 1  # one run taught it: the server was never chosen again
    assert calibration.estimates[("heavy", "laptop-id")].runs == 39
    # it now knows the laptop is faster for this kernel, and says so in the figures
    decision = place("heavy", needs, view, calibration=calibration)
    assert names(decision) == ["laptop", "server"]
    server_now = next(c for c in decision.candidates if c.device.name == "server")
    plain = next(c for c in place("heavy", needs, view).candidates if c.device.name == "server")
    assert server_now.compute_s == pytest.approx(plain.compute_s * learnt.ratio)
    rows = {(r["kernel"], r["device"]): r for r in calibration.stats()}
    assert rows[("heavy", "server-id")]["runs"] == learnt.runs


def test_a_device_shunned_after_slow_runs_is_tried_again_and_wins_back_its_work():
    """Exploration: the server ran 3 x slow once (a hog), so the laptop got every run; the hog is
    gone, and only a new run on the server can say so. Decisions without it age its evidence
    back toward the declaration until it is picked, measured, and chosen again for good."""
    view = [laptop(local=True, rtt_s=0.0), server(rtt_s=0.003)]
    needs = Needs(energy="large", compute_s=2.0)
    calibration = Calibration(explore_after=10)
    hog = True
    picks = []
    for _ in range(80):
        chosen = place("heavy", needs, view, calibration=calibration).check()
        calibration.passed_over("heavy", chosen.device.id)
        picks.append(chosen.device.name)
        truth = 3.0 if chosen.device.name == "server" and hog else 1.0
        declared = chosen.compute_s / calibration.ratios.get(("heavy", chosen.device.id), 1.0)
        calibration.observe("heavy", chosen.device.id, chosen.compute_s, declared * truth)
        if chosen.device.name == "server":
            hog = False  # its first run met the hog; it left after
    first_back = picks.index("server", 1)
    assert picks[0] == "server"
    assert 10 < first_back <= 40  # aged 3 times (3 -> 1.73 -> 1.32 -> 1.15): then it wins
    assert set(picks[1:first_back]) == {"laptop"}
    assert set(picks[first_back:]) == {"server"}  # measured fast again: it keeps the work
    assert calibration.estimates[("heavy", "server-id")].ratio < 1.5
    # with nothing to age (the server never ran slow) passing over changes nothing
    fresh = Calibration(explore_after=1)
    fresh.observe("heavy", "server-id", 1.0, 0.5)
    for _ in range(5):
        fresh.passed_over("heavy", "laptop-id")
    assert fresh.ratios[("heavy", "server-id")] == 0.5


def test_calibration_weighs_runs_as_a_mean_then_exponentially():
    c = Calibration(alpha=0.25)
    for x in (2.0, 4.0, 6.0, 8.0):  # the first 1/alpha runs: a plain mean
        c.observe("k", "d", 1.0 * c.ratios.get(("k", "d"), 1.0), x)
    assert c.ratios[("k", "d")] == pytest.approx(5.0)
    assert c.estimates[("k", "d")].sd > 1.0
    c.observe("k", "d", 5.0, 10.0)  # then alpha: 5 + 0.25 * (10 - 5)
    assert c.ratios[("k", "d")] == pytest.approx(6.25)
    c.observe("k", "d", 0.0, 1.0)  # a run without a prediction teaches nothing
    assert c.estimates[("k", "d")].runs == 5
    with pytest.raises(InvalidArgument, match="alpha"):
        Calibration(alpha=0.0)
