"""The remote executor's messages: a run request to a peer, and its reply.

Both are frozen value types, versioned, validated when read against their ``homeswarm.wire``
schemas: a malformed one raises ``MalformedMessage`` (the sender's ``ProtocolViolation``: the
connection is closed). Keys a schema does not name are ignored, as everywhere on our wire. The
receiving peer checks every request against its own policy before it runs anything, and answers
a refusal, a failure or a result, never an exception::

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

from homeswarm.errors import InvalidArgument, RemoteError
from homeswarm.kernels import SCOPES, InvalidInput, KernelFailed, check_name
from homeswarm.wire import Field, Schema

from ._executors import ExecutorFailed, HeldKernel

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


def _seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_TIMEOUT_S
    )


def _timeout(value: object) -> bool:
    return _seconds(value) and value != 0


def _kernel(name: str) -> Field:
    return Field(name, str, valid=check_name, says=f"{name} is not a kernel name")


# what comes off the wire, checked by the one checker (``homeswarm.wire``): each raises
# ``MalformedMessage``, a ``ProtocolViolation``, so the connection that sent it is closed
_VERSION = Field("v", int, equals=WIRE_VERSION)
_EXECUTOR = Field("executor", str, least=1, most=MAX_EXECUTOR_CHARS)
_PID = Field("pid", int, optional=True, least=0)
_HOSTS = Field("hosts", list, most=MAX_HOSTS)
REQUEST_WIRE = Schema(
    "kernels.run",
    Field("op", str, equals=OP),
    _VERSION,
    _kernel("kernel"),
    Field("input", optional=True),  # any value; the kernel checks it
    Field("scope", str, valid=SCOPES.__contains__, says=f"scope is not {', '.join(SCOPES)}"),
    Field("timeout_s", int, float, valid=_timeout, says="timeout_s is not 0-86400 seconds"),
)
HOST_WIRE = Schema(
    "kernels.run reply host",
    _kernel("kernel"),
    _EXECUTOR,
    _PID,
    Field("runs", int, least=0),
    Field("running", int, least=0),
)
REPLY_WIRE = Schema("kernels.run reply", _VERSION, Field("ok", bool), _HOSTS)
DONE_WIRE = Schema(
    "kernels.run reply",
    Field("output", optional=True),  # any value
    _EXECUTOR,
    _PID,
    Field("elapsed_s", int, float, valid=_seconds, says="elapsed_s is not 0-86400 seconds"),
)
FAILED_WIRE = Schema(
    "kernels.run reply",
    Field("kind", str, valid=KINDS.__contains__, says=f"kind is not {', '.join(KINDS)}"),
    Field("constraint", str, optional=True, least=1),
    Field("error", str, most=MAX_ERROR_CHARS),
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
        if not _timeout(self.timeout_s):
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
        m = REQUEST_WIRE.check(body)
        return cls(m["kernel"], m["input"], m["scope"], m["timeout_s"])


def host_from_wire(obj: object) -> HeldKernel:
    m = HOST_WIRE.check(obj)
    return HeldKernel(m["kernel"], m["executor"], m["pid"], m["runs"], m["running"])


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
    hosts: tuple[HeldKernel, ...] = ()

    @classmethod
    def refused(cls, constraint: str, error: str, hosts: tuple[HeldKernel, ...] = ()) -> RunReply:
        return cls(False, kind="refused", constraint=constraint, error=error, hosts=hosts)

    @classmethod
    def failed(cls, kind: str, error: str, hosts: tuple[HeldKernel, ...] = ()) -> RunReply:
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
        head = REPLY_WIRE.check(body)
        hosts = tuple(host_from_wire(h) for h in head["hosts"])
        if head["ok"]:
            m = DONE_WIRE.check(body)
            elapsed = float(m["elapsed_s"])
            return cls(True, m["output"], m["executor"], m["pid"], elapsed, hosts=hosts)
        m = FAILED_WIRE.check(body)
        return cls(False, kind=m["kind"], constraint=m["constraint"], error=m["error"], hosts=hosts)

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
