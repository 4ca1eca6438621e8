"""The revocation rule against a stolen device (``swarm/_certs.py``, rules 1-6), as a hypothesis
state machine over random mint/revoke/partition sequences.

A swarm of four admins (``a0``, the root's, certified ``a1``-``a3`` as admins) and two phones;
later the owner may re-establish a phone as an admin with the recovery code (the root).
One device is stolen: an admin other than ``a0`` (which holds ``root.key`` and is the root if
stolen) or a phone. The thief signs whatever it likes (revocations of anyone, with any keep
list and any time; certificates for puppets, admin or not, chained through puppets), and each
fact reaches a random subset of three replicas (a partition); replicas gossip pairwise. The
honest admins revoke the stolen device one by one, each from its own replica's view.

One admin may revoke a non-admin, so a stolen admin can cut phones off for a while; what the
rule promises, and these invariants check, on every replica whatever it has heard:
- the surviving honest admins always keep a working swarm: each is admitted and an admin, no
  puppet ever becomes an admin, and a phone the root re-established is an admin;
- a non-admin is never able to revoke anyone: with a stolen phone, every honest device stays;
- once a replica holds the stolen device out it stays out (admins added later never un-revoke
  it).
Once every honest admin signed the stolen device's revocation and everything is exchanged,
every replica agrees on the same roster, the stolen device is out, its unkept puppets with it,
and every honest device is back in (what the stolen admin revoked no longer counts).
"""

from __future__ import annotations

import pyrage
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from homeswarm.swarm._certs import InvalidCertificate, Revocation, Roster, issue_certificate, revoke
from homeswarm.swarm._home import public_bytes, swarm_id_of
from homeswarm.transports import peer_id_from_public_key

AGE = str(pyrage.x25519.Identity.generate().to_public())
ROOT_KEY = Ed25519PrivateKey.from_private_bytes(b"\x05" * 32)
ROOT = public_bytes(ROOT_KEY)
SWARM = swarm_id_of(ROOT)
KEYS = {
    n: Ed25519PrivateKey.from_private_bytes(bytes([40 + i]) * 32)
    for i, n in enumerate(["a0", "a1", "a2", "a3", "p0", "p1", "x0", "x1", "x2", "x3"])
}
ID = {n: peer_id_from_public_key(public_bytes(k)) for n, k in KEYS.items()}
ADMINS = ["a0", "a1", "a2", "a3"]
PHONES = ["p0", "p1"]
PUPPETS = ["x0", "x1", "x2", "x3"]


def cert(device: str, by: str | None, *, admin: bool, at: float = 1000.0):
    return issue_certificate(
        KEYS[by] if by else ROOT_KEY,
        issuer=ID[by] if by else "root",
        swarm=SWARM,
        device=ID[device],
        name=device,
        role="laptop",
        age_recipient=AGE,
        now=at,
        admin=admin,
    )


def founding_chains() -> dict[str, tuple]:
    chains = {"a0": (cert("a0", None, admin=True),)}
    for n in ADMINS[1:]:
        chains[n] = (cert(n, "a0", admin=True), *chains["a0"])
    for n in PHONES:
        chains[n] = (cert(n, "a0", admin=False), *chains["a0"])
    return chains


FOUNDING = founding_chains()
masks = st.sets(st.integers(0, 2), min_size=1)


def learn(roster: Roster, fact: object) -> None:
    try:
        if isinstance(fact, Revocation):
            roster.add_revocation(fact)
        else:
            roster.add_chain(fact)  # type: ignore[arg-type]
    except InvalidCertificate:
        pass  # a revocation before its signer's chain: anti-entropy brings it again


