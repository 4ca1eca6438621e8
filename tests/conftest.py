from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from homeswarm.transports.testing import MemoryFixture

# no time limit per example: on a loaded machine (CI beside other jobs, 2 cores) hypothesis's
# default 200 ms deadline fails tests whose behaviour is right (a test that wants a limit sets it)
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


@pytest.fixture
def memory_fixture(autojump_clock) -> MemoryFixture:
    return MemoryFixture()


# ---- no vault value in any log of the whole suite ------------------------------------------------
# Every value any test writes into a vault replica in this process is noted, every log record the
# suite makes (INFO and up, what `swarm up` writes, with exception texts) is kept, and the session
# fails if one of the values shows up in the log. Values shorter than 8 characters ("from 2") occur
# in log lines by chance.


class _SuiteLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.parts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # a record that cannot be formatted says nothing
            self.parts.append(self.format(record))


SUITE_LOG = _SuiteLog()
WRITTEN: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sweep: a chunk (param `chunk`) of a seed sweep; coverage traces chunk 0 only"
    )
    from homeswarm.vault import Replica

    root = logging.getLogger()
    root.addHandler(SUITE_LOG)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))  # what `swarm up` writes
    put = Replica.put

    def noting_put(self, key, text, scope=None, **when):  # type: ignore[no-untyped-def]
        try:
            value = json.loads(text)
        except (TypeError, ValueError):
            value = text
        for candidate in (value, text):
            if isinstance(candidate, str) and len(candidate) >= 8:
                WRITTEN.add(candidate)
        return put(self, key, text, scope, **when)

    Replica.put = noting_put  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logged = "\n".join(SUITE_LOG.parts)
    leaked = sorted(v for v in WRITTEN if v in logged)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller judges the whole session
        workeroutput["leaked"] = [v[:40] for v in leaked[:5]]
        return
    leaked += LEAKED_BY_WORKERS
    if leaked:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        line = f"vault values found in the suite's logs: {[v[:40] for v in leaked[:5]]}"
        if reporter is not None:
            reporter.write_line(line, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


LEAKED_BY_WORKERS: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist, in the controller: what a worker found in its own logs."""
    LEAKED_BY_WORKERS.extend(getattr(node, "workeroutput", {}).get("leaked", []))


# ---- seed sweeps: coverage traces one chunk ------------------------------------------------------
# A sweep runs the same scenario over many seeds, in chunks (a test per chunk, parametrized by
# ``chunk``, marked ``sweep``) so that pytest-xdist's workers share them. Under coverage
# (scripts/test measures it) a chunk cost three times as much, to trace the same lines again: only
# chunk 0 is traced; the others run with every coverage collector of this process stopped. Their
# seeds are all still run and checked. (pytest-cov's own ``no_cover`` does not do it under
# pytest-xdist: a worker runs two collectors, and pausing pytest-cov's resumes the other.)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    callspec = getattr(item, "callspec", None)
    if not (item.get_closest_marker("sweep") and callspec and callspec.params.get("chunk")):
        return (yield)
    import coverage

    stopped = []
    while (cov := coverage.Coverage.current()) is not None:
        cov.stop()
        stopped.append(cov)
    try:
        return (yield)
    finally:
        for cov in reversed(stopped):
            cov.start()


# ---- one local Ray runtime for the whole run -----------------------------------------------------


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[Any]:
    """A local Ray runtime (it takes seconds to start), shared by every test that needs one:
    executors made with ``RayRuntime()`` join it and leave it running."""
    pytest.importorskip("ray")
    from homeswarm.placement import RayRuntime

    ours = RayRuntime(num_cpus=2)
    ours.start()
    assert ours.started_here
    yield ours
    ours.shutdown()
