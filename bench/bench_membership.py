"""Membership benchmarks: dissemination, failure detection, false deaths and idle bytes.

    python bench/bench_membership.py [--quick] [--json] [--battery]

Everything runs at 5% message loss with ~300-byte device states, in virtual time. The heavy runs
use ``CoreNet`` (the real pure cores over a simulated datagram network: 1 ms latency, 0.5 ms
jitter); dissemination and detection at N = 3 and 10 also run over the real driver on the memory
transport under trio's MockClock, to show the two agree. Each figure is printed beside its target.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable
from typing import Any

import msgpack
import trio
import trio.testing

from homeswarm.swarm import Change
from homeswarm.swarm._membership import DETECTION_TARGET as TARGETS
from homeswarm.swarm._membership import NORMAL, ON_BATTERY, Profile, affordable_stretch
from homeswarm.swarm.testing import CoreNet, DriverPeer, device_keys
from homeswarm.transports import Envelope, Kind, Link, MemoryNetwork, encode_frame

LOSS = 0.05
WARM_FROM = 1000  # from this size the swarm starts settled instead of simulating every join
DISSEMINATION_TARGET = {3: 1.0, 10: 1.0, 100: 2.0, 1000: 2.5}
DETECTION_TARGET = dict(TARGETS)
# what ON_BATTERY was before its gap was bounded by the view: every probe (window, suspicion
# timeouts, nack timeout as a relay) at 2 s; shown beside it, same seeds
FIXED_2S = Profile("fixed-2s", 2.0, 0.5, 3, 4, 6, 2.0, 3, 4, 60.0, 30.0)
HEAL_TARGET = 5.0  # after a partition heals, views agree within this (N = 10)
IDLE_TARGET = 1024.0  # bytes per peer per second, at N <= 10
# what the transport adds to each message: length prefix and envelope around the body
FRAMING = len(encode_frame(Envelope(Kind.ONEWAY, 0, [1]).pack())) - len(msgpack.packb([1]))


def state_of(i: int) -> bytes:
    return bytes([65 + i % 26]) * 300


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ---- CoreNet runs ------------------------------------------------------------------------------


def settled_net(n: int, seed: int) -> tuple[CoreNet, str]:
    net = CoreNet(n, seed=seed, loss=LOSS, state=state_of)
    if n >= WARM_FROM:
        net.warm_start()
        return net, "warm start"
    net.join_all()
    for _ in range(600):
        net.run_until(net.now + 1.0)
        if all(len(net.cores[o].members) == n for o in net.ids) and all(
            m.status == "alive" for o in net.ids for m in net.cores[o].members.values()
        ):
            return net, f"joined in {net.now:.0f} s"
    raise RuntimeError(f"N={n} did not settle in 600 s")


def watch(
    net: CoreNet, want: Callable[[str, Change], bool], waiting: set[str]
) -> Callable[[], bool]:
    """A ``stop`` for run_until: true once each observer in ``waiting`` reported a wanted change."""
    seen = len(net.changes)

    def done() -> bool:
        nonlocal seen
        changes = net.changes
        if len(changes) > seen:
            for observer, change in changes[seen:]:
                if observer in waiting and want(observer, change):
                    waiting.discard(observer)
            seen = len(changes)
        return not waiting

    return done


def live(net: CoreNet) -> list[str]:
    return [n for n in net.ids if n not in net.down]


def disseminate(net: CoreNet, origin: str, cap: float) -> float:
    core = net.cores[origin]
    t0 = net.now
    core.update_state(bytes([core.me.version % 256]) * 300, t0)
    version = core.me.version
    waiting = {o for o in live(net) if o != origin}
    done = watch(net, lambda o, c: c.node == origin and c.version >= version, waiting)
    net.run_until(t0 + cap, stop=done)
    return net.now - t0 if not waiting else math.inf


def detect(net: CoreNet, victim: str, cap: float) -> float:
    t0 = net.now
    net.crash(victim)
    waiting = {o for o in live(net)}
    done = watch(net, lambda o, c: c.node == victim and c.status == "dead", waiting)
    net.run_until(t0 + cap, stop=done)
    return net.now - t0 if not waiting else math.inf


def rejoin(net: CoreNet, victim: str, rng: random.Random, profile: Profile | None = None) -> None:
    net.restart(victim, [rng.choice(live(net))])
    if profile is not None:
        net.cores[victim].set_profile(profile)
    incarnation = net.cores[victim].incarnation
    waiting = {o for o in live(net) if o != victim}
    done = watch(net, lambda o, c: c.node == victim and c.incarnation >= incarnation, waiting)
    net.run_until(net.now + 60.0, stop=done)
    # and settle: the peers that probed the crashed one carry a raised Lifeguard health score
    # for a while (slower probing); the next trial starts from a quiet swarm, not that one
    net.run_until(net.now + 30.0)


def corenet_trials(n: int, dissem_trials: int, detect_trials: int, seed: int) -> dict[str, Any]:
    t_wall = time.perf_counter()
    rng = random.Random(seed)
    net, how = settled_net(n, seed)
    net.run_until(net.now + 5.0)
    dissem = []
    for _ in range(dissem_trials):
        dissem.append(disseminate(net, rng.choice(net.ids), cap=120.0))
        net.run_until(net.now + rng.uniform(0.5, 1.5))
    detect_times = []
    for _ in range(detect_trials):
        victim = rng.choice(live(net))
        detect_times.append(detect(net, victim, cap=180.0))
        rejoin(net, victim, rng)
    return {
        "n": n,
        "start": how,
        "dissemination_s": dissem,
        "detection_s": detect_times,
        "sim_seconds": net.now,
        "wall_seconds": time.perf_counter() - t_wall,
    }


def false_deaths(n: int, hours: float, seed: int) -> dict[str, Any]:
    t_wall = time.perf_counter()
    net, _ = settled_net(n, seed)
    net.run_until(net.now + 60.0)
    net.changes.clear()
    deaths = suspicions = 0
    end = net.now + hours * 3600.0
    while net.now < end:
        net.run_until(min(end, net.now + 600.0))
        for observer, change in net.changes:
            if change.node != observer:
                deaths += change.status == "dead"
                suspicions += change.status == "suspect"
        net.changes.clear()
    return {
        "n": n,
        "hours": hours,
        "false_deaths": deaths,
        "false_suspicions": suspicions,
        "refutations": sum(c.stats.refutations for c in net.cores.values()),
        "wall_seconds": time.perf_counter() - t_wall,
    }


def battery_member(
    n: int, profile: Profile, trials: int, hours: float, seed: int
) -> dict[str, Any]:
    """One member (the laptop) runs ``profile``, the others NORMAL: its wakes (distinct instants
    it sends at) in 10 quiet minutes, how often the others suspect it, how long they take to
    declare it dead when it crashes, and how long everyone (it too) takes for another's crash."""
    t_wall = time.perf_counter()
    rng = random.Random(seed)
    net, _ = settled_net(n, seed)
    laptop = net.ids[0]
    net.cores[laptop].set_profile(profile)
    net.run_until(net.now + 60.0)
    net.trace = []
    t0 = net.now
    net.run_until(t0 + 600.0)
    sends = [at for at, src, *_ in net.trace if src == laptop]
    net.trace = None
    net.changes.clear()
    net.run_until(net.now + hours * 3600.0)
    about = [c.status for o, c in net.changes if c.node == laptop and o != laptop]
    of_laptop, of_other = [], []
    for _ in range(trials):
        of_laptop.append(detect(net, laptop, cap=180.0))
        rejoin(net, laptop, rng, profile)
        other = rng.choice(net.ids[1:])
        of_other.append(detect(net, other, cap=180.0))
        rejoin(net, other, rng)
    return {
        "n": n,
        "profile": profile.name,
        "wakes_per_min": len(set(sends)) / 10.0,
        "messages_per_min": len(sends) / 10.0,
        "hours": hours,
        "suspicions": about.count("suspect"),
        "deaths": about.count("dead"),
        "detection_of_it_s": of_laptop,
        "detection_of_another_s": of_other,
        "wall_seconds": time.perf_counter() - t_wall,
    }


