"""A stream into a stateful instance, exactly once across crashes and moves (kernels._stream):
random crashes at any point (before or after a checkpoint, during a replay), lost and late
acknowledgements, replicas that lag: no event lost, none applied twice, and the scores equal
those of an instance that never moved."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from homeswarm.errors import InvalidArgument
from homeswarm.kernels import Checkpoint, StreamEvent, StreamInstance, StreamProducer
from homeswarm.kernels._htm import HTM, Params

PARAMS = Params(
    value_min=0.0,
    value_max=100.0,
    columns=128,
    active_columns=8,
    cells=4,
    value_size=100,
    value_bits=9,
    time_bits=7,
    activation_threshold=4,
    min_threshold=3,
    new_synapses=6,
    max_synapses=8,
    max_segments=300,
    learning_rows=10,
    estimation_rows=10,
    average_window=4,
    history=60,
    reestimate_every=7,
    seed=11,
)
T0 = 1.7e9


class MovingStream(RuleBasedStateMachine):
    """One producer, one instance that crashes and moves, a checkpoint store, and a reference
    model fed every event once, in order, that never stops."""

    def __init__(self) -> None:
        super().__init__()
        self.producer = StreamProducer("cpu")
        self.instance: StreamInstance | None = StreamInstance("cpu", HTM(PARAMS))
        self.reference = HTM(PARAMS)
        self.expected: list[object] = []  # the reference's scores, by seq - 1
        self.results: dict[int, object] = {}  # what the swarm reported, by seq
        self.diverged = 0  # a seq scored twice, differently
        self.stored: list[bytes] = []  # checkpoints stored (oldest first), as bytes
        self.inflight: list[StreamEvent] = []  # sent to the current home, not yet delivered
        self.acks: list[tuple[int, int]] = []  # (applied, epoch) on their way to the producer
        self.refused_resumes = 0

    # ---- the stream --------------------------------------------------------------------------

    @rule(value=st.floats(0, 100, allow_nan=False), n=st.integers(1, 6))
    def emit(self, value: float, n: int) -> None:
        for i in range(n):
            v = (value + 17 * i) % 100
            event = self.producer.emit(v, T0 + 300 * self.producer.last)
            self.expected.append(self.reference.step(event.value, _when(event.when)))

    @precondition(lambda self: self.instance is not None)
    @rule()
    def send(self) -> None:
        self.inflight.extend(self.producer.to_send())

    @precondition(lambda self: self.instance is not None and self.inflight)
    @rule(k=st.integers(1, 8))
    def deliver(self, k: int) -> None:
        assert self.instance is not None
        batch, self.inflight = self.inflight[:k], self.inflight[k:]
        self._record(self.instance.feed(batch))

    @precondition(lambda self: self.instance is not None and self.inflight)
    @rule()
    def deliver_twice(self) -> None:  # a retransmission: the same event again
        assert self.instance is not None
        self._record(self.instance.feed(self.inflight[:1]))
        self._record(self.instance.feed(self.inflight[:1]))
        self.inflight = self.inflight[1:]

    # ---- checkpoints and acknowledgements ------------------------------------------------------

    @precondition(lambda self: self.instance is not None)
    @rule()
    def checkpoint(self) -> None:
        assert self.instance is not None
        cp = self.instance.checkpoint()
        self.stored.append(cp.to_bytes())  # stored durably: only now may it be acknowledged
        self.acks.append((cp.applied, self.instance.epoch))

    @precondition(lambda self: self.acks)
    @rule(data=st.data())
    def acknowledge(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.acks) - 1))  # in any order
        applied, epoch = self.acks.pop(i)
        self.producer.acknowledged(applied, epoch)

    @precondition(lambda self: self.acks)
    @rule()
    def lose_an_ack(self) -> None:
        self.acks.pop(0)

    # ---- crashes and moves ---------------------------------------------------------------------

    @precondition(lambda self: self.instance is not None)
    @rule()
    def crash(self) -> None:
        self.instance = None  # its memory and what was in flight to it are gone
        self.inflight = []

    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        """A new home (the old one crashed, or was told to stop) restores a checkpoint: the
        latest, or, from a lagging replica, an older one."""
        self.instance = None
        self.inflight = []
        choices = len(self.stored)
        pick = data.draw(st.integers(-1, choices - 1)) if choices else -1
        applied = Checkpoint.from_bytes(self.stored[pick]).applied if pick >= 0 else 0
        if applied < self.producer.acked:
            # a replica behind what was acknowledged: the producer says so; wait for the latest
            with pytest.raises(InvalidArgument, match="not the latest checkpoint"):
                self.producer.resume(applied)
            self.refused_resumes += 1
            pick = len(self.stored) - 1
        self._start(pick)

    def _start(self, pick: int) -> None:
        if pick >= 0:
            cp = Checkpoint.from_bytes(self.stored[pick])
            epoch = self.producer.resume(cp.applied)
            self.instance = StreamInstance.restore(cp, HTM.from_bytes, epoch=epoch, stream="cpu")
        else:
            epoch = self.producer.resume(0)
            self.instance = StreamInstance("cpu", HTM(PARAMS), 0, epoch)

    def _record(self, scored: list[tuple[int, object]]) -> None:
        for seq, scores in scored:
            if seq in self.results:
                self.diverged += self.results[seq] != scores
            else:
                self.results[seq] = scores

    # ---- what always holds ---------------------------------------------------------------------

    @invariant()
    def nothing_forgotten_that_is_not_stored(self) -> None:
        p = self.producer
        stored = max((Checkpoint.from_bytes(b).applied for b in self.stored), default=0)
        assert p.acked <= stored
        assert [e.seq for e in p.kept] == list(range(p.acked + 1, p.last + 1))

    @invariant()
    def the_model_took_each_event_once(self) -> None:
        if self.instance is not None:
            model = self.instance.model
            assert isinstance(model, HTM)
            assert model.rows == self.instance.applied

    @invariant()
    def the_same_event_scores_the_same(self) -> None:
        assert self.diverged == 0

    def teardown(self) -> None:
        # the stream ends: the instance (wherever it is now) catches up
        if self.instance is None:
            self._start(len(self.stored) - 1)
        assert self.instance is not None
        self._record(self.instance.feed(self.inflight + self.producer.to_send()))
        last = self.producer.last
        model = self.instance.model
        assert isinstance(model, HTM)
        events_lost = sum(1 for seq in range(1, last + 1) if seq not in self.results)
        events_duplicated = model.rows - self.instance.applied
        assert events_lost == 0
        assert events_duplicated == 0
        assert self.instance.applied == last
        assert [self.results[s] for s in range(1, last + 1)] == self.expected
        assert model.digest() == self.reference.digest()
        assert self.diverged == 0


def _when(when: float | None):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return None if when is None else datetime.fromtimestamp(when, UTC)


MovingStream.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestMovingStream = MovingStream.TestCase


# ---- the small print -----------------------------------------------------------------------


def test_a_gap_is_refused_and_a_duplicate_ignored():
    inst = StreamInstance("s", HTM(PARAMS))
    assert [seq for seq, _ in inst.feed([StreamEvent(1, None, 5.0)])] == [1]
    assert inst.feed([StreamEvent(1, None, 5.0)]) == []
    assert inst.duplicates == 1
    with pytest.raises(InvalidArgument, match="2 is missing"):
        inst.feed([StreamEvent(3, None, 5.0)])
    assert inst.applied == 1


def test_acknowledgements_from_an_old_epoch_or_beyond_what_was_sent():
    p = StreamProducer("s")
    for v in range(5):
        p.emit(float(v))
    assert [e.seq for e in p.to_send()] == [1, 2, 3, 4, 5]
    assert p.acknowledged(3, 0) == 3
    assert p.acknowledged(2, 0) == 0  # older than one already seen
    epoch = p.resume(3)
    assert epoch == 1
    assert p.acknowledged(5, 0) == 0  # from the home before the move: ignored
    assert p.statistics()["stale_acks"] == 2
    assert [e.seq for e in p.to_send()] == [4, 5]
    with pytest.raises(InvalidArgument, match="only 5 were sent"):
        p.acknowledged(9, epoch)
    with pytest.raises(InvalidArgument, match="not the latest"):
        p.resume(2)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "not a checkpoint"),
        (b"\xc1", "not a checkpoint"),
        (msgpack.packb([2, "s", 1, b"x"]), "format 2; this build reads format 1 only"),
        (msgpack.packb([1, "s", -1, b"x"]), "bad fields"),
        (msgpack.packb([1, "s", 1]), "bad fields"),
        (msgpack.packb({"a": 1}), "not a checkpoint"),
    ],
)
def test_a_bad_checkpoint_is_one_line(data, says):
    with pytest.raises(InvalidArgument, match=says) as info:
        Checkpoint.from_bytes(data)
    assert "\n" not in str(info.value)


def test_a_checkpoint_of_another_stream_is_refused():
    cp = StreamInstance("a", HTM(PARAMS)).checkpoint()
    assert Checkpoint.from_bytes(cp.to_bytes()) == cp
    with pytest.raises(InvalidArgument, match="another stream"):
        StreamInstance.restore(cp, HTM.from_bytes, stream="b")


def test_a_restarted_producer_numbers_its_events_after_the_newest_checkpoint():
    p = StreamProducer("s")
    p.emit(1.0)
    p.emit(2.0)
    p.continue_after(40)  # its first home holds a checkpoint of 40 events (an earlier life)
    assert [e.seq for e in p.kept] == [41, 42]
    assert (p.last, p.acked, p.sent) == (42, 40, 40)
    p.resume(40)
    assert [(e.seq, e.value) for e in p.to_send(1)] == [(41, 1.0)]
    assert [e.seq for e in p.to_send()] == [42]
    with pytest.raises(InvalidArgument, match="fresh producer"):
        p.continue_after(50)
