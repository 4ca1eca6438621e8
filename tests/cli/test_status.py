"""``swarm status``: the shape check, the table, and watching."""

from __future__ import annotations

import copy
import io
import re

import pytest

from homeswarm.cli._status import CLEAR, MalformedStatus, check_status_shape, render_table, watch
from homeswarm.errors import InvalidArgument, RemoteError
from homeswarm.swarm._control import NoPeerRunning

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def peer(
    id,
    name,
    role,
    state,
    *,
    me=False,
    battery=None,
    plugged=None,
    minutes=None,
    cpu=12.3,
    free_mb=7987.0,
    rtt=None,
    scopes=("public", "personal"),
    relay=False,
    seen=0.2,
):
    return {
        "id": id,
        "name": name,
        "role": role,
        "self": me,
        "state": state,
        "incarnation": 3,
        "last_seen_s": seen,
        "power": {"battery_percent": battery, "plugged": plugged, "minutes_left": minutes},
        "load": {"cpu_percent": cpu, "memory_free_mb": free_mb},
        "latency_ms": rtt,
        "privacy": {"scopes": list(scopes), "relay_only": relay},
        "capabilities": {"executor": "local", "kernels": ["embed"]},
    }


def three_devices():
    """A laptop (this device, plugged in), a phone on battery (suspect), a server (dead)."""
    return {
        "self": "12D3KooWLaptop",
        "swarm": "swabc123",
        "peers": [
            peer(
                "12D3KooWServer",
                "server",
                "server",
                "dead",
                cpu=0,
                free_mb=31000,
                scopes=["public"],
                relay=True,
                seen=125,
            ),
            peer(
                "12D3KooWPhone",
                "phone",
                "phone",
                "suspect",
                battery=61,
                plugged=False,
                minutes=190,
                cpu=3.4,
                free_mb=512,
                rtt=0.4,
                scopes=["personal"],
                seen=3.7,
            ),
            peer("12D3KooWLaptop", "laptop", "laptop", "alive", me=True, battery=82, plugged=True),
        ],
    }


# --- the shape -----------------------------------------------------------------------------------


def test_a_conforming_status_has_no_problems():
    assert check_status_shape(three_devices()) == []


def test_nullable_fields_accept_null_and_ints_are_fine_floats():
    status = three_devices()
    p = status["peers"][1]
    p["power"] = {"battery_percent": None, "plugged": None, "minutes_left": None}
    p["latency_ms"] = None
    p["last_seen_s"] = 0
    p["load"] = {"cpu_percent": 100, "memory_free_mb": 0}
    p["privacy"]["scopes"] = []
    p["capabilities"]["kernels"] = []
    assert check_status_shape(status) == []


