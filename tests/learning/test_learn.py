"""Learning: records and owners, the privacy ledger, masks, and rounds with faults."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from homeswarm.errors import InvalidArgument, InvalidConfig, ProtocolViolation
from homeswarm.learning import (
    Coordinator,
    Digits,
    Faults,
    Ledger,
    Mechanism,
    Records,
    RoundStart,
    Update,
    assign_owners,
    dirichlet_split,
    from_wire,
    get_task,
    noise_for,
    params_bytes,
    secagg,
    spent_epsilon,
    successor,
)

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from homeswarm.learning._jobs import federation, prepare  # noqa: E402

DEVICES = ["dev-a", "dev-b", "dev-c", "dev-d"]


@pytest.fixture(scope="module")
def small():
    """digits across four devices, cut to 30 records each: a tiny, fast job."""
    task = Digits()
    split = task.split(DEVICES, alpha=100.0, seed=1)
    for device, records in split.devices.items():
        split.devices[device] = records.only(records.ids[:30])
    return task, split


def make(small, trust="swarm", *, epsilon=50.0, sigma=1.0, faults=None, home=None, seed=0, q=0.2):
    task, split = small
    job = prepare(task, split, epsilon=epsilon, delta=1e-5, seed=seed, home=home)
    mechanism = Mechanism(trust, q, 1.0, sigma, 0.5, min_survivors=2)
    return job, federation(job, mechanism, seed=seed, faults=faults)


# records and owners


def test_digits_split_gives_every_record_to_one_device_with_a_skew():
    task = get_task("digits")
    split = task.split([f"d{i}" for i in range(10)], alpha=0.5, seed=3)
    ids = [rid for r in split.devices.values() for rid in r.ids]
    assert len(ids) == len(set(ids))
    assert not set(ids) & set(split.test.ids)
    assert len(ids) + len(split.test) == 1797
    # a label skew: some device lacks some classes
    assert any(len(set(r.y.tolist())) < 10 for r in split.devices.values())
    again = task.split([f"d{i}" for i in range(10)], alpha=0.5, seed=3)
    assert again.devices["d4"].ids == split.devices["d4"].ids
    other = task.split([f"d{i}" for i in range(10)], alpha=0.5, seed=4)
    assert other.devices["d4"].ids != split.devices["d4"].ids


def test_dirichlet_split_refuses_nonsense():
    with pytest.raises(InvalidArgument):
        dirichlet_split([0, 1], 0, 0.5, 0)
    with pytest.raises(InvalidArgument):
        dirichlet_split([0, 1], 2, 0.0, 0)
    with pytest.raises(InvalidArgument, match="unknown learning task 'nope'"):
        get_task("nope")


def test_a_replicated_record_trains_on_exactly_one_device():
    rng = np.random.default_rng(0)
    ids = [f"fact/{i}" for i in range(300)]
    holdings = {d: [i for i in ids if rng.random() < 0.6] for d in ["phone", "laptop", "server"]}
    owners = assign_owners(holdings)
    owned = [rid for d in owners for rid in owners[d]]
    assert len(owned) == len(set(owned))  # never two devices
    assert set(owned) == {i for held in holdings.values() for i in held}  # every held record
    for device, mine in owners.items():
        assert mine <= set(holdings[device])  # only what it holds
    # the same answer from any device's view, in any order
    assert assign_owners(dict(reversed(list(holdings.items())))) == owners
    with pytest.raises(InvalidArgument, match="twice"):
        Records(("a", "a"), np.zeros((2, 1)), np.zeros(2))


def test_a_job_trains_each_replicated_record_once(small):
    task, split = small
    devices = dict(split.devices)
    a, b = devices["dev-a"], devices["dev-b"]
    # dev-b also holds dev-a's first ten records (replicated), with the same ids
    devices["dev-b"] = Records(
        a.ids[:10] + b.ids, np.concatenate([a.x[:10], b.x]), np.concatenate([a.y[:10], b.y])
    )
    job = prepare(task, type(split)(devices, split.test), epsilon=1.0, delta=1e-5, seed=0)
    counts = {d: t.records for d, t in job.trainers.items()}
    assert sum(counts.values()) == sum(len(r) for r in split.devices.values())
    assert counts["dev-a"] + counts["dev-b"] == 60


# the ledger


def test_the_ledger_restored_spends_what_opacus_says(tmp_path):
    from opacus.accountants import RDPAccountant

    path = tmp_path / "dev-a" / "digits.privacy.json"
    ledger = Ledger.open(path, task="digits", device="dev-a", epsilon_budget=8.0, delta=1e-5)
    reference = RDPAccountant()
    steps = [(2.0, 0.05)] * 40 + [(3.0, 0.1)] * 7 + [(2.0, 0.05)] * 5
    for sigma, q in steps[:30]:
        ledger.spend(sigma, q)
        reference.step(noise_multiplier=sigma, sample_rate=q)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert not list(path.parent.glob("*.tmp"))
    restored = Ledger.open(path, task="digits", device="dev-a", epsilon_budget=99.0, delta=0.1)
    assert restored.epsilon_budget == 8.0
    assert restored.delta == 1e-5
    assert restored.epsilon == reference.get_epsilon(1e-5)
    for sigma, q in steps[30:]:
        restored.spend(sigma, q)
        reference.step(noise_multiplier=sigma, sample_rate=q)
    again = Ledger.open(path, task="digits", device="dev-a", epsilon_budget=8.0, delta=1e-5)
    assert again.history == reference.history
    assert again.steps == len(steps)
    assert again.epsilon == reference.get_epsilon(1e-5) > 0
    assert spent_epsilon("rdp", again.history, 1e-5) == again.epsilon


def test_a_broken_or_foreign_ledger_is_one_clear_error(tmp_path):
    path = tmp_path / "l.json"
    path.write_text("{not json")
    with pytest.raises(InvalidConfig, match="not a privacy ledger"):
        Ledger.open(path, task="digits", device="x", epsilon_budget=1.0, delta=1e-5)
    Ledger(path, "digits", "other", 1.0, 1e-5).save()
    with pytest.raises(InvalidConfig, match="not a privacy ledger"):
        Ledger.open(path, task="digits", device="x", epsilon_budget=1.0, delta=1e-5)


def test_the_ledger_never_steps_past_its_budget():
    sigma = noise_for(epsilon=1.0, delta=1e-5, sample_rate=0.1, steps=20)
    ledger = Ledger(None, "digits", "d", 1.0, 1e-5)
    taken = 0
    while ledger.affordable(sigma, 0.1):
        ledger.spend(sigma, 0.1)
        taken += 1
    assert 19 <= taken <= 21
    assert ledger.epsilon <= 1.0
    with pytest.raises(InvalidArgument, match="exceed"):
        ledger.spend(sigma, 0.1)


def test_a_restarted_device_stops_at_its_budget_across_the_restart(small, tmp_path):
    sigma = noise_for(epsilon=1.0, delta=1e-5, sample_rate=0.2, steps=8)
    job, fed = make(small, epsilon=1.0, sigma=sigma, home=tmp_path)
    for _ in range(5):
        fed.run_round()
    # every device restarts: new objects, the same ledgers on disk
    job, fed = make(small, epsilon=1.0, sigma=sigma, home=tmp_path)
    assert all(ledger.steps == 5 for ledger in job.ledgers.values())
    reports = [fed.run_round() for _ in range(6)]
    assert reports[-1].outcome.contributors == ()  # everyone out of budget, the job goes on
    for device, ledger in job.ledgers.items():
        assert ledger.epsilon <= 1.0, device
        assert ledger.steps in (7, 8, 9)
        assert fed.participants[device].state == "out of budget"


# masks


def _keys(devices):
    return {
        d: X25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i, d in enumerate(devices)
    }


def _seeds(keys, device, others, round=0):
    return {
        o: secagg.pair_seed(
            secagg.shared_secret(keys[device], keys[o].public_key()),
            job="j",
            round=round,
            pair=(device, o),
        )
        for o in others
        if o != device
    }


def test_masks_cancel_exactly_and_hide_each_update():
    keys = _keys(DEVICES)
    rng = np.random.default_rng(5)
    values = {d: rng.normal(0, 3, 200) for d in DEVICES}
    words = {d: secagg.masked(values[d], d, _seeds(keys, d, DEVICES)) for d in DEVICES}
    total = sum(words.values(), np.zeros(200, dtype=np.uint64))
    exact = sum((secagg.encode(v) for v in values.values()), np.zeros(200, dtype=np.uint64))
    assert np.array_equal(total, exact)  # bit for bit
    assert np.allclose(secagg.decode(total), sum(values.values()), atol=len(DEVICES) * 2.0**-24)
    # one masked update says nothing recognisable about its values
    assert abs(np.corrcoef(secagg.decode(words["dev-a"]), values["dev-a"])[0, 1]) < 0.2
    # the two ends of a pair agree on the seed; another round gets another one
    assert _seeds(keys, "dev-a", ["dev-b"])["dev-b"] == _seeds(keys, "dev-b", ["dev-a"])["dev-a"]
    assert _seeds(keys, "dev-a", ["dev-b"], 1) != _seeds(keys, "dev-a", ["dev-b"], 0)
    with pytest.raises(InvalidArgument):
        secagg.encode(np.array([np.nan]))


def test_a_dropped_devices_masks_are_recovered_from_the_survivors_seeds():
    keys = _keys(DEVICES)
    rng = np.random.default_rng(6)
    values = {d: rng.normal(0, 1, 50) for d in DEVICES}
    survivors = DEVICES[:3]  # dev-d masked nothing it sent: it dropped out
    total = sum(
        (secagg.masked(values[d], d, _seeds(keys, d, DEVICES)) for d in survivors),
        np.zeros(50, dtype=np.uint64),
    )
    revealed = {(s, "dev-d"): _seeds(keys, s, ["dev-d"])["dev-d"] for s in survivors}
    exact = sum((secagg.encode(values[d]) for d in survivors), np.zeros(50, dtype=np.uint64))
    assert not np.array_equal(total, exact)
    assert np.array_equal(secagg.unmask_dropped(total, revealed), exact)


# messages


@pytest.mark.parametrize(
    "data",
    [
        b"\x00garbage",
        b"",
        b"\x93\x01\xa6update\x90",
        b"\x93\x02\xa7decline\x94\xa1j\x00\xa1d\xa6budget",
    ],
)
def test_a_malformed_message_is_a_protocol_violation(data):
    with pytest.raises(ProtocolViolation):
        from_wire(data)


def test_messages_round_trip_and_check_their_fields():
    start = RoundStart("j", 3, 0, "a", "none", ("a", "b"), b"\x00" * 8, 0.1, 1.0, 1.1, 2)
    assert from_wire(start.to_wire()) == start
    with pytest.raises(ProtocolViolation, match="bad trust"):
        RoundStart("j", 3, 0, "a", "maybe", ("a",), b"", 0.1, 1.0, 1.1, 2)
    with pytest.raises(ProtocolViolation, match="bad participants"):
        RoundStart("j", 3, 0, "a", "none", ("a", "a"), b"", 0.1, 1.0, 1.1, 2)


# rounds


def test_a_record_counts_once_per_round_even_if_its_update_comes_twice(caplog):
    start = RoundStart(
        "j", 0, 0, "a", "swarm", ("a", "b"), params_bytes(np.zeros(3)), 0.5, 1.0, 0.0, 1
    )
    core = Coordinator(start, records={"a": 2, "b": 2}, lr=1.0, size=3, now=0.0, timeout=5.0,
                       rng=np.random.default_rng(0))  # fmt: skip
    update = Update("j", 0, "a", "f4", params_bytes(np.ones(3)))
    core.receive("a", update, 0.0)
    with caplog.at_level(logging.WARNING):
        core.receive("a", update, 0.1)
        core.receive("b", update, 0.1)  # b in a's name
    assert "a second update" in caplog.text
    assert "another device's name" in caplog.text
    core.receive("b", Update("j", 0, "b", "f4", params_bytes(np.ones(3))), 0.2)
    assert core.state == "done"
    assert core.outcome.contributors == ("a", "b")
    assert np.allclose(core.outcome.params, -2 * np.ones(3) / 2.0)  # (1 + 1) / (0.5 * 4)


def _tamper(victim, values, encoding="f4"):
    def change(source, data):
        message = from_wire(data)
        if source == victim and isinstance(message, Update):
            return Update(message.job, message.round, victim, encoding, values).to_wire()
        return data

    return change


@pytest.mark.parametrize(
    "values",
    [np.full(5, 1.0, "<f4").tobytes(), np.full(650, np.nan, "<f4").tobytes(), b"\x01\x02\x03"],
)
def test_a_bad_update_is_refused_and_the_round_goes_on(small, values, caplog):
    job, fed = make(small, faults=Faults(tamper={0: _tamper("dev-b", values)}))
    with caplog.at_level(logging.WARNING):
        report = fed.run_round()
    assert report.outcome.contributors == ("dev-a", "dev-c", "dev-d")
    assert [d for d, _ in report.outcome.refused] == ["dev-b"]
    assert "refused dev-b's update" in caplog.text
    assert np.all(np.isfinite(fed.params))
    assert not np.array_equal(fed.params, job.initial)
    assert fed.run_round().outcome.contributors == tuple(DEVICES)  # the next round as usual


def test_a_bad_masked_update_is_refused_and_its_masks_removed(small, caplog):
    # trust none: a masked update of the wrong length; the others' masks with dev-b are revealed
    bad = _tamper("dev-b", np.zeros(649, "<u8").tobytes(), "u8")
    _, fed = make(small, "none", epsilon=math.inf, sigma=0.0, faults=Faults(tamper={0: bad}))
    with caplog.at_level(logging.WARNING):
        report = fed.run_round()
    assert "refused dev-b's update: wrong shape" in caplog.text
    assert report.outcome.contributors == ("dev-a", "dev-c", "dev-d")
    _, plain = make(
        small, "swarm", epsilon=math.inf, sigma=0.0, faults=Faults(silent={0: {"dev-b"}})
    )
    plain.run_round()
    assert np.allclose(fed.params, plain.params, atol=1e-5)  # exactly the three others' sum


def test_trust_none_releases_the_same_sum_as_trust_swarm(small):
    # no noise (and no budget): the masked sum must be the plain sum, up to the fixed-point step
    _, swarm = make(small, "swarm", epsilon=math.inf, sigma=0.0, seed=2)
    _, none = make(small, "none", epsilon=math.inf, sigma=0.0, seed=2)
    swarm.run_round()
    none.run_round()
    assert np.allclose(swarm.params, none.params, atol=1e-5)
    assert not np.allclose(swarm.params, make(small, "swarm", sigma=0.0, seed=2)[0].initial)


def test_trust_none_survives_a_device_that_drops_mid_round(small):
    _, fed = make(small, "none", epsilon=math.inf, sigma=0.0, faults=Faults(silent={0: {"dev-c"}}))
    report = fed.run_round()
    assert report.outcome.contributors == ("dev-a", "dev-b", "dev-d")
    assert report.outcome.dropped == ("dev-c",)
    # the result is the survivors' plain sum: the same round with dev-c declining under swarm
    _, plain = make(
        small, "swarm", epsilon=math.inf, sigma=0.0, faults=Faults(silent={0: {"dev-c"}})
    )
    plain.run_round()
    assert np.allclose(fed.params, plain.params, atol=1e-5)


def test_trust_none_fails_the_round_below_its_survivor_floor(small):
    _, fed = make(
        small,
        "none",
        epsilon=math.inf,
        sigma=0.0,
        faults=Faults(silent={0: {"dev-b", "dev-c", "dev-d"}}),
    )
    before = fed.params.copy()
    report = fed.run_round()
    assert report.outcome.params is None
    assert np.array_equal(fed.params, before)


@pytest.mark.parametrize("trust", ["swarm", "none"])
def test_a_coordinator_killed_mid_round_is_replaced_and_the_round_completes(small, trust):
    job, fed = make(small, trust, faults=Faults(kill_coordinator_after={1: 2}))
    fed.run_round()
    report = fed.run_round()
    first = report.coordinators[0]
    assert report.coordinators == [first, successor(first, DEVICES)]
    assert report.outcome.params is not None
    assert first not in report.outcome.contributors
    assert len(report.outcome.contributors) == 3
    # the take-over cost nobody a second step: one update per device per round
    assert all(job.ledgers[d].steps == 2 for d in DEVICES if d != first)
    assert first not in fed.live
    assert fed.run_round().outcome.contributors == tuple(sorted(set(DEVICES) - {first}))


def test_a_finished_round_started_again_is_declined_and_costs_nothing(small):
    job, fed = make(small)
    fed.run_round()
    fed.run_round()
    device = fed.participants["dev-a"]
    stale = device.last_start
    again = RoundStart(stale.job, 0, 0, "dev-b", "swarm", stale.participants, stale.params,
                       stale.sample_rate, stale.clip, stale.noise_multiplier, 1)  # fmt: skip
    [(_, answer)] = device.receive("dev-b", again)
    assert answer.kind == "decline"
    assert answer.reason == "conflict"
    assert job.ledgers["dev-a"].steps == 2


def test_a_device_sitting_out_declines_and_spends_nothing(small):
    job, fed = make(small)
    fed.participants["dev-d"].sit_out = True
    report = fed.run_round()
    assert report.outcome.contributors == ("dev-a", "dev-b", "dev-c")
    assert job.ledgers["dev-d"].steps == 0
    assert job.ledgers["dev-a"].steps == 1
    assert fed.participants["dev-d"].state == "sitting out"


def test_the_same_seed_gives_the_same_model(small):
    runs = []
    for _ in range(2):
        _, fed = make(small, "none", seed=7)
        for _ in range(2):
            fed.run_round()
        runs.append(fed.params)
    assert np.array_equal(runs[0], runs[1])


# the layer


def test_learning_loads_no_torch_and_sits_between_placement_and_swarm():
    code = "import sys, homeswarm.learning; print('torch' in sys.modules, 'opacus' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ},
    ).stdout  # fmt: skip
    assert out.split() == ["False", "False"]


def test_layer_arrows_of_learning():
    import ast

    root = Path(__file__).resolve().parents[2]

    def layers(path):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found |= {n.split(".")[1] for n in names if n.startswith("homeswarm.") and n.count(".")}
        return found

    for path in (root / "learning").rglob("*.py"):
        assert not layers(path) & {"swarm", "simulations", "cli", "vault", "transports"}, path
    for lower in ("transports", "vault", "kernels", "placement"):
        for path in (root / lower).rglob("*.py"):
            assert "learning" not in layers(path), path


# the runner


def test_the_runner_reports_the_job_and_a_second_run_stops_at_the_budget(tmp_path, capsys):
    from homeswarm.learning.__main__ import main

    # the mechanism of the budget test above (Opacus's noise search is slow, and remembered)
    argv = ["--devices", "3", "--rounds", "8", "--sample-rate", "0.2", "--epsilon", "1"]
    argv += ["--json", "--home", str(tmp_path)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    status = json.loads(out)
    assert {
        "job",
        "task",
        "state",
        "round",
        "accuracy",
        "epsilon_target",
        "delta",
        "devices",
    } <= set(status)
    assert [d["name"] for d in status["devices"]] == ["device-000", "device-001", "device-002"]
    assert all(0 < d["epsilon_spent"] <= 1 for d in status["devices"])
    assert "round 8/8" in err
    # the same devices again: their ledgers remember, nobody trains past the budget
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    for before, after in zip(status["devices"], again["devices"], strict=True):
        assert before["epsilon_spent"] <= after["epsilon_spent"] <= 1
        assert after["state"] == "out of budget"


def test_the_runner_refuses_bad_input_in_one_line(capsys):
    from homeswarm.learning.__main__ import main

    assert main(["--devices", "0"]) == 2
    assert capsys.readouterr().err == "error: --devices must be between 1 and 1000\n"
    assert main(["--task", "nope"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_trust_swarm_takes_the_step_opacus_takes_on_the_pooled_records(small):
    # everyone sampled (q = 1) and no noise: the federated step must be Opacus's DP-SGD step
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from homeswarm.learning._jobs import pooled
    from homeswarm.learning._torch import flat

    task, split = small
    job = prepare(task, split, epsilon=math.inf, delta=1e-5, seed=4)
    fed = federation(job, Mechanism("swarm", 1.0, 0.5, 0.0, 0.5), seed=4)
    for _ in range(3):
        fed.run_round()
    torch.manual_seed(4)
    model = task.model()
    assert np.array_equal(flat(model), job.initial)
    data = pooled(split)
    loader = DataLoader(TensorDataset(torch.as_tensor(data.x), torch.as_tensor(data.y)), len(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Secure RNG turned off"
        engine = PrivacyEngine()
        private, optimizer, loader = engine.make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
            data_loader=loader,
            noise_multiplier=0.0,
            max_grad_norm=0.5,
            poisson_sampling=True,
        )
        for _ in range(3):
            for x, y in loader:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(private(x), y).backward()
                optimizer.step()
    assert np.allclose(fed.params, flat(model), atol=1e-5)
    assert not np.allclose(fed.params, job.initial, atol=1e-3)


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(1, 40),
    devices=st.integers(2, 6),
    dropped=st.sets(st.integers(0, 5)),
    seed=st.integers(0, 2**16),
)
def test_any_survivors_sum_is_recovered_exactly(size, devices, dropped, seed):
    names = [f"n{i}" for i in range(devices)]
    gone = {names[i] for i in dropped if i < devices}
    survivors = [n for n in names if n not in gone]
    keys = _keys(names)
    values = {n: np.random.default_rng([seed, i]).normal(0, 5, size) for i, n in enumerate(names)}
    total = sum(
        (secagg.masked(values[n], n, _seeds(keys, n, names)) for n in survivors),
        np.zeros(size, dtype=np.uint64),
    )
    revealed = {(s, d): _seeds(keys, s, [d])[d] for s in survivors for d in gone}
    exact = sum((secagg.encode(values[n]) for n in survivors), np.zeros(size, dtype=np.uint64))
    assert np.array_equal(secagg.unmask_dropped(total, revealed), exact)
