"""The vault in the simulator: many fault schedules, each with every device writing (puts and
deletes) through partitions, isolation, crashes, pauses, loss bursts and a final partition; after
healing every replica agrees and no acknowledged write is lost. A failing seed names the command
that replays it; ``SWARM_VAULT_SWEEP=N`` runs N seeds instead. Planted bugs are caught, the same
seed gives the same trace, and the two sync races the sweep found stay fixed."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from homeswarm.cli import main
from homeswarm.simulations import simulate
from homeswarm.vault import SCOPES, Replica, VaultNode
from homeswarm.vault._node import _Waiter
from homeswarm.vault._records import Snapshot, Update
from homeswarm.vault._sync import PUSH, SYNC, Push, Session, SyncRequest, answer_push, answer_sync
from homeswarm.vault.testing import directory_of, make_device, make_replica

ROOT = Path(__file__).resolve().parents[2]
SEEDS = int(os.environ.get("SWARM_VAULT_SWEEP", "200"))
HOURS = 0.01  # 36 s of faults, then 30 s of a final partition, every device writing
CHUNKS = 10


def peers_for(seed: int) -> int:
    """A server, a laptop and a phone; in every fourth round of chunks, a second server too."""
    return 4 if (seed // CHUNKS) % 4 == 3 else 3


def run(seed: int, peers: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """A seed's metrics and its problems, each naming the command that replays it."""
    r = simulate("vault", peers=peers or peers_for(seed), seed=seed, hours=HOURS)
    replay = f"(replay: {r.replay})"
    problems = [
        f"at {v['at_s']}s {v['invariant']}: {v['detail']}  {replay}"
        for v in r.invariants["violations"]
    ]
    m = r.metrics
    if not problems and (m["writes_lost"] or not m["replicas_agree"]):
        problems.append(f"metrics say otherwise: {m}  {replay}")
    return m, problems


# ---- the sweep ---------------------------------------------------------------------------------


@pytest.mark.sweep  # coverage traces chunk 0 only (tests/conftest.py)
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_no_acknowledged_write_is_lost_and_the_replicas_agree(chunk):
    failures: list[str] = []
    acked = deletes = agreed = 0
    for seed in range(chunk, SEEDS, CHUNKS):
        m, problems = run(seed)
        failures += problems
        acked += m["writes_acknowledged"]
        deletes += m["deletes_acknowledged"]
        agreed += m["replicas_agree"]
    assert not failures, "\n".join(failures[:20])
    runs = len(range(chunk, SEEDS, CHUNKS))
    assert agreed == runs
    assert acked >= 30 * runs  # every run writes a good deal
    assert deletes > 0 or runs == 0


