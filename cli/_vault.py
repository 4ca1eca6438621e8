"""``swarm vault ...``: the vault from the command line.

Each command asks this home's running peer over the control socket; with no peer running it
opens the vault directly (its lock keeps a peer that starts meanwhile from writing at the same
time; the peer waits a moment for it). Results and errors follow the rest of the CLI: ``--json``
prints one JSON object; bad input is one line on stderr and exit 2; a missing key (or one only
in a scope this device may not read) is one line and exit 1.

- ``put KEY VALUE [--scope SCOPE] [--ttl DURATION] [--json]``: VALUE is a string, or with
  ``--json`` JSON text. Without ``--scope`` an existing entry keeps its scope and a new one is
  ``personal``. ``context/`` entries expire after 48 h unless ``--ttl`` says otherwise; an
  entry of another collection expires only when given a ``--ttl``.
- ``get KEY [--json]``: the value alone: a string as it is, anything else as JSON (``--json``:
  always JSON).
- ``ls [PREFIX] [--json]``: ``KEY<TAB>SCOPE<TAB>VALUE-AS-JSON`` per entry, sorted by key, and
  ``<TAB>expires in 47h59m`` for one that expires (``--json``: ``expires_at``, Unix seconds, or
  null). An expired entry is gone from ``get`` and ``ls`` on every device whose clock says so.
- ``rm KEY``; ``status [--json]``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ._args import command, command_group, duration, home_of, report, until_text

LOCKED_RETRY = 5.0  # seconds to keep trying when a peer is starting up


def add_vault_commands(sub: Any) -> None:
    """The ``vault`` command group, added to the CLI's subcommands."""
    vault = command_group(sub, "vault", "the encrypted vault: put, get, ls, rm, status")

    p = command(vault, "put", _cmd_put, "store a value (acknowledged once durable)", json=False)
    p.add_argument(
        "key", metavar="KEY", help="COLLECTION/NAME: facts, memories, context, questions, intents"
    )
    p.add_argument("value", metavar="VALUE", help="a string (with --json: JSON text)")
    p.add_argument(
        "--scope",
        choices=("public", "personal", "private"),
        help="privacy scope (default: the entry's current one, else personal)",
    )
    p.add_argument(
        "--ttl",
        type=duration,
        metavar="DURATION",
        help="forget it after this long (90s, 30m, 48h, 7d); context entries default to 48h, the"
        " other collections keep entries until removed",
    )
    p.add_argument(
        "--json", action="store_true", help="VALUE is JSON text; print one JSON object for scripts"
    )

    p = command(vault, "get", _cmd_get, "print one value")
    p.add_argument("key", metavar="KEY", help="COLLECTION/NAME")

    p = command(vault, "ls", _cmd_ls, "list entries, sorted by key")
    p.add_argument("prefix", metavar="PREFIX", nargs="?", default="", help="only keys starting so")

    p = command(vault, "rm", _cmd_rm, "remove an entry")
    p.add_argument("key", metavar="KEY", help="COLLECTION/NAME")

    command(vault, "status", _cmd_status, "entries, sequences, epochs, size and sync with peers")


# ---- talking to the vault ------------------------------------------------------------------------


def _call(args: argparse.Namespace, op: str, **request: Any) -> Any:
    """``op`` through the running peer, or on the store directly if no peer runs."""
    from homeswarm.swarm import NoPeerRunning, ask
    from homeswarm.vault import VaultLocked

    home = home_of(args)
    deadline = time.monotonic() + LOCKED_RETRY
    while True:
        try:
            return ask(home, f"vault.{op}", **request)
        except NoPeerRunning:
            pass
        try:
            return _local(home, op, request)
        except VaultLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # a peer is starting: its control socket answers soon


def _local(home: Any, op: str, request: dict[str, Any]) -> Any:
    from homeswarm.swarm import read_view

    view = read_view(home) if op in ("get", "ls") else None
    if view is not None:  # the quick way: what the last direct open left, still exact
        return _direct(view, op, request)
    from homeswarm.swarm import load_identity, load_roster, open_local, save_view
    from homeswarm.vault import EntryNotFound

    identity = load_identity(home)
    local = open_local(identity, load_roster(identity))
    try:
        try:
            answer = _direct(local, op, request)
        except EntryNotFound:
            save_view(identity, local)
            raise
        # after a whole answer only: a write that failed may have left the replica ahead of
        # the store, and a view must be the store's
        save_view(identity, local)
        return answer
    finally:
        local.close()


