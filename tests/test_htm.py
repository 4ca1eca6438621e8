"""HTM in numpy: encoders, learning a periodic signal, scoring a spike, saving and restoring."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from homeswarm.errors import InvalidArgument
from homeswarm.kernels._htm import HTM, Params

START = datetime(2024, 1, 1)
PERIOD = 24
SMALL = {
    "columns": 512,
    "active_columns": 20,
    "cells": 8,
    "activation_threshold": 8,
    "min_threshold": 6,
    "new_synapses": 12,
    "max_synapses": 16,
}


def wave(i: int) -> float:
    return math.sin(2 * math.pi * i / PERIOD)


def feed(model: HTM, rows: range) -> list:
    return [model.step(wave(i), START + timedelta(hours=i)) for i in rows]


@pytest.fixture(scope="module")
def learned() -> tuple[HTM, list]:
    model = HTM(Params(value_min=-1, value_max=1, learning_rows=200, estimation_rows=200))
    return model, feed(model, range(40 * PERIOD))


def test_a_periodic_signal_becomes_predictable(learned):
    _, scores = learned
    raw = [s.raw for s in scores]
    first = np.mean(raw[:PERIOD])
    last = np.mean(raw[-4 * PERIOD :])
    assert first > 0.8  # nothing is predicted at first
    assert last < 0.12  # most columns are predicted once learned
    assert np.median(raw[-4 * PERIOD :]) == 0.0
    assert all(s.likelihood == 0.5 for s in scores[:400])  # the likelihood's warm-up


def test_a_spike_after_learning_scores_high(learned):
    model, scores = learned
    restored = HTM.from_bytes(model.to_bytes())  # (leave the module's model as it was)
    n = len(scores)
    spike = restored.step(4.0, START + timedelta(hours=n))
    assert spike.raw >= 0.5
    assert spike.detection == 1.0  # far beyond the range seen
    usual = np.mean([s.raw for s in scores[-4 * PERIOD :]])
    assert spike.raw > 4 * usual
    # within the range seen, but out of phase: still unexpected
    restored = HTM.from_bytes(model.to_bytes())
    odd = restored.step(wave(n + PERIOD // 4), START + timedelta(hours=n))
    assert odd.raw > 3 * usual


def test_likelihood_rises_on_a_run_of_anomalies(learned):
    model, scores = learned
    restored = HTM.from_bytes(model.to_bytes())
    n = len(scores)
    out = [
        restored.step(0.5 * ((i * 7919) % 13) / 13, START + timedelta(hours=n + i))
        for i in range(12)
    ]
    assert max(s.likelihood for s in out) > 0.99
    assert max(s.log_likelihood for s in out) > 0.2
    assert all(0.0 <= s.log_likelihood <= 1.0 for s in out)


def test_save_and_restore_gives_identical_scores():
    params = Params(
        value_min=-1, value_max=1, learning_rows=50, estimation_rows=50, seed=7, **SMALL
    )
    model = HTM(params)
    feed(model, range(200))
    saved = model.to_bytes()
    restored = HTM.from_bytes(saved)
    assert restored.to_bytes() == saved
    assert feed(model, range(200, 320)) == feed(restored, range(200, 320))
    assert model.to_bytes() == restored.to_bytes()


def test_the_same_seed_and_rows_give_the_same_model_and_another_seed_does_not():
    a, b, c = (HTM(Params(value_min=-1, value_max=1, seed=s, **SMALL)) for s in (1, 1, 2))
    for m in (a, b, c):
        feed(m, range(60))
    assert a.to_bytes() == b.to_bytes()
    assert a.to_bytes() != c.to_bytes()


def test_the_scalar_encoder_overlaps_near_values_only():
    model = HTM(Params(value_min=0, value_max=130, time_bits=0))
    base = set(model.encode(50.0, None).tolist())
    assert base == set(model.encode(50.0, None).tolist())
    near = set(model.encode(50.0 + model.resolution, None).tolist())
    far = set(model.encode(120.0, None).tolist())
    assert len(base) >= 18  # 21 bits, a few hash collisions at most
    assert len(base & near) >= len(base) - 2
    assert len(base & far) <= 3


def test_the_time_encoder_wraps_around_midnight():
    model = HTM(Params(value_min=0, value_max=1))
    bits = lambda h, m=0: set(  # noqa: E731
        model.encode(0.5, datetime(2024, 1, 1, h, m)).tolist()
    )
    assert len(bits(23, 50) & bits(0, 10)) > len(bits(23, 50) & bits(12)) + 10


def test_without_a_range_the_first_rows_calibrate():
    model = HTM(Params(calibration_rows=20))
    first = [model.step(float(i % 5), START + timedelta(hours=i)) for i in range(19)]
    assert all(s.raw == 0.0 and s.likelihood == 0.5 for s in first)
    assert model.resolution == 0
    model.step(0.0, START)
    assert model.resolution > 0
    assert model.step(2.0, START).raw > 0.5  # from here on it learns


def test_bad_input_and_bad_state_are_one_clear_error():
    with pytest.raises(InvalidArgument, match="finite"):
        HTM(Params(value_min=0, value_max=1)).step(math.nan)
    with pytest.raises(InvalidArgument, match="not a saved model"):
        HTM.from_bytes(b"\x93garbage")
    with pytest.raises(InvalidArgument, match="both"):
        Params(value_min=0)
