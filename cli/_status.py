"""``swarm status``: the shape of the peer's "status" answer, and how it is shown.

The running peer answers the control op "status" with exactly this JSON (``check_status_shape``
lists every way a value departs from it)::

    {"self": ID, "swarm": SWARM_ID,
     "peers": [{"id": ID, "name": STR, "role": "phone"|"laptop"|"server", "self": BOOL,
                "state": "alive"|"suspect"|"away"|"dead"|"left", "incarnation": INT,
                "last_seen_s": FLOAT,
                "power": {"battery_percent": FLOAT|null, "plugged": BOOL|null,
                          "minutes_left": FLOAT|null},
                "load": {"cpu_percent": FLOAT, "memory_free_mb": FLOAT},
                "latency_ms": FLOAT|null,
                "privacy": {"scopes": [STR], "relay_only": BOOL}, "lease_s": INT,
                "capabilities": {"executor": STR, "kernels": [STR],
                                 "accelerator": {"kind": STR, "memory_mb": FLOAT|null}|null}}],
     "endpoints": {"metrics": URL|null, "ui": URL|null}}

``capabilities.accelerator`` (a device's CUDA or MPS device; null: none) may be left out by a peer
that has no state yet. ``lease_s`` is a light member's lease (0: a full member; left out by a peer
running older code); the table shows ``light`` for its round trip time, which nobody measures by
probes. ``endpoints`` (from ``swarm up``; a peer in a test harness may leave it out) says where
this device's ``/metrics`` and live page are served, null when ``[http] listen`` is empty.

Rules of the shape: no key missing, none extra; a bool is never a number; an int is a fine FLOAT;
numbers are finite and not negative, ``battery_percent`` at most 100; peer ids are unique; exactly
one peer has ``"self": true`` and its id is ``"self"``.

Rules of the table: one row per device, this device first (marked ``*``), the others by name. With
``color=False`` the output is plain ASCII; with ``color=True`` state words are coloured (alive
green, suspect and away yellow, dead/left red; away is a light member whose lease lapsed) and a
few glyphs are used. Text a peer sent is shown with
unprintable characters replaced, so a name cannot drive the terminal. Given ``width``, long names
are cut so rows fit when possible.
"""

from __future__ import annotations

import math
import os
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from homeswarm.errors import InvalidArgument, RemoteError, SwarmError
from homeswarm.vocabulary import ROLES

from ._args import clean, holdings

STATES = ("alive", "suspect", "away", "dead", "left")

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen
_COLORS = {
    "alive": "\x1b[32m",
    "suspect": "\x1b[33m",
    "away": "\x1b[33m",
    "dead": "\x1b[31m",
    "left": "\x1b[31m",
}
_RESET = "\x1b[0m"


class MalformedStatus(RemoteError):
    """The peer's status answer does not have the documented shape."""


# --- the shape -----------------------------------------------------------------------------------


class _Spec:
    def check(self, value: Any, where: str, problems: list[str]) -> None:
        raise NotImplementedError


class _Str(_Spec):
    def check(self, value: Any, where: str, problems: list[str]) -> None:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {_kind(value)}")


class _Bool(_Spec):
    def check(self, value: Any, where: str, problems: list[str]) -> None:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true or false, got {_kind(value)}")


class _Num(_Spec):
    def __init__(self, *, integer: bool = False, most: float | None = None) -> None:
        self.integer = integer
        self.most = most

    def check(self, value: Any, where: str, problems: list[str]) -> None:
        types = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = "an integer" if self.integer else "a number"
            problems.append(f"{where}: expected {wanted}, got {_kind(value)}")
        elif not math.isfinite(value):
            problems.append(f"{where}: expected a finite number, got {value!r}")
        elif value < 0:
            problems.append(f"{where}: must not be negative, got {value!r}")
        elif self.most is not None and value > self.most:
            problems.append(f"{where}: must be at most {self.most:g}, got {value!r}")


class _Enum(_Spec):
    def __init__(self, values: Sequence[str]) -> None:
        self.values = tuple(values)

    def check(self, value: Any, where: str, problems: list[str]) -> None:
        if not isinstance(value, str) or value not in self.values:
            shown = repr(value) if isinstance(value, str) else _kind(value)
            problems.append(f"{where}: expected one of {', '.join(self.values)}, got {shown}")


