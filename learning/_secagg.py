"""Pairwise-masked secure aggregation: the coordinator learns the sum of the updates, nothing else.

Each pair of devices agrees a secret from their X25519 keys (each knows the other's public key);
for every round, HKDF turns it into a 32-byte pair seed bound to the job, the round and the pair,
and a seeded generator (numpy's PCG64) expands the seed into a mask of 64-bit words. The lower id
of the pair adds the mask, the higher subtracts it, so over all devices the masks cancel exactly:
updates are fixed-point integers modulo 2**64 (``SCALE`` fractional bits), where addition is
exact. A device that drops out after the masks were fixed leaves its pair masks in the others'
updates; the survivors reveal their pair seeds with it (for that round only), and the coordinator
removes those masks. A seed never reveals a device's long-term key nor another round's masks.

Each device's X25519 key for a job travels signed by its device key (``sign_public``, the
Ed25519 key its id names): the statement binds the job, the device and the key, so a relaying
coordinator can pass keys on but cannot substitute its own for another device's, nor replay a
key from another job; ``open_public`` refuses anything else.

Limits, as in the plain protocol of Bonawitz et al. (CCS 2017) without its double masking: a
coordinator that claims a device dropped after it did send learns that device's update (the
coordinator refuses any update from a device declared dropped, and survivors reveal only for the
devices named dropped), and colluding devices learn what their own pairs hide.
"""

from __future__ import annotations

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from homeswarm.errors import InvalidArgument, ProtocolViolation
from homeswarm.ids import public_key_from_peer_id, short

SCALE = 24  # fractional bits of the fixed-point encoding
LIMIT = 2.0 ** (62 - SCALE)  # |value| bound per coordinate, so sums of many devices cannot wrap


def _statement(job: str, device: str, public_raw: bytes) -> bytes:
    return b"\x00".join([b"homeswarm-learn-mask-key", job.encode(), device.encode(), public_raw])


def sign_public(key: X25519PrivateKey, signer: Ed25519PrivateKey, *, job: str, device: str) -> str:
    """``KEY.SIGNATURE`` (hex): ``key``'s public half, signed by ``device``'s device key."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return raw.hex() + "." + signer.sign(_statement(job, device, raw)).hex()


def open_public(text: object, *, job: str, device: str) -> X25519PublicKey:
    """The X25519 key ``device`` signed for ``job`` (checked against the Ed25519 key its id
    names); ``ProtocolViolation`` for anything else: unsigned, forged, another job's, malformed."""
    try:
        if not isinstance(text, str) or len(text) != 64 + 1 + 128:
            raise ValueError("not KEY.SIGNATURE")
        key_hex, signature_hex = text.split(".")
        raw, signature = bytes.fromhex(key_hex), bytes.fromhex(signature_hex)
        signer = Ed25519PublicKey.from_public_bytes(public_key_from_peer_id(device))
        signer.verify(signature, _statement(job, device, raw))
        return X25519PublicKey.from_public_bytes(raw)
    except (ValueError, InvalidSignature, InvalidArgument):
        raise ProtocolViolation(
            f"learn: a mask key for {short(device)} not signed by its device key"
        ) from None


def shared_secret(own: X25519PrivateKey, other: X25519PublicKey) -> bytes:
    """The pair's X25519 secret (the same from either end); a device computes it once per pair."""
    return own.exchange(other)


def pair_seed(secret: bytes, *, job: str, round: int, pair: tuple[str, str]) -> bytes:
    """The 32-byte seed of ``pair`` for one round of one job, from the pair's shared secret."""
    low, high = sorted(pair)
    info = f"homeswarm-learn-mask\x00{job}\x00{round}\x00{low}\x00{high}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def mask(seed: bytes, length: int) -> np.ndarray:
    """The pseudo-random words a pair seed expands to."""
    generator = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))
    words: np.ndarray = generator.bit_generator.random_raw(length).astype(np.uint64)
    return words


def encode(values: np.ndarray) -> np.ndarray:
    """Fixed-point words (two's complement modulo 2**64) for float values."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(np.abs(values) >= LIMIT):
        raise InvalidArgument("secure aggregation: a value is not finite or out of range")
    return np.rint(values * 2.0**SCALE).astype(np.int64).view(np.uint64)


def decode(words: np.ndarray) -> np.ndarray:
    """Float values of fixed-point words (a sum of encodings decodes to the sum)."""
    out: np.ndarray = np.asarray(words, dtype=np.uint64).view(np.int64).astype(np.float64)
    return out / 2.0**SCALE


def sign_of(device: str, other: str) -> int:
    """+1 if ``device`` adds the pair mask, -1 if it subtracts it."""
    return 1 if device < other else -1


def masked(values: np.ndarray, device: str, seeds: dict[str, bytes]) -> np.ndarray:
    """``values`` encoded, plus this device's signed pair masks (``seeds``: other -> seed)."""
    words = encode(values)
    for other, seed in seeds.items():
        if sign_of(device, other) > 0:
            words = words + mask(seed, len(words))
        else:
            words = words - mask(seed, len(words))
    return words


def unmask_dropped(total: np.ndarray, revealed: dict[tuple[str, str], bytes]) -> np.ndarray:
    """Remove from a sum the masks survivors share with dropped devices.

    ``revealed`` maps (survivor, dropped) to their pair seed; the survivor's update carried
    ``sign_of(survivor, dropped) * mask``, which is taken away.
    """
    for (survivor, dropped), seed in revealed.items():
        if sign_of(survivor, dropped) > 0:
            total = total - mask(seed, len(total))
        else:
            total = total + mask(seed, len(total))
    return total