def test_a_run_measures_what_it_says(capsys):
    code = main(["simulate", "vault", "--peers", "3", "--seed", "2", "--hours", "0.01", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    m = out["metrics"]
    assert out["scenario"] == "vault"
    assert m["writes_lost"] == 0
    assert m["replicas_agree"] is True
    assert m["writes_acknowledged"] > 20
    assert 0 <= m["converge_s"] < 60
    assert out["invariants"]["violations"] == []
    assert out["invariants"]["checked"] > m["writes_acknowledged"]


# ---- planted bugs ------------------------------------------------------------------------------


def _without_the_phones_own(original: Any) -> Any:
    """``Replica.missing`` on a phone leaves out what the phone wrote itself (its updates, and
    snapshots it made): one origin's writes never leave it."""

    def missing(self: Replica, their: Any, budget: int) -> tuple[list[Any], bool]:
        out, more = original(self, their, budget)
        if "private" not in self.readable:
            out = [
                r for r in out if not (isinstance(r, Update | Snapshot) and r.signer == self.device)
            ]
        return out, more

    return missing


def test_the_sweep_catches_writes_that_never_leave_their_device(monkeypatch):
    monkeypatch.setattr(Replica, "missing", _without_the_phones_own(Replica.missing))
    caught = {seed: "\n".join(p) for seed in range(6) if (p := run(seed, peers=3)[1])}
    assert len(caught) >= 5, caught
    # the replicas never agree; and where the phone's write was the last word on a key, it is lost
    assert all("vault-agreement" in text for text in caught.values())
    assert sum("vault-lost" in text for text in caught.values()) >= 2, caught
    first = min(caught)
    assert f"swarm simulate vault --peers 3 --seed {first} --hours {HOURS}" in caught[first]


async def _acks_then_stores(self: VaultNode) -> None:
    """``VaultNode._committer`` with the bug: writers are told their write is done, and the
    commit is stored a moment later."""
    while True:
        await self._dirty.wait()
        self._dirty = trio.Event()
        await trio.lowlevel.checkpoint()
        waiters: list[_Waiter]
        waiters, self._waiters = self._waiters, []
        changes = self.replica.commit_local()
        for waiter in waiters:
            waiter.event.set()
        await trio.sleep(0.5)
        self._persist(changes)
        self._push_all()


def test_the_sweep_catches_acknowledging_before_storing(monkeypatch):
    monkeypatch.setattr(VaultNode, "_committer", _acks_then_stores)
    caught = {seed: problems for seed in range(4) if (problems := run(seed, peers=3)[1])}
    assert len(caught) == 4, caught
    assert all("vault-durable" in "\n".join(p) for p in caught.values())


def test_the_sweep_catches_a_replica_that_believes_any_snapshot(monkeypatch):
    """The compromised device's forged snapshot (issue 12): with the check that a snapshot holds
    what it covers removed, the readers take it and drop the victim's log."""
    monkeypatch.setattr(Replica, "_contains", lambda self, s, sn, updates, whole=False: True)
    # (seeds where the forgery reaches a reader: every run's schedule also wipes a store now)
    caught = {seed: "\n".join(p) for seed in (3, 22) if (p := run(seed, peers=3)[1])}
    assert len(caught) == 2, caught
    assert all("vault-forged" in text for text in caught.values())


def test_the_compromised_device_costs_nothing():
    m, problems = run(2, peers=3)
    assert problems == []
    assert m["forged_refused"] >= 1
    assert m["writes_lost"] == 0


# ---- determinism -------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_trace_even_in_another_process():
    """Ciphertexts differ from run to run (age draws its own randomness, and pads its header by a
    random length), so the vault's world hashes when, from whom and to whom each frame went."""
    a = simulate("vault", peers=3, seed=7, hours=0.005)
    b = simulate("vault", peers=3, seed=7, hours=0.005)
    c = simulate("vault", peers=3, seed=8, hours=0.005)
    assert a.trace_digest == b.trace_digest
    assert a.metrics == b.metrics
    assert a.log == b.log
    assert a.series["writes"] == b.series["writes"]
    assert c.trace_digest != a.trace_digest
    code = (
        "from homeswarm.simulations import simulate;"
        "print(simulate('vault', peers=3, seed=7, hours=0.005).trace_digest)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == a.trace_digest


# ---- the sync races the sweep found ------------------------------------------------------------


def _wire(obj: object) -> Any:
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


def _pair() -> tuple[Replica, Replica]:
    rng = random.Random(5)
    a, b = make_device(rng, SCOPES), make_device(rng, SCOPES)
    directory = directory_of([a, b])
    return make_replica(a, directory, seed=1), make_replica(b, directory, seed=2)


def _write(replica: Replica, key: str, value: object) -> None:
    replica.put(key, json.dumps(value))
    replica.commit_local()


def _session(client: Replica, server: Replica, between: dict[int, Any]) -> list[str]:
    """One session from ``client`` to ``server``; ``between[i]()`` runs before the server
    answers message ``i``. The reasons of every record refused, either side."""
    session = Session(client)
    refused: list[str] = []
    i = 0
    while (message := session.next()) is not None:
        op, body = message
        if i in between:
            between[i]()
        if op == SYNC:
            reply = answer_sync(server, SyncRequest.from_wire(_wire(body))).to_wire()
        else:
            assert op == PUSH
            answer, _, rejections = answer_push(server, Push.from_wire(_wire(body)))
            refused += [r.reason for r in rejections]
            reply = answer.to_wire()
        _, rejections = session.take(op, _wire(reply))
        refused += [r.reason for r in rejections]
        i += 1
    return refused


def test_a_push_carries_the_epoch_a_write_made_during_the_session():
    """The client asked with the keyring both sides held; before the answer, a write of its own
    made a new epoch: the push must carry it (it used to push the update alone: refused, as of
    an unknown epoch, until a later session)."""
    client, server = _pair()
    refused = _session(client, server, {0: lambda: _write(client, "facts/a", "A")})
    assert refused == []
    assert server.get("facts/a") is not None
    assert server.vectors() == client.vectors()


def test_a_session_asks_again_for_keys_made_after_they_were_listed():
    """The server listed its keyring; before the client's next request a write of the server's
    made a new epoch, and its update came without it. The session compares keyrings again and
    takes it all before it ends (it used to end with the update refused)."""
    client, server = _pair()
    _write(client, "facts/a", "A")  # the keyrings differ: the server lists its own (empty)
    refused = _session(client, server, {1: lambda: _write(server, "facts/b", "B")})
    assert set(refused) <= {"unknown epoch"}
    entry = client.get("facts/b")
    assert entry is not None
    assert json.loads(entry.text) == "B"
    assert server.get("facts/a") is not None
    assert server.vectors() == client.vectors()
