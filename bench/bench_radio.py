"""A light phone's radio while its services run: riding its bursts against sending at once.

    python bench/bench_radio.py [--minutes 20] [--json]

Real peers (a server, a laptop, a light phone on battery, each with its placement, vault, stream
and watch services) on the memory network, in virtual time, a telemetry sample a second: the
phone's radio time up, counted from its frames with LTE's 10 s tail, over the same window, once
with ``Peer.radio`` gating what the services send on their own (today's code) and once with the
gate removed (every feed and pull sent as it comes), in the same run; and the events scored in
each. The target is issue 13's: a light member's radio is up for its heartbeats' bursts, not all
day. Nothing is asserted (tests/swarm/test_radio.py asserts a shorter window).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "swarm"))
sys.path.insert(0, str(ROOT / "tests"))

from test_radio import a_light_phones_radio, send_at_once  # noqa: E402

from homeswarm.swarm._peer import Peer  # noqa: E402


def measure(seconds: float, gate: bool) -> dict[str, float]:
    radio = Peer.radio
    if not gate:
        Peer.radio = send_at_once  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            up, scored = trio.run(
                a_light_phones_radio,
                Path(tmp),
                seconds,
                clock=trio.testing.MockClock(autojump_threshold=0),
            )
            wall = time.perf_counter() - started
    finally:
        Peer.radio = radio  # type: ignore[method-assign]
    return {"radio_up_s": round(up, 1), "scored": scored, "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="simulated window (20)")
    parser.add_argument("--json", action="store_true", help="one JSON object, no table")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the watch service's anomaly lines
    seconds = args.minutes * 60.0
    gated = measure(seconds, gate=True)
    at_once = measure(seconds, gate=False)
    ratio = at_once["radio_up_s"] / max(gated["radio_up_s"], 1e-9)
    result = {"window_s": seconds, "gated": gated, "at_once": at_once, "ratio": round(ratio, 1)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"a light phone's radio over {args.minutes:g} simulated minutes (LTE tail 10 s)")
    print(f"{'':<22}{'radio up s':>12}{'share':>8}{'scored':>8}{'wall s':>8}")
    for name, row in (("riding its bursts", gated), ("sending at once", at_once)):
        share = row["radio_up_s"] / seconds
        print(
            f"{name:<22}{row['radio_up_s']:>12.0f}{share:>8.1%}"
            f"{row['scored']:>8.0f}{row['wall_s']:>8.1f}"
        )
    print(f"ratio (at once / gated): x{ratio:.1f}")


if __name__ == "__main__":
    main()
