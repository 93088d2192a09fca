"""Fixtures the probe tests share: a probe context on a plain HTTP session, and a test CA."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme

from failsight.core.check import ProbeContext


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    """What the agent hands every run, vantage `test` (a module may define its own)."""
    async with aiohttp.ClientSession() as http:
        yield ProbeContext(vantage="test", http=http)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)