def mutate(path, value):
    """A conforming status with the value at ``path`` replaced (or deleted if value is DELETE)."""
    status = three_devices()
    *parents, last = path
    target = status
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return status


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("self", DELETE, "missing"),
        ("swarm", 7, "expected a string, got an integer"),
        ("extra", 1, "unexpected key"),
        ("peers", {}, "expected a list, got an object"),
        ("peers.0", "x", "expected an object, got a string"),
        ("peers.0.name", DELETE, "missing"),
        ("peers.0.nick", "s", "unexpected key"),
        ("peers.0.role", "tablet", "expected one of phone, laptop, server, got 'tablet'"),
        ("peers.0.role", None, "expected one of phone, laptop, server, got null"),
        ("peers.0.state", "Alive", "expected one of alive, suspect, away, dead, left, got 'Alive'"),
        ("peers.0.self", 0, "expected true or false, got an integer"),
        ("peers.0.incarnation", 1.0, "expected an integer, got a number"),
        ("peers.0.incarnation", True, "expected an integer, got a bool"),
        ("peers.0.incarnation", -1, "must not be negative, got -1"),
        ("peers.0.last_seen_s", False, "expected a number, got a bool"),
        ("peers.0.last_seen_s", "1", "expected a number, got a string"),
        ("peers.0.last_seen_s", None, "expected a number, got null"),
        ("peers.0.last_seen_s", float("nan"), "expected a finite number, got nan"),
        ("peers.0.latency_ms", float("inf"), "expected a finite number, got inf"),
        ("peers.0.latency_ms", True, "expected a number, got a bool"),
        ("peers.0.latency_ms", -0.5, "must not be negative, got -0.5"),
        ("peers.0.power", None, "expected an object, got null"),
        ("peers.0.power.battery_percent", 100.5, "must be at most 100, got 100.5"),
        ("peers.0.power.battery_percent", True, "expected a number, got a bool"),
        ("peers.0.power.plugged", 1, "expected true or false, got an integer"),
        ("peers.0.power.minutes_left", "3h", "expected a number, got a string"),
        ("peers.0.power.watts", 3, "unexpected key"),
        ("peers.0.load.cpu_percent", None, "expected a number, got null"),
        ("peers.0.load.memory_free_mb", DELETE, "missing"),
        ("peers.0.privacy.scopes", "public", "expected a list, got a string"),
        ("peers.0.privacy.scopes", ["public", 2], "expected a string, got an integer"),
        ("peers.0.privacy.relay_only", None, "expected true or false, got null"),
        ("peers.0.capabilities.executor", None, "expected a string, got null"),
        ("peers.0.capabilities.kernels", [None], "expected a string, got null"),
        ("peers.0.capabilities", [], "expected an object, got a list"),
    ],
)
def test_each_departure_is_named(path, value, problem):
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    where = re.sub(r"\.(\d+)", r"[\1]", path)
    if isinstance(value, list) and value and problem.startswith("expected a string"):
        where += f"[{len(value) - 1}]"  # the bad item is the last one
    assert check_status_shape(mutate(keys, value)) == [f"{where}: {problem}"]


@pytest.mark.parametrize("obj", [None, [], "status", 3])
def test_not_an_object(obj):
    assert len(check_status_shape(obj)) == 1
    assert check_status_shape(obj)[0].startswith(": expected an object")


def test_all_problems_are_listed():
    status = three_devices()
    del status["swarm"]
    status["peers"][0]["role"] = "tablet"
    status["peers"][1]["load"]["cpu_percent"] = "high"
    assert len(check_status_shape(status)) == 3


def test_exactly_one_self_whose_id_is_self():
    status = three_devices()
    status["peers"][2]["self"] = False
    assert check_status_shape(status) == ["peers: 0 entries have self true, expected exactly 1"]
    status["peers"][0]["self"] = status["peers"][1]["self"] = True
    assert check_status_shape(status) == ["peers: 2 entries have self true, expected exactly 1"]
    status = three_devices()
    status["self"] = "12D3KooWPhone"
    assert check_status_shape(status) == ["peers[2].id: the self entry's id is not '12D3KooWPhone'"]
    status = three_devices()
    status["peers"] = []
    assert check_status_shape(status) == ["peers: 0 entries have self true, expected exactly 1"]


def test_peer_ids_are_unique():
    status = three_devices()
    status["peers"][1]["id"] = "12D3KooWServer"
    assert check_status_shape(status) == ["peers[1].id: '12D3KooWServer' appears twice"]


# --- the table -----------------------------------------------------------------------------------

EXPECTED = """\
swarm swabc123: 1 alive, 1 suspect, 1 dead/left
  NAME    ROLE    STATE    BATTERY      CPU     FREE     RTT  SCOPES           LAST HEARD
* laptop  laptop  alive    82% plugged  12%   7.8 GB       -  public,personal  now
  phone   phone   suspect  61% 3h10m     3%   512 MB  0.4 ms  personal         3s ago
  server  server  dead     -             0%  30.3 GB       -  public relay     2m ago"""


def test_render_three_devices():
    status = three_devices()
    before = copy.deepcopy(status)
    assert render_table(status) == EXPECTED
    assert status == before
    assert render_table(status).isascii()


def test_header_counts_left_with_dead():
    status = three_devices()
    status["peers"][1]["state"] = "left"
    status["peers"].append(peer("12D3KooWTab", "tab", "phone", "alive", seen=0))
    header = render_table(status).splitlines()[0]
    assert header == "swarm swabc123: 2 alive, 0 suspect, 2 dead/left"


