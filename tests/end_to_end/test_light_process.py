"""A light phone as a user runs it: real `swarm up` processes on loopback.

The phone's swarm.toml makes it light with a 30 s lease. The server shows it alive; stopped
(SIGSTOP: a phone whose radio is off, or suspended) it is `away` once its lease lapses, never
`dead`; resumed (SIGCONT), its next heartbeat makes it `alive` again at the same incarnation.
"""

from __future__ import annotations

import signal

import pytest

from homeswarm.cli._demo import LOOPBACK
from homeswarm.swarm._control import ask
from homeswarm.swarm._home import init_home
from homeswarm.swarm._join import join_swarm

pytestmark = pytest.mark.slow

LEASE = 30.0


def test_a_light_phone_is_away_when_its_lease_lapses_and_alive_when_it_sends(swarm, wait_until):
    server = swarm.root / "server"
    init_home(server, name="server", role="server", network=LOOPBACK)
    swarm.start(server)
    swarm.wait_ready(server)
    phone = swarm.root / "phone"
    code = ask(server, "invite", ttl=60.0)["code"]
    light = {"membership": {"light": "on", "lease_s": LEASE}}
    join_swarm(phone, code, name="phone", role="phone", network=LOOPBACK, extra=light)
    swarm.start(phone)
    swarm.homes += [server, phone]
    wait_until(
        lambda: swarm.state_of(server, "phone") == "alive", "the phone alive at the server", 30
    )
    before = swarm.row(server, "phone")
    assert before is not None

    proc = swarm.procs[phone]
    proc.send_signal(signal.SIGSTOP)
    try:
        seen: set[str | None] = set()

        def away() -> bool:
            seen.add(swarm.state_of(server, "phone"))
            return "away" in seen

        took = wait_until(away, "the stopped phone away at the server", 2 * LEASE + 10)
        assert took <= 2 * LEASE
        assert seen <= {"alive", "away"}  # never suspect or dead
    finally:
        proc.send_signal(signal.SIGCONT)
    wait_until(lambda: swarm.state_of(server, "phone") == "alive", "the phone alive again", 15)
    after = swarm.row(server, "phone")
    assert after is not None
    assert after["incarnation"] == before["incarnation"]
    assert "Traceback" not in (phone / "up.log").read_text()
