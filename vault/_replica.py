"""One device's replica of the vault: the pure core. No I/O, no clock, no global randomness.

State, per scope (``public``, ``personal``, ``private``): a signed, encrypted log per origin
device (contiguous sequence numbers from 1, the oldest possibly folded into snapshots), the
snapshots kept, and, on a device that may read the scope, its pycrdt document. Plus the keyring
(``_keys``) and the directory (who is admitted, revoked, and may read what).

What changes the state, and what the caller must do with the result:

- ``put`` / ``delete`` change a document at once (this device reads its own writes) and *stage*
  the change; ``commit_local`` turns every staged change of a scope into one update (a group
  commit; bigger groups are split), encrypted to the scope's current epoch and signed.
- ``receive`` takes records from a peer: each is checked (shape, swarm, admitted signer, the
  next sequence number of its origin, known epoch held by the signer, signature; and where this
  device holds the key, that it decrypts to an update of the vault's own shape) and taken, or
  refused with a reason. Refusing one record never stops the others. Duplicates are ignored.
- ``compact`` folds a scope's log into one snapshot; ``reseal`` seals the epochs this device made
  to devices that became eligible (a seal is taken only from the epoch's creator, for a
  member); ``set_directory`` follows the roster and the device states.

Each of these returns ``Changes``: the records to add to storage and those to drop. The caller
stores them durably before acknowledging a write, answering a peer, or anything else: this
object's state is then what storage holds (``restore`` rebuilds it from storage). Nothing
unencrypted is in ``Changes``.

Updates whose epoch secret this device does not hold (yet, or ever: a relay, a scope it may
not read) are kept as ciphertext and passed on; they are applied when a seal brings the key.
Sequence gaps are refused, so the version vector (origin -> highest sequence, per scope) always
describes a contiguous prefix of every origin's log, and anti-entropy (``missing``) can work on
ciphertext alone.

A snapshot covers a version vector. It is made only from a document that holds everything the
log says (nothing staged, unapplied, or pending on an item not yet received), so it says exactly
what the vector says. A peer behind a snapshot gets the snapshot, then the updates after it.
Updates and snapshots of a device are refused once it is revoked; what it wrote before and others
already hold stays.

Origins are *streams* (``_records``): ``DEVICE/INCARNATION``. A replica draws its incarnation
(64 bits, from its ``rng``) when it is made, that is each time its store is opened, and writes
under that ``stream``: a store can never prove that it is the whole of its earlier self (a wiped
directory, a backup restored, a damaged row), so it never writes again under sequence numbers an
earlier opening used. The earlier streams are ordinary logs: peers fill in whatever of them this
store lost. The cost: one vector entry per opening that wrote (snapshots fold logs, not
entries). Rules that keep this true, and keep a stolen device from erasing what others wrote:

- Continuity. When a peer shows it holds more of this replica's stream than the replica (an update
  of it arrives from a peer, a peer's vector or a snapshot claims more of it: a copy of this
  process ran, or a forgery), the replica draws a new incarnation and writes under it from then.
- Forks are evidence. Two different updates with one origin and sequence are never deduplicated:
  the second is checked like any update, kept (``Changes.evidence``), its content applied where
  this device reads, and reported (``take_forks``). When the fork is in this replica's own stream
  (a restored backup wrote again), it also writes its side of the fork again under a new stream,
  so that every peer gets it through ordinary anti-entropy.
- Snapshots cannot erase. A snapshot makes a device drop a covered update only when the device
  proves the snapshot contains it: it reads both, and applying the update to the snapshot's
  document changes nothing. A reader refuses a snapshot that provably lacks an update it covers
  (a forged one). A device that cannot prove it (a blind relay, a key not yet held) keeps the
  covered updates it holds (``kept``: stored, applied when readable, never dropped).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pycrdt
import pyrage
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from homeswarm.ids import short

from ._errors import InvalidEntry, RejectedRecord, ScopeNotAllowed
from ._keys import Keyring
from ._model import (
    COLLECTIONS,
    DEFAULT_SCOPE,
    MAX_NAME_BYTES,
    MAX_VALUE_BYTES,
    SCOPES,
    TTL_DEFAULT_S,
    Entry,
    check_prefix,
    check_scope,
    check_text,
    check_ttl,
    rank,
    split_key,
)
from ._records import (
    MAX_SNAPSHOT_BYTES,
    Epoch,
    EpochKey,
    KeyRecord,
    Record,
    Seal,
    Snapshot,
    Update,
    Verifier,
    make_stream,
    sign,
    stream_device,
)
from ._ydoc import BadUpdate, check_update, decode_state_vector

MAX_GROUP_PLAIN = 900 * 1024  # plaintext of one update made by a group commit

Vectors = dict[str, dict[str, int]]  # scope -> origin -> highest sequence


@dataclass(frozen=True, slots=True)
class Access:
    """What the directory knows of one admitted device."""

    recipient: str  # its age recipient (from its certificate)
    scopes: frozenset[str] | None  # the scopes it may read; empty for a relay; None: unknown


@dataclass(frozen=True)
class Directory:
    """Admitted devices and what they may read; revoked devices."""

    devices: Mapping[str, Access] = field(default_factory=dict)
    revoked: frozenset[str] = frozenset()

    def admits(self, device: str) -> bool:
        return device in self.devices and device not in self.revoked

    def readers(self, scope: str) -> dict[str, str]:
        return {
            d: a.recipient
            for d, a in self.devices.items()
            if a.scopes is not None and scope in a.scopes and d not in self.revoked
        }

    def with_cache(self, cached: Directory) -> Directory:
        """This directory, completed by an older one: what a device may read, where this one
        does not know it (a device not seen since the start); every device, if this one holds
        none; revocations of both."""
        if not self.devices:
            return Directory(dict(cached.devices), self.revoked | cached.revoked)
        devices = dict(self.devices)
        for device, access in devices.items():
            old = cached.devices.get(device)
            if access.scopes is None and old is not None and old.recipient == access.recipient:
                devices[device] = Access(access.recipient, old.scopes)
        return Directory(devices, self.revoked | cached.revoked)

    def to_wire(self) -> dict[str, Any]:
        return {
            "devices": {
                d: [a.recipient, None if a.scopes is None else sorted(a.scopes)]
                for d, a in sorted(self.devices.items())
            },
            "revoked": sorted(self.revoked),
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Directory:
        """A stored directory; an empty one if it does not parse (it is only a cache)."""
        try:
            devices = {
                str(d): Access(str(v[0]), None if v[1] is None else frozenset(map(str, v[1])))
                for d, v in obj["devices"].items()
            }
            return cls(devices, frozenset(map(str, obj["revoked"])))
        except (KeyError, TypeError, IndexError, AttributeError):
            return cls()


@dataclass
class Changes:
    """What storage must do so that it holds what the replica holds."""

    added: list[Record] = field(default_factory=list)
    # (scope, origin, first seq, last seq): the updates to drop, both ends included
    dropped_updates: list[tuple[str, str, int, int]] = field(default_factory=list)
    dropped_snapshots: list[bytes] = field(default_factory=list)
    evidence: list[Update] = field(default_factory=list)  # the other side of a fork

    def __bool__(self) -> bool:
        return bool(self.added or self.dropped_updates or self.dropped_snapshots or self.evidence)

    def extend(self, other: Changes) -> None:
        self.added.extend(other.added)
        self.dropped_updates.extend(other.dropped_updates)
        self.dropped_snapshots.extend(other.dropped_snapshots)
        self.evidence.extend(other.evidence)


@dataclass(frozen=True, slots=True)
class Rejection:
    record: str
    reason: str
    again: bool = False  # refused before, for the same reason (reported once)


@dataclass(frozen=True, slots=True)
class Fork:
    """Two different updates signed for one origin and sequence."""

    scope: str
    origin: str
    seq: int

    def describe(self) -> str:
        return f"{self.scope}/{short(self.origin)}#{self.seq}"


EXPIRES = ".expires"  # COLLECTION + EXPIRES: the root map of NAME -> when it expires (text)
ROOTS = (*COLLECTIONS, *(c + EXPIRES for c in COLLECTIONS))  # every root map a document holds


class _Scope:
    def __init__(self, name: str, readable: bool, client_id: int) -> None:
        self.name = name
        self.floor: dict[str, int] = {}
        self.logs: dict[str, list[Update]] = {}
        self.kept: dict[tuple[str, int, bytes], Update] = {}  # outside the log (module doc)
        self.snapshots: dict[bytes, Snapshot] = {}
        self.doc: pycrdt.Doc[Any] | None = None
        self.maps: dict[str, pycrdt.Map[Any]] = {}
        if readable:
            self.doc = pycrdt.Doc(client_id=client_id)
            self.maps = {c: self.doc.get(c, type=pycrdt.Map) for c in COLLECTIONS}
            # NAME -> when the entry expires (see ``_model``), one map beside each collection
            self.expiry: dict[str, pycrdt.Map[Any]] = {
                c: self.doc.get(c + EXPIRES, type=pycrdt.Map) for c in COLLECTIONS
            }
        self.unapplied: dict[EpochKey, list[Update | Snapshot]] = {}
        self.staged: list[bytes] = []
        self.required: dict[int, int] = {}  # Yjs client -> clock the document must reach
        # content applied but not integrated yet (it needs items not here yet), with its extent:
        # applied again whenever the document grows (``Replica._apply``); in memory only
        self.waiting: list[tuple[bytes, dict[int, int]]] = []
        self.retry_at = 0  # after a snapshot too big to send: the log size to try again at

    def have(self, origin: str) -> int:
        return self.floor.get(origin, 0) + len(self.logs.get(origin, ()))

    def held(self, origin: str, seq: int) -> Update | None:
        """The update at ``seq`` of ``origin``'s log, if it is still in the log."""
        index = seq - self.floor.get(origin, 0) - 1
        log = self.logs.get(origin, ())
        return log[index] if 0 <= index < len(log) else None

    def vector(self) -> dict[str, int]:
        out = {o: self.have(o) for o in set(self.floor) | set(self.logs)}
        return {o: n for o, n in sorted(out.items()) if n}

    def pending(self) -> bool:
        """Whether the document lacks part of what was applied (waiting for a missing item)."""
        if self.doc is None:
            return False
        state = decode_state_vector(self.doc.get_state())
        return any(state.get(client, 0) < clock for client, clock in self.required.items())

    def count(self) -> int:
        return sum(len(v) for v in self.logs.values())