def battery_section(say: Callable[[str], None], quick: bool) -> list[dict[str, Any]]:
    say("a laptop on battery beside the same swarm all NORMAL, same seeds, 5% loss: fixed-2s is")
    say("ON_BATTERY before (every probe, window and suspicion timeout at 2 s); on-battery now")
    say("spaces its probes apart only while nothing is suspect and as far as the view affords")
    say("(its windows and timeouts NORMAL's). Wakes: distinct instants it sends at in 10 quiet")
    say("minutes; detection: crash until every live peer declared it dead (virtual s); 'other':")
    say("another member's crash, which the laptop helps notice:")
    widths = [4, 10, 5, 7, 8, 6, 5, 4, 7, 7, 9, 9, 6, 6]
    table(
        say,
        widths,
        "N|profile|gap s|wakes/h|msgs/h|hours|susp|dead|it p50|it p99|other p50|other p99|"
        "target|wall s",
    )
    rows = []
    for n in (3, 10):
        trio_ = []
        for profile in (NORMAL, FIXED_2S, ON_BATTERY):
            r = battery_member(n, profile, 30 if quick else 60, 0.5 if quick else 2.0, 50 + n)
            gap = profile.probe_interval * affordable_stretch(n, profile)
            r["probe_gap_s"] = gap
            trio_.append(r)
            i50, i99 = summary(r["detection_of_it_s"])
            o50, o99 = summary(r["detection_of_another_s"])
            ok = max(i99, o99) <= DETECTION_TARGET[n]
            row = [n, profile.name, f"{gap:.2f}", f"{60 * r['wakes_per_min']:.0f}"]
            row += [f"{60 * r['messages_per_min']:.0f}", f"{r['hours']:.1f}", r["suspicions"]]
            row += [r["deaths"], fmt(i50), fmt(i99), fmt(o50), fmt(o99)]
            row += [f"{DETECTION_TARGET[n]:.0f} {verdict(ok)}", f"{r['wall_seconds']:.1f}"]
            r["pass"] = ok
            table(say, widths, row)
        normal, before, after = trio_
        for name, r in (("fixed-2s", before), ("on-battery", after)):
            wakes = r["wakes_per_min"] / normal["wakes_per_min"]
            it = summary(r["detection_of_it_s"])[1] / summary(normal["detection_of_it_s"])[1]
            other = summary(r["detection_of_another_s"])[1]
            other /= summary(normal["detection_of_another_s"])[1]
            say(
                f"  N={n}: {name} / normal: wakes per hour {wakes:.2f}, detection p99 of it "
                f"{it:.2f}, of another {other:.2f}"
            )
        rows += trio_
    say("  (a p99 over fewer than 100 trials is their slowest)")
    return rows


