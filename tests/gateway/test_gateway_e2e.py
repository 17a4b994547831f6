"""`fleetlet server` + `fleetlet gateway` as real processes, a CPython device simulator, libcoap.

One server and one gateway for the module; each test uses its own devices.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiocoap.numbers.codes import Code
from fleetlet.gateway.wire import DesiredDoc, Report, WorkloadState, WorkloadStatus

from tests.fixtures import ServerProcess

from .devsim import DeviceSim
from .harness import Cluster, eventually, micropython_workload

pytestmark = pytest.mark.e2e

GW = "gw-e2e"
BIG_MODULE = "".join(f"# line {i:05d} of a module bigger than four kilobytes\n" for i in range(160))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, fleetlet_bin: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("gw"), fleetlet_bin)
    try:
        c.start_server()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def gateway(cluster: Cluster) -> tuple[ServerProcess, int]:
    return cluster.start_gateway(GW, cluster.gateway_token(GW))


async def _deliver(cluster: Cluster, device: str, workload: dict[str, Any]) -> dict[str, Any]:
    async with cluster.api() as api:
        created = await api.create(workload)
        await api.bind("default", workload["metadata"]["name"], device)
        return created


async def _doc_with(dev: DeviceSim, count: int) -> tuple[DesiredDoc, bytes]:
    async def check() -> tuple[DesiredDoc, bytes] | None:
        doc, etag = await dev.desired()
        return (doc, etag) if len(doc.workloads) == count else None

    return await eventually(check, f"a desired document with {count} workloads")


async def _status(cluster: Cluster, plural: str, name: str, ns: str | None = None) -> dict[str, Any]:
    async with cluster.api() as api:
        obj = await api.get(plural, name, ns)
    return dict(obj.get("status") or {})


async def test_registration_and_refusals(cluster: Cluster, gateway: tuple[ServerProcess, int]) -> None:
    _, port = gateway
    config = cluster.add_device("reg-ok", GW)
    assert config["token"] and config["device"] == "reg-ok"
    async with DeviceSim("reg-ok", config["token"], port) as dev:
        resp = await dev.register()
        assert resp.code == Code.CREATED
        assert tuple(resp.opt.location_path) == ("rd", "reg-ok")
        assert (await dev.registered()).lifetime > 0
    async with DeviceSim("reg-ok", "fdc_wrong", port) as bad:
        assert (await bad.register()).code == Code.UNAUTHORIZED
    async with DeviceSim("reg-ok", None, port) as bad:
        assert (await bad.register()).code == Code.UNAUTHORIZED
    async with DeviceSim("nobody-knows-me", "fdc_x", port) as unknown:
        assert (await unknown.register()).code in (Code.FORBIDDEN, Code.NOT_FOUND)

    async def events() -> set[tuple[str, str]] | None:
        async with cluster.api() as api:
            items = (await api.list("events", "default"))["items"]
        found = {
            (e["involvedObject"]["name"], e["reason"])
            for e in items
            if e.get("reason") == "RegistrationRefused"
        }
        return found if {("reg-ok", "RegistrationRefused"), ("nobody-knows-me", "RegistrationRefused")} <= found else None

    await eventually(events, "RegistrationRefused events for the bad credential and the unknown device")
    # Device status: Online after the good registration.
    status = await eventually(
        lambda: _online(cluster, "reg-ok"), "reg-ok Online"
    )
    assert status["firmware"] == "0.1.0"


async def _online(cluster: Cluster, name: str) -> dict[str, Any] | None:
    s = await _status(cluster, "devices", name)
    return s if s.get("phase") == "Online" else None


async def test_delivery_blobs_and_report(cluster: Cluster, gateway: tuple[ServerProcess, int]) -> None:
    _, port = gateway
    config = cluster.add_device("dlv", GW)
    async with cluster.api() as api:
        await api.create(
            {"apiVersion": "fleetlet.io/v1", "kind": "ConfigMap", "metadata": {"name": "big", "namespace": "default"},
             "data": {"lib.py": BIG_MODULE}}
        )
    wl = micropython_workload("dlv-app", config={"interval": 5})
    wl["spec"]["app"]["modules"].append({"name": "lib.py", "configMapRef": {"name": "big", "key": "lib.py"}})
    created = await _deliver(cluster, "dlv", wl)
    async with DeviceSim("dlv", config["token"], port) as dev:
        await dev.registered()
        doc, etag = await _doc_with(dev, 1)
        w = doc.workloads[0]
        assert w.uid == created["metadata"]["uid"] and w.name == "default/dlv-app"
        assert [m.name for m in w.modules] == ["main.py", "lib.py"]
        assert dict(w.config) == {"interval": 5}
        big = next(m for m in w.modules if m.name == "lib.py")
        assert big.size > 4096
        data = await dev.blob(big.sha256)
        assert data == BIG_MODULE.encode()
        # Unchanged: 2.03 Valid with the same ETag.
        resp = await dev.desired_raw(etag)
        assert resp.code == Code.VALID and bytes(resp.opt.etag) == etag
        assert (await dev.report_running(doc, restarts=2)).code == Code.CHANGED

    async def running() -> dict[str, Any] | None:
        s = await _status(cluster, "workloads", "dlv-app", "default")
        return s if s.get("phase") == "Running" and s.get("restarts") == 2 else None

    s = await eventually(running, "Workload dlv-app Running")
    assert {c["type"]: c["status"] for c in s["conditions"]}["Ready"] == "True"
    assert s["observedGeneration"] == w.generation
