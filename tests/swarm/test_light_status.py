"""`swarm status` on a light phone: a person waiting on the view gets a fresh one.

A light member hears the others only at its heartbeats (twice per 15-minute lease), so its view
can be minutes old. The status a person asks for (the control request ``status``) first sends a
heartbeat out of turn and waits for its first answer. Real peers on the memory network, in
virtual time.
"""

from __future__ import annotations

import trio
from test_placement_swarm import LAPTOP, Spec, make_homes, memory_swarm, until

from homeswarm.swarm._peer import FRESH_S

PHONE = Spec("phone", "phone", battery=82.0, plugged=False, light="auto")
SERVER = Spec("server", "server", light="auto")


def battery(status: dict, name: str) -> float | None:
    row = next(r for r in status["peers"] if r["name"] == name)
    return row["power"]["battery_percent"]


def near_40(percent: float | None) -> bool:
    return percent is not None and abs(percent - 40.0) < 0.5  # (it drains on from 40 %)


async def test_a_light_phones_status_is_fresh_when_a_person_asks(tmp_path, autojump_clock):
    specs = (SERVER, LAPTOP, PHONE)
    async with memory_swarm(specs, make_homes(tmp_path, specs), lambda *_: []) as swarm:
        phone, laptop, server = (swarm[n].peer for n in ("phone", "laptop", "server"))
        await until(
            lambda: (
                swarm.sees("phone", "laptop") == "alive"
                and swarm.sees("server", "phone") == "alive"
            ),
            within=520.0,  # its join, or at the latest its first heartbeat, brings the laptop
            what="the phone in the swarm",
        )
        assert phone.core is not None
        assert phone.core.light  # a phone on battery is light by default
        assert server.core is not None
        assert not server.core.light
        await trio.sleep(FRESH_S + 1.0)
        laptop.set_power(40.0, False)
        await until(
            lambda: near_40(battery(server.status(), "laptop")),
            within=5.0,
            what="the server to hear the laptop's new battery",
        )
        assert not near_40(battery(phone.status(), "laptop"))  # the phone's: its last heartbeat
        asked = trio.current_time()
        fresh = await phone.fresh_status()
        assert near_40(battery(fresh, "laptop"))
        assert trio.current_time() - asked < 0.1  # one round trip, not the 2 s bound
        server_row = next(r for r in fresh["peers"] if r["name"] == "server")
        assert server_row["latency_ms"] is not None  # the heartbeat timed it


async def test_a_full_members_status_answers_at_once(tmp_path, autojump_clock):
    specs = (SERVER, LAPTOP)
    async with memory_swarm(specs, make_homes(tmp_path, specs), lambda *_: []) as swarm:
        laptop = swarm["laptop"].peer
        await until(lambda: swarm.sees("laptop", "server") == "alive", within=30.0, what="joined")
        asked = trio.current_time()
        status = await laptop.fresh_status()
        assert trio.current_time() == asked
        assert battery(status, "server") is None  # (a device with no battery)
