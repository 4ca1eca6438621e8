"""Every transport passes the same conformance suite (transports.testing.CHECKS)."""

from __future__ import annotations

import pytest

from homeswarm.transports.testing import CHECKS, check_garbage, malformed_frames


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_memory(memory_fixture, check):
    await check(memory_fixture)


@pytest.mark.parametrize("data", malformed_frames(), ids=range(len(malformed_frames())))
async def test_memory_malformed(memory_fixture, data):
    await check_garbage(memory_fixture, data)


@pytest.fixture
def libp2p_fixture():
    from homeswarm.transports.testing import Libp2pFixture

    return Libp2pFixture()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_libp2p(libp2p_fixture, check):
    await check(libp2p_fixture)


@pytest.mark.parametrize("data", malformed_frames(), ids=range(len(malformed_frames())))
async def test_libp2p_malformed(libp2p_fixture, data):
    await check_garbage(libp2p_fixture, data)
