from __future__ import annotations

import base64
import random
import zlib

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from homeswarm.swarm._certs import Grant
from homeswarm.swarm._home import public_bytes, swarm_id_of
from homeswarm.swarm._invite import InvalidCode, InviteCode, Invites, pairing_proof
from homeswarm.transports import InvalidArgument, peer_id_from_public_key


def pid(n: int) -> str:
    return peer_id_from_public_key(
        public_bytes(Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32))
    )


SWARM = swarm_id_of(b"\x01" * 32)
OTHER_SWARM = swarm_id_of(b"\x02" * 32)
INVITER, JOINER, OTHER = pid(1), pid(2), pid(3)
ADDRS = ("/ip4/192.168.1.20/tcp/4747", "/ip6/fe80::1/tcp/4747")
NOW = 1_700_000_000.0
REQUEST = b"name=phone role=phone"


def code(**changes):
    fields = {
        "swarm": SWARM,
        "inviter": INVITER,
        "addrs": ADDRS,
        "invite_id": b"\x07" * 8,
        "secret": b"\x09" * 16,
        "expires_at": NOW + 600,
    }
    return InviteCode(**(fields | changes))


def proof(c, joiner=JOINER, request=REQUEST):
    return pairing_proof(c.secret, swarm=c.swarm, inviter=c.inviter, joiner=joiner, request=request)


def wrap(payload: bytes) -> str:
    data = payload + zlib.crc32(payload).to_bytes(4, "big")
    return "swarm1-" + base64.b32encode(data).decode().rstrip("=").lower()


# -- the code -------------------------------------------------------------------------------------


def test_code_round_trips():
    c = code()
    text = c.encode()
    assert text.startswith("swarm1-")
    assert text == text.lower()
    assert text.split() == [text]
    assert InviteCode.decode(text) == c
    assert InviteCode.decode(code(addrs=()).encode()).addrs == ()


def test_decoding_ignores_case_whitespace_and_dashes():
    text = code().encode()
    body = text[len("swarm1-") :]
    grouped = "-".join(body[i : i + 5] for i in range(0, len(body), 5))
    assert InviteCode.decode("  SWARM1-" + grouped.upper() + "\n") == code()
    assert InviteCode.decode(text[:40] + "\n  " + text[40:]) == code()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "not a swarm pairing code"),
        ("hello there", "not a swarm pairing code"),
        ("sw7qo53dp5czgn54jcbxych6dv", "not a swarm pairing code"),
        ("swarm2-abcdefgh", "another version"),
        ("swarm1-", "mistyped or truncated"),
        ("swarm1-abc!", "mistyped or truncated"),
        ("swarm1-a0", "mistyped or truncated"),
    ],
)
def test_bad_codes_say_what_is_wrong(text, needle):
    with pytest.raises(InvalidCode, match=needle) as info:
        InviteCode.decode(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cut", [1, 2, 8, 30])
def test_truncated_codes_are_detected(cut):
    with pytest.raises(InvalidCode, match="mistyped or truncated"):
        InviteCode.decode(code().encode()[:-cut])


TEXT = code().encode()
REPLACEMENTS = "abcdefghijklmnopqrstuvwxyz0123456789!_."


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(TEXT) - 1), st.sampled_from(REPLACEMENTS))
def test_any_single_changed_character_is_detected(position, char):
    if char == TEXT[position]:
        return
    changed = TEXT[:position] + char + TEXT[position + 1 :]
    with pytest.raises(InvalidCode):
        InviteCode.decode(changed)


