"""Node lifecycle against the real API: lease expiry, device grace, eviction of Replicas-mode
workloads (never EveryDevice ones), and devices that come back keep their workloads untouched."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fleetlet.server.controllers import LifecycleOptions

from tests.integration.test_controllers_harness import NS, Env, controller_env, deployment, eventually

Obj = dict[str, Any]


def ready(obj: Obj) -> Obj:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return dict(c)
    return {}


async def phase(env: Env, device: str) -> str:
    return str(((await env.client.get("devices", device)).get("status") or {}).get("phase"))


async def snapshot(env: Env) -> dict[str, tuple[str, int, str]]:
    """uid -> (device, generation, spec) for every workload."""
    import json

    return {
        w["metadata"]["uid"]: (
            w["spec"].get("deviceName", ""),
            w["metadata"]["generation"],
            json.dumps(w["spec"], sort_keys=True),
        )
        for w in await env.workloads()
    }


async def test_lease_expiry_marks_gateway_not_ready_and_devices_unknown(tmp_path: Path) -> None:
    opts = LifecycleOptions(device_grace=30, eviction_timeout=600, lease_grace=0.2, monitor_period=0.1)
    async with controller_env(tmp_path, lifecycle=opts) as env:
        await env.fleet.add_gateway()
        for d in ("d1", "d2"):
            await env.fleet.add_device(d)
        env.fleet.start()
        await eventually(lambda: _lease(env), "the fleet renews its lease")
        await asyncio.sleep(1.5)  # longer than the 1 s lease: a renewing gateway stays Ready
        gw = await env.client.get("gateways", "gw1")
        assert ready(gw)["status"] == "True"

        env.fleet.heartbeat = False  # the gateway dies: no lease renewals, no device reports
        await eventually(lambda: _gw_reason(env, "False", "NodeStatusUnknown"), "gateway NotReady")
        await eventually(lambda: _phases(env, {"d1": "Unknown", "d2": "Unknown"}), "devices Unknown")
        events = await env.events("GatewayNotReady")
        assert events and events[0]["type"] == "Warning" and events[0]["involvedObject"]["name"] == "gw1"

        env.fleet.heartbeat = True  # back
        await eventually(lambda: _gw_reason(env, "True", "LeaseRenewed"), "gateway Ready again")
        await eventually(lambda: _phases(env, {"d1": "Online", "d2": "Online"}), "devices Online again")


async def _lease(env: Env) -> bool:
    lease = await env.client.get("leases", "gw1", "fleetlet-node-lease")
    return bool(lease["spec"].get("renewTime"))


async def _gw_reason(env: Env, status: str, reason: str) -> bool:
    c = ready(await env.client.get("gateways", "gw1"))
    return c.get("status") == status and c.get("reason") == reason


async def _phases(env: Env, want: dict[str, str]) -> bool:
    return {d: await phase(env, d) for d in want} == want


async def test_device_grace_offline_then_eviction_of_replicas_only(tmp_path: Path) -> None:
    opts = LifecycleOptions(device_grace=0.5, eviction_timeout=1.0, lease_grace=0.5, monitor_period=0.1)
    async with controller_env(tmp_path, lifecycle=opts) as env:
        await env.fleet.add_gateway()
        for d in ("d1", "d2", "d3"):
            await env.fleet.add_device(d)
        env.fleet.start()
        await env.client.create(deployment("web", replicas=3), NS)
        await env.client.create(deployment("agent", mode="EveryDevice"), NS)

        async def settled() -> bool:
            wls = await env.workloads()
            return len(wls) == 6 and all((w.get("status") or {}).get("phase") == "Running" for w in wls)

        await eventually(settled, "3 web + 3 agent workloads running")
        on_d1 = {
            w["metadata"]["labels"]["fleetlet.io/deployment"]: w
            for w in await env.workloads()
            if w["spec"]["deviceName"] == "d1"
        }
        assert set(on_d1) == {"web", "agent"}
        before = await snapshot(env)

        env.fleet.down.add("d1")  # d1 goes silent; the gateway keeps renewing its lease
        await eventually(lambda: _phases(env, {"d1": "Offline"}), "d1 Offline after the grace")
        assert await phase(env, "d2") == "Online"

        web_uid = on_d1["web"]["metadata"]["uid"]
        agent_uid = on_d1["agent"]["metadata"]["uid"]

        async def evicted() -> bool:
            uids = {w["metadata"]["uid"] for w in await env.workloads()}
            web = await env.workloads("web")
            return (
                web_uid not in uids
                and len(web) == 3
                and all(w["spec"].get("deviceName") in ("d2", "d3") for w in web)
            )

        await eventually(evicted, "web workload on d1 evicted and recreated elsewhere")
        agent = {w["metadata"]["uid"]: w for w in await env.workloads("agent")}
        assert agent_uid in agent, "EveryDevice workloads wait for their device"
        assert agent[agent_uid]["spec"]["deviceName"] == "d1"
        ev = await env.events("Evicted", NS)
        assert ev and ev[0]["involvedObject"]["name"] == on_d1["web"]["metadata"]["name"]

        # d1 comes back: status only; no workload is recreated, moved or changed.
        during = await snapshot(env)
        env.fleet.down.discard("d1")
        await eventually(lambda: _phases(env, {"d1": "Online"}), "d1 Online again")
        await asyncio.sleep(1.5)
        after = await snapshot(env)
        assert after == during, "a device that comes back must not cause workload changes"
        assert before[agent_uid] == after[agent_uid]


async def test_short_outage_keeps_every_workload(tmp_path: Path) -> None:
    opts = LifecycleOptions(device_grace=3, eviction_timeout=30, lease_grace=0.3, monitor_period=0.1)
    async with controller_env(tmp_path, lifecycle=opts) as env:
        await env.fleet.add_gateway()
        for d in ("d1", "d2"):
            await env.fleet.add_device(d)
        env.fleet.start()
        await env.client.create(deployment("web", replicas=2), NS)
        await env.client.create(deployment("agent", mode="EveryDevice"), NS)

        async def settled() -> bool:
            wls = await env.workloads()
            return len(wls) == 4 and all((w.get("status") or {}).get("phase") == "Running" for w in wls)

        await eventually(settled, "workloads running")
        before = await snapshot(env)
        # The whole gateway drops off (lease and devices), shorter than the eviction timeout.
        env.fleet.heartbeat = False
        env.fleet.down.update({"d1", "d2"})
        await eventually(lambda: _phases(env, {"d1": "Unknown", "d2": "Unknown"}), "devices Unknown")
        await asyncio.sleep(0.5)
        env.fleet.heartbeat = True
        env.fleet.down.clear()
        await eventually(lambda: _phases(env, {"d1": "Online", "d2": "Online"}), "devices back")
        await asyncio.sleep(1.0)
        assert await snapshot(env) == before, "same uids, same devices, same generation and spec"
        mgr = env.manager.get("nodelifecycle")
        assert mgr is not None and getattr(mgr, "evicted", None) == 0
