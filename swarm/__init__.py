"""The peer: identity and pairing, the roster, device state, membership, the daemon, its services.

The public face of ``homeswarm.swarm``. Names load on first use (PEP 562), so a command that only
asks the running peer (``swarm status``) does not pay for the network stack it never touches;
``from homeswarm.swarm import Peer`` works as with any package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the private module that defines it
_FACE = {
    "Identity": "_home",
    "init_home": "_home",
    "load_identity": "_home",
    "load_roster": "_home",
    "public_bytes": "_home",
    "swarm_id_of": "_home",
    "Settings": "_config",
    "CONFIG_NAME": "_config",
    "load_settings": "_config",
    "settings_from_mapping": "_config",
    "Roster": "_certs",
    "load_root": "_home",
    "recovery_code": "_trust",
    "new_root": "_trust",
    "recover_admin": "_trust",
    "audit_entries": "_audit",
    "issue_certificate": "_certs",
    "join_swarm": "_join",
    "Peer": "_peer",
    "PeerOptions": "_peer",
    "decode_state": "_device",
    "Daemon": "_daemon",
    "advertised": "_daemon",
    "run_up": "_daemon",
    "Change": "_membership",
    "FixedLoad": "_device",
    "PowerReading": "_device",
    "Service": "_service",
    "PlacementService": "_placement_service",
    "LearnService": "_learn_service",
    "VaultService": "_vault_service",
    "RecallService": "_recall_service",
    "RecallIndex": "_recall",
    "HashEmbedder": "_recall",
    "ModelEmbedder": "_recall",
    "readable_scopes": "_local_vault",
    "open_local": "_local_vault",
    "entry_json": "_vault_view",
    "not_found": "_vault_view",
    "read_view": "_vault_view",
    "save_view": "_vault_view",
    "control_path": "_control",
    "serve_control": "_control",
    "ask": "_control_client",
    "NoPeerRunning": "_control_client",
    "HttpServer": "_http",
    "Request": "_http",
    "Response": "_http",
    "follow_log": "_logs",
    "log_path": "_logs",
    "read_log": "_logs",
}

if TYPE_CHECKING:
    from ._audit import audit_entries
    from ._certs import Roster, issue_certificate
    from ._config import CONFIG_NAME, Settings, load_settings, settings_from_mapping
    from ._control import control_path, serve_control
    from ._control_client import NoPeerRunning, ask
    from ._daemon import Daemon, advertised, run_up
    from ._device import FixedLoad, PowerReading, decode_state
    from ._home import (
        Identity,
        init_home,
        load_identity,
        load_root,
        load_roster,
        public_bytes,
        swarm_id_of,
    )
    from ._http import HttpServer, Request, Response
    from ._join import join_swarm
    from ._learn_service import LearnService
    from ._local_vault import open_local, readable_scopes
    from ._logs import follow_log, log_path, read_log
    from ._membership import Change
    from ._peer import Peer, PeerOptions
    from ._placement_service import PlacementService
    from ._recall import HashEmbedder, ModelEmbedder, RecallIndex
    from ._recall_service import RecallService
    from ._service import Service
    from ._trust import new_root, recover_admin, recovery_code
    from ._vault_service import VaultService
    from ._vault_view import entry_json, not_found, read_view, save_view


def __getattr__(name: str) -> Any:
    module = _FACE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_FACE])


__all__ = [  # the same names as _FACE (a test checks)
    "CONFIG_NAME",
    "Change",
    "Daemon",
    "FixedLoad",
    "HashEmbedder",
    "HttpServer",
    "Identity",
    "LearnService",
    "ModelEmbedder",
    "NoPeerRunning",
    "Peer",
    "PeerOptions",
    "PlacementService",
    "PowerReading",
    "RecallIndex",
    "RecallService",
    "Request",
    "Response",
    "Roster",
    "Service",
    "Settings",
    "VaultService",
    "advertised",
    "ask",
    "audit_entries",
    "control_path",
    "decode_state",
    "entry_json",
    "follow_log",
    "init_home",
    "issue_certificate",
    "join_swarm",
    "load_identity",
    "load_root",
    "load_roster",
    "load_settings",
    "log_path",
    "new_root",
    "not_found",
    "open_local",
    "public_bytes",
    "read_log",
    "read_view",
    "readable_scopes",
    "recover_admin",
    "recovery_code",
    "run_up",
    "save_view",
    "serve_control",
    "settings_from_mapping",
    "swarm_id_of",
]