class _Nullable(_Spec):
    def __init__(self, inner: _Spec) -> None:
        self.inner = inner

    def check(self, value: Any, where: str, problems: list[str]) -> None:
        if value is not None:
            self.inner.check(value, where, problems)


class _List(_Spec):
    def __init__(self, item: _Spec) -> None:
        self.item = item

    def check(self, value: Any, where: str, problems: list[str]) -> None:
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {_kind(value)}")
            return
        for i, item in enumerate(value):
            self.item.check(item, f"{where}[{i}]", problems)


class _Obj(_Spec):
    def __init__(self, fields: dict[str, _Spec], optional: dict[str, _Spec] | None = None) -> None:
        self.fields = fields
        self.optional = optional or {}

    def check(self, value: Any, where: str, problems: list[str]) -> None:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object, got {_kind(value)}")
            return
        prefix = f"{where}." if where else ""
        for key, spec in self.fields.items():
            if key in value:
                spec.check(value[key], prefix + key, problems)
            else:
                problems.append(f"{prefix}{key}: missing")
        for key in value:
            if key in self.optional:
                self.optional[key].check(value[key], prefix + key, problems)
            elif key not in self.fields:
                problems.append(f"{prefix}{key!s}: unexpected key")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    return {int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(value), "an object" if isinstance(value, dict) else type(value).__name__
    )


_PEER = _Obj(
    {
        "id": _Str(),
        "name": _Str(),
        "role": _Enum(ROLES),
        "self": _Bool(),
        "state": _Enum(STATES),
        "incarnation": _Num(integer=True),
        "last_seen_s": _Num(),
        "power": _Obj(
            {
                "battery_percent": _Nullable(_Num(most=100)),
                "plugged": _Nullable(_Bool()),
                "minutes_left": _Nullable(_Num()),
            }
        ),
        "load": _Obj({"cpu_percent": _Num(), "memory_free_mb": _Num()}),
        "latency_ms": _Nullable(_Num()),
        "privacy": _Obj({"scopes": _List(_Str()), "relay_only": _Bool()}),
        "capabilities": _Obj(
            {"executor": _Str(), "kernels": _List(_Str())},
            optional={
                "accelerator": _Nullable(_Obj({"kind": _Str(), "memory_mb": _Nullable(_Num())}))
            },
        ),
    },
    optional={"lease_s": _Num(integer=True)},
)


class _AnyObj(_Spec):
    def check(self, value: Any, where: str, problems: list[str]) -> None:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object, got {_kind(value)}")


# what the services a peer hosts add, each under its name (their own shapes are theirs)
SERVICE_SECTIONS = ("vault", "kernels", "anomaly", "streams", "learn")
_ENDPOINTS = _Obj({"metrics": _Nullable(_Str()), "ui": _Nullable(_Str())})
_STATUS = _Obj(
    {"self": _Str(), "swarm": _Str(), "peers": _List(_PEER)},
    optional={**dict.fromkeys(SERVICE_SECTIONS, _AnyObj()), "endpoints": _ENDPOINTS},
)


def check_status_shape(obj: Any) -> list[str]:
    """Every way ``obj`` departs from the documented "status" shape; ``[]`` if it conforms."""
    problems: list[str] = []
    _STATUS.check(obj, "", problems)
    if not isinstance(obj, dict) or not isinstance(obj.get("peers"), list):
        return problems
    selves = [
        i for i, p in enumerate(obj["peers"]) if isinstance(p, dict) and p.get("self") is True
    ]
    if len(selves) != 1:
        problems.append(f"peers: {len(selves)} entries have self true, expected exactly 1")
    elif "self" in obj and obj["peers"][selves[0]].get("id") != obj["self"]:
        problems.append(f"peers[{selves[0]}].id: the self entry's id is not {obj['self']!r}")
    seen: set[Any] = set()
    for i, peer in enumerate(obj["peers"]):
        if isinstance(peer, dict) and isinstance(peer.get("id"), str):
            if peer["id"] in seen:
                problems.append(f"peers[{i}].id: {peer['id']!r} appears twice")
            seen.add(peer["id"])
    return problems


