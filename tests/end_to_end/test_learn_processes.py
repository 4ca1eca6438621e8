"""Federated learning on the demo swarm, as a new user tries it: real `swarm up` processes
(server, laptop, phone) on loopback, the laptop and server running Ray, the phone inline.

`swarm learn start digits --epsilon 4` trains across the three; `swarm learn status --json`
shows the accuracy rising, each device's epsilon, and where each device's local step ran: in a
Ray worker on the laptop and the server, inline on the phone; the steps are counted as kernel
runs (`swarm status`'s held kernels: `dp-step`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from homeswarm.swarm._control import ask

pytest.importorskip("ray")

pytestmark = pytest.mark.slow

ROUNDS = 8


def test_the_demo_swarm_learns_with_ray_on_laptop_and_server(demo, cli, wait_until):
    server, laptop, phone = demo.homes
    code, out, err = cli(
        "learn", "start", "digits", "--epsilon", "4", "--rounds", str(ROUNDS),
        "--json", "--home", str(laptop),
    )  # fmt: skip
    assert code == 0, err
    job = json.loads(out)["job"]

    def learn_status() -> dict[str, Any]:
        code, out, err = cli("learn", "status", job, "--json", "--home", str(laptop))
        assert code == 0, err
        got: dict[str, Any] = json.loads(out)
        return got

    # Ray starts at the laptop's and the server's first step (seconds): those steps answer
    # after the round stopped waiting, and are declined without spending
    done = ("starting", "running")
    wait_until(lambda: learn_status()["state"] not in done, "the job done", 300, every=0.5)
    status = learn_status()
    assert status["state"] == "done", status
    assert status["round"] == ROUNDS
    assert status["accuracy"] > 0.3  # a tenth before the first round
    rows = {d["name"]: d for d in status["devices"]}
    assert {name: row["executor"] for name, row in rows.items()} == {
        "server": "ray",
        "laptop": "ray",
        "phone": "inline",
    }
    for name, row in rows.items():
        assert 0 < row["epsilon_spent"] <= 4.0, (name, row)
    # each device's steps are runs of the dp-step kernel on its own executor
    for home, executor in ((server, "ray"), (laptop, "ray"), (phone, "inline")):
        held = ask(home, "status")["kernels"]["held"]
        mine = [h for h in held if h["kernel"] == "dp-step" and h["heard_s"] == 0.0]
        assert [h["executor"] for h in mine] == [executor], (home.name, held)
        assert mine[0]["runs"] >= 1
