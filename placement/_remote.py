"""The remote executor's messages: a run request to a peer, and its reply.

Both are frozen value types, versioned, validated when read: a malformed one is the sender's
``ProtocolViolation``. The receiving peer checks every request against its own policy before it
runs anything, and answers a refusal, a failure or a result, never an exception::

    request  {"op": "kernels.run", "v": 1, "kernel": NAME, "input": VALUE, "scope": SCOPE,
              "timeout_s": SECONDS}
    reply    {"v": 1, "ok": true, "output": VALUE, "executor": NAME, "pid": INT|null,
              "elapsed_s": SECONDS, "hosts": [HOST, ...]}
           | {"v": 1, "ok": false, "kind": "refused"|"input"|"kernel"|"executor",
              "constraint": NAME|null, "error": ONE_LINE, "hosts": [HOST, ...]}
    HOST     {"kernel": NAME, "executor": NAME, "pid": INT|null, "runs": INT, "running": INT}

``hosts`` tells the requester which kernels the answering device holds (for ``swarm status``).
``RunReply.output_or_raise`` turns a reply into its output or the matching error: a refusal is
``RemoteRefused`` (a ``RemoteError``: that device's own policy said no), a bad input
``InvalidInput``, the kernel's failure ``KernelFailed``, the executor's ``ExecutorFailed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from homeswarm.errors import InvalidArgument, ProtocolViolation, RemoteError
from homeswarm.kernels import SCOPES, InvalidInput, KernelFailed, check_name

from ._executors import ExecutorFailed, Host

WIRE_VERSION = 1
OP = "kernels.run"
KINDS = ("refused", "input", "kernel", "executor")
MAX_HOSTS = 32
MAX_ERROR_CHARS = 500
MAX_EXECUTOR_CHARS = 16
MAX_TIMEOUT_S = 86400.0


class RemoteRefused(RemoteError):
    """The device asked to run a kernel refused it under its own policy."""

    def __init__(self, message: str, constraint: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_TIMEOUT_S
    )


@dataclass(frozen=True, slots=True)
class RunRequest:
    kernel: str
    input: Any
    scope: str
    timeout_s: float

    def __post_init__(self) -> None:
        check_name(self.kernel)
        if self.scope not in SCOPES:
            raise InvalidArgument(f"scope must be one of {', '.join(SCOPES)}")
        if not _seconds(self.timeout_s) or not self.timeout_s > 0:
            raise InvalidArgument("timeout_s must be a positive number of seconds")

    def to_wire(self) -> dict[str, Any]:
        return {
            "op": OP,
            "v": WIRE_VERSION,
            "kernel": self.kernel,
            "input": self.input,
            "scope": self.scope,
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_wire(cls, body: object) -> RunRequest:
        if not isinstance(body, dict) or body.get("op") != OP:
            raise ProtocolViolation("kernels.run: not a run request")
        if body.get("v") != WIRE_VERSION:
            raise ProtocolViolation("kernels.run: unsupported version")
        if set(body) != {"op", "v", "kernel", "input", "scope", "timeout_s"}:
            raise ProtocolViolation("kernels.run: wrong fields")
        try:
            return cls(body["kernel"], body["input"], body["scope"], body["timeout_s"])
        except InvalidArgument as exc:
            raise ProtocolViolation(f"kernels.run: {exc}") from None


def host_from_wire(obj: object) -> Host:
    if not isinstance(obj, dict) or set(obj) != {"kernel", "executor", "pid", "runs", "running"}:
        raise ProtocolViolation("kernels.run reply: malformed host")
    kernel, executor, pid = obj["kernel"], obj["executor"], obj["pid"]
    runs, running = obj["runs"], obj["running"]
    try:
        check_name(kernel)
    except InvalidArgument:
        raise ProtocolViolation("kernels.run reply: bad kernel name in hosts") from None
    if not isinstance(executor, str) or not 0 < len(executor) <= MAX_EXECUTOR_CHARS:
        raise ProtocolViolation("kernels.run reply: bad executor in hosts")
    if pid is not None and not (_is_int(pid) and pid >= 0):
        raise ProtocolViolation("kernels.run reply: bad pid in hosts")
    if not (_is_int(runs) and _is_int(running) and runs >= 0 and running >= 0):
        raise ProtocolViolation("kernels.run reply: bad counts in hosts")
    return Host(kernel, executor, pid, runs, running)


@dataclass(frozen=True, slots=True)
class RunReply:
    ok: bool
    output: Any = None
    executor: str = ""
    pid: int | None = None
    elapsed_s: float = 0.0
    kind: str | None = None
    constraint: str | None = None
    error: str = ""
    hosts: tuple[Host, ...] = ()

    @classmethod
    def refused(cls, constraint: str, error: str, hosts: tuple[Host, ...] = ()) -> RunReply:
        return cls(False, kind="refused", constraint=constraint, error=error, hosts=hosts)

    @classmethod
    def failed(cls, kind: str, error: str, hosts: tuple[Host, ...] = ()) -> RunReply:
        return cls(False, kind=kind, error=error, hosts=hosts)

    def to_wire(self) -> dict[str, Any]:
        hosts = [h.to_wire() for h in self.hosts[:MAX_HOSTS]]
        if self.ok:
            return {
                "v": WIRE_VERSION,
                "ok": True,
                "output": self.output,
                "executor": self.executor,
                "pid": self.pid,
                "elapsed_s": self.elapsed_s,
                "hosts": hosts,
            }
        return {
            "v": WIRE_VERSION,
            "ok": False,
            "kind": self.kind,
            "constraint": self.constraint,
            "error": self.error[:MAX_ERROR_CHARS],
            "hosts": hosts,
        }

    @classmethod
    def from_wire(cls, body: object) -> RunReply:
        if not isinstance(body, dict) or body.get("v") != WIRE_VERSION:
            raise ProtocolViolation("kernels.run reply: not a version 1 reply")
        hosts_raw = body.get("hosts")
        if not isinstance(hosts_raw, list) or len(hosts_raw) > MAX_HOSTS:
            raise ProtocolViolation("kernels.run reply: malformed hosts")
        hosts = tuple(host_from_wire(h) for h in hosts_raw)
        if body.get("ok") is True:
            if set(body) != {"v", "ok", "output", "executor", "pid", "elapsed_s", "hosts"}:
                raise ProtocolViolation("kernels.run reply: wrong fields")
            executor, pid, elapsed = body["executor"], body["pid"], body["elapsed_s"]
            if not isinstance(executor, str) or not 0 < len(executor) <= MAX_EXECUTOR_CHARS:
                raise ProtocolViolation("kernels.run reply: bad executor")
            if pid is not None and not (_is_int(pid) and pid >= 0):
                raise ProtocolViolation("kernels.run reply: bad pid")
            if not _seconds(elapsed):
                raise ProtocolViolation("kernels.run reply: bad elapsed_s")
            return cls(True, body["output"], executor, pid, float(elapsed), hosts=hosts)
        if body.get("ok") is False:
            if set(body) != {"v", "ok", "kind", "constraint", "error", "hosts"}:
                raise ProtocolViolation("kernels.run reply: wrong fields")
            kind, constraint, error = body["kind"], body["constraint"], body["error"]
            if kind not in KINDS:
                raise ProtocolViolation("kernels.run reply: unknown kind of failure")
            if constraint is not None and not (isinstance(constraint, str) and constraint):
                raise ProtocolViolation("kernels.run reply: bad constraint")
            if not isinstance(error, str) or len(error) > MAX_ERROR_CHARS:
                raise ProtocolViolation("kernels.run reply: bad error text")
            return cls(False, kind=kind, constraint=constraint, error=error, hosts=hosts)
        raise ProtocolViolation("kernels.run reply: ok must be true or false")

    def output_or_raise(self, device: str) -> Any:
        """The output, or the error this reply stands for (``device`` names the sender)."""
        if self.ok:
            return self.output
        text = " ".join(self.error.split()) or "no reason given"
        if self.kind == "refused":
            raise RemoteRefused(f"{device} refused: {text}", self.constraint)
        if self.kind == "input":
            raise InvalidInput(text)
        if self.kind == "kernel":
            raise KernelFailed(text)
        raise ExecutorFailed(f"{device}: {text}")
