"""One-time pairing codes: what ``swarm invite`` prints and ``swarm join CODE`` reads. Pure.

A code is one line: ``swarm1-`` then lowercase base32 (no padding) of the msgpack list
``[1, swarm, inviter, addrs, invite_id, secret, expires_at]`` followed by its CRC-32 (4 bytes,
big endian). Decoding ignores case, whitespace and dashes after the prefix (so codes survive line
wrapping) and accepts only the canonical spelling of the bytes; the CRC catches any one changed
character.

Rules of redeeming (``Invites``, the inviter's bookkeeping):

- the joiner never sends the secret; it sends ``pairing_proof``, an HMAC keyed by the secret over
  the swarm, the inviter's and its own peer id (both authenticated by the connection) and its
  request, so a proof is useless to anyone else and for any other request;
- a code can be redeemed once, before ``expires_at``; a wrong proof also uses the code up, so a
  guessed secret is never tried twice (the owner makes a new code instead); a right proof for a
  request the code does not allow (more scopes than its grant) is refused and leaves the code
  as it was, so the joiner can ask again for less;
- used and expired codes are remembered until an hour after they expire, to say so to a late
  joiner; ``prune`` forgets them after that.

The ``rng`` given to ``Invites.create`` makes the secret: in production it must be
``random.SystemRandom()``; a seeded ``random.Random`` is for tests only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import random
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import msgpack

from homeswarm.errors import InvalidArgument

from ._certs import Grant, is_device_id, swarm_id_problem

VERSION = 1
PREFIX = "swarm1-"
ID_BYTES = 8
SECRET_BYTES = 16
MAX_TTL = 24 * 3600.0
KEEP_AFTER_EXPIRY = 3600.0
MAX_ADDRS = 16
PROOF_TAG = b"swarm-pair-proof"
_ADDR = re.compile(r"^/[!-~]{1,255}$")  # printable ASCII, no spaces
_P2P_SUFFIX = re.compile(r"/p2p/[^/]+$")
_BASE32 = re.compile(r"^[a-z2-7]*$")
_OTHER_VERSION = re.compile(r"^swarm[0-9]+-")


class InvalidCode(InvalidArgument):
    """A pairing code that cannot be used: mistyped, malformed, expired, used or foreign."""


def _addrs_problem(addrs: object) -> str | None:
    if not isinstance(addrs, tuple) or len(addrs) > MAX_ADDRS:
        return f"addrs is a tuple of at most {MAX_ADDRS} multiaddrs"
    for addr in addrs:
        if not isinstance(addr, str) or not _ADDR.match(addr):
            return f"{str(addr)[:60]!r} is not a multiaddr"
        if _P2P_SUFFIX.search(addr):
            return f"{addr[:60]!r} ends with /p2p/...: give it without"
    return None


@dataclass(frozen=True, slots=True)
class InviteCode:
    """Everything a joiner needs to find the inviter and prove it holds the code."""

    swarm: str
    inviter: str
    addrs: tuple[str, ...]
    invite_id: bytes
    secret: bytes
    expires_at: float

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise InvalidArgument(f"invite code: {problem}")

    def _problem(self) -> str | None:
        if problem := swarm_id_problem(self.swarm):
            return problem
        if not is_device_id(self.inviter):
            return "inviter is not an Ed25519 peer id"
        if problem := _addrs_problem(self.addrs):
            return problem
        if not isinstance(self.invite_id, bytes) or len(self.invite_id) != ID_BYTES:
            return f"invite_id is {ID_BYTES} bytes"
        if not isinstance(self.secret, bytes) or len(self.secret) != SECRET_BYTES:
            return f"secret is {SECRET_BYTES} bytes"
        if not isinstance(self.expires_at, float) or not math.isfinite(self.expires_at):
            return "expires_at must be a finite float"
        return None

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def encode(self) -> str:
        body: bytes = msgpack.packb(
            [
                VERSION,
                self.swarm,
                self.inviter,
                list(self.addrs),
                self.invite_id,
                self.secret,
                self.expires_at,
            ],
            use_bin_type=True,
        )
        data = body + zlib.crc32(body).to_bytes(4, "big")
        return PREFIX + _b32encode(data)

    @classmethod
    def decode(cls, text: str) -> InviteCode:
        """The code in ``text``; InvalidCode with one line saying what is wrong with it."""
        compact = "".join(text.split()).lower()
        if not compact.startswith(PREFIX):
            if _OTHER_VERSION.match(compact):
                raise InvalidCode("this pairing code is from another version of swarm")
            raise InvalidCode("this is not a swarm pairing code (those start with swarm1-)")
        letters = compact[len(PREFIX) :].replace("-", "")
        data = _b32decode(letters)
        if data is None or len(data) < 5:
            raise InvalidCode("the code is mistyped or truncated")
        body, crc = data[:-4], data[-4:]
        if zlib.crc32(body).to_bytes(4, "big") != crc:
            raise InvalidCode("the code is mistyped or truncated")
        try:
            value = msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception:  # msgpack raises a zoo of types on garbage
            raise InvalidCode("the code's contents are malformed") from None
        if not isinstance(value, list) or len(value) != 7:
            raise InvalidCode("the code's contents are malformed")
        if type(value[0]) is not int or value[0] != VERSION:
            raise InvalidCode("this pairing code is from another version of swarm")
        _, swarm, inviter, addrs, invite_id, secret, expires_at = value
        try:
            if not isinstance(addrs, list):
                raise InvalidArgument("addrs is not a list")
            return cls(swarm, inviter, tuple(addrs), invite_id, secret, expires_at)
        except InvalidArgument as exc:
            raise InvalidCode(f"the code's contents are malformed: {exc}") from None


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _b32decode(letters: str) -> bytes | None:
    """The bytes of canonical unpadded lowercase base32, else None (non-canonical included:
    unused low bits set in the last letter would otherwise hide a mistyped last letter)."""
    if not _BASE32.match(letters):
        return None
    try:
        data = base64.b32decode(letters.upper() + "=" * (-len(letters) % 8))
    except (binascii.Error, ValueError):
        return None
    return data if _b32encode(data) == letters else None


def pairing_proof(secret: bytes, *, swarm: str, inviter: str, joiner: str, request: bytes) -> bytes:
    """HMAC-SHA256, keyed by the code's secret, over a tag and the length-prefixed fields."""
    message = bytearray(PROOF_TAG)
    for field in _fields(swarm.encode(), inviter.encode(), joiner.encode(), request):
        message += field
    return hmac.new(secret, bytes(message), hashlib.sha256).digest()


