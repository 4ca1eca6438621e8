from __future__ import annotations

import dataclasses

import msgpack
import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import homeswarm.swarm._certs as certs
from homeswarm.errors import MalformedMessage
from homeswarm.swarm._certs import (
    MAX_CHAIN,
    Certificate,
    InvalidCertificate,
    Revocation,
    Roster,
    chain_from_wire,
    chain_to_wire,
    issue_certificate,
    revoke,
    verify_chain,
)
from homeswarm.swarm._home import public_bytes, swarm_id_of
from homeswarm.transports import InvalidArgument, ProtocolViolation, peer_id_from_public_key

AGE = str(pyrage.x25519.Identity.generate().to_public())
ROOT_KEY = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
ROOT = public_bytes(ROOT_KEY)
SWARM = swarm_id_of(ROOT)
OTHER_ROOT_KEY = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)


def key(n: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([n + 10]) * 32)


def pid(k: Ed25519PrivateKey) -> str:
    return peer_id_from_public_key(public_bytes(k))


A, B, C, D, E, F, P = (key(i) for i in range(7))
NAMES = {pid(k): n for k, n in zip((A, B, C, D, E, F, P), "abcdefp", strict=True)}


def cert(device, by=None, *, name=None, role="laptop", at=1000.0, swarm=SWARM, admin=True):
    return issue_certificate(
        by or ROOT_KEY,
        issuer=pid(by) if by else "root",
        swarm=swarm,
        device=pid(device),
        name=name or NAMES.get(pid(device), "x"),
        role=role,
        age_recipient=AGE,
        now=at,
        admin=admin,
    )


def line(*devices):
    """The chain of devices[0] paired by devices[1], ..., the last paired by the root."""
    return tuple(
        cert(d, devices[i + 1] if i + 1 < len(devices) else None) for i, d in enumerate(devices)
    )


# -- certificates ---------------------------------------------------------------------------------


def test_certificate_signs_and_round_trips():
    c = cert(B, A)
    assert c.issuer == pid(A)
    assert c.verify(public_bytes(A))
    assert not c.verify(public_bytes(B))
    assert not c.verify(ROOT)
    packed = msgpack.packb(c.to_wire(), use_bin_type=True)
    assert Certificate.from_wire(msgpack.unpackb(packed, raw=False, strict_map_key=True)) == c


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("swarm", "sw-other"),
        ("device", pid(C)),
        ("name", "renamed"),
        ("role", "server"),
        pytest.param(  # a fresh key, under a fixed id (pytest-xdist's workers collect alike)
            "age_recipient", str(pyrage.x25519.Identity.generate().to_public()), id="age_recipient"
        ),
        ("issuer", pid(C)),
        ("issued_at", 1000.5),
    ],
)
def test_signature_covers_every_field(field, value):
    c = cert(B, A)
    assert not dataclasses.replace(c, **{field: value}).verify(public_bytes(A))


def test_signature_is_domain_separated():
    c = cert(B, A)
    assert msgpack.unpackb(c.payload())[:2] == [b"swarm-cert", 2]
    r = revoke(A, by=pid(A), swarm=SWARM, device=pid(B), now=5.0)
    assert msgpack.unpackb(r.payload())[:2] == [b"swarm-revoke", 2]


def test_issuing_with_the_wrong_key_is_refused():
    with pytest.raises(InvalidArgument, match="not the key of"):
        issue_certificate(
            B,
            issuer=pid(A),
            swarm=SWARM,
            device=pid(C),
            name="c",
            role="phone",
            age_recipient=AGE,
            now=1.0,
        )


def _with(wire, index, value):
    wire = list(wire)
    wire[index] = value
    return wire


GOOD = cert(B, A).to_wire()


@pytest.mark.parametrize(
    ("wire", "needle"),
    [
        ("nope", "certificate: not a list"),
        (GOOD[:-1], "11 fields, expected 12"),
        (_with(GOOD, 0, 1), "unsupported version '1'"),
        (_with(GOOD, 0, True), "version is not an integer"),
        (_with(GOOD, 1, ""), "swarm id"),
        (_with(GOOD, 2, "12D3KooWnotreally"), "device is not"),
        (_with(GOOD, 2, "1" + GOOD[2]), "device is not"),
        (_with(GOOD, 3, ""), "name must be"),
        (_with(GOOD, 3, "a b"), "name must be"),
        (_with(GOOD, 3, 7), "name is not a string"),
        (_with(GOOD, 4, "toaster"), "role must be"),
        (_with(GOOD, 5, "age1short"), "age must be"),
        (_with(GOOD, 6, "public"), "scopes is not a list"),
        (_with(GOOD, 6, ["secret"]), "scopes must be"),
        (_with(GOOD, 6, ["public", "public"]), "scopes must be"),
        (_with(GOOD, 6, ["private", "public"]), "scopes must be"),
        (_with(GOOD, 7, 1), "relay_only is not a boolean"),
        (_with(GOOD, 8, "yes"), "admin is not a boolean"),
        (_with(GOOD, 9, "nobody"), "issuer must be"),
        (_with(GOOD, 9, GOOD[2]), "certify itself"),
        (_with(GOOD, 10, 1000), "issued_at"),
        (_with(GOOD, 10, True), "issued_at"),
        (_with(GOOD, 10, float("nan")), "issued_at"),
        (_with(GOOD, 11, b"\0" * 63), "64 bytes"),
        (_with(GOOD, 11, "sig"), "signature is not bytes"),
    ],
)
def test_malformed_certificates_are_refused(wire, needle):
    # one clear line from the one wire checker; still an InvalidCertificate for its callers
    with pytest.raises(MalformedMessage, match=needle) as info:
        Certificate.from_wire(wire)
    assert isinstance(info.value, InvalidCertificate)
    assert "\n" not in str(info.value)


