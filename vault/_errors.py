"""The vault's errors: branches of the one ``SwarmError`` tree (see ``homeswarm/errors.py``).

Whose fault each one is: ``InvalidEntry`` and ``ScopeNotAllowed`` are the caller's (bad input, a
``LocalError``); ``RejectedRecord`` is a peer's (a record that does not verify, a ``RemoteError``,
which is logged and skipped: it never closes the connection); ``EntryNotFound``, ``VaultLocked``
and ``StorageFailure`` are about this device's vault.
"""

from __future__ import annotations

from homeswarm.errors import InvalidArgument, LocalError, RemoteError, SwarmError


class VaultError(SwarmError):
    """A vault operation could not be done."""


class InvalidEntry(InvalidArgument):
    """A key, value, scope or prefix that the vault cannot take."""


class ScopeNotAllowed(LocalError):
    """This device may not hold (or is a blind relay for) the scope asked for."""


class EntryNotFound(VaultError):
    """No such key, or only in a scope this device may not read."""


class VaultLocked(LocalError):
    """Another process has this vault open."""


class StorageFailure(VaultError):
    """The vault's storage could not be read or written; nothing was acknowledged."""


class RejectedRecord(RemoteError):
    """A record from a peer was refused (bad signature, unknown device, gap, ...); its reason."""