class Replica:
    def __init__(
        self,
        *,
        swarm: str,
        device: str,
        signing_key: Ed25519PrivateKey,
        age_identity: pyrage.x25519.Identity,
        readable: Iterable[str],
        directory: Directory | None = None,
        rng: random.Random,
    ) -> None:
        self.swarm = swarm
        self.device = device
        self.readable = frozenset(s for s in readable if s in SCOPES)
        self.directory = directory or Directory()
        self._signing_key = signing_key
        self.keyring = Keyring(
            swarm=swarm, device=device, age_identity=age_identity, signing_key=signing_key
        )
        self._verifier = Verifier()
        self._scopes = {s: _Scope(s, s in self.readable, rng.randrange(1, 2**52)) for s in SCOPES}
        self._refused: set[tuple[str, str]] = set()  # refusals reported already
        self._rng = rng
        self.incarnation = f"{rng.getrandbits(64):016x}"  # (module doc)
        self.evidence: dict[bytes, Update] = {}  # the other sides of forks, by signature
        self._forks: list[Fork] = []  # found since the last take_forks()
        self._rewritten: set[bytes] = set()  # own updates written again after a fork
        self.rejected = 0  # records refused since start

    @property
    def stream(self) -> str:
        """The origin this replica writes under."""
        return make_stream(self.device, self.incarnation)

    def take_forks(self) -> list[Fork]:
        """Forks found since the last call (for the driver to log once each)."""
        forks, self._forks = self._forks, []
        return forks

    def _new_incarnation(self) -> None:
        """Someone holds more of this stream than this replica wrote: write under a new one,
        and write again there what this replica wrote under the old one (a false claim on the
        old stream hides it from the peers that believed the claim)."""
        old_stream = self.stream
        old = self.incarnation
        while self.incarnation == old:
            self.incarnation = f"{self._rng.getrandbits(64):016x}"
        for s in self._scopes.values():
            for own in s.logs.get(old_stream, []):
                self._write_again(s, own)

    def _write_again(self, s: _Scope, update: Update) -> None:
        """Stage ``update``'s content again (under the current stream), once."""
        secret = self.keyring.secret(update.epoch_key)
        if update.signature in self._rewritten or secret is None or s.doc is None:
            return
        self._rewritten.add(update.signature)
        s.staged.append(self._open(update, secret))

    def observe(self, their: Mapping[str, Mapping[str, int]]) -> Changes:
        """A peer's vectors: if they hold more of this replica's stream than it does (a copy of
        this process wrote, or the peer took a false claim), a new incarnation, and what it
        wrote under the old one written again (the changes to store)."""
        mine = self.stream
        if any(v.get(mine, 0) > self._scopes[sc].have(mine) for sc, v in their.items()):
            self._new_incarnation()
            return self.commit_local()
        return Changes()

    # ---- reading -----------------------------------------------------------------------------

    def _entry(self, s: _Scope, collection: str, name: str, text: str) -> Entry:
        at = s.expiry[collection].get(name)
        try:
            expires_at = float(at) if isinstance(at, str) else None
        except ValueError:
            expires_at = None  # (our writes hold a number's text)
        return Entry(f"{collection}/{name}", text, s.name, expires_at)

    def get(self, key: str, now: float | None = None) -> Entry | None:
        """The entry at ``key`` as this device can see it (None: absent, unreadable here, or
        expired by ``now``, this device's wall clock; None shows expired entries too)."""
        collection, name = split_key(key)
        found = None
        for scope in self.readable:
            text = self._scopes[scope].maps[collection].get(name)
            if isinstance(text, str) and (found is None or rank(scope) > rank(found.scope)):
                found = self._entry(self._scopes[scope], collection, name, text)
        return None if found is None or found.expired(now) else found

    def items(self, prefix: str = "", now: float | None = None) -> list[Entry]:
        """Every readable entry whose key starts with ``prefix``, sorted by key (without those
        expired by ``now``, as ``get``)."""
        check_prefix(prefix)
        best: dict[str, Entry] = {}
        for scope in sorted(self.readable, key=rank):
            s = self._scopes[scope]
            for collection, ymap in s.maps.items():
                if not (collection + "/").startswith(prefix[: len(collection) + 1]):
                    continue
                for name, text in ymap.items():
                    key = f"{collection}/{name}"
                    if key.startswith(prefix) and isinstance(text, str):
                        best[key] = self._entry(s, collection, name, text)
        return [best[k] for k in sorted(best) if not best[k].expired(now)]

    def content(self, scope: str) -> dict[str, str]:
        """One scope's entries (key -> JSON text), whatever other scopes hold."""
        s = self._scopes[scope]
        return {
            f"{c}/{name}": text
            for c, ymap in s.maps.items()
            for name, text in ymap.items()
            if isinstance(text, str)
        }

    def vectors(self) -> Vectors:
        return {s: v for s in SCOPES if (v := self._scopes[s].vector())}

    def snapshots(self, scope: str) -> list[Snapshot]:
        return sorted(self._scopes[scope].snapshots.values(), key=lambda sn: sn.id)

    def log(self, scope: str, origin: str) -> list[Update]:
        return list(self._scopes[scope].logs.get(origin, ()))

    # ---- local writes ------------------------------------------------------------------------

    def put(
        self,
        key: str,
        text: str,
        scope: str | None = None,
        *,
        ttl: float | None = None,
        now: float | None = None,
    ) -> str:
        """Stage ``key = text`` (a value's JSON text); the scope it went to.

        Without ``scope`` an existing entry keeps its scope (a new one gets ``personal``); with
        one, the entry moves there (and leaves the other scopes this device can read). An entry
        of a collection that expires (``TTL_DEFAULT_S``), or given a ``ttl``, expires ``ttl``
        seconds after ``now`` (this device's wall clock, needed then); any other has no expiry.
        """
        collection, name = split_key(key)
        check_text(text)
        if scope is not None:
            check_scope(scope)
        if ttl is None:
            ttl = TTL_DEFAULT_S.get(collection)
        expires_at = None
        if ttl is not None:
            if now is None:
                raise ValueError("an entry that expires needs the time now")
            expires_at = now + check_ttl(ttl)
        if not self.readable:
            raise ScopeNotAllowed("this device is a blind relay: it holds no vault it may write to")
        if self.device in self.directory.revoked:
            raise ScopeNotAllowed("this device was revoked from the swarm: it may not write")
        here = [s for s in self.readable if name in self._scopes[s].maps[collection]]
        target = scope or (max(here, key=rank) if here else DEFAULT_SCOPE)
        if target not in self.readable:
            raise ScopeNotAllowed(
                f"this device may not hold {target} entries (its scopes: "
                f"{', '.join(sorted(self.readable, key=rank))}; see [device] scopes in swarm.toml)"
            )

        def write(s: _Scope) -> None:
            s.maps[collection][name] = text
            if expires_at is not None:
                s.expiry[collection][name] = repr(expires_at)
            elif name in s.expiry[collection]:
                del s.expiry[collection][name]

        self._stage(target, write)
        for other in here:
            if other != target:
                self._stage(other, lambda s: _remove(s, collection, name))
        return target

    def delete(self, key: str) -> list[str]:
        """Stage the removal of ``key`` from every scope this device can read; those scopes."""
        collection, name = split_key(key)
        here = sorted(
            (s for s in self.readable if name in self._scopes[s].maps[collection]), key=rank
        )
        for scope in here:
            self._stage(scope, lambda s: _remove(s, collection, name))
        return here

    def _stage(self, scope: str, change: Callable[[_Scope], object]) -> None:
        s = self._scopes[scope]
        assert s.doc is not None
        before = s.doc.get_state()
        with s.doc.transaction():
            change(s)
        s.staged.append(s.doc.get_update(before))

    @property
    def staged(self) -> bool:
        return any(s.staged for s in self._scopes.values())

    def commit_local(self) -> Changes:
        """Every staged change as signed, encrypted updates (one per scope and group)."""
        changes = Changes()
        for s in self._scopes.values():
            if not s.staged:
                continue
            epoch = self._write_epoch(s.name, changes)
            recipient = self.keyring.recipient(epoch.key)
            assert recipient is not None
            for group in _groups(s.staged, MAX_GROUP_PLAIN):
                plain = group[0] if len(group) == 1 else pycrdt.merge_updates(*group)
                unsigned = Update(
                    self.swarm,
                    s.name,
                    self.stream,
                    s.have(self.stream) + 1,
                    epoch.number,
                    epoch.creator,
                    pyrage.encrypt(plain, [recipient]),
                    bytes(64),
                )
                update = dataclasses.replace(
                    unsigned, signature=sign(self._signing_key, unsigned.payload())
                )
                s.logs.setdefault(self.stream, []).append(update)
                changes.added.append(update)
            s.staged.clear()
        return changes

    def _write_epoch(self, scope: str, changes: Changes) -> Epoch:
        revoked = self.directory.revoked
        epoch = self.keyring.current(scope, revoked)
        if epoch is None:
            made = self.keyring.create(
                scope, self.directory.readers(scope), revoked, creator=self.stream
            )
            changes.added.extend(made)
            epoch = self.keyring.current(scope, revoked)
            assert epoch is not None
        return epoch

    def rotate(self, scopes: Iterable[str]) -> Changes:
        """Start a new epoch now for each of ``scopes`` this device may read, unless its current
        one is held only by devices that may still read the scope: a revocation, or a grant that
        takes the scope away, starts exactly one here."""
        changes = Changes()
        for scope in sorted(set(scopes) & self.readable, key=rank):
            current = self.keyring.current(scope, self.directory.revoked)
            readers = set(self.directory.readers(scope)) | {self.device}
            if current is None or self.keyring.holders(current.key) - readers:
                revoked = self.directory.revoked
                changes.added.extend(
                    self.keyring.create(
                        scope, self.directory.readers(scope), revoked, creator=self.stream
                    )
                )
        return changes

    # ---- records from peers ------------------------------------------------------------------

    def receive(self, records: Sequence[Record]) -> tuple[Changes, list[Rejection]]:
        """Take what checks out of ``records`` (see the module doc); the rest with reasons."""
        changes, rejections = Changes(), []
        for record in sorted(records, key=_arrival_order):
            try:
                self._take(record, changes, trusted=False)
            except RejectedRecord as exc:
                self.rejected += 1
                what = (_describe(record), str(exc))
                rejections.append(Rejection(*what, again=what in self._refused))
                if len(self._refused) >= 65536:
                    self._refused.clear()
                self._refused.add(what)
        if any(s.staged for s in self._scopes.values()):
            changes.extend(self.commit_local())  # (own updates written again after a fork)
        return changes, rejections

    def _take(self, record: Record, changes: Changes, *, trusted: bool) -> None:
        if record.swarm != self.swarm:
            raise RejectedRecord("of another swarm")
        if isinstance(record, Update):
            self._take_update(record, changes, trusted)
        elif isinstance(record, Snapshot):
            self._take_snapshot(record, changes, trusted)
        else:
            self._take_key(record, changes, trusted)

    def _check_signer(self, record: Record, trusted: bool) -> None:
        if trusted:
            return
        if not self.directory.admits(record.signer):
            raise RejectedRecord(f"from an unknown or revoked device {short(record.signer)}")

    def _check_signature(self, record: Record, trusted: bool) -> None:
        if not trusted and not self._verifier.check(record):
            raise RejectedRecord("bad signature")

    def _check_epoch(self, record: Update | Snapshot, trusted: bool) -> None:
        if record.epoch_key not in self.keyring.epochs:
            raise RejectedRecord("unknown epoch")
        if not trusted and record.signer not in self.keyring.holders(record.epoch_key):
            raise RejectedRecord(f"{short(record.signer)} does not hold the epoch it wrote with")

    def _take_key(self, record: KeyRecord, changes: Changes, trusted: bool) -> None:
        if isinstance(record, Epoch):
            if record.key in self.keyring.epochs:
                return
        elif record.id in self.keyring.seals:
            return
        self._check_signer(record, trusted)
        if isinstance(record, Seal) and not trusted:
            self._check_seal(record)
        self._check_signature(record, trusted)
        unlocked = self.keyring.add(record)
        changes.added.append(record)
        if unlocked is not None:
            self._unlocked(unlocked)

    def _check_seal(self, seal: Seal) -> None:
        """A seal counts only if the epoch's creator made it, for a member."""
        if seal.device in self.directory.revoked:
            raise RejectedRecord(f"sealed to a revoked device {short(seal.device)}")
        if not self.directory.admits(seal.device):
            raise RejectedRecord(f"sealed to {short(seal.device)}, not a member")
        creator = stream_device(seal.creator)
        if seal.sealer != creator:
            raise RejectedRecord(
                f"sealed by {short(seal.sealer)}, not by the epoch's creator {short(creator)}"
            )

    def _take_update(self, u: Update, changes: Changes, trusted: bool) -> None:
        s = self._scopes[u.scope]
        have = s.have(u.origin)
        if u.seq <= have:
            held = s.held(u.origin, u.seq)
            if held is None or held == u or u.signature in self.evidence:
                return  # a duplicate (or folded into a snapshot: nothing to compare with)
            self._take_fork(s, held, u, changes, trusted)
            return
        self._check_signer(u, trusted)
        if u.seq != have + 1:
            raise RejectedRecord(f"sequence gap: have {have}, got {u.seq}")
        self._check_epoch(u, trusted)
        self._check_signature(u, trusted)
        self._apply_or_hold(s, u)
        s.logs.setdefault(u.origin, []).append(u)
        if not trusted:
            changes.added.append(u)
            if u.origin == self.stream:
                self._new_incarnation()  # a peer holds more of our stream than we did

    def _take_fork(
        self, s: _Scope, held: Update, u: Update, changes: Changes, trusted: bool
    ) -> None:
        """``u`` claims the place of ``held``: keep it as evidence, and lose neither."""
        self._check_signer(u, trusted)
        self._check_epoch(u, trusted)
        self._check_signature(u, trusted)
        self._apply_or_hold(s, u)
        self.evidence[u.signature] = u
        self._forks.append(Fork(s.name, u.origin, u.seq))
        if trusted:
            return
        changes.evidence.append(u)
        if u.origin != self.stream:
            return
        # our own stream forked (a copy of this process wrote too): write both sides again, under
        # a new stream, so that peers that hold either side get the other too
        self._write_again(s, u)
        self._new_incarnation()

    def _take_snapshot(self, sn: Snapshot, changes: Changes, trusted: bool) -> None:
        s = self._scopes[sn.scope]
        if sn.id in s.snapshots:
            return
        if not trusted and all(s.floor.get(o, 0) >= seq for o, seq in sn.covers):
            return  # it brings nothing, and lets this device drop nothing
        self._check_signer(sn, trusted)
        self._check_epoch(sn, trusted)
        self._check_signature(sn, trusted)
        claimed, wrote = sn.vector.get(self.stream, 0), s.have(self.stream)
        if not trusted and claimed > wrote:
            self._new_incarnation()  # peers that believe it would hide what we write next
            raise RejectedRecord(
                f"it claims {claimed} updates of this device's own log, which holds {wrote}"
            )
        covered = {
            origin: log[: min(seq - s.floor.get(origin, 0), len(log))]
            for origin, seq in sn.covers
            if (log := s.logs.get(origin)) and seq > s.floor.get(origin, 0)
        }
        # a snapshot that claims all this device holds of the scope must hold all its document
        # (when that document is exactly what the vector says: nothing staged, kept or forked)
        whole = (
            not trusted
            and s.doc is not None
            and bool(s.vector())
            and _dominates(sn.vector, s.vector())
            and not (s.staged or s.kept or any(e.scope == s.name for e in self.evidence.values()))
        )
        held = [u for us in covered.values() for u in us]
        proven = trusted or self._contains(s, sn, held, whole=whole)
        self._apply_or_hold(s, sn)
        s.snapshots[sn.id] = sn
        if not trusted:
            changes.added.append(sn)
        for origin, seq in sn.covers:
            floor = s.floor.get(origin, 0)
            if seq <= floor:
                continue
            gone = covered.get(origin, [])
            if gone:
                log = s.logs[origin]
                del log[: len(gone)]
                if proven:
                    for old in gone:
                        self._forget_unapplied(s, old)
                    changes.dropped_updates.append((s.name, origin, floor + 1, floor + len(gone)))
                else:
                    for old in gone:  # it may not hold them: keep them (stored, still applied)
                        s.kept[old.origin, old.seq, old.signature] = old
            s.floor[origin] = seq
        for other in list(s.snapshots.values()):
            if other.id != sn.id and _dominates(sn.vector, other.vector):
                del s.snapshots[other.id]
                self._forget_unapplied(s, other)
                changes.dropped_snapshots.append(other.id)

    def _contains(
        self, s: _Scope, sn: Snapshot, updates: list[Update], *, whole: bool = False
    ) -> bool:
        """Whether this device can prove ``sn`` holds every one of ``updates`` (it reads them
        all, and applying them to the snapshot's document changes nothing), and with ``whole``
        its whole document too. ``RejectedRecord`` when it proves the snapshot lacks one: a
        snapshot that would erase them."""
        if not updates and not whole:
            return True
        if s.doc is None:
            return False
        records: list[Update | Snapshot] = [sn, *updates]
        plain = []
        for record in records:
            secret = self.keyring.secret(record.epoch_key)
            if secret is None:
                return False
            plain.append(self._open(record, secret))
        if whole:
            plain.append(s.doc.get_update())
        scratch: pycrdt.Doc[Any] = pycrdt.Doc()
        try:
            scratch.apply_update(plain[0])
            before = scratch.get_update()
            for _ in range(2):  # twice: Yrs may take content kept aside only then (_integrate)
                for data in plain[1:]:
                    scratch.apply_update(data)
        except ValueError:
            return False
        # content the snapshot holds changes nothing; content that builds on items the snapshot
        # lacks changes nothing visible either, but stays pending: both say it lacks them
        if scratch.get_update() != before or not all(
            _reached(scratch, self._extent(data)) for data in plain[1:]
        ):
            raise RejectedRecord(
                "it lacks updates it claims to cover (it would erase them): refused"
            )
        return True

    @staticmethod
    def _extent(plain: bytes) -> dict[int, int]:
        """What a document that holds all of ``plain`` reaches (``_ydoc.check_update``)."""
        try:
            return check_update(
                plain, roots=ROOTS, max_name=MAX_NAME_BYTES, max_value=MAX_VALUE_BYTES
            )
        except BadUpdate as exc:
            raise RejectedRecord(f"its content is not a vault update: {exc}") from None

    def _apply_or_hold(self, s: _Scope, record: Update | Snapshot) -> None:
        """Decrypt, check and apply ``record`` if this device can; else keep it for later."""
        if s.doc is None:
            return
        secret = self.keyring.secret(record.epoch_key)
        if secret is None:
            s.unapplied.setdefault(record.epoch_key, []).append(record)
            return
        self._apply(s, self._open(record, secret))

    def _open(self, record: Update | Snapshot, secret: pyrage.x25519.Identity) -> bytes:
        try:
            plain: bytes = pyrage.decrypt(record.ciphertext, [secret])
        except pyrage.DecryptError:
            raise RejectedRecord("does not decrypt with its epoch's key") from None
        return plain

    def _apply(self, s: _Scope, plain: bytes) -> None:
        """Check decrypted content (``_ydoc``) and apply it; note what the document must then
        reach for nothing of it to be pending."""
        assert s.doc is not None
        extent = self._extent(plain)
        before = s.doc.get_state()
        try:
            s.doc.apply_update(plain)
        except ValueError as exc:
            raise RejectedRecord(f"not a document update ({exc})") from None
        for client, clock in extent.items():
            s.required[client] = max(s.required.get(client, 0), clock)
        if not _reached(s.doc, extent):
            s.waiting.append((plain, extent))
        if s.waiting and s.doc.get_state() != before:
            _integrate(s)

    def _forget_unapplied(self, s: _Scope, record: Update | Snapshot) -> None:
        held = s.unapplied.get(record.epoch_key)
        if held and record in held:
            held.remove(record)

    def _unlocked(self, key: EpochKey) -> None:
        """A seal gave this device an epoch's secret: apply what waited for it."""
        s = self._scopes[key[0]]
        secret = self.keyring.secret(key)
        assert secret is not None
        for record in s.unapplied.pop(key, []):
            try:
                self._apply(s, self._open(record, secret))
            except RejectedRecord:
                self.rejected += 1  # kept (its log position is taken) but never applied

    # ---- keys and the directory --------------------------------------------------------------

    def set_directory(self, directory: Directory) -> None:
        self.directory = directory

    def reseal(self) -> Changes:
        """Seal the epochs this device created (in any of its streams) to devices that may read
        their scope and lack a seal. Only an epoch's creator seals it: a seal from anyone else
        is refused (a holder could otherwise "seal" garbage to a device, and every peer would
        count that device as holding a key it never got). History under an epoch whose creator
        is gone reaches newcomers through snapshots, made under a current epoch."""
        changes = Changes()
        revoked = self.directory.revoked
        for key, epoch in sorted(self.keyring.epochs.items()):
            if stream_device(epoch.creator) != self.device or not self.keyring.holds(key):
                continue
            holders = self.keyring.holders(key)
            due = {
                device: age
                for device, age in self.directory.readers(key[0]).items()
                if device not in holders and device not in epoch.excluded
            }
            changes.added.extend(self.keyring.reseal(key, due, revoked))
        return changes

    # ---- compaction --------------------------------------------------------------------------

    def compactable(self, scope: str) -> int:
        """How many updates ``compact(scope)`` would fold (0: it cannot, or there is nothing)."""
        s = self._scopes[scope]
        if s.doc is None or s.staged or s.count() < s.retry_at:
            return 0
        if any(s.unapplied.values()) or s.pending():
            return 0
        return s.count()

    def log_bytes(self, scope: str) -> tuple[int, int]:
        """Bytes of the scope's updates, and of its snapshots (ciphertext)."""
        s = self._scopes[scope]
        updates = sum(len(u.ciphertext) for log in s.logs.values() for u in log)
        return updates, sum(len(sn.ciphertext) for sn in s.snapshots.values())

    def compact(self, scope: str) -> Changes:
        """Fold the scope's whole log into one snapshot (``compactable`` says whether it can)."""
        changes = Changes()
        s = self._scopes[scope]
        if not self.compactable(scope):
            return changes
        assert s.doc is not None
        epoch = self._write_epoch(scope, changes)
        recipient = self.keyring.recipient(epoch.key)
        assert recipient is not None
        ciphertext = pyrage.encrypt(s.doc.get_update(), [recipient])
        if len(ciphertext) > MAX_SNAPSHOT_BYTES:
            s.retry_at = 2 * s.count()  # too big for one message: keep the log, try much later
            return changes
        covers = tuple(sorted(s.vector().items()))
        unsigned = Snapshot(
            self.swarm,
            scope,
            self.device,
            epoch.number,
            epoch.creator,
            covers,
            ciphertext,
            bytes(64),
        )
        sn = dataclasses.replace(unsigned, signature=sign(self._signing_key, unsigned.payload()))
        changes.dropped_snapshots.extend(s.snapshots)
        changes.dropped_updates.extend(
            (scope, o, s.floor.get(o, 0) + 1, n) for o, n in covers if s.logs.get(o)
        )
        s.snapshots = {sn.id: sn}
        s.logs = {}
        s.floor = dict(covers)
        changes.added.append(sn)
        return changes

    # ---- anti-entropy ------------------------------------------------------------------------

    def missing(
        self, their: Mapping[str, Mapping[str, int]], budget: int
    ) -> tuple[list[Record], bool]:
        """What a peer with vectors ``their`` lacks, in an order it can take: snapshots it is
        behind, then each origin's updates in sequence. At most about ``budget`` bytes (at least
        one record); True if more remain."""
        out: list[Record] = []
        used = 0
        for scope in SCOPES:
            s = self._scopes[scope]
            theirs = dict(their.get(scope, {}))
            if any(theirs.get(o, 0) < f for o, f in s.floor.items()):
                for sn in self.snapshots(scope):
                    if any(theirs.get(o, 0) < seq for o, seq in sn.covers):
                        if out and used + sn.size() > budget:
                            return out, True
                        out.append(sn)
                        used += sn.size()
                        for o, seq in sn.covers:
                            theirs[o] = max(theirs.get(o, 0), seq)
            for origin in sorted(s.logs):
                log = s.logs[origin]
                start = max(theirs.get(origin, 0) - s.floor.get(origin, 0), 0)
                for u in log[start:]:
                    if out and used + u.size() > budget:
                        return out, True
                    out.append(u)
                    used += u.size()
        return out, False

    def _fork_sides(self) -> list[Update]:
        """Both sides of every fork held: the evidence, and the update its log holds there."""
        sides = {}
        for e in self.evidence.values():
            sides[e.signature] = e
            held = self._scopes[e.scope].held(e.origin, e.seq)
            if held is not None:
                sides[held.signature] = held
        return list(sides.values())

    def evidence_ids(self) -> list[bytes]:
        """The ids (``evidence_id``) of both sides of the forks held, sorted: sync sends them so
        that a peer can send the sides this device lacks (vectors cannot show them)."""
        return sorted(evidence_id(u) for u in self._fork_sides())

    def evidence_for(self, their: Mapping[str, Mapping[str, int]], ids: set[bytes]) -> list[Update]:
        """The sides of forks a peer with vectors ``their`` and evidence ``ids`` may lack and can
        take (it holds the log up to the forked sequence: it sees the fork when it gets the side
        its log does not hold, and ignores the other)."""
        return sorted(
            (
                u
                for u in self._fork_sides()
                if evidence_id(u) not in ids and their.get(u.scope, {}).get(u.origin, 0) >= u.seq
            ),
            key=lambda u: (u.scope, u.origin, u.seq, u.signature),
        )

    # ---- restoring ---------------------------------------------------------------------------

    def restore(
        self,
        keys: Iterable[KeyRecord],
        snapshots: Iterable[Snapshot],
        updates: Iterable[Update],
        evidence: Iterable[Update] = (),
    ) -> list[Rejection]:
        """Load what storage holds (trusted: no signature or roster checks, but decrypted and
        checked as ever). Call once, on a new replica."""
        problems: list[Rejection] = []
        scratch = Changes()
        ordered: list[Record] = [*keys, *snapshots]
        ordered.sort(key=_arrival_order)
        in_order: list[Update] = sorted(updates, key=lambda u: (u.scope, u.origin, u.seq))
        ordered.extend(in_order)
        others: list[Update] = sorted(evidence, key=lambda u: (u.scope, u.origin, u.seq))
        ordered.extend(others)  # after the logs: a log keeps the update it held first
        for record in ordered:
            try:
                if isinstance(record, Update):
                    self._restore_update(record)
                else:
                    self._take(record, scratch, trusted=True)
            except RejectedRecord as exc:
                problems.append(Rejection(_describe(record), str(exc)))
        return problems

    def _restore_update(self, u: Update) -> None:
        s = self._scopes[u.scope]
        have = s.have(u.origin)
        if u.seq <= have:
            # kept beside a snapshot that could not be proved to hold it, or the other side of
            # a fork: applied, never dropped
            if s.held(u.origin, u.seq) is None:
                s.kept[u.origin, u.seq, u.signature] = u
            else:
                self.evidence[u.signature] = u
            try:
                self._apply_or_hold(s, u)
            except RejectedRecord:
                self.rejected += 1
            return
        if u.seq != have + 1:
            raise RejectedRecord(f"stored with a sequence gap: have {have}, got {u.seq}")
        s.logs.setdefault(u.origin, []).append(u)
        try:
            self._apply_or_hold(s, u)
        except RejectedRecord:
            self.rejected += 1  # stored, so its place in the log stays taken

    # ---- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        scopes: dict[str, Any] = {}
        for name in SCOPES:
            s = self._scopes[name]
            current = self.keyring.current(name, self.directory.revoked)
            entry: dict[str, Any] = {
                "readable": s.doc is not None,
                "entries": (
                    {c: sum(isinstance(v, str) for v in m.values()) for c, m in s.maps.items()}
                    if s.doc is not None
                    else None
                ),
                "sequences": s.vector(),
                "updates": s.count(),
                "snapshots": len(s.snapshots),
                "unapplied": sum(len(v) for v in s.unapplied.values()),
                "kept": len(s.kept),
                "epoch": None if current is None else [current.number, current.creator],
                "epochs": len(self.keyring.epochs_of(name)),
            }
            scopes[name] = entry
        return {"scopes": scopes, "rejected": self.rejected, "forks": len(self.evidence)}


