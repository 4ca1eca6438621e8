"""Check a Yjs v1 update before it touches a document. Pure.

A device that can decrypt an update (or a snapshot) reads it with this checker before applying
it, so that a peer cannot slip into the vault what the vault's own writes never contain. What
our writes contain, and so all that is accepted:

- items whose parent is one of the root maps named in ``roots`` (or, for an item that has an
  origin, the parent of that origin, which was itself checked when it arrived), keyed by a map key
  of at most ``max_name`` bytes;
- content that is one string (a value's JSON text) of at most ``max_value`` bytes, or deleted
  content; garbage-collected ranges and skips.

Anything else (other content types, nested types, array items in a root, numbers that overflow,
bytes left over, a truncated buffer) raises ``BadUpdate`` with the reason. The format is lib0's:
variable-length unsigned integers (7 bits a byte, low first), length-prefixed UTF-8 strings; the
update is the structs of each client, then the delete set.
"""

from __future__ import annotations

from collections.abc import Collection


class BadUpdate(ValueError):
    """The bytes are not an update the vault accepts (the reason says why)."""


_BIT8, _BIT7, _BIT6 = 0x80, 0x40, 0x20
_GC, _DELETED, _ANY, _SKIP = 0, 1, 8, 10
_ANY_STRING = 119
_MAX_VARUINT_BYTES = 8  # 56 bits: Yjs client ids and clocks are at most 53


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise BadUpdate("truncated")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uint(self) -> int:
        value, shift = 0, 0
        for _ in range(_MAX_VARUINT_BYTES):
            b = self.byte()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
        raise BadUpdate("an integer is too long")

    def raw(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise BadUpdate("truncated")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def text(self, limit: int, what: str) -> str:
        size = self.uint()
        if size > limit:
            raise BadUpdate(f"{what} is {size} bytes, over the limit of {limit}")
        try:
            return self.raw(size).decode("utf-8")
        except UnicodeDecodeError:
            raise BadUpdate(f"{what} is not UTF-8") from None


def check_update(
    data: bytes, *, roots: Collection[str], max_name: int, max_value: int
) -> dict[int, int]:
    """Raise ``BadUpdate`` unless ``data`` is an update of the accepted shape (module doc).

    Returns its extent: for each Yjs client, the clock just past the last item it adds or
    deletes. A document that applied it holds all of it (nothing of it is pending, waiting for
    an item it refers to) exactly when its state vector reaches the extent.
    """
    if not isinstance(data, bytes):
        raise BadUpdate("an update is bytes")
    r = _Reader(data)
    extent: dict[int, int] = {}
    for _ in range(r.uint()):  # clients
        structs = r.uint()
        client = r.uint()
        clock = r.uint()
        end = 0
        for _ in range(structs):
            length, skip = _check_struct(r, roots, max_name, max_value)
            clock += length
            if not skip:
                end = clock
        if end:
            extent[client] = max(extent.get(client, 0), end)
    for _ in range(r.uint()):  # the delete set: clients
        client = r.uint()
        for _ in range(r.uint()):  # ranges
            clock = r.uint()
            length = r.uint()
            extent[client] = max(extent.get(client, 0), clock + length)
    if r.pos != len(data):
        raise BadUpdate(f"{len(data) - r.pos} bytes after the end")
    return extent


def decode_state_vector(data: bytes) -> dict[int, int]:
    """A document's state vector (``Doc.get_state()``): client -> next clock."""
    r = _Reader(data)
    out = {}
    for _ in range(r.uint()):
        client = r.uint()
        out[client] = r.uint()
    if r.pos != len(data):
        raise BadUpdate("bytes after the end of a state vector")
    return out


def _check_struct(
    r: _Reader, roots: Collection[str], max_name: int, max_value: int
) -> tuple[int, bool]:
    """Read one struct; its length in clock ticks, and whether it is a skip."""
    info = r.byte()
    ref = info & 0x1F
    if ref in (_GC, _SKIP):
        return r.uint(), ref == _SKIP
    has_origin, has_right = bool(info & _BIT8), bool(info & _BIT7)
    if has_origin:
        r.uint()
        r.uint()
    if has_right:
        r.uint()
        r.uint()
    if not (has_origin or has_right):
        if r.uint() != 1:
            raise BadUpdate("an item inside a nested type")
        root = r.text(64, "a root name")
        if root not in roots:
            raise BadUpdate(f"an item in an unknown root {root[:20]!r}")
        if not info & _BIT6:
            raise BadUpdate("a list item in a root map")
        r.text(max_name, "a key")
    if ref == _DELETED:
        return r.uint(), False
    if ref == _ANY:
        if r.uint() != 1:
            raise BadUpdate("a map item holds one value")
        if r.byte() != _ANY_STRING:
            raise BadUpdate("a value is not a string")
        r.text(max_value, "a value")
        return 1, False
    raise BadUpdate(f"content of type {ref} is not used by the vault")
