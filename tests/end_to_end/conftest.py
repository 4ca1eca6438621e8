"""What the end-to-end tests share: swarms of real `swarm up` processes on loopback, waiting on
them, and the CLI run in this process.

- ``swarm``: a fresh, empty ``Swarm`` of this test's own (it makes its homes and starts its peers;
  every peer is stopped at the end);
- ``demo``: the three-device demo swarm (server, laptop, phone, as ``swarm demo`` makes it),
  started once and shared by the tests that only use it: its start (three processes, pairing,
  Ray on the laptop and the server at their first run) is most of such a test's time. A test that
  stops a peer or changes one calls ``demo.spend()`` first: the next test to ask gets a new one;
- ``wait_until(check, what, timeout)``: polls until ``check()`` holds, the seconds it took, or
  fails the test after ``timeout``;
- ``cli(*argv)``: ``swarm ARGV`` in this process, ``(exit code, stdout, stderr)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from homeswarm.cli import main
from homeswarm.cli._demo import Swarm
from homeswarm.swarm._control import ask

READY_TIMEOUT = 40.0  # the demo's three devices alive, with their kernels and RTTs, at the laptop


def wait_until(check: Callable[[], Any], what: str, timeout: float, every: float = 0.2) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(every)
    return time.monotonic() - started


class Peers(Swarm):
    """A ``Swarm`` that also reads its peers' views (``status`` over each home's control socket)."""

    spent = False

    def view(self, home: Path) -> dict[str, dict[str, Any]]:
        """``home``'s peers by name (raises when it does not answer)."""
        return {p["name"]: p for p in ask(home, "status")["peers"]}

    def row(self, home: Path, name: str) -> dict[str, Any] | None:
        """What ``home`` says of ``name``; None when it does not answer or does not know it."""
        try:
            return self.view(home).get(name)
        except Exception:
            return None

    def state_of(self, home: Path, name: str) -> str | None:
        row = self.row(home, name)
        return row["state"] if row else None

    def spend(self) -> None:
        """This test is about to disturb the shared swarm: nobody gets it after this test."""
        self.spent = True


def demo_ready(laptop: Path) -> bool:
    """The laptop sees all three alive, each with its kernels, and an RTT to the full members."""
    try:
        peers = {p["name"]: p for p in ask(laptop, "status")["peers"]}
    except Exception:
        return False
    return (
        len(peers) == 3
        and all(p["state"] == "alive" and p["capabilities"]["kernels"] for p in peers.values())
        # (nobody probes the phone, a light member on battery: no RTT to it)
        and all(
            p["latency_ms"] is not None or p["lease_s"] for p in peers.values() if not p["self"]
        )
    )


@pytest.fixture(name="wait_until")
def _wait_until() -> Callable[..., float]:
    return wait_until


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[Peers]:
    s = Peers(tmp_path / "homes")
    s.root.mkdir()
    try:
        yield s
    finally:
        s.stop()


class _Shared:
    """The session's demo swarm: made when first asked for, again after a test spent it, and
    stopped after the last test of the session that asks for it (not at the session's end: the
    tests after it should have the machine to themselves)."""

    def __init__(self, factory: pytest.TempPathFactory, last: str | None) -> None:
        self.factory = factory
        self.last = last  # the node id of the last test that uses it
        self.current: Peers | None = None

    def get(self) -> Peers:
        if self.current is not None and self.current.spent:
            self.close()
        if self.current is None:
            s = Peers(self.factory.mktemp("demo"))
            self.current = s
            try:
                s.create(3)
                wait_until(lambda: demo_ready(s.homes[1]), "the demo's three ready", READY_TIMEOUT)
            except BaseException:
                s.spend()  # the next test starts again
                raise
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current, s = None, self.current
            s.stop()


@pytest.fixture(scope="session")
def _shared_demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Shared]:
    users = [i.nodeid for i in request.session.items if "demo" in getattr(i, "fixturenames", ())]
    shared = _Shared(tmp_path_factory, users[-1] if users else None)
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def demo(_shared_demo: _Shared, request: pytest.FixtureRequest) -> Iterator[Peers]:
    yield _shared_demo.get()
    if request.node.nodeid == _shared_demo.last:
        _shared_demo.close()
