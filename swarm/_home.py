"""A device's home directory: its keys, its settings, and how ``swarm init`` creates them.

Files (keys mode 0600, the directory 0700)::

    device.key   this device's Ed25519 key, PKCS#8 PEM: its libp2p peer id
    age.key      this device's age X25519 identity (AGE-SECRET-KEY-1...)
    root.key     the swarm root's Ed25519 key (only on the device that ran `swarm init`)
    swarm.toml   settings; [device] and [swarm] are written at init
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import pyrage
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from transports import InvalidArgument, InvalidConfig, LocalError, peer_id_from_public_key

from ._config import CONFIG_NAME, ROLES, Settings, _device_name, load_settings

DEVICE_KEY = "device.key"
AGE_KEY = "age.key"
ROOT_KEY = "root.key"


class AlreadyInitialised(LocalError):
    """The home already holds an identity."""


class NotInitialised(LocalError):
    """The home holds no identity yet."""


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """``--home``, else ``$SWARM_HOME``, else the platform's user data directory."""
    if home:
        return Path(home).expanduser()
    env = os.environ.get("SWARM_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("swarm", appauthor=False))


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

    @property
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


def _load_ed25519(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidConfig(f"{path}: unreadable key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidConfig(f"{path}: not an Ed25519 key")
    return key


def init_home(home: Path, *, name: str, role: str) -> Identity:
    """Create a new swarm and this device's identity in ``home``; refuse if one exists."""
    problem = _device_name(name) if name else "must not be empty"
    if problem:
        raise InvalidArgument(f"--name {name!r}: {problem}")
    if role not in ROLES:
        raise InvalidArgument(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    existing = [n for n in (DEVICE_KEY, AGE_KEY, ROOT_KEY, CONFIG_NAME) if (home / n).exists()]
    if existing:
        raise AlreadyInitialised(
            f"{home} already holds a swarm identity ({', '.join(existing)}); nothing changed"
        )
    root = Ed25519PrivateKey.generate()
    device = Ed25519PrivateKey.generate()
    age = pyrage.x25519.Identity.generate()
    root_public = public_bytes(root)
    config = render_config(
        {
            "device": {"name": name, "role": role},
            "swarm": {"id": swarm_id_of(root_public), "root": root_public.hex()},
        }
    )
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _all_or_nothing(home) as write:
        write(DEVICE_KEY, _pem(device), secret=True)
        write(AGE_KEY, (str(age) + "\n").encode(), secret=True)
        write(ROOT_KEY, _pem(root), secret=True)
        write(CONFIG_NAME, config.encode(), secret=False)
    return load_identity(home)


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
