"""Whatever a peer sends, the listener closes that connection, logs why, and keeps serving.

Hypothesis generates the bytes: raw noise, well-framed noise, and well-framed msgpack of the
wrong shape. Each example runs against a fresh listener, over both transports.
"""

from __future__ import annotations

import msgpack
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeswarm.transports import encode_frame
from homeswarm.transports.testing import Libp2pFixture, MemoryFixture, check_garbage

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=12,
)

garbage = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.binary(max_size=300).map(encode_frame),
    msgpack_values.map(lambda v: encode_frame(msgpack.packb(v))),
    st.tuples(st.integers(0, 5), msgpack_values).map(
        lambda kv: encode_frame(msgpack.packb([1, kv[0], 1, kv[1]]))
    ),
)


def budget(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


@budget(60)
@given(data=garbage)
def test_memory_transport_survives_garbage(data):
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(check_garbage, MemoryFixture(), data, clock=clock)


@budget(15)
@given(data=garbage)
def test_libp2p_transport_survives_garbage(data):
    trio.run(check_garbage, Libp2pFixture(), data)


async def test_violation_is_logged(caplog, autojump_clock):
    caplog.set_level("WARNING", logger="transports.connection")
    await check_garbage(MemoryFixture(), encode_frame(msgpack.packb({"wrong": "shape"})))
    assert any("closing connection" in r.getMessage() for r in caplog.records)
