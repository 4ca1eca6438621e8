"""``swarm join CODE``: pair a new device with a running member, and write its home.

The joiner creates its keys in memory, dials the inviter named in the code (Noise authenticates
the inviter's peer id, so nobody else can answer), and sends a proof that it holds the code's
secret, bound to both peer ids, never the secret itself. The inviter answers with a certificate
chain for the new device, its roster and the addresses of the members it knows. Only when all of
that verifies are the new device's files written, all at once; on any failure nothing is written.

What the new device may do is the inviter's to say: the code's grant (``swarm invite --scopes
--relay-only --admin``) is signed into its certificate. ``--scopes`` and ``--relay-only`` on the
joiner's side may only ask for less (asking for more is refused, and uses the code up); the
settings written are the certificate's, and editing them later gains nothing (see ``_certs``).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pyrage
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from homeswarm.errors import MalformedMessage
from homeswarm.transports import (
    PeerUnreachable,
    RemoteError,
    RemoteHandlerError,
    SwarmError,
    TransportError,
    peer_id_from_public_key,
)
from homeswarm.wire import Field, Schema

from ._certs import InvalidCertificate, Roster, chain_from_wire
from ._home import (
    check_new_device,
    device_config,
    load_identity,
    public_bytes,
    swarm_id_of,
    write_home,
)
from ._invite import InvalidCode, InviteCode, pairing_proof

PAIR_TIMEOUT = 15.0


@dataclass(frozen=True)
class Joined:
    home: Path
    device: str
    swarm: str
    inviter: str
    members: int


class PairingFailed(RemoteError):
    """The inviter could not be reached, or answered with something that does not verify."""


def join_swarm(
    home: Path,
    code_text: str,
    *,
    name: str,
    role: str,
    scopes: tuple[str, ...] | None = None,
    relay_only: bool = False,
    network: dict[str, object] | None = None,
    extra: dict[str, dict[str, object]] | None = None,
) -> Joined:
    code = InviteCode.decode(code_text)
    if code.expired(time.time()):
        raise InvalidCode("this code expired: ask for a new one with `swarm invite`")
    check_new_device(home, name=name, role=role)
    device = Ed25519PrivateKey.generate()
    age = pyrage.x25519.Identity.generate()
    device_id = peer_id_from_public_key(public_bytes(device))
    asked = list(scopes) if scopes is not None else None
    request = msgpack.packb(
        [name, role, str(age.to_public()), asked, relay_only], use_bin_type=True
    )
    proof = pairing_proof(
        code.secret, swarm=code.swarm, inviter=code.inviter, joiner=device_id, request=request
    )
    body = {"op": "pair", "invite": code.invite_id, "proof": proof, "request": request}
    seed = device.private_bytes_raw()
    reply = trio.run(_ask_inviter, seed, code, body)
    roster, peers = _check_reply(reply, code, device_id, name, role, str(age.to_public()))
    cert = roster.certificate(device_id)
    assert cert is not None  # _check_reply admitted it
    if scopes is not None and not set(cert.scopes) <= set(scopes):
        raise PairingFailed("the inviter's certificate grants scopes this device did not ask for")
    bootstrap = [f"{a}/p2p/{code.inviter}" for a in code.addrs]
    for peer, addrs in peers.items():
        bootstrap.extend(f"{a}/p2p/{peer}" for a in addrs[:2])
    config = device_config(
        name=name,
        role=role,
        scopes=cert.scopes,  # what the certificate allows: the settings say the same
        relay_only=cert.relay_only,
        swarm=roster.swarm,
        root_public=roster.root_public,
        network={"bootstrap": list(dict.fromkeys(bootstrap))[:16], **(network or {})},
        extra=extra,
    )
    write_home(home, device=device, age=age, root=None, config=config, roster=roster.encode())
    load_identity(home)  # what was written reads back
    return Joined(home, device_id, roster.swarm, code.inviter, len(roster.members()))


async def _ask_inviter(seed: bytes, code: InviteCode, body: dict[str, Any]) -> Any:
    from homeswarm.transports.libp2p import Libp2pTransport

    transport = Libp2pTransport(seed, ["/ip4/127.0.0.1/tcp/0"], dial_timeout=5.0)
    failure: SwarmError | None = None
    async with transport:
        try:
            conn = await transport.dial(code.inviter, list(code.addrs))
            reply = await conn.request(body, timeout=PAIR_TIMEOUT)
            await conn.aclose()
        except RemoteHandlerError as exc:
            failure = InvalidCode(f"the inviter refused: {_reason(exc)}")
        except PeerUnreachable as exc:
            failure = _unreachable(code, exc)
        except TransportError as exc:
            failure = PairingFailed(f"pairing with the inviter failed: {exc}")
    # raised out here, not inside the transport's nursery, so callers get it bare
    if failure is not None:
        raise failure
    return reply


def _unreachable(code: InviteCode, exc: PeerUnreachable) -> SwarmError:
    """Tell a refusal from an absence: once no code is outstanding, the inviter refuses
    strangers in the handshake, so a used-up code looks like a failed dial. If its port still
    answers, it is running and said no."""
    for addr in code.addrs:
        parts = addr.split("/")
        if len(parts) > 4 and parts[1] in ("ip4", "ip6", "dns", "dns4", "dns6"):
            try:
                socket.create_connection((parts[2], int(parts[4])), timeout=2.0).close()
            except (OSError, ValueError):
                continue
            return InvalidCode(
                "the inviter refused this device: the code was already used, has expired, or "
                "was not issued by the device at that address (ask for a new one with "
                "`swarm invite`)"
            )
    return PairingFailed(
        f"cannot reach the inviter at {', '.join(code.addrs)}: {exc} "
        "(is its `swarm up` still running?)"
    )


def _reason(exc: RemoteHandlerError) -> str:
    text = str(exc)  # "<peer>: <reason>"
    return text.split(": ", 1)[1] if ": " in text else text


# what an inviter answers a pairing request (see ``Peer._pair``); ``peers`` is advice, filtered
JOIN_REPLY = Schema("the inviter's answer", Field("chain", list), Field("roster", dict))


def _check_reply(
    reply: Any, code: InviteCode, device_id: str, name: str, role: str, age: str
) -> tuple[Roster, dict[str, list[str]]]:
    try:
        JOIN_REPLY.check(reply)
        roster = Roster.from_wire(reply.get("roster"))
        if swarm_id_of(roster.root_public) != code.swarm or roster.swarm != code.swarm:
            raise InvalidCertificate(f"the inviter answered for another swarm, not {code.swarm}")
        chain = chain_from_wire(reply.get("chain"))
        roster.add_chain(chain)
        leaf = chain[0]
        if (leaf.device, leaf.name, leaf.role, leaf.age_recipient) != (device_id, name, role, age):
            raise InvalidCertificate("the certificate does not describe this device")
        if leaf.issuer != code.inviter:
            raise InvalidCertificate("the certificate was not issued by the inviter")
    except (InvalidCertificate, MalformedMessage) as exc:
        raise PairingFailed(f"the inviter's answer does not verify: {exc}") from None
    peers = reply.get("peers")
    found: dict[str, list[str]] = {}
    if isinstance(peers, dict):
        for peer, addrs in list(peers.items())[:64]:
            if roster.admits(peer) and isinstance(addrs, list):
                found[peer] = [a for a in addrs if isinstance(a, str) and a.startswith("/")][:4]
    return roster, found
