"""Device and network models: profiles from TOML, and the energy model each simulated device runs.

A device profile (see ``devices.toml``) gives a battery, a charger, what the cpu costs, which link
it uses at home and away, and a daily pattern of periods: where it is, whether it is plugged in or
asleep, and what it draws. ``DeviceModel`` integrates the energy over simulated time:

- unplugged, the battery pays the period's draw, the cpu's share of ``cpu_w``, and the network:
  every transfer costs its bytes on the device's access link (``uj_per_byte_sent`` /
  ``_received``), waking the link from idle costs ``wake_mj`` (LTE's and Wi-Fi's promotion,
  Ethernet's exit from low-power idle), and the link then stays in its high-power state, drawing
  ``radio_w``, for ``tail_s`` more seconds after the last transfer (LTE's ten-second tail, which is
  why chatty protocols empty phones; Wi-Fi's quarter second; Ethernet's sleep time);
- plugged, the charger covers the draw and charges at ``charge_w`` up to ``taper_from`` percent,
  then linearly less, down to 10% of it at 100% (the constant-voltage phase);
- an empty battery switches the device off until it is plugged in again.

The swarm's own share is kept by cause (``CAUSES``): each stretch of radio tail belongs to the
transfer that extended it (so the causes add up to the radio's energy exactly), a transfer's
bytes and wake-up to its own cause, and work placed on the device (``extra_cpu``) to
``kernels``. The same model with no traffic and no placed work
is the day with no swarm at all (the day scenario's baseline).

Everything is a pure function of the profile and the times it is advanced to.
"""

from __future__ import annotations

import math
import tomllib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from homeswarm.transports import InvalidConfig, Link

DEFAULT_MODELS = Path(__file__).with_name("devices.toml")
ROLES = ("phone", "laptop", "server")
PLACES = ("home", "away")
_EDGE_S = 1e-6  # link_at's stretch stops this short of its period's ends
STEP = 60.0  # longest integration step while charging (the taper bends the curve)
CAUSES = ("probes", "acks", "gossip", "heartbeats", "vault sync", "kernels", "learning", "other")


@dataclass(frozen=True, slots=True)
class LinkModel:
    name: str
    latency_s: float
    jitter_s: float
    loss: float
    bandwidth: float  # bytes per second
    radio_w: float  # drawn while the link is up (in a transfer or its tail), above its idle
    tail_s: float = 0.0  # how long it stays up after the last transfer
    wake_j: float = 0.0  # what bringing it up from idle costs
    j_per_byte_sent: float = 0.0
    j_per_byte_received: float = 0.0
    metered: bool = False  # paid by the byte (cellular): a phone on it is a light member
    # whether a transfer on it costs the device anything (worked out once: asked per frame)
    costly: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        costly = (
            (self.radio_w and self.tail_s)
            or self.wake_j
            or self.j_per_byte_sent
            or self.j_per_byte_received
        )
        object.__setattr__(self, "costly", bool(costly))

    def link(self) -> Link:
        return Link(self.latency_s, self.jitter_s, self.loss, self.bandwidth)

    def bytes_j(self, sent: int, received: int) -> float:
        return sent * self.j_per_byte_sent + received * self.j_per_byte_received


def path_between(a: LinkModel, b: LinkModel, same_place: bool) -> Link:
    """The link between two devices: one hop on a shared home network, else both access links
    in series (latencies add; the worse loss and bandwidth count)."""
    if same_place:
        worst = a if a.latency_s >= b.latency_s else b
        return worst.link()
    return Link(
        a.latency_s + b.latency_s,
        a.jitter_s + b.jitter_s,
        1 - (1 - a.loss) * (1 - b.loss),
        min(a.bandwidth, b.bandwidth),
    )


@dataclass(frozen=True, slots=True)
class Period:
    start_h: float
    end_h: float
    place: str
    plugged: bool
    asleep: bool
    draw_w: float
    cpu: float


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    name: str
    role: str
    battery_wh: float | None
    charge_w: float
    taper_from: float
    cpu_w: float
    home_link: str
    away_link: str
    start_percent: float
    day: tuple[Period, ...]

    def period_at(self, hour: float) -> Period:
        hour %= 24.0
        for period in self.day:
            if period.start_h <= hour < period.end_h:
                return period
        return self.day[-1]

    def next_change_h(self, hour: float) -> float:
        """Hours from ``hour`` until the current period ends."""
        hour %= 24.0
        return self.period_at(hour).end_h - hour


