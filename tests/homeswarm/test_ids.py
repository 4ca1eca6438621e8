from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from homeswarm.ids import b58decode, b58encode
from homeswarm.transports import is_peer_id, peer_id_from_public_key, public_key_from_peer_id


@given(st.binary(max_size=64))
def test_base58_roundtrip(data):
    assert b58decode(b58encode(data)) == data


@given(st.binary(min_size=32, max_size=32))
def test_peer_id_roundtrip(key):
    pid = peer_id_from_public_key(key)
    assert pid.startswith("12D3KooW")
    assert public_key_from_peer_id(pid) == key
    assert is_peer_id(pid)


def test_matches_libp2p():
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    pair = create_new_key_pair()
    raw = pair.public_key.to_bytes()
    assert peer_id_from_public_key(raw) == ID.from_pubkey(pair.public_key).to_base58()


@given(st.text(max_size=60))
def test_garbage_is_not_a_peer_id(text):
    if not text.startswith("12D3KooW"):
        assert not is_peer_id(text)