def heal(n: int, seed: int, apart: float = 90.0) -> float:
    """Split into halves for ``apart`` seconds (each holds the other dead), heal: virtual seconds
    until every node sees every node alive."""
    net, _ = settled_net(n, seed)
    ids = list(net.ids)
    random.Random(seed).shuffle(ids)
    net.partition(ids[: n // 2], ids[n // 2 :])
    net.run_until(net.now + apart)
    net.heal()
    t0 = net.now

    def agree() -> bool:
        return all(
            len(c.members) == n and all(m.status == "alive" for m in c.members.values())
            for c in net.cores.values()
        )

    net.run_until(t0 + 300.0, stop=agree)
    return net.now - t0 if agree() else math.inf


def idle_bytes(n: int, seconds: float, loss: float, seed: int) -> dict[str, Any]:
    net, _ = settled_net(n, seed)
    net.loss = loss
    net.run_until(net.now + 60.0)
    net.measure_bytes = True
    net.bytes_sent = dict.fromkeys(net.ids, 0)
    net.messages_sent = dict.fromkeys(net.ids, 0)
    net.run_until(net.now + seconds)
    per_peer = [net.bytes_sent[i] / seconds for i in net.ids]
    messages = [net.messages_sent[i] / seconds for i in net.ids]
    return {
        "n": n,
        "loss": loss,
        "bytes_per_s_mean": sum(per_peer) / n,
        "bytes_per_s_max": max(per_peer),
        "messages_per_s_mean": sum(messages) / n,
        "framed_bytes_per_s_mean": (sum(per_peer) + FRAMING * sum(messages)) / n,
    }


# ---- the real driver over the memory transport ---------------------------------------------------


async def _first(peers: list[DriverPeer], want: Callable[[Change], bool], cap: float) -> float:
    """When the last of ``peers`` first reported a wanted change (inf if not within ``cap``)."""
    deadline = trio.current_time() + cap
    while trio.current_time() < deadline:
        times = [min((c.at for c in p.changes if want(c)), default=None) for p in peers]
        if all(t is not None for t in times):
            return max(t for t in times if t is not None)
        await trio.sleep(0.25)
    return math.inf


async def _driver_swarm(n: int, seed: int, dissem: int, detect: int) -> dict[str, Any]:
    rng = random.Random(seed)
    network = MemoryNetwork(rng, default_link=Link(latency=0.001, jitter=0.0005, loss=LOSS))
    peers = [
        DriverPeer(network, node, key, state=state_of(i), rng=random.Random(network.rng.random()))
        for i, (node, key) in enumerate(device_keys(n, rng))
    ]
    out: dict[str, Any] = {"dissemination_s": [], "detection_s": []}
    async with trio.open_nursery() as nursery:
        for peer in peers:
            await nursery.start(peer.serve)
        for peer in peers[1:]:
            peer.core.join([peers[0].id], trio.current_time())
            peer.driver.poke()
        everyone = {p.id for p in peers}
        for _ in range(240):
            await trio.sleep(0.5)
            if all(
                {m for m, x in p.core.members.items() if x.status == "alive"} == everyone
                for p in peers
            ):
                break
        await trio.sleep(5.0)
        for _ in range(dissem):
            origin = rng.choice(peers)
            t0 = trio.current_time()
            origin.core.update_state(bytes([origin.core.me.version % 256]) * 300, t0)
            origin.driver.poke()
            version = origin.core.me.version
            others = [p for p in peers if p is not origin]
            at = await _first(
                others, lambda c, o=origin, v=version: c.node == o.id and c.version >= v, 60.0
            )
            out["dissemination_s"].append(at - t0)
            await trio.sleep(rng.uniform(0.5, 1.5))
        running = list(peers)
        for _ in range(min(detect, n - 2)):
            victim = rng.choice(running)
            running.remove(victim)
            t0 = trio.current_time()
            network.crash(victim.id)
            victim.scope.cancel()
            at = await _first(
                running,
                lambda c, v=victim, t=t0: c.node == v.id and c.status == "dead" and c.at >= t,
                120.0,
            )
            out["detection_s"].append(at - t0)
            await trio.sleep(30.0)  # a quiet swarm again (see rejoin())
        nursery.cancel_scope.cancel()
    return out


def driver_trials(n: int, dissem: int, detect: int, swarms: int, seed: int) -> dict[str, Any]:
    t_wall = time.perf_counter()
    merged: dict[str, Any] = {"n": n, "dissemination_s": [], "detection_s": []}
    for k in range(swarms):
        part = trio.run(
            _driver_swarm,
            n,
            seed + k,
            dissem,
            detect,
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
        merged["dissemination_s"] += part["dissemination_s"]
        merged["detection_s"] += part["detection_s"]
    merged["wall_seconds"] = time.perf_counter() - t_wall
    return merged


# ---- the report ----------------------------------------------------------------------------------


def summary(values: list[float]) -> tuple[float, float]:
    return pct(values, 0.5), pct(values, 0.99)


def slow(values: list[float], target: float) -> int:
    return sum(v > target for v in values)


def fmt(x: float, digits: int = 2) -> str:
    return ">cap" if math.isinf(x) else f"{x:.{digits}f}"


def table(say: Callable[[str], None], widths: list[int], *rows: list[Any] | str) -> None:
    """Right-aligned columns; a row given as a string is a header, its cells split on "|"."""
    for row in rows:
        cells = row.split("|") if isinstance(row, str) else row
        say(" ".join(f"{cell!s:>{w}}" for cell, w in zip(cells, widths, strict=True)).rstrip())


def finite(value: Any) -> Any:
    """The report as strict JSON: a run that hit its cap (infinite) becomes null."""
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N <= 100, fewer trials, shorter runs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--battery", action="store_true", help="only the laptop-on-battery comparison"
    )
    args = parser.parse_args()
    quick = args.quick
    if args.battery:
        say_b: Callable[[str], None] = (lambda line: None) if args.json else print
        rows = battery_section(say_b, quick)
        if args.json:
            print(json.dumps(finite({"battery": rows})))
        return
    sizes = [3, 10, 100] if quick else [3, 10, 100, 1000]
    trials = {3: (100, 100), 10: (100, 100), 100: (20, 20), 1000: (5, 3)}
    if quick:
        trials = {3: (30, 50), 10: (30, 50), 100: (8, 4)}
    hours = {3: 1.0, 10: 1.0, 100: 0.25} if quick else {3: 10.0, 10: 10.0, 100: 10.0}
    report: dict[str, Any] = {"loss": LOSS, "quick": quick}
    say: Callable[[str], None] = (lambda line: None) if args.json else print

    say(f"membership at {LOSS:.0%} loss, 300-byte states, NORMAL profile (memberlist's LAN values)")
    say("")
    say("dissemination: update_state until every peer has the new version; detection: crash until")
    say("every live peer has declared it dead. Pure cores over CoreNet; virtual seconds:")
    widths = [5, 5, 7, 7, 5, 6, 4, 5, 7, 7, 5, 6, 4, 6]
    table(
        say,
        widths,
        "N|runs|dis p50|dis p99|slow|target||runs|det p50|det p99|slow|target||wall s",
    )
    report["corenet"] = []
    for n in sizes:
        dt, tt = trials[n]
        r = corenet_trials(n, dt, tt, seed=n)
        report["corenet"].append(r)
        d50, d99 = summary(r["dissemination_s"])
        e50, e99 = summary(r["detection_s"])
        ok_d, ok_e = d99 <= DISSEMINATION_TARGET[n], e99 <= DETECTION_TARGET[n]
        r["pass"] = {"dissemination": ok_d, "detection": ok_e}
        table(
            say,
            widths,
            [
                n,
                dt,
                fmt(d50, 3),
                fmt(d99, 3),
                slow(r["dissemination_s"], DISSEMINATION_TARGET[n]),
                DISSEMINATION_TARGET[n],
                verdict(ok_d),
                tt,
                fmt(e50),
                fmt(e99),
                slow(r["detection_s"], DETECTION_TARGET[n]),
                DETECTION_TARGET[n],
                verdict(ok_e),
                f"{r['wall_seconds']:.1f}",
            ],
        )
    starts = ", ".join(f"{r['n']}: {r['start']}" for r in report["corenet"])
    say(f"  slow: runs over the target. Start (virtual time to settle) {starts}.")
    say("  A queued record is never piggybacked to a peer known to hold it (it sent it to us, or")
    say("  signed it), so the retransmit budget goes to peers that may still miss it.")
    if 1000 in sizes:
        wall = report["corenet"][-1]["wall_seconds"]
        say("  N=1000 starts warm (settled views given, not 1000 simulated joins); its p99 over a")
        say(f"  few runs is their maximum; it took {wall:.1f} s of wall time, under a minute: ")
        say(f"  {verdict(wall < 60.0)}")
    else:
        say("  (--quick: N=1000 skipped)")

    say("")
    say(
        "the same over the real driver on the memory transport (MockClock; 1 ms links, 5% of frames"
    )
    say("lost), beside the CoreNet figures above:")
    widths = [5, 5, 7, 7, 5, 5, 7, 7, 5, 15, 13, 6]
    table(
        say,
        widths,
        "N|runs|dis p50|dis p99|slow|runs|det p50|det p99|slow|CoreNet dis|CoreNet det|wall s",
    )
    report["driver"] = []
    for n in (3, 10):
        r = driver_trials(
            n,
            dissem=5 if quick else 8,
            detect=1 if n == 3 else 3,
            swarms=4 if quick else 12,
            seed=100 + n,
        )
        report["driver"].append(r)
        d50, d99 = summary(r["dissemination_s"])
        e50, e99 = summary(r["detection_s"])
        c = next(x for x in report["corenet"] if x["n"] == n)
        cd50, cd99 = summary(c["dissemination_s"])
        ce50, ce99 = summary(c["detection_s"])
        table(
            say,
            widths,
            [
                n,
                len(r["dissemination_s"]),
                fmt(d50, 3),
                fmt(d99, 3),
                slow(r["dissemination_s"], DISSEMINATION_TARGET[n]),
                len(r["detection_s"]),
                fmt(e50),
                fmt(e99),
                slow(r["detection_s"], DETECTION_TARGET[n]),
                f"{fmt(cd50, 3)}/{fmt(cd99, 3)}",
                f"{fmt(ce50)}/{fmt(ce99)}",
                f"{r['wall_seconds']:.1f}",
            ],
        )

    say("")
    say("partition heal: halves apart for 90 s (each holds the other dead), then healed; virtual")
    say("seconds until every view has every node alive again (5% loss):")
    widths = [5, 5, 7, 7, 6, 4, 6]
    table(say, widths, "N|runs|p50|max|target||wall s")
    report["heal"] = []
    for n in (10, 100) if not quick else (10,):
        t_wall = time.perf_counter()
        times = [heal(n, seed=31 + n + k) for k in range(10 if n <= 10 else 3)]
        wall = time.perf_counter() - t_wall
        ok = max(times) <= HEAL_TARGET
        report["heal"].append({"n": n, "heal_s": times, "pass": ok, "wall_seconds": wall})
        row = [n, len(times), fmt(pct(times, 0.5)), fmt(max(times)), HEAL_TARGET, verdict(ok)]
        table(say, widths, [*row, f"{wall:.1f}"])
    say("")

    say("false deaths: any observer declaring a running peer dead (nobody crashes; 5% loss all the")
    say("time). False suspicions are counted once per observer that held them:")
    widths = [5, 6, 7, 9, 11, 9, 7, 4, 6]
    table(
        say,
        widths,
        ["N", "hours", "deaths", "per hour", "suspicions", "per hour", "target", "", "wall s"],
    )
    report["false_deaths"] = []
    for n in (3, 10, 100):
        r = false_deaths(n, hours[n], seed=7 + n)
        report["false_deaths"].append(r)
        r["pass"] = r["false_deaths"] == 0
        table(
            say,
            widths,
            [
                n,
                f"{r['hours']:.2f}",
                r["false_deaths"],
                f"{r['false_deaths'] / r['hours']:.2f}",
                r["false_suspicions"],
                f"{r['false_suspicions'] / r['hours']:.0f}",
                0,
                verdict(r["pass"]),
                f"{r['wall_seconds']:.1f}",
            ],
        )
    say(
        "  (N=1000 not run: a simulated hour of it costs minutes of wall time"
        + ("; --quick shortens the others)" if quick else ")")
    )

    say("")
    say("idle traffic per peer (settled, nothing happening): membership messages as msgpack, and")
    say(f"'framed' with the transport's {FRAMING} bytes per message (length prefix, envelope):")
    widths = [5, 5, 9, 8, 7, 10, 7, 4]
    table(say, widths, ["N", "loss", "B/s mean", "B/s max", "msgs/s", "framed B/s", "target", ""])
    window = 300.0 if quick else 900.0
    report["idle"] = []
    for n in (3, 10, 100):
        for loss in (0.0, LOSS):
            r = idle_bytes(n, window, loss, seed=11 + n)
            report["idle"].append(r)
            ok = r["framed_bytes_per_s_mean"] <= IDLE_TARGET if n <= 10 else None
            r["pass"] = ok
            table(
                say,
                widths,
                [
                    n,
                    f"{loss:.0%}",
                    f"{r['bytes_per_s_mean']:.0f}",
                    f"{r['bytes_per_s_max']:.0f}",
                    f"{r['messages_per_s_mean']:.1f}",
                    f"{r['framed_bytes_per_s_mean']:.0f}",
                ]
                + ([f"{IDLE_TARGET:.0f}", verdict(bool(ok))] if ok is not None else ["-", ""]),
            )
    say(f"  ({window:.0f} s windows: push-pull sends the whole state to one peer every 30 s, every")
    say("  90 s at N=100, so each mean spans several)")
    say("")
    report["battery"] = battery_section(say, quick)
    if args.json:
        print(json.dumps(finite(report)))


if __name__ == "__main__":
    main()
