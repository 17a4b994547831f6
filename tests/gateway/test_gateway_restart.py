"""Offline autonomy with real processes: the gateway without its server, the server restarting.

- Gateway restarted while the server is down: devices still register (cached credentials) and
  get their last desired document with the same ETag; status gathered offline is delivered
  after the server returns, the latest value winning; the document's gen does not move.
- Server restarted under a running gateway: status from the gap arrives after reconnection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiocoap.numbers.codes import Code
from fleetlet.gateway.wire import Report, WorkloadState, WorkloadStatus

from .devsim import DeviceSim
from .harness import Cluster, eventually, micropython_workload

pytestmark = pytest.mark.e2e


async def _setup(cluster: Cluster, gw: str, device: str) -> tuple[str, dict[str, Any]]:
    token = cluster.gateway_token(gw)
    config = cluster.add_device(device, gw)
    async with cluster.api() as api:
        await api.create(micropython_workload(f"{device}-app"))
        await api.bind("default", f"{device}-app", device)
    return token, config


def _report(doc: Any, restarts: int) -> Report:
    w = doc.workloads[0]
    return Report(
        gen=doc.gen,
        workloads=(WorkloadStatus(w.uid, w.generation, WorkloadState.RUNNING, restarts=restarts),),
        heap_free=1000 + restarts,
    )


async def _restarts(cluster: Cluster, name: str) -> int | None:
    async with cluster.api() as api:
        restarts = (await api.get("workloads", name, "default")).get("status", {}).get("restarts")
    return None if restarts is None else int(restarts)


async def _delivered(dev: DeviceSim) -> tuple[Any, bytes]:
    async def check() -> tuple[Any, bytes] | None:
        doc, etag = await dev.desired()
        return (doc, etag) if doc.workloads else None

    return await eventually(check, "the workload in the desired document")


async def test_gateway_restart_with_server_down(cluster: Cluster) -> None:
    token, config = await _setup(cluster, "gw-r1", "r1")
    gw, port = cluster.start_gateway("gw-r1", token)
    async with DeviceSim("r1", config["token"], port) as dev:
        await dev.registered()
        doc, etag = await _delivered(dev)
        assert (await dev.report(_report(doc, 1))).code == Code.CHANGED
        await eventually(lambda: _restarts(cluster, "r1-app"), "restarts 1 delivered")

    cluster.stop_server()
    gw.stop()
    gw2, port = cluster.start_gateway("gw-r1", token, port)
    async with DeviceSim("r1", config["token"], port) as dev:
        await dev.registered()  # the credential comes from the local store
        doc2, etag2 = await dev.desired()
        assert (doc2, etag2) == (doc, etag)
        assert (await dev.desired_raw(etag)).code == Code.VALID
        for restarts in (2, 3, 5):  # offline; the latest must win
            assert (await dev.report(_report(doc, restarts))).code == Code.CHANGED

        async def kept() -> bool:
            return "keeping status patches locally" in gw2.log_text()

        # Wait for a flush to fail, or the server could return before the gateway noticed it
        # was gone and the offline path would go untested (seen in CI).
        await eventually(kept, "the gateway to find the server unreachable")
        cluster.start_server()

        async def five() -> bool:
            return await _restarts(cluster, "r1-app") == 5

        await eventually(five, "status gathered offline delivered after reconnection", timeout=60)
        # Reconnection relisted the workloads: the document (gen, ETag) did not change.
        assert (await dev.desired_raw(etag)).code == Code.VALID
    assert "delivering pending status" in gw2.log_text()


async def test_server_restart_with_gateway_up(cluster: Cluster) -> None:
    token, config = await _setup(cluster, "gw-r2", "r2")
    gw, port = cluster.start_gateway("gw-r2", token)
    async with DeviceSim("r2", config["token"], port) as dev:
        await dev.registered()
        doc, etag = await _delivered(dev)
        await dev.report(_report(doc, 1))
        await eventually(lambda: _restarts(cluster, "r2-app"), "first status")
        cluster.stop_server()
        for restarts in (4, 7):
            assert (await dev.report(_report(doc, restarts))).code == Code.CHANGED
        # Served while the server is away.
        assert (await dev.desired_raw(etag)).code == Code.VALID
        cluster.start_server()

        async def seven() -> bool:
            return await _restarts(cluster, "r2-app") == 7

        await eventually(seven, "status from the gap after reconnection", timeout=60)
        assert (await dev.desired_raw(etag)).code == Code.VALID
    assert gw.is_running()


async def test_reconnection_sends_devices_nothing_new(cluster: Cluster) -> None:
    """A device observing its document through a server restart is not notified of anything
    until a real change: the first notification after reconnection is the new workload, with
    the old entry as it was. (Reconnecting must not rebuild documents: KubeEdge's complaint.)"""
    token, config = await _setup(cluster, "gw-r3", "r3")
    gw, port = cluster.start_gateway("gw-r3", token)
    async with DeviceSim("r3", config["token"], port) as dev:
        await dev.registered()
        doc, etag = await _delivered(dev)
        notes = dev.observe()
        try:
            first = await asyncio.wait_for(notes.__anext__(), 30)
            assert first == (doc, etag)
            cluster.stop_server()

            async def kept() -> bool:
                return "API server:" in gw.log_text()  # the lease loop found it gone

            await eventually(kept, "the gateway to notice the server is gone")
            cluster.start_server()
            async with cluster.api() as api:
                await api.create(micropython_workload("r3-later"))
                await api.bind("default", "r3-later", "r3")
            note_doc, note_etag = await asyncio.wait_for(notes.__anext__(), 60)
        finally:
            await notes.aclose()
    # The first notification since the restart is the bind, not a rebuilt document.
    assert note_doc.gen == doc.gen + 1 and note_etag != etag
    old = {w.uid: w for w in doc.workloads}
    entries = {w.uid: w for w in note_doc.workloads}
    assert set(old) < set(entries) and len(entries) == 2
    for uid, w in old.items():
        assert entries[uid] == w  # same generation, same modules: nothing to restart
