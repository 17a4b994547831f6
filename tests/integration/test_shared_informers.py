"""Shared informers: one watch per resource for every loop in a process (client-go's factory).

Against the real API (in-process aiohttp server over a temp SQLite store): consumers share one
stream and one cache, a late joiner first sees the cache as adds, a removed consumer hears
nothing more; and the in-process control loops of `fleetlet server` open each watch once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import aiohttp
from fleetlet.server.client import SharedInformers
from fleetlet.server.control_loops import run_control_loops
from fleetlet.server.scheduler.testing import make_device, make_gateway, make_workload

from tests.integration.test_scheduler_api import Api, api, bound_map, create_fleet, eventually

__all__ = ["api"]  # the fixture, imported for pytest


def _names(seen: list[Any]) -> list[str]:
    return [o["metadata"]["name"] for o in seen]


async def _watch_streams(a: Api) -> dict[str, float]:
    """Open watch streams per resource, from the API server's own metrics."""
    headers = {"Authorization": f"Bearer {a.token}"}
    async with aiohttp.ClientSession() as s, s.get(f"{a.url}/metrics", headers=headers) as r:
        text = await r.text()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^fleetlet_apiserver_watchers\{resource="([^"]+)"\} (\S+)$', text, re.M)
    }


async def test_consumers_share_one_watch_late_joiners_replay_and_removal_stops_delivery(api: Api) -> None:
    async with api.client() as client, api.client() as writer:
        await writer.create(make_gateway("gw0"))
        shared = SharedInformers(client)
        first = shared.informer("devices")
        assert shared.informer("devices") is first  # same key, same informer
        assert shared.informer("devices", label_selector="a=b") is not first
        a_seen: list[Any] = []
        first.add_handlers(on_add=a_seen.append)
        runner = asyncio.create_task(shared.run())
        try:
            for i in range(3):
                await writer.create(make_device(f"d{i}", "gw0"))

            async def a_has(n: int) -> bool:
                return len(a_seen) == n

            await eventually(lambda: a_has(3), what="the first consumer's adds")
            streams = await _watch_streams(api)
            assert streams.get("devices") == 2.0, streams  # one per distinct selector, not per consumer

            b_seen: list[Any] = []
            reg = first.add_handlers(on_add=b_seen.append, active=False)
            assert b_seen == []  # inactive: nothing yet
            first.activate(reg)
            assert sorted(_names(b_seen)) == ["d0", "d1", "d2"]  # the cache, replayed as adds

            await writer.create(make_device("d3", "gw0"))
            await eventually(lambda: a_has(4), what="the fourth add")
            assert _names(b_seen)[-1] == "d3"

            first.remove_handlers(reg)
            await writer.create(make_device("d4", "gw0"))
            await eventually(lambda: a_has(5), what="the fifth add")
            assert "d4" not in _names(b_seen)
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def test_in_process_control_loops_watch_each_resource_once(api: Api) -> None:
    loops = asyncio.create_task(run_control_loops(api.url, api.token))
    try:
        async with api.client() as client:
            await create_fleet(client, gateways=2, devices_per_gateway=2, memory="1Gi")
            for i in range(4):
                await client.create(make_workload(f"w{i}", memory="10Mi"))

            async def all_bound() -> bool:
                return all((await bound_map(client)).values()) and len(await bound_map(client)) == 4

            await eventually(all_bound, what="the in-process scheduler binding through shared informers")
            streams = await _watch_streams(api)
            # The scheduler and four controllers all consume workloads, devices and gateways:
            # with private informers that was 4 watches each.
            for plural in ("workloads", "devices", "gateways", "deployments"):
                assert streams.get(plural) == 1.0, (plural, streams)
    finally:
        loops.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loops
