"""A device's home directory: its keys, its settings, and how ``swarm init`` creates them.

Files (keys mode 0600, the directory 0700)::

    device.key   this device's Ed25519 key, PKCS#8 PEM: its libp2p peer id
    age.key      this device's age X25519 identity (AGE-SECRET-KEY-1...)
    root.key     the swarm root's Ed25519 key (only with `swarm init --keep-root-key`)
    swarm.toml   settings; [device] and [swarm] are written at init or join
    roster.bin   the members this device knows: certificate chains and revocations (msgpack)
    audit.jsonl  refused actions beyond a device's rights (mode 0600; see ``_audit``)

``swarm init`` prints a recovery code: the root key's secret, short enough to write down
(``_trust``), and by default keeps no other copy. Whoever holds the code (or a kept ``root.key``)
is the swarm's root: keep the code off your devices.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyrage
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from homeswarm.errors import InvalidArgument, InvalidConfig, LocalError
from homeswarm.ids import peer_id_from_public_key
from homeswarm.vocabulary import ROLES

from ._config import ROLE_SCOPES, Settings, _device_name, load_settings
from ._files import AGE_KEY, CONFIG_NAME, DEVICE_KEY, ROOT_KEY, ROSTER

if TYPE_CHECKING:
    from ._certs import Roster


class AlreadyInitialised(LocalError):
    """The home already holds an identity."""


class NotInitialised(LocalError):
    """The home holds no identity yet."""


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def swarm_id_of(root_public: bytes) -> str:
    """A short, stable name for the swarm: a hash of its root public key."""
    digest = hashlib.sha256(b"swarm-id\0" + root_public).digest()[:15]
    return "sw" + base64.b32encode(digest).decode().lower()


@dataclass(frozen=True)
class Identity:
    """What a device knows about itself: its keys and its settings."""

    home: Path
    signing_key: Ed25519PrivateKey
    age_identity: pyrage.x25519.Identity
    settings: Settings

    @functools.cached_property
    def device_id(self) -> str:
        return peer_id_from_public_key(public_bytes(self.signing_key))

    @property
    def swarm_id(self) -> str:
        return self.settings.swarm.id

    @property
    def name(self) -> str:
        return self.settings.device.name

    @property
    def age_recipient(self) -> str:
        return str(self.age_identity.to_public())

    def private_seed(self) -> bytes:
        return self.signing_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )


def load_identity(home: Path) -> Identity:
    if not (home / DEVICE_KEY).exists():
        raise NotInitialised(f"{home} holds no swarm identity: run `swarm init` first")
    settings = load_settings(home / CONFIG_NAME)
    key = _load_ed25519(home / DEVICE_KEY)
    try:
        age = pyrage.x25519.Identity.from_str((home / AGE_KEY).read_text().strip())
    except (OSError, ValueError, pyrage.IdentityError) as exc:
        raise InvalidConfig(
            f"{home / AGE_KEY}: unreadable age identity ({type(exc).__name__})"
        ) from None
    return Identity(home, key, age, settings)


def load_root(home: Path) -> Ed25519PrivateKey:
    """The swarm's root key, on the device that ran `swarm init` (or was recovered)."""
    if not (home / ROOT_KEY).exists():
        raise NotInitialised(f"{home} holds no root key (only the first device has one)")
    return _load_ed25519(home / ROOT_KEY)


