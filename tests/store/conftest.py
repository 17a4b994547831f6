"""Store fixtures: every store test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fleetlet.server.store import Store

OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fleetlet.db"
    url: str = request.getfixturevalue("postgres_db_url")
    return url


@pytest.fixture
async def open_store(store_url: str) -> AsyncIterator[OpenStore]:
    opened: list[Store] = []

    async def _open(**kwargs: Any) -> Store:
        kwargs.setdefault("compaction_interval", 0)  # tests compact explicitly
        s = await Store.open(store_url, **kwargs)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        await s.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()
