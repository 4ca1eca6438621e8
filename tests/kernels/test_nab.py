"""The NAB scorer: its rules on hand-made series, and Numenta's published scores from its own."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from homeswarm.errors import InvalidArgument
from homeswarm.kernels._nab import (
    PROFILES,
    Series,
    climb,
    probation_rows,
    scaled_sigmoid,
    score_corpus,
)
from homeswarm.kernels._nab_data import corpus_dir, load_results, window_rows

STANDARD = PROFILES[0]
TINY = {"columns": 64, "active_columns": 4, "cells": 2, "value_size": 40, "value_bits": 5}


def test_the_scaled_sigmoid_rewards_early_and_punishes_far():
    assert scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(-0.5) > scaled_sigmoid(-0.1) > 0  # earlier in a window earns more
    assert -1 < scaled_sigmoid(0.5) < scaled_sigmoid(0.1) < 0  # just after a window costs less
    assert scaled_sigmoid(3.01) == -1.0


def test_probation_is_15_percent_capped_at_750_rows():
    assert probation_rows(1000) == 150
    assert probation_rows(4032) == 604
    assert probation_rows(20000) == 750


def series(scores: list[float], windows: tuple[tuple[int, int], ...], name: str = "f") -> Series:
    return Series(name, np.asarray(scores, dtype=np.float64), windows)


def test_one_detection_at_a_window_start_is_perfect():
    # 100 rows: 15 probationary; one window at rows 40-59
    scores = [0.0] * 100
    scores[40] = 1.0
    scores[10] = 1.0  # in probation: neither rewarded nor punished
    result = score_corpus([series(scores, ((40, 59),))], STANDARD, exact=True)
    assert result.raw == pytest.approx(1.0)
    assert result.normalized == pytest.approx(100.0)
    assert result.null == -1.0
    assert result.perfect == 1.0


def test_only_the_earliest_detection_in_a_window_counts_and_later_ones_earn_less():
    early = [0.0] * 100
    early[45] = early[50] = early[55] = 1.0
    once = [0.0] * 100
    once[45] = 1.0
    late = [0.0] * 100
    late[55] = 1.0
    score = {
        name: score_corpus([series(s, ((40, 59),))], STANDARD, exact=True).raw
        for name, s in (("early", early), ("once", once), ("late", late))
    }
    assert score["early"] == pytest.approx(score["once"])  # the later two add nothing
    assert 0 < score["late"] < score["once"] < 1


def test_false_positives_cost_their_weight_and_less_just_after_a_window():
    before = [0.0] * 100
    before[20] = 1.0  # before any window: the full false-positive weight
    just_after = [0.0] * 100
    just_after[40] = just_after[61] = 1.0
    far_after = [0.0] * 100
    far_after[40] = far_after[99] = 1.0
    window = ((40, 59),)
    got_before = score_corpus([series(before, window)], STANDARD, exact=True)
    # the optimiser would rather detect nothing than only a false positive
    assert got_before.raw == -1.0
    assert got_before.per_file["f"] == -1.0
    near = score_corpus([series(just_after, window)], STANDARD, exact=True).raw
    far = score_corpus([series(far_after, window)], STANDARD, exact=True).raw
    assert 1 - 0.11 < far < near < 1
    low_fp = score_corpus([series(far_after, window)], PROFILES[1], exact=True).raw
    assert low_fp < far  # the low-FP profile doubles the false positive's cost


def test_a_missed_window_costs_the_false_negative_weight():
    scores = [0.0] * 100
    two = ((30, 39), (70, 79))
    scores[30] = 0.9
    for profile, missed in ((STANDARD, 1.0), (PROFILES[2], 2.0)):
        result = score_corpus([series(scores, two)], profile, exact=True)
        assert result.raw == pytest.approx(1.0 - missed)
        assert result.normalized == pytest.approx(
            100 * (1 - missed + 2 * missed) / (2 + 2 * missed)
        )


def test_the_threshold_is_shared_across_the_corpus():
    # file a wants threshold 0.5 (its window scores 0.5); file b's false positive scores 0.6
    a = [0.0] * 100
    a[40] = 0.5
    b = [0.0] * 100
    b[30] = 0.6
    result = score_corpus(
        [series(a, ((40, 59),), "a"), series(b, ((80, 89),), "b")], STANDARD, exact=True
    )
    assert result.threshold == 0.5
    assert result.per_file["a"] == pytest.approx(1.0)
    assert result.per_file["b"] == pytest.approx(-1.0 - 0.11)
    assert result.raw == pytest.approx(sum(result.per_file.values()))


def test_climb_finds_a_peak_and_stays_in_range():
    assert climb(lambda x: -((x - 0.73) ** 2)) == pytest.approx(0.73, abs=1e-6)
    assert 0 <= climb(lambda x: x) <= 1
    assert 0 <= climb(lambda x: -x) <= 1


def test_window_rows_from_timestamps():
    stamps = [f"2014-04-01 00:{m:02d}:00" for m in range(0, 60, 5)]
    rows = window_rows(stamps, [("2014-04-01 00:10:00.000000", "2014-04-01 00:22:00.000000")])
    assert rows == ((2, 4),)


def test_a_missing_corpus_is_one_clear_line(tmp_path):
    with pytest.raises(InvalidArgument, match=r"no NAB corpus at .*pass --nab DIR") as info:
        corpus_dir(tmp_path)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def nab():
    try:
        return corpus_dir()
    except InvalidArgument as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def numenta(nab):
    return load_results(nab, "numenta")


def test_numentas_published_scores_are_reproduced_from_its_raw_results(nab, numenta):
    corpus = numenta
    assert len(corpus) == 58
    assert sum(len(s.windows) for s in corpus) == 116
    published = json.loads((nab / "results" / "final_results.json").read_text())["numenta"]
    got = {p.name: score_corpus(corpus, p) for p in PROFILES}
    assert {k: round(r.normalized, 1) for k, r in got.items()} == {
        "standard": 70.1,
        "reward_low_FP_rate": 63.1,
        "reward_low_FN_rate": 74.3,
    }
    for name, result in got.items():
        assert result.normalized == pytest.approx(published[name], abs=1e-6)
        assert sum(result.per_file.values()) == pytest.approx(result.raw)
    # the exact optimum is never lower (on the low-FP profile NAB's local search stops short)
    for profile in PROFILES:
        exact = score_corpus(corpus, profile, exact=True)
        assert exact.normalized >= got[profile.name].normalized - 1e-9
    assert score_corpus(corpus, PROFILES[1], exact=True).normalized == pytest.approx(
        63.21, abs=0.01
    )


def test_published_per_file_scores_match(nab, numenta):
    result = score_corpus(numenta, STANDARD)
    with (nab / "results" / "numenta" / "numenta_standard_scores.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["Detector"] == "numenta"]
    assert len(rows) == 58
    for row in rows:
        assert result.per_file[row["File"]] == pytest.approx(float(row["Score"]), abs=1e-6)


def test_our_likelihood_turns_numentas_raw_scores_into_its_final_ones(nab):
    """The likelihood half of our detector, fed Numenta's raw scores (``raw_score``) with
    Numenta's warm-up (half the probationary period learning, half estimating), gives its final
    scores (``anomaly_score``) row for row: on every file but the flat line, where Numenta's
    detector gives up on a constant series (0.5), and hence the published NAB scores."""
    from homeswarm.kernels._htm import HTM, Params
    from homeswarm.kernels._nab_data import load_windows, read_series

    corpus = []
    for name, limits in load_windows(nab).items():
        group, file = name.split("/")
        path = nab / "results" / "numenta" / group / f"numenta_{file}"
        stamps, final = read_series(path, "anomaly_score")
        raw, values = read_series(path, "raw_score")[1], read_series(path, "value")[1]
        probation = probation_rows(len(raw))
        model = HTM(
            Params(
                value_min=float(values.min()),
                value_max=float(values.max()),
                learning_rows=probation // 2,
                estimation_rows=probation - probation // 2,
                **TINY,
            )
        )
        ours = np.array(
            [
                model._score(r, model._spatial(v)).detection
                for r, v in zip(raw.tolist(), values.tolist(), strict=True)
            ]
        )
        if name != "artificialNoAnomaly/art_flatline.csv":
            assert np.abs(ours - final).max() < 1e-4, name
        corpus.append(Series(name, ours, window_rows(stamps, limits)))
    got = {p.name: round(score_corpus(corpus, p).normalized, 1) for p in PROFILES}
    assert got == {"standard": 70.1, "reward_low_FP_rate": 63.1, "reward_low_FN_rate": 74.3}