def test_invalid_certificate_is_the_peers_fault():
    assert issubclass(InvalidCertificate, ProtocolViolation)


# -- chains ---------------------------------------------------------------------------------------


def check(chain, revoked=(), root=ROOT):
    return verify_chain(chain, swarm=SWARM, root_public=root, revoked=revoked)


def test_valid_chains_give_their_leaf():
    assert check(line(A)) == cert(A)
    assert check(line(C, B, A)).device == pid(C)


@pytest.mark.parametrize(
    ("chain", "needle"),
    [
        ((), "non-empty"),
        ([cert(A)], "non-empty"),
        ((cert(B, A),), "not by root"),
        ((cert(C, B), cert(A)), "issued by .* not by"),
        ((cert(B, A), cert(A, swarm="sw-other")), "another swarm"),
        ((cert(A, B), cert(B, A), cert(A)), "appears twice"),
        ((dataclasses.replace(cert(B, A), name="evil"), cert(A)), "bad signature"),
    ],
)
def test_invalid_chains_are_refused(chain, needle):
    with pytest.raises(InvalidCertificate, match=needle):
        check(chain)


def test_the_root_key_anchors_the_chain():
    with pytest.raises(InvalidCertificate, match="bad signature by root"):
        check(line(B, A), root=public_bytes(OTHER_ROOT_KEY))


def test_chains_are_at_most_16_long():
    keys = [key(100 + i) for i in range(MAX_CHAIN + 1)]
    assert check(line(*keys[:MAX_CHAIN])).device == pid(keys[0])
    with pytest.raises(InvalidCertificate, match="at most 16"):
        check(line(*keys))


def test_revoking_a_device_cuts_off_the_devices_it_paired():
    chain = line(C, B, A)
    with pytest.raises(InvalidCertificate, match=f"{pid(B)[-8:]} is revoked"):
        check(chain, revoked={pid(B)})
    with pytest.raises(InvalidCertificate, match="is revoked"):
        check(chain, revoked={pid(C)})
    assert check(chain, revoked={pid(D)}).device == pid(C)


# -- revocations ----------------------------------------------------------------------------------


def test_revocation_signs_and_round_trips():
    r = revoke(A, by=pid(A), swarm=SWARM, device=pid(B), now=7)
    assert r.at == 7.0
    assert r.verify(public_bytes(A))
    assert not r.verify(public_bytes(B))
    assert not dataclasses.replace(r, device=pid(C)).verify(public_bytes(A))
    assert Revocation.from_wire(r.to_wire()) == r
    root = revoke(ROOT_KEY, by="root", swarm=SWARM, device=pid(B), now=7)
    assert root.verify(ROOT)


@pytest.mark.parametrize(
    ("wire", "needle"),
    [
        ({}, "revocation: not a list"),
        ([1, SWARM, pid(B), pid(A), 1.0, [], b"\0" * 64], "version"),
        ([2, SWARM, "root", pid(A), 1.0, [], b"\0" * 64], "device is not"),
        ([2, SWARM, pid(B), "someone", 1.0, [], b"\0" * 64], "by must be"),
        ([2, SWARM, pid(B), pid(A), "now", [], b"\0" * 64], "at is not a number"),
        ([2, SWARM, pid(B), pid(A), 1.0, [], b""], "64 bytes"),
        ([2, SWARM, pid(B), pid(A), 1.0, "x", b"\0" * 64], "keep is not a list"),
        ([2, SWARM, pid(B), pid(A), 1.0, ["x"], b"\0" * 64], "keep is a sorted"),
        ([2, SWARM, pid(B), pid(A), 1.0, [pid(C), pid(C)], b"\0" * 64], "keep is a sorted"),
    ],
)
def test_malformed_revocations_are_refused(wire, needle):
    with pytest.raises(MalformedMessage, match=needle) as info:
        Revocation.from_wire(wire)
    assert isinstance(info.value, InvalidCertificate)


def test_revoking_with_the_wrong_key_is_refused():
    with pytest.raises(InvalidArgument, match="not the key of"):
        revoke(B, by=pid(A), swarm=SWARM, device=pid(C), now=1.0)


# -- the roster -----------------------------------------------------------------------------------


def roster(*chains):
    r = Roster(SWARM, ROOT)
    for chain in chains:
        r.add_chain(chain)
    return r


