"""Frames and envelopes: the sans-I/O wire codec shared by every transport.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack. The msgpack value is
an envelope ``[version, kind, id, body]``:

- ``REQUEST``  expects exactly one ``RESPONSE`` or ``ERROR`` with the same id;
- ``ONEWAY``   expects nothing back (id is 0);
- ``ERROR``    carries a short text saying why the peer's handler failed.

The decoder is fed whatever bytes arrive and yields whole payloads; it never does I/O and never
buffers more than one frame's worth beyond the limit before refusing.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from homeswarm.errors import FrameTooLarge, InvalidArgument, ProtocolViolation

VERSION = 1
HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 4 * 1024 * 1024
_MAX_ID = 2**63 - 1


class Kind(enum.IntEnum):
    REQUEST = 0
    RESPONSE = 1
    ONEWAY = 2
    ERROR = 3


@dataclass(frozen=True, slots=True)
class Envelope:
    kind: Kind
    id: int
    body: Any

    def __post_init__(self) -> None:
        if not 0 <= self.id <= _MAX_ID:
            raise InvalidArgument(f"envelope id out of range: {self.id}")
        if self.kind is Kind.ERROR and not isinstance(self.body, str):
            raise InvalidArgument("an ERROR envelope carries a text")

    def pack(self) -> bytes:
        try:
            packed: bytes = msgpack.packb(
                [VERSION, int(self.kind), self.id, self.body], use_bin_type=True
            )
            return packed
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidArgument(f"body is not msgpack-able: {exc}") from None

    @classmethod
    def unpack(cls, payload: bytes) -> Envelope:
        try:
            value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises a zoo of types on garbage
            raise ProtocolViolation(f"undecodable frame: {type(exc).__name__}") from None
        if not (isinstance(value, list) and len(value) == 4):
            raise ProtocolViolation("frame is not a 4-item envelope")
        version, kind, ident, body = value
        if version != VERSION:
            raise ProtocolViolation(f"unsupported envelope version {version!r}")
        if type(kind) is not int or kind not in Kind._value2member_map_:
            raise ProtocolViolation(f"unknown envelope kind {kind!r}")
        if type(ident) is not int or not 0 <= ident <= _MAX_ID:
            raise ProtocolViolation("envelope id is not a non-negative integer")
        try:
            return cls(Kind(kind), ident, body)
        except InvalidArgument as exc:
            raise ProtocolViolation(str(exc)) from None


def encode_frame(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    if len(payload) > max_frame:
        raise InvalidArgument(f"message of {len(payload)} bytes exceeds the {max_frame}-byte limit")
    return HEADER.pack(len(payload)) + payload


def peek_kind(frame: bytes | bytearray) -> tuple[Kind, int] | None:
    """A whole frame's envelope kind and where its body starts, read from its first bytes
    without decoding it (what ``Envelope.pack`` writes after ``encode_frame``'s header: a
    4-item array, the version, the kind, then the id): for an envelope whose id packs in one
    byte (every ``ONEWAY``'s 0, a request's first 128). None for anything else: decode it then.
    A simulated network names each frame's cause this way (a day has a third of a million)."""
    if (
        len(frame) > _BODY_AT
        and frame[HEADER.size] == _ENVELOPE_ARRAY
        and frame[HEADER.size + 1] == VERSION
        and frame[HEADER.size + 3] < 0x80  # a positive fixint id
    ):
        kind = frame[HEADER.size + 2]
        if kind < len(_KINDS):
            return _KINDS[kind], _BODY_AT
    return None


_ENVELOPE_ARRAY = 0x94  # msgpack's fixarray of 4 items
_BODY_AT = HEADER.size + 4  # the header, then the array, version, kind and id (a byte each)
_KINDS = tuple(Kind)  # by value: 0, 1, 2, 3


class FrameDecoder:
    """Splits a byte stream into frame payloads, refusing any frame over ``max_frame``."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        if not self._buffer:  # the usual case: whole frames, read without copying them twice
            frames, used = self._whole(data)
            if used == len(data):
                return frames
            self._buffer = bytearray(data[used:])  # the start of a frame still to come
            return frames
        self._buffer += data
        frames, used = self._whole(self._buffer)
        if used == len(self._buffer):
            self._buffer = bytearray()  # (del would keep the largest frame's room allocated)
        else:
            del self._buffer[:used]  # once per read, not once per frame
        return frames

    def _whole(self, data: bytes | bytearray) -> tuple[list[bytes], int]:
        """The whole frames at the start of ``data``, and how many bytes they took."""
        frames: list[bytes] = []
        at, size = 0, len(data)
        while size - at >= HEADER.size:
            (length,) = HEADER.unpack_from(data, at)
            if length > self.max_frame:
                raise FrameTooLarge(f"frame of {length} bytes exceeds the {self.max_frame} limit")
            end = at + HEADER.size + length
            if end > size:
                break
            frames.append(bytes(data[at + HEADER.size : end]))
            at = end
        return frames, at

    def single(self, data: bytes) -> bytes | None:
        """The payload if ``data`` is exactly one whole frame within the limit and nothing is
        buffered (what ``feed`` would return alone), else None, and nothing changes: ``feed``
        then takes it as usual."""
        if self._buffer or len(data) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(data)
        if length > self.max_frame or HEADER.size + length != len(data):
            return None
        return data[HEADER.size :]

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back; non-zero at end of stream means truncation."""
        return len(self._buffer)