def _load_ed25519(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidConfig(f"{path}: unreadable key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidConfig(f"{path}: not an Ed25519 key")
    return key


def check_new_device(home: Path, *, name: str, role: str) -> None:
    """The checks `init` and `join` share: a good name and role, and an empty home."""
    problem = _device_name(name) if name else "must not be empty"
    if problem:
        raise InvalidArgument(f"--name {name!r}: {problem}")
    if role not in ROLES:
        raise InvalidArgument(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    names = (DEVICE_KEY, AGE_KEY, ROOT_KEY, CONFIG_NAME, ROSTER)
    existing = [n for n in names if (home / n).exists()]
    if existing:
        raise AlreadyInitialised(
            f"{home} already holds a swarm identity ({', '.join(existing)}); nothing changed"
        )


def device_config(
    *,
    name: str,
    role: str,
    scopes: tuple[str, ...] | None,
    relay_only: bool,
    swarm: str,
    root_public: bytes,
    network: dict[str, object] | None = None,
    extra: dict[str, dict[str, object]] | None = None,
) -> str:
    """The ``swarm.toml`` that `init` and `join` write: this device, its swarm, and the rest."""
    sections: dict[str, dict[str, object]] = {
        "device": {
            "name": name,
            "role": role,
            "scopes": list(scopes or ROLE_SCOPES[role]),
            "relay_only": relay_only,
        },
        "swarm": {"id": swarm, "root": root_public.hex()},
    }
    if network:
        sections["network"] = network
    sections.update(extra or {})
    return render_config(sections)


def init_home(
    home: Path,
    *,
    name: str,
    role: str,
    scopes: tuple[str, ...] | None = None,
    relay_only: bool = False,
    network: dict[str, object] | None = None,
    extra: dict[str, dict[str, object]] | None = None,
    root: Ed25519PrivateKey | None = None,
    keep_root: bool = True,
) -> Identity:
    """Create a new swarm and this device's identity in ``home``; refuse if one exists.

    The root key (``root``, else a new one) signs this device's certificate, the first entry of
    the roster. ``keep_root=False`` leaves it off the disk: the caller holds it (``swarm init``
    prints it as the recovery code), so a stolen first device is an admin, not the root.
    """
    from ._certs import Roster, issue_certificate

    check_new_device(home, name=name, role=role)
    root = root or Ed25519PrivateKey.generate()
    device = Ed25519PrivateKey.generate()
    age = pyrage.x25519.Identity.generate()
    root_public = public_bytes(root)
    swarm = swarm_id_of(root_public)
    device_id = peer_id_from_public_key(public_bytes(device))
    cert = issue_certificate(
        root,
        issuer="root",
        swarm=swarm,
        device=device_id,
        name=name,
        role=role,
        age_recipient=str(age.to_public()),
        now=time.time(),
        scopes=scopes,
        relay_only=relay_only,
        admin=True,  # the first device is an admin
    )
    roster = Roster(swarm, root_public)
    roster.add_chain((cert,))
    config = device_config(
        name=name,
        role=role,
        scopes=scopes,
        relay_only=relay_only,
        swarm=swarm,
        root_public=root_public,
        network=network,
        extra=extra,
    )
    kept = root if keep_root else None
    write_home(home, device=device, age=age, root=kept, config=config, roster=roster.encode())
    return load_identity(home)


def write_home(
    home: Path,
    *,
    device: Ed25519PrivateKey,
    age: pyrage.x25519.Identity,
    root: Ed25519PrivateKey | None,
    config: str,
    roster: bytes,
) -> None:
    """Write a new device's files, all or nothing."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _all_or_nothing(home) as write:
        write(DEVICE_KEY, _pem(device), secret=True)
        write(AGE_KEY, (str(age) + "\n").encode(), secret=True)
        if root is not None:
            write(ROOT_KEY, _pem(root), secret=True)
        write(CONFIG_NAME, config.encode(), secret=False)
        write(ROSTER, roster, secret=False)


def load_roster(identity: Identity) -> Roster:
    from ._certs import InvalidCertificate, Roster

    path = identity.home / ROSTER
    try:
        roster = Roster.decode(path.read_bytes())
    except OSError as exc:
        raise InvalidConfig(f"{path}: cannot read the roster: {exc.strerror}") from None
    except InvalidCertificate as exc:
        raise InvalidConfig(f"{path}: damaged roster: {exc}") from None
    if roster.swarm != identity.swarm_id:
        raise InvalidConfig(f"{path}: roster of swarm {roster.swarm}, not {identity.swarm_id}")
    return roster


def save_roster(home: Path, roster: Roster) -> None:
    """Replace the roster file atomically."""
    write_atomically(home / ROSTER, roster.encode())


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600): the old file or the new one, whole, after a
    crash at any point."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@contextlib.contextmanager
def _all_or_nothing(home: Path) -> Iterator[Callable[..., None]]:
    """Write new files exclusively; if any write fails, remove those already written."""
    written: list[Path] = []

    def write(name: str, data: bytes, *, secret: bool) -> None:
        path = home / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
        written.append(path)
        with os.fdopen(fd, "wb") as fh:
            if secret:
                os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    try:
        yield write
    except BaseException as exc:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise AlreadyInitialised(
                f"{exc.filename} appeared while initialising; nothing changed"
            ) from None
        raise


def render_config(sections: dict[str, dict[str, object]]) -> str:
    """TOML for the simple values settings hold (strings, numbers, booleans, lists of those)."""
    lines = ["# swarm settings for this device; every setting and its default: see swarm.toml", ""]
    for section, table in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
        lines.append("")
    return "\n".join(lines)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
