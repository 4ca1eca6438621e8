"""A light phone's radio: what its services send on their own rides its bursts.

A light member's membership wakes the radio twice per lease. Its vault pulls a random peer every
few seconds and its stream service feeds its telemetry to the instance's home every sample: sent
as they come, they would keep a phone's LTE radio in its tail all day. They wait for the next
burst instead (a heartbeat, a message in, a person's request). Real peers with their placement,
vault, stream and watch services on the memory network, in virtual time; the radio's time up is
counted from the phone's frames with LTE's 10 s tail.
"""

from __future__ import annotations

import pytest
import trio
from test_placement_swarm import LAPTOP, SERVER, Spec, until
from test_streams import swarm

from homeswarm.swarm._peer import Peer

TAIL_S = 10.0  # LTE's tail (simulations/devices.toml [links.cellular])
LIGHT_PHONE = Spec("phone", "phone", battery=82.0, plugged=False, light="auto")


def radio_up_s(times: list[float], since: float, until_: float) -> float:
    """Seconds within [since, until_) the radio is up for frames at ``times``, each holding it
    up ``TAIL_S``."""
    up, last = 0.0, None
    for t in sorted(x for x in times if since <= x < until_):
        if last is not None:
            up += min(t - last, TAIL_S)
        last = t
    return up if last is None else up + min(TAIL_S, until_ - last)


async def a_light_phones_radio(tmp_path, seconds: float) -> tuple[float, int]:
    """(seconds its radio was up, events scored) in ``seconds`` of a light phone's stream, once
    it is served (bench/bench_radio.py runs it for 20 minutes, gated and not)."""
    async with swarm(tmp_path, (SERVER, LAPTOP, LIGHT_PHONE)) as s:
        phone = s["phone"]
        frames: list[float] = []
        s.network.tap = lambda t, src, dst, data: (
            frames.append(t) if phone.id in (src, dst) else None
        )
        await until(
            lambda: (o := phone.streams.out.get("cpu")) is not None and o.state == "serving",
            within=600.0,
            what="the phone's cpu served",
        )
        assert phone.peer.core is not None
        assert phone.peer.core.light
        start = trio.current_time()
        await trio.sleep(seconds)
        up = radio_up_s(frames, start, start + seconds)
        return up, phone.streams.out["cpu"].scored


async def send_at_once(self: Peer) -> None:
    """``Peer.radio`` without the gate: what a light member's services did before it."""
    return None


async def test_a_light_phones_services_ride_its_bursts(tmp_path, autojump_clock, monkeypatch):
    # two heartbeats (every 450 s), each a burst of a few seconds' tail: not the whole time
    gated, scored = await a_light_phones_radio(tmp_path / "gated", 1000.0)
    assert gated < 0.1 * 1000.0
    assert scored > 500  # a sample a second: its events got through, in batches

    monkeypatch.setattr(Peer, "radio", send_at_once)
    ungated, _ = await a_light_phones_radio(tmp_path / "ungated", 120.0)
    assert ungated > 0.9 * 120.0  # a feed every sample: the radio never rests


async def test_a_persons_request_goes_at_once_and_what_waited_goes_with_it(
    tmp_path, autojump_clock
):
    async with swarm(tmp_path, (SERVER, LAPTOP, LIGHT_PHONE)) as s:
        phone = s["phone"]
        await until(
            lambda: (o := phone.streams.out.get("cpu")) is not None and o.state == "serving",
            within=600.0,
            what="the phone's cpu served",
        )
        out = phone.streams.out["cpu"]
        await trio.sleep(60.0)  # events wait for the next burst
        waiting = out.producer.last - out.producer.acked
        assert waiting >= 30
        sent: list[tuple[float, str]] = []
        s.network.tap = lambda t, src, dst, data: sent.append((t, dst)) if src == phone.id else None
        asked = trio.current_time()
        await phone.peer.control(
            "vault.put", {"key": "facts/home", "value": '"Lisbon"', "scope": "personal"}
        )
        await until(lambda: out.scored >= out.producer.last - 2, within=2.0, what="fed at once")
        assert trio.current_time() - asked < 2.0
        assert sent


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
