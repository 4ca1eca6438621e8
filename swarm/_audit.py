"""The audit log: every refusal of an action beyond a device's capability, append-only.

``HOME/audit.jsonl``, mode 0600, one JSON object a line: ``at`` (wall-clock seconds), ``device``
(the peer id that tried), ``action`` (``revoke``, ``grant``, ``invite``, ``seal``, ``claim``, ...)
and ``reason`` (one line). Never a secret or a vault value: only ids, names of scopes and actions.
The same refusal is written once per process (a gossiped claim is seen every second);
``audit_entries`` reads them back for ``swarm audit``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homeswarm.errors import LocalError

log = logging.getLogger("swarm.audit")

AUDIT_NAME = "audit.jsonl"
MAX_REASON = 300


class NotPermitted(LocalError):
    """This device's certificate does not allow what was asked (the refusal is audited)."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    device: str
    action: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "device": self.device, "action": self.action, "reason": self.reason}


class AuditLog:
    """Refusals, appended to ``path`` (None: kept in memory only, for simulations and tests)."""

    def __init__(self, path: Path | None, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock
        self.memory: list[AuditEntry] = []
        self._seen: set[tuple[str, str, str]] = set()

    def refuse(self, device: str, action: str, reason: str) -> bool:
        """Record one refusal (once per device, action and reason); True if it was new."""
        key = (device, action, reason[:MAX_REASON])
        if key in self._seen:
            return False
        self._seen.add(key)
        entry = AuditEntry(float(self.clock()), device, action, reason[:MAX_REASON])
        self.memory.append(entry)
        log.warning("refused %s by %s: %s", action, device[-8:], entry.reason)
        if self.path is not None:
            try:
                append(self.path, entry)
            except OSError as exc:
                log.error("cannot write the audit log %s: %s", self.path, exc.strerror)
        return True


def append(path: Path, entry: AuditEntry) -> None:
    line = (json.dumps(entry.to_json(), sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, line)
    finally:
        os.close(fd)


def audit_entries(home: Path) -> list[AuditEntry]:
    """Every entry of ``HOME/audit.jsonl``, oldest first; damaged lines are skipped."""
    try:
        lines = (home / AUDIT_NAME).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        from ._files import DEVICE_KEY
        from ._home import NotInitialised

        if not (home / DEVICE_KEY).exists():
            raise NotInitialised(
                f"{home} holds no swarm identity: run `swarm init` first"
            ) from None
        return []
    except OSError as exc:
        raise LocalError(
            f"{home / AUDIT_NAME}: cannot read the audit log: {exc.strerror}"
        ) from None
    found = []
    for line in lines:
        try:
            obj = json.loads(line)
            found.append(
                AuditEntry(
                    float(obj["at"]), str(obj["device"]), str(obj["action"]), str(obj["reason"])
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return found
