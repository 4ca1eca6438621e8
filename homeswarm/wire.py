"""One checker for what comes off the wire: a message's fields declared once, checked in one place.

A ``Schema`` names a message and lists its ``Field``s. ``schema.check(obj)`` takes what msgpack
decoded from a peer and gives back its fields, a dict by name, or raises ``MalformedMessage`` (a
``ProtocolViolation``: the connection that sent it is closed) with ``"WHAT: PROBLEM"``; for any
input at all it raises nothing else (or the schema's own ``error``, see below). The first problem
found, in the order the fields are listed, is the one reported. ``schema.problem(obj)`` says what
``check`` would refuse, without raising: a value built here is checked by the same rules.

Rules:

- a map schema (the default) reads fields by key: keys it does not name are ignored (a newer peer
  may add some), and a key that is absent reads as ``None``;
- a positional schema (``positional=True``) reads a list with exactly one item per field; when the
  first field pins a version (``equals``), the version is checked before the length, so a newer
  peer's message reads as an unsupported version, not as a wrong length;
- ``None`` passes only an ``optional`` field;
- ``types`` are the accepted Python types; ``bool`` is never taken for an ``int`` or ``float``
  unless ``bool`` itself is listed;
- ``least``/``most`` bound a number's value, or the length of a string, bytes, list or map;
- ``items`` checks each item of a list; ``keys`` and ``values`` each key and value of a map;
- ``valid`` is a last predicate on a value that passed everything else (its result's truth
  counts: a regex's ``match`` will do); ``says`` is the problem it reports;
- ``error`` is what a schema raises, ``MalformedMessage`` unless told otherwise: a part of a message
  that is refused on its own, without closing the connection (a vault record), names its own.

Only the floor is imported: every layer can declare its messages here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from operator import call
from typing import Any

from homeswarm.errors import MalformedMessage


def pack(value: Any) -> bytes:
    """``value`` as msgpack, the one encoding on the wire and under every signature (binary
    kept apart from text). msgpack loads on first use: a command that sends nothing loads none."""
    import msgpack

    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


_ANY = object()
_SIZED = (str, bytes, list, tuple, dict)
_NAMES = {
    str: "a string",
    bytes: "bytes",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    list: "a list",
    tuple: "a list",
    dict: "a map",
}


class Field:
    """One field of a message; see the module's rules."""

    __slots__ = (
        "_bounded",
        "_exact",
        "_nested",
        "accepts",
        "equals",
        "items",
        "keys",
        "least",
        "most",
        "name",
        "optional",
        "says",
        "types",
        "valid",
        "values",
    )

    def __init__(
        self,
        name: str,
        *types: type,
        optional: bool = False,
        least: float | None = None,
        most: float | None = None,
        equals: object = _ANY,
        items: Field | None = None,
        keys: Field | None = None,
        values: Field | None = None,
        valid: Callable[[Any], object] | None = None,
        says: str = "",
    ) -> None:
        self.name = name
        self.types = types
        self.optional = optional
        self.least = least
        self.most = most
        self.equals = equals
        self.items = items
        self.keys = keys
        self.values = values
        self.valid = valid
        self.says = says or f"{name} is not valid"
        # what msgpack gives is exactly one of the types: a set lookup, before isinstance
        self._exact = frozenset(types)
        self._bounded = least is not None or most is not None
        self._nested = items is not None or keys is not None or values is not None
        self.accepts = _acceptor(self)

    def problem(self, value: object) -> str | None:
        """What is wrong with ``value`` as this field, or ``None``."""
        if value is None:
            return None if self.optional else f"{self.name} is missing"
        types = self.types
        if types and type(value) not in self._exact and not _is(value, types):
            kinds = " or ".join(dict.fromkeys(_NAMES.get(t, t.__name__) for t in types))
            return f"{self.name} is not {kinds}"
        if self.equals is not _ANY and (
            type(value) is not type(self.equals) or value != self.equals
        ):
            return f"unsupported {self.name} {str(value)[:10]!r}"
        if self._bounded:
            size = len(value) if isinstance(value, _SIZED) else value
            if type(size) is int or type(size) is float:
                if self.least is not None and not size >= self.least:
                    return f"{self.name} is under {self.least:g}"
                if self.most is not None and not size <= self.most:
                    return f"{self.name} is over {self.most:g}"
        if self._nested:
            found = self._inner(value)
            if found is not None:
                return found
        if self.valid is not None and not _holds(self.valid, value):
            return self.says
        return None

    def _inner(self, value: object) -> str | None:
        if self.items is not None and isinstance(value, list | tuple):
            for item in value:
                found = self.items.problem(item)
                if found is not None:
                    return found
        if isinstance(value, dict) and (self.keys is not None or self.values is not None):
            for key, item in value.items():
                found = self.keys.problem(key) if self.keys is not None else None
                if found is None and self.values is not None:
                    found = self.values.problem(item)
                if found is not None:
                    return found
        return None


