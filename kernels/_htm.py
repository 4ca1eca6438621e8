"""Hierarchical Temporal Memory for one stream, in numpy: encoders, spatial pooler, temporal memory,
anomaly score and anomaly likelihood.

Written from Numenta's published algorithms (BAMI, "Biological and Machine Intelligence"; Cui,
Ahmad and Hawkins 2017 on the spatial pooler; Hawkins and Ahmad 2016 on the temporal memory; Ahmad,
Lavin, Purdy and Agha 2017 on the anomaly likelihood), with the parameters Numenta used on NAB.

One ``HTM`` follows one stream: ``step(value, when)`` learns the row and returns its ``Scores``.
Its whole state is plain numpy arrays and numbers (``to_bytes`` / ``from_bytes``): a model saved
and restored scores what follows exactly as one that never stopped. Randomness comes from a seed
(a PCG64 generator whose state is part of the model), so the same seed and rows give the same
scores.

A saved model (format 2) is ``MAGIC``, the format (2 bytes) and a deflated msgpack map. It leaves
out what the seed makes again (the spatial pooler's potential pools, its first permanences: only
their change is saved, mostly zeros; the tie break) and what follows from the segments (each
cell's segment count), and carries a CRC-32 of the whole state it restores to, so a numpy whose
generator draws another stream, or damaged bytes, are refused rather than misread. A saved model
of another format is refused in one line (format 1, the bare deflated map, still reads); so is
anything whose arrays do not fit its parameters or hold values ``step`` cannot take.
bench/bench_nab.py ``--checkpoints`` measures sizes and times (NAB's set: ~230 KiB, 7x less than
the arrays whole, 22 ms to save; the telemetry set: ~75 KiB, 3x less, 4 ms). The seed's pools are
made once per (seed, shape) and shared, read-only, by every model and save of that shape.

- **Encoders.** The value: a random distributed scalar encoder (each bucket of width
  ``resolution`` lights ``value_bits`` of ``value_size`` bits, chosen by a seeded hash; neighbouring
  buckets share all but one bit, distant ones almost none). The time of day: a periodic scalar
  encoder (``time_bits`` contiguous bits wrapping around a ring of ``time_size``).
- **Spatial pooler.** ``columns`` columns, each with a potential pool of ``potential_pct`` of the
  input; a column's overlap is its connected synapses onto active input bits; the
  ``active_columns`` with the highest overlap win (global inhibition; a fixed per-column tie
  break); winners learn (Hebbian: active inputs up, inactive down).
- **Temporal memory.** ``cells`` cells per column; distal segments hold synapses to cells that
  were active one step before. A column with a segment that was active (``activation_threshold``
  connected synapses onto the previous active cells) is predicted: its predicted cells fire and
  their active segments learn. Any other active column bursts (all its cells fire) and learns on its
  best matching segment (``min_threshold`` potential synapses), or grows a new segment on its
  least-used cell. Learning grows synapses to previous winner cells up to ``new_synapses``. The
  segment store is bounded (``max_segments``): when full, the least recently active segment is
  reused, so an instance's memory has a ceiling.
- **Anomaly score**: the fraction of active columns that were not predicted.
- **Likelihood**: the anomaly score's short moving average (``average_window``) against a normal
  distribution of the moving averages before it (re-estimated every ``reestimate_every`` rows over
  at most ``history`` rows, the first ``learning_rows`` left out; 0.5 for the first
  ``learning_rows + estimation_rows``): ``1 - tail``, where tail is the Gaussian's upper tail, so
  only scores above the usual are unlikely. A second consecutive very unlikely row (tail <= 1e-5)
  is damped to tail 1e-3 so a single event raises one alarm. ``log_likelihood`` maps it to [0, 1]
  (1: tail 1e-10). This is Numenta's published method to the detail: fed Numenta's own raw NAB
  scores (``results/numenta/``) with its warm-up (half NAB's probationary period learning, half
  estimating), it gives their final scores to 1e-4 on every file but the flat line (where
  Numenta's detector, seeing a constant value, gives up and scores 0.5).
- **Spatial anomaly**: a value beyond the range seen so far by more than ``spatial_tolerance`` of
  that range scores 1.0 in ``detection`` (as Numenta's NAB detector does).
"""

