"""One stream into one stateful kernel instance, exactly once across crashes and moves (sans-I/O).

A stateful instance (an HTM following a telemetry series) lives on some device and may die with
it. Its producer (where the series is measured) and its checkpoints make the stream survive:

- the ``StreamProducer`` numbers each event (``seq`` 1, 2, ...) and keeps every event that no
  stored checkpoint covers yet; ``to_send()`` hands out what the current home was not yet sent;
- the ``StreamInstance`` applies events in ``seq`` order, ignores any it has already applied
  (``seq <= applied``: a replay overlapping what it has) and refuses a gap (a bug: the producer
  never skips); ``checkpoint()`` is its model's state (``to_bytes``) and the last ``seq`` applied;
- once a checkpoint is stored durably (the vault, under the instance's scope), the producer is
  told ``acknowledged(applied, epoch)`` and forgets the events up to it; never before it is
  stored;
- after a move (or a restart) the new home restores the latest stored checkpoint
  (``StreamInstance.restore``) and the producer ``resume(applied)``s: it sends again everything
  after that ``seq``, and starts a new epoch (acknowledgements still in flight from the old home
  are ignored: the new one may have restored an older checkpoint, and needs those events). The
  events between the checkpoint and the crash are applied again from the same state, so they
  score the same: the scores of a stream are a function of its events, not of where or how often
  its instance ran.

The rules, as the property tests check them (``tests/kernels/test_stream.py``):

- ``producer.acked <= store.applied`` always (acknowledge only what is stored), so the latest
  stored checkpoint plus the events the producer keeps is the whole stream: nothing lost;
- an instance's ``applied`` moves by one per event it applies, so a model never takes an event
  twice; the model's own row count (``HTM.rows``) equals ``applied``;
- an acknowledgement from an earlier epoch, or older than one already seen, is stale and changes
  nothing; one beyond the last event sent, or a ``resume`` from before the acknowledged ``seq``,
  is a bug and raises ``InvalidArgument`` (the checkpoint it names is not the latest stored: wait
  for the replica to catch up, or the events in between are gone).

Events and checkpoints are frozen values; ``Checkpoint.to_bytes`` is versioned msgpack (its model
state inside is versioned again by the model: ``kernels._htm``).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import msgpack

from homeswarm.errors import InvalidArgument
from homeswarm.wire import Field, Schema, pack

CHECKPOINT_FORMAT = 1
MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024


class Model(Protocol):
    """What an instance's model offers: one row at a time, and its state as bytes."""

    def step(self, value: float, when: datetime | None = None) -> Any: ...

    def to_bytes(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One row of a stream: its number, when it was measured (seconds since the epoch, UTC, or
    None) and its value."""

    seq: int
    when: float | None
    value: float


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """An instance's model after its ``applied``-th event."""

    stream: str
    applied: int
    state: bytes

    def to_bytes(self) -> bytes:
        return pack([CHECKPOINT_FORMAT, self.stream, self.applied, self.state])

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """A checkpoint from ``to_bytes``; ``InvalidArgument`` (one line) for anything else."""
        if not isinstance(data, bytes) or len(data) > MAX_CHECKPOINT_BYTES:
            raise InvalidArgument("stream: not a checkpoint")
        try:
            fields = msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise InvalidArgument(f"stream: not a checkpoint ({type(exc).__name__})") from None
        if not isinstance(fields, list) or not fields or not isinstance(fields[0], int):
            raise InvalidArgument("stream: not a checkpoint")
        if fields[0] != CHECKPOINT_FORMAT:
            raise InvalidArgument(
                f"stream: a checkpoint of format {fields[0]}; this build reads "
                f"format {CHECKPOINT_FORMAT} only"
            )
        got = _CHECKPOINT.check(fields)
        return cls(got["stream"], got["applied"], got["state"])


_CHECKPOINT = Schema(
    "stream: not a checkpoint (bad fields)",
    Field("format", int),
    Field("stream", str),
    Field("applied", int, least=0),
    Field("state", bytes),
    positional=True,
    error=InvalidArgument,
)


class StreamProducer:
    """Numbers a stream's events and keeps those no stored checkpoint covers (see the module)."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.last = 0  # the last seq emitted
        self.acked = 0  # every event up to it is in a stored checkpoint
        self.sent = 0  # the last seq handed to the current home
        self.kept: deque[StreamEvent] = deque()  # seq acked+1 .. last, in order
        self.epoch = 0  # which start of the instance the producer sends to (one per resume)
        self.resent = 0  # events sent again after a resume
        self.stale = 0  # acknowledgements ignored: from an earlier epoch, or older than acked

    def emit(self, value: float, when: float | None = None) -> StreamEvent:
        self.last += 1
        event = StreamEvent(self.last, when, value)
        self.kept.append(event)
        return event

    def to_send(self, limit: int | None = None) -> list[StreamEvent]:
        """The kept events after the last one sent to the current home, at most ``limit`` of
        them (and now: sent)."""
        out = list(itertools.islice(self._after(self.sent), limit))
        if out:
            self.sent = out[-1].seq
        return out

    def acknowledged(self, applied: int, epoch: int) -> int:
        """The instance of ``epoch`` stored a checkpoint up to ``applied``: forget those events.
        How many it dropped. An acknowledgement from an earlier epoch changes nothing: the
        instance that sent it is gone, and its successor may have started from an older
        checkpoint (a replica that had not yet seen the newer one) and still needs the events."""
        if epoch != self.epoch or applied <= self.acked:
            self.stale += 1
            return 0
        if applied > self.sent:
            raise InvalidArgument(
                f"stream {self.stream}: a checkpoint after event {applied}, "
                f"but only {self.sent} were sent"
            )
        dropped = 0
        while self.kept and self.kept[0].seq <= applied:
            self.kept.popleft()
            dropped += 1
        self.acked = max(self.acked, applied)
        return dropped

    def resume(self, applied: int) -> int:
        """The instance started again from a checkpoint up to ``applied``: send what follows.
        The new epoch, which that instance's acknowledgements carry."""
        if applied < self.acked:
            raise InvalidArgument(
                f"stream {self.stream}: resumed from event {applied}, but events up to "
                f"{self.acked} were acknowledged (and forgotten): not the latest checkpoint"
            )
        if applied > self.last:
            raise InvalidArgument(
                f"stream {self.stream}: resumed from event {applied} of {self.last}"
            )
        self.resent += max(0, self.sent - applied)
        self.sent = applied
        self.epoch += 1
        return self.epoch

    def continue_after(self, applied: int) -> None:
        """This producer started afresh (its process restarted) and the stream's newest
        checkpoint covers ``applied`` events: what it has emitted since is numbered after them
        (it was never sent: a fresh producer's first home tells it where the stream stands)."""
        if self.acked or self.epoch or self.sent:
            raise InvalidArgument(f"stream {self.stream}: continue_after is for a fresh producer")
        self.kept = deque(StreamEvent(applied + e.seq, e.when, e.value) for e in self.kept)
        self.last += applied
        self.acked = self.sent = applied

    def _after(self, seq: int) -> Iterable[StreamEvent]:
        start = seq - self.acked  # kept[0] is acked + 1
        for i in range(max(0, start), len(self.kept)):
            yield self.kept[i]

    def statistics(self) -> dict[str, int]:
        return {
            "emitted": self.last,
            "acked": self.acked,
            "kept": len(self.kept),
            "resent": self.resent,
            "stale_acks": self.stale,
            "epoch": self.epoch,
        }


def _time(when: float | None) -> datetime | None:
    return None if when is None else datetime.fromtimestamp(when, UTC)


class StreamInstance:
    """A model applying one stream's events exactly once, from a checkpoint (see the module)."""

    def __init__(self, stream: str, model: Model, applied: int = 0, epoch: int = 0) -> None:
        self.stream = stream
        self.model = model
        self.applied = applied
        self.epoch = epoch  # the producer's, from its ``resume``: its acknowledgements carry it
        self.duplicates = 0  # events ignored: already applied

    @classmethod
    def restore(
        cls,
        checkpoint: Checkpoint,
        load: Callable[[bytes], Model],
        *,
        epoch: int = 0,
        stream: str | None = None,
    ) -> StreamInstance:
        """An instance from ``checkpoint`` (its model made by ``load``)."""
        if stream is not None and checkpoint.stream != stream:
            raise InvalidArgument(
                f"stream {stream}: a checkpoint of another stream ({checkpoint.stream:.60})"
            )
        return cls(checkpoint.stream, load(checkpoint.state), checkpoint.applied, epoch)

    def feed(self, events: Iterable[StreamEvent]) -> list[tuple[int, Any]]:
        """Apply ``events`` in order; the new ones' ``(seq, scores)``."""
        out = []
        for event in events:
            if event.seq <= self.applied:
                self.duplicates += 1
                continue
            if event.seq != self.applied + 1:
                raise InvalidArgument(
                    f"stream {self.stream}: event {event.seq} after {self.applied}: "
                    f"{self.applied + 1} is missing"
                )
            out.append((event.seq, self.model.step(event.value, _time(event.when))))
            self.applied = event.seq
        return out

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.stream, self.applied, self.model.to_bytes())