def test_adding_chains():
    r = Roster(SWARM, ROOT)
    assert not r.admits(pid(A))
    assert r.add_chain(line(A)) is True
    assert r.add_chain(line(A)) is False
    assert r.add_chain(line(C, B, A)) is True
    assert r.admits(pid(A))
    assert r.admits(pid(C))
    assert not r.admits(pid(B)), "only leaves are stored; B never presented its own chain"
    assert r.certificate(pid(C)) == cert(C, B)
    assert r.chain(pid(C)) == line(C, B, A)
    assert r.certificate(pid(D)) is None
    assert r.chain(pid(D)) is None


def test_an_invalid_chain_is_not_stored():
    r = Roster(SWARM, ROOT)
    with pytest.raises(InvalidCertificate):
        r.add_chain((dataclasses.replace(cert(A), name="evil"),))
    assert not r.admits(pid(A))
    assert r.to_wire()["chains"] == []


def test_adding_many_chains_at_once_gives_what_adding_them_one_by_one_gives():
    chains = [line(A), line(C, B, A), line(D, A), line(A)]
    many = Roster(SWARM, ROOT)
    assert many.add_chains(chains) == 3  # (line(A) twice)
    assert many.to_wire() == roster(*chains).to_wire()
    assert [many.admits(pid(k)) for k in (A, B, C, D)] == [True, False, True, True]
    # a bad chain raises; those before it are stored, and count
    bad = Roster(SWARM, ROOT)
    with pytest.raises(InvalidCertificate):
        bad.add_chains([line(A), (dataclasses.replace(cert(D), name="evil"),), line(E)])
    assert [bad.admits(pid(k)) for k in (A, D, E)] == [True, False, False]


def test_a_copy_changes_on_its_own_though_it_shares_the_tables_until_then():
    base = [line(A), line(C, B, A)]
    original = roster(*base)
    copy, other = original.copy(), original.copy()
    assert copy.add_chain(line(D, A))
    assert original.add_revocation(rev(A, C))
    assert other.add_chain(line(E))
    alone = roster(*base)  # each must be what the same facts give a roster of its own
    alone.add_revocation(rev(A, C))
    assert original.to_wire() == alone.to_wire()
    assert copy.to_wire() == roster(*base, line(D, A)).to_wire()
    assert other.to_wire() == roster(*base, line(E)).to_wire()
    assert [r.admits(pid(C)) for r in (original, copy)] == [False, True]
    assert [r.admits(pid(D)) for r in (original, copy, other)] == [False, True, False]
    assert [r.admits(pid(E)) for r in (original, copy, other)] == [False, False, True]


def test_members_are_sorted_by_name_then_id():
    r = roster(line(A), line(D), line(B, A))
    r.add_chain((cert(E, D, name="a"), cert(D)))
    names = [(c.name, c.device) for c in r.members()]
    assert names == sorted(names)
    assert [c.name for c in r.members()] == ["a", "a", "b", "d"]


def rev(by, device, *, at=2000.0, keep=()):
    signer = ROOT_KEY if by == "root" else by
    return revoke(
        signer,
        by="root" if by == "root" else pid(by),
        swarm=SWARM,
        device=pid(device),
        now=at,
        keep=[pid(k) for k in keep],
    )


def admitted(r, *keys):
    return [r.admits(pid(k)) for k in keys]


def test_revocation_cuts_off_what_the_device_certified_unless_kept():
    r = roster(line(A), line(B, A), line(C, B, A), (cert(E, B), cert(B, A), cert(A)))
    assert r.admins() == {pid(A), pid(B)}
    assert r.add_revocation(rev(A, B, keep=[C])) is True
    assert r.revoked() == frozenset(), "one of two admins"
    assert r.add_revocation(rev("root", B, keep=[C])) is True
    assert r.revoked() == {pid(B)}
    assert admitted(r, A, B, C, E) == [True, False, True, False]
    assert r.cut_off() == {pid(E)}
    assert r.certificate(pid(E)) is None
    # a device certified by B after the revocation is cut off too: B's puppets stay out
    assert r.add_chain((cert(F, B, at=5000.0), cert(B, A), cert(A))) is True
    assert not r.admits(pid(F))
    # an admin re-admits a cut-off device by certifying it again (``swarm grant``)
    r.add_chain((cert(E, A, at=6000.0), cert(A)))
    assert r.admits(pid(E))


def test_a_refused_chain_does_not_make_its_device_a_revoker():
    r = roster(line(A))
    with pytest.raises(InvalidCertificate, match="bad signature"):
        r.add_chain((cert(E, D), dataclasses.replace(cert(D), name="evil")))
    with pytest.raises(InvalidCertificate, match="bad signature"):
        r.add_chain((dataclasses.replace(cert(E), name="evil"),))
    with pytest.raises(InvalidCertificate, match="not a known member"):
        r.add_revocation(revoke(E, by=pid(E), swarm=SWARM, device=pid(A), now=1.0))
    assert r.admits(pid(A))


def test_a_device_that_leaves_keeps_what_it_certified():
    r = roster(line(A), line(B, A), line(C, B, A))
    assert r.add_revocation(rev(B, B))
    assert admitted(r, A, B, C) == [True, False, True]


