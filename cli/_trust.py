"""``swarm audit`` and ``swarm recover``, and the grant options of ``swarm invite``."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ._args import command, home_of, report, scopes_arg


def add_grant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scopes",
        type=scopes_arg,
        metavar="LIST",
        help="the most the new device may read, comma-separated (default: its role's)",
    )
    p.add_argument(
        "--relay-only", action="store_true", help="the new device is a blind relay: reads nothing"
    )
    p.add_argument(
        "--admin", action="store_true", help="the new device is an admin (invites, revokes)"
    )


def grant_args(args: argparse.Namespace) -> dict[str, Any]:
    scopes = None if args.scopes is None else list(args.scopes)
    return {"scopes": scopes, "relay_only": args.relay_only, "admin": args.admin}


def revoke_lines(reply: dict[str, Any]) -> list[str]:
    name, device = reply["name"], reply["device"]
    undone = reply.get("undone") or []
    if not reply["counts"]:
        bar = (
            f"a majority of the {reply['admins']} admins sign it"
            if reply.get("majority", True)
            else "an admin in good standing signs it"
        )
        lines = [
            f"signed the revocation of {name} ({device}); it counts once {bar}"
            f" (so far: {', '.join(reply['signed_by'])})"
        ]
        may_sign = reply.get("may_sign") or []
        if may_sign:
            lines.append(
                f"next: {reply.get('needed', 1)} more of {', '.join(may_sign)} must also run"
                f" `swarm revoke {name}`"
            )
        lines.append(
            f"or, with the recovery code, on any device: `swarm recover CODE --revoke {name}`"
        )
        if undone:
            lines.append(
                f"once it counts, {name}'s revocations of {', '.join(undone)} stop counting"
            )
        return lines
    lines = [f"revoked {name} ({device}): the others drop it as they hear"]
    if reply["kept"]:
        lines.append(f"devices it paired stay: {', '.join(reply['kept'])} (revoke any you doubt)")
    if undone:
        lines.append(
            f"its revocations of {', '.join(undone)} no longer count: revoke again any you doubt"
        )
    return lines


def add_trust_commands(sub: Any) -> None:
    about = "list refused actions: what a device tried beyond its rights"
    command(sub, "audit", _cmd_audit, about)

    about = "give a member new scopes or rights (a new certificate)"
    p = command(sub, "grant", _cmd_grant, about)
    p.add_argument("device", metavar="DEVICE", help="the device's name or id")
    p.add_argument(
        "--scopes",
        type=scopes_arg,
        required=True,
        metavar="LIST",
        help="what it may read from now on, comma-separated; a scope taken away gets a new key",
    )
    p.add_argument("--relay-only", action="store_true", help="make it a blind relay")
    p.add_argument(
        "--admin", action="store_true", help="make it an admin (counts once a majority grant it)"
    )

    about = "make this device an admin again with the recovery code from `swarm init`"
    p = command(sub, "recover", _cmd_recover, about)
    p.add_argument("code", metavar="CODE", help="the recovery code `swarm init` printed")
    p.add_argument(
        "--revoke",
        action="append",
        default=[],
        metavar="DEVICE",
        help="also revoke this lost device, with the root's authority (repeatable)",
    )


def _cmd_grant(args: argparse.Namespace) -> int:
    from homeswarm.swarm import ask

    reply = ask(home_of(args), "trust.grant", device=args.device, **grant_args(args))
    rights = ",".join(reply["scopes"]) + (" (relay only)" if reply["relay_only"] else "")
    lines = [f"{reply['name']} ({reply['device']}) may now read: {rights or 'nothing'}"]
    if reply["admin"]:
        lines.append("it is an admin")
    if reply["rotated"]:
        lines.append(
            f"new keys for {', '.join(reply['rotated'])}: it cannot read what is written next"
        )
    return report(args, reply, *lines)


def _cmd_audit(args: argparse.Namespace) -> int:
    from homeswarm.swarm import audit_entries

    home = home_of(args)
    found = audit_entries(home)
    name = _namer(home)
    rows = [{**e.to_json(), "name": name(e.device)} for e in found]
    width = max((len(r["name"]) for r in rows), default=8)
    lines = [
        f"{_when(e.at)}  {r['name']:{width}}  {e.action:8}  {e.reason}"
        for e, r in zip(found, rows, strict=True)
    ] or ["nothing refused"]
    return report(args, {"entries": rows}, *lines)


def _namer(home: Any) -> Any:
    """Device id -> its name in this home's roster (revoked devices too), else its id's end."""
    from homeswarm.errors import SwarmError
    from homeswarm.ids import short
    from homeswarm.swarm import load_identity, load_roster

    try:
        roster = load_roster(load_identity(home))
    except SwarmError:
        return short
    return roster.name_of


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cmd_recover(args: argparse.Namespace) -> int:
    from homeswarm.swarm import recover_admin

    reply = recover_admin(home_of(args), args.code, args.revoke)
    lines = [f"{reply['name']} ({reply['device']}) is an admin again, by the swarm's root"]
    if reply["revoked"]:
        lines.append(f"revoked by the root: {', '.join(reply['revoked'])}")
    lines.append("start it with `swarm up`: the others learn it as they hear")
    return report(args, reply, *lines)
