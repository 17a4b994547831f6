"""Durability: kill -9 the server during concurrent writes; every acknowledged write survives.

The server runs as a real process on SQLite (WAL, synchronous=FULL) and on PostgreSQL. A load of concurrent
creates runs until enough have been acknowledged, the process is SIGKILLed mid-stream, and a
restarted server must hold every object whose 201 response reached the client, with its data.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fixtures.ports import free_tcp_port
from tests.fixtures.procs import ServerProcess

pytestmark = pytest.mark.e2e

ROUNDS = 4
WORKERS = 32


def start_server(
    fleetlet_bin: str, data_dir: Path, port: int, tmp: Path, database: str | None = None
) -> ServerProcess:
    db = ["--database", database] if database else []
    proc = ServerProcess(
        [fleetlet_bin, "server", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}", *db],
        extra_env={"FLEETLET_CONFIG": str(tmp / "config.yaml")},
        log_dir=tmp / "logs",
        name="fleetlet-server",
    )
    return proc.start(wait_http=f"http://127.0.0.1:{port}/healthz", timeout=60)


async def load_until_killed(
    base: str, token: str, proc: ServerProcess, round_no: int, kill_after: int
) -> dict[str, dict[str, str]]:
    """Concurrent creates; SIGKILL the server once ``kill_after`` are acknowledged."""
    acked: dict[str, dict[str, str]] = {}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    url = f"{base}/api/v1/namespaces/default/configmaps"
    counter = iter(range(1_000_000))
    killed = asyncio.Event()

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in counter:
            if killed.is_set():
                return
            name = f"r{round_no}-{i}"
            data = {"round": str(round_no), "seq": str(i), "pad": "x" * (i % 97)}
            body = {
                "apiVersion": "fleetlet.io/v1",
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": data,
            }
            try:
                async with session.post(url, data=json.dumps(body), headers=headers) as resp:
                    await resp.read()
                    if resp.status == 201:
                        acked[name] = data
                    else:
                        raise AssertionError(f"unexpected {resp.status} for {name}")
            except (TimeoutError, aiohttp.ClientError):
                return  # the server is gone; the write is unacknowledged and may or may not exist
            if len(acked) >= kill_after and not killed.is_set():
                proc.kill(signal.SIGKILL)
                killed.set()

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(WORKERS)))
    return acked


async def read_all(base: str, token: str) -> dict[str, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    out: dict[str, dict[str, Any]] = {}
    async with aiohttp.ClientSession() as session:
        token_param = ""
        while True:
            async with session.get(
                f"{base}/api/v1/namespaces/default/configmaps?limit=500{token_param}", headers=headers
            ) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
            for item in body["items"]:
                out[item["metadata"]["name"]] = item
            cont = body["metadata"].get("continue")
            if not cont:
                return out
            token_param = f"&continue={cont}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> str | None:
    """SQLite in the data dir, or a fresh database on the private PostgreSQL server."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_db_url")
    return url


def test_acknowledged_writes_survive_kill_9(fleetlet_bin: str, tmp_path: Path, database: str | None) -> None:
    data_dir = tmp_path / "data"
    port = free_tcp_port()
    base = f"http://127.0.0.1:{port}"
    all_acked: dict[str, dict[str, str]] = {}
    for round_no in range(ROUNDS):
        proc = start_server(fleetlet_bin, data_dir, port, tmp_path, database)
        token = (data_dir / "admin.token").read_text().strip()
        try:
            acked = asyncio.run(load_until_killed(base, token, proc, round_no, 150 + 50 * round_no))
            assert proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            proc.stop()
        assert len(acked) >= 150
        all_acked.update(acked)

        proc = start_server(fleetlet_bin, data_dir, port, tmp_path, database)
        try:
            stored = asyncio.run(read_all(base, token))
        finally:
            proc.stop()
        missing = sorted(set(all_acked) - set(stored))
        assert not missing, f"round {round_no}: {len(missing)} acknowledged writes lost: {missing[:10]}"
        for name, data in all_acked.items():
            assert stored[name]["data"] == data, f"round {round_no}: {name} has wrong data"
