"""The fault-schedule sweep: many seeds, each a random schedule of partitions, isolations,
crashes, pauses, loss bursts and clock skew over a small swarm, each checked by the invariants.
A failing seed names the command that replays it. ``SWARM_SWEEP=N`` runs N seeds instead. The
vault scenario with a store wiped after the schedule (the reported failure) closes it."""

from __future__ import annotations

import os

import pytest

from homeswarm.simulations import simulate
from homeswarm.swarm._membership import Membership

SEEDS = int(os.environ.get("SWARM_SWEEP", "300"))
PEERS = 4
HOURS = 0.03  # 108 s of faults, then up to 90 s to agree again
CHUNKS = 10  # the seeds in this many tests, so that pytest-xdist's workers share them


def run(seed: int) -> list[str]:
    r = simulate("faults", peers=PEERS, seed=seed, hours=HOURS)
    return [
        f"at {v['at_s']}s {v['invariant']}: {v['detail']}  (replay: {r.replay})"
        for v in r.invariants["violations"]
    ]


@pytest.mark.sweep  # coverage traces chunk 0 only (tests/conftest.py)
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_fault_schedules_keep_the_invariants(chunk):
    failures = []
    for seed in range(chunk, SEEDS, CHUNKS):
        failures += run(seed)
    assert not failures, "\n".join(failures[:20])


def test_the_sweep_catches_a_planted_bug(monkeypatch):
    """A peer that never refutes a suspicion about itself: live members end up dead for good."""
    monkeypatch.setattr(Membership, "_refute", lambda self, incarnation, now: None)
    caught = [seed for seed in range(10) if run(seed)]
    assert len(caught) >= 5, caught
    message = run(caught[0])[0]
    assert f"swarm simulate faults --peers {PEERS} --seed {caught[0]}" in message


# ---- a wiped store ------------------------------------------------------------------------------

WIPED = (115, 0, 1, 2)  # 115: the seed of the report (d1 wiped after the schedule did not agree)


@pytest.mark.parametrize("seed", WIPED)
def test_a_store_wiped_after_the_schedule_keeps_the_vault_invariants(seed, monkeypatch):
    """The vault scenario with its wipe moved to where it was reported: d1 crashes at the end of
    the fault schedule, its disk emptied, and restarts half a second later with an empty store
    (the scenario's own sweep, ``test_sim_vault``, draws a wipe in every run at a random time)."""
    from homeswarm.simulations import _vault
    from homeswarm.simulations._faults import Fault

    def at_the_end(rng, n, seconds, faults):
        return [*faults, Fault(seconds - 0.001, "wipe", (1,), 0.5)]

    monkeypatch.setattr(_vault, "with_wipe", at_the_end)
    r = simulate("vault", peers=PEERS, seed=seed, hours=0.01)
    problems = [
        f"at {v['at_s']}s {v['invariant']}: {v['detail']}" for v in r.invariants["violations"]
    ]
    assert r.metrics["wipes"] == 1, "the wipe was played"
    assert not problems, "\n".join(problems)
    assert r.metrics["replicas_agree"]
    assert r.metrics["writes_lost"] == 0