def test_unused_bits_of_the_last_letter_must_be_zero():
    # The data's bit length is rarely a multiple of 5: the last letter carries unused low bits.
    # Setting them would decode to the same bytes; only the canonical spelling is accepted.
    text = code().encode()
    last = "abcdefghijklmnopqrstuvwxyz234567".index(text[-1])
    twins = [text[:-1] + "abcdefghijklmnopqrstuvwxyz234567"[last ^ bit] for bit in (1, 2, 4, 8, 16)]
    for twin in twins:
        with pytest.raises(InvalidCode, match="mistyped"):
            InviteCode.decode(twin)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"\xc1", "contents are malformed"),
        (msgpack.packb({"a": 1}), "contents are malformed"),
        (msgpack.packb([1, 2, 3]), "contents are malformed"),
        (msgpack.packb([2, SWARM, INVITER, [], b"1" * 8, b"2" * 16, NOW]), "another version"),
        (
            msgpack.packb([1, SWARM, "not-a-peer", [], b"1" * 8, b"2" * 16, NOW]),
            "malformed: invite code: inviter is not",
        ),
        (
            msgpack.packb([1, SWARM, INVITER, "/ip4/1.2.3.4", b"1" * 8, b"2" * 16, NOW]),
            "malformed: addrs is not a list",
        ),
        (
            msgpack.packb([1, SWARM, INVITER, [], b"1" * 8, b"2" * 15, NOW], use_bin_type=True),
            "secret is 16 bytes",
        ),
        (
            msgpack.packb([1, SWARM, INVITER, [], b"1" * 8, b"2" * 16, 5], use_bin_type=True),
            "expires_at",
        ),
    ],
)
def test_well_checksummed_but_malformed_contents(payload, needle):
    with pytest.raises(InvalidCode, match=needle):
        InviteCode.decode(wrap(payload))


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"swarm": ""}, "swarm id"),
        ({"inviter": "root"}, "inviter"),
        ({"addrs": ["/ip4/1.2.3.4/tcp/1"]}, "tuple"),
        ({"addrs": ("ip4/1.2.3.4",)}, "not a multiaddr"),
        ({"addrs": ("/ip4/1.2.3.4/tcp/1 x",)}, "not a multiaddr"),
        ({"addrs": (f"/ip4/1.2.3.4/tcp/1/p2p/{INVITER}",)}, "without"),
        ({"addrs": ("/ip4/1.2.3.4/tcp/1",) * 17}, "at most 16"),
        ({"invite_id": b"1234567"}, "invite_id is 8 bytes"),
        ({"secret": "s" * 16}, "secret is 16 bytes"),
        ({"expires_at": float("inf")}, "expires_at"),
    ],
)
def test_codes_are_validated_when_built(changes, needle):
    with pytest.raises(InvalidArgument, match=needle):
        code(**changes)


def test_relay_addresses_are_allowed():
    relayed = f"/ip4/1.2.3.4/tcp/1/p2p/{OTHER}/p2p-circuit"
    assert code(addrs=(relayed,)).addrs == (relayed,)


# -- the proof ------------------------------------------------------------------------------------


def test_proof_binds_every_field():
    base = dict(swarm=SWARM, inviter=INVITER, joiner=JOINER, request=REQUEST)
    reference = pairing_proof(b"s" * 16, **base)
    assert len(reference) == 32
    assert pairing_proof(b"s" * 16, **base) == reference
    assert pairing_proof(b"t" * 16, **base) != reference
    for field, value in [
        ("swarm", OTHER_SWARM),
        ("inviter", OTHER),
        ("joiner", OTHER),
        ("request", REQUEST + b"!"),
    ]:
        assert pairing_proof(b"s" * 16, **(base | {field: value})) != reference, field


def test_proof_fields_are_length_prefixed():
    one = pairing_proof(b"s" * 16, swarm="ab", inviter="c", joiner="d", request=b"")
    two = pairing_proof(b"s" * 16, swarm="a", inviter="bc", joiner="d", request=b"")
    assert one != two


# -- the inviter's bookkeeping --------------------------------------------------------------------


def invites(swarm=SWARM):
    return Invites(swarm, INVITER)


