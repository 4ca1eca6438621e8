"""This device's vault as both ways of opening it see it: the directory, the replica, the store.

``open_local`` opens the vault of a home directly, when no peer runs (the CLI); the vault service
(``_vault_service``) builds its node from the same parts. What a device may read is its settings'
scopes (none for a blind relay), narrowed by its own certificate; the directory is every admitted
device's age recipient and what its certificate lets it read, narrowed by what it says it holds.
Nothing here imports trio: ``swarm vault get`` with no peer running loads only the vault's replica
and store.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from homeswarm.vault import Access, Directory, LocalVault, Replica, SqliteStore

from ._certs import Roster
from ._files import VAULT_DIR
from ._home import Identity


def readable_scopes(identity: Identity, roster: Roster | None = None) -> tuple[str, ...]:
    """The scopes this device may read: its settings' scopes, or none for a blind relay; with
    ``roster``, only those its own certificate allows too."""
    device = identity.settings.device
    wanted = () if device.relay_only else device.effective_scopes()
    if roster is None:
        return wanted
    cert = roster.certificate(identity.device_id)
    allowed = cert.readable() if cert is not None else frozenset()
    return tuple(s for s in wanted if s in allowed)


Excess = Callable[[str, frozenset[str], frozenset[str]], None]


def directory_from(
    roster: Roster,
    scopes_of: Callable[[str], frozenset[str] | None],
    on_excess: Excess | None = None,
) -> Directory:
    """Every admitted device with its age recipient and what it may read: what its certificate
    allows, narrowed by what it says it holds (``scopes_of``; None: not heard yet, nothing is
    sealed to it). A claim beyond the certificate goes to ``on_excess(device, claimed,
    allowed)`` and is ignored. As revoked, every device the roster knows but no longer admits:
    no new epoch is sealed to them, nor used while it may be known to them."""
    devices = {}
    conflicted = roster.conflicted()
    for cert in roster.members():
        claimed = scopes_of(cert.device)
        allowed = frozenset() if cert.device in conflicted else cert.readable()
        doubtful = cert.device in conflicted  # not its claim's fault: nothing is sealed to it
        if claimed is not None and not claimed <= allowed and on_excess and not doubtful:
            on_excess(cert.device, claimed, allowed)
        readable = None if claimed is None else claimed & allowed
        devices[cert.device] = Access(cert.age_recipient, readable)
    known = {chain[0][2] for chain in roster.to_wire()["chains"]}
    cut_off = {device for device in known if not roster.admits(device)}
    return Directory(devices, roster.revoked() | cut_off)


def new_replica(
    identity: Identity, directory: Directory, rng: random.Random, roster: Roster | None = None
) -> Replica:
    return Replica(
        swarm=identity.swarm_id,
        device=identity.device_id,
        signing_key=identity.signing_key,
        age_identity=identity.age_identity,
        readable=readable_scopes(identity, roster),
        directory=directory,
        rng=rng,
    )


def open_store(identity: Identity) -> SqliteStore:
    return SqliteStore(
        identity.home / VAULT_DIR, swarm=identity.swarm_id, device=identity.device_id
    )


def open_local(identity: Identity, roster: Roster) -> LocalVault:
    """The vault of this home, opened directly (no peer runs): ``VaultLocked`` if in use."""
    own = frozenset(readable_scopes(identity, roster))
    directory = directory_from(roster, lambda d: own if d == identity.device_id else None)
    rng = random.SystemRandom()
    store = open_store(identity)
    try:
        return LocalVault(lambda: new_replica(identity, directory, rng, roster), store)
    except BaseException:
        store.close()
        raise
