"""This home's vault read the quick way when no peer runs: the view the last direct open left.

``read_view`` gives every entry this device may read, as the store holds it now, or None when no
view holds (see ``vault._view``: any write, a restored backup, a changed roster or settings, a
damaged or forged file); ``save_view`` leaves a new one after the store was opened directly
(``open_local``), and a peer that starts drops it (``drop_view``). The CLI's ``vault get`` and
``vault ls`` try the view first, so with no peer running they load neither pycrdt, nor the
replica, nor the device's keys and settings: only the age identity, which both decrypts the view
and keys its authentication. The view is bound to the roster and the settings as files: a change
to either ends it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyrage

from homeswarm.vault import View, open_view, seal_view, store_stamp

from ._files import AGE_KEY, CONFIG_NAME, ROSTER, VAULT_DIR, VIEW_FILE

if TYPE_CHECKING:
    from homeswarm.vault import LocalVault

    from ._home import Identity

log = logging.getLogger("swarm.vault")


def read_view(home: Path) -> View | None:
    """Every entry this device reads, if the view in ``home`` holds for the store now."""
    try:
        blob = (home / VIEW_FILE).read_bytes()
        secret = (home / AGE_KEY).read_text().strip()
        identity = pyrage.x25519.Identity.from_str(secret)
        context = _context(home)
    except (OSError, ValueError, pyrage.IdentityError):
        return None  # the slow way says what is wrong, if anything is
    return open_view(
        blob,
        stamp=store_stamp(home / VAULT_DIR),
        context=context,
        identity=identity,
        mac_key=_mac_key(secret),
    )


def save_view(identity: Identity, local: LocalVault) -> None:
    """Leave a view of ``local`` (open: its lock held, so nothing writes meanwhile). A view that
    cannot be written is only a slower next read: logged, never raised."""
    from ._home import write_atomically

    home = identity.home
    stamp = store_stamp(home / VAULT_DIR)
    if stamp is None:
        return
    try:
        blob = seal_view(
            local.items(),
            stamp=stamp,
            context=_context(home),
            recipient=identity.age_recipient,
            mac_key=_mac_key(str(identity.age_identity)),
        )
        write_atomically(home / VIEW_FILE, blob)
    except OSError as exc:
        log.warning("cannot write the vault's view (reads stay slower): %s", exc.strerror)


def drop_view(home: Path) -> None:
    """Remove the view (a peer that starts writes: a view would only be stale)."""
    with contextlib.suppress(FileNotFoundError):
        (home / VIEW_FILE).unlink()


def not_found(key: str) -> str:
    return f"no entry {key!r} (or only in a scope this device may not read)"


def entry_json(entry: Any) -> dict[str, Any]:
    """An entry for ``vault get/ls`` (``expires_at``: wall-clock seconds, or None: never)."""
    return {
        "key": entry.key,
        "scope": entry.scope,
        "value": entry.text,
        "expires_at": entry.expires_at,
    }


def _context(home: Path) -> bytes:
    """What else narrows what this device reads, as files: the roster and the settings."""
    digest = hashlib.blake2b(digest_size=32, person=b"swarm-view-ctx")
    for name in (ROSTER, CONFIG_NAME):
        data = (home / name).read_bytes()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.digest()


def _mac_key(age_secret: str) -> bytes:
    return hashlib.blake2b(age_secret.encode(), digest_size=32, person=b"swarm-view-key").digest()