def test_create_makes_fresh_codes_from_the_rng():
    inv = invites()
    first = inv.create(addrs=ADDRS, ttl=600, now=NOW, rng=random.Random(1))
    second = inv.create(addrs=ADDRS, ttl=600, now=NOW, rng=random.Random(2))
    assert first.swarm == SWARM
    assert first.inviter == INVITER
    assert first.addrs == ADDRS
    assert first.expires_at == NOW + 600
    assert first.invite_id != second.invite_id
    assert first.secret != second.secret
    again = invites().create(addrs=ADDRS, ttl=600, now=NOW, rng=random.Random(1))
    assert again == first, "same seed, same code"
    assert inv.outstanding(NOW) == 2


def test_create_never_reuses_an_id():
    inv = invites()
    first = inv.create(addrs=(), ttl=600, now=NOW, rng=random.Random(1))
    second = inv.create(addrs=(), ttl=600, now=NOW, rng=random.Random(1))
    assert first.invite_id != second.invite_id
    inv.redeem(first.invite_id, proof(first), joiner=JOINER, request=REQUEST, now=NOW)
    inv.redeem(second.invite_id, proof(second), joiner=JOINER, request=REQUEST, now=NOW)


@pytest.mark.parametrize("ttl", [0, -1, 24 * 3600 + 1, float("nan"), float("inf"), True])
def test_ttl_is_bounded(ttl):
    with pytest.raises(InvalidArgument, match="24 hours"):
        invites().create(addrs=ADDRS, ttl=ttl, now=NOW, rng=random.Random(1))


def test_ttl_of_seven_days_is_allowed():
    c = invites().create(addrs=ADDRS, ttl=24 * 3600, now=NOW, rng=random.Random(1))
    assert c.expires_at == NOW + 24 * 3600


def new(inv=None, ttl=600.0):
    inv = inv or invites()
    return inv, inv.create(addrs=ADDRS, ttl=ttl, now=NOW, rng=random.Random(5))


def test_a_code_redeems_once():
    inv, c = new()
    decoded = InviteCode.decode(c.encode())
    inv.redeem(decoded.invite_id, proof(decoded), joiner=JOINER, request=REQUEST, now=NOW + 1)
    assert inv.outstanding(NOW + 1) == 0
    with pytest.raises(InvalidCode, match=r"^this code was already used$"):
        inv.redeem(c.invite_id, proof(c), joiner=JOINER, request=REQUEST, now=NOW + 2)


def test_a_code_expires():
    inv, c = new()
    assert inv.outstanding(c.expires_at - 0.001) == 1
    assert inv.outstanding(c.expires_at) == 0
    assert not c.expired(c.expires_at - 0.001)
    assert c.expired(c.expires_at)
    with pytest.raises(InvalidCode, match=r"^this code expired$"):
        inv.redeem(c.invite_id, proof(c), joiner=JOINER, request=REQUEST, now=c.expires_at)
    inv.redeem(c.invite_id, proof(c), joiner=JOINER, request=REQUEST, now=c.expires_at - 0.001)


def test_a_wrong_secret_burns_the_code():
    inv, c = new()
    wrong = pairing_proof(b"\0" * 16, swarm=SWARM, inviter=INVITER, joiner=JOINER, request=REQUEST)
    with pytest.raises(InvalidCode, match=r"^the code's secret does not match$"):
        inv.redeem(c.invite_id, wrong, joiner=JOINER, request=REQUEST, now=NOW)
    with pytest.raises(InvalidCode, match="already used"):
        inv.redeem(c.invite_id, proof(c), joiner=JOINER, request=REQUEST, now=NOW)


def test_asking_more_than_the_grant_is_refused_without_using_the_code():
    inv = invites()
    c = inv.create(addrs=ADDRS, ttl=600, now=NOW, rng=random.Random(5), grant=Grant(("public",)))

    def request(scopes):
        return msgpack.packb(["phone", "phone", "age1x", scopes, False], use_bin_type=True)

    greedy = request(["public", "personal"])
    with pytest.raises(InvalidArgument, match="allows scopes public, not personal"):
        inv.redeem(c.invite_id, proof(c, request=greedy), joiner=JOINER, request=greedy, now=NOW)
    assert inv.outstanding(NOW) == 1
    modest = request(["public"])
    grant = inv.redeem(
        c.invite_id, proof(c, request=modest), joiner=JOINER, request=modest, now=NOW
    )
    assert grant.scopes == ("public",)
    with pytest.raises(InvalidCode, match="already used"):
        inv.redeem(c.invite_id, proof(c, request=modest), joiner=JOINER, request=modest, now=NOW)


