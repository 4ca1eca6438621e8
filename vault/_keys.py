"""Keys and epochs: one age key per (scope, epoch), its secret sealed to each device allowed it.

The keyring is two grow-only sets, replicated whole by every device (relays too, so that they
can pass them on): ``Epoch`` records and ``Seal`` records (see ``_records``). A device holds an
epoch's secret when a seal addressed to it opens with its own age identity and the secret's
public half is the epoch's recipient.

Rules (the replica enforces the ones that need the roster):

- An epoch is ``(scope, number, creator)``; epochs made concurrently are all kept, and all of
  them stay readable. For a new write a device uses its *current* epoch: the greatest
  ``(number, creator)`` whose secret it holds, whose creator is not revoked, and that was made
  after every revocation this device knows (``revoked <= epoch.excluded``). When there is none
  the device makes one: number one past the greatest it knows, sealed to every device the
  directory says may read the scope (and to itself).
- So revoking a device starts a new epoch for every scope, sealed to the remaining devices:
  what is written afterwards is unreadable to the revoked device. What it already had stays
  with it: keys cannot be taken back from a device that copied them.
- A seal is never made for a device the epoch excludes or that is revoked; a seal for an
  excluded device is refused, and the replica refuses a seal not made by the epoch's creator or
  not for a member. The creator seals its epochs to devices that become eligible later
  (``reseal``), so a device that joins or widens its scopes can read history.

Secrets stay in memory: on disk and on the wire there are only seals. Nothing here logs.

Randomness: age draws its own (epoch keys, the ephemeral keys of every encryption) from the
operating system, the one exception to passing a ``random.Random`` in. Ciphertexts therefore
differ between two runs of one simulation seed; their sizes do not, so neither do message sizes
or timings.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import TypeVar

import pyrage
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._errors import RejectedRecord
from ._records import Epoch, EpochKey, KeyRecord, Seal, sign, stream_device


class Keyring:
    def __init__(
        self,
        *,
        swarm: str,
        device: str,
        age_identity: pyrage.x25519.Identity,
        signing_key: Ed25519PrivateKey,
    ) -> None:
        self.swarm = swarm
        self.device = device
        self._identity = age_identity
        self._signing_key = signing_key
        self.epochs: dict[EpochKey, Epoch] = {}
        self.seals: dict[bytes, Seal] = {}
        self._holders: dict[EpochKey, set[str]] = {}
        self._secrets: dict[EpochKey, pyrage.x25519.Identity] = {}
        self._recipients: dict[str, pyrage.x25519.Recipient | None] = {}
        self._digest: bytes | None = None

    # ---- queries -----------------------------------------------------------------------------

    def secret(self, key: EpochKey) -> pyrage.x25519.Identity | None:
        return self._secrets.get(key)

    def holds(self, key: EpochKey) -> bool:
        return key in self._secrets

    def holders(self, key: EpochKey) -> set[str]:
        """The devices an epoch was sealed to, as far as this device has heard, and its creator."""
        found = set(self._holders.get(key, ()))
        if key in self.epochs:
            found.add(stream_device(key[2]))
        return found

    def ids(self) -> set[bytes]:
        return set(self.seals) | {e.id for e in self.epochs.values()}

    def digest(self) -> bytes:
        """Equal on two devices exactly when they hold the same records."""
        if self._digest is None:
            h = hashlib.sha256(b"swarm-vault-keyring")
            for record_id in sorted(self.ids()):
                h.update(record_id)
            self._digest = h.digest()[:16]
        return self._digest

    def records(self, ids: Iterable[bytes] | None = None) -> list[KeyRecord]:
        """Epochs first, then seals (the order a receiver can take them in)."""
        wanted = None if ids is None else set(ids)
        epochs = [e for e in self.epochs.values() if wanted is None or e.id in wanted]
        seals = [s for i, s in self.seals.items() if wanted is None or i in wanted]
        epochs.sort(key=lambda e: e.key)
        seals.sort(key=lambda s: (s.epoch_key, s.device, s.id))
        return [*epochs, *seals]

    def current(self, scope: str, revoked: frozenset[str]) -> Epoch | None:
        usable = [
            e
            for key, e in self.epochs.items()
            if key[0] == scope
            and key in self._secrets
            and stream_device(e.creator) not in revoked
            and revoked <= set(e.excluded)
        ]
        return max(usable, key=lambda e: (e.number, e.creator), default=None)

    def epochs_of(self, scope: str) -> list[Epoch]:
        return sorted(
            (e for e in self.epochs.values() if e.scope == scope),
            key=lambda e: (e.number, e.creator),
        )

    def recipient(self, key: EpochKey) -> pyrage.x25519.Recipient | None:
        epoch = self.epochs.get(key)
        return None if epoch is None else self._parse_recipient(epoch.recipient)

    # ---- taking records ----------------------------------------------------------------------

    def add(self, record: KeyRecord) -> EpochKey | None:
        """Take a verified record; the epoch it unlocked for this device, if any.

        ``RejectedRecord`` for a seal whose epoch is unknown or excludes its device.
        """
        if isinstance(record, Epoch):
            if record.key not in self.epochs:
                self.epochs[record.key] = record
                self._digest = None
            return None
        epoch = self.epochs.get(record.epoch_key)
        if epoch is None:
            raise RejectedRecord(f"{record.describe()}: unknown epoch")
        if record.device in epoch.excluded:
            raise RejectedRecord(f"{record.describe()}: the epoch excludes that device")
        if record.id in self.seals:
            return None
        self.seals[record.id] = record
        self._holders.setdefault(record.epoch_key, set()).add(record.device)
        self._digest = None
        if record.device == self.device and record.epoch_key not in self._secrets:
            return record.epoch_key if self._open(record, epoch) else None
        return None

    def _open(self, seal: Seal, epoch: Epoch) -> bool:
        try:
            text = pyrage.decrypt(seal.sealed, [self._identity]).decode("ascii")
            secret = pyrage.x25519.Identity.from_str(text)
        except (pyrage.DecryptError, pyrage.IdentityError, UnicodeDecodeError, ValueError):
            return False
        if str(secret.to_public()) != epoch.recipient:
            return False
        self._secrets[epoch.key] = secret
        return True

    # ---- making records ----------------------------------------------------------------------

    def create(
        self, scope: str, recipients: Mapping[str, str], revoked: frozenset[str], *, creator: str
    ) -> list[KeyRecord]:
        """A new epoch for ``scope`` by ``creator`` (this device's stream) sealed to
        ``recipients`` (device -> age recipient) and to this device; the records made (already
        taken)."""
        number = max((e.number for e in self.epochs_of(scope)), default=0) + 1
        secret = pyrage.x25519.Identity.generate()
        unsigned = Epoch(
            self.swarm,
            scope,
            number,
            creator,
            str(secret.to_public()),
            tuple(sorted(revoked)),
            bytes(64),
        )
        epoch = _signed(unsigned, self._signing_key)
        self.add(epoch)
        self._secrets[epoch.key] = secret
        made: list[KeyRecord] = [epoch]
        targets = dict(recipients)
        targets.setdefault(self.device, str(self._identity.to_public()))
        for device in sorted(targets):
            if device in revoked:
                continue
            seal = self._seal(epoch, device, targets[device], secret)
            if seal is not None:
                made.append(seal)
        return made

    def reseal(
        self, key: EpochKey, recipients: Mapping[str, str], revoked: frozenset[str]
    ) -> list[Seal]:
        """Seals of a held epoch for those of ``recipients`` that have none yet."""
        epoch, secret = self.epochs.get(key), self._secrets.get(key)
        if epoch is None or secret is None:
            return []
        have = self._holders.get(key, set())
        made = []
        for device in sorted(recipients):
            if device in have or device in revoked or device in epoch.excluded:
                continue
            seal = self._seal(epoch, device, recipients[device], secret)
            if seal is not None:
                made.append(seal)
        return made

    def _seal(
        self, epoch: Epoch, device: str, age: str, secret: pyrage.x25519.Identity
    ) -> Seal | None:
        recipient = self._parse_recipient(age)
        if recipient is None:
            return None
        sealed = pyrage.encrypt(str(secret).encode("ascii"), [recipient])
        unsigned = Seal(
            self.swarm,
            epoch.scope,
            epoch.number,
            epoch.creator,
            device,
            sealed,
            self.device,
            bytes(64),
        )
        seal = _signed(unsigned, self._signing_key)
        self.add(seal)
        return seal

    def _parse_recipient(self, age: str) -> pyrage.x25519.Recipient | None:
        if age not in self._recipients:
            if len(self._recipients) >= 4096:
                self._recipients.clear()
            try:
                self._recipients[age] = pyrage.x25519.Recipient.from_str(age)
            except (pyrage.RecipientError, ValueError):
                self._recipients[age] = None
        return self._recipients[age]


_R = TypeVar("_R", Epoch, Seal)


def _signed(record: _R, key: Ed25519PrivateKey) -> _R:
    return dataclasses.replace(record, signature=sign(key, record.payload()))
