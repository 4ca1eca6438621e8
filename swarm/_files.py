"""The files of a home (``SWARM_HOME``), by name, in one place below everything that reads them:
a quick command can find them without loading the code that makes them."""

from __future__ import annotations

CONFIG_NAME = "swarm.toml"  # the settings
DEVICE_KEY = "device.key"  # this device's Ed25519 key (0600)
AGE_KEY = "age.key"  # this device's age identity (0600)
ROOT_KEY = "root.key"  # the swarm's root key, on the device that holds it (0600)
ROSTER = "roster.bin"  # the certificates and revocations this device knows
VAULT_DIR = "vault"  # the vault's store
VIEW_FILE = "vault-view.age"  # the vault's view, the quick read (``_vault_view``)
