"""Peer ids: the libp2p textual form of an Ed25519 public key, computed without libp2p.

A libp2p peer id for an Ed25519 key is the base58btc encoding of an identity multihash over the
protobuf-encoded public key: ``0x00 0x24 | 0x08 0x01 0x12 0x20 | key``. Computing it here keeps the
simulator and the pure cores free of libp2p imports; a test checks it against libp2p itself.
"""

from __future__ import annotations

from homeswarm.errors import InvalidArgument

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])


def short(peer: str) -> str:
    """How logs, errors and tables name a device: the last 8 characters of its peer id (for a
    vault stream ``DEVICE/INCARNATION``, of its device's)."""
    return peer.partition("/")[0][-8:]


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_ALPHABET[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        try:
            n = n * 58 + _INDEX[c]
        except KeyError:
            raise InvalidArgument(f"not base58: {text[:60]!r}") from None
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def peer_id_from_public_key(public_key: bytes) -> str:
    """The peer id of a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise InvalidArgument("an Ed25519 public key is 32 bytes")
    return b58encode(_PREFIX + public_key)


def public_key_from_peer_id(peer_id: str) -> bytes:
    """The raw Ed25519 public key inside a peer id; InvalidArgument if it holds none."""
    raw = b58decode(peer_id)
    if len(raw) != 38 or not raw.startswith(_PREFIX):
        raise InvalidArgument(f"not an Ed25519 peer id: {peer_id[:60]!r}")
    return raw[len(_PREFIX) :]


def is_peer_id(text: str) -> bool:
    try:
        public_key_from_peer_id(text)
    except InvalidArgument:
        return False
    return True
