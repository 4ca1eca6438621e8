"""``swarm recall QUERY``: vault entries found by meaning, through this home's running peer.

The peer embeds the query and searches its index of the long-term collections (``facts``,
``memories``) of every scope this device may read; the first query builds the index, later ones
find it current. Prints a header saying where the query was embedded and searched, then
``KEY<TAB>SCOPE<TAB>SCORE<TAB>VALUE-AS-JSON`` per entry, best first. ``--on DEVICE`` asks that
member instead, which answers only from the scopes this device may read. ``--json``: ``{"results":
[{"key", "scope", "score", "value"}], "device", "executor", ...}``. Bad input is one line and
exit 2; no running peer, or a scope this device may not read, one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._args import add_home, add_json, home_of, report

TIMEOUT = 60.0  # seconds: the first query may load the model and build the index


def add_recall_command(sub: Any) -> None:
    p = sub.add_parser(
        "recall",
        help="find vault facts and memories by meaning",
        description="Find the vault's facts and memories nearest QUERY in meaning, best first, "
        "on this device's running peer (the first query builds the index).",
    )
    p.add_argument("query", metavar="QUERY", help="what to look for, in words")
    p.add_argument("--k", type=_k, default=10, help="how many entries at most (1-100, default 10)")
    p.add_argument(
        "--scope", choices=("public", "personal", "private"), help="only entries of this scope"
    )
    p.add_argument(
        "--collection", choices=("facts", "memories"), help="only entries of this collection"
    )
    p.add_argument(
        "--on",
        metavar="DEVICE",
        help="ask that device (name or id) instead: it answers only from the scopes this "
        "device may read (a phone asking the server)",
    )
    add_home(p)
    add_json(p)
    p.set_defaults(run=_cmd_recall)


def _k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= k <= 100:
        raise argparse.ArgumentTypeError(f"must be from 1 to 100, got {text!r}")
    return k


def _cmd_recall(args: argparse.Namespace) -> int:
    from homeswarm.errors import InvalidArgument
    from homeswarm.swarm import ask

    if not args.query.strip():
        raise InvalidArgument("the query is empty")
    reply = ask(
        home_of(args),
        "recall.query",
        timeout=TIMEOUT,
        query=args.query,
        k=args.k,
        scope=args.scope,
        collection=args.collection,
        on=args.on,
    )
    results = [
        {"key": r["key"], "scope": r["scope"], "score": r["score"], "value": json.loads(r["value"])}
        for r in reply["results"]
    ]
    out = {**reply, "results": results}
    pending = f"; {reply['pending']} entries still being indexed" if reply.get("pending") else ""
    header = (
        f"{len(results)} found; embedded and searched on {str(reply['device'])[-8:]} "
        f"({reply['executor']}, {reply.get('embedder', '?')}, {reply.get('indexed', 0)} "
        f"entries indexed{pending})"
    )
    lines = [
        f"{r['key']}\t{r['scope']}\t{r['score']:.3f}\t"
        f"{json.dumps(r['value'], ensure_ascii=False, sort_keys=True)}"
        for r in results
    ]
    return report(args, out, header, *lines)


__all__ = ["add_recall_command"]
