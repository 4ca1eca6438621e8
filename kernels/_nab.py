"""The Numenta Anomaly Benchmark's scoring, written from its paper (Lavin and Ahmad 2015).

Pure: arrays in, numbers out; reading the corpus lives in ``kernels._nab_data``.

The method, as published:

- Each labelled anomaly is a window of rows. The first 15 % of a file (at most 750 rows) is a
  probationary period: its rows are neither rewarded nor penalised.
- A detector's raw scores become detections where ``score >= threshold``.
- Inside a window only the earliest detection counts, weighted by the scaled sigmoid
  ``2 / (1 + exp(5 y)) - 1`` of its relative position ``y`` (-1 at the window's first row, near 0
  at its last), rescaled so the first row earns exactly ``tp_weight``. A window with no detection
  costs ``fn_weight``.
- A detection outside every window costs ``fp_weight`` times the sigmoid of how far past the end
  of the previous window it is (in units of that window's width), so a detection just after a
  window costs little and one far away (or before any window) costs the full weight.
- The threshold is chosen per profile to maximise the sum over the whole corpus (NAB's published
  figures come from a local search from 0.5, ``climb``; the exact optimum is available); the
  reported score is normalised: ``100 * (raw - null) / (perfect - null)`` where the null
  detector detects nothing (every window missed) and the perfect one detects every window at its
  first row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750  # 15 % of 5000: NAB caps the probationary period there


@dataclass(frozen=True, slots=True)
class Profile:
    """A scoring profile: the weights of a true positive, a false positive and a miss."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