def test_this_device_first_then_by_name():
    status = three_devices()
    status["peers"].append(peer("12D3KooWAaa", "aardvark", "server", "alive"))
    names = [line[2:].split()[0] for line in render_table(status).splitlines()[2:]]
    markers = [line[:2] for line in render_table(status).splitlines()[2:]]
    assert names == ["laptop", "aardvark", "phone", "server"]
    assert markers == ["* ", "  ", "  ", "  "]


def test_color_marks_states_and_keeps_columns_aligned():
    table = render_table(three_devices(), color=True)
    assert "\x1b[32malive\x1b[0m" in table
    assert "\x1b[33msuspect\x1b[0m" in table
    assert "\x1b[31mdead\x1b[0m" in table
    plain = ANSI.sub("", table)
    lines = plain.splitlines()
    assert lines[0] == "swarm swabc123 · 1 alive, 1 suspect, 1 dead/left"
    assert "82% ⚡" in lines[2]
    assert lines[4].split()[3] == "—"
    # every column starts at the same terminal column (⚡ takes two)
    start = lines[1].index("CPU")
    for line in lines[2:]:
        shift = line.count("⚡")
        assert line[start - shift + 3 - 1] == "%"


def test_cells():
    status = three_devices()
    laptop, phone, server = status["peers"][2], status["peers"][1], status["peers"][0]
    phone["power"] = {"battery_percent": 14.6, "plugged": False, "minutes_left": 45.9}
    phone["latency_ms"] = 123.4
    phone["last_seen_s"] = 59.9
    server["power"] = {"battery_percent": 50, "plugged": None, "minutes_left": None}
    server["load"]["memory_free_mb"] = 1023.6
    server["privacy"] = {"scopes": [], "relay_only": True}
    server["last_seen_s"] = 3 * 86400 + 5
    laptop["last_seen_s"] = 40  # this device is always heard "now"
    laptop["latency_ms"] = 0.0  # and has no round trip to itself
    rows = {line[2:].split("  ")[0]: line for line in render_table(status).splitlines()[2:]}
    assert "15% 45m" in rows["phone"]
    assert "123 ms" in rows["phone"]
    assert rows["phone"].endswith("59s ago")
    assert "50%  " in rows["server"]
    assert "1024 MB" in rows["server"]
    assert "  relay  " in rows["server"]
    server["privacy"] = {"scopes": [], "relay_only": False}
    assert render_table(status).splitlines()[4].split()[-3:] == ["-", "3d", "ago"]
    assert rows["server"].endswith("3d ago")
    assert rows["laptop"].endswith("now")
    assert " ms" not in rows["laptop"]


def test_names_from_peers_cannot_drive_the_terminal():
    status = three_devices()
    status["peers"][1]["name"] = "ph\x1b[2Jone"
    table = render_table(status)
    assert "\x1b" not in table
    assert "ph?[2Jone" in table


def test_width_cuts_long_names():
    status = three_devices()
    status["peers"][1]["name"] = "a-very-long-phone-name-indeed"
    wide = render_table(status)
    assert max(len(line) for line in wide.splitlines()[1:]) > 95
    narrow = render_table(status, width=95)
    assert max(len(line) for line in narrow.splitlines()[1:]) <= 95
    assert "a-very-long~" in narrow
    fancy_wide = ANSI.sub("", render_table(status, color=True)).splitlines()
    fancy_width = max(len(line) for line in fancy_wide[1:]) - 18
    fancy = ANSI.sub("", render_table(status, width=fancy_width, color=True))
    assert max(len(line) for line in fancy.splitlines()[1:]) == fancy_width
    assert re.search(r"  a-very-[a-z-]+… ", fancy)
    # a width nothing fits keeps names at least as wide as their header
    tiny = render_table(status, width=20).splitlines()
    assert tiny[2].startswith("* lap~  laptop")


def test_malformed_status_is_one_remote_error():
    status = three_devices()
    status["peers"][0]["state"] = "zombie"
    del status["swarm"]
    with pytest.raises(MalformedStatus, match=r"^the peer sent a malformed status: ") as info:
        render_table(status)
    assert str(info.value).endswith("(and 1 more)")
    assert isinstance(info.value, RemoteError)