@dataclass(frozen=True, slots=True)
class Models:
    links: Mapping[str, LinkModel]
    devices: Mapping[str, DeviceProfile]

    def link(self, name: str) -> LinkModel:
        return self.links[name]


def load_models(path: Path | None = None) -> Models:
    """Profiles from a TOML file (default: the ones shipped); one-line ``InvalidConfig`` if bad."""
    path = path or DEFAULT_MODELS
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InvalidConfig(f"cannot read device models {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(f"{path.name}: not valid TOML: {exc}") from None
    return parse_models(data, path.name)


def parse_models(data: Mapping[str, Any], source: str = "devices.toml") -> Models:
    links_raw = data.get("links")
    if not isinstance(links_raw, dict) or not links_raw:
        raise InvalidConfig(f"{source}: needs a [links.NAME] table")
    links = {name: _link(name, t, source) for name, t in links_raw.items()}
    devices = {name: _device(name, t, links, source) for name, t in data.items() if name != "links"}
    if not devices:
        raise InvalidConfig(f"{source}: defines no device profile")
    return Models(links, devices)


def _link(name: str, t: Any, source: str) -> LinkModel:
    where = f"{source}: [links.{name}]"
    if not isinstance(t, dict):
        raise InvalidConfig(f"{where} must be a table")
    try:
        model = LinkModel(
            name,
            _number(t, "latency_ms", where, 0.0) / 1000,
            _number(t, "jitter_ms", where, 0.0) / 1000,
            _number(t, "loss", where, 0.0, top=1.0),
            _number(t, "bandwidth_mbps", where, 100.0, low=1e-6) * 125_000,
            _number(t, "radio_w", where, 0.0),
            _number(t, "tail_s", where, 0.0),
            _number(t, "wake_mj", where, 0.0) / 1000,
            _number(t, "uj_per_byte_sent", where, 0.0) / 1e6,
            _number(t, "uj_per_byte_received", where, 0.0) / 1e6,
            _flag(t, "metered", where),
        )
        model.link()
    except ValueError as exc:
        raise InvalidConfig(f"{where}: {exc}") from None
    return model


def _device(name: str, t: Any, links: Mapping[str, LinkModel], source: str) -> DeviceProfile:
    where = f"{source}: [{name}]"
    if not isinstance(t, dict):
        raise InvalidConfig(f"{where} must be a table")
    if "radio_tail_s" in t:
        raise InvalidConfig(
            f"{where}: radio_tail_s is the link's now (tail_s and metered in [links.NAME])"
        )
    role = t.get("role")
    if role not in ROLES:
        raise InvalidConfig(f"{where}: role must be one of {', '.join(ROLES)}")
    battery = t.get("battery_wh")
    if battery is not None:
        battery = _number(t, "battery_wh", where, 0.0, low=1e-3)
    for key in ("home_link", "away_link"):
        if t.get(key) not in links:
            raise InvalidConfig(f"{where}: {key} must name one of [links.*]: {', '.join(links)}")
    day_raw = t.get("day")
    if not isinstance(day_raw, list) or not day_raw:
        raise InvalidConfig(f"{where}: needs its daily pattern, [[{name}.day]] tables")
    day = tuple(_period(p, f"{where} day {i + 1}") for i, p in enumerate(day_raw))
    at = 0.0
    for period in day:
        if period.start_h != at:
            raise InvalidConfig(f"{where}: the day's periods must follow on from 0 to 24")
        at = period.end_h
    if at != 24.0:
        raise InvalidConfig(f"{where}: the day's periods must end at 24")
    return DeviceProfile(
        name=name,
        role=role,
        battery_wh=battery,
        charge_w=_number(t, "charge_w", where, 20.0, low=1e-3),
        taper_from=_number(t, "taper_from", where, 80.0, top=100.0),
        cpu_w=_number(t, "cpu_w", where, 0.0),
        home_link=t["home_link"],
        away_link=t["away_link"],
        start_percent=_number(t, "start_percent", where, 90.0, top=100.0),
        day=day,
    )


def _period(t: Any, where: str) -> Period:
    if not isinstance(t, dict):
        raise InvalidConfig(f"{where} must be a table")
    place = t.get("place", "home")
    if place not in PLACES:
        raise InvalidConfig(f"{where}: place must be home or away")
    start, end = _number(t, "from", where, 0.0, top=24.0), _number(t, "to", where, 24.0, top=24.0)
    if end <= start:
        raise InvalidConfig(f"{where}: `to` must be after `from`")
    return Period(
        start,
        end,
        place,
        _flag(t, "plugged", where),
        _flag(t, "asleep", where),
        _number(t, "draw_w", where, 1.0),
        _number(t, "cpu", where, 0.0, top=100.0),
    )


def _flag(t: Mapping[str, Any], key: str, where: str) -> bool:
    value = t.get(key, False)
    if not isinstance(value, bool):
        raise InvalidConfig(f"{where}: {key} must be true or false")
    return value


def _number(
    t: Mapping[str, Any],
    key: str,
    where: str,
    default: float,
    *,
    low: float = 0.0,
    top: float = math.inf,
) -> float:
    value = t.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidConfig(f"{where}: {key} must be a number")
    if not low <= value <= top or math.isinf(value):
        raise InvalidConfig(f"{where}: {key} must be within [{low}, {top}], got {value}")
    return float(value)


class DeviceModel:
    """One simulated device's power over time: ``advance(now)``, ``traffic(now)``, ``reading``."""

    def __init__(self, profile: DeviceProfile, models: Models, *, start_hour: float) -> None:
        self.profile = profile
        self.models = models
        self.start_hour = start_hour
        self.t = 0.0
        capacity = profile.battery_wh
        self.energy_wh = None if capacity is None else capacity * profile.start_percent / 100
        self.used_wh = 0.0  # everything the device drew, from battery or mains
        self.radio_wh = 0.0
        self.radio_on_until = -math.inf
        self.extra_cpu = 0.0  # percent, on top of the period's (work placed on this device)
        self.override_plugged: bool | None = None
        self.wh_by_cause: dict[str, float] = dict.fromkeys(CAUSES, 0.0)  # the swarm's own
        self.swarm_battery_wh = 0.0  # the part of it drawn from the battery (not the charger)
        self._tail: deque[tuple[float, float, str]] = deque()  # radio on: (from, until, cause)
        self._spent: deque[tuple[float, float, str]] = deque()  # transfers: (at, joules, cause)
        self._last = profile.day[0]  # the period last looked up (most lookups find it again)
        # ``link_at``'s last answer, and the stretch of time it holds for
        self._link_now = models.link(profile.home_link)
        self._link_from = self._link_until = math.inf

    # ---- what the world asks ---------------------------------------------------------------

    def hour(self, t: float | None = None) -> float:
        return (self.start_hour + (self.t if t is None else t) / 3600.0) % 24.0

    @property
    def period(self) -> Period:
        return self._period_at(self.hour())

    def _period_at(self, hour: float) -> Period:
        """``profile.period_at(hour)``, asked several times per frame: the last one found,
        when ``hour`` is still in it."""
        last = self._last
        if last.start_h <= hour < last.end_h:
            return last
        self._last = found = self.profile.period_at(hour)
        return found

    @property
    def plugged(self) -> bool:
        if self.override_plugged is not None:
            return self.override_plugged
        return self.profile.battery_wh is None or self.period.plugged

    @property
    def percent(self) -> float | None:
        capacity = self.profile.battery_wh
        if capacity is None or self.energy_wh is None:
            return None
        return max(0.0, min(100.0, 100.0 * self.energy_wh / capacity))

    @property
    def empty(self) -> bool:
        return self.energy_wh is not None and self.energy_wh <= 0.0 and not self.plugged

    @property
    def cpu(self) -> float:
        return 0.0 if self.period.asleep else min(100.0, self.period.cpu + self.extra_cpu)

    @property
    def link(self) -> LinkModel:
        return self.link_at(self.t)

    def link_at(self, t: float) -> LinkModel:
        """The access link at time ``t`` (asked for each frame, and again for its cost): the
        one last found while ``t`` is in the stretch of time it holds for, its period (short of
        the period's ends by a microsecond: at an end, it is looked up as it always was)."""
        if self._link_from <= t < self._link_until:
            return self._link_now
        hour = self.hour(t)
        period = self._period_at(hour)
        p = self.profile
        link = self.models.link(p.home_link if period.place == "home" else p.away_link)
        if period.start_h <= hour < period.end_h:  # (the day's last period also takes 24.0)
            self._link_from = t - (hour - period.start_h) * 3600.0 + _EDGE_S
            self._link_until = t + (period.end_h - hour) * 3600.0 - _EDGE_S
            self._link_now = link
        return link

    def draw_w(self) -> float:
        """What the device draws now, radio tail aside."""
        return self.period.draw_w + self.cpu / 100.0 * self.profile.cpu_w

    def minutes_left(self) -> float | None:
        if self.energy_wh is None or self.plugged:
            return None
        return self.energy_wh / max(self.draw_w(), 1e-3) * 60.0

    def seconds_to_next_period(self) -> float:
        return self.profile.next_change_h(self.hour()) * 3600.0

    # ---- time --------------------------------------------------------------------------------

    @property
    def swarm_wh(self) -> float:
        """What the swarm itself cost this device so far (every cause together)."""
        return sum(self.wh_by_cause.values())

    def traffic(
        self,
        now: float,
        cause: str = "other",
        *,
        sent: int = 0,
        received: int = 0,
        airtime: float = 0.0,
    ) -> float:
        """The device sent or received bytes on its access link: they cost their energy per
        byte, waking the link from idle costs its wake-up, and a link with a tail stays up for
        the transfer's ``airtime`` and the tail after it (that time is ``cause``'s). Returns
        what the bytes and the wake-up cost, in Wh (the tail is counted as time passes).

        Nothing is integrated here: a frame costs a few appends, and the model pays them when
        it is next advanced past ``now`` (a simulated peer sends many frames between two looks
        at its battery)."""
        link = self.link_at(now)
        joules = link.bytes_j(sent, received)
        if now >= self.radio_on_until:
            joules += link.wake_j
        if link.tail_s and link.radio_w:
            self.radio_until(now, now + airtime + link.tail_s, cause)
        if joules:
            self._spent.append((now, joules, cause))
        return joules / 3600.0

    def radio_until(self, now: float, until: float, cause: str) -> None:
        """Keep the radio up until ``until``; the extension is ``cause``'s."""
        start = max(self.radio_on_until, now)
        if until > start:
            self._tail.append((start, until, cause))
            self.radio_on_until = until

    def spend(self, wh: float, cause: str) -> None:
        """Energy the swarm spent outside the model's own terms (a transfer's bytes)."""
        self.used_wh += wh
        self.wh_by_cause[cause] = self.wh_by_cause.get(cause, 0.0) + wh
        if self.energy_wh is not None and not self.plugged:
            self.energy_wh = max(0.0, self.energy_wh - wh)
            self.swarm_battery_wh += wh

    def advance(self, now: float) -> None:
        while self.t < now:
            boundary = self.t + self.seconds_to_next_period()
            end = min(now, boundary)
            if self.plugged and self.energy_wh is not None:
                end = min(end, self.t + STEP)
            self._segment(end)

    def _segment(self, end: float) -> None:
        dt = end - self.t
        radio_w = self.link.radio_w
        by = self.wh_by_cause
        capacity = self.profile.battery_wh
        plugged = self.plugged  # (the same throughout: the segment ends at a period's end)
        on_battery = capacity is not None and self.energy_wh is not None and not plugged
        swarm_before = self.swarm_wh if on_battery else 0.0
        radio_s = 0.0
        tail = self._tail
        while tail:
            start, until, cause = tail[0]
            overlap = min(until, end) - max(start, self.t)
            if overlap > 0:
                radio_s += overlap
                if radio_w:
                    by[cause] = by.get(cause, 0.0) + radio_w * overlap / 3600.0
            if until > end:
                break
            tail.popleft()
        radio_wh = radio_w * radio_s / 3600.0
        spent_wh = 0.0
        spent = self._spent
        while spent and spent[0][0] <= end:
            _, joules, cause = spent.popleft()
            by[cause] = by.get(cause, 0.0) + joules / 3600.0
            spent_wh += joules / 3600.0
        draw_wh = self.draw_w() * dt / 3600.0 + radio_wh + spent_wh
        self.used_wh += draw_wh
        self.radio_wh += radio_wh
        if self.extra_cpu and not self.period.asleep:
            placed = self.cpu - min(100.0, self.period.cpu)
            by["kernels"] += placed / 100.0 * self.profile.cpu_w * dt / 3600.0
        if capacity is not None and self.energy_wh is not None:
            if plugged:
                pct = 100.0 * self.energy_wh / capacity
                p = self.profile
                rate = p.charge_w
                if pct >= p.taper_from:
                    rate *= max(0.1, 1 - 0.9 * (pct - p.taper_from) / max(100 - p.taper_from, 1))
                self.energy_wh = min(capacity, self.energy_wh + rate * dt / 3600.0)
            else:
                self.energy_wh = max(0.0, self.energy_wh - draw_wh)
                self.swarm_battery_wh += self.swarm_wh - swarm_before
        self.t = end
