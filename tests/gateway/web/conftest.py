"""Fixtures of the web-inbox tests: one data folder per module, a gateway per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway.web.webkit import Clock, Made, WebGateway, make_folder, serve_web, sqlite_store


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    return make_folder(tmp_path_factory.mktemp("web-home"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def gw(made: Made, tmp_path: Path, clock: Clock) -> AsyncIterator[WebGateway]:
    """A gateway on its own SQLite store, no A2A agent."""
    async with serve_web(
        made, tmp_path / "scratch", store=sqlite_store(tmp_path / "baton.db"), clock=clock
    ) as running:
        yield running
