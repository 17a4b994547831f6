"""Shared harness for the controller tests: the real API server in-process (aiohttp TestServer on
loopback over a temp SQLite store), an admin ``ApiClient``, the ControllerManager, and a small
simulated fleet that plays scheduler and gateway through the API (binds workloads, reports their
status, heartbeats leases and devices) the way the real components would.

Kept as a test_* module so the other controller test modules can import it without a conftest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from fleetlet.server.client import ApiClient, ApiError
from fleetlet.server.controllers import ControllerManager, ControllerOptions, LifecycleOptions
from fleetlet.server.controllers.rollout import REVISION_LABEL

from tests.integration.test_api_harness import start_api

Obj = dict[str, Any]
T = TypeVar("T")
NS = "default"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def eventually(fn: Callable[[], Awaitable[T]], what: str, within: float = 15.0) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await fn()
        except (ApiError, AssertionError) as e:
            last = e
        else:
            if last:
                return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def deployment(
    name: str,
    image: str = "nginx:1",
    *,
    replicas: int | None = 3,
    mode: str = "Replicas",
    strategy: Obj | None = None,
    node_selector: dict[str, str] | None = None,
) -> Obj:
    spec: Obj = {"runtime": "docker", "containers": [{"name": "main", "image": image}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    placement: Obj = {"mode": mode}
    if mode == "Replicas" and replicas is not None:
        placement["replicas"] = replicas
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
            "placement": placement,
            "strategy": strategy or {},
        },
    }


@dataclass
class Fleet:
    """Plays scheduler and gateway. Images containing "bad" crash; devices in ``down`` are silent."""

    client: ApiClient
    gateway: str = "gw1"
    lease_seconds: int = 1
    down: set[str] = field(default_factory=set)
    heartbeat: bool = True
    schedule: bool = True
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def add_gateway(self, labels: dict[str, str] | None = None) -> None:
        await self.client.create(
            {
                "apiVersion": "fleetlet.io/v1",
                "kind": "Gateway",
                "metadata": {"name": self.gateway, "labels": labels or {}},
            }
        )
        await self.client.patch_status(
            "gateways",
            self.gateway,
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "GatewayReady",
                            "lastTransitionTime": now(),
                        }
                    ]
                }
            },
        )

    async def add_device(self, name: str, labels: dict[str, str] | None = None) -> Obj:
        dev = await self.client.create(
            {
                "apiVersion": "fleetlet.io/v1",
                "kind": "Device",
                "metadata": {"name": name, "labels": labels or {}},
                "spec": {"gateway": self.gateway, "runtimes": ["docker"]},
            }
        )
        await self.report_device(name)
        return dev

    async def report_device(self, name: str) -> None:
        await self.client.patch_status("devices", name, {"status": {"phase": "Online", "lastSeen": now()}})

    async def renew_lease(self) -> None:
        body = {
            "apiVersion": "fleetlet.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.gateway, "namespace": "fleetlet-node-lease"},
            "spec": {
                "holderIdentity": self.gateway,
                "leaseDurationSeconds": self.lease_seconds,
                "renewTime": now(),
            },
        }
        try:
            await self.client.patch("leases", self.gateway, {"spec": body["spec"]}, "fleetlet-node-lease")
        except ApiError as e:
            if not e.is_not_found:
                raise
            await self.client.create(body, "fleetlet-node-lease")

    def start(self) -> None:
        self.tasks.append(asyncio.create_task(self._loop()))

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(ApiError):
                await self.step()
            await asyncio.sleep(0.05)

    async def step(self) -> None:
        devices = (await self.client.list_all("devices"))["items"]
        if self.heartbeat:
            await self.renew_lease()
            for d in devices:
                name = d["metadata"]["name"]
                if name not in self.down:
                    await self.report_device(name)
        online = sorted(
            d["metadata"]["name"]
            for d in devices
            if d["metadata"]["name"] not in self.down and not d["metadata"].get("deletionTimestamp")
        )
        wls = (await self.client.list_all("workloads"))["items"]
        load = {n: 0 for n in online}
        for w in wls:
            dev = w["spec"].get("deviceName")
            if dev in load:
                load[dev] += 1
        for w in wls:
            meta, spec = w["metadata"], w["spec"]
            dev = spec.get("deviceName")
            if not dev:
                if self.schedule and online:
                    target = min(online, key=lambda n: (load[n], n))
                    load[target] += 1
                    with contextlib.suppress(ApiError):
                        await self.client.bind(meta["namespace"], meta["name"], target)
                continue
            if dev in self.down:
                continue
            await self._report(w)

    async def _report(self, w: Obj) -> None:
        bad = any("bad" in c.get("image", "") for c in w["spec"].get("containers", []))
        status = w.get("status") or {}
        if bad:
            want: Obj = {
                "phase": "Failed",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "CrashLoop", "lastTransitionTime": now()}
                ],
            }
            if status.get("phase") == "Failed":
                return
        else:
            if status.get("phase") == "Running":
                return
            want = {
                "phase": "Running",
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Started", "lastTransitionTime": now()}
                ],
            }
        meta = w["metadata"]
        with contextlib.suppress(ApiError):
            await self.client.patch_status("workloads", meta["name"], {"status": want}, meta["namespace"])


@dataclass
class Env:
    client: ApiClient
    manager: ControllerManager
    fleet: Fleet

    async def workloads(self, deploy: str | None = None) -> list[Obj]:
        sel = f"fleetlet.io/deployment={deploy}" if deploy else None
        items = (await self.client.list_all("workloads", NS, label_selector=sel))["items"]
        return [w for w in items if not w["metadata"].get("deletionTimestamp")]

    async def deploy(self, name: str) -> Obj:
        return await self.client.get("deployments", name, NS)

    async def revisions(self, deploy: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in await self.workloads(deploy):
            rev = w["metadata"]["labels"][REVISION_LABEL]
            out[rev] = out.get(rev, 0) + 1
        return out

    async def events(self, reason: str, namespace: str | None = None) -> list[Obj]:
        items = (await self.client.list_all("events", namespace))["items"]
        return [e for e in items if e.get("reason") == reason]


@asynccontextmanager
async def controller_env(
    tmp_path: Path,
    *,
    controllers: tuple[str, ...] = ("deployment", "nodelifecycle", "garbagecollector", "namespace"),
    lifecycle: LifecycleOptions | None = None,
    leader_elect: bool = False,
) -> AsyncIterator[Env]:
    async with start_api(tmp_path) as api:
        url = str(api.client.make_url("")).rstrip("/")
        client = ApiClient(url, api.admin)
        options = ControllerOptions(
            controllers=controllers,
            leader_elect=leader_elect,
            lifecycle=lifecycle or LifecycleOptions(startup_grace=3600, monitor_period=0.1),
            namespace_retry_period=0.2,
            lease_duration=3.0,
        )
        manager = ControllerManager(client, options)
        task = asyncio.create_task(manager.run())
        fleet = Fleet(client)
        try:
            await asyncio.wait_for(manager.wait_synced(), 15)
            yield Env(client, manager, fleet)
        finally:
            await fleet.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()


async def test_harness_starts_controllers_and_fleet(tmp_path: Path) -> None:
    async with controller_env(tmp_path) as env:
        await env.fleet.add_gateway()
        await env.fleet.add_device("d1")
        dev = await env.client.get("devices", "d1")
        assert dev["status"]["phase"] == "Online"
        assert {c.name for c in env.manager.controllers} == {
            "deployment",
            "nodelifecycle",
            "garbagecollector",
            "namespace",
        }
