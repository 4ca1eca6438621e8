"""Reading the Numenta Anomaly Benchmark corpus from its directory (never copied into the repo).

The directory (``--nab DIR``, by default ``../shared/nab`` beside the checkout) holds ``data/``
(58 ``timestamp,value`` files in seven groups), ``labels/combined_windows.json`` (the anomaly
windows of each file, as first and last timestamps) and ``results/DETECTOR/`` (a detector's raw
scores per file, as ``GROUP/DETECTOR_FILE`` with an ``anomaly_score`` column).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from homeswarm.errors import InvalidArgument

from ._nab import Series

REPO = Path(__file__).resolve().parents[1]
WINDOWS_FILE = Path("labels") / "combined_windows.json"


def default_dir() -> Path:
    """``../shared/nab`` beside the checkout (or beside the nearest folder above it that has one,
    so a git worktree finds the main checkout's)."""
    for above in REPO.parents:
        if (above / "shared" / "nab").is_dir():
            return above / "shared" / "nab"
    return REPO.parent / "shared" / "nab"


def corpus_dir(path: str | Path | None = None) -> Path:
    """The corpus directory, checked; ``InvalidArgument`` (one line) when it is not one."""
    where = Path(path).expanduser() if path is not None else default_dir()
    if not (where / WINDOWS_FILE).is_file() or not (where / "data").is_dir():
        raise InvalidArgument(
            f"no NAB corpus at {where} (expected data/ and {WINDOWS_FILE}): pass --nab DIR"
        )
    return where


def load_windows(nab: Path) -> dict[str, list[tuple[str, str]]]:
    """Each file's windows (``GROUP/FILE.csv`` -> [(first, last) timestamps])."""
    raw = json.loads((nab / WINDOWS_FILE).read_text())
    return {name: [(a, b) for a, b in windows] for name, windows in sorted(raw.items())}


def read_series(path: Path, column: str = "value") -> tuple[list[str], NDArray[np.float64]]:
    """The timestamps and one numeric column of a NAB csv file."""
    lines = path.read_text().splitlines()
    header = next(csv.reader(lines[:1]))
    try:
        at = header.index(column)
    except ValueError:
        raise InvalidArgument(f"{path}: no {column!r} column") from None
    rows = [line.split(",", at + 1) for line in lines[1:] if line]
    try:
        values = np.array([row[at] for row in rows], dtype=np.float64)
    except (IndexError, ValueError):
        raise InvalidArgument(f"{path}: a row without a number in column {column!r}") from None
    return [row[0] for row in rows], values


def window_rows(stamps: list[str], windows: list[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
    """Windows given by timestamps, as inclusive row ranges of a file with ``stamps``."""
    times = np.array(stamps, dtype="datetime64[us]")
    rows = []
    for first, last in windows:
        start = int(np.searchsorted(times, np.datetime64(first.strip(), "us"), side="left"))
        end = int(np.searchsorted(times, np.datetime64(last.strip(), "us"), side="right")) - 1
        if start <= end:
            rows.append((start, end))
    return tuple(rows)


def data_files(nab: Path) -> list[str]:
    """The corpus's files, as ``GROUP/FILE.csv``, in a fixed order."""
    return list(load_windows(nab))


def load_results(nab: Path, detector: str) -> list[Series]:
    """A detector's published raw scores on every file, with the windows, ready to score."""
    windows = load_windows(nab)
    corpus = []
    for name, limits in windows.items():
        group, file = name.split("/")
        path = nab / "results" / detector / group / f"{detector}_{file}"
        if not path.is_file():
            raise InvalidArgument(f"no results of {detector} for {name} under {nab / 'results'}")
        stamps, scores = read_series(path, "anomaly_score")
        corpus.append(Series(name, scores, window_rows(stamps, limits)))
    return corpus


def load_data(
    nab: Path, name: str
) -> tuple[list[str], NDArray[np.float64], tuple[tuple[int, int], ...]]:
    """One data file's timestamps, values and windows (as row ranges)."""
    stamps, values = read_series(nab / "data" / name)
    return stamps, values, window_rows(stamps, load_windows(nab)[name])
