"""What the vault holds: collections, keys, scopes, values and their limits. Pure.

- A key is ``COLLECTION/NAME``: ``COLLECTION`` one of ``COLLECTIONS``, ``NAME`` 1 to
  ``MAX_NAME_BYTES`` bytes of UTF-8 without control characters (it may hold ``/``).
- A value is anything JSON can say; it is kept as its JSON text (at most ``MAX_VALUE_BYTES``).
- The collections are an assistant's memory tiers: ``context`` is working memory, each entry
  with a time to live (``TTL_DEFAULT_S``, or its own); ``memories`` and ``facts`` are long-term
  (what recall searches); ``questions`` stay until answered (removed); ``state`` holds what
  stateful kernel instances checkpoint (an HTM per stream: derived, never recalled, kept under
  its scope's key like everything else); ``intents`` are labelled examples the person keeps for
  the ``intents`` learning task (a value is the string ``LABEL<TAB>TEXT``; see
  ``learning._intents``). An entry's expiry is an
  absolute time its writer's clock set, kept beside it in the same document; every replica hides
  the entry once its own clock passes it. Nothing is written when an entry expires, so there is
  no clock fight (no replicated delete racing a fresh put); a device whose clock is off by a
  minute hides it a minute early or late, and a later put gives the entry a new life.
- Every entry has one privacy scope, ``public`` < ``personal`` < ``private`` (most restrictive
  last); the default for a new entry is ``personal``. Each scope is its own CRDT document, so an
  entry lives in exactly one of them. Should two devices concurrently put one key into two
  scopes, the entry exists in both documents; a device that may read both shows the one of the
  most restrictive scope (the conservative choice), every device applying the same rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from homeswarm.vocabulary import SCOPES as SCOPES  # re-exported: the face of this package

from ._errors import InvalidEntry

MEMORY_TIERS: tuple[str, ...] = ("facts", "memories", "context", "questions")
COLLECTIONS: tuple[str, ...] = (*MEMORY_TIERS, "state", "intents")
DEFAULT_SCOPE = "personal"
MAX_NAME_BYTES = 256
MAX_VALUE_BYTES = 32 * 1024  # the value's JSON text, UTF-8
MAX_PREFIX_BYTES = 512
TTL_DEFAULT_S: dict[str, float] = {"context": 48 * 3600.0}  # collections whose entries expire
MAX_TTL_S = 100 * 365 * 86400.0


def split_key(key: object) -> tuple[str, str]:
    """``"facts/home"`` -> ``("facts", "home")``; ``InvalidEntry`` saying what is wrong."""
    if not isinstance(key, str):
        raise InvalidEntry(f"a key is a string, got {type(key).__name__}")
    collection, slash, name = key.partition("/")
    if not slash or collection not in COLLECTIONS:
        raise InvalidEntry(
            f"key {_show(key)} must be COLLECTION/NAME, COLLECTION one of {', '.join(COLLECTIONS)}"
        )
    problem = name_problem(name)
    if problem:
        raise InvalidEntry(f"key {_show(key)}: {problem}")
    return collection, name


def name_problem(name: str) -> str | None:
    if not name:
        return "the name after the collection is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"the name is over {MAX_NAME_BYTES} bytes"
    if any(not c.isprintable() and c != " " for c in name):
        return "the name holds control characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid Unicode"
    return None


def check_scope(scope: object) -> str:
    if not isinstance(scope, str) or scope not in SCOPES:
        shown = _show(scope) if isinstance(scope, str) else type(scope).__name__
        raise InvalidEntry(f"scope {shown} is not one of {', '.join(SCOPES)}")
    return scope


def check_ttl(ttl: object) -> float:
    """A time to live in seconds: a positive number of at most a century."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL_S:
        raise InvalidEntry("a time to live is a positive number of seconds, at most a century")
    return float(ttl)


def check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise InvalidEntry(f"a prefix is a string, got {type(prefix).__name__}")
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_PREFIX_BYTES:
        raise InvalidEntry(f"a prefix is at most {MAX_PREFIX_BYTES} bytes")
    return prefix


def encode_value(value: Any) -> str:
    """The JSON text kept for ``value``; ``InvalidEntry`` if JSON cannot say it or it is too big."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidEntry(f"the value is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidEntry("the value is nested too deeply") from None
    return check_text(text)


def parse_json(text: str) -> Any:
    """``--json`` input: JSON text to a value; ``InvalidEntry`` with where it fails."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidEntry(f"the value is not valid JSON: {exc.msg} at {exc.pos}") from None
    except ValueError as exc:
        raise InvalidEntry(f"the value is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidEntry("the value is nested too deeply") from None
    return value


def check_text(text: object) -> str:
    """A value's JSON text as stored: valid JSON, at most ``MAX_VALUE_BYTES``."""
    if not isinstance(text, str):
        raise InvalidEntry("a value's text is a string")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_VALUE_BYTES:
        raise InvalidEntry(f"the value is {size} bytes, over the limit of {MAX_VALUE_BYTES}")
    try:
        json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise InvalidEntry("the value's text is not JSON") from None
    return text


def decode_value(text: str) -> Any:
    return json.loads(text)


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry as a device reads it: the value of the most restrictive scope it may read."""

    key: str
    text: str  # the value's JSON text
    scope: str
    expires_at: float | None = None  # wall-clock seconds (its writer's clock); None: never

    def expired(self, now: float | None) -> bool:
        return now is not None and self.expires_at is not None and self.expires_at <= now


def rank(scope: str) -> int:
    """How restrictive a scope is (higher: more)."""
    return SCOPES.index(scope)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _show(text: str) -> str:
    shown = text if len(text) <= 60 else text[:57] + "..."
    return repr(shown)