def test_a_thief_that_leaves_does_not_keep_its_puppets_once_admins_revoke_it():
    r = roster(line(A), line(B, A), line(C, A), (cert(E, B, admin=False), cert(B, A), cert(A)))
    r.add_chain((cert(C, B), cert(B, A), cert(A)))
    assert r.admins() == {pid(A), pid(B), pid(C)}
    r.add_revocation(rev(B, B))  # the thief leaves, to keep its puppet E
    assert r.admits(pid(E))
    r.add_revocation(rev(A, B))
    r.add_revocation(rev(C, B))
    assert not r.admits(pid(E)), "the admins' keep lists decide, and they keep nothing"


def test_certificates_from_non_admins_admit_nobody():
    r = roster(line(A), (cert(B, A, admin=False), cert(A)))
    assert r.admits(pid(B))
    assert not r.is_admin(pid(B))
    r.add_chain((cert(C, B), cert(B, A, admin=False), cert(A)))
    assert not r.admits(pid(C)), "B is not an admin: its certificate counts for nothing"


def test_admins_come_in_rounds_from_the_root_and_puppets_need_a_majority():
    # A is the root's admin; A made B and C admins while it was the only one
    r = roster(line(A), line(B, A), line(C, B, A))
    assert r.admins() == {pid(A), pid(B)}, "C was made an admin by B alone, one of two"
    r.add_chain((cert(C, A), cert(A)))
    assert r.admins() == {pid(A), pid(B), pid(C)}, "now A and B signed: two of two"
    # a stolen B mints puppets: one signature of three admins is no majority
    r.add_chain((cert(E, B), cert(B, A), cert(A)))
    r.add_chain((cert(F, E), cert(E, B), cert(B, A), cert(A)))
    assert r.admins() == {pid(A), pid(B), pid(C)}
    assert r.admits(pid(E))
    assert not r.is_admin(pid(E))
    assert not r.admits(pid(F)), "E is no admin"


def test_who_may_revoke():
    r = roster(line(A), line(B, A))
    stranger = revoke(E, by=pid(E), swarm=SWARM, device=pid(A), now=1.0)
    with pytest.raises(InvalidCertificate, match="not a known member"):
        r.add_revocation(stranger)
    forged = dataclasses.replace(
        revoke(E, by=pid(E), swarm=SWARM, device=pid(A), now=1.0), by=pid(B)
    )
    with pytest.raises(InvalidCertificate, match="bad signature"):
        r.add_revocation(forged)
    foreign = revoke(B, by=pid(B), swarm="sw-other", device=pid(A), now=1.0)
    with pytest.raises(InvalidCertificate, match="another swarm"):
        r.add_revocation(foreign)
    fake_root = revoke(OTHER_ROOT_KEY, by="root", swarm=SWARM, device=pid(A), now=1.0)
    with pytest.raises(InvalidCertificate, match="bad signature"):
        r.add_revocation(fake_root)
    assert r.revoked() == frozenset()
    assert r.add_revocation(revoke(ROOT_KEY, by="root", swarm=SWARM, device=pid(B), now=1.0))
    assert r.revoked() == {pid(B)}


def test_a_non_admin_revokes_nobody():
    r = roster(line(A), (cert(P, A, admin=False), cert(A)), (cert(B, A, admin=False), cert(A)))
    assert r.add_revocation(rev(P, A)) is True, "stored: it may be signed by others later"
    assert r.add_revocation(rev(P, B)) is True
    assert r.revoked() == frozenset()
    assert r.ignored() == {pid(A): {pid(P)}, pid(B): {pid(P)}}
    assert admitted(r, A, B, P) == [True, True, True]
    assert r.add_revocation(rev(A, P))
    assert r.revoked() == {pid(P)}, "the only admin alone decides"


def test_one_admin_of_two_revokes_a_phone_but_not_the_other_admin():
    r = roster(line(A), line(B, A), (cert(P, A, admin=False), cert(A)))
    assert r.admins() == {pid(A), pid(B)}
    r.add_revocation(rev(A, B))
    assert r.revoked() == frozenset(), "one of two admins"
    r.add_revocation(rev(B, P))
    assert r.revoked() == {pid(P)}, "a phone falls to one admin"
    assert not r.admits(pid(P))
    r.add_revocation(rev(B, A))
    assert r.revoked() == {pid(P)}, "each revoked the other: neither counts"
    r.add_revocation(rev("root", A, keep=[B, P]))
    assert r.revoked() == {pid(P), pid(A)}, "the root decides"
    assert r.admins() == {pid(B)}


def test_a_device_once_made_an_admin_needs_the_majority_whatever_the_dates():
    # B joined as a phone at 1000 and was made an admin at 3000 by A and C (two of two); a
    # stolen A dates a revocation of B to 2000, when B was not an admin yet: still one of three
    r = roster(line(A), line(C, A), (cert(B, A, admin=False), cert(A)))
    r.add_chain((cert(B, A, at=3000.0), cert(A)))
    r.add_chain((cert(B, C, at=3000.0), cert(C, A), cert(A)))
    assert r.admins() == {pid(A), pid(B), pid(C)}
    r.add_revocation(rev(A, B, at=2000.0))
    assert r.revoked() == frozenset()
    assert r.admits(pid(B))


