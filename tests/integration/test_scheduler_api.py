"""The scheduler against the real API server (in-process, tmp SQLite store, admin token).

- pending workloads get bound, respecting constraints and capacity;
- an unschedulable workload gets Scheduled=False and a FailedScheduling Event, and is bound
  once a fitting device appears;
- two schedulers with leader election: the leader is killed mid-stream, the other takes
  over, and the store's history shows every workload's spec.deviceName set exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from fleetlet.server.api.main import create_app
from fleetlet.server.auth.bootstrap import ensure_admin
from fleetlet.server.client import ApiClient
from fleetlet.server.scheduler.scheduler import Scheduler
from fleetlet.server.scheduler.testing import make_device, make_gateway, make_workload
from fleetlet.server.store import Store

pytestmark = pytest.mark.timeout(120)


@dataclass
class Api:
    store: Store
    url: str
    token: str

    def client(self) -> ApiClient:
        return ApiClient(self.url, self.token)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = await Store.open(f"sqlite:///{tmp_path}/fleetlet.db", compaction_interval=0)
    server = TestServer(create_app(store), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    token = await ensure_admin(store, tmp_path, url, tmp_path / "config.yaml")
    try:
        yield Api(store, url, token)
    finally:
        await server.close()
        await store.close()


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = 30.0, what: str = "") -> None:
    """Poll until ``check()`` holds (a deadline for a hung test, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


async def create_fleet(client: ApiClient, gateways: int, devices_per_gateway: int, **device_kw: Any) -> None:
    for g in range(gateways):
        gw = await client.create(make_gateway(f"gw{g}", labels={"zone": f"z{g % 2}"}))
        await client.patch_status(
            "gateways", f"gw{g}", {"status": gw.get("status") or make_gateway("x")["status"]}
        )
        for d in range(devices_per_gateway):
            name = f"gw{g}-d{d}"
            await client.create(make_device(name, f"gw{g}", **device_kw))
            await client.patch_status("devices", name, {"status": {"phase": "Online"}})


async def bound_map(client: ApiClient, namespace: str = "default") -> dict[str, str]:
    items = (await client.list_all("workloads", namespace)).get("items") or []
    return {w["metadata"]["name"]: (w.get("spec") or {}).get("deviceName", "") for w in items}


@contextlib.asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(scheduler.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_binds_pending_workloads_within_capacity(api: Api) -> None:
    async with api.client() as client:
        await create_fleet(client, gateways=2, devices_per_gateway=3, memory="100Mi")
        # Created before the scheduler starts (found by the initial list) and after (by the watch).
        for i in range(6):
            await client.create(
                make_workload(f"early-{i}", memory="40Mi", labels={"fleetlet.io/deployment": "a"})
            )
        scheduler = Scheduler(client, leader_election=False)
        async with running(scheduler):
            await scheduler.wait_synced()
            for i in range(6):
                await client.create(make_workload(f"late-{i}", memory="40Mi"))

            async def all_bound() -> bool:
                return all((await bound_map(client)).values())

            await eventually(all_bound, what="12 workloads bound")
        placements = await bound_map(client)
        per_device: dict[str, int] = {}
        for device in placements.values():
            per_device[device] = per_device.get(device, 0) + 1
        assert max(per_device.values()) <= 2  # 2 x 40Mi fit in 100Mi, 3 do not
        assert len(per_device) == 6
        early_gateways = {placements[f"early-{i}"].split("-")[0] for i in range(6)}
        assert early_gateways == {"gw0", "gw1"}  # spread across gateways
        wl = await client.get("workloads", "early-0", "default")
        assert wl["spec"]["gatewayName"] == wl["spec"]["deviceName"].split("-")[0]
        assert scheduler.stats.bound == 12 and scheduler.stats.bind_conflicts == 0


async def test_unschedulable_gets_condition_and_event_then_binds_when_a_device_fits(api: Api) -> None:
    async with api.client() as client:
        await create_fleet(client, gateways=1, devices_per_gateway=2, memory="64Mi")
        await client.create(make_device("esp", "gw0", runtimes=["micropython"], arch="xtensawin"))
        await client.patch_status("devices", "esp", {"status": {"phase": "Online"}})
        scheduler = Scheduler(client, leader_election=False)
        async with running(scheduler):
            await client.create(make_workload("big", memory="512Mi"))

            async def has_condition() -> bool:
                wl = await client.get("workloads", "big", "default")
                conds = (wl.get("status") or {}).get("conditions") or []
                return any(c["type"] == "Scheduled" and c["status"] == "False" for c in conds)

            await eventually(has_condition, what="Scheduled=False")
            wl = await client.get("workloads", "big", "default")
            cond = next(c for c in wl["status"]["conditions"] if c["type"] == "Scheduled")
            expected = "0/3 devices are available: 2 have insufficient memory, 1 lack runtime docker."
            assert cond["reason"] == "Unschedulable" and cond["message"] == expected

            async def has_event() -> bool:
                events = (await client.list("events", "default")).get("items") or []
                return any(e.get("reason") == "FailedScheduling" for e in events)

            await eventually(has_event, what="FailedScheduling event")
            events = [
                e
                for e in (await client.list("events", "default"))["items"]
                if e["reason"] == "FailedScheduling"
            ]
            assert events[0]["type"] == "Warning" and events[0]["message"] == expected
            assert events[0]["involvedObject"]["name"] == "big"
            assert not wl["spec"].get("deviceName")

            # The fleet changes: a device that fits joins, and the workload is retried and bound.
            await client.create(make_device("pi-big", "gw0", memory="1Gi"))
            await client.patch_status("devices", "pi-big", {"status": {"phase": "Online"}})

            async def bound() -> bool:
                return (await bound_map(client)).get("big") == "pi-big"

            await eventually(bound, what="big bound to pi-big")
            wl = await client.get("workloads", "big", "default")
            cond = next(c for c in wl["status"]["conditions"] if c["type"] == "Scheduled")
            assert cond["status"] == "True"
        # Retries of the same failure did not write the same condition again and again.
        assert scheduler.stats.status_patches <= 2


async def _device_name_history(store: Store, since: int) -> dict[str, list[str]]:
    """For each workload, every distinct non-empty spec.deviceName its history shows, in order."""
    watcher = store.watch("workloads", since=since)
    seen: dict[str, list[str]] = {}
    try:
        async with asyncio.timeout(10):
            async for _, ev in watcher:
                obj = ev.object
                name = obj["metadata"]["name"]
                dev = (obj.get("spec") or {}).get("deviceName")
                if dev and (not seen.get(name) or seen[name][-1] != dev):
                    seen.setdefault(name, []).append(dev)
                if watcher.pending() == 0:
                    break  # the history is read (nothing writes any more)
    finally:
        watcher.close()
    return seen


async def test_leader_killed_mid_stream_no_double_binding(api: Api) -> None:
    async with api.client() as c1, api.client() as c2, api.client() as creator:
        await create_fleet(creator, gateways=4, devices_per_gateway=5, memory="1Gi")
        start_revision = api.store.revision
        opts: dict[str, Any] = {"name": "fleetlet-scheduler", "lease_duration": 2.0}
        s1 = Scheduler(c1, identity="sched-1", **opts)
        s2 = Scheduler(c2, identity="sched-2", **opts)
        t1 = asyncio.create_task(s1.run())
        t2 = asyncio.create_task(s2.run())
        try:
            await eventually(lambda: _true(s1.is_leader or s2.is_leader), what="a leader")
            leader, follower = (s1, s2) if s1.is_leader else (s2, s1)
            leader_task = t1 if leader is s1 else t2
            total = 200

            async def create_all() -> None:
                for i in range(total):
                    await creator.create(make_workload(f"w-{i:03}", memory="10Mi"))

            creating = asyncio.create_task(create_all())
            await eventually(lambda: _true(leader.stats.bound >= 20), what="the leader binding")
            leader_task.cancel()  # killed mid-stream
            with contextlib.suppress(asyncio.CancelledError):
                await leader_task
            await creating
            await eventually(lambda: _true(follower.is_leader), what="the follower taking over")

            async def all_bound() -> bool:
                return sum(1 for d in (await bound_map(creator)).values() if d) == total

            await eventually(all_bound, limit=60, what="all workloads bound")
            # No sum check: binds in flight when the leader was cancelled can land uncounted.
            assert follower.stats.bound > 0
            lease = await creator.get("leases", "fleetlet-scheduler", "fleetlet-system")
            assert lease["spec"]["holderIdentity"] == follower.identity
        finally:
            for t in (t1, t2):
                t.cancel()
            for t in (t1, t2):
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        history = await _device_name_history(api.store, start_revision)
        assert len(history) == total
        twice = {name: devs for name, devs in history.items() if len(devs) != 1}
        assert not twice, f"workloads bound more than once: {twice}"
        # And no device is over-committed (1Gi, 10Mi each: at most 102 per device).
        per_device: dict[str, int] = {}
        for devs in history.values():
            per_device[devs[0]] = per_device.get(devs[0], 0) + 1
        assert max(per_device.values()) <= 102


async def _true(value: bool) -> bool:
    return value
