"""The learning protocol's messages: frozen, validated, versioned value types, the only things
msgpack sees. ``from_wire`` checks every field against one table and raises ``ProtocolViolation``
for anything malformed; the caller closes that connection and carries on.

A round (``round`` counts from 0; ``attempt`` counts coordinator take-overs of the same round):

    coordinator -> each participant   RoundStart (the model, the participants, the mechanism)
    participant -> coordinator        Update (its contribution) or Decline (with a reason)
    coordinator -> survivors          RevealRequest (trust none: who dropped out)
    survivor    -> coordinator        Reveal (its pair seeds with the dropped, for this round)
    coordinator -> every participant  RoundResult (the new model, who contributed)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack
import numpy as np

from homeswarm.errors import ProtocolViolation

VERSION = 1
TRUSTS = ("swarm", "none")
ENCODINGS: dict[str, np.dtype[Any]] = {"f4": np.dtype("<f4"), "u8": np.dtype("<u8")}
MAX_NAME = 128
MAX_DEVICES = 1024
MAX_VALUES_BYTES = 64 * 1024 * 1024
DECLINE_REASONS = ("budget", "power", "conflict", "no records", "failed")


def _text(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= MAX_NAME


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31


def _positive(v: Any) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v > 0


def _rate(v: Any) -> bool:
    return isinstance(v, float) and 0 < v <= 1


def _devices(v: Any) -> bool:
    return (
        isinstance(v, tuple)
        and len(v) <= MAX_DEVICES
        and all(_text(d) for d in v)
        and len(set(v)) == len(v)
    )


def _blob(v: Any) -> bool:
    return isinstance(v, bytes) and len(v) <= MAX_VALUES_BYTES


def _seeds(v: Any) -> bool:
    return (
        isinstance(v, tuple)
        and len(v) <= MAX_DEVICES
        and all(
            isinstance(p, tuple)
            and len(p) == 2
            and _text(p[0])
            and isinstance(p[1], bytes)
            and len(p[1]) == 32
            for p in v
        )
    )


CHECKS = {
    "job": _text,
    "round": _count,
    "attempt": _count,
    "coordinator": _text,
    "device": _text,
    "trust": lambda v: v in TRUSTS,
    "participants": _devices,
    "dropped": _devices,
    "contributors": _devices,
    "params": _blob,
    "values": _blob,
    "encoding": lambda v: v in ENCODINGS,
    "sample_rate": _rate,
    "clip": _positive,
    "noise_multiplier": lambda v: isinstance(v, float) and math.isfinite(v) and v >= 0,
    "min_survivors": lambda v: _count(v) and v >= 1,
    "reason": lambda v: v in DECLINE_REASONS,
    "seeds": _seeds,
}


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list | tuple) else v


class Message:
    kind: ClassVar[str]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not CHECKS[f.name](getattr(self, f.name)):
                raise ProtocolViolation(f"learning {self.kind}: bad {f.name}")

    def to_wire(self) -> bytes:
        body = [getattr(self, f.name) for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        packed: bytes = msgpack.packb([VERSION, self.kind, body], use_bin_type=True)
        return packed


@dataclass(frozen=True)
class RoundStart(Message):
    kind: ClassVar[str] = "start"
    job: str
    round: int
    attempt: int
    coordinator: str
    trust: str
    participants: tuple[str, ...]
    params: bytes
    sample_rate: float
    clip: float
    noise_multiplier: float
    min_survivors: int

    def model(self) -> np.ndarray:
        return np.frombuffer(self.params, dtype=ENCODINGS["f4"]).astype(np.float64)


@dataclass(frozen=True)
class Update(Message):
    kind: ClassVar[str] = "update"
    job: str
    round: int
    device: str
    encoding: str
    values: bytes

    def array(self) -> np.ndarray:
        dtype = ENCODINGS[self.encoding]
        if len(self.values) % dtype.itemsize:
            raise ProtocolViolation("learning update: values are not whole words")
        return np.frombuffer(self.values, dtype=dtype)


@dataclass(frozen=True)
class Decline(Message):
    kind: ClassVar[str] = "decline"
    job: str
    round: int
    device: str
    reason: str


@dataclass(frozen=True)
class RevealRequest(Message):
    kind: ClassVar[str] = "reveal?"
    job: str
    round: int
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class Reveal(Message):
    kind: ClassVar[str] = "reveal"
    job: str
    round: int
    device: str
    seeds: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class RoundResult(Message):
    kind: ClassVar[str] = "result"
    job: str
    round: int
    params: bytes
    contributors: tuple[str, ...]

    def model(self) -> np.ndarray:
        return np.frombuffer(self.params, dtype=ENCODINGS["f4"]).astype(np.float64)


KINDS: dict[str, type[Message]] = {
    cls.kind: cls for cls in (RoundStart, Update, Decline, RevealRequest, Reveal, RoundResult)
}


def from_wire(data: bytes) -> Message:
    """The message in ``data``; ``ProtocolViolation`` for anything else."""
    try:
        version, kind, body = msgpack.unpackb(data, raw=False, use_list=True)
        cls = KINDS[kind]
        if version != VERSION or not isinstance(body, list):
            raise ValueError("version or body")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        if len(body) != len(names):
            raise ValueError("fields")
        return cls(**{n: _tuples(v) for n, v in zip(names, body, strict=True)})
    except ProtocolViolation:
        raise
    except Exception as exc:  # anything msgpack or the shape check raises
        raise ProtocolViolation(f"learning: malformed message ({type(exc).__name__})") from None


def params_bytes(params: np.ndarray) -> bytes:
    return np.asarray(params, dtype=ENCODINGS["f4"]).tobytes()
