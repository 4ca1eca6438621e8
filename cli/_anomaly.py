"""``swarm anomaly feed NAME``: score a series of your own with the ``anomaly`` kernel's HTM.

Reads ``timestamp,value`` lines on stdin (a ``timestamp,value`` header is skipped; blank lines
and ``#`` comments too) and prints ``timestamp,value,score,likelihood`` per line as it goes
(``--json``: one JSON object per line). The model of series NAME lives in this device's home
(``anomaly/NAME.htm``, mode 0600) and is saved every ``SAVE_EVERY`` rows and at the end, so the
next feed of NAME continues where this one stopped. A bad line stops the feed with one line
naming it (exit 2), after saving the model as it was before that line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from homeswarm.errors import InvalidArgument

from ._args import EXIT_OK, add_home, home_of, number

SAVE_EVERY = 1000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def add_anomaly_commands(sub: Any) -> None:
    p = sub.add_parser(
        "anomaly",
        help="anomaly detection (HTM) on a series of your own",
        description="HTM anomaly detection: one model per named series, kept in this home.",
    )
    inner = p.add_subparsers(dest="anomaly_command", metavar="COMMAND", required=True)
    f = inner.add_parser(
        "feed",
        help="score timestamp,value lines from stdin",
        description="Score `timestamp,value` lines from stdin; print "
        "`timestamp,value,score,likelihood` for each. score: the share of the input the model "
        "did not predict (0-1); likelihood: how unusual the recent scores are (0.5 while it "
        "warms up; above 0.9999 is rare). Timestamps: ISO 8601 or seconds since the epoch.",
        epilog="example: printf '2024-01-01 00:00,3\\n2024-01-01 01:00,4\\n' | "
        "swarm anomaly feed cpu",
    )
    f.add_argument("name", metavar="NAME", help="the series (its model is kept under this name)")
    f.add_argument(
        "--range",
        metavar="MIN,MAX",
        help="the values' expected range, for a new model, e.g. --range=-5,40 (default: learnt "
        "from its first 100 rows, which are not scored)",
    )
    f.add_argument("--fresh", action="store_true", help="forget NAME's model and start anew")
    f.add_argument("--no-save", action="store_true", help="do not save the model afterwards")
    f.add_argument("--json", action="store_true", help="one JSON object per line")
    add_home(f)
    f.set_defaults(run=_cmd_feed)


def _range(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(",")
    try:
        if not sep:
            raise argparse.ArgumentTypeError("")
        a, b = number(low), number(high)
    except argparse.ArgumentTypeError:
        raise InvalidArgument(f"--range must be MIN,MAX (two numbers), got {text!r}") from None
    if not a < b:
        raise InvalidArgument(f"--range: MIN must be below MAX, got {text!r}")
    return a, b


def model_path(home: Path, name: str) -> Path:
    if not _NAME.match(name):
        raise InvalidArgument(
            f"a series name is 1-64 letters, digits, '.', '_' or '-', got {name[:70]!r}"
        )
    return home / "anomaly" / f"{name}.htm"


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _cmd_feed(args: argparse.Namespace) -> int:
    from homeswarm.kernels import InvalidInput, anomaly_model, parse_time, parse_value

    path = model_path(home_of(args), args.name)
    if path.exists() and not args.fresh:
        if args.range:
            raise InvalidArgument(f"{args.name} has a model already: --range needs --fresh")
        model = anomaly_model(path.read_bytes())
    else:
        low, high = _range(args.range) if args.range else (None, None)
        model = anomaly_model(params={"value_min": low, "value_max": high})
    out: TextIO = sys.stdout
    if sys.stdin.isatty():
        print("reading timestamp,value lines (Ctrl-D to end)", file=sys.stderr)
    rows = 0
    try:
        for number_, line in enumerate(sys.stdin, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = [x.strip() for x in text.split(",")]
            if number_ == 1 and fields[:2] == ["timestamp", "value"]:
                continue
            if len(fields) != 2:
                raise InvalidArgument(
                    f"line {number_}: expected timestamp,value, got {text[:60]!r}"
                )
            try:
                when, value = parse_time(fields[0] or None), parse_value(fields[1])
            except InvalidInput as exc:
                raise InvalidArgument(f"line {number_}: {exc}") from None
            s = model.step(value, when)
            rows += 1
            if args.json:
                record: dict[str, Any] = {
                    "timestamp": fields[0],
                    "value": value,
                    "score": round(s.raw, 6),
                    "likelihood": round(s.likelihood, 6),
                    "log_likelihood": round(s.log_likelihood, 6),
                }
                out.write(json.dumps(record) + "\n")
            else:
                out.write(f"{fields[0]},{fields[1]},{s.raw:.6f},{s.likelihood:.6f}\n")
            out.flush()
            if not args.no_save and rows % SAVE_EVERY == 0:
                _save(path, model.to_bytes())
    finally:
        if not args.no_save and rows:
            _save(path, model.to_bytes())
    return EXIT_OK
