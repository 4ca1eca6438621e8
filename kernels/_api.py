"""The micro-kernel API: what a kernel needs, the kernel itself, and its boundary checks.

Rules:

- ``Needs`` is a frozen value, validated when built (``InvalidArgument``): cpu cores, memory, an
  optional accelerator (``cuda``, ``mps``, or ``gpu`` for either) and the accelerator memory it
  takes, the data scope the kernel touches (``public`` < ``personal`` <
  ``private``), a latency budget, an energy class (``tiny`` < ``small`` < ``medium`` < ``large``),
  whether it holds state, and the compute it takes on a reference device (a laptop core) when the
  kernel cannot estimate it from its input. Its wire form is a plain dict.
- A ``Kernel`` is a name, a Python callable and its needs, plus an input check (which also
  normalises: a tuple becomes a list), an optional estimate of the compute a given input takes,
  and an optional ``prepare`` that loads what the kernel keeps per process (a model), once. A
  kernel may name a ``cheaper`` variant: another kernel of a lower energy class that does the same
  job on the same input (a smaller model), which placement runs instead on a device whose battery
  says so (``placement``'s energy tiers).
- Inputs and outputs are msgpack-able values: ``None``, booleans, integers of 64 bits, finite
  floats, strings, bytes, lists and string-keyed maps, at most ``MAX_DEPTH`` deep and
  ``MAX_ITEMS`` items. ``Kernel.validate`` checks an input (``InvalidInput``, one line) before it
  is placed; ``Kernel.run`` checks it again where it runs, calls the kernel, and checks what it
  returned: any exception the callable raises, or an output that is not such a value, becomes
  ``KernelFailed`` with one line.
- Nothing here does I/O or reads a clock; a kernel may (the ``embed`` model loads from disk).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from homeswarm.errors import InvalidArgument, SwarmError
from homeswarm.vocabulary import ACCELERATORS as ACCELERATORS  # re-exported, as SCOPES
from homeswarm.vocabulary import SCOPES as SCOPES  # re-exported: the face of this package
from homeswarm.wire import pack

Energy = Literal["tiny", "small", "medium", "large"]
ENERGY_CLASSES: tuple[str, ...] = get_args(Energy)
# a kernel needs one of the ACCELERATORS, or ``gpu``: either
ANY_GPU = "gpu"
ACCELERATOR_NEEDS: tuple[str, ...] = (ANY_GPU, *ACCELERATORS)

# the compute a kernel of each energy class takes on a reference device, when it gives no figure
DEFAULT_COMPUTE_S = {"tiny": 0.001, "small": 0.01, "medium": 0.1, "large": 1.0}

MAX_DEPTH = 32
MAX_ITEMS = 1_000_000
MAX_OUTPUT_BYTES = 4 * 1024 * 1024 - 64 * 1024  # fits one frame of the default size with room
MAX_NAME_CHARS = 32
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


class InvalidInput(InvalidArgument):
    """A kernel's input is not a value it takes (the caller's fault)."""


class UnknownKernel(InvalidArgument, LookupError):
    """No kernel of that name is registered here."""


class ExecutionError(SwarmError):
    """Running a kernel failed (not because of its input)."""


class KernelFailed(ExecutionError):
    """The kernel's own code raised, or returned something that is not a msgpack-able value."""


def scope_rank(scope: str) -> int:
    """``public`` 0, ``personal`` 1, ``private`` 2."""
    return SCOPES.index(scope)


def energy_rank(energy: str) -> int:
    """``tiny`` 0 ... ``large`` 3."""
    return ENERGY_CLASSES.index(energy)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(
            f"kernel name must be 1-{MAX_NAME_CHARS} characters: a lowercase letter, then "
            f"lowercase letters, digits, '.', '_' or '-'; got {str(name)[:40]!r}"
        )
    return name


# -- needs -------------------------------------------------------------------------------------


