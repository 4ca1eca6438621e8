"""Plots of a simulation's result (matplotlib, written as PNG files): what people would rather see
than read. ``write_outputs`` writes ``result.json`` (the ``--json`` object), ``series.json`` (the
data behind the plots) and the plots that fit the scenario:

- ``dissemination_cdf.png`` (gossip): the share of peers that know an event, against time;
- ``detection_cdf.png`` (failure): the share of (peer, crashed device) pairs detected, by time;
- ``membership_view.png`` (failure, partition, churn, faults): how many devices the peers see
  alive (least, mean, most) against how many are running, with the faults marked;
- ``battery.png`` (day): each device's battery through the day (dashed: the same day with no
  swarm), hours when it was away shaded in its own colour, asleep in grey;
- ``energy_by_cause.png`` (day): the swarm's own energy on each device, by cause;
- ``view_accuracy.png`` (day): how well the peers' views matched the truth through the day;
- ``placement_policies.png`` (placement): each policy beside the others: the energy its kernels
  added by device (and all the devices drew), the phone's battery at the end and at its lowest,
  budget misses, privacy violations and refusals;
- ``placement_phone_battery.png`` (placement): the phone's battery through the day per policy;
- ``learn.png`` (learn): the job's accuracy on its held-out set over time, and each device's
  spent epsilon beside the budget (with ``battery.png`` for the devices' batteries).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._harness import Result

FAULTS = {"crash", "partition", "isolate", "pause", "loss", "leave", "battery empty", "sleeps"}
HEALS = {"heal", "restart", "powered on", "wakes", "join"}


def write_outputs(result: Result, out: Path) -> list[Path]:
    """Write the JSON and the plots into ``out`` (created if needed); returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    path = out / "result.json"
    path.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    written.append(path)
    path = out / "series.json"
    series = {**result.series, "log": result.log, "replay": result.replay}
    path.write_text(json.dumps(series, indent=1, default=_plain) + "\n")
    written.append(path)
    s = result.series
    title = f"{result.scenario}, {result.peers} peers, seed {result.seed}"
    if "dissemination" in s:
        written.append(
            _cdf(
                s["dissemination"],
                out / "dissemination_cdf.png",
                title,
                "seconds after the event",
                "share of peers that know it",
            )
        )
    if "detection" in s:
        written.append(
            _cdf(
                s["detection"],
                out / "detection_cdf.png",
                title,
                "seconds after the crash",
                "share of peers that saw it dead",
            )
        )
    if s.get("views"):
        written.append(_views(s["views"], result.log, out / "membership_view.png", title))
    if "battery" in s:
        baseline = s.get("battery_no_swarm", {})
        written.append(_battery(s["battery"], baseline, result.log, out / "battery.png", title))
    by_cause = result.metrics.get("swarm_wh_by_cause")
    if by_cause:
        battery = result.metrics.get("swarm_battery_wh") or {}
        written.append(_by_cause(by_cause, battery, out / "energy_by_cause.png", title))
    if s.get("accuracy"):
        written.append(_accuracy(s["accuracy"], out / "view_accuracy.png", title))
    if s.get("policies"):
        written.append(_policies(s["policies"], out / "placement_policies.png", title))
    if s.get("learn_accuracy") or s.get("learn_epsilon"):
        budget = result.metrics.get("epsilon_target")
        path = out / "learn.png"
        written.append(
            _learn(s.get("learn_accuracy", []), s.get("learn_epsilon", {}), budget, path, title)
        )
    if s.get("phone_battery"):
        path = out / "placement_phone_battery.png"
        written.append(_phone_battery(s["phone_battery"], path, title))
    return written


def _plain(value: Any) -> Any:
    return str(value)


