"""The home's log: JSON lines, rotated, private, readable with ``swarm logs``, and free of the
secrets a working peer handles (vault values, invite codes, keys)."""

from __future__ import annotations

import json
import logging
import queue
import stat
import threading
import time

import pytest
from test_pairing import new_home, running

from homeswarm.cli import main
from homeswarm.swarm._control import ask_async
from homeswarm.swarm._control_client import ControlFailure
from homeswarm.swarm._logs import (
    BACKUPS,
    close_log,
    follow_log,
    log_path,
    open_log,
    parse_line,
    read_log,
)

log = logging.getLogger("swarm.test")


@pytest.fixture
def logged(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    handler = open_log(home, logging.DEBUG)
    yield home, handler
    close_log(handler)


def test_entries_are_json_lines_in_private_files(logged):
    home, handler = logged
    log.info("hello %s", "there")
    log.debug("detail")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    handler.flush()
    assert stat.S_IMODE(log_path(home).stat().st_mode) == 0o600
    assert stat.S_IMODE(log_path(home).parent.stat().st_mode) == 0o700
    entries = [e for e in read_log(home) if e.logger == "swarm.test"]
    assert [e.msg for e in entries] == ["hello there", "detail", "it failed"]
    assert "ValueError: boom" in (entries[2].exc or "")
    assert [e.msg for e in read_log(home, level="ERROR") if e.logger == "swarm.test"] == [
        "it failed"
    ]


def test_rotation_keeps_a_bounded_history_readable_in_order(logged):
    home, handler = logged
    handler.maxBytes = 2000
    for n in range(200):
        log.info("entry %d", n)
    handler.flush()
    files = sorted(p.name for p in log_path(home).parent.iterdir())
    assert files == ["swarm.log"] + [f"swarm.log.{n}" for n in range(1, BACKUPS + 1)]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in log_path(home).parent.iterdir())
    numbers = [int(e.msg.split()[1]) for e in read_log(home) if e.logger == "swarm.test"]
    assert numbers == list(range(numbers[0], 200))  # the newest, oldest first, none missing
    assert numbers[0] > 0  # the oldest were dropped


def test_a_torn_or_foreign_line_is_skipped():
    assert parse_line('{"t": 1.0, "level": "INFO", "logger": "x", "msg": "ok"}') is not None
    assert parse_line('{"t": 1.0, "level": "INFO", "logg') is None
    assert parse_line("plain text") is None
    assert parse_line('{"t": "x", "level": "INFO", "logger": "x", "msg": "m"}') is None
    assert parse_line("[]") is None


def test_follow_sees_new_entries_across_a_rotation(logged):
    home, handler = logged
    handler.maxBytes = 600
    log.info("before")
    handler.flush()
    seen: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    def reader() -> None:
        for entry in follow_log(home, poll_s=0.01):
            if entry.logger == "swarm.test":
                seen.put(entry.msg)
            if stop.is_set():
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    # the reader starts at the end: probe until it is there; then every new entry must arrive
    deadline = time.monotonic() + 10
    while True:
        log.info("probe")
        handler.flush()
        try:
            if seen.get(timeout=0.05) == "probe":
                break
        except queue.Empty:
            assert time.monotonic() < deadline, "the reader never started"
    got: list[str] = []
    for n in range(40):  # several rotations; a reader keeping up loses nothing
        log.info("after %d", n)
        handler.flush()
        while (msg := seen.get(timeout=10)) == "probe":
            pass
        got.append(msg)
    stop.set()
    log.info("last")
    assert got == [f"after {n}" for n in range(40)]


def test_swarm_logs_prints_filters_and_says_when_there_is_none(logged, capsys, tmp_path):
    home, handler = logged
    log.info("an info line")
    log.warning("a warning line")
    handler.flush()
    assert main(["logs", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "INFO    swarm.test: an info line" in out
    assert main(["logs", "--home", str(home), "--level", "warning", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"level": "WARNING", "logger": "swarm.test", "msg": "a warning line"}.items() <= lines[
        -1
    ].items()
    assert all(line["level"] != "INFO" for line in lines)
    assert main(["logs", "--home", str(home), "-n", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["logs", "--home", str(empty)]) == 1
    assert "no log yet" in capsys.readouterr().err
    assert main(["logs", "--home", str(tmp_path / "nowhere")]) == 2


async def test_a_working_peer_logs_none_of_its_secrets(tmp_path):
    ident = new_home(tmp_path / "laptop")
    handler = open_log(ident.home, logging.DEBUG)
    try:
        async with running(ident):
            value = '"the value of a private fact 7f3a"'
            await ask_async(
                ident.home, "vault.put", key="facts/diary", value=value, scope="private"
            )
            got = await ask_async(ident.home, "vault.get", key="facts/diary")
            code = (await ask_async(ident.home, "invite", ttl=60.0))["code"]
            with pytest.raises(ControlFailure):
                await ask_async(ident.home, "vault.get", key="facts/missing-7f3a")
    finally:
        close_log(handler)
    text = log_path(ident.home).read_text()
    assert got
    assert text  # the peer did log
    secrets = [
        "the value of a private fact 7f3a",
        code,
        code.split("-")[-1],
        ident.home.joinpath("device.key").read_bytes().hex()[:16],
    ]
    for secret in secrets:
        assert secret not in text
