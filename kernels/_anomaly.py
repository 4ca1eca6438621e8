"""The ``anomaly`` kernel: HTM anomaly scores for one stream, its model carried as state.

Input: ``{"rows": [[TIMESTAMP, VALUE], ...], "state": BYTES or null, "params": {...}}``.
A timestamp is ISO 8601 text (``2024-01-01 13:05:00``, ``2024-01-01T13:05:00Z``), a number of
seconds since the epoch (UTC), or null (no time-of-day); a value is a finite number. ``state``
is what the previous call returned (null: a new model, made from ``params``, the fields of
``kernels._htm.Params``; ignored once there is a state). 1-``MAX_ROWS`` rows per call.

Output: ``{"scores": [{"score", "likelihood", "log_likelihood", "detection"}, ...], "state":
BYTES}``: one map per row (``score`` is the raw anomaly score: the share of the input that was not
predicted; ``likelihood`` how unusual the recent scores are, 0.5 while warming up), and the model to
pass to the next call. The kernel holds nothing between calls, so the model can be checkpointed,
moved and resumed anywhere: the same state and rows give the same scores on any device.
"""

from __future__ import annotations

import importlib.util
import math
from datetime import UTC, datetime
from typing import Any

from homeswarm.errors import InvalidArgument

from ._api import InvalidInput, Needs, describe_value, kernel

# One small parameter set for every telemetry series: a quarter of Numenta's NAB columns, an
# eighth of its cells, and a short warm-up (60 rows learning + 60 estimating: 10 minutes at 5 s)
# so a device watches itself soon after it starts. No time-of-day encoding: ten minutes cannot
# teach a daily rhythm.
TELEMETRY_PARAMS: dict[str, Any] = {
    "time_bits": 0,
    "columns": 512,
    "active_columns": 20,
    "cells": 8,
    "value_size": 200,
    "value_bits": 11,
    "activation_threshold": 7,
    "min_threshold": 5,
    "new_synapses": 12,
    "max_synapses": 16,
    "max_segments": 4096,
    "learning_rows": 60,
    "estimation_rows": 60,
    "reestimate_every": 20,
    "history": 2000,
}
# (the swarm's watch service runs it on each device's own series; the ``migration`` scenario
# moves such instances between devices)

MAX_ROWS = 10_000
PER_ROW_S = 0.0015  # a laptop core (see bench/bench_nab.py)
BASE_S = 0.05  # restoring and saving a model


def anomaly_model(state: bytes | None = None, params: dict[str, Any] | None = None) -> Any:
    """An HTM model (``kernels._htm.HTM``): restored from ``state``, else new from ``params``.

    numpy is imported here, not when the package is: ``swarm --help`` stays light.
    """
    from ._htm import HTM, Params

    if state is not None:
        return HTM.from_bytes(state)
    try:
        return HTM(Params(**(params or {})))
    except TypeError:
        raise InvalidArgument(f"htm: unknown parameter among {sorted(params or {})}") from None


def parse_time(value: object) -> datetime | None:
    """A row's timestamp: ISO 8601 text, seconds since the epoch (UTC), or None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"a timestamp must be ISO 8601 text or seconds, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > 1e11:
            raise InvalidInput(f"a timestamp in seconds must be a plausible number, got {value!r}")
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        text = value.strip()
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            try:
                return parse_time(float(text))
            except ValueError:
                pass
        raise InvalidInput(f"not a timestamp (ISO 8601 or seconds): {text[:40]!r}")
    raise InvalidInput(f"a timestamp must be text, a number or null, got {describe_value(value)}")


def parse_value(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"a value must be a number, got {describe_value(value)}")
    try:
        number = float(value)
    except ValueError:
        raise InvalidInput(f"not a number: {str(value).strip()[:40]!r}") from None
    if not math.isfinite(number):
        raise InvalidInput(f"a value must be finite, got {str(value).strip()[:40]!r}")
    return number


def _check(value: Any) -> Any:
    shape = '{"rows": [[TIMESTAMP, VALUE], ...], "state": BYTES or null, "params": {...}}'
    if not isinstance(value, dict) or not {"rows"} <= set(value) <= {"rows", "state", "params"}:
        raise InvalidInput(f"input must be {shape}")
    rows = value["rows"]
    if not isinstance(rows, list | tuple) or not 1 <= len(rows) <= MAX_ROWS:
        raise InvalidInput(f"rows must be a list of 1-{MAX_ROWS} [timestamp, value] pairs")
    checked = []
    for i, row in enumerate(rows):
        if not isinstance(row, list | tuple) or len(row) != 2:
            raise InvalidInput(f"rows[{i}] must be a [timestamp, value] pair")
        parse_time(row[0])
        checked.append([row[0], parse_value(row[1])])
    state = value.get("state")
    if state is not None and not isinstance(state, bytes):
        raise InvalidInput(f"state must be bytes or null, got {describe_value(state)}")
    params = value.get("params") or {}
    if not isinstance(params, dict):
        raise InvalidInput(f"params must be a map, got {describe_value(params)}")
    if state is None:
        from ._htm import Params

        try:
            Params(**params)
        except TypeError:
            raise InvalidInput(f"params: unknown field among {sorted(params)}") from None
        except InvalidArgument as exc:
            raise InvalidInput(str(exc)) from None
    return {"rows": checked, "state": state, "params": params}


def _estimate(value: Any) -> float:
    return BASE_S + PER_ROW_S * len(value["rows"])


def _available() -> bool:
    if importlib.util.find_spec("numpy") is None:
        raise RuntimeError("numpy is not installed")
    return True


@kernel(
    "anomaly",
    needs=Needs(
        scope="personal",
        energy="small",
        cpu=1.0,
        memory_mb=64.0,
        latency_budget_s=2.0,
        stateful=True,
        compute_s=BASE_S + PER_ROW_S,
    ),
    check=_check,
    estimate=_estimate,
    available=_available,
    doc="HTM anomaly scores: {rows: [[time, value]], state} -> {scores, state}",
)
def anomaly(value: Any) -> Any:
    try:
        model = anomaly_model(value["state"], value["params"])
    except InvalidArgument as exc:
        raise InvalidInput(str(exc)) from None
    scores = []
    for when, number in value["rows"]:
        s = model.step(number, parse_time(when))
        scores.append(
            {
                "score": s.raw,
                "likelihood": s.likelihood,
                "log_likelihood": s.log_likelihood,
                "detection": s.detection,
            }
        )
    return {"scores": scores, "state": model.to_bytes()}
