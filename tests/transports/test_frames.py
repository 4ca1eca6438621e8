"""``peek_kind``: an envelope's kind and body read from a frame's first bytes, as decoding gives."""

from __future__ import annotations

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from homeswarm.transports import Envelope, Kind, encode_frame, peek_kind

BODIES = st.one_of(
    st.none(),
    st.integers(-(2**31), 2**31),
    st.text(max_size=40),
    st.lists(st.one_of(st.integers(0, 300), st.text(max_size=8)), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=3),
)


@given(kind=st.sampled_from(Kind), ident=st.integers(0, 2**40), body=BODIES)
def test_a_peek_gives_the_kind_and_the_body_that_decoding_gives(kind, ident, body):
    if kind is Kind.ERROR:
        body = str(body)
    frame = encode_frame(Envelope(kind, ident, body).pack())
    peek = peek_kind(frame)
    if ident >= 128:  # (an id of more than a byte: the caller decodes)
        assert peek is None
        return
    assert peek is not None
    peeked, at = peek
    assert peeked is kind
    assert msgpack.unpackb(frame[at:], raw=False) == body


def test_anything_but_an_envelope_peeks_as_none():
    assert peek_kind(b"") is None
    assert peek_kind(encode_frame(b"")) is None
    assert peek_kind(encode_frame(msgpack.packb([2, 2, 0, None]))) is None  # another version
    assert peek_kind(encode_frame(msgpack.packb([1, 4, 0, None]))) is None  # no such kind
    assert peek_kind(encode_frame(msgpack.packb([1, 2, 0]))) is None  # three items
    assert peek_kind(encode_frame(msgpack.packb({"a": 1}))) is None
