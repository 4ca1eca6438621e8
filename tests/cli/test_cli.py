from __future__ import annotations

import os
import stat

import pytest

from homeswarm.cli import main
from homeswarm.swarm._home import load_identity
from homeswarm.transports import public_key_from_peer_id


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_init(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "init" in capsys.readouterr().out


def test_init_creates_identity_with_private_key_files(tmp_path, capsys):
    home = tmp_path / "home"
    code, out, err = run(
        capsys, "init", "--name", "laptop", "--role", "laptop", "--home", str(home)
    )
    assert code == 0, err
    ident = load_identity(home)
    assert ident.device_id in out
    assert ident.swarm_id in out
    assert ident.settings.device.role == "laptop"
    for name in ("device.key", "age.key"):
        assert stat.S_IMODE(os.stat(home / name).st_mode) == 0o600
    # the root key is the recovery code printed once, not a file a thief could take
    assert not (home / "root.key").exists()
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    # the device id is a libp2p Ed25519 peer id of the device key
    assert len(public_key_from_peer_id(ident.device_id)) == 32


def test_init_refuses_second_time_and_changes_nothing(tmp_path, capsys):
    home = tmp_path / "h"
    assert run(capsys, "init", "--name", "a", "--role", "phone", "--home", str(home))[0] == 0
    before = {p.name: p.read_bytes() for p in home.iterdir()}
    code, out, err = run(capsys, "init", "--name", "b", "--role", "server", "--home", str(home))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "already holds a swarm identity" in err
    assert {p.name: p.read_bytes() for p in home.iterdir()} == before


def test_init_uses_swarm_home_env(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SWARM_HOME", str(tmp_path / "env-home"))
    code, _, err = run(capsys, "init", "--name", "p", "--role", "phone", "--json")
    assert code == 0, err
    assert (tmp_path / "env-home" / "device.key").exists()


def test_init_json(tmp_path, capsys):
    import json

    code, out, _ = run(
        capsys, "init", "--name", "s", "--role", "server", "--home", str(tmp_path / "j"), "--json"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["role"] == "server"
    assert doc["device"].startswith("12D3KooW")


@pytest.mark.parametrize(
    "argv",
    [
        ["init", "--name", "bad name", "--role", "phone"],
        ["init", "--name", "x", "--role", "toaster"],
        ["init", "--role", "phone"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_one_line_exit_2(tmp_path, capsys, argv):
    try:
        code = main([*argv, "--home", str(tmp_path / "x")] if argv[0] == "init" else argv)
    except SystemExit as exc:
        code = exc.code
    _, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1, err
    assert not (tmp_path / "x" / "device.key").exists()


def test_broken_config_is_one_line(tmp_path, capsys):
    home = tmp_path / "h"
    assert run(capsys, "init", "--name", "a", "--role", "phone", "--home", str(home))[0] == 0
    (home / "swarm.toml").write_text("[network]\nlisten = 7\n")
    code, _, err = run(capsys, "up", "--home", str(home))
    assert code == 2
    assert err.count("\n") == 1
    assert "swarm.toml: [network] listen: expected a list of strings" in err


def test_bad_listen_address_is_one_line(tmp_path, capsys):
    home = tmp_path / "h"
    assert run(capsys, "init", "--name", "a", "--role", "phone", "--home", str(home))[0] == 0
    code, _, err = run(capsys, "up", "--home", str(home), "--no-mdns", "--listen", "garbage")
    assert code == 2
    assert err.count("\n") == 1
    assert "listen address 'garbage' is not a TCP multiaddr" in err