def test_a_stolen_admin_is_outvoted_and_what_it_did_is_undone():
    r = roster(line(A), line(B, A), line(C, A), (cert(P, A, admin=False), cert(A)))
    r.add_chain((cert(C, B), cert(B, A), cert(A)))
    assert r.admins() == {pid(A), pid(B), pid(C)}
    # a stolen C revokes everyone: the admins stay (one of three), the phone falls
    for target in (A, B, P):
        r.add_revocation(rev(C, target))
    assert r.revoked() == {pid(P)}
    assert r.admins() == {pid(A), pid(B), pid(C)}
    # A and B revoke C: two of three; C's revocation of the phone stops counting
    r.add_revocation(rev(A, C, keep=[]))
    assert r.revoked() == {pid(P)}
    r.add_revocation(rev(B, C, keep=[]))
    assert r.revoked() == {pid(C)}
    assert admitted(r, A, B, C, P) == [True, True, False, True]
    assert r.admins() == {pid(A), pid(B)}
    assert r.ignored() == {pid(A): {pid(C)}, pid(B): {pid(C)}, pid(P): {pid(C)}}


def test_a_stolen_admin_revoked_only_after_another_admin_leaves_loses_its_revocations():
    # four admins; C (still honest) helps A and B revoke D; then C is stolen and revokes the
    # phone; A and B revoke C, a majority only once D is out. What C did to the phone is undone
    # although D's revocation, which C signed, still counts
    r = roster(line(A), line(B, A), line(C, A), line(D, A), (cert(P, A, admin=False), cert(A)))
    assert r.admins() == {pid(A), pid(B), pid(C), pid(D)}
    for signer in (A, B, C):
        r.add_revocation(rev(signer, D, at=2000.0))
    r.add_revocation(rev(C, P, at=3000.0))  # C is the stolen one
    r.add_revocation(rev(A, C, at=4000.0))
    assert r.revoked() == {pid(D), pid(P)}, "A alone is one of three admins"
    r.add_revocation(rev(B, C, at=4000.0))
    assert r.revoked() == {pid(D), pid(C)}
    assert r.admits(pid(P))


def test_a_revoked_device_no_longer_revokes():
    r = roster(line(A), line(B, A), line(C, A), (cert(P, A, admin=False), cert(A)))
    r.add_chain((cert(C, B), cert(B, A), cert(A)))
    r.add_revocation(rev(C, P, at=2000.0))
    assert r.revoked() == {pid(P)}, "C alone: P is no admin"
    r.add_revocation(rev(A, C, at=2009.0))
    r.add_revocation(rev(B, C, at=2009.0))
    assert r.revoked() == {pid(C)}, "C is out, and its revocation of P with it"
    r.add_revocation(rev(A, P, at=2010.0))
    assert r.revoked() == {pid(C), pid(P)}, "A revokes P again"


def test_fact_order_does_not_decide_which_revocations_count():
    facts = [
        line(A),
        line(D, A),
        (cert(E, D), cert(D, A), cert(A)),
        rev(A, D),
        rev(D, A),
        line(E, A),
        rev(E, D),
    ]
    states = []
    for order in (facts, facts[::-1], [facts[i] for i in (3, 0, 6, 1, 4, 2, 5)]):
        r = Roster(SWARM, ROOT)
        for _ in range(3):  # anti-entropy delivers everything again
            for fact in order:
                learn(r, fact)
        states.append(view(r))
    assert states[0] == states[1] == states[2]
    assert states[0][2] == {pid(D)}, "A and E, two of three admins"


def test_a_second_revocation_by_the_same_signer_is_not_news():
    r = roster(line(A), line(D, A))
    late = revoke(D, by=pid(D), swarm=SWARM, device=pid(B), now=9.0)
    early = revoke(D, by=pid(D), swarm=SWARM, device=pid(B), now=3.0)
    assert r.add_revocation(late) is True
    assert r.add_revocation(early) is True, "the earlier replaces it"
    assert r.add_revocation(late) is False
    assert r.to_wire()["revocations"] == [early.to_wire()], "the earliest is kept, everywhere"


def test_find_by_id_or_name():
    r = roster(line(A), line(D, A), (cert(E, D, name="a"), cert(D, A), cert(A)))
    assert r.find(pid(D)).device == pid(D)
    assert r.find("d").device == pid(D)
    assert r.find("nobody") is None
    with pytest.raises(InvalidArgument, match="2 devices are named 'a'") as info:
        r.find("a")
    assert pid(A) in str(info.value)
    assert pid(E) in str(info.value)
    assert "\n" not in str(info.value)
    r.add_revocation(rev(A, E))
    r.add_revocation(rev(D, E))
    assert r.find("a").device == pid(A)
    assert r.find(pid(E)) is None