# --- the table -----------------------------------------------------------------------------------

_COLUMNS = ("NAME", "ROLE", "STATE", "BATTERY", "CPU", "FREE", "RTT", "SCOPES", "LAST HEARD")
_RIGHT = {"CPU", "FREE", "RTT"}  # right-aligned columns


def render_table(status: dict[str, Any], *, color: bool = False, width: int | None = None) -> str:
    """The status as a header line and an aligned table, no trailing newline.

    Raises ``MalformedStatus`` if ``status`` does not have the documented shape.
    """
    problems = check_status_shape(status)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MalformedStatus(f"the peer sent a malformed status: {problems[0]}{more}")
    peers = sorted(status["peers"], key=lambda p: (not p["self"], p["name"], p["id"]))
    counts = {s: sum(p["state"] == s for p in peers) for s in STATES}
    sep = " · " if color else ": "
    header = (
        f"swarm {clean(status['swarm'])}{sep}{counts['alive']} alive, "
        f"{counts['suspect']} suspect, "
        + (f"{counts['away']} away, " if counts["away"] else "")
        + f"{counts['dead'] + counts['left']} dead/left"
    )
    rows = [[clean(p["name"]), *_cells(p, color)] for p in peers]
    widths = [max([_width(c), *(_width(r[i]) for r in rows)]) for i, c in enumerate(_COLUMNS)]
    if width is not None:
        total = 2 + sum(widths) + 2 * (len(widths) - 1)
        name_width = max(len("NAME"), widths[0] - max(0, total - width))
        if name_width < widths[0]:
            widths[0] = name_width
            for row in rows:
                row[0] = _cut(row[0], name_width, "…" if color else "~")
    lines = [header, _line("  ", list(_COLUMNS), widths, color=False)]
    for peer, row in zip(peers, rows, strict=True):
        lines.append(_line("* " if peer["self"] else "  ", row, widths, color=color))
    names = {p["id"]: clean(p["name"]) for p in peers}
    accelerators = _accelerators_line(peers)
    if accelerators is not None:
        lines.append(accelerators)
    vault = status.get("vault")
    if isinstance(vault, dict):
        lines.append(_vault_line(vault, names))
    held = kernels_line(status.get("kernels"), names)
    if held is not None:
        lines.append(held)
    anomaly = status.get("anomaly")
    if isinstance(anomaly, dict):
        lines.append(_anomaly_line(anomaly))
    streams = status.get("streams")
    if isinstance(streams, dict):
        lines.append(streams_line(streams))
    return "\n".join(lines)


def _accelerators_line(peers: list[dict[str, Any]]) -> str | None:
    """``accelerators: server cuda 24.0 GB, laptop mps``; None when no device has one."""
    found = []
    for peer in peers:
        accelerator = peer["capabilities"].get("accelerator")
        if accelerator is not None:
            memory = accelerator["memory_mb"]
            size = f" {_memory(memory)}" if memory else ""
            found.append(f"{clean(peer['name'])} {clean(accelerator['kind'])}{size}")
    return "accelerators: " + ", ".join(found) if found else None


def _anomaly_line(anomaly: dict[str, Any]) -> str:
    """``anomaly: cpu (likelihood 0.99999, 12s ago); watching 6 series`` (this device's own)."""
    found = []
    for episode in anomaly.get("anomalies") or []:
        if isinstance(episode, dict):
            since = episode.get("since_s")
            ago = _ago(since) if isinstance(since, int | float) else "?"
            likelihood = episode.get("likelihood")
            shown = f"{likelihood:.5f}" if isinstance(likelihood, int | float) else "?"
            found.append(f"{clean(episode.get('series'))} (likelihood {shown}, {ago})")
    series, warming = anomaly.get("series"), anomaly.get("warming")
    watching = f"watching {series} series" if isinstance(series, int) else "watching"
    if isinstance(warming, int) and warming:
        watching += f" ({warming} warming up)"
    if not found:
        return f"anomaly: none; {watching}"
    return "anomaly: " + ", ".join(found) + f"; {watching}"


