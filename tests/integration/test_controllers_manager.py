"""The controller manager behind leader election: of two managers, exactly one runs controllers,
and the other takes over when the leader stops."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from fleetlet.server.client import ApiClient
from fleetlet.server.controllers import ControllerManager, ControllerOptions

from tests.integration.test_api_harness import start_api
from tests.integration.test_controllers_harness import NS, deployment, eventually


async def test_one_leader_runs_controllers_and_a_standby_takes_over(tmp_path: Path) -> None:
    async with start_api(tmp_path) as api:
        url = str(api.client.make_url("")).rstrip("/")
        clients = [ApiClient(url, api.admin) for _ in range(2)]
        managers = [
            ControllerManager(c, ControllerOptions(leader_elect=True, lease_duration=1.5, identity=f"m{i}"))
            for i, c in enumerate(clients)
        ]
        tasks = [asyncio.create_task(m.run()) for m in managers]
        try:
            await eventually(lambda: _leaders(managers, 1), "one leader")
            await asyncio.sleep(1.0)
            assert sum(m.leading.is_set() for m in managers) == 1, "never two leaders"
            leader = next(i for i, m in enumerate(managers) if m.leading.is_set())
            await clients[0].create(deployment("web", replicas=1), NS)
            await eventually(lambda: _workloads(clients[0], 1), "the leader's deployment controller works")

            tasks[leader].cancel()  # the leader stops (and releases the lease)
            with contextlib.suppress(asyncio.CancelledError):
                await tasks[leader]
            standby = managers[1 - leader]
            await eventually(lambda: _is(standby), "the standby takes over")
            await clients[1 - leader].patch(
                "deployments", "web", {"spec": {"placement": {"replicas": 2}}}, NS
            )
            await eventually(lambda: _workloads(clients[1 - leader], 2), "the new leader reconciles")
        finally:
            for t in tasks:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            for c in clients:
                await c.close()


async def _leaders(managers: list[ControllerManager], n: int) -> bool:
    return sum(m.leading.is_set() for m in managers) == n


async def _is(m: ControllerManager) -> bool:
    return m.leading.is_set()


async def _workloads(client: ApiClient, n: int) -> bool:
    return len((await client.list_all("workloads", NS))["items"]) == n