def test_roster_round_trips_through_bytes():
    r = roster(line(A), line(C, B, A), line(D, A))
    r.add_revocation(rev(A, B, keep=[C]))
    r.add_revocation(rev(D, B, keep=[C]))
    copy = Roster.decode(r.encode())
    assert copy.to_wire() == r.to_wire()
    assert copy.encode() == r.encode()
    assert copy.revoked() == {pid(B)}
    assert admitted(copy, A, C, D) == [True, True, True]


def test_revoked_chains_are_kept_so_their_revocations_stay_checkable():
    r = roster(line(A), (cert(D, A, admin=False), cert(A)))
    r.add_revocation(rev(A, D))
    r.add_revocation(rev(D, E))
    fresh = Roster(SWARM, ROOT)
    fresh.merge_wire(r.to_wire())
    assert fresh.revoked() == {pid(D)}
    assert fresh.to_wire() == r.to_wire()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\xc1", "undecodable"),
        (msgpack.packb([1, 2]), "roster: not a map"),
        (msgpack.packb({1: 2}), "undecodable"),  # strict_map_key
        (
            msgpack.packb({"v": 2, "swarm": SWARM, "root": ROOT, "chains": [], "revocations": []}),
            "unsupported v '2'",
        ),
        (
            msgpack.packb({"v": 1, "swarm": SWARM, "root": b"x", "chains": [], "revocations": []}),
            "32 raw bytes",
        ),
        (
            msgpack.packb(
                {"v": 1, "swarm": SWARM, "root": ROOT, "chains": {}, "revocations": []},
                use_bin_type=True,
            ),
            "chains is not a list",
        ),
    ],
)
def test_malformed_rosters_are_refused(data, needle):
    with pytest.raises(InvalidCertificate, match=needle):  # undecodable bytes are not a message
        Roster.decode(data)


def test_a_malformed_certificate_a_peer_gossips_is_dropped_and_logged(caplog):
    # the peer's path for certificates off the wire: a roster fact, checked by the one checker;
    # the bad one is dropped with one log line and the roster keeps taking good ones
    from homeswarm.swarm._roster_facts import RosterFacts, chain_fact

    r = roster(line(A))
    changed: list[list[str]] = []
    facts = RosterFacts(r, changed.append)
    caplog.set_level("INFO", logger="swarm.roster")
    good = chain_to_wire(line(B))
    for forged, says in [
        ([_with(good[0], 3, 7)], "certificate: name is not a string"),
        ([_with(good[0], 11, b"")], "certificate: a signature is 64 bytes"),
        ([good[0][:5]], "certificate: 5 fields, expected 12"),
        ([], "certificate chain: a certificate chain is a list of 1-16 certificates"),
    ]:
        assert facts.learn(chain_fact(forged)) is False
        assert says in caplog.text
        with pytest.raises(MalformedMessage, match=says):
            chain_from_wire(forged)
    assert not r.admits(pid(B))
    assert changed == []
    assert facts.learn(chain_fact(good)) is True
    assert r.admits(pid(B))


def test_from_wire_verifies_every_entry():
    wire = roster(line(A), line(D)).to_wire()
    wire["chains"][0][0][3] = "evil"
    with pytest.raises(InvalidCertificate, match="bad signature"):
        Roster.from_wire(wire)
    wire = roster(line(A)).to_wire()
    wire["revocations"].append(revoke(E, by=pid(E), swarm=SWARM, device=pid(A), now=1).to_wire())
    with pytest.raises(InvalidCertificate, match="not a known member"):
        Roster.from_wire(wire)


def test_merge_refuses_another_swarm():
    r = roster(line(A))
    other = Roster(swarm_id_of(public_bytes(OTHER_ROOT_KEY)), public_bytes(OTHER_ROOT_KEY))
    with pytest.raises(InvalidCertificate, match="another swarm"):
        r.merge_wire(other.to_wire())
    same_id_other_root = {**r.to_wire(), "root": public_bytes(OTHER_ROOT_KEY)}
    with pytest.raises(InvalidCertificate, match="another swarm"):
        r.merge_wire(same_id_other_root)


def test_merge_skips_bad_entries_and_reports_changes():
    source = roster(line(A), line(C, B, A), line(D, A))
    wire = source.to_wire()
    wire["chains"].append("junk")
    wire["chains"].append([cert(E, D).to_wire(), dataclasses.replace(cert(D)).to_wire()[:3]])
    wire["revocations"].append(["junk"])
    wire["revocations"].append(rev(E, D).to_wire())
    r = roster(line(A))
    assert r.merge_wire(wire) == sorted([pid(C), pid(D)])
    assert r.revoked() == frozenset()
    assert r.merge_wire(wire) == []
    source.add_revocation(rev(A, B))
    source.add_revocation(rev(D, B))
    assert r.merge_wire(source.to_wire()) == sorted([pid(B), pid(C)])
    assert not r.admits(pid(C)), "cut off with B: nobody kept it"


