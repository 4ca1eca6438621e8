from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeswarm.errors import InvalidConfig
from homeswarm.swarm._config import Settings, describe, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]


def test_root_swarm_toml_documents_every_setting_with_its_default():
    text = (ROOT / "swarm.toml").read_text()
    data = tomllib.loads(text)
    for section, key, default, _doc in describe():
        assert key in data.get(section, {}), f"[{section}] {key} is not documented"
        value = data[section][key]
        assert (tuple(value) if isinstance(value, list) else value) == default, (section, key)
    assert parse_settings(text) == Settings()
    documented = {(s, k) for s, t in data.items() for k in t}
    assert documented == {(s, k) for s, k, _, _ in describe()}


def test_missing_file_gives_defaults(tmp_path):
    assert load_settings(tmp_path / "nope.toml") == Settings()


def test_values_are_read_and_typed():
    s = parse_settings('[network]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\ndial_timeout_s = 2\n')
    assert s.network.listen == ("/ip4/127.0.0.1/tcp/0",)
    assert s.network.dial_timeout_s == 2.0
    assert isinstance(s.network.dial_timeout_s, float)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[network\n", "not valid TOML"),
        ("[netwrk]\n", "[netwrk]: unknown section"),
        ("[network]\nlisen = []\n", "[network] lisen: unknown setting"),
        ("[network]\nlisten = 5\n", "[network] listen: expected a list of strings"),
        ('[network]\nlisten = ["x"]\n', "[network] listen: 'x' is not a multiaddr"),
        ("[network]\nmdns = 1\n", "[network] mdns: expected true or false"),
        ("[network]\nmax_frame_bytes = 1.5\n", "[network] max_frame_bytes: expected an integer"),
        ("[network]\nmax_frame_bytes = -1\n", "[network] max_frame_bytes: must be a positive"),
        ("[network]\ndial_timeout_s = true\n", "[network] dial_timeout_s: expected a number"),
        ('[device]\nrole = "toaster"\n', "[device] role: must be one of phone, laptop, server"),
        ('[device]\nname = "a b"\n', "[device] name: must be 1-64"),
        ("network = 3\n", "network: must be a table"),
    ],
)
def test_bad_config_names_file_key_and_problem(tmp_path, text, needle):
    path = tmp_path / "swarm.toml"
    path.write_text(text)
    with pytest.raises(InvalidConfig) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert needle in message
    assert "\n" not in message


@given(st.text(max_size=200))
def test_any_text_either_parses_or_fails_cleanly(text):
    try:
        parse_settings(text)
    except InvalidConfig as exc:
        assert "\n" not in str(exc)