class Schema:
    """A message: what it is called (for the error) and its fields, by key or by position."""

    __slots__ = ("_accepts", "_names", "error", "fields", "positional", "what")

    def __init__(
        self,
        what: str,
        *fields: Field,
        positional: bool = False,
        error: Callable[[str], Exception] = MalformedMessage,
    ) -> None:
        self.what = what
        self.fields = fields
        self._names = tuple(f.name for f in fields)
        self._accepts = tuple(f.accepts for f in fields)
        self.positional = positional
        self.error = error

    def check(self, obj: object) -> dict[str, Any]:
        """The message's fields by name; ``MalformedMessage`` if ``obj`` is not this message."""
        values, problem = self._read(obj)
        if problem is not None:
            raise self.fail(problem)
        return dict(zip(self._names, values, strict=True))

    def problem(self, obj: object) -> str | None:
        """What ``check`` would refuse ``obj`` for (without the message's name), or ``None``: for
        a value built here, to be checked by the same rules as one that came off the wire."""
        if (  # the quick path, for a positional message
            self.positional
            and type(obj) is list
            and len(obj) == len(self._accepts)
            and all(map(call, self._accepts, obj))
        ):
            return None
        return self._read(obj)[1]

    def _read(self, obj: object) -> tuple[list[Any] | tuple[Any, ...], str | None]:
        if self.positional:
            values, problem = self._positions(obj)
            if problem is not None:
                return values, problem
        elif isinstance(obj, dict):
            values = [obj.get(name) for name in self._names]
        else:
            return (), "not a map"
        if all(map(call, self._accepts, values)):
            return values, None
        for field, value in zip(self.fields, values, strict=True):
            found = field.problem(value)
            if found is not None:
                return values, found
        return values, None

    def _positions(self, obj: object) -> tuple[list[Any] | tuple[Any, ...], str | None]:
        if not isinstance(obj, list | tuple):
            return (), "not a list"
        first = self.fields[0] if self.fields else None
        if obj and first is not None and first.equals is not _ANY:
            found = first.problem(obj[0])
            if found is not None:
                return (), found
        if len(obj) != len(self.fields):
            return (), f"{len(obj)} fields, expected {len(self.fields)}"
        return obj, None

    def fail(self, problem: str) -> Exception:
        """The error for ``problem`` with this message (also for a caller's own later checks)."""
        return self.error(f"{self.what}: {problem}")


def _acceptor(field: Field) -> Callable[[object], bool]:
    """A quick yes for the common case, taken before ``problem``: it says True only of a value
    ``problem`` passes; False means "ask ``problem``", which finds what is wrong, if anything."""
    exact, equals = field._exact, field.equals
    if not exact or field._nested or field.valid is not None:
        return _ask
    if equals is not _ANY:
        if field._bounded or type(equals) not in exact:
            return _ask
        return lambda value: type(value) is type(equals) and value == equals
    one = next(iter(exact)) if len(exact) == 1 else None
    if not field._bounded:
        if one is not None:
            return lambda value: type(value) is one
        return lambda value: type(value) in exact
    least = -math.inf if field.least is None else field.least
    most = math.inf if field.most is None else field.most
    if one is int or one is float:
        return lambda value: type(value) is one and least <= value <= most
    if one is not None and one in _SIZED:
        return lambda value: type(value) is one and least <= len(value) <= most
    return _ask


def _ask(value: object) -> bool:
    return False


def _is(value: object, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _holds(predicate: Callable[[Any], object], value: object) -> bool:
    try:
        return bool(predicate(value))
    except (TypeError, ValueError):
        return False


__all__ = ["Field", "MalformedMessage", "Schema"]
