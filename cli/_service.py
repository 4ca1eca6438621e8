"""``swarm service install|uninstall|status``: keep this device's peer running by itself.

Linux: a systemd user unit, ``swarm-NAME.service`` in ``$XDG_CONFIG_HOME/systemd/user`` (default
``~/.config/systemd/user``), ``Type=notify`` with a watchdog (the peer says READY once it
listens and pings from its event loop, so a wedged peer is restarted too), ``Restart=on-failure``
(a crash or ``kill -9`` brings it back; ``swarm service uninstall`` or ``systemctl --user stop``
does not). macOS: a launchd agent, ``org.homeswarm.NAME.plist`` in ``~/Library/LaunchAgents``,
``KeepAlive`` unless it exits cleanly. Both run ``python -P -m homeswarm.cli up --home HOME`` with
this installation's absolute interpreter, so no shell, PATH or working directory matters.

A file is ours when it carries our mark (the unit's first line; the plist's label and program);
install refuses to overwrite any file at that path, ours (uninstall first) or not.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homeswarm.errors import InvalidArgument

from ._args import EXIT_FAIL, EXIT_OK, command, command_group, home_of, report

MARK = "# Written by `swarm service install` (homeswarm); `swarm service uninstall` removes it."
LABEL = "org.homeswarm."
WATCHDOG_S = 60


@dataclass(frozen=True)
class Plan:
    """What install writes: where, and the file's bytes."""

    platform: str  # "systemd" or "launchd"
    name: str  # the unit's or agent's name
    path: Path
    content: bytes


def up_command(python: str, home: Path) -> list[str]:
    return [python, "-P", "-m", "homeswarm.cli", "up", "--home", str(home)]


def systemd_unit(python: str, home: Path, device: str) -> str:
    argv = " ".join(_systemd_quote(a) for a in up_command(python, home))
    return f"""{MARK}
[Unit]
Description=swarm peer of {device} ({home})
Documentation=https://pypi.org/project/homeswarm/
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={argv}
Environment=PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=5
WatchdogSec={WATCHDOG_S}
TimeoutStopSec=10

[Install]
WantedBy=default.target
"""


def _systemd_quote(arg: str) -> str:
    """A word of ExecStart: quoted when it has spaces or quotes; % and $ escaped."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if any(c in arg for c in " \t\"'\\"):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def launchd_plist(python: str, home: Path, device: str) -> bytes:
    logs = home / "logs"
    return plistlib.dumps(
        {
            "Label": LABEL + device,
            "ProgramArguments": up_command(python, home),
            "EnvironmentVariables": {"PYTHONSAFEPATH": "1", "PYTHONUNBUFFERED": "1"},
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "ThrottleInterval": 5,
            "ProcessType": "Background",
            "StandardOutPath": str(logs / "service.out.log"),
            "StandardErrorPath": str(logs / "service.err.log"),
        }
    )


def plan(home: Path, device: str, *, platform: str | None = None, python: str = "") -> Plan:
    platform = platform or ("launchd" if sys.platform == "darwin" else "systemd")
    python = python or str(Path(sys.executable).absolute())
    if platform == "launchd":
        path = Path.home() / "Library" / "LaunchAgents" / f"{LABEL}{device}.plist"
        return Plan(platform, LABEL + device, path, launchd_plist(python, home, device))
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    name = f"swarm-{device}.service"
    unit = systemd_unit(python, home, device).encode()
    return Plan(platform, name, config / "systemd" / "user" / name, unit)


def ours(path: Path) -> bool:
    """Whether the file at ``path`` was written by ``swarm service install``."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if path.suffix == ".plist":
        try:
            loaded = plistlib.loads(data)
        except Exception:
            return False
        args = loaded.get("ProgramArguments") if isinstance(loaded, dict) else None
        return (
            str(loaded.get("Label", "")).startswith(LABEL)
            and isinstance(args, list)
            and "homeswarm.cli" in args
        )
    return data.startswith(MARK.encode())


# ---- the CLI ----------------------------------------------------------------------------------


def add_service_commands(sub: Any) -> None:
    group = command_group(
        sub, "service", "run this device's peer by itself: at login, restarted if it dies"
    )
    q = command(group, "install", _cmd_install, "write the service file, enable and start it")
    q.add_argument("--dry-run", action="store_true", help="print the file and where it would go")
    q.add_argument(
        "--no-start", action="store_true", help="write the file only; do not enable or start it"
    )
    command(group, "uninstall", _cmd_uninstall, "stop the service and remove the file it wrote")
    command(group, "status", _cmd_status, "whether the service is installed and running")


