"""The roster as membership gossips it: certificate chains and revocations as opaque facts.

Membership spreads facts it does not understand (``Fact`` records); this module is what they mean.
A fact is the msgpack list ``["chain", chain_wire]`` or ``["revoke", revocation_wire]``.
``RosterFacts.learn`` takes one from a peer: it is added to the roster if it checks out, dropped
(and logged) if it does not, and never raises. A fact signed by a member that is not an admin
still counts (the roster's own rules say what it may do) but is audited through ``on_refused``.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import msgpack

from homeswarm.errors import MalformedMessage
from homeswarm.ids import short
from homeswarm.wire import Field, Schema

from ._certs import (
    ROOT,
    Chain,
    InvalidCertificate,
    Revocation,
    Roster,
    chain_from_wire,
    chain_to_wire,
)

log = logging.getLogger("swarm.roster")

FACT = Schema(
    "roster fact",
    Field("kind", str, valid={"chain", "revoke"}.__contains__, says="an unknown kind of fact"),
    Field("body", list),
    positional=True,
)


class RosterFacts:
    """The roster as the membership core sees it: admission, and certificates to spread."""

    def __init__(
        self,
        roster: Roster,
        on_change: Callable[[list[str]], None],
        on_refused: Callable[[str, str, str], object] | None = None,
    ) -> None:
        self.roster = roster
        self.on_change = on_change
        self.on_refused = on_refused  # (device, action, reason): a fact beyond its signer's rights
        self._snapshot: list[bytes] | None = None
        # entries already in the roster, as their exact bytes: every push-pull carries the whole
        # roster, and parsing and checking each certificate again would dominate in a big swarm
        self._known: set[bytes] = set()

    def admits(self, node: str) -> bool:
        return self.roster.admits(node)

    def learn(self, blob: bytes) -> bool:
        self.snapshot()  # (cached) every entry held, as bytes, is in _known
        if blob in self._known:
            return False
        before = {c.device for c in self.roster.members()} | self.roster.revoked()
        try:
            fact = FACT.check(msgpack.unpackb(blob, raw=False))
            kind, body = fact["kind"], fact["body"]
            if kind == "chain":
                chain = chain_from_wire(body)
                changed = [chain[0].device] if self.roster.add_chain(chain) else []
                self._check_authority(chain[0].issuer, "certify", chain[0].device, changed)
            elif kind == "revoke":
                rev = Revocation.from_wire(body)
                changed = [rev.device] if self.roster.add_revocation(rev) else []
                if rev.by != rev.device:
                    self._check_authority(rev.by, "revoke", rev.device, changed)
        except (InvalidCertificate, MalformedMessage) as exc:
            log.info("dropped a roster entry from a peer: %s", exc)
            return False
        except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
            log.warning("dropped an undecodable roster entry: %s", type(exc).__name__)
            return False
        if changed:
            after = {c.device for c in self.roster.members()} | self.roster.revoked()
            changed = sorted(set(changed) | (before ^ after))
            self._snapshot = None
            self.on_change(changed)
        return bool(changed)

    def _check_authority(self, signer: str, action: str, target: str, new: list[str]) -> None:
        if new and signer != ROOT and not self.roster.is_admin(signer) and self.on_refused:
            self.on_refused(signer, action, f"{action} {short(target)}: not an admin; ignored")

    def snapshot(self) -> list[bytes]:
        if self._snapshot is None:
            chains, revocations = self.roster.entries()
            self._snapshot = [_chain_fact(c) for c in chains] + [
                _revocation_fact(r) for r in revocations
            ]
            self._known.update(self._snapshot)
        return self._snapshot


# An entry's fact, packed once for the process: every peer's snapshot holds the same bytes (a
# simulated swarm of a thousand peers held a million packed copies, 300 bytes each). Bounded by
# the entries seen, which a roster keeps few of.
@functools.lru_cache(maxsize=8192)
def _chain_fact(chain: Chain) -> bytes:
    return chain_fact(chain_to_wire(chain))


@functools.lru_cache(maxsize=8192)
def _revocation_fact(rev: Revocation) -> bytes:
    return revocation_fact(rev.to_wire())


def chain_fact(chain_wire: Any) -> bytes:
    return msgpack.packb(["chain", chain_wire], use_bin_type=True)  # type: ignore[no-any-return]


def revocation_fact(rev_wire: Any) -> bytes:
    return msgpack.packb(["revoke", rev_wire], use_bin_type=True)  # type: ignore[no-any-return]
