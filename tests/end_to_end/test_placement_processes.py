"""The issue's "done when", as a new user tries it with the demo swarm: real `swarm up` processes
(server, laptop, phone) on loopback, the laptop and server running Ray, the phone inline.

`swarm run embed "hello world" --explain` returns 384 numbers and says why the device was chosen;
Ray's worker processes (under that device's own `swarm up`) really run it; a private kernel never
lands on a device without that scope; `swarm power --unplugged --battery 30` on the laptop moves
the work to the server.
"""

from __future__ import annotations

import json
import signal

import psutil
import pytest

from homeswarm.kernels import embed
from homeswarm.swarm._control import ask

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not embed.is_available(), reason="the model is not installed"),
]


def under(pid: int, ancestor: int) -> bool:
    return ancestor in {p.pid for p in psutil.Process(pid).parents()}


def hosted(pid: int, home, proc) -> str | None:
    """None if ``pid`` is a live Ray worker that this device's Ray made; else why not.

    Under that device's `swarm up`, or named by that device's own log when its Ray made it: once,
    in CI, the worker the server named was a live Ray worker no longer under it (its parent gone,
    we believe the raylet; not reproduced in 12 runs here), and the message says what it was."""
    worker = psutil.Process(pid)
    if not worker.name().startswith("ray::"):
        return f"{pid} is {worker.name()!r}, not a Ray worker"
    if under(pid, proc.pid):
        return None
    logs = "".join(p.read_text(errors="replace") for p in (home / "logs").glob("*.log*"))
    if f"Ray worker {pid} hosts the kernel" in logs:
        return None
    chain = [(p.pid, p.name()) for p in worker.parents()]
    return f"{pid} ({chain}) is not under {proc.pid}, nor in {home.name}'s log"


def test_the_demo_swarm_places_embed_as_the_issue_says(demo, cli):
    server, laptop, phone = demo.homes
    executors = {p["name"]: p["capabilities"]["executor"] for p in ask(laptop, "status")["peers"]}
    assert executors == {"server": "ray", "laptop": "ray", "phone": "inline"}

    # "hello world" is embedded on a Ray device (the laptop itself, unless the machine's load
    # makes the server cheaper: every demo device reads the same real cpu), in a Ray worker under
    # that device's own `swarm up`
    code, out, err = cli("run", "embed", "hello world", "--explain", "--home", str(laptop))
    assert code == 0, err
    first, placed, *why = out.splitlines()
    assert len(json.loads(first)) == 384
    assert placed in ("placed on laptop (ray)", "placed on server (ray)")
    chosen = placed.split()[2]
    assert why[0].split()[:2] == [chosen, "chosen"]
    assert {line.split()[0] for line in why} == {"laptop", "server", "phone"}
    code, out, err = cli("run", "embed", "hello world", "--json", "--home", str(laptop))
    doc = json.loads(out)
    assert doc["executor"] == "ray"
    assert doc["device"] in ("laptop", "server")
    host = laptop if doc["device"] == "laptop" else server
    assert doc["pid"] != demo.procs[host].pid
    assert hosted(doc["pid"], host, demo.procs[host]) is None

    # a private run from the phone never lands on the phone
    code, out, err = cli(
        "run",
        "embed",
        "diary",
        "--scope",
        "private",
        "--explain",
        "--json",
        "--home",
        str(phone),
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["device"] in ("laptop", "server")
    (mine,) = [e for e in doc["explain"] if e["name"] == "phone"]
    assert mine["constraint"] == "scope"

    # unplug the laptop at 30%: the same work moves to the server, and Ray runs it there (the
    # shared demo swarm is this test's alone from here on)
    demo.spend()
    code, out, err = cli("power", "--unplugged", "--battery", "30", "--home", str(laptop))
    assert code == 0, err
    code, out, err = cli("run", "embed", "hello world", "--json", "--home", str(laptop))
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["device"], doc["executor"]) == ("server", "ray")
    assert hosted(doc["pid"], server, demo.procs[server]) is None

    # SIGTERM still leaves gracefully, Ray and all, and leaves no worker behind (the server ran
    # Ray just now)
    workers = [p for p in psutil.Process(demo.procs[server].pid).children(recursive=True)]
    assert workers
    proc = demo.procs[server]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert alive == []
