from __future__ import annotations

import pytest

from homeswarm.transports.testing import MemoryFixture


@pytest.fixture
def memory_fixture(autojump_clock) -> MemoryFixture:
    return MemoryFixture()
