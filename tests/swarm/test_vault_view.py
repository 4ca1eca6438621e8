"""The vault's view: the quick read with no peer running answers only what the store holds now.

Each test plays what could make a view lie (a write it did not see, a restored backup, an edited
config, an expired entry, a forged or damaged file) and shows that ``swarm vault get`` answers
what opening the store the slow way answers.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time

import pytest

from homeswarm.cli import main
from homeswarm.swarm import load_identity, load_roster, open_local, read_view
from homeswarm.swarm._files import VAULT_DIR, VIEW_FILE
from homeswarm.swarm._home import init_home
from homeswarm.vault import Entry, InvalidEntry, View, open_view, seal_view, store_stamp


@pytest.fixture
def home(tmp_path):
    return init_home(tmp_path / "h", name="laptop", role="laptop").home


def swarm(capsys, home, *argv):
    code = main([*argv, "--home", str(home)])
    out, err = capsys.readouterr()
    return code, out, err


def get(capsys, home, key):
    code, out, err = swarm(capsys, home, "vault", "get", key)
    return code, (out.strip() if code == 0 else err.strip())


def test_a_direct_open_leaves_a_view_that_answers_get_and_ls(capsys, home):
    assert read_view(home) is None  # no view yet
    assert swarm(capsys, home, "vault", "put", "facts/a", '"one"')[0] == 0
    view = read_view(home)
    assert view is not None
    entry = view.get("facts/a")
    assert entry is not None
    assert (entry.key, entry.scope) == ("facts/a", "personal")
    assert get(capsys, home, "facts/a") == (0, '"one"')
    _code, out, _ = swarm(capsys, home, "vault", "ls", "--json")
    assert [e["key"] for e in json.loads(out)["entries"]] == ["facts/a"]
    assert get(capsys, home, "facts/b")[0] == 1  # absent: the view says so too


def test_the_view_is_sealed_and_private(capsys, home):
    swarm(capsys, home, "vault", "put", "facts/a", '"a very secret value"')
    path = home / VIEW_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert b"secret value" not in path.read_bytes()
    assert b"facts/a" not in path.read_bytes()


def test_a_write_the_view_did_not_see_ends_it(capsys, home):
    swarm(capsys, home, "vault", "put", "facts/a", '"one"')
    ident = load_identity(home)
    local = open_local(ident, load_roster(ident))  # as a peer would: writes, leaves no view
    local.put("facts/a", '"two"')  # (JSON text: the CLI encodes what it is given)
    local.close()
    assert read_view(home) is None
    assert get(capsys, home, "facts/a") == (0, "two")


def test_a_restored_backup_is_read_as_it_is_not_as_the_view_says(capsys, home, tmp_path):
    swarm(capsys, home, "vault", "put", "facts/a", '"before"')
    shutil.copytree(home / VAULT_DIR, tmp_path / "backup")
    swarm(capsys, home, "vault", "put", "facts/a", '"after"')
    assert get(capsys, home, "facts/a") == (0, '"after"')  # the view, current
    shutil.rmtree(home / VAULT_DIR)
    shutil.copytree(tmp_path / "backup", home / VAULT_DIR)
    assert get(capsys, home, "facts/a") == (0, '"before"')


def test_an_edited_config_that_drops_a_scope_hides_it_at_once(capsys, home):
    swarm(capsys, home, "vault", "put", "facts/a", '"personal thing"')
    config = home / "swarm.toml"
    text = config.read_text()
    config.write_text(text.replace('"personal", ', "").replace(', "personal"', ""))
    assert "personal" not in config.read_text().split("[swarm]")[0]
    code, said = get(capsys, home, "facts/a")
    assert code == 1
    assert "no entry" in said


def test_an_entry_that_expired_since_the_view_was_made_is_gone(capsys, home, monkeypatch):
    swarm(capsys, home, "vault", "put", "context/now", '"soon gone"', "--ttl", "60")
    assert get(capsys, home, "context/now") == (0, '"soon gone"')
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert read_view(home) is not None  # the view still holds, and still says it expires
    assert get(capsys, home, "context/now")[0] == 1


def test_a_view_forged_with_the_public_recipient_is_refused(capsys, home):
    swarm(capsys, home, "vault", "put", "facts/a", '"true"')
    ident = load_identity(home)
    path = home / VIEW_FILE
    genuine = path.read_bytes()
    # the attacker can write the home and read the store's stamp, and knows the age recipient
    # (it is in the roster) and how the context is made: all but this device's secret
    from homeswarm.swarm._vault_view import _context

    forged = seal_view(
        [Entry("facts/a", '"forged"', "personal")],
        stamp=store_stamp(home / VAULT_DIR) or b"",
        context=_context(home),
        recipient=ident.age_recipient,
        mac_key=bytes(32),
    )
    path.write_bytes(forged)
    assert read_view(home) is None
    assert get(capsys, home, "facts/a") == (0, '"true"')
    # and any damage to a genuine view is only a slower read
    for cut in (genuine[:-1], genuine[:40], genuine[:16] + bytes([genuine[16] ^ 1]) + genuine[17:]):
        path.write_bytes(cut)
        assert read_view(home) is None
        assert get(capsys, home, "facts/a") == (0, '"true"')


def test_open_view_holds_only_for_its_stamp_and_context(home):
    ident = load_identity(home)
    kw = {"recipient": ident.age_recipient, "mac_key": b"k" * 32}
    blob = seal_view([Entry("facts/a", "1", "public")], stamp=b"s1", context=b"c1", **kw)
    opened = {"identity": ident.age_identity, "mac_key": b"k" * 32}
    view = open_view(blob, stamp=b"s1", context=b"c1", **opened)
    assert view is not None
    assert view.items() == [Entry("facts/a", "1", "public")]
    assert open_view(blob, stamp=b"s2", context=b"c1", **opened) is None
    assert open_view(blob, stamp=b"s1", context=b"c2", **opened) is None
    assert open_view(blob, stamp=None, context=b"c1", **opened) is None


def test_a_view_reads_with_the_stores_rules():
    """Expiry by the clock, prefix and key checks, key order: as ``LocalVault`` answers."""
    entries = [
        Entry("facts/b", "2", "public", expires_at=20.0),
        Entry("facts/a", "1", "private"),
        Entry("memories/x", "3", "personal", expires_at=5.0),
    ]
    now = [10.0]
    view = View(entries, clock=lambda: now[0])
    assert [e.key for e in view.items()] == ["facts/a", "facts/b"]
    assert [e.key for e in view.items("facts/")] == ["facts/a", "facts/b"]
    assert view.get("memories/x") is None  # expired at 5
    assert view.get("facts/b") == entries[0]
    now[0] = 20.0
    assert view.get("facts/b") is None  # expiry reached exactly: gone, as in the replica
    assert view.items("memories/") == []
    with pytest.raises(InvalidEntry):
        view.get("no-collection")
    with pytest.raises(InvalidEntry):
        view.items("x" * 5000)