def _fields(*values: bytes) -> Iterable[bytes]:
    for value in values:
        yield len(value).to_bytes(4, "big")
        yield value


@dataclass(slots=True)
class _Issued:
    secret: bytes
    expires_at: float
    grant: Grant
    used: bool = False


class Invites:
    """The codes this device handed out, and which of them are still good."""

    def __init__(self, swarm: str, inviter: str) -> None:
        if problem := swarm_id_problem(swarm):
            raise InvalidArgument(f"invites: {problem}")
        if not is_device_id(inviter):
            raise InvalidArgument("invites: inviter is not an Ed25519 peer id")
        self.swarm = swarm
        self.inviter = inviter
        self._issued: dict[bytes, _Issued] = {}

    def create(
        self,
        *,
        addrs: Iterable[str],
        ttl: float,
        now: float,
        rng: random.Random,
        grant: Grant | None = None,
    ) -> InviteCode:
        """A new code valid for ``ttl`` seconds (at most a day); the joiner gets at most
        ``grant`` (default: its role's scopes, not a relay, not an admin)."""
        if isinstance(ttl, bool) or not (isinstance(ttl, int | float) and 0 < ttl <= MAX_TTL):
            raise InvalidArgument("an invite lasts more than 0 seconds and at most 24 hours")
        self.prune(now)  # codes long expired are forgotten as new ones are made
        invite_id = rng.randbytes(ID_BYTES)
        while invite_id in self._issued:
            invite_id = rng.randbytes(ID_BYTES)
        code = InviteCode(
            self.swarm,
            self.inviter,
            tuple(addrs),
            invite_id,
            rng.randbytes(SECRET_BYTES),
            float(now + ttl),
        )
        self._issued[invite_id] = _Issued(code.secret, code.expires_at, grant or Grant())
        return code

    def outstanding(self, now: float) -> int:
        """How many codes could still be redeemed."""
        return sum(1 for i in self._issued.values() if not i.used and now < i.expires_at)

    def redeem(
        self, invite_id: bytes, proof: bytes, *, joiner: str, request: bytes, now: float
    ) -> Grant:
        """Accept ``joiner``'s proof for a code, once, and say what the code grants; InvalidCode
        saying why not."""
        issued = self._issued.get(invite_id) if isinstance(invite_id, bytes) else None
        if issued is None:
            raise InvalidCode("this code was not issued by this device")
        if issued.used:
            raise InvalidCode("this code was already used")
        if now >= issued.expires_at:
            raise InvalidCode("this code expired")
        issued.used = True  # a wrong proof uses the code up
        expected = pairing_proof(
            issued.secret, swarm=self.swarm, inviter=self.inviter, joiner=joiner, request=request
        )
        if not (isinstance(proof, bytes) and hmac.compare_digest(proof, expected)):
            raise InvalidCode("the code's secret does not match")
        if (asked := _asked(request)) is not None:
            try:
                issued.grant.narrowed(*asked)
            except InvalidArgument:
                issued.used = False  # the holder of the secret asked too much: it may ask again
                raise
        return issued.grant

    def prune(self, now: float) -> None:
        """Forget codes that expired more than an hour ago."""
        self._issued = {
            key: issued
            for key, issued in self._issued.items()
            if now <= issued.expires_at + KEEP_AFTER_EXPIRY
        }


def _asked(request: bytes) -> tuple[str, tuple[str, ...] | None, bool] | None:
    """The role, scopes and relay flag a pairing request asks for (``join_swarm`` packs it);
    None when it is not one (the pairing refuses it later, the code used up)."""
    try:
        _name, role, _age, *rest = msgpack.unpackb(request, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    scopes, relay = rest if len(rest) == 2 else (None, False)
    if not isinstance(role, str) or not isinstance(relay, bool):
        return None
    if scopes is not None and not (
        isinstance(scopes, list) and all(isinstance(x, str) for x in scopes)
    ):
        return None
    return role, None if scopes is None else tuple(scopes), relay