def test_merging_twice_does_not_verify_again(monkeypatch):
    source = roster(line(A), line(C, B, A), line(D))
    source.add_revocation(rev(D, E))
    calls = []
    real = certs._signature_ok

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(certs, "_signature_ok", counting)
    r = Roster(SWARM, ROOT)
    r.merge_wire(source.to_wire())
    first = len(calls)
    assert first == 5, "A, B, C by B, D and one revocation"
    r.merge_wire(source.to_wire())
    r.add_chain(line(C, B, A))
    assert len(calls) == first


def test_the_verification_cache_is_keyed_by_the_whole_certificate():
    r = roster(line(B, A))
    twisted = (dataclasses.replace(cert(B, A), name="evil"), cert(A))  # same device and signature
    with pytest.raises(InvalidCertificate, match="bad signature"):
        r.add_chain(twisted)


# -- convergence ----------------------------------------------------------------------------------


def _pool():
    chains = [
        line(A),
        line(B, A),
        line(C, B, A),
        (cert(C, A), cert(A)),
        (cert(D, A, admin=False), cert(A)),
        (cert(E, C), cert(C, A), cert(A)),
        (cert(F, E), cert(E, C), cert(C, A), cert(A)),
        (cert(P, B, admin=False), cert(B, A), cert(A)),
    ]
    revs = [
        rev(C, A),
        rev(C, B),
        rev(A, C, keep=[E]),
        rev(B, C),
        rev(D, A),
        rev("root", E),
        rev(F, F),
        rev(A, P),
        rev(B, P),
    ]
    return chains + revs


POOL = _pool()
DEVICES = [pid(k) for k in (A, B, C, D, E, F, P)]


def learn(r, item):
    try:
        if isinstance(item, Revocation):
            r.add_revocation(item)
        else:
            r.add_chain(item)
    except InvalidCertificate:
        pass


def view(r):
    return r.to_wire(), [r.admits(d) for d in DEVICES], r.revoked(), r.members()


items = st.lists(st.sampled_from(range(len(POOL))), unique=True)


@settings(max_examples=40, deadline=None)
@given(st.lists(items, min_size=1, max_size=4), st.data())
def test_merging_rosters_in_any_order_converges(learned, data):
    replicas = []
    for order in learned:
        r = Roster(SWARM, ROOT)
        for i in order:
            learn(r, POOL[i])
        replicas.append(r.to_wire())
    orders = [data.draw(st.permutations(range(len(replicas)))) for _ in range(2)]
    merged = []
    for order in orders:
        m = Roster(SWARM, ROOT)
        for i in order:
            m.merge_wire(replicas[i])
        merged.append(m)
    assert view(merged[0]) == view(merged[1])
    m = merged[0]
    assert m.merge_wire(m.to_wire()) == [], "idempotent"
    assert view(Roster.from_wire(m.to_wire())) == view(m)


class Gossip(RuleBasedStateMachine):
    """Replicas learn items in any order and gossip pairwise; a full exchange makes them agree."""

    def __init__(self):
        super().__init__()
        self.replicas = [Roster(SWARM, ROOT) for _ in range(3)]

    @rule(r=st.integers(0, 2), i=st.integers(0, len(POOL) - 1))
    def learn(self, r, i):
        learn(self.replicas[r], POOL[i])

    @rule(src=st.integers(0, 2), dst=st.integers(0, 2))
    def gossip(self, src, dst):
        before = self.replicas[src].to_wire()
        self.replicas[dst].merge_wire(before)
        after = self.replicas[dst]
        assert {*map(_key, before["chains"])} <= {*map(_key, after.to_wire()["chains"])}
        stored = {(r[2], r[3]) for r in after.to_wire()["revocations"]}
        assert {(r[2], r[3]) for r in before["revocations"]} <= stored

    @rule()
    def settle_by_facts(self):
        # Fact-by-fact gossip, as peers do it: every replica sends each entry of its state to every
        # other, one add_chain / add_revocation at a time, until nothing changes.
        for _ in range(len(POOL)):
            before = [r.to_wire() for r in self.replicas]
            for src in before:
                for dst in self.replicas:
                    for chain in src["chains"]:
                        learn(dst, chain_from_wire(chain))
                    for rev in src["revocations"]:
                        learn(dst, Revocation.from_wire(rev))
            if [r.to_wire() for r in self.replicas] == before:
                break
        views = [view(r) for r in self.replicas]
        assert views[0] == views[1] == views[2]

    @invariant()
    def a_full_exchange_converges(self):
        wires = [r.to_wire() for r in self.replicas]
        views = []
        for order in ((0, 1, 2), (2, 1, 0)):
            m = Roster(SWARM, ROOT)
            for i in order:
                m.merge_wire(wires[i])
            views.append(view(m))
        assert views[0] == views[1]

    @invariant()
    def admission_follows_the_state(self):
        for r in self.replicas:
            assert view(Roster.from_wire(r.to_wire())) == view(r)
            assert r.admins() <= {c.device for c in r.members()}
            assert not r.revoked() & {c.device for c in r.members()}


def _key(chain_wire):
    return tuple(c[11] for c in chain_wire)


