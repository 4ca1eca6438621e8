"""Recovery codes, ``swarm recover`` and ``swarm audit``: without a network."""

from __future__ import annotations

import json
import re
import stat
import time
from types import SimpleNamespace

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from homeswarm.cli import main
from homeswarm.cli._trust import revoke_lines
from homeswarm.swarm._audit import AUDIT_NAME, AuditLog, audit_entries
from homeswarm.swarm._certs import Roster, chain_to_wire, issue_certificate, revoke
from homeswarm.swarm._home import (
    device_config,
    load_identity,
    load_roster,
    public_bytes,
    save_roster,
    write_home,
)
from homeswarm.swarm._local_vault import directory_from
from homeswarm.swarm._roster_facts import RosterFacts, chain_fact, revocation_fact
from homeswarm.swarm._trust import (
    InvalidRecoveryCode,
    recovery_code,
    revocation_status,
    root_from_code,
)
from homeswarm.transports import peer_id_from_public_key


def test_a_recovery_code_holds_the_root_key_and_catches_typos():
    root = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
    code = recovery_code(root)
    assert code.startswith("swarmrc1-")
    assert len(code) < 80, "short enough to write down"
    assert public_bytes(root_from_code(code)) == public_bytes(root)
    spaced = "swarmrc1-" + code[len("swarmrc1-") :].upper().replace("-", " \n")
    assert public_bytes(root_from_code(spaced)) == public_bytes(root)
    for i in range(len("swarmrc1-"), len(code)):
        if code[i] == "-":
            continue
        typo = code[:i] + ("a" if code[i] != "a" else "b") + code[i + 1 :]
        with pytest.raises(InvalidRecoveryCode):
            root_from_code(typo)
    with pytest.raises(InvalidRecoveryCode, match="not a recovery code"):
        root_from_code("swarm1-abc")
    with pytest.raises(InvalidRecoveryCode, match="truncated"):
        root_from_code(code[:-3])


def _init(tmp_path, capsys):
    home = tmp_path / "laptop"
    assert main(["init", "--name", "laptop", "--role", "laptop", "--home", str(home)]) == 0
    text = capsys.readouterr().out
    code = next(line.strip() for line in text.splitlines() if "swarmrc1-" in line)
    return home, code


def _phone_of(laptop_home, tmp_path):
    """A phone home with a certificate from the laptop, as after `swarm join`."""
    laptop = load_identity(laptop_home)
    device = Ed25519PrivateKey.generate()
    age = pyrage.x25519.Identity.generate()
    device_id = peer_id_from_public_key(public_bytes(device))
    roster = load_roster(laptop)
    cert = issue_certificate(
        laptop.signing_key,
        issuer=laptop.device_id,
        swarm=laptop.swarm_id,
        device=device_id,
        name="phone",
        role="phone",
        age_recipient=str(age.to_public()),
        now=time.time(),
    )
    roster.add_chain((cert, *roster.chain(laptop.device_id)))
    save_roster(laptop_home, roster)
    config = device_config(
        name="phone",
        role="phone",
        scopes=None,
        relay_only=False,
        swarm=laptop.swarm_id,
        root_public=bytes.fromhex(laptop.settings.swarm.root),
    )
    home = tmp_path / "phone"
    write_home(home, device=device, age=age, root=None, config=config, roster=roster.encode())
    return load_identity(home)


def test_init_prints_the_code_of_its_root_key_once(tmp_path, capsys):
    home, code = _init(tmp_path, capsys)
    ident = load_identity(home)
    assert public_bytes(root_from_code(code)).hex() == ident.settings.swarm.root
    assert not (home / "root.key").exists(), "a stolen first device is not the root"
    assert load_roster(ident).is_admin(ident.device_id), "the first device is an admin"
    assert code not in "".join(p.read_text(errors="replace") for p in home.iterdir()), (
        "the code itself is written nowhere"
    )


