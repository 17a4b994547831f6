"""The server entry point (run_server) on a real port, and the API over PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fleetlet.server.api.main import run_server
from fleetlet.server.store import Store

from tests.fixtures.ports import free_port
from tests.integration.test_api_harness import Api, start_api, workload


async def test_run_server_serves_bootstraps_and_stops_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleetlet.api")
    port = free_port()
    ready = asyncio.Event()
    started: list[web.Application] = []

    async def hook(app: web.Application) -> None:
        started.append(app)

    config = tmp_path / "cfg" / "config.yaml"
    server = asyncio.create_task(
        run_server(
            tmp_path / "data", f"127.0.0.1:{port}", ready_event=ready, extra_startup=hook, config_path=config
        )
    )
    await asyncio.wait_for(ready.wait(), 30)
    assert started, "extra_startup ran before ready"
    token = (tmp_path / "data" / "admin.token").read_text().strip()
    assert stat.S_IMODE(os.stat(tmp_path / "data" / "admin.token").st_mode) == 0o600
    assert (tmp_path / "data" / "fleetlet.db").exists()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/readyz", headers=headers) as r:
            assert r.status == 200
        async with http.post(
            f"{base}/api/v1/namespaces/default/workloads", json=workload("w"), headers=headers
        ) as r:
            assert r.status == 201
        watch = await http.get(f"{base}/api/v1/workloads", params={"watch": "1"}, headers=headers)
        first = json.loads(await watch.content.readline())
        assert first["type"] == "ADDED"
        server.cancel()  # like SIGTERM: stop accepting, end watches, close the store
        with pytest.raises(asyncio.CancelledError):
            await server
        rest = await asyncio.wait_for(watch.content.read(), 10)
        assert rest == b""
        watch.close()
    assert any(
        "listening on http://127.0.0.1" in r.getMessage() and "sqlite" in r.getMessage()
        for r in caplog.records
    )
    # The data survived, and a second start keeps the same admin token.
    ready2 = asyncio.Event()
    server2 = asyncio.create_task(
        run_server(tmp_path / "data", f"127.0.0.1:{port}", ready_event=ready2, config_path=config)
    )
    await asyncio.wait_for(ready2.wait(), 30)
    assert (tmp_path / "data" / "admin.token").read_text().strip() == token
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/v1/namespaces/default/workloads/w", headers=headers) as r:
            assert r.status == 200
    server2.cancel()
    with pytest.raises(asyncio.CancelledError):
        await server2


@pytest.mark.postgres
async def test_crud_and_watch_on_postgres(tmp_path: Path, postgres_db_url: str) -> None:
    store = await Store.open(postgres_db_url, compaction_interval=0)
    try:
        from aiohttp.test_utils import TestClient, TestServer
        from fleetlet.server.api import create_app
        from fleetlet.server.auth import ensure_admin

        async with TestClient(TestServer(create_app(store))) as client:
            admin = await ensure_admin(store, tmp_path / "d", "http://t", tmp_path / "c.yaml")
            api = Api(client, store, admin, tmp_path / "d")
            await _smoke(api)
    finally:
        await store.close()


async def test_crud_and_watch_smoke_on_sqlite(tmp_path: Path) -> None:
    async with start_api(tmp_path) as api:
        await _smoke(api)


async def _smoke(api: Api) -> None:
    ns = "/api/v1/namespaces/default"
    created: Any = await api.ok("POST", f"{ns}/workloads", workload("a"))
    rv = created["metadata"]["resourceVersion"]
    await api.ok("PATCH", f"{ns}/workloads/a", {"spec": {"priority": 1}})
    stale = await api.call("PUT", f"{ns}/workloads/a", created)
    assert stale.status == 409
    await api.ok("DELETE", f"{ns}/workloads/a")
    events = await api.watch_lines(f"{ns}/workloads", {"resourceVersion": rv, "timeoutSeconds": "0.3"})
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert (await api.ok("GET", f"{ns}/workloads"))["items"] == []