def evidence_id(update: Update) -> bytes:
    """16 bytes that name one side of a fork (its signature covers all it says)."""
    return hashlib.sha256(b"swarm-evidence\0" + update.signature).digest()[:16]


def _reached(doc: pycrdt.Doc[Any], extent: Mapping[int, int]) -> bool:
    state = decode_state_vector(doc.get_state())
    return all(state.get(client, 0) >= clock for client, clock in extent.items())


def _integrate(s: _Scope) -> None:
    """Apply the waiting content again until the document stops growing.

    Yrs (pycrdt 0.14) keeps content whose items are missing aside, but does not always take it
    back when they arrive: after some arrival orders the document stays short of what it was
    given, for good (an update held for a key that came late, then applied after the updates
    that build on it: a wiped store's first write under its new epoch did it). Applying the
    same content again is a no-op for what is in and integrates what now can be."""
    assert s.doc is not None
    while s.waiting:
        before = s.doc.get_state()
        for plain, _ in s.waiting:
            s.doc.apply_update(plain)
        s.waiting = [(p, e) for p, e in s.waiting if not _reached(s.doc, e)]
        if s.doc.get_state() == before:
            return


def _groups(updates: list[bytes], limit: int) -> list[list[bytes]]:
    groups: list[list[bytes]] = [[]]
    size = 0
    for u in updates:
        if groups[-1] and size + len(u) > limit:
            groups.append([])
            size = 0
        groups[-1].append(u)
        size += len(u)
    return groups


def _dominates(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    return all(a.get(o, 0) >= n for o, n in b.items())


def _arrival_order(record: Record) -> tuple[Any, ...]:
    """Epochs, seals, snapshots, then updates by scope, origin and sequence."""
    if isinstance(record, Epoch):
        return (0, record.key)
    if isinstance(record, Seal):
        return (1, record.epoch_key, record.device)
    if isinstance(record, Snapshot):
        return (2, record.scope, record.id)
    return (3, record.scope, record.origin, record.seq)


def _describe(record: Record) -> str:
    return record.describe()


__all__ = [
    "Access",
    "Changes",
    "Directory",
    "Entry",
    "Fork",
    "InvalidEntry",
    "Rejection",
    "Replica",
    "Vectors",
]


def _remove(s: _Scope, collection: str, name: str) -> None:
    s.maps[collection].pop(name)
    if name in s.expiry[collection]:
        del s.expiry[collection][name]