@pytest.mark.parametrize("bad", [b"", b"x" * 32, "text", None])
def test_malformed_proofs_do_not_match(bad):
    inv, c = new()
    with pytest.raises(InvalidCode, match="does not match"):
        inv.redeem(c.invite_id, bad, joiner=JOINER, request=REQUEST, now=NOW)


def test_the_proof_is_bound_to_the_joiner_and_its_request():
    inv, c = new()
    with pytest.raises(InvalidCode, match="does not match"):
        inv.redeem(c.invite_id, proof(c, joiner=JOINER), joiner=OTHER, request=REQUEST, now=NOW)
    inv, c = new()
    with pytest.raises(InvalidCode, match="does not match"):
        inv.redeem(c.invite_id, proof(c), joiner=JOINER, request=b"role=server", now=NOW)


def test_a_foreign_code_decodes_but_is_not_ours():
    other = Invites(OTHER_SWARM, OTHER)
    foreign = other.create(addrs=ADDRS, ttl=600, now=NOW, rng=random.Random(9))
    decoded = InviteCode.decode(foreign.encode())
    assert decoded.swarm == OTHER_SWARM
    inv, _ = new()
    with pytest.raises(InvalidCode, match=r"^this code was not issued by this device$"):
        inv.redeem(decoded.invite_id, proof(decoded), joiner=JOINER, request=REQUEST, now=NOW)
    with pytest.raises(InvalidCode, match="not issued"):
        inv.redeem("nope", b"", joiner=JOINER, request=REQUEST, now=NOW)


def test_prune_forgets_an_hour_after_expiry():
    inv, used = new(ttl=600.0)
    inv.redeem(used.invite_id, proof(used), joiner=JOINER, request=REQUEST, now=NOW)
    _, expired = new(inv, ttl=60.0)
    _, later = new(inv, ttl=7200.0)

    def attempt(c, now):
        inv.redeem(c.invite_id, proof(c), joiner=JOINER, request=REQUEST, now=now)

    t = expired.expires_at + 3600  # exactly an hour after: still remembered
    inv.prune(t)
    with pytest.raises(InvalidCode, match="expired"):
        attempt(expired, t)
    with pytest.raises(InvalidCode, match="already used"):
        attempt(used, t)
    t = used.expires_at + 3600.001
    inv.prune(t)
    with pytest.raises(InvalidCode, match="not issued"):
        attempt(expired, t)
    with pytest.raises(InvalidCode, match="not issued"):
        attempt(used, t)
    assert inv.outstanding(t) == 1
    attempt(later, t)
    assert inv.outstanding(t) == 0


def test_invalid_code_is_a_bad_argument():
    assert issubclass(InvalidCode, InvalidArgument)
    assert issubclass(InvalidCode, ValueError)


def test_invites_validate_their_owner():
    with pytest.raises(InvalidArgument, match="peer id"):
        Invites(SWARM, "root")
    with pytest.raises(InvalidArgument, match="swarm id"):
        Invites("", INVITER)


def test_making_a_code_forgets_codes_long_expired():
    inv, old = new(ttl=60.0)
    _, fresh = new(inv, ttl=60.0)
    assert fresh.expires_at == old.expires_at
    t = old.expires_at + 3600.001
    inv.create(addrs=ADDRS, ttl=60.0, now=t, rng=random.Random(9))
    with pytest.raises(InvalidCode, match="not issued"):
        inv.redeem(old.invite_id, proof(old), joiner=JOINER, request=REQUEST, now=t)
