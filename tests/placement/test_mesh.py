"""The kernel mesh: a columnar registry of long-lived instances, placed in batches exactly as the
policy would place them one by one (so never where the policy would not), re-placed after a
death, rebalanced after a power change."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeswarm.errors import InvalidArgument
from homeswarm.kernels import ENERGY_CLASSES, SCOPES, Needs
from homeswarm.placement import MESH_STATES, DeviceView, Mesh, admit, place
from homeswarm.placement.testing import laptop, phone, random_view, server

KERNELS = ("embed", "classify", "echo", "heavy")


def sequential(
    groups: list[tuple[str, Needs, int]], view: list[DeviceView]
) -> dict[tuple[int, str], int]:
    """What ``place`` does, one instance at a time: each on a view where the devices chosen so far
    carry one more in their queue and that much less free memory. By (group, device id)."""
    count = {d.id: 0 for d in view}
    used = {d.id: 0.0 for d in view}
    out: dict[tuple[int, str], int] = {}
    for g, (kernel, needs, n) in enumerate(groups):
        for _ in range(n):
            loaded = [
                replace(
                    d,
                    queue=d.queue + count[d.id],
                    memory_free_mb=max(0.0, d.memory_free_mb - used[d.id]),
                )
                if count[d.id]
                else d
                for d in view
            ]
            chosen = place(kernel, needs, loaded).device
            if chosen is None:
                break
            count[chosen.id] += 1
            used[chosen.id] += needs.memory_mb
            out[(g, chosen.id)] = out.get((g, chosen.id), 0) + 1
    return out


def whole_view(rng: random.Random, n: int) -> list[DeviceView]:
    """A random view with whole megabytes (so memory sums are exact either way)."""
    return [replace(d, memory_free_mb=float(rng.randrange(0, 3000))) for d in random_view(rng, n)]


needs_ = st.builds(
    Needs,
    scope=st.sampled_from(SCOPES),
    energy=st.sampled_from(ENERGY_CLASSES),
    memory_mb=st.integers(0, 600).map(float),
    latency_budget_s=st.sampled_from([0.05, 0.3, 1.0, 5.0]),
    stateful=st.booleans(),
    compute_s=st.sampled_from([0.0, 0.01, 0.2, 1.0]),
)
groups_ = st.lists(
    st.tuples(st.sampled_from(KERNELS), needs_, st.integers(0, 60)), min_size=1, max_size=4
)


@settings(max_examples=60, deadline=None)
@given(groups_, st.integers(1, 12), st.integers(0, 2**32))
def test_a_batch_places_exactly_as_the_policy_would_one_by_one(groups, n, seed):
    rng = random.Random(seed)
    view = whole_view(rng, n)
    mesh = Mesh()
    ids = [mesh.add(kernel, needs, count) for kernel, needs, count in groups]
    change = mesh.place(view)
    # specs registered twice form one group, placed where first registered
    merged: dict[tuple[str, Needs], int] = {}
    for kernel, needs, count in groups:
        merged[(kernel, needs)] = merged.get((kernel, needs), 0) + count
    order = list(merged)
    expected = sequential([(k, nd, c) for (k, nd), c in merged.items()], view)
    home = mesh.column("home")
    got: dict[tuple[int, str], int] = {}
    devices = [d.id for d in view]
    for (kernel, needs, _), group in zip(groups, ids, strict=True):
        g = order.index((kernel, needs))
        for j in home[group].tolist():
            if j >= 0:
                got[(g, devices[j])] = got.get((g, devices[j]), 0) + 1
    assert got == expected
    assert sum(change.placed.values()) + change.parked == len(mesh)
    # and so nothing breaks a rule the policy keeps: each home admits its instances, and the
    # memory they take fits in what the device had free
    by_id = {d.id: d for d in view}
    state = mesh.column("state")
    taken: dict[str, float] = {}
    for i in range(len(mesh)):
        row = mesh.instance(i)
        if row["home"] is None:
            assert row["state"] == "parked"
            continue
        assert row["state"] == "running"
        d = by_id[row["home"]]
        assert admit(row["kernel"], row["needs"], d) is None
        taken[d.id] = taken.get(d.id, 0.0) + row["needs"].memory_mb
    for device, memory in taken.items():
        assert memory <= by_id[device].memory_free_mb
    assert set(np.unique(state).tolist()) <= {0, 1}


def three(**battery: float) -> list[DeviceView]:
    return [
        laptop(local=True, rtt_s=0.0, memory_free_mb=1e6),
        server(memory_free_mb=1e6),
        phone(memory_free_mb=1e6, battery_percent=battery.get("phone", 82.0)),
    ]


def test_the_instances_of_a_dead_device_move_and_settle():
    view = three()
    mesh = Mesh()
    mesh.add("embed", Needs(scope="personal", energy="small", memory_mb=1), 3000)
    mesh.add("classify", Needs(scope="private", energy="medium", memory_mb=2), 1000)
    first = mesh.place(view)
    assert first.parked == 0
    on_server = mesh.on("server-id")
    assert len(on_server) > 0
    dead = [replace(d, status="dead") if d.name == "server" else d for d in view]
    change = mesh.replace_dead(dead, "server-id")
    assert change.moved == len(on_server)
    assert sum(change.placed.values()) == len(on_server)
    assert len(mesh.on("server-id")) == 0
    states = {MESH_STATES[s] for s in mesh.column("state")[on_server].tolist()}
    assert states == {"migrating"}
    # private work never lands on the phone, even with the server gone
    for row in (mesh.instance(int(i)) for i in on_server):
        if row["scope"] == "private":
            assert row["home"] == "laptop-id"
    mesh.settle(on_server)
    assert set(mesh.column("state").tolist()) == {1}
    with pytest.raises(InvalidArgument, match="running cannot be settled"):
        mesh.settle(on_server[:1])
    with pytest.raises(InvalidArgument, match="alive"):
        mesh.replace_dead(view, "server-id")


def test_stopped_instances_leave_their_homes_and_every_batch():
    view = three()
    mesh = Mesh()
    needs = Needs(scope="personal", energy="small", memory_mb=1)
    mesh.add("embed", needs, 100)
    mesh.add("classify", Needs(scope="public", energy="small", memory_mb=1), 10)
    mesh.place(view)
    before = mesh.counts()
    stopped = mesh.stop("embed", 30)
    assert stopped.tolist() == list(range(70, 100))  # the newest first
    assert mesh.live() == 80
    assert sum(mesh.counts().values()) == sum(before.values()) - 30
    assert {mesh.instance(int(i))["home"] for i in stopped} == {None}
    assert sum(r["instances"] for r in mesh.ps()) == 80
    assert "stopped" not in {r["state"] for r in mesh.ps()}
    # a death, a rebalance, a new batch: none of them places a stopped instance again
    dead = [replace(d, status="dead") if d.name == "server" else d for d in view]
    mesh.replace_dead(dead, "server-id")
    mesh.rebalance(dead)
    mesh.add("embed", needs, 5)
    mesh.place(view)
    assert {mesh.instance(int(i))["state"] for i in stopped} == {"stopped"}
    assert len(mesh.stop("embed")) == 75  # the rest, and the 5 new ones
    assert mesh.live() == 10
    assert len(mesh.stop("embed")) == 0
    assert len(mesh.stop("nothing")) == 0
    assert sum(mesh.counts().values()) == 10


def test_a_phone_unplugged_below_its_floor_sheds_all_but_tiny_work():
    view = [phone(local=True, rtt_s=0.0, memory_free_mb=1e6, plugged=True), server()]
    mesh = Mesh()
    tiny = mesh.add("echo", Needs(scope="personal", energy="tiny", memory_mb=0), 50)
    medium = mesh.add("embed", Needs(scope="personal", energy="medium", memory_mb=0), 50)
    mesh.place(view)
    assert len(mesh.on("phone-id")) > 0
    phone_medium = [i for i in medium.tolist() if mesh.instance(i)["home"] == "phone-id"]
    assert phone_medium  # plugged in, the phone is cheap enough to take some
    unplugged = [replace(view[0], plugged=False, battery_percent=30.0), view[1]]
    change = mesh.rebalance(unplugged)
    assert change.moved == len(phone_medium)
    assert all(mesh.instance(i)["home"] == "server-id" for i in medium.tolist())
    # tiny work has no floor: it stays where it was
    assert all(mesh.instance(i)["state"] == "running" for i in tiny.tolist())
    # the server dies too: the medium work has nowhere to go and parks; back up, it returns
    gone = [unplugged[0], replace(server(), status="dead")]
    mesh.replace_dead(gone, "server-id")
    parked = [i for i in medium.tolist() if mesh.instance(i)["state"] == "parked"]
    assert sorted(parked) == medium.tolist()
    again = mesh.rebalance(unplugged)
    assert again.placed == {"server": 50}
    assert again.parked == 0


def test_a_phone_going_light_hands_its_stateful_instances_over_first():
    view = [phone(local=True, rtt_s=0.0, plugged=True, memory_free_mb=1e6), server()]
    mesh = Mesh()
    stateful = mesh.add("echo", Needs(scope="personal", memory_mb=0, stateful=True), 40)
    stateless = mesh.add("classify", Needs(scope="personal", memory_mb=0), 40)
    mesh.place(view)
    on_phone = {i for i in stateful.tolist() if mesh.instance(i)["home"] == "phone-id"}
    assert on_phone  # a plugged-in full member is a fine home
    kept = {i for i in stateless.tolist() if mesh.instance(i)["home"] == "phone-id"}
    change = mesh.rebalance([replace(view[0], light=True), view[1]])  # it left the Wi-Fi
    assert change.moved == len(on_phone)
    assert all(mesh.instance(i)["home"] == "server-id" for i in stateful.tolist())
    assert {i for i in stateless.tolist() if mesh.instance(i)["home"] == "phone-id"} == kept


def test_the_registry_is_columns_of_a_few_bytes_an_instance():
    mesh = Mesh()
    for i in range(10):
        mesh.add(f"k{i}", Needs(memory_mb=0.5), 20_000)
    assert len(mesh) == 200_000
    assert mesh.bytes_per_instance() <= 200
    assert mesh.bytes_per_instance() < 24  # 12 bytes of columns, with room to grow
    kernels = tuple(f"k{i}" for i in range(10))
    view = [server(f"s{i}", memory_free_mb=1e9, kernels=kernels) for i in range(10)]
    assert mesh.place(view).parked == 0
    rows = mesh.ps()
    assert sum(r["instances"] for r in rows) == len(mesh)
    assert {r["state"] for r in rows} == {"running"}
    assert {r["device_id"] for r in rows} == {d.id for d in view}


def test_bad_arguments_are_one_clear_error():
    mesh = Mesh()
    with pytest.raises(InvalidArgument, match="count"):
        mesh.add("echo", Needs(), -1)
    ids = mesh.add("echo", Needs(), 2)
    mesh.place([server()])
    with pytest.raises(InvalidArgument, match="only parked"):
        mesh.place([server()], ids)
    with pytest.raises(InvalidArgument, match="no instance"):
        mesh.instance(5)


def test_the_registry_outlives_the_process_and_refuses_what_is_not_one():
    view = three()
    mesh = Mesh()
    small = Needs(scope="personal", energy="small", memory_mb=1)
    mesh.add("embed", small, 50)
    mesh.add("classify", Needs(scope="private", energy="medium", memory_mb=2), 20)
    mesh.add("embed", small.with_scope("private"), 5)
    mesh.place(view)
    mesh.stop("classify", 8)
    again = Mesh.restore(mesh.registry())
    assert len(again) == len(mesh) == 75
    assert again.live() == mesh.live() == 67
    for i in range(75):
        before, after = mesh.instance(i), again.instance(i)
        assert (after["kernel"], after["needs"]) == (before["kernel"], before["needs"])
        assert after["state"] == ("stopped" if before["state"] == "stopped" else "parked")
        assert after["home"] is None
    change = again.place(view)  # placed again on the view of now, exactly as a new batch
    assert sum(change.placed.values()) == 67
    assert sum(again.counts().values()) == 67
    assert Mesh.restore(Mesh().registry()).live() == 0
    good = mesh.registry()
    for bad in (b"", b"junk", good[:-9], good[:40] + bytes(64) + good[104:]):
        with pytest.raises(InvalidArgument) as caught:
            Mesh.restore(bad)
        assert "\n" not in str(caught.value)
