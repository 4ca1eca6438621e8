"""``swarm simulate learn``: a real learning job across the day's devices in virtual time.

Short runs (minutes of simulated time, rounds every 30 s): the job's accuracy rises, no device
spends past its budget, every record trains on one device, the phone on cellular pays for the
rounds in radio time; the same seed replays the same trace; the record invariant catches a
planted bug (every device training on all the records of a replicated task); and the job's
epsilon and trust are the scenario's options (``--trust none --epsilon 2``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

import homeswarm.learning
from homeswarm.errors import InvalidArgument
from homeswarm.learning import Digits, Records, Split
from homeswarm.simulations import Result, Run, simulate, write_outputs
from homeswarm.simulations._learn import EPSILON, run_learn


@pytest.fixture(autouse=True, scope="module")
def _warm() -> None:
    """The noise search the coordinator runs first (seconds, remembered per process)."""
    from homeswarm.learning import noise_for

    noise_for(epsilon=EPSILON, delta=1e-5, sample_rate=0.1, steps=10)


def test_a_job_learns_across_the_days_devices_within_every_budget(tmp_path):
    result = simulate("learn", peers=3, hours=0.1, seed=3)
    m = result.metrics
    assert result.invariants["violations"] == []
    assert result.invariants["checked"] > 10
    assert m["rounds"] >= 8
    assert m["accuracy_start"] < 0.3  # ten classes: about a tenth before any round
    assert m["accuracy_end"] > 0.6
    assert m["coordinator"] in ("laptop", "server")  # plugged in: the policy's choice
    devices = m["devices"]
    assert set(devices) == {"phone", "laptop", "server"}
    held_out = len(Digits().split(["x"], alpha=0.5, seed=0).test)
    assert sum(d["records"] for d in devices.values()) == 1797 - held_out  # each once
    for name, d in devices.items():
        assert 0 < d["epsilon_spent"] <= EPSILON, name
        assert d["steps"] >= 8, name
        assert d["compute_s"] > 0, name
        assert d["compute_wh"] > 0, name
        assert d["learning_wh"] >= d["compute_wh"], name
    # at 9:00 the phone is away, on cellular: every round keeps its radio up a while
    assert devices["phone"]["radio_wh"] > 10 * devices["phone"]["compute_wh"]
    assert devices["server"]["radio_wh"] == 0.0
    # the phone is the slowest: the same kind of work takes it longest per step
    per_step = {n: d["compute_s"] / d["steps"] / max(d["records"], 1) for n, d in devices.items()}
    assert per_step["phone"] > per_step["laptop"] > per_step["server"]
    assert json.loads(json.dumps(result.as_json())) == result.as_json()
    written = {p.name for p in write_outputs(result, tmp_path)}
    assert {"learn.png", "battery.png", "result.json"} <= written
    series = json.loads((tmp_path / "series.json").read_text())
    assert len(series["learn_accuracy"]) >= 5
    assert set(series["learn_epsilon"]) == {"phone", "laptop", "server"}


def test_the_same_seed_replays_the_same_job():
    a = simulate("learn", peers=2, hours=0.03, seed=7)
    b = simulate("learn", peers=2, hours=0.03, seed=7)
    assert a.metrics["rounds"] >= 1
    assert a.trace_digest == b.trace_digest
    assert a.metrics["accuracy_end"] == b.metrics["accuracy_end"]
    assert a.metrics["devices"]["phone"]["epsilon_spent"] > 0


class Replicated(Digits):
    """digits as a replicated vault holds it: every device holds every training record."""

    def split(self, devices: list[str], *, alpha: float, seed: int) -> Split:
        whole = super().split(["all"], alpha=alpha, seed=seed)
        records: Records = whole.devices["all"]
        return Split(dict.fromkeys(devices, records), whole.test)


def _replicated_run() -> Result:
    def tasks(name: str) -> Any:
        assert name == "digits"
        return Replicated()

    async def body(sim: Run) -> None:
        await run_learn(sim, tasks=tasks)

    return Run("learn", 3, 1, 0.03 * 3600, 0.0, None, None).execute(body)


def test_a_replicated_record_trains_on_one_device_only():
    result = _replicated_run()
    assert result.invariants["violations"] == []
    devices = result.metrics["devices"]
    held_out = len(Digits().split(["x"], alpha=0.5, seed=0).test)
    assert sum(d["records"] for d in devices.values()) == 1797 - held_out
    assert all(d["records"] > 300 for d in devices.values())  # shared out, about a third each


def test_the_record_invariant_catches_devices_that_train_on_the_same_record(monkeypatch):
    """The planted bug: each device keeps every record it holds (what the service did when it
    chose owners among its own holdings only)."""
    planted: Callable[[Any], dict[str, frozenset[str]]] = lambda holdings: {  # noqa: E731
        d: frozenset(ids) for d, ids in holdings.items()
    }
    monkeypatch.setattr(homeswarm.learning, "assign_owners", planted)
    result = _replicated_run()
    kinds = {v["invariant"] for v in result.invariants["violations"]}
    assert kinds == {"learn-record"}


def test_trust_none_keeps_the_invariants_and_spends_the_jobs_own_epsilon():
    """``swarm simulate learn --trust none --epsilon 2``: the masked job across the day's
    devices; every device that took part in every round ends at the job's epsilon (the noise
    is found so that the rounds spend exactly it), none past it."""
    result = simulate("learn", peers=3, hours=0.1, seed=3, options={"trust": "none", "epsilon": 2})
    m = result.metrics
    assert result.invariants["violations"] == []
    assert (m["trust"], m["epsilon_target"], m["task"]) == ("none", 2.0, "digits")
    assert m["rounds"] == m["rounds_planned"]
    assert m["accuracy_end"] > m["accuracy_start"] + 0.3
    for name, d in m["devices"].items():
        assert 0 < d["epsilon_spent"] <= 2.0, name
        if d["steps"] == m["rounds"]:  # it took part in every round: its budget is spent
            assert d["epsilon_spent"] == pytest.approx(2.0, abs=0.01), name
            assert d["state"] == "out of budget", name
    assert max(d["steps"] for d in m["devices"].values()) == m["rounds"]
    assert result.replay.endswith("--hours 0.1 --epsilon 2 --trust none --task digits")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epsilon": 0}, "--epsilon must be a number above 0"),
        ({"trust": "some"}, "--trust must be swarm or none"),
        ({"task": "nope"}, "unknown learning task 'nope'"),
        ({"task": "intents"}, "--task intents: it trains on the vault"),
    ],
)
def test_the_learn_options_are_checked_in_one_line(options, message):
    with pytest.raises(InvalidArgument, match=message):
        simulate("learn", peers=3, hours=0.1, options=options)
    with pytest.raises(InvalidArgument, match="the gossip scenario takes no --epsilon"):
        simulate("gossip", options={"epsilon": 2.0})