def streams_line(streams: dict[str, Any]) -> str:
    """``streams: cpu on server (moved from laptop 42s ago); hosting phone cpu (event 118,
    checkpoint 108)``: where this device's hosted series are scored, and what it hosts."""
    parts = []
    for s in streams.get("streams") or []:
        if not isinstance(s, dict):
            continue
        home = clean(s.get("home")) if s.get("home") else "nowhere (parked)"
        text = f"{clean(s.get('series'))} on {home}"
        if s.get("state") not in ("serving", None):
            text += f" ({clean(s.get('state'))})"
        if s.get("moved_from"):
            moved = s.get("moved_s")
            ago = f" {_ago(moved)}" if isinstance(moved, int | float) else ""
            times = (
                f", {s['moves']} moves"
                if isinstance(s.get("moves"), int) and s["moves"] > 1
                else ""
            )
            text += f" (moved from {clean(s['moved_from'])}{ago}{times})"
        parts.append(text)
    hosting = [
        f"{clean(h.get('producer'))} {clean(h.get('series'))} (event {h.get('applied')}, "
        f"checkpoint {h.get('checkpoint')})"
        for h in streams.get("hosting") or []
        if isinstance(h, dict)
    ]
    line = "streams: " + (", ".join(parts) if parts else "none of this device's")
    if hosting:
        line += "; hosting " + ", ".join(hosting)
    return line


def _vault_line(vault: dict[str, Any], names: dict[str, str]) -> str:
    """``vault: 12 entries readable here; in sync with phone; laptop lacks 3 of ours``: a peer's
    ``behind`` is how many of our updates it lacks, ``ahead`` how many of its we lack."""
    entries = 0
    for scope in (vault.get("scopes") or {}).values():
        counts = scope.get("entries") if isinstance(scope, dict) else None
        if isinstance(counts, dict):
            entries += sum(n for n in counts.values() if isinstance(n, int))
    synced, behind, ahead, unknown = [], [], [], []
    for peer, state in sorted((vault.get("peers") or {}).items()):
        name = names.get(peer, str(peer)[-8:])
        if not isinstance(state, dict) or state.get("behind") is None:
            unknown.append(name)
            continue
        if state["behind"]:
            behind.append(f"{name} by {state['behind']}")
        if state.get("ahead"):
            ahead.append(f"{name} by {state['ahead']}")
        if not state["behind"] and not state.get("ahead"):
            synced.append(name)
    parts = [f"vault: {entries} entries readable here"]
    if synced:
        parts.append("in sync with " + ", ".join(synced))
    if behind:
        parts.append("lacking updates of ours: " + ", ".join(behind))
    if ahead:
        parts.append("holding updates we lack: " + ", ".join(ahead))
    if unknown:
        parts.append("not yet compared with " + ", ".join(unknown))
    return "; ".join(parts)


def _cells(peer: dict[str, Any], color: bool) -> list[str]:
    power, load = peer["power"], peer["load"]
    scopes = ",".join(clean(s) for s in peer["privacy"]["scopes"])
    if peer["privacy"]["relay_only"]:
        scopes = f"{scopes} relay".lstrip()
    rtt = "-" if peer["self"] else _latency(peer["latency_ms"])
    if rtt == "-" and peer.get("lease_s"):
        rtt = "light"  # nobody probes a light member; its own heartbeats time the others
    heard = "now" if peer["self"] else _ago(peer["last_seen_s"])
    return [
        peer["role"],
        peer["state"],
        _battery(power["battery_percent"], power["plugged"], power["minutes_left"], color),
        f"{round(load['cpu_percent'])}%",
        _memory(load["memory_free_mb"]),
        rtt,
        scopes or "-",
        heard,
    ]


def _battery(
    percent: float | None, plugged: bool | None, minutes: float | None, fancy: bool
) -> str:
    if percent is None:
        return "—" if fancy else "-"
    text = f"{round(percent)}%"
    if plugged:
        return text + (" ⚡" if fancy else " plugged")
    if minutes is not None:
        hours, mins = divmod(int(minutes), 60)
        return f"{text} {hours}h{mins:02d}m" if hours else f"{text} {mins}m"
    return text


def _memory(mb: float) -> str:
    if mb >= 1024:
        return f"{mb / 1024:.1f} GB"
    return f"{round(mb)} MB"