PROFILES: tuple[Profile, ...] = (
    Profile("standard", 1.0, 0.11, 1.0),
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


def scaled_sigmoid(position: float) -> float:
    """NAB's weight of a detection at ``position`` relative to a window (see the module doc)."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_rows(length: int) -> int:
    """How many leading rows of a file of ``length`` rows are not scored."""
    return int(min(math.floor(PROBATION_FRACTION * length), PROBATION_FRACTION * 5000))


@dataclass(frozen=True, slots=True)
class Series:
    """One file as the scorer sees it: its detector scores and its windows as row ranges."""

    name: str
    scores: NDArray[np.float64]
    windows: tuple[tuple[int, int], ...]  # (first row, last row), inclusive, in order


def credits(series: Series, profile: Profile) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """What a detection at each row would earn, and the window it falls in (-1: none, -2: unscored).

    A row in a window earns its true-positive weight (counted once per window, by the caller);
    a row outside earns its (negative) false-positive weight.
    """
    n = len(series.scores)
    rows = np.arange(n)
    firsts = np.array([a for a, _ in series.windows], dtype=np.int64)
    lasts = np.array([b for _, b in series.windows], dtype=np.int64)
    # the window each row is in, else the last one that ended before it (-1: none yet)
    k = np.searchsorted(lasts, rows, side="left")
    inside = (
        (k < len(lasts)) & (firsts[np.minimum(k, len(lasts) - 1)] <= rows)
        if len(lasts)
        else (np.zeros(n, dtype=bool))
    )
    window_of = np.where(inside, k, -1).astype(np.int64)
    credit = np.full(n, -profile.fp_weight)
    if len(lasts):
        kin = k[inside]
        width = lasts[kin] - firsts[kin] + 1
        position = -(lasts[kin] - rows[inside] + 1) / width
        credit[inside] = profile.tp_weight * _sigmoid(position) / scaled_sigmoid(-1.0)
        after = ~inside & (k > 0)
        prev = k[after] - 1
        past = np.abs(lasts[prev] - rows[after]) / np.maximum(lasts[prev] - firsts[prev], 1)
        credit[after] = profile.fp_weight * _sigmoid(past)
    window_of[: probation_rows(n)] = -2
    return credit, window_of


def _sigmoid(position: NDArray[np.float64]) -> NDArray[np.float64]:
    """``scaled_sigmoid`` over an array."""
    with np.errstate(over="ignore"):
        value = 2.0 / (1.0 + np.exp(5.0 * position)) - 1.0
    return np.where(position > 3.0, -1.0, value)


@dataclass(frozen=True, slots=True)
class Result:
    """A detector's score on a corpus under one profile."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    per_file: dict[str, float]

    @property
    def normalized(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def _sweep(
    scores: NDArray[np.float64],
    credit: NDArray[np.float64],
    window: NDArray[np.int64],
    windows: int,
    fn_weight: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The total at every distinct threshold, from the highest score down.

    Returns ``(thresholds, totals)``: ``totals[k]`` is the corpus score when every row scoring
    ``>= thresholds[k]`` is a detection. Each window's value is the best credit among its
    detected rows (the earliest row earns the most) or ``-fn_weight`` while none is detected.
    """
    order = np.argsort(-scores, kind="stable")
    s, c, w = scores[order], credit[order], window[order]
    delta = np.where(w == -1, c, 0.0)
    inside = np.flatnonzero(w >= 0)
    value = np.full(windows, -fn_weight)
    for k in inside.tolist():
        win = int(w[k])
        if c[k] > value[win]:
            delta[k] = c[k] - value[win]
            value[win] = c[k]
    totals = -fn_weight * windows + np.cumsum(delta)
    # a threshold admits every row of equal score at once: keep the last row of each run
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    return s[last], totals[last]


def climb(objective: Callable[[float], float], start: float = 0.5, step: float = 0.1) -> float:
    """A threshold in [0, 1] from NAB's local search (as its published results were optimised).

    Hill climbing with an adaptive step ("twiddle"): try ``x + step``, then ``x - step``; on a
    gain move there and double the step, else stay and halve it, until the step is under 1e-7.
    It may stop at a local optimum; ``score_corpus(..., exact=True)`` finds the global one.
    """
    seen: dict[float, float] = {}

    def value(x: float) -> float:
        if x not in seen:
            seen[x] = objective(x)
        return seen[x]

    x, best = start, value(start)
    while step > 1e-7:
        step = min(step, (1.0 - x) / 2) if x + step > 1.0 else step
        x += step
        if (score := value(x)) > best:
            best, step = score, step * 2
            continue
        step = min(step, x / 2) if x - step < 0.0 else step
        x -= 2 * step
        if (score := value(x)) > best:
            best, step = score, step * 2
            continue
        x += step
        step /= 2
    return x


def score_corpus(corpus: Sequence[Series], profile: Profile, *, exact: bool = False) -> Result:
    """The detector's score on ``corpus`` under ``profile``, at the threshold that maximises it.

    By default the threshold comes from NAB's own local search (``climb``), which is how every
    published NAB score was made; ``exact`` takes the global optimum over every distinct score,
    which is never lower.
    """
    parts = [credits(series, profile) for series in corpus]
    offsets = np.cumsum([0] + [len(series.windows) for series in corpus])
    scores = np.concatenate([series.scores for series in corpus])
    credit = np.concatenate([c for c, _ in parts])
    window = np.concatenate([np.where(w >= 0, w + offsets[i], w) for i, (_, w) in enumerate(parts)])
    scored = window != -2
    count = int(offsets[-1])
    null = -profile.fn_weight * count
    thresholds, totals = _sweep(
        scores[scored], credit[scored], window[scored], count, profile.fn_weight
    )
    # the corpus total at any threshold t: the sweep's total at the lowest distinct score >= t
    rising, rising_totals = thresholds[::-1], totals[::-1]

    def total_at(t: float) -> float:
        k = int(np.searchsorted(rising, t, side="left"))
        return float(rising_totals[k]) if k < len(rising) else null

    if exact:
        best = int(np.argmax(totals)) if len(totals) else -1
        if best < 0 or totals[best] <= null:
            threshold, raw = math.inf, null
        else:
            threshold, raw = float(thresholds[best]), float(totals[best])
    else:
        threshold = climb(total_at)
        raw = total_at(threshold)
    per_file = {
        series.name: file_score(series.scores, c, w, len(series.windows), threshold, profile)
        for series, (c, w) in zip(corpus, parts, strict=True)
    }
    return Result(profile.name, threshold, raw, null, profile.tp_weight * count, per_file)


def file_score(
    scores: NDArray[np.float64],
    credit: NDArray[np.float64],
    window: NDArray[np.int64],
    windows: int,
    threshold: float,
    profile: Profile,
) -> float:
    """One file's score at ``threshold``."""
    detected = scores >= threshold
    total = float(credit[detected & (window == -1)].sum())
    for win in range(windows):
        hits = np.flatnonzero(detected & (window == win))
        total += float(credit[hits[0]]) if len(hits) else -profile.fn_weight
    return total
