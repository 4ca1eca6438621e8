"""HTM in numpy: encoders, learning a periodic signal, scoring a spike, saving and restoring."""

from __future__ import annotations

import json
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
    assert np.median(raw[-4 * PERIOD :]) <= 0.05
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


def test_only_scores_above_the_usual_are_unlikely():
    """The likelihood is the upper tail: raw scores far below the usual (a model predicting
    better than ever) are not an anomaly; far above, they are."""
    rng = np.random.default_rng(5)
    usual = (0.4 + 0.1 * rng.random(700)).tolist()
    runs = {}
    for run in (0.0, 1.0):
        model = HTM(Params(value_min=0, value_max=1, **SMALL))
        for r in usual:
            model._score(r, False)
        runs[run] = [model._score(run, False).likelihood for _ in range(10)]
    assert max(runs[0.0]) < 0.5
    assert max(runs[1.0]) > 0.9999


def test_no_warm_up_still_scores_finite_likelihoods():
    model = HTM(Params(value_min=0, value_max=1, learning_rows=0, estimation_rows=0, **SMALL))
    scores = [model.step(wave(i), START + timedelta(hours=i)) for i in range(30)]
    assert all(math.isfinite(s.likelihood) and 0 <= s.likelihood <= 1 for s in scores)
    assert HTM.from_bytes(model.to_bytes()).digest() == model.digest()


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


# -- the kernel and `swarm anomaly feed` ---------------------------------------------------------

ROWS = [[f"2024-01-01 {h:02d}:00:00", wave(h)] for h in range(24)]


def test_the_anomaly_kernel_carries_its_model_as_state():
    from homeswarm.kernels import builtin_registry

    k = builtin_registry().get("anomaly")
    assert k.needs.stateful
    params = {"value_min": -1, "value_max": 1, "seed": 3, **SMALL}
    first = k.run({"rows": ROWS[:12], "state": None, "params": params})
    second = k.run({"rows": ROWS[12:], "state": first["state"]})
    whole = k.run({"rows": ROWS, "state": None, "params": params})
    assert first["scores"] + second["scores"] == whole["scores"]
    assert second["state"] == whole["state"]
    assert set(whole["scores"][0]) == {"score", "likelihood", "log_likelihood", "detection"}
    # the same rows straight through the model: the same scores
    model = HTM(Params(**params))
    direct = [model.step(v, datetime.fromisoformat(t)).raw for t, v in ROWS]
    assert [s["score"] for s in whole["scores"]] == direct
    assert k.compute_s({"rows": ROWS}) > k.compute_s({"rows": ROWS[:1]})


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"rows": []}, "rows must be"),
        ({"rows": [["2024-01-01", "x"]]}, "not a number"),
        ({"rows": [["yesterday", 1.0]]}, "not a timestamp"),
        ({"rows": [[None, 1.0]], "params": {"columns": -1}}, "not negative"),
        ({"rows": [[None, 1.0]], "params": {"nope": 1}}, "unknown field"),
        ({"rows": [[None, 1.0]], "state": "text"}, "state must be bytes"),
        ({"rows": [[None, 1.0]], "state": b"junk"}, "not a saved model"),
    ],
)
def test_the_anomaly_kernel_refuses_bad_input_in_one_line(value, match):
    from homeswarm.kernels import InvalidInput, builtin_registry

    with pytest.raises(InvalidInput, match=match) as info:
        builtin_registry().get("anomaly").run(value)
    assert "\n" not in str(info.value)


def feed_cli(monkeypatch, capsys, text: str, *args: str) -> tuple[int, str, str]:
    import io

    from homeswarm.cli._main import main

    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code = main(["anomaly", "feed", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_feed_prints_scores_and_keeps_the_model(tmp_path, monkeypatch, capsys):
    lines = "timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in ROWS)
    code, out, err = feed_cli(
        monkeypatch, capsys, lines, "cpu", "--home", str(tmp_path), "--range=-1,1"
    )
    assert code == 0, err
    printed = out.splitlines()
    assert len(printed) == 24
    stamp, value, score, likelihood = printed[0].split(",")
    assert stamp == ROWS[0][0]
    assert float(value) == pytest.approx(ROWS[0][1])
    assert 0.0 <= float(score) <= 1.0
    assert float(likelihood) == 0.5
    saved = tmp_path / "anomaly" / "cpu.htm"
    assert saved.stat().st_mode & 0o777 == 0o600
    assert HTM.from_bytes(saved.read_bytes()).rows == 24
    # the next feed continues the same model; --json gives objects
    code, out, _ = feed_cli(
        monkeypatch, capsys, "2024-01-02 00:00:00,0.5\n", "cpu", "--json", "--home", str(tmp_path)
    )
    assert code == 0
    record = json.loads(out)
    assert set(record) == {"timestamp", "value", "score", "likelihood", "log_likelihood"}
    assert HTM.from_bytes(saved.read_bytes()).rows == 25


def test_feed_stops_at_a_bad_line_with_one_line_and_keeps_what_came_before(
    tmp_path, monkeypatch, capsys
):
    text = "2024-01-01 00:00:00,1\n2024-01-01 01:00:00,2\n2024-01-01 02:00:00,two\n"
    code, out, err = feed_cli(monkeypatch, capsys, text, "s", "--home", str(tmp_path))
    assert code == 2
    assert len(out.splitlines()) == 2
    assert err.strip() == "swarm anomaly: error: line 3: not a number: 'two'"
    assert HTM.from_bytes((tmp_path / "anomaly" / "s.htm").read_bytes()).rows == 2
    code, _, err = feed_cli(monkeypatch, capsys, "", "s", "--range", "5", "--home", str(tmp_path))
    assert code == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