class StolenDevice(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.replicas = [Roster(SWARM, ROOT) for _ in range(3)]
        self.facts: list[object] = []
        self.chains = dict(FOUNDING)
        self.stolen = ""
        self.signed: set[str] = set()  # honest admins that revoked the stolen device
        self.kept: set[str] = set()  # what their revocations keep
        self.recovered: set[str] = set()  # phones the root made admins (``swarm recover``)
        self.out: list[bool] = [False] * 3  # whether a replica ever saw the stolen device out

    @initialize(stolen=st.sampled_from(["a1", "a2", "a3", "p0"]))
    def found(self, stolen: str) -> None:
        self.stolen = stolen
        for chain in FOUNDING.values():
            self.publish(chain, {0, 1, 2})

    def publish(self, fact: object, where: set[int]) -> None:
        self.facts.append(fact)
        for i in where:
            learn(self.replicas[i], fact)

    @property
    def honest_admins(self) -> list[str]:
        return [n for n in ADMINS if n != self.stolen]

    @property
    def honest(self) -> list[str]:
        return [n for n in ADMINS + PHONES if n != self.stolen]

    # -- the thief ------------------------------------------------------------------------

    @rule(
        victim=st.sampled_from(ADMINS + PHONES),
        keep=st.sets(st.sampled_from(PUPPETS + PHONES)),
        at=st.floats(0, 1e9),
        where=masks,
    )
    def thief_revokes(self, victim: str, keep: set[str], at: float, where: set[int]) -> None:
        rev = revoke(
            KEYS[self.stolen],
            by=ID[self.stolen],
            swarm=SWARM,
            device=ID[victim],
            now=at,
            keep=[ID[k] for k in keep],
        )
        self.publish(rev, where)

    @rule(
        puppet=st.sampled_from(PUPPETS),
        issuer=st.sampled_from(["stolen", *PUPPETS]),
        admin=st.booleans(),
        at=st.floats(0, 1e9),
        where=masks,
    )
    def thief_mints(
        self, puppet: str, issuer: str, admin: bool, at: float, where: set[int]
    ) -> None:
        by = self.stolen if issuer == "stolen" else issuer
        if by == puppet or by not in self.chains:
            return
        chain = (cert(puppet, by, admin=admin, at=at), *self.chains[by])
        if len({c.device for c in chain}) != len(chain):
            return
        self.chains.setdefault(puppet, chain)
        self.publish(chain, where)

    @rule(where=masks)
    def thief_leaves(self, where: set[int]) -> None:
        rev = revoke(
            KEYS[self.stolen], by=ID[self.stolen], swarm=SWARM, device=ID[self.stolen], now=1.0
        )
        self.publish(rev, where)

    # -- the owner ------------------------------------------------------------------------

    @rule(which=st.integers(0, 2), view=st.integers(0, 2), where=masks)
    def owner_revokes_the_stolen_device(self, which: int, view: int, where: set[int]) -> None:
        signer = self.honest_admins[which % len(self.honest_admins)]
        roster = self.replicas[view]
        rev = revoke(
            KEYS[signer],
            by=ID[signer],
            swarm=SWARM,
            device=ID[self.stolen],
            now=5000.0,  # after the founding (1000): a revocation is judged at its time
            keep=roster.certified_by(ID[self.stolen]),
        )
        self.signed.add(signer)
        self.kept.update(rev.keep)
        self.publish(rev, where | {view})

    @rule(phone=st.sampled_from(PHONES), at=st.floats(5000.0, 1e4), where=masks)
    def owner_recovers_a_phone(self, phone: str, at: float, where: set[int]) -> None:
        """``swarm recover CODE`` on a phone, after the revocations: the root certifies it an
        admin. More admins later never demote an admin nor un-revoke the stolen device."""
        if phone == self.stolen:
            return
        chain = (cert(phone, None, admin=True, at=at),)
        self.recovered.add(phone)
        self.publish(chain, where)

    @rule(src=st.integers(0, 2), dst=st.integers(0, 2))
    def gossip(self, src: int, dst: int) -> None:
        self.replicas[dst].merge_wire(self.replicas[src].to_wire())

    @rule(view=st.integers(0, 2))
    def heal(self, view: int) -> None:
        """The owner notices: every honest admin that has not signed yet revokes the stolen
        device (from one replica's view), and the partition heals."""
        for which in range(len(self.honest_admins)):
            if self.honest_admins[which] not in self.signed:
                self.owner_revokes_the_stolen_device(which, view, {view})
        for _ in range(2):
            for src in range(3):
                for dst in range(3):
                    self.replicas[dst].merge_wire(self.replicas[src].to_wire())
        wires = [r.to_wire() for r in self.replicas]
        assert wires[0] == wires[1] == wires[2], "every replica holds every fact"
        views = [(r.members(), r.admins(), r.revoked()) for r in self.replicas]
        assert views[0] == views[1] == views[2], "and so the same roster"
        for r in self.replicas:
            assert not r.admits(ID[self.stolen]), "the stolen device is out"
            assert not r.is_admin(ID[self.stolen])
            for n in self.honest:
                assert r.admits(ID[n]), f"{n} stayed locked out by the stolen device"
            for n in PUPPETS:  # a puppet of the thief that no honest admin kept is out with it
                chain = self.chains.get(n)
                if chain and chain[0].issuer == ID[self.stolen] and ID[n] not in self.kept:
                    assert not r.admits(ID[n]), f"puppet {n} stayed"

    # -- what holds whatever a replica has heard ------------------------------------------

    @invariant()
    def the_honest_admins_keep_a_working_swarm(self) -> None:
        if not self.stolen:
            return
        for r in self.replicas:
            for n in self.honest_admins:
                assert r.admits(ID[n]), f"{n} locked out"
                assert r.is_admin(ID[n]), f"{n} lost its admin rights"
            for n in PUPPETS:
                assert not r.is_admin(ID[n]), f"puppet {n} became an admin"
            for n in self.recovered:
                if r.chain(ID[n]) is not None and r.chain(ID[n])[0].issuer == "root":
                    assert r.is_admin(ID[n]), f"recovered {n} is not an admin"

    @invariant()
    def a_non_admin_revokes_nobody(self) -> None:
        if self.stolen not in PHONES:
            return
        for r in self.replicas:
            for n in self.honest:
                assert r.admits(ID[n]), f"{n} locked out by a phone"

    @invariant()
    def out_stays_out(self) -> None:
        if not self.stolen:
            return
        for i, r in enumerate(self.replicas):
            gone = not r.admits(ID[self.stolen])
            assert gone or not self.out[i], "the stolen device came back"
            self.out[i] = gone


TestStolenDevice = StolenDevice.TestCase
TestStolenDevice.settings = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