def _number(what: str, value: object, *, low: float, high: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"{what} must be a finite number, got {value!r:.40}")
    if value < low or (low_open and value == low) or value > high:
        bound = f"above {low:g}" if low_open else f"at least {low:g}"
        raise InvalidArgument(f"{what} must be {bound} and at most {high:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Needs:
    """What a kernel needs to run, as the policy sees it."""

    scope: str = "public"
    energy: str = "small"
    cpu: float = 1.0
    memory_mb: float = 64.0
    accelerator: str | None = None
    accelerator_mb: float = 0.0  # accelerator memory it takes (with an accelerator only)
    latency_budget_s: float = 1.0
    stateful: bool = False
    compute_s: float = field(default=0.0)  # 0: the energy class's default

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise InvalidArgument(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.energy not in ENERGY_CLASSES:
            raise InvalidArgument(
                f"energy must be one of {', '.join(ENERGY_CLASSES)}, got {self.energy!r}"
            )
        if self.accelerator is not None and self.accelerator not in ACCELERATOR_NEEDS:
            raise InvalidArgument(
                f"accelerator must be none or one of {', '.join(ACCELERATOR_NEEDS)}, "
                f"got {self.accelerator!r}"
            )
        if not isinstance(self.stateful, bool):
            raise InvalidArgument("stateful must be true or false")
        set_ = object.__setattr__
        set_(self, "cpu", _number("cpu", self.cpu, low=0, high=1024, low_open=True))
        set_(self, "memory_mb", _number("memory_mb", self.memory_mb, low=0, high=1e9))
        accelerator_mb = _number("accelerator_mb", self.accelerator_mb, low=0, high=1e9)
        if accelerator_mb and self.accelerator is None:
            raise InvalidArgument("accelerator_mb needs an accelerator (cuda, mps or gpu)")
        set_(self, "accelerator_mb", accelerator_mb)
        set_(
            self,
            "latency_budget_s",
            _number("latency_budget_s", self.latency_budget_s, low=0, high=86400, low_open=True),
        )
        compute = _number("compute_s", self.compute_s, low=0, high=86400)
        set_(self, "compute_s", compute or DEFAULT_COMPUTE_S[self.energy])

    def with_scope(self, scope: str) -> Needs:
        """These needs for data of ``scope``, which may raise the declared scope, never lower it."""
        if scope not in SCOPES:
            raise InvalidArgument(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if scope_rank(scope) < scope_rank(self.scope):
            raise InvalidArgument(
                f"the kernel touches {self.scope} data: scope {scope} would lower it"
            )
        return self if scope == self.scope else replace(self, scope=scope)

    def to_wire(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "energy": self.energy,
            "cpu": self.cpu,
            "memory_mb": self.memory_mb,
            "accelerator": self.accelerator,
            "accelerator_mb": self.accelerator_mb,
            "latency_budget_s": self.latency_budget_s,
            "stateful": self.stateful,
            "compute_s": self.compute_s,
        }

    @classmethod
    def from_wire(cls, obj: object) -> Needs:
        """Needs from their dict form; ``InvalidArgument`` for anything else."""
        if not isinstance(obj, dict) or set(obj) != set(cls.__dataclass_fields__):
            raise InvalidArgument("needs must be a map of exactly the Needs fields")
        return cls(**obj)


# -- values at the boundary --------------------------------------------------------------------


def check_value(value: object, what: str = "input") -> None:
    """Raise ``InvalidInput`` (one line) unless ``value`` is a msgpack-able value we accept."""
    stack: list[tuple[object, int]] = [(value, 0)]
    items = 0
    while stack:
        item, depth = stack.pop()
        items += 1
        if items > MAX_ITEMS:
            raise InvalidInput(f"{what}: more than {MAX_ITEMS} items")
        if item is None or isinstance(item, bool | str | bytes):
            continue
        if isinstance(item, int):
            if not _INT_MIN <= item <= _INT_MAX:
                raise InvalidInput(f"{what}: integer {item} does not fit in 64 bits")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(f"{what}: numbers must be finite, got {item!r}")
        elif isinstance(item, list | tuple):
            if depth >= MAX_DEPTH:
                raise InvalidInput(f"{what}: nested more than {MAX_DEPTH} deep")
            if _finite_floats(item):  # (a vector: checked at C speed)
                items += len(item)
                continue
            stack.extend((x, depth + 1) for x in item)
        elif isinstance(item, dict):
            if depth >= MAX_DEPTH:
                raise InvalidInput(f"{what}: nested more than {MAX_DEPTH} deep")
            for key, x in item.items():
                if not isinstance(key, str):
                    raise InvalidInput(f"{what}: map keys must be strings, got {_kind(key)}")
                stack.append((x, depth + 1))
        else:
            raise InvalidInput(f"{what}: {_kind(item)} is not a msgpack value")


def _finite_floats(items: list[Any] | tuple[Any, ...]) -> bool:
    """Whether ``items`` is a non-empty run of finite floats (a vector), cheaply."""
    if not items or type(items[0]) is not float or not all(type(x) is float for x in items):
        return False
    return math.isfinite(sum(items)) or all(math.isfinite(x) for x in items)


def _check_output(name: str, value: object) -> None:
    """An output is a value like an input; it crosses the boundary as msgpack, within a frame."""
    try:
        check_value(value, f"{name}: output")
    except InvalidInput as exc:
        raise KernelFailed(str(exc)) from None
    try:
        packed = pack(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise KernelFailed(f"{name}: returned a value that is not msgpack-able ({exc})") from None
    if len(packed) > MAX_OUTPUT_BYTES:
        raise KernelFailed(f"{name}: output of {len(packed)} bytes is over {MAX_OUTPUT_BYTES}")


def _kind(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        bytes: "bytes",
        list: "a list",
        tuple: "a list",
        dict: "a map",
        type(None): "null",
    }.get(type(value), f"a {type(value).__name__}")


def describe_value(value: object) -> str:
    """``a string``, ``a list``...: for one-line input errors."""
    return _kind(value)


# -- kernels -----------------------------------------------------------------------------------


def _any_input(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True, eq=False)
class Kernel:
    """A named micro-kernel: ``fn(input) -> output`` with its needs and boundary checks.

    ``check`` takes a msgpack-able input and returns it normalised or raises ``InvalidInput``;
    ``estimate`` gives the compute seconds an input takes on the reference device (default:
    ``needs.compute_s``); ``available`` says whether this process can run it at all (its
    packages are installed); ``prepare`` loads per-process state once, before the first run;
    ``cheaper`` names a variant of a lower energy class that takes the same input (see the
    module's rules).
    """

    name: str
    fn: Callable[[Any], Any]
    needs: Needs
    check: Callable[[Any], Any] = _any_input
    estimate: Callable[[Any], float] | None = None
    available: Callable[[], bool] | None = None
    prepare: Callable[[], None] | None = None
    doc: str = ""
    cheaper: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.cheaper is not None and check_name(self.cheaper) == self.name:
            raise InvalidArgument(f"kernel {self.name}: its cheaper variant must be another kernel")
        if not isinstance(self.needs, Needs):
            raise InvalidArgument(f"kernel {self.name}: needs must be a Needs")
        if not callable(self.fn):
            raise InvalidArgument(f"kernel {self.name}: fn must be callable")

    def __repr__(self) -> str:
        return f"<Kernel {self.name} {self.needs.energy} {self.needs.scope}>"

    def validate(self, value: Any) -> Any:
        """The input, checked and normalised; ``InvalidInput`` with one line if it is not one."""
        check_value(value, f"{self.name}: input")
        try:
            return self.check(value)
        except InvalidInput as exc:
            text = str(exc)
            raise InvalidInput(
                text if text.startswith(f"{self.name}:") else f"{self.name}: {text}"
            ) from None

    def compute_s(self, value: Any) -> float:
        """The compute an (already validated) input takes on the reference device, in seconds."""
        if self.estimate is None:
            return self.needs.compute_s
        try:
            estimate = float(self.estimate(value))
        except Exception:
            return self.needs.compute_s
        return estimate if math.isfinite(estimate) and estimate > 0 else self.needs.compute_s

    def is_available(self) -> bool:
        return self.unavailable() is None

    def unavailable(self) -> str | None:
        """Why this process cannot run the kernel, in one line; None when it can.

        ``available`` answers False ("not installed") or raises to say why: a RuntimeError's text
        is the reason as it stands; any other exception is named with its type.
        """
        if self.available is None:
            return None
        try:
            ok = self.available()
        except RuntimeError as exc:
            return " ".join(str(exc).split())[:300] or "not available"
        except Exception as exc:
            return _one_line(exc)
        return None if ok else "not installed"

    def run(self, value: Any) -> Any:
        """Validate, run and check the output, where the kernel runs (blocking)."""
        value = self.validate(value)
        try:
            out = self.fn(value)
        except SwarmError:
            raise
        except Exception as exc:
            text = " ".join(str(exc).split())[:200]
            raise KernelFailed(f"{self.name}: {type(exc).__name__}: {text}") from None
        _check_output(self.name, out)
        return out

    def describe(self) -> dict[str, Any]:
        """Name, doc, needs and cheaper variant, for ``swarm kernels``."""
        out: dict[str, Any] = {"name": self.name, "doc": self.doc, "needs": self.needs.to_wire()}
        if self.cheaper is not None:
            out["cheaper"] = self.cheaper
        return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def kernel(
    name: str,
    *,
    needs: Needs,
    check: Callable[[Any], Any] = _any_input,
    estimate: Callable[[Any], float] | None = None,
    available: Callable[[], bool] | None = None,
    prepare: Callable[[], None] | None = None,
    doc: str = "",
    cheaper: str | None = None,
) -> Callable[[Callable[[Any], Any]], Kernel]:
    """Declare a kernel: ``@kernel("echo", needs=Needs(energy="tiny"))`` over its function."""

    def wrap(fn: Callable[[Any], Any]) -> Kernel:
        text = doc or (fn.__doc__ or "").strip().split("\n")[0]
        return Kernel(
            name,
            fn,
            needs,
            check=check,
            estimate=estimate,
            available=available,
            prepare=prepare,
            doc=text,
            cheaper=cheaper,
        )

    return wrap