def _cdf(values: list[float], path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    if values:
        ordered = sorted(values)
        n = len(ordered)
        ax.step(ordered, [(i + 1) / n for i in range(n)], where="post", color="tab:blue")
        for q, style in ((0.5, ":"), (0.99, "--")):
            x = ordered[min(n - 1, max(0, int(q * n + 0.999999) - 1))]
            ax.axvline(x, color="grey", linestyle=style, linewidth=1)
            ax.text(x, 0.02, f" p{int(q * 100)} {x:.3f}s", rotation=90, va="bottom", fontsize=8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _views(rows: list[Any], log: list[Any], path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    t = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(t, [r[1] for r in rows], color="black", linewidth=1.5, label="running")
    ax.fill_between(
        t,
        [r[2] for r in rows],
        [r[4] for r in rows],
        color="tab:blue",
        alpha=0.25,
        step="post",
        label="seen alive (least to most)",
    )
    ax.plot(t, [r[3] for r in rows], color="tab:blue", linewidth=1, label="seen alive (mean)")
    _mark(ax, log, t[-1] if t else 0.0)
    ax.set(title=title + ": membership views", xlabel="simulated seconds", ylabel="devices")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _mark(ax: Any, log: list[Any], end: float) -> None:
    for at, what, _ in log:
        if at > end:
            break
        if what in FAULTS:
            ax.axvline(at, color="tab:red", alpha=0.35, linewidth=0.8)
        elif what in HEALS:
            ax.axvline(at, color="tab:green", alpha=0.35, linewidth=0.8)


def _battery(
    battery: dict[str, list[Any]],
    baseline: dict[str, list[Any]],
    log: list[Any],
    path: Path,
    title: str,
) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    colors = {name: palette[i % len(palette)] for i, name in enumerate(battery)}
    for name, points in battery.items():
        kept = [(h, p) for h, p in points if p is not None]
        if kept:
            ax.plot(
                [h for h, _ in kept],
                [p for _, p in kept],
                label=name,
                linewidth=1.6,
                color=colors[name],
            )
        base = [(h, p) for h, p in baseline.get(name, ()) if p is not None]
        if base:
            ax.plot(
                [h for h, _ in base],
                [p for _, p in base],
                label=f"{name}, no swarm",
                linewidth=1.0,
                linestyle="--",
                color=colors[name],
            )
    # shade each device's time away from home (in its line's colour) and asleep (grey)
    spans: dict[tuple[str, str], float] = {}
    end = max((pts[-1][0] for pts in battery.values() if pts), default=24.0)
    for at, what, detail in log:
        name, _, where = detail.partition(" ")
        if what == "moves":
            if where == "away":
                spans[(name, "away")] = at / 3600
            elif (name, "away") in spans:
                start = spans.pop((name, "away"))
                ax.axvspan(start, at / 3600, color=colors.get(name, "grey"), alpha=0.1)
        elif what == "sleeps":
            spans[(detail, "asleep")] = at / 3600
        elif what == "wakes" and (detail, "asleep") in spans:
            ax.axvspan(spans.pop((detail, "asleep")), at / 3600, color="grey", alpha=0.12)
    for (name, kind), start in spans.items():
        color = colors.get(name, "grey") if kind == "away" else "grey"
        ax.axvspan(start, end, color=color, alpha=0.1 if kind == "away" else 0.12)
    ax.set(
        title=title + ": battery (shaded: away, in the device's colour; grey: asleep)",
        xlabel="hours",
        ylabel="battery %",
        ylim=(0, 101),
    )
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _by_cause(
    by_cause: dict[str, dict[str, float]], battery: dict[str, float], path: Path, title: str
) -> Path:
    """Stacked by cause; a device with a battery is labelled with the share drawn from it
    (the rest came from its charger)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    devices = list(by_cause)
    causes = sorted({c for row in by_cause.values() for c, wh in row.items() if wh})
    bottom = [0.0] * len(devices)
    for cause in causes:
        values = [by_cause[d].get(cause, 0.0) for d in devices]
        ax.bar(devices, values, bottom=bottom, label=cause)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, total in enumerate(bottom):
        label = f"{total:.2f} Wh"
        if devices[i] in battery:
            label += f" ({battery[devices[i]]:.2f} from battery)"
        ax.annotate(label, (i, total), ha="center", va="bottom", fontsize=8)
    ax.set(title=title + ": the swarm's own energy, by cause", ylabel="Wh")
    if causes:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def _accuracy(rows: list[Any], path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot([r[0] for r in rows], [r[1] for r in rows], color="tab:purple", linewidth=1.2)
    ax.set(
        title=title + ": share of views right (status, and battery within 2 points)",
        xlabel="hours",
        ylabel="accuracy",
        ylim=(0, 1.02),
    )
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _policies(policies: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Bars, one group per policy: kernel energy by device, phone battery, misses, violations."""
    import matplotlib.pyplot as plt

    names = list(policies)
    x = list(range(len(names)))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0][0]
    bottom = [0.0] * len(names)
    devices = list(next(iter(policies.values()))["kernel_wh"])
    for device in devices:
        values = [policies[n]["kernel_wh"].get(device) or 0.0 for n in names]
        ax.bar(x, values, bottom=bottom, label=device)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, n in enumerate(names):  # everything the devices drew, idle included
        ax.text(i, bottom[i], f"{policies[n]['energy_wh']:.1f} Wh in all", ha="center", fontsize=7)
    ax.set(title="energy the kernels added (Wh), by device", ylabel="Wh")
    ax.set_ylim(0, max([*bottom, 1e-3]) * 1.2)
    ax.legend(fontsize=8)
    ax = axes[0][1]
    width = 0.4
    for offset, key, label in (
        (-width / 2, "phone_battery_end_percent", "at the end"),
        (width / 2, "phone_battery_min_percent", "lowest"),
    ):
        values = [policies[n][key] or 0.0 for n in names]
        ax.bar([i + offset for i in x], values, width, label=label)
    ax.set(title="phone battery (%)", ylabel="%", ylim=(0, 125), yticks=range(0, 101, 20))
    ax.legend(fontsize=8, ncols=2)
    ax = axes[1][0]
    ax.bar(x, [policies[n]["budget_misses"] for n in names], color="tab:orange")
    ax.set(title="latency budget misses", ylabel="kernels")
    ax = axes[1][1]
    for offset, key, label, color in (
        (-width / 2, "privacy_violations", "privacy violations", "tab:red"),
        (width / 2, "refused", "refused", "tab:grey"),
    ):
        values = [policies[n][key] for n in names]
        ax.bar([i + offset for i in x], values, width, label=label, color=color)
    ax.set(title="privacy violations and refusals", ylabel="kernels")
    ax.legend(fontsize=8)
    for row in axes:
        for ax in row:
            ax.set_xticks(x, names, rotation=15, fontsize=8)
            ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title + ": placement policies on one trace")
    return _save(fig, path)


def _phone_battery(battery: dict[str, list[Any]], path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, points in battery.items():
        kept = [(h, p) for h, p in points if p is not None]
        if kept:
            ax.plot([h for h, _ in kept], [p for _, p in kept], label=name, linewidth=1.3)
    ax.set(
        title=title + ": the phone's battery under each policy",
        xlabel="simulated hours",
        ylabel="battery %",
        ylim=(0, 101),
    )
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _learn(
    accuracy: list[Any],
    epsilon: dict[str, list[Any]],
    budget: float | None,
    path: Path,
    title: str,
) -> Path:
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    kept = [(h, a) for h, a, *_ in accuracy if a is not None]
    top.plot([h for h, _ in kept], [a for _, a in kept], color="tab:purple", linewidth=1.4)
    top.set(title=title + ": accuracy on the held-out set", ylabel="accuracy", ylim=(0, 1.02))
    top.grid(alpha=0.3)
    for name, points in epsilon.items():
        bottom.plot([h for h, _ in points], [e for _, e in points], label=name, linewidth=1.2)
    if budget is not None:
        bottom.axhline(budget, color="tab:red", linestyle="--", linewidth=1, label="budget")
    bottom.set(title="epsilon spent, per device", xlabel="simulated hours", ylabel="epsilon")
    bottom.legend(loc="lower right", fontsize=8, ncols=2)
    bottom.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