TestGossip = Gossip.TestCase
TestGossip.settings = settings(
    max_examples=15,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_a_thief_cannot_swap_a_devices_age_key():
    other_age = str(pyrage.x25519.Identity.generate().to_public())
    r = roster(line(A), line(B, A), line(C, A), (cert(P, A, admin=False), cert(A)))
    # a stolen admin B certifies P again, as early as it can, with its own age key
    forged = issue_certificate(
        B,
        issuer=pid(B),
        swarm=SWARM,
        device=pid(P),
        name="p",
        role="laptop",
        age_recipient=other_age,
        now=1000.0,
    )
    r.add_chain((forged, cert(B, A), cert(A)))
    assert r.admits(pid(P))
    assert r.conflicted() == {pid(P)}, "nothing is sealed to P while its keys are in doubt"
    # the admins revoke B: P, certified by A too, needs no keeping, and the forgery goes
    r.add_chain((cert(C, B), cert(B, A), cert(A)))
    assert r.certified_by(pid(B)) == []
    for signer in (A, C):
        keep = r.certified_by(pid(B))
        r.add_revocation(
            revoke(signer, by=pid(signer), swarm=SWARM, device=pid(B), now=2000.0, keep=keep)
        )
    assert r.revoked() == {pid(B)}
    assert r.conflicted() == frozenset()
    assert r.certificate(pid(P)).age_recipient == AGE


# -- time: later admins never change an earlier outcome -------------------------------------------


def verifiers_scenario():
    """Server S=A (the root's admin) invites laptop L=B as an admin while alone, then phone P
    and tablet T=C; both admins revoke P."""
    r = roster(
        (cert(A, at=100.0),),
        (cert(B, A, at=200.0), cert(A, at=100.0)),
        (cert(P, A, admin=False, at=300.0), cert(A, at=100.0)),
        (cert(C, A, admin=False, at=400.0), cert(A, at=100.0)),
    )
    r.add_revocation(rev(B, P, at=500.0))
    assert r.revoked() == {pid(P)}, "one admin revokes a phone"
    r.add_revocation(rev(A, P, at=600.0))
    return r


def test_recovering_a_device_later_neither_demotes_an_admin_nor_unrevokes_a_device():
    r = verifiers_scenario()
    assert r.admins() == {pid(A), pid(B)}
    assert r.revoked() == {pid(P)}
    # ``swarm recover CODE --home T``: the root certifies the tablet an admin, later
    r.add_chain((cert(C, at=700.0),))
    assert r.admins() == {pid(A), pid(B), pid(C)}, "L stays an admin: S alone made it, alone"
    assert r.revoked() == {pid(P)}, "P's revocation counted when S and L were the admins"
    assert not r.admits(pid(P))


def test_granting_an_admin_later_neither_demotes_an_admin_nor_unrevokes_a_device():
    r = verifiers_scenario()
    r.add_chain((cert(C, A, at=700.0), cert(A, at=100.0)))
    r.add_chain((cert(C, B, at=710.0), cert(B, A, at=200.0), cert(A, at=100.0)))
    assert r.admins() == {pid(A), pid(B), pid(C)}
    assert r.revoked() == {pid(P)}


def test_a_backdated_revocation_does_not_count():
    # A was alone until 200; B and C are admins since; A, stolen, dates a revocation of C
    # (certified at 400) back to 150, when it was the only admin
    r = roster(
        (cert(A, at=100.0),),
        (cert(B, A, at=200.0), cert(A, at=100.0)),
        (cert(C, A, at=400.0), cert(A, at=100.0)),
        (cert(C, B, at=410.0), cert(B, A, at=200.0), cert(A, at=100.0)),
    )
    assert r.admins() == {pid(A), pid(B), pid(C)}
    r.add_revocation(rev(A, C, at=150.0))
    assert r.revoked() == frozenset(), "dated before C's certificate"
    r.add_revocation(rev(A, B, at=150.0))
    assert r.revoked() == frozenset(), "dated before B's certificate"
    r.add_revocation(rev(C, B, at=50.0))
    assert r.revoked() == frozenset(), "dated before its signer (and its target) existed"


def test_a_backdated_admin_certificate_does_not_count():
    # B became an admin at 200; an admin certificate it dates 150 (before that) makes nobody
    # an admin, and a certificate it dates before it was an admin admits nobody
    r = roster((cert(A, at=100.0),), (cert(B, A, at=200.0), cert(A, at=100.0)))
    r.add_chain((cert(D, A, at=300.0), cert(A, at=100.0)))  # A, B, D: D alone by A (1 of 2)
    assert r.admins() == {pid(A), pid(B)}
    r.add_chain((cert(D, B, at=150.0), cert(B, A, at=200.0), cert(A, at=100.0)))
    assert r.admins() == {pid(A), pid(B)}, "B's signature is dated before B was an admin"
    r.add_chain((cert(E, B, admin=False, at=150.0), cert(B, A, at=200.0), cert(A, at=100.0)))
    assert not r.admits(pid(E))
    r.add_chain((cert(D, B, at=310.0), cert(B, A, at=200.0), cert(A, at=100.0)))
    assert r.admins() == {pid(A), pid(B), pid(D)}, "dated after: two of two"