from __future__ import annotations

import math
import struct
import threading
import zlib
from collections import deque
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

import msgpack
import numpy as np
from numpy.typing import NDArray

from homeswarm.errors import InvalidArgument

FORMAT = 2  # what to_bytes writes
READS = (1, 2)  # the formats from_bytes reads (1: before the header and the seed's arrays)
MAGIC = b"HTM\xce"
_HEADER = struct.Struct(">4sH")  # MAGIC, the format
MAX_STATE_BYTES = 512 * 1024 * 1024
LEVEL = 1  # deflate's: level 6 saves 10-15% more bytes in 3-4 times as long
MAX_POOL = 64 * 1024 * 1024  # the most spatial pooler synapses (or cells) a saved model may ask
_U64 = np.uint64


@dataclass(frozen=True, slots=True)
class Params:
    """One parameter set (Numenta's NAB settings where they are published)."""

    # encoders
    resolution: float = 0.0  # 0: chosen from value_min/value_max, else from the first rows
    value_min: float | None = None
    value_max: float | None = None
    value_buckets: int = 130
    calibration_rows: int = 100  # when no range or resolution is given
    value_size: int = 400
    value_bits: int = 21
    time_bits: int = 21  # 0: no time-of-day encoding
    time_radius_h: float = 9.49
    # spatial pooler
    columns: int = 2048
    active_columns: int = 40
    potential_pct: float = 0.8
    sp_connected: float = 0.2
    sp_increment: float = 0.003
    sp_decrement: float = 0.0005
    # temporal memory
    cells: int = 32
    activation_threshold: int = 13
    min_threshold: int = 10
    new_synapses: int = 20
    max_synapses: int = 32
    max_segments: int = 32768
    initial_permanence: float = 0.21
    connected: float = 0.5
    increment: float = 0.1
    decrement: float = 0.1
    # likelihood
    learning_rows: int = 300
    estimation_rows: int = 300
    average_window: int = 10
    history: int = 8640
    reestimate_every: int = 100
    spatial_tolerance: float = 0.05  # 0: off
    seed: int = 42

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidArgument(f"htm: {f.name} must be a number, got {value!r:.40}")
            if not math.isfinite(value) or (value < 0 and f.name not in ("value_min", "value_max")):
                raise InvalidArgument(f"htm: {f.name} must be finite and not negative")
        if self.value_bits > self.value_size or self.active_columns > self.columns:
            raise InvalidArgument("htm: more active bits than bits")
        if self.cells < 1 or self.columns < 1 or self.max_synapses < self.new_synapses:
            raise InvalidArgument("htm: cells, columns >= 1 and max_synapses >= new_synapses")
        if (self.value_min is None) != (self.value_max is None):
            raise InvalidArgument("htm: give both value_min and value_max, or neither")


@dataclass(frozen=True, slots=True)
class Scores:
    """What one row scored."""

    raw: float  # the fraction of active columns not predicted, 0..1
    likelihood: float  # 1 - tail probability of the recent raw scores; 0.5 while warming up
    log_likelihood: float  # likelihood on a log scale, 0..1
    detection: float  # log_likelihood, or 1.0 for a value far outside the range seen