def _device(args: argparse.Namespace) -> tuple[Path, str, str]:
    from homeswarm.swarm import load_identity

    home = home_of(args).absolute()
    ident = load_identity(home)
    return home, ident.name, ident.settings.device.role


def _cmd_install(args: argparse.Namespace) -> int:
    home, device, role = _device(args)
    p = plan(home, device)
    if args.dry_run:
        if args.json:
            return report(args, _json(p, installed=False))
        print(f"# {p.path}")
        print(p.content.decode(), end="")
        return EXIT_OK
    if p.path.exists():
        if ours(p.path):
            raise InvalidArgument(
                f"already installed ({p.path}); `swarm service uninstall` first to replace it"
            )
        raise InvalidArgument(f"{p.path} exists and was not written by swarm: not touching it")
    (home / "logs").mkdir(mode=0o700, exist_ok=True)
    p.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.path.with_name(p.path.name + ".tmp")
    tmp.write_bytes(p.content)
    tmp.chmod(0o644)
    tmp.replace(p.path)
    lines = [f"wrote {p.path}"]
    started = False
    if not args.no_start:
        started, said = _enable(p)
        lines += said
    if p.platform == "systemd" and role == "server":
        lines.append(
            "  on a server: `loginctl enable-linger $USER` keeps it running without a login"
        )
    return report(args, {**_json(p, installed=True), "started": started}, *lines)


def _enable(p: Plan) -> tuple[bool, list[str]]:
    if p.platform == "launchd":
        target = f"gui/{os.getuid()}"
        ok, out = _call(["launchctl", "bootstrap", target, str(p.path)])
        hint = f"  start it with: launchctl bootstrap {target} {shlex.quote(str(p.path))}"
        return ok, ["started (launchd)"] if ok else [f"  launchctl: {out}", hint]
    ok, out = _call(["systemctl", "--user", "daemon-reload"])
    if ok:
        ok, out = _call(["systemctl", "--user", "enable", "--now", p.name])
    if ok:
        return True, [f"enabled and started: systemctl --user status {p.name}"]
    return False, [
        f"  no user systemd to start it here ({out})",
        f"  in a login session: systemctl --user daemon-reload && systemctl --user enable --now"
        f" {p.name}",
    ]


def _call(argv: list[str]) -> tuple[bool, str]:
    if shutil.which(argv[0]) is None:
        return False, f"{argv[0]} not found"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    said = (done.stderr or done.stdout).strip().splitlines()
    return done.returncode == 0, said[-1] if said else f"exit {done.returncode}"


def _cmd_uninstall(args: argparse.Namespace) -> int:
    home, device, _ = _device(args)
    p = plan(home, device)
    if not p.path.exists():
        print(f"swarm service uninstall: not installed (no {p.path})", file=sys.stderr)
        return EXIT_FAIL
    if not ours(p.path):
        raise InvalidArgument(f"{p.path} was not written by swarm: not touching it")
    if p.platform == "launchd":
        _call(["launchctl", "bootout", f"gui/{os.getuid()}", str(p.path)])
    else:
        _call(["systemctl", "--user", "disable", "--now", p.name])
    p.path.unlink()
    if p.platform == "systemd":
        _call(["systemctl", "--user", "daemon-reload"])
    return report(args, _json(p, installed=False), f"removed {p.path}")


def _cmd_status(args: argparse.Namespace) -> int:
    home, device, _ = _device(args)
    p = plan(home, device)
    installed = p.path.exists() and ours(p.path)
    active = None
    if installed and p.platform == "systemd":
        ok, out = _call(["systemctl", "--user", "is-active", p.name])
        active = out if ok or out in ("inactive", "failed", "activating") else None
    out_json = {**_json(p, installed=installed), "active": active}
    if not installed:
        text = f"not installed ({p.path})" + (
            " (a file not written by swarm is there)" if p.path.exists() else ""
        )
    else:
        text = f"installed: {p.path}\n  active: {active or 'unknown (no user systemd here)'}"
    report(args, out_json, text)
    return EXIT_OK if installed else EXIT_FAIL


def _json(p: Plan, *, installed: bool) -> dict[str, Any]:
    return {
        "platform": p.platform,
        "name": p.name,
        "path": str(p.path),
        "installed": installed,
        "file": p.content.decode(),
    }