def _latency(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _ago(seconds: float) -> str:
    if seconds < 1:
        return "now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _width(text: str) -> int:
    """Terminal columns ``text`` takes (wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cut(text: str, width: int, mark: str) -> str:
    if _width(text) <= width:
        return text
    out = ""
    for c in text:
        if _width(out + c) > width - 1:
            break
        out += c
    return out + mark


def _line(marker: str, cells: list[str], widths: list[int], *, color: bool) -> str:
    parts = []
    for column, cell, w in zip(_COLUMNS, cells, widths, strict=True):
        pad = " " * (w - _width(cell))
        if column in _RIGHT:
            parts.append(pad + cell)
        elif color and column == "STATE":
            parts.append(_COLORS[cell] + cell + _RESET + pad)
        else:
            parts.append(cell + pad)
    return (marker + "  ".join(parts)).rstrip()


# --- watching ------------------------------------------------------------------------------------


def watch(
    fetch: Callable[[], dict[str, Any]],
    *,
    interval: float,
    out: TextIO,
    iterations: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    color: bool,
    footer: str = "",
) -> None:
    """Show ``fetch()`` every ``interval`` seconds until Ctrl-C (or ``iterations`` frames).

    On a terminal each frame replaces the last, with ``footer`` kept under it; otherwise frames
    are separated by a blank line (and the footer is the caller's to print once).
    A ``SwarmError`` from ``fetch`` (say, the peer went away) is shown as its one line in place of
    the table, and watching goes on. Ctrl-C ends it quietly.
    """
    if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
        raise InvalidArgument(f"interval must be a positive number of seconds, got {interval!r}")
    tty = out.isatty()
    shown = 0
    try:
        while iterations is None or shown < iterations:
            width = _terminal_width(out) if tty else None
            try:
                frame = render_table(fetch(), color=color, width=width)
            except SwarmError as exc:
                frame = " ".join(str(exc).split()) or type(exc).__name__
            if tty:
                below = f"{footer}\n\n" if footer else ""
                out.write(f"{CLEAR}{frame}\n\n{below}every {interval:g} s, Ctrl-C to stop\n")
            else:
                out.write(("\n" if shown else "") + frame + "\n")
            out.flush()
            shown += 1
            if iterations is None or shown < iterations:
                sleep(interval)
    except KeyboardInterrupt:
        return


def _terminal_width(out: TextIO) -> int | None:
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None


def kernels_line(section: Any, names: dict[str, str]) -> str | None:
    """The ``swarm status`` line for the "kernels" section: which device holds which kernel.

    ``kernels: ray here; laptop holds embed (ray, pid 4242, 3 runs); server holds embed (ray,
    pid 5151, 0 runs, 1 running)``. ``names`` maps device ids to names. Anything malformed (the
    section is what the peer sent) is left out; None when there is nothing to say.
    """
    if not isinstance(section, dict):
        return None
    parts = []
    executor = section.get("executor")
    if isinstance(executor, str):
        parts.append(f"{clean(executor)} here")
    unavailable = section.get("unavailable")
    if isinstance(unavailable, dict):
        parts += [
            f"{clean(name)} unavailable here ({clean(why)})"
            for name, why in sorted(unavailable.items())
            if isinstance(name, str) and isinstance(why, str)
        ]
    by_device = holdings(section.get("held"))
    for device in sorted(by_device, key=lambda d: (names.get(d, d), d)):
        name = clean(names.get(device, device[-8:]))
        parts.append(f"{name} holds {', '.join(by_device[device])}")
    instances = section.get("instances")
    if isinstance(instances, dict) and isinstance(instances.get("by_device"), dict):
        homes = [
            f"{clean(names.get(d, d[-8:]))} {n}"
            for d, n in sorted(
                instances["by_device"].items(), key=lambda kv: names.get(kv[0], kv[0])
            )
            if isinstance(d, str) and isinstance(n, int)
        ]
        parked = instances.get("parked")
        if isinstance(parked, int) and parked:
            homes.append(f"{parked} parked")
        parts.append("instances " + ", ".join(homes))
    return ("kernels: " + "; ".join(parts)) if parts else None


__all__ = ["MalformedStatus", "check_status_shape", "kernels_line", "render_table", "watch"]
