"""The one wire checker: its rules, and that junk from a peer is only ever a MalformedMessage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeswarm.errors import MalformedMessage, ProtocolViolation
from homeswarm.swarm._device import STATE_WIRE, DeviceState
from homeswarm.swarm._join import JOIN_REPLY
from homeswarm.swarm._membership import (
    Accusation,
    Alive,
    Fact,
    Gossip,
    Nack,
    Ping,
    Sync,
    decode_message,
    encode_message,
)
from homeswarm.swarm._pairing import PAIR_REQUEST
from homeswarm.swarm._roster_facts import FACT
from homeswarm.vault import RejectedRecord, _sync
from homeswarm.vault._records import (
    Epoch,
    Seal,
    Snapshot,
    Update,
    record_from_wire,
    record_to_wire,
)
from homeswarm.wire import Field, Schema

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=16)
        | st.dictionaries(st.text(max_size=5) | st.integers() | st.binary(max_size=3), inner)
    ),
    max_leaves=30,
)

DIGEST = bytes(16)
ORIGIN = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE"
STATE = DeviceState("pixel", "phone", (), 50.0, False, 60.0, 1.0, 2.0, (), False, "inline", (), 3)
# every schema a peer's message meets, each with one good message of its kind
GOOD = [
    (STATE_WIRE, STATE.to_wire()),
    (PAIR_REQUEST, {"op": "pair", "invite": b"i" * 8, "proof": b"p", "request": b"r"}),
    (FACT, ["revoke", [1, "swarm"]]),
    (JOIN_REPLY, {"chain": [[1]], "roster": {"v": 1}}),
    (
        _sync.SYNC_REQUEST,
        {"v": 1, "swarm": "s", "vec": {"public": {ORIGIN: 3}}, "kd": DIGEST, "want": [DIGEST]},
    ),
    (
        _sync.SYNC_REPLY,
        {"v": 1, "vec": {}, "kd": DIGEST, "ids": None, "recs": [[1, 2]], "more": False},
    ),
    (_sync.PUSH_MESSAGE, {"v": 1, "swarm": "s", "recs": []}),
    (_sync.PUSH_REPLY, {"v": 1, "vec": {"private": {}}, "kd": DIGEST, "refused": 0}),
]
IDS = [schema.what for schema, _ in GOOD]
SIG = b"s" * 64
AGE = "age1" + "q" * 58
RECORDS = [  # one well-formed record of each kind, [kind, body]
    ("u", [1, "sw", "public", ORIGIN, 1, 1, ORIGIN, b"c", SIG]),
    ("s", [1, "sw", "public", ORIGIN, 1, ORIGIN, [[ORIGIN, 2]], b"c", SIG]),
    ("e", [1, "sw", "public", 1, ORIGIN, AGE, [ORIGIN], SIG]),
    ("k", [1, "sw", "public", 1, ORIGIN, ORIGIN, b"k", ORIGIN, SIG]),
]


@pytest.mark.parametrize(("schema", "good"), GOOD, ids=IDS)
def test_a_good_message_passes_with_its_fields_by_name(schema, good):
    fields = schema.check(good)
    assert list(fields) == [f.name for f in schema.fields]
    if isinstance(good, dict):
        assert all(fields[name] == good.get(name) for name in fields)
    else:
        assert list(fields.values()) == good


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(GOOD), junk, st.data())
def test_junk_and_damaged_messages_are_only_ever_malformed(case, value, data):
    schema, good = case
    with contextlib.suppress(MalformedMessage):
        schema.check(value)
    damaged = list(good) if isinstance(good, list) else dict(good)
    if isinstance(damaged, list):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = value
    else:
        damaged[data.draw(st.sampled_from(sorted(damaged)))] = value
    with contextlib.suppress(MalformedMessage):
        schema.check(damaged)


MEMBERSHIP = [
    encode_message(m)
    for m in (
        Ping(7, ORIGIN, (Alive(ORIGIN, 2, 3, b"state", SIG), Fact(b"certificate"))),
        Gossip((Accusation("s", ORIGIN, 2, ORIGIN, SIG), Accusation("d", ORIGIN, 3, ORIGIN, SIG))),
        Sync(True, ()),
        Nack(9),
    )
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MEMBERSHIP), junk, st.data())
def test_a_damaged_membership_message_is_only_ever_malformed(good, value, data):
    assert encode_message(decode_message(good)) == good
    damaged = list(good)
    damaged[data.draw(st.integers(0, len(damaged) - 1))] = value
    records = good[-1]
    if damaged[-1] is records and type(records) is list and records and data.draw(st.booleans()):
        record = list(records[0])  # and one field of its first record too
        record[data.draw(st.integers(0, len(record) - 1))] = value
        damaged[-1] = [record, *records[1:]]
    with contextlib.suppress(MalformedMessage):
        decode_message(damaged)


fields = st.builds(
    lambda types, bounds, optional, equals: Field(
        "f", *types, least=bounds[0], most=bounds[1], optional=optional, **equals
    ),
    st.lists(st.sampled_from([int, float, str, bytes, bool, list, dict]), max_size=3, unique=True),
    st.tuples(st.none() | st.integers(0, 5), st.none() | st.integers(3, 40)),
    st.booleans(),
    st.just({}) | st.builds(lambda v: {"equals": v}, st.integers(0, 3) | st.text(max_size=2)),
)


@settings(max_examples=500, deadline=None)
@given(fields, junk)
def test_the_quick_yes_is_only_said_of_a_value_the_full_check_passes(field, value):
    if field.accepts(value):
        assert field.problem(value) is None


def test_well_formed_records_pass():
    for kind, body in RECORDS:
        assert record_to_wire(record_from_wire([kind, body])) == [kind, body]


def test_the_error_is_a_protocol_violation_that_names_the_message_and_the_field():
    assert issubclass(MalformedMessage, ProtocolViolation)
    with pytest.raises(MalformedMessage, match=r"^vault push: recs is not a list$"):
        _sync.PUSH_MESSAGE.check({"v": 1, "swarm": "s", "recs": "x"})
    with pytest.raises(MalformedMessage, match=r"^vault push: swarm is missing$"):
        _sync.PUSH_MESSAGE.check({"v": 1, "recs": []})
    with pytest.raises(MalformedMessage, match=r"^vault push: not a map$"):
        _sync.PUSH_MESSAGE.check([1, "s", []])


def test_a_bool_is_not_a_number_unless_asked_for():
    schema = Schema("m", Field("n", int), Field("b", bool, int))
    assert schema.check({"n": 1, "b": True}) == {"n": 1, "b": True}
    with pytest.raises(MalformedMessage, match="n is not an integer"):
        schema.check({"n": True, "b": 1})


def test_bounds_are_values_for_numbers_and_lengths_for_the_rest():
    schema = Schema("m", Field("n", int, least=1, most=3), Field("s", str, bytes, most=2))
    schema.check({"n": 3, "s": b"ab"})
    with pytest.raises(MalformedMessage, match="n is under 1"):
        schema.check({"n": 0, "s": ""})
    with pytest.raises(MalformedMessage, match="s is over 2"):
        schema.check({"n": 1, "s": "abc"})


def test_nested_items_keys_and_values_are_checked():
    schema = Schema(
        "m",
        Field("xs", list, items=Field("x", bytes, least=2, most=2)),
        Field("map", dict, keys=Field("k", str), values=Field("v", int, optional=True)),
    )
    schema.check({"xs": [b"ab"], "map": {"a": None, "b": 2}})
    with pytest.raises(MalformedMessage, match="x is under 2"):
        schema.check({"xs": [b"ab", b"a"], "map": {}})
    with pytest.raises(MalformedMessage, match="k is not a string"):
        schema.check({"xs": [], "map": {1: 1}})
    with pytest.raises(MalformedMessage, match="v is not an integer"):
        schema.check({"xs": [], "map": {"a": "1"}})


def test_a_predicate_that_raises_is_a_problem_not_a_crash():
    schema = Schema("m", Field("k", valid={"a"}.__contains__, says="k is unknown"))
    schema.check({"k": "a"})
    with pytest.raises(MalformedMessage, match="k is unknown"):
        schema.check({"k": ["unhashable"]})


def test_a_versioned_list_says_version_before_length():
    schema = Schema("m", Field("v", int, equals=1), Field("x", str), positional=True)
    assert schema.check([1, "a"]) == {"v": 1, "x": "a"}
    with pytest.raises(MalformedMessage, match="unsupported v '2'"):
        schema.check([2, "a", "from the future"])
    with pytest.raises(MalformedMessage, match="v is not an integer"):
        schema.check([True, "a"])
    with pytest.raises(MalformedMessage, match="3 fields, expected 2"):
        schema.check([1, "a", "b"])


def test_a_map_ignores_keys_it_does_not_name():
    schema = Schema("m", Field("a", int))
    assert schema.check({"a": 1, "newer": "field"}) == {"a": 1}


@settings(max_examples=300, deadline=None)
@given(junk, st.data())
def test_a_damaged_vault_record_is_only_ever_rejected(value, data):
    # a record's schema names its own error: a bad record is refused, its connection stays open
    with contextlib.suppress(RejectedRecord):
        record_from_wire(value)
    kind, body = data.draw(st.sampled_from(RECORDS))
    body = list(body)
    body[data.draw(st.integers(0, len(body) - 1))] = value
    with contextlib.suppress(RejectedRecord):
        record_from_wire([kind, body])


def test_each_record_schema_lists_the_records_fields_in_order():
    for cls in (Update, Snapshot, Epoch, Seal):
        names = [f.name for f in cls._WIRE.fields]
        assert names == ["version", *cls.__match_args__], cls