def _splitmix(keys: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """A 64-bit mixing hash (splitmix64's finaliser), over an array."""
    z = keys + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


ONE = 10_000  # permanences are fixed-point, in units of 1/ONE: exact sums, half the bytes


def _unit(x: float) -> int:
    return round(x * ONE)


def _fixed(x: NDArray[np.float64]) -> NDArray[np.int16]:
    return np.round(x * ONE).astype(np.int16)


def _floats(values: Any) -> list[float]:
    if not isinstance(values, list) or not all(
        isinstance(v, float | int) and not isinstance(v, bool) for v in values
    ):
        raise ValueError("not a list of numbers")
    return [float(v) for v in values]


def _tail(x: float, mean: float, std: float) -> float:
    """The Gaussian's upper tail beyond ``x``: near 1 for a score far below the mean."""
    return 0.5 * math.erfc((x - mean) / std / math.sqrt(2))


def _sizes(p: Params) -> tuple[int, int]:
    """The time encoder's ring and the whole input, in bits."""
    time_size = math.ceil(p.time_bits * 24.0 / p.time_radius_h) if p.time_bits else 0
    return time_size, p.value_size + time_size


def _initial_pool(
    p: Params,
) -> tuple[np.random.Generator, NDArray[np.bool_], NDArray[np.int16], NDArray[np.float32]]:
    """What a new model's seed makes: its generator (after these draws), the spatial pooler's
    potential pools, its first permanences (0 outside the pool) and the columns' tie break.

    The arrays are shared by every model of the same seed and shape (read-only: copy to
    change); the generator is the caller's own."""
    key = (p.seed, p.columns, _sizes(p)[1], p.potential_pct, p.sp_connected)
    with _POOLS_LOCK:
        made = _POOLS.pop(key, None)
    if made is None:
        made = _make_pool(*key)
    with _POOLS_LOCK:
        _POOLS[key] = made  # the most recently used last
        while len(_POOLS) > _POOLS_KEPT:
            del _POOLS[next(iter(_POOLS))]
    state, potential, sp_perm, tie_break = made
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = state
    return rng, potential, sp_perm, tie_break


_PoolKey = tuple[int, int, int, float, float]
_Pool = tuple[dict[str, Any], NDArray[np.bool_], NDArray[np.int16], NDArray[np.float32]]
_POOLS: dict[_PoolKey, _Pool] = {}
_POOLS_LOCK = threading.Lock()  # (a kernel may run in a worker thread)
_POOLS_KEPT = 4  # (NAB's set: 2.8 MiB each; the telemetry set's, 0.3 MiB, serve every series)


def _make_pool(
    seed: int, columns: int, n_in: int, potential_pct: float, sp_connected: float
) -> _Pool:
    rng = np.random.Generator(np.random.PCG64(seed))
    shape = (columns, n_in)
    potential = rng.random(shape) < potential_pct
    connected = rng.random(shape) < 0.5
    perm = np.where(
        connected,
        sp_connected + rng.random(shape) * 0.1,
        rng.random(shape) * sp_connected,
    )
    sp_perm = _fixed(np.where(potential, perm, 0.0))
    tie_break = (rng.random(columns) * 1e-3).astype(np.float32)
    for a in (potential, sp_perm, tie_break):
        a.flags.writeable = False
    return dict(rng.bit_generator.state), potential, sp_perm, tie_break


class HTM:
    """An HTM model of one stream (see the module doc)."""

    def __init__(self, params: Params | None = None) -> None:
        p = self.params = params or Params()
        self.time_size, self.input_size = _sizes(p)
        self.rng, self.sp_potential, sp_perm, self.tie_break = _initial_pool(p)
        self.sp_perm = sp_perm.copy()  # (the pools and tie break are never changed: shared)
        self._derive()
        # temporal memory: a bounded pool of segments of up to max_synapses synapses each
        self.seg_cell = np.zeros(0, dtype=np.int32)
        self.seg_used = np.zeros(0, dtype=np.int64)  # the row it was last active or learned
        self.syn_cell = np.zeros((0, p.max_synapses), dtype=np.int32)  # -1: empty slot
        self.syn_perm = np.zeros((0, p.max_synapses), dtype=np.int16)
        self.cell_segments = np.zeros(p.columns * p.cells, dtype=np.int32)
        self.active_cells = np.zeros(0, dtype=np.int32)
        self.winner_cells = np.zeros(0, dtype=np.int32)
        # encoder range and likelihood
        self.resolution = p.resolution
        self.offset = p.value_min if p.value_min is not None else 0.0
        if not self.resolution and p.value_min is not None and p.value_max is not None:
            pad = abs(p.value_max - p.value_min) * 0.2
            self.offset = p.value_min - pad
            span = p.value_max - p.value_min + 2 * pad
            self.resolution = max(0.001, span / p.value_buckets)
        self.seen_min = math.inf
        self.seen_max = -math.inf
        self.rows = 0
        self.raw_history: deque[float] = deque(maxlen=p.history)
        self.recent: deque[float] = deque(maxlen=p.average_window)
        self.mean = 0.0
        self.std = 0.0
        self.previous_tail = 1.0
        self.calibration: list[float] = []

    def _derive(self) -> None:
        """What follows from the state: the connected synapses, input-major (one row per bit)."""
        wired = self.sp_perm >= _unit(self.params.sp_connected)
        self.sp_wired = np.ascontiguousarray(wired.T).view(np.uint8)

    # -- encoders --------------------------------------------------------------------------------

    def encode(self, value: float, when: datetime | None) -> NDArray[np.int64]:
        """The active input bits of one row."""
        p = self.params
        bucket = math.floor((value - self.offset) / self.resolution)
        keys = np.arange(bucket, bucket + p.value_bits, dtype=np.int64).astype(_U64)
        keys = keys ^ _U64(p.seed * 0x2545F4914F6CDD1D % 2**64)
        value_bits = (_splitmix(keys) % _U64(p.value_size)).astype(np.int64)
        if not self.time_size or when is None:
            return np.unique(value_bits)
        hours = when.hour + when.minute / 60 + when.second / 3600
        centre = round(hours / 24.0 * self.time_size)
        time_bits = (centre - p.time_bits // 2 + np.arange(p.time_bits)) % self.time_size
        return np.unique(np.concatenate([value_bits, p.value_size + time_bits]))

    # -- one row ---------------------------------------------------------------------------------

    def step(self, value: float, when: datetime | None = None, *, learn: bool = True) -> Scores:
        """Learn one row and score it."""
        if not math.isfinite(value):
            raise InvalidArgument(f"htm: values must be finite, got {value!r}")
        p = self.params
        spatial = self._spatial(value)
        if not self.resolution:  # still learning the range: the first rows only calibrate
            self.calibration.append(value)
            if len(self.calibration) < max(p.calibration_rows, 2):
                self.rows += 1
                return Scores(0.0, 0.5, 0.0, 0.0)
            low, high = min(self.calibration), max(self.calibration)
            pad = (high - low) * 0.2
            self.offset = low - pad
            self.resolution = max((high - low + 2 * pad) / p.value_buckets, 1e-9, abs(high) * 1e-9)
            self.calibration = []
        columns = self._pool(self.encode(value, when), learn)
        return self._score(self._remember(columns, learn), spatial)

    def _score(self, raw: float, spatial: bool) -> Scores:
        """A row's scores from its raw anomaly score and the spatial check."""
        likelihood = self._likelihood(raw)
        log_l = min(1.0, math.log(1.0000000001 - likelihood) / math.log(1.0 - 0.9999999999))
        self.rows += 1
        return Scores(raw, likelihood, log_l, 1.0 if spatial else log_l)

    def _spatial(self, value: float) -> bool:
        tolerance = self.params.spatial_tolerance
        far = False
        if tolerance and self.seen_max > self.seen_min:
            margin = (self.seen_max - self.seen_min) * tolerance
            far = value > self.seen_max + margin or value < self.seen_min - margin
        self.seen_min = min(self.seen_min, value)
        self.seen_max = max(self.seen_max, value)
        return far

    def _pool(self, bits: NDArray[np.int64], learn: bool) -> NDArray[np.int64]:
        """The spatial pooler: the winning columns for these input bits (sorted)."""
        p = self.params
        overlap = self.sp_wired[bits].sum(axis=0, dtype=np.int32)
        ranked = overlap.astype(np.float32) + self.tie_break
        winners = np.argpartition(-ranked, p.active_columns)[: p.active_columns]
        winners = np.sort(winners[overlap[winners] > 0])
        if learn and len(winners):
            active = np.zeros(self.input_size, dtype=bool)
            active[bits] = True
            step = np.where(active, _unit(p.sp_increment), -_unit(p.sp_decrement))
            block = np.clip(self.sp_perm[winners] + step, 0, ONE)
            block *= self.sp_potential[winners]
            self.sp_perm[winners] = block
            self.sp_wired[:, winners] = (block >= _unit(p.sp_connected)).T
        return winners.astype(np.int64)

    def _remember(self, columns: NDArray[np.int64], learn: bool) -> float:
        """The temporal memory: activate cells, learn, and return the anomaly score."""
        p = self.params
        if len(columns) == 0:
            self.active_cells = self.winner_cells = np.zeros(0, dtype=np.int32)
            return 0.0
        cells = p.columns * p.cells
        previous = np.zeros(cells + 1, dtype=bool)  # index -1 (an empty slot) reads False
        previous[self.active_cells] = True
        live = self.syn_cell >= 0
        hit = previous[self.syn_cell] & live
        potential_count = hit.sum(axis=1)
        active_count = (hit & (self.syn_perm >= _unit(p.connected))).sum(axis=1)
        seg_column = self.seg_cell // p.cells
        is_active_column = np.zeros(p.columns, dtype=bool)
        is_active_column[columns] = True
        active_seg = np.flatnonzero(
            (active_count >= p.activation_threshold) & is_active_column[seg_column]
        )
        predicted_columns = np.unique(seg_column[active_seg])
        bursting = np.setdiff1d(columns, predicted_columns, assume_unique=True)
        raw = len(bursting) / len(columns)

        predicted_cells = np.unique(self.seg_cell[active_seg])
        burst_cells = (bursting[:, None] * p.cells + np.arange(p.cells)).ravel()
        new_active = np.concatenate([predicted_cells, burst_cells]).astype(np.int32)
        winners = [predicted_cells.astype(np.int32)]
        learning = [active_seg]
        grown = [potential_count[active_seg]]
        self.seg_used[active_seg] = self.rows
        if len(bursting):
            is_bursting = np.zeros(p.columns, dtype=bool)
            is_bursting[bursting] = True
            matching = np.flatnonzero(
                (potential_count >= p.min_threshold) & is_bursting[seg_column]
            )
            covered = np.zeros(0, dtype=np.int64)
            if len(matching):
                # per bursting column, its matching segment with the most potential synapses
                order = np.lexsort((-potential_count[matching], seg_column[matching]))
                ranked = matching[order]
                _, first = np.unique(seg_column[ranked], return_index=True)
                best = ranked[first]
                self.seg_used[best] = self.rows
                learning.append(best)
                grown.append(potential_count[best])
                winners.append(self.seg_cell[best].astype(np.int32))
                covered = seg_column[best].astype(np.int64)
            lonely = np.setdiff1d(bursting, covered, assume_unique=True)
            if len(lonely):
                # the least-used cell of each column, ties broken at random
                grid = lonely[:, None] * p.cells + np.arange(p.cells)
                load = self.cell_segments[grid] + self.rng.random(grid.shape) * 0.5
                chosen = grid[np.arange(len(lonely)), np.argmin(load, axis=1)].astype(np.int32)
                winners.append(chosen)
                if learn and len(self.winner_cells):
                    learning.append(self._new_segments(chosen))
                    grown.append(np.zeros(len(chosen), dtype=potential_count.dtype))
        if learn:
            segs = np.concatenate(learning).astype(np.int64)
            if len(segs):
                self._learn(segs, np.concatenate(grown), previous)
        self.active_cells = new_active
        self.winner_cells = np.unique(np.concatenate(winners)).astype(np.int32)
        return raw

    def _new_segments(self, owners: NDArray[np.int32]) -> NDArray[np.int64]:
        """New empty segments for ``owners``; when the pool is full, the least recently used."""
        p = self.params
        n = len(owners)
        free = p.max_segments - len(self.seg_cell)
        fresh = min(n, max(free, 0))
        ids: list[NDArray[np.int64]] = []
        if fresh:
            start = len(self.seg_cell)
            self.seg_cell = np.concatenate([self.seg_cell, owners[:fresh]])
            self.seg_used = np.concatenate([self.seg_used, np.full(fresh, self.rows)])
            self.syn_cell = np.concatenate(
                [self.syn_cell, np.full((fresh, p.max_synapses), -1, dtype=np.int32)]
            )
            self.syn_perm = np.concatenate(
                [self.syn_perm, np.zeros((fresh, p.max_synapses), dtype=np.int16)]
            )
            ids.append(np.arange(start, start + fresh))
        if n > fresh:
            old = np.argpartition(self.seg_used, n - fresh)[: n - fresh]
            np.subtract.at(self.cell_segments, self.seg_cell[old], 1)
            self.seg_cell[old] = owners[fresh:]
            self.syn_cell[old] = -1
            self.syn_perm[old] = 0
            ids.append(old.astype(np.int64))
        np.add.at(self.cell_segments, owners, 1)
        out = np.concatenate(ids)
        self.seg_used[out] = self.rows
        return out

    def _learn(
        self, segs: NDArray[np.int64], potential: NDArray[Any], previous: NDArray[np.bool_]
    ) -> None:
        """Reinforce the learning segments and grow synapses to the previous winner cells.

        ``potential`` holds each segment's potential synapses onto the previous active cells.
        """
        p = self.params
        syn = self.syn_cell[segs]
        live = syn >= 0
        step = np.where(previous[syn], _unit(p.increment), -_unit(p.decrement)) * live
        perm = np.clip(self.syn_perm[segs] + step, 0, ONE).astype(np.int16)
        dead = live & (perm <= 0)
        syn[dead] = -1
        perm[dead] = 0
        grow = p.new_synapses - potential
        candidates = self.winner_cells
        needy = np.flatnonzero(grow > 0)
        if len(candidates) and len(needy):
            # each needy segment takes up to `grow` previous winners it lacks, in a random order,
            # into its empty slots
            sub = syn[needy]
            present = (sub[:, :, None] == candidates[None, None, :]).any(axis=1)
            order = np.argsort(self.rng.random(present.shape) + present * 2.0, axis=1)
            empty_first = np.argsort(sub >= 0, axis=1, kind="stable")
            k = np.minimum(np.minimum(grow[needy], (~present).sum(axis=1)), (sub < 0).sum(axis=1))
            width = min(p.max_synapses, len(candidates))
            take = np.arange(width)[None, :] < k[:, None]
            rows, cols = np.nonzero(take)
            slots = empty_first[rows, cols]
            sub[rows, slots] = candidates[order[rows, cols]]
            syn[needy] = sub
            grown_perm = perm[needy]
            grown_perm[rows, slots] = _unit(p.initial_permanence)
            perm[needy] = grown_perm
        self.syn_cell[segs] = syn
        self.syn_perm[segs] = perm

    def _likelihood(self, raw: float) -> float:
        """How unlikely the recent raw scores are, judged by the history before this row."""
        p = self.params
        self.recent.append(raw)
        warm = len(self.raw_history) >= max(1, p.learning_rows + p.estimation_rows)
        if warm and (self.std == 0.0 or self.rows % p.reestimate_every == 0):
            self._estimate()
        self.raw_history.append(raw)
        if not warm:
            return 0.5
        tail = _tail(sum(self.recent) / len(self.recent), self.mean, self.std)
        previous, self.previous_tail = self.previous_tail, tail
        if tail <= 1e-5 and previous <= 1e-5:
            tail = 1e-3  # a second very unlikely row in a row raises no second alarm
        return 1.0 - tail

    def _estimate(self) -> None:
        """The normal distribution of the raw scores' moving average over the history, leaving
        out the first ``learning_rows`` while they are in it (the model was still learning)."""
        p = self.params
        raw = np.fromiter(self.raw_history, dtype=np.float64)
        window = p.average_window
        sums = np.convolve(raw, np.ones(window), mode="full")[: len(raw)]
        averages = sums / np.minimum(np.arange(1, len(raw) + 1), window)
        gone = max(0, self.rows - p.history)  # (about) the rows the history has forgotten
        averages = averages[min(len(raw) - 1, max(0, p.learning_rows - gone)) :]
        self.mean = max(float(averages.mean()), 0.03)
        self.std = math.sqrt(max(float(averages.var()), 0.0003))

    # -- state -----------------------------------------------------------------------------------

    # what a saved model holds beside its parameters (format 2): the spatial pooler's
    # permanences as their change since the seed made them (mostly zeros: most columns never
    # win), the temporal memory's segments whole; the potential pools, the tie break and each
    # cell's segment count follow from the seed and the segments, so they are made again
    _SAVED = ("seg_cell", "seg_used", "syn_cell", "syn_perm", "active_cells", "winner_cells")
    _ARRAYS = ("sp_perm", "sp_potential", "tie_break", *_SAVED, "cell_segments")
    _NUMBERS = (
        "resolution",
        "offset",
        "seen_min",
        "seen_max",
        "rows",
        "mean",
        "std",
        "previous_tail",
    )

    def to_bytes(self) -> bytes:
        """The whole model as deterministic bytes: a header (``MAGIC``, the format) and the
        deflated msgpack of its parameters, arrays, numbers, likelihood history and generator,
        with a CRC-32 of the whole state it restores to (``from_bytes`` checks it)."""
        _, _, initial, _ = _initial_pool(self.params)
        state = self.rng.bit_generator.state
        arrays = {name: getattr(self, name) for name in self._SAVED}
        change = self.sp_perm - initial
        columns = np.flatnonzero(change.any(axis=1)).astype(np.int32)  # those that ever learned
        arrays["sp_changed"] = columns
        arrays["sp_change"] = change[columns]
        blob: dict[str, Any] = {
            "params": asdict(self.params),
            "arrays": {
                name: [a.dtype.str, list(a.shape), a.tobytes()] for name, a in arrays.items()
            },
            "numbers": {name: getattr(self, name) for name in self._NUMBERS},
            "raw_history": list(self.raw_history),
            "recent": list(self.recent),
            "calibration": self.calibration,
            "rng": [
                str(state["state"]["state"]),
                str(state["state"]["inc"]),
                state["has_uint32"],
                state["uinteger"],
            ],
            "digest": self.digest(),
        }
        body = zlib.compress(msgpack.packb(blob, use_bin_type=True), LEVEL)
        return _HEADER.pack(MAGIC, FORMAT) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> HTM:
        """A model from ``to_bytes``; ``InvalidArgument`` (one line) for anything else: other
        bytes, a saved model of another format, or one whose state does not check out."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgument("htm: a saved model is bytes")
        data = bytes(data)
        if data[:1] == b"\x78":  # a bare zlib stream: format 1 (no header)
            version, body = 1, data
        elif len(data) >= _HEADER.size and data[: len(MAGIC)] == MAGIC:
            version, body = _HEADER.unpack_from(data)[1], data[_HEADER.size :]
        else:
            raise InvalidArgument("htm: not a saved model")
        if version not in READS:
            raise InvalidArgument(
                f"htm: a saved model of format {version}; this build reads formats "
                f"{min(READS)}-{max(READS)} only"
            )
        try:
            inflate = zlib.decompressobj()
            packed = inflate.decompress(body, MAX_STATE_BYTES)
            if inflate.unconsumed_tail or not inflate.eof:
                raise ValueError("cut short or too large")
            blob = msgpack.unpackb(packed, raw=False, strict_map_key=False)
            if not isinstance(blob, dict):
                raise ValueError("not a map")
            if version == 1 and blob.get("format") != 1:
                raise ValueError("not a saved model")
            model = cls._restore(blob, version)
        except InvalidArgument:
            raise
        except Exception as exc:
            raise InvalidArgument(f"htm: not a saved model ({type(exc).__name__})") from None
        return model

    @classmethod
    def _restore(cls, blob: dict[str, Any], version: int) -> HTM:
        model = cls.__new__(cls)
        p = model.params = Params(**blob["params"])
        model.time_size, model.input_size = _sizes(p)
        cells = p.columns * p.cells
        if p.columns * model.input_size > MAX_POOL or cells > MAX_POOL:
            raise ValueError("larger than this build restores")
        saved: dict[str, NDArray[Any]] = {}
        for name, (dtype, shape, raw) in blob["arrays"].items():
            if not isinstance(shape, list) or not all(isinstance(n, int) for n in shape):
                raise ValueError("a bad shape")
            saved[name] = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
        if version == 1:
            for name in cls._ARRAYS:
                setattr(model, name, saved[name])
        else:
            _, potential, initial, tie_break = _initial_pool(p)
            model.sp_potential, model.tie_break = potential, tie_break
            columns, change = saved["sp_changed"], saved["sp_change"]
            if (
                columns.dtype != np.int32
                or columns.shape != change.shape[:1]
                or change.shape[1:] != initial.shape[1:]
                or change.dtype != initial.dtype
                or (len(columns) and (columns.min() < 0 or columns.max() >= p.columns))
            ):
                raise ValueError("its arrays do not fit its parameters")
            model.sp_perm = initial.copy()
            model.sp_perm[columns] += change
            for name in cls._SAVED:
                setattr(model, name, saved[name])
        for name in cls._NUMBERS:
            value = blob["numbers"][name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError("a bad number")
            setattr(model, name, value)
        model.raw_history = deque(_floats(blob["raw_history"]), maxlen=p.history)
        model.recent = deque(_floats(blob["recent"]), maxlen=p.average_window)
        model.calibration = _floats(blob["calibration"])
        state, inc, has32, uinteger = blob["rng"]
        model.rng = np.random.Generator(np.random.PCG64())
        model.rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(state), "inc": int(inc)},
            "has_uint32": int(has32),
            "uinteger": int(uinteger),
        }
        model._check()
        if version == 1:
            if not np.array_equal(
                model.cell_segments, np.bincount(model.seg_cell, minlength=cells)
            ):
                raise ValueError("its segment counts do not add up")
        else:
            model.cell_segments = np.bincount(model.seg_cell, minlength=cells).astype(np.int32)
            if model.digest() != blob["digest"]:
                # not what was saved: damaged, or this build's numpy draws another seed's
                # pools (a saved model is only as portable as its generator's stream)
                raise ValueError("its state does not match its digest")
        model._derive()
        return model

    def _check(self) -> None:
        """Everything ``step`` relies on, for a model from bytes: shapes, kinds and ranges."""
        p = self.params
        cells = p.columns * p.cells
        n = len(self.seg_cell) if self.seg_cell.ndim == 1 else -1
        want: dict[str, tuple[tuple[int, ...], str, int, int]] = {
            "sp_perm": ((p.columns, self.input_size), "int16", 0, ONE),
            "sp_potential": ((p.columns, self.input_size), "bool", 0, 1),
            "tie_break": ((p.columns,), "float32", 0, 1),
            "seg_cell": ((n,), "int32", 0, cells - 1),
            "seg_used": ((n,), "int64", -(2**62), 2**62),
            "syn_cell": ((n, p.max_synapses), "int32", -1, cells - 1),
            "syn_perm": ((n, p.max_synapses), "int16", 0, ONE),
            "active_cells": ((-1,), "int32", 0, cells - 1),
            "winner_cells": ((-1,), "int32", 0, cells - 1),
        }
        for name, (shape, dtype, low, high) in want.items():
            a = getattr(self, name)
            if a.dtype != np.dtype(dtype) or a.ndim != len(shape):
                raise ValueError(f"{name}: not a {dtype} array of {len(shape)} dimensions")
            if any(w >= 0 and w != h for w, h in zip(shape, a.shape, strict=True)):
                raise ValueError(f"{name}: its shape does not fit its parameters")
            if a.size and (a.min() < low or a.max() > high):
                raise ValueError(f"{name}: out of range")
        if n > p.max_segments or not isinstance(self.rows, int) or self.rows < 0:
            raise ValueError("more segments than its pool, or a bad row count")
        finite = (self.resolution, self.offset, self.mean, self.std, self.previous_tail)
        if not all(math.isfinite(x) for x in finite) or self.resolution < 0 or self.std < 0:
            raise ValueError("a number out of range")
        if math.isnan(self.seen_min) or math.isnan(self.seen_max):
            raise ValueError("a number out of range")
        history = (*self.raw_history, *self.recent, *self.calibration)
        if not all(math.isfinite(x) for x in history):
            raise ValueError("a history that is not finite")
        if len(self.calibration) >= max(p.calibration_rows, 2):
            raise ValueError("a calibration longer than its parameters allow")

    def digest(self) -> int:
        """A CRC-32 of the model's arrays (what a saved model must restore to)."""
        crc = 0
        for name in self._ARRAYS:
            if name != "cell_segments":  # (it follows from seg_cell)
                crc = zlib.crc32(np.ascontiguousarray(getattr(self, name)).tobytes(), crc)
        return crc

    def memory_bytes(self) -> int:
        """The bytes its arrays hold."""
        return sum(getattr(self, name).nbytes for name in self._ARRAYS)
