"""Issue 12, attack 5 (the vault's half): a seal counts only when the epoch's creator made it, for
a member. A bogus seal (garbage sealed by another member to a device) used to add that device
to the epoch's holders everywhere, so nobody ever sealed the key to it."""

from __future__ import annotations

import dataclasses
import json
import random

import pyrage

from homeswarm.vault import SCOPES, Seal
from homeswarm.vault._records import sign
from homeswarm.vault.testing import directory_of, exchange, make_device, make_replica

ALL = frozenset(SCOPES)


def bogus_seal(epoch_key: tuple[str, int, str], target: str, sealer, swarm: str) -> Seal:
    scope, number, creator = epoch_key
    junk = pyrage.encrypt(b"not a key", [pyrage.x25519.Identity.generate().to_public()])
    unsigned = Seal(swarm, scope, number, creator, target, junk, sealer.id, bytes(64))
    return dataclasses.replace(unsigned, signature=sign(sealer.signing_key, unsigned.payload()))


def test_a_bogus_seal_by_a_non_creator_is_refused_and_the_target_still_gets_the_key():
    rng = random.Random(21)
    creator_dev, thief_dev, late_dev = (make_device(rng, ALL) for _ in range(3))
    first = directory_of([creator_dev, thief_dev])
    creator = make_replica(creator_dev, first)
    thief = make_replica(thief_dev, first, seed=1)
    creator.put("facts/h", json.dumps("history"))
    creator.commit_local()
    exchange(thief, creator)
    everyone = directory_of([creator_dev, thief_dev, late_dev])
    for r in (creator, thief):
        r.set_directory(everyone)
    late = make_replica(late_dev, everyone, seed=2)
    (key,) = [k for k in creator.keyring.epochs if k[0] == "personal"]

    seal = bogus_seal(key, late_dev.id, thief_dev, creator.swarm)
    changes, refused = creator.receive([seal])
    assert [r.reason for r in refused] == [
        f"sealed by {thief_dev.id[-8:]}, not by the epoch's creator {creator_dev.id[-8:]}"
    ]
    assert not changes
    assert late_dev.id not in creator.keyring.holders(key)
    # refused again, but reported once
    _, again = creator.receive([seal])
    assert [r.again for r in again] == [True]
    # the creator seals the key to the late device, which reads history
    assert creator.reseal().added
    exchange(late, creator)
    entry = late.get("facts/h")
    assert entry is not None
    assert json.loads(entry.text) == "history"


def test_a_seal_for_a_device_outside_the_roster_is_refused():
    rng = random.Random(22)
    a_dev, b_dev, stranger = (make_device(rng, ALL) for _ in range(3))
    directory = directory_of([a_dev, b_dev])
    a, b = make_replica(a_dev, directory), make_replica(b_dev, directory, seed=1)
    a.put("facts/x", "1")
    a.commit_local()
    exchange(b, a)
    # a (the creator) believes in a stranger: its seal is refused by b, who does not
    a.set_directory(directory_of([a_dev, b_dev, stranger]))
    seals = a.reseal().added
    assert [s.device for s in seals if isinstance(s, Seal)] == [stranger.id] * len(seals)
    _, refused = b.receive(seals)
    assert {r.reason for r in refused} == {f"sealed to {stranger.id[-8:]}, not a member"}
    assert all(stranger.id not in b.keyring.holders(k) for k in b.keyring.epochs)
