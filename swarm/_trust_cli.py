"""``swarm audit`` and ``swarm recover``, and the grant options of ``swarm invite``."""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Callable
from typing import Any

from homeswarm.transports import InvalidArgument

from ._audit import entries
from ._certs import ROOT, InvalidCertificate, issue_certificate, revoke, short
from ._config import parse_scopes
from ._home import load_identity, load_roster, public_bytes, resolve_home, save_roster
from ._trust import InvalidRecoveryCode, root_from_code

Report = Callable[..., int]
AddOption = Callable[[argparse.ArgumentParser], None]


def add_grant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scopes",
        type=_scopes,
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
    if not reply["counts"]:
        return [
            f"signed the revocation of {name} ({device}); it counts once a majority of the"
            f" {reply['admins']} admins sign it (so far: {', '.join(reply['signed_by'])})"
        ]
    lines = [f"revoked {name} ({device}): the others drop it as they hear"]
    if reply["kept"]:
        lines.append(f"devices it paired stay: {', '.join(reply['kept'])} (revoke any you doubt)")
    return lines


def add_trust_commands(sub: Any, add_home: AddOption, add_json: AddOption, report: Report) -> None:
    p = sub.add_parser("audit", help="list refused actions: what a device tried beyond its rights")
    add_home(p)
    add_json(p)
    p.set_defaults(run=lambda args: _cmd_audit(args, report))

    p = sub.add_parser("grant", help="give a member new scopes or rights (a new certificate)")
    p.add_argument("device", metavar="DEVICE", help="the device's name or id")
    p.add_argument(
        "--scopes",
        type=_scopes,
        required=True,
        metavar="LIST",
        help="what it may read from now on, comma-separated; a scope taken away gets a new key",
    )
    p.add_argument("--relay-only", action="store_true", help="make it a blind relay")
    p.add_argument(
        "--admin", action="store_true", help="make it an admin (counts once a majority grant it)"
    )
    add_home(p)
    add_json(p)
    p.set_defaults(run=lambda args: _cmd_grant(args, report))

    p = sub.add_parser(
        "recover", help="make this device an admin again with the recovery code from `swarm init`"
    )
    p.add_argument("code", metavar="CODE", help="the recovery code `swarm init` printed")
    p.add_argument(
        "--revoke",
        action="append",
        default=[],
        metavar="DEVICE",
        help="also revoke this lost device, with the root's authority (repeatable)",
    )
    add_home(p)
    add_json(p)
    p.set_defaults(run=lambda args: _cmd_recover(args, report))


def _cmd_grant(args: argparse.Namespace, report: Report) -> int:
    from ._control import ask

    reply = ask(resolve_home(args.home), "trust.grant", device=args.device, **grant_args(args))
    rights = ",".join(reply["scopes"]) + (" (relay only)" if reply["relay_only"] else "")
    lines = [f"{reply['name']} ({reply['device']}) may now read: {rights or 'nothing'}"]
    if reply["admin"]:
        lines.append("it is an admin")
    if reply["rotated"]:
        lines.append(
            f"new keys for {', '.join(reply['rotated'])}: it cannot read what is written next"
        )
    return report(args, reply, *lines)


def _scopes(text: str) -> tuple[str, ...]:
    try:
        return parse_scopes(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_audit(args: argparse.Namespace, report: Report) -> int:
    found = entries(resolve_home(args.home))
    rows = [e.to_json() for e in found]
    lines = [f"{_when(e.at)}  {short(e.device):8}  {e.action:8}  {e.reason}" for e in found] or [
        "nothing refused"
    ]
    return report(args, {"entries": rows}, *lines)


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cmd_recover(args: argparse.Namespace, report: Report) -> int:
    from ._control import NoPeerRunning, ask

    home = resolve_home(args.home)
    ident = load_identity(home)
    root = root_from_code(args.code)
    if public_bytes(root).hex() != ident.settings.swarm.root:
        raise InvalidRecoveryCode("this recovery code is for another swarm")
    try:
        ask(home, "status", timeout=2.0)
    except NoPeerRunning:
        pass
    else:
        raise InvalidArgument("stop this device's peer (`swarm up`) first, then recover")
    roster = load_roster(ident)
    current = roster.certificate(ident.device_id)
    settings = ident.settings.device
    now = time.time()
    cert = issue_certificate(
        root,
        issuer=ROOT,
        swarm=ident.swarm_id,
        device=ident.device_id,
        name=ident.name,
        role=settings.role,
        age=ident.age_recipient,
        now=now,
        scopes=current.scopes if current is not None else settings.effective_scopes(),
        relay_only=current.relay_only if current is not None else settings.relay_only,
        admin=True,
    )
    try:
        roster.add_chain((cert,))
        revoked = []
        for name in args.revoke:
            target = roster.find(name)
            if target is None or target.device == ident.device_id:
                raise InvalidArgument(f"--revoke {name!r}: no such other device in this swarm")
            keep = roster.certified_by(target.device)
            rev = revoke(
                root, by=ROOT, swarm=ident.swarm_id, device=target.device, now=now, keep=keep
            )
            roster.add_revocation(rev)
            revoked.append(target.name)
    except InvalidCertificate as exc:
        raise InvalidArgument(f"cannot recover: {exc}") from None
    save_roster(home, roster)
    lines = [f"{ident.name} ({ident.device_id}) is an admin again, by the swarm's root"]
    if revoked:
        lines.append(f"revoked by the root: {', '.join(revoked)}")
    lines.append("start it with `swarm up`: the others learn it as they hear")
    return report(args, {"device": ident.device_id, "admin": True, "revoked": revoked}, *lines)
