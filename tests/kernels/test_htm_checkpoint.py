"""HTM checkpoints: a model saved at any row and restored scores the rest of its stream exactly as
the model that never stopped; saved models are compact, versioned, and bad bytes are one line."""

from __future__ import annotations

import contextlib
import math
import random
import struct
import zlib
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeswarm.errors import InvalidArgument
from homeswarm.kernels._htm import FORMAT, HTM, MAGIC, Params, _initial_pool
from homeswarm.swarm._watch_service import TELEMETRY_PARAMS

START = datetime(2024, 1, 1)
# small enough that a stream of a few hundred rows runs in a blink, with a short likelihood
# warm-up so the checkpoints land before, inside and after it
TINY: dict[str, Any] = {
    "columns": 128,
    "active_columns": 8,
    "cells": 4,
    "value_size": 100,
    "value_bits": 9,
    "time_bits": 7,
    "activation_threshold": 4,
    "min_threshold": 3,
    "new_synapses": 6,
    "max_synapses": 8,
    "max_segments": 200,  # small: the pool fills and segments are reused
    "learning_rows": 40,
    "estimation_rows": 40,
    "average_window": 5,
    "history": 120,
    "reestimate_every": 10,
}


def stream(seed: int, n: int) -> list[tuple[float, datetime]]:
    """A noisy daily wave with the odd spike."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        value = 50 + 30 * math.sin(i / 12) + rng.gauss(0, 3)
        if rng.random() < 0.03:
            value += rng.choice((-1, 1)) * rng.uniform(20, 80)
        rows.append((value, START + timedelta(minutes=20 * i)))
    return rows


def scores(model: HTM, rows: list[tuple[float, datetime]]) -> list[Any]:
    return [model.step(v, t) for v, t in rows]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    at=st.integers(0, 200),
    ranged=st.booleans(),
    timed=st.booleans(),
)
def test_a_model_restored_at_any_row_scores_the_rest_exactly(seed, at, ranged, timed):
    rows = stream(seed, 200)
    if not timed:
        rows = [(v, None) for v, _ in rows]  # type: ignore[misc]
    extra = {"value_min": 0.0, "value_max": 100.0} if ranged else {"calibration_rows": 30}
    params = Params(seed=seed, **TINY, **extra)
    whole = HTM(params)
    expected = scores(whole, rows)
    first = HTM(params)
    got = scores(first, rows[:at])
    saved = first.to_bytes()
    restored = HTM.from_bytes(saved)
    assert restored.to_bytes() == saved
    got += scores(restored, rows[at:])
    assert got == expected
    assert restored.to_bytes() == whole.to_bytes()
    assert restored.digest() == whole.digest()


def test_checkpoints_taken_again_and_again_change_nothing():
    params = Params(value_min=0, value_max=100, seed=5, **TINY)
    rows = stream(5, 300)
    whole = HTM(params)
    expected = scores(whole, rows)
    model, got = HTM(params), []
    for i, row in enumerate(rows):
        if i % 17 == 0:
            model = HTM.from_bytes(model.to_bytes())
        got += scores(model, [row])
    assert got == expected


def test_the_kernel_carries_the_same_checkpoint():
    from homeswarm.kernels import builtin_registry

    k = builtin_registry().get("anomaly")
    params = {"value_min": 0.0, "value_max": 100.0, "seed": 1, **TINY}
    rows = [[t.isoformat(), v] for v, t in stream(1, 120)]
    first = k.run({"rows": rows[:70], "state": None, "params": params})
    model = HTM.from_bytes(first["state"])
    assert model.rows == 70
    second = k.run({"rows": rows[70:], "state": first["state"]})
    whole = k.run({"rows": rows, "state": None, "params": params})
    assert first["scores"] + second["scores"] == whole["scores"]


# ---- compact ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "extra", "rows"),
    [("telemetry", TELEMETRY_PARAMS, 600), ("nab", {}, 150)],
)
def test_a_checkpoint_is_much_smaller_than_the_model(name, extra, rows):
    model = HTM(Params(value_min=0, value_max=100, **extra))
    scores(model, stream(2, rows))
    saved = model.to_bytes()
    # the spatial pooler's seed-made pools are not saved, only what learning changed
    assert len(saved) < model.memory_bytes() / 4, (name, len(saved), model.memory_bytes())
    assert saved[: len(MAGIC)] == MAGIC


# ---- versioned -------------------------------------------------------------------------------


def format_1(model: HTM) -> bytes:
    """A model as format 1 wrote it (a bare deflated map, every array whole)."""
    state = model.rng.bit_generator.state
    blob = {
        "format": 1,
        "params": asdict(model.params),
        "arrays": {
            name: [str(a.dtype), list(a.shape), a.tobytes()]
            for name in HTM._ARRAYS
            for a in (getattr(model, name),)
        },
        "numbers": {name: getattr(model, name) for name in HTM._NUMBERS},
        "raw_history": list(model.raw_history),
        "recent": list(model.recent),
        "calibration": model.calibration,
        "rng": [
            str(state["state"]["state"]),
            str(state["state"]["inc"]),
            state["has_uint32"],
            state["uinteger"],
        ],
    }
    return zlib.compress(msgpack.packb(blob, use_bin_type=True), 6)


def test_a_format_1_model_still_restores_exactly():
    params = Params(value_min=0, value_max=100, seed=3, **TINY)
    rows = stream(3, 200)
    whole = HTM(params)
    expected = scores(whole, rows)
    model = HTM(params)
    got = scores(model, rows[:90])
    restored = HTM.from_bytes(format_1(model))
    assert scores(restored, rows[90:]) == expected[90:]
    assert got == expected[:90]


@pytest.mark.parametrize("version", [0, 3, FORMAT + 1, 65535])
def test_another_format_is_refused_in_one_line(version):
    model = HTM(Params(value_min=0, value_max=100, **TINY))
    scores(model, stream(0, 20))
    saved = model.to_bytes()
    other = struct.pack(">4sH", MAGIC, version) + saved[6:]
    with pytest.raises(InvalidArgument) as info:
        HTM.from_bytes(other)
    text = str(info.value)
    assert "\n" not in text
    assert f"format {version}" in text
    assert "reads formats 1-2" in text


# ---- bad and forged bytes --------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved() -> bytes:
    model = HTM(Params(value_min=0, value_max=100, seed=9, **TINY))
    scores(model, stream(9, 150))
    return model.to_bytes()


def refused(data: Any) -> str:
    with pytest.raises(InvalidArgument) as info:
        HTM.from_bytes(data)
    text = str(info.value)
    assert text.startswith("htm: ")
    assert "\n" not in text
    return text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    how=st.sampled_from(["flip", "cut", "junk", "splice"]),
    at=st.integers(0, 2**20),
    bit=st.integers(0, 7),
    other=st.binary(min_size=1, max_size=200),
)
def test_damaged_bytes_are_one_line(saved, how, at, bit, other):
    # (every example draws the same things, whatever it does with them: a draw that depends on
    # an earlier one made hypothesis report its own data generation as inconsistent in CI)
    raw = bytearray(saved)
    if how == "flip":
        raw[at % len(raw)] ^= 1 << bit
    elif how == "cut":
        raw = raw[: at % len(raw)]
    elif how == "junk":
        raw = bytearray(other)
    else:
        raw[6 + at % (len(raw) - 6) :] = other
    try:
        model = HTM.from_bytes(bytes(raw))
    except InvalidArgument as exc:
        assert str(exc).startswith("htm: ")
        assert "\n" not in str(exc)
        return
    # deflate has bits that change nothing (unused code lengths, padding): a flip there decodes
    # to the very same state, which is not damage; anything else is refused
    assert model.to_bytes() == saved


def forge(saved: bytes, change: Any) -> bytes:
    """``saved`` with its map changed by ``change(blob)``, the digest made to match again
    where it can be (a forger can compute a CRC: the checks must not rest on it)."""
    blob = msgpack.unpackb(zlib.decompress(saved[6:]), raw=False, strict_map_key=False)
    change(blob)
    with contextlib.suppress(Exception):  # (a change may leave nothing to digest)
        params = Params(**blob["params"])
        if params.columns < 10**5:
            _, potential, initial, tie_break = _initial_pool(params)
            sp_perm = initial.copy()
            sp_perm[_get(blob, "sp_changed")] += _get(blob, "sp_change")
            arrays = [sp_perm, potential, tie_break]
            arrays += [_get(blob, name) for name in HTM._SAVED]
            crc = 0
            for a in arrays:
                crc = zlib.crc32(np.ascontiguousarray(a).tobytes(), crc)
            if change is not _moved_permanence:
                blob["digest"] = crc
    with_digest = zlib.compress(msgpack.packb(blob, use_bin_type=True))
    return saved[:6] + with_digest


def _array(blob: dict[str, Any], name: str, a: np.ndarray) -> None:
    blob["arrays"][name] = [a.dtype.str, list(a.shape), a.tobytes()]


def _get(blob: dict[str, Any], name: str) -> np.ndarray:
    dtype, shape, raw = blob["arrays"][name]
    return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()


def _bad_synapse(blob: dict[str, Any]) -> None:
    syn = _get(blob, "syn_cell")
    syn[0, 0] = 10**6
    _array(blob, "syn_cell", syn)


def _short_segments(blob: dict[str, Any]) -> None:
    _array(blob, "seg_cell", _get(blob, "seg_cell")[:-1])


def _huge(blob: dict[str, Any]) -> None:
    blob["params"]["columns"] = 10**7
    blob["params"]["active_columns"] = 1


def _object_array(blob: dict[str, Any]) -> None:
    blob["arrays"]["seg_used"][0] = "|O"


def _text_history(blob: dict[str, Any]) -> None:
    blob["raw_history"] = ["x"]


def _bad_rng(blob: dict[str, Any]) -> None:
    blob["rng"] = ["nope"]


def _float_cells(blob: dict[str, Any]) -> None:
    _array(blob, "active_cells", np.array([0.5, 1.5]))


def _unknown_param(blob: dict[str, Any]) -> None:
    blob["params"]["boost"] = 2


def _moved_permanence(blob: dict[str, Any]) -> None:
    change = _get(blob, "sp_change")
    change[0, 0] += 1
    _array(blob, "sp_change", change)


def _nan_resolution(blob: dict[str, Any]) -> None:
    blob["numbers"]["resolution"] = math.nan


def _infinite_history(blob: dict[str, Any]) -> None:
    blob["recent"] = [math.inf]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_nan_resolution, "not a saved model"),
        (_infinite_history, "not a saved model"),
        (_bad_synapse, "not a saved model"),
        (_short_segments, "not a saved model"),
        (_huge, "not a saved model"),
        (_object_array, "not a saved model"),
        (_text_history, "not a saved model"),
        (_bad_rng, "not a saved model"),
        (_float_cells, "not a saved model"),
        (_unknown_param, "not a saved model"),
        (_moved_permanence, "not a saved model"),  # in range, but not what was saved
    ],
)
def test_forged_bytes_are_refused_before_they_reach_step(saved, change, says):
    assert says in refused(forge(saved, change))


def test_not_bytes_and_empty_are_one_line():
    refused(b"")
    refused(b"HTM")
    refused("text")