def _direct(local: Any, op: str, request: dict[str, Any]) -> Any:
    from homeswarm.swarm import entry_json, not_found
    from homeswarm.vault import EntryNotFound

    if op == "put":
        used = local.put(request["key"], request["value"], request.get("scope"), request["ttl"])
        return {"key": request["key"], "scope": used}
    if op == "get":
        entry = local.get(request["key"])
        if entry is None:
            raise EntryNotFound(not_found(request["key"]))
        return entry_json(entry)
    if op == "ls":
        return {"entries": [entry_json(e) for e in local.items(request.get("prefix") or "")]}
    if op == "rm":
        scopes = local.delete(request["key"])
        if not scopes:
            raise EntryNotFound(not_found(request["key"]))
        return {"key": request["key"], "scopes": scopes}
    return local.status()


# ---- the commands --------------------------------------------------------------------------------


def _cmd_put(args: argparse.Namespace) -> int:
    from homeswarm.vault import encode_value, parse_json, split_key

    split_key(args.key)
    value = parse_json(args.value) if args.json else args.value
    reply = _call(
        args, "put", key=args.key, value=encode_value(value), scope=args.scope, ttl=args.ttl
    )
    return report(args, reply, f"put {reply['key']} ({reply['scope']})")


def _cmd_get(args: argparse.Namespace) -> int:
    from homeswarm.vault import split_key

    split_key(args.key)
    reply = _call(args, "get", key=args.key)
    value = json.loads(reply["value"])
    if args.json or not isinstance(value, str):
        print(json.dumps(value, ensure_ascii=False, sort_keys=True))
    else:
        print(value)
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    from homeswarm.vault import check_prefix

    check_prefix(args.prefix)
    reply = _call(args, "ls", prefix=args.prefix)
    entries = [
        {
            "key": e["key"],
            "scope": e["scope"],
            "value": json.loads(e["value"]),
            "expires_at": e.get("expires_at"),
        }
        for e in reply["entries"]
    ]
    now = time.time()
    lines = [
        f"{e['key']}\t{e['scope']}\t{json.dumps(e['value'], ensure_ascii=False, sort_keys=True)}"
        + (f"\texpires {until_text(e['expires_at'], now)}" if e["expires_at"] else "")
        for e in entries
    ]
    if not args.json and not lines:
        return 0
    return report(args, {"entries": entries}, *lines)


def _cmd_rm(args: argparse.Namespace) -> int:
    from homeswarm.vault import split_key

    split_key(args.key)
    reply = _call(args, "rm", key=args.key)
    return report(args, reply, f"removed {reply['key']} ({', '.join(reply['scopes'])})")


def _cmd_status(args: argparse.Namespace) -> int:

    status = _call(args, "status")
    return report(args, status, *render_status(status))


def render_status(status: dict[str, Any]) -> list[str]:
    """The vault status for people."""
    readable = ",".join(status.get("readable") or []) or "none (blind relay)"
    lines = [
        f"vault of {str(status.get('device', ''))[-8:]}: reads {readable}; "
        f"{_size(status.get('bytes_on_disk', 0))} on disk; {status.get('rejected', 0)} refused"
    ]
    for scope, s in status.get("scopes", {}).items():
        entries = s.get("entries")
        shown = (
            "unreadable here"
            if entries is None
            else ", ".join(f"{n} {c}" for c, n in entries.items() if n) or "empty"
        )
        seqs = " ".join(f"{o[-8:]}:{n}" for o, n in s.get("sequences", {}).items()) or "-"
        epoch = s.get("epoch")
        lines.append(
            f"  {scope:<9} {shown}; epoch {f'{epoch[0]}/{epoch[1][-8:]}' if epoch else '-'}; "
            f"{s.get('updates', 0)} updates, {s.get('snapshots', 0)} snapshots; seq {seqs}"
        )
    for peer, p in status.get("peers", {}).items():
        if p.get("behind") is None:
            where = "not synced yet"
        else:
            where = f"lacks {p['behind']}, has {p['ahead']} more"
        ago = p.get("last_sync_s")
        when = "" if ago is None else f", synced {ago:g} s ago"
        error = f" ({p['error']})" if p.get("error") else ""
        lines.append(f"  peer {peer[-8:]}: {where}{when}{error}")
    return lines


def _size(n: object) -> str:
    if not isinstance(n, int | float):
        return "?"
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


__all__ = ["add_vault_commands", "render_status"]