# --- watching ------------------------------------------------------------------------------------


class Fetcher:
    def __init__(self, *answers):
        self.answers = list(answers)

    def __call__(self):
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_watch_prints_frames_separated_by_blank_lines_off_a_terminal():
    gone = NoPeerRunning("no peer is running for /h (start one with `swarm up --home /h`)")
    fetch = Fetcher(three_devices(), gone, three_devices())
    out, naps = io.StringIO(), []
    watch(fetch, interval=2, out=out, iterations=3, sleep=naps.append, color=False)
    assert naps == [2, 2]
    assert out.getvalue() == f"{EXPECTED}\n\n{gone}\n\n{EXPECTED}\n"
    assert CLEAR not in out.getvalue()


def test_watch_redraws_in_place_on_a_terminal():
    out = Terminal()
    watch(Fetcher(three_devices(), three_devices()), interval=0.5, out=out, iterations=2,
          sleep=lambda s: None, color=True)  # fmt: skip
    frames = out.getvalue().split(CLEAR)
    assert frames[0] == ""
    assert len(frames) == 3
    assert all("\x1b[32malive\x1b[0m" in f for f in frames[1:])
    assert frames[1].endswith("\n\nevery 0.5 s, Ctrl-C to stop\n")


def test_the_footer_stays_under_every_frame_on_a_terminal():
    out = Terminal()
    watch(Fetcher(three_devices(), three_devices()), interval=1, out=out, iterations=2,
          sleep=lambda s: None, color=False, footer="try:\n  swarm ui")  # fmt: skip
    frames = out.getvalue().split(CLEAR)[1:]
    assert all(f.endswith("\n\ntry:\n  swarm ui\n\nevery 1 s, Ctrl-C to stop\n") for f in frames)
    plain = io.StringIO()
    watch(Fetcher(three_devices()), interval=1, out=plain, iterations=1, sleep=lambda s: None,
          color=False, footer="try:")  # fmt: skip
    assert "try:" not in plain.getvalue()  # off a terminal the caller prints it once


def test_watch_shows_a_malformed_status_and_goes_on():
    bad = three_devices()
    bad["peers"][0]["state"] = "zombie"
    out = io.StringIO()
    watch(Fetcher(bad, three_devices()), interval=1, out=out, iterations=2,
          sleep=lambda s: None, color=False)  # fmt: skip
    first, second = out.getvalue().split("\n\n")
    assert first.startswith("the peer sent a malformed status: peers[0].state")
    assert second == EXPECTED + "\n"


@pytest.mark.parametrize("where", ["fetch", "sleep"])
def test_ctrl_c_ends_watching_quietly(where):
    out = io.StringIO()

    def interrupted(*args):
        raise KeyboardInterrupt

    fetch = Fetcher(three_devices(), KeyboardInterrupt()) if where == "fetch" else three_devices
    sleep = interrupted if where == "sleep" else (lambda s: None)
    watch(fetch, interval=1, out=out, sleep=sleep, color=False)
    assert out.getvalue() == EXPECTED + "\n"


def test_other_errors_from_fetch_propagate():
    with pytest.raises(ZeroDivisionError):
        watch(Fetcher(ZeroDivisionError()), interval=1, out=io.StringIO(), color=False)


@pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf")])
def test_watch_refuses_a_bad_interval(interval):
    with pytest.raises(InvalidArgument, match="interval must be a positive number"):
        watch(three_devices, interval=interval, out=io.StringIO(), iterations=1, color=False)


def test_a_light_member_with_no_round_trip_shows_light():
    status = three_devices()
    phone = status["peers"][1]
    phone["state"], phone["latency_ms"], phone["lease_s"] = "alive", None, 900
    assert check_status_shape(status) == []
    row = render_table(status).splitlines()[3]
    assert row.split()[:2] == ["phone", "phone"]
    assert " light " in row
    status["peers"][2]["lease_s"] = 0  # a full member with no round trip yet: "-"
    assert " light " not in render_table(status).splitlines()[4]
    phone["lease_s"] = -1
    assert check_status_shape(status) != []