def test_recover_makes_a_device_an_admin_again_when_every_admin_is_lost(tmp_path, capsys):
    laptop_home, code = _init(tmp_path, capsys)
    phone = _phone_of(laptop_home, tmp_path)
    roster = load_roster(phone)
    assert not roster.is_admin(phone.device_id)
    # the laptop is lost; the phone holds the code
    assert main(["recover", code, "--revoke", "laptop", "--home", str(phone.home), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "device": phone.device_id,
        "name": phone.name,
        "admin": True,
        "revoked": ["laptop"],
    }
    roster = load_roster(phone)
    assert roster.is_admin(phone.device_id)
    laptop = load_identity(laptop_home)
    assert not roster.admits(laptop.device_id)
    assert roster.admits(phone.device_id), "the root's revocation keeps what the laptop paired"
    assert roster.admins() == {phone.device_id}


def test_recover_refuses_a_wrong_or_foreign_code(tmp_path, capsys):
    laptop_home, code = _init(tmp_path, capsys)
    phone = _phone_of(laptop_home, tmp_path)
    other = recovery_code(Ed25519PrivateKey.generate())
    before = (phone.home / "roster.bin").read_bytes()
    for bad, needle in ((other, "another swarm"), (code[:-1] + "!", "mistyped")):
        assert main(["recover", bad, "--home", str(phone.home)]) == 2
        err = capsys.readouterr().err
        assert needle in err
        assert len(err.strip().splitlines()) == 1
    assert (phone.home / "roster.bin").read_bytes() == before


def test_the_audit_log_lists_refusals_without_secrets(tmp_path, capsys):
    home, _code = _init(tmp_path, capsys)
    clock = iter([100.0, 200.0, 300.0])
    log = AuditLog(home / AUDIT_NAME, lambda: next(clock))
    assert log.refuse("12D3KooWphone", "revoke", "revoke server: this device is not an admin")
    assert not log.refuse("12D3KooWphone", "revoke", "revoke server: this device is not an admin")
    assert log.refuse("12D3KooWrelay", "claim", "gossips scopes private beyond its certificate")
    assert stat.S_IMODE((home / AUDIT_NAME).stat().st_mode) == 0o600
    assert [e.action for e in audit_entries(home)] == ["revoke", "claim"]
    assert main(["audit", "--home", str(home), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["entries"]
    assert rows[0] == {
        "at": 100.0,
        "device": "12D3KooWphone",
        "name": "KooWphone"[-8:],  # not in this home's roster: the end of its id
        "action": "revoke",
        "reason": "revoke server: this device is not an admin",
    }
    me = load_identity(home)
    assert log.refuse(me.device_id, "grant", "grant phone: this device is not an admin")
    assert main(["audit", "--home", str(home)]) == 0
    text = capsys.readouterr().out
    assert "1970-01-01 00:01:40" in text
    assert "claim" in text
    assert re.search(rf"  {me.name} +grant ", text), "a member is shown by its name"
    assert me.device_id[-8:] not in text
    (home / AUDIT_NAME).write_text("garbage\n" + (home / AUDIT_NAME).read_text())
    assert len(audit_entries(home)) == 3, "a damaged line is skipped"


def test_audit_without_an_identity_is_one_line(tmp_path, capsys):
    assert main(["audit", "--home", str(tmp_path / "nowhere")]) != 0
    captured = capsys.readouterr()
    assert "nothing refused" not in captured.out
    assert "holds no swarm identity" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_a_pending_revocation_names_the_admins_that_may_still_sign_it():
    root = Ed25519PrivateKey.generate()
    keys = [Ed25519PrivateKey.generate() for _ in range(4)]
    ids = [peer_id_from_public_key(public_bytes(k)) for k in keys]
    names = ["server", "laptop", "tablet", "phone"]
    roster = Roster("sw-test", public_bytes(root))
    for i, name in enumerate(names):
        roster.add_chain(
            (
                issue_certificate(
                    root,
                    issuer="root",
                    swarm="sw-test",
                    device=ids[i],
                    name=name,
                    role="laptop",
                    age_recipient=str(pyrage.x25519.Identity.generate().to_public()),
                    now=10.0,
                    admin=name != "phone",
                ),
            )
        )
    peer = SimpleNamespace(roster=roster)
    # the tablet (an admin, stolen) revokes the phone: one admin suffices for a non-admin
    roster.add_revocation(revoke(keys[2], by=ids[2], swarm="sw-test", device=ids[3], now=15.0))
    status = revocation_status(peer, ids[3], "phone")  # type: ignore[arg-type]
    assert status["counts"]
    assert not status["majority"]
    # the laptop revokes the tablet: one of three admins
    roster.add_revocation(revoke(keys[1], by=ids[1], swarm="sw-test", device=ids[2], now=20.0))
    status = revocation_status(peer, ids[2], "tablet")  # type: ignore[arg-type]
    assert not status["counts"]
    assert status["signed_by"] == ["laptop"]
    assert status["needed"] == 1
    assert status["may_sign"] == ["server"]
    assert status["undone"] == ["phone"]
    lines = revoke_lines(status)
    assert lines[0].endswith("counts once a majority of the 3 admins sign it (so far: laptop)")
    assert lines[1] == "next: 1 more of server must also run `swarm revoke tablet`"
    assert lines[3] == "once it counts, tablet's revocations of phone stop counting"
    # the server signs too: the tablet is out and its revocation of the phone with it
    roster.add_revocation(revoke(keys[0], by=ids[0], swarm="sw-test", device=ids[2], now=21.0))
    status = revocation_status(peer, ids[2], "tablet")  # type: ignore[arg-type]
    assert status["counts"]
    assert status["signed_by"] == ["laptop", "server"]
    assert roster.admits(ids[3])
    assert status["undone"] == ["phone"]
    assert revoke_lines(status)[-1] == (
        "its revocations of phone no longer count: revoke again any you doubt"
    )


def test_revoke_says_whether_the_revocation_counts_yet():
    pending = {
        "device": "12D3KooWphone",
        "name": "phone",
        "counts": False,
        "signed_by": ["laptop"],
        "admins": 2,
        "kept": [],
    }
    first, recover = revoke_lines(pending)
    assert "counts once a majority of the 2 admins sign it (so far: laptop)" in first
    assert (
        recover == "or, with the recovery code, on any device: `swarm recover CODE --revoke phone`"
    )
    # what to do next: who else must sign
    lines = revoke_lines({**pending, "admins": 3, "needed": 1, "may_sign": ["server", "tablet"]})
    assert lines[1] == "next: 1 more of server, tablet must also run `swarm revoke phone`"
    done = {**pending, "counts": True, "kept": ["tablet"]}
    assert revoke_lines(done) == [
        "revoked phone (12D3KooWphone): the others drop it as they hear",
        "devices it paired stay: tablet (revoke any you doubt)",
    ]


def test_a_gossiped_revocation_or_certificate_from_a_non_admin_is_audited_by_those_who_learn_it():
    root = Ed25519PrivateKey.generate()
    keys = [Ed25519PrivateKey.generate() for _ in range(3)]
    ids = [peer_id_from_public_key(public_bytes(k)) for k in keys]
    swarm = "sw-test"
    roster = Roster(swarm, public_bytes(root))

    def certify(i, by, admin):
        return issue_certificate(
            root if by is None else keys[by],
            issuer="root" if by is None else ids[by],
            swarm=swarm,
            device=ids[i],
            name=f"d{i}",
            role="phone",
            age_recipient=str(pyrage.x25519.Identity.generate().to_public()),
            now=1.0,
            admin=admin,
        )

    admin = (certify(0, None, True),)
    phone = (certify(1, 0, False), *admin)
    roster.add_chain(admin)
    roster.add_chain(phone)
    refused = []
    facts = RosterFacts(roster, lambda _devices: None, lambda *r: refused.append(r))
    facts.learn(
        revocation_fact(revoke(keys[1], by=ids[1], swarm=swarm, device=ids[0], now=2.0).to_wire())
    )
    facts.learn(chain_fact(chain_to_wire((certify(2, 1, False), *phone))))
    assert [(who, action) for who, action, _ in refused] == [
        (ids[1], "revoke"),
        (ids[1], "certify"),
    ]
    assert roster.admits(ids[0])
    assert not roster.admits(ids[2])


def test_nothing_is_sealed_to_a_device_whose_age_key_is_in_doubt():
    root = Ed25519PrivateKey.generate()
    keys = [Ed25519PrivateKey.generate() for _ in range(2)]
    ids = [peer_id_from_public_key(public_bytes(k)) for k in keys]
    roster = Roster("sw-test", public_bytes(root))

    def certify(i, by, age):
        return issue_certificate(
            root if by is None else keys[by],
            issuer="root" if by is None else ids[by],
            swarm="sw-test",
            device=ids[i],
            name=f"d{i}",
            role="laptop",
            age_recipient=age,
            now=1.0,
            admin=by is None,
        )

    ages = [str(pyrage.x25519.Identity.generate().to_public()) for _ in range(2)]
    admin = (certify(0, None, ages[0]),)
    roster.add_chain(admin)
    roster.add_chain((certify(1, 0, ages[0]), *admin))
    directory = directory_from(roster, lambda _d: frozenset({"public", "personal"}))
    assert directory.devices[ids[1]].scopes == frozenset({"public", "personal"})
    roster.add_chain((certify(1, 0, ages[1]), *admin))  # the same admin, another age key
    assert roster.conflicted() == {ids[1]}
    directory = directory_from(roster, lambda _d: frozenset({"public", "personal"}))
    assert directory.devices[ids[1]].scopes == frozenset()
