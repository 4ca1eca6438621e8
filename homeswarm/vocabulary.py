"""The names every layer shares, defined once, below every layer (beside the exception tree).

Roles say what kind of device a peer is; scopes say which data it may hold, least to most
restrictive; accelerators, what a device may have beside its CPU (``swarm.toml`` [device]
accelerator, gossiped in its state) and a kernel may need.
"""

from __future__ import annotations

from typing import Literal, get_args

from .errors import InvalidArgument

Role = Literal["phone", "laptop", "server"]
Scope = Literal["public", "personal", "private"]

ROLES: tuple[str, ...] = get_args(Role)
SCOPES: tuple[str, ...] = get_args(Scope)  # least to most restrictive
ACCELERATORS: tuple[str, ...] = ("cuda", "mps")


def scopes_problem(value: tuple[str, ...]) -> str | None:
    """What is wrong with a list of scopes, or None."""
    unknown = [v for v in value if v not in SCOPES]
    if unknown:
        return f"{unknown[0]!r} is not a scope (known: {', '.join(SCOPES)})"
    if len(set(value)) != len(value):
        return "lists a scope twice"
    return None


def parse_scopes(text: str) -> tuple[str, ...]:
    """``--scopes public,personal`` as a validated tuple; raises InvalidArgument."""
    scopes = tuple(s.strip() for s in text.split(",") if s.strip())
    problem = scopes_problem(scopes) or (None if scopes else "must name at least one scope")
    if problem:
        raise InvalidArgument(f"--scopes {text!r}: {problem}")
    return scopes


__all__ = ["ACCELERATORS", "ROLES", "SCOPES", "Role", "Scope", "parse_scopes", "scopes_problem"]
