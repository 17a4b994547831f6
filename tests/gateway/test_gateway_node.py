"""The virtual node and the desired document's Observe, with real processes.

- The gateway registers its Gateway object, renews its Lease, and reports capacity summed over
  its Online devices only (registered -> counted; silent -> Offline -> not counted).
- Device liveness: Online with lastSeen, lastSeen moves on, Offline, Online again.
- Observe (RFC 7641) on /d/<device>/desired notifies on every change of the document, to the
  aiocoap simulator and to libcoap's coap-client.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiocoap.numbers.codes import Code
from fleetlet.gateway.wire import DesiredDoc, Report
from fleetlet.hardware.quantity import parse_bytes, parse_cpu_millis

from tests.fixtures import ServerProcess

from .devsim import DeviceSim
from .harness import Cluster, eventually, micropython_workload, running_cluster

pytestmark = pytest.mark.e2e

GW = "gw-node"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, fleetlet_bin: str) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("node"), fleetlet_bin) as c:
        yield c


@pytest.fixture(scope="module")
def gateway(cluster: Cluster) -> tuple[ServerProcess, int]:
    return cluster.start_gateway(GW, cluster.gateway_token(GW))


async def _get(cluster: Cluster, plural: str, name: str, ns: str | None = None) -> dict[str, Any]:
    async with cluster.api() as api:
        obj: dict[str, Any] = await api.get(plural, name, ns)
    return obj


async def _register(dev: DeviceSim) -> None:
    """Register once the gateway's Device informer has the new device (4.03 until then)."""

    async def ok() -> bool:
        return bool((await dev.register()).code == Code.CREATED)

    await eventually(ok, f"{dev.name} registered")


def _capacity(device: dict[str, Any]) -> tuple[int, int, int]:
    cap = device["spec"]["capacity"]
    return parse_bytes(cap["memory"]), parse_cpu_millis(cap["cpu"]), parse_bytes(cap["flash"])


def _gateway_capacity(status: dict[str, Any]) -> tuple[int, int, int]:
    cap = status.get("capacity") or {}
    return (
        parse_bytes(cap.get("memory", 0)),
        parse_cpu_millis(cap.get("cpu", "0m")),
        parse_bytes(cap.get("flash", 0)),
    )


async def test_gateway_object_lease_and_capacity_over_online_devices(cluster: Cluster) -> None:
    name = "gw-cap"
    _, port = cluster.start_gateway(name, cluster.gateway_token(name))
    a = cluster.add_device("cap-a", name, board="esp32-s3")
    b = cluster.add_device("cap-b", name, board="raspberry-pi-4")
    cap_a = _capacity(await _get(cluster, "devices", "cap-a"))
    cap_b = _capacity(await _get(cluster, "devices", "cap-b"))
    assert cap_a[0] > 0 and cap_b[0] > 0 and cap_a != cap_b

    async def gateway_status(want: tuple[int, int, int], online: int) -> dict[str, Any] | None:
        s = dict((await _get(cluster, "gateways", name)).get("status") or {})
        ok = _gateway_capacity(s) == want and s.get("onlineDevices") == online and s.get("deviceCount") == 2
        return s if ok else None

    # No device has spoken yet: two known, nothing to offer.
    s = await eventually(lambda: gateway_status((0, 0, 0), 0), "the Gateway with 2 devices, none Online")
    assert {c["type"]: c["status"] for c in s["conditions"]}["Ready"] == "True"
    assert {"type": "CoAP", "address": f"127.0.0.1:{port}"} in s["addresses"]
    assert s["allocatable"] == s["capacity"]

    # The Lease is renewed (--lease-interval 1): its renewTime moves.
    first = (await _get(cluster, "leases", name, "fleetlet-node-lease"))["spec"]["renewTime"]

    async def renewed() -> bool:
        lease = await _get(cluster, "leases", name, "fleetlet-node-lease")
        return bool(lease["spec"]["renewTime"] != first and lease["spec"]["holderIdentity"] == name)

    await eventually(renewed, "a renewed Lease")

    both = (cap_a[0] + cap_b[0], cap_a[1] + cap_b[1], cap_a[2] + cap_b[2])
    async with DeviceSim("cap-a", a["token"], port) as dev_a, DeviceSim("cap-b", b["token"], port) as dev_b:
        await _register(dev_a)
        await eventually(lambda: gateway_status(cap_a, 1), "capacity of cap-a alone")
        await _register(dev_b)
        await eventually(lambda: gateway_status(both, 2), "capacity of cap-a + cap-b")
    # Both fall silent (--offline-after 3): Offline, and out of the sum again.
    await eventually(lambda: gateway_status((0, 0, 0), 0), "capacity back to zero after both went Offline")
    for dev in ("cap-a", "cap-b"):
        assert (await _get(cluster, "devices", dev))["status"]["phase"] == "Offline"


async def test_device_online_last_seen_offline_online(
    cluster: Cluster, gateway: tuple[ServerProcess, int]
) -> None:
    _, port = gateway
    config = cluster.add_device("alive", GW)

    async def phase(want: str) -> dict[str, Any] | None:
        s = dict((await _get(cluster, "devices", "alive")).get("status") or {})
        return s if s.get("phase") == want else None

    async with DeviceSim("alive", config["token"], port) as dev:
        await _register(dev)
        s = await eventually(lambda: phase("Online"), "alive Online")
        seen = datetime.fromisoformat(s["lastSeen"].replace("Z", "+00:00"))
        assert seen.tzinfo is not None

        async def later() -> bool:
            # Keep reporting: lastSeen is written at most every --status-interval (2 s).
            assert (await dev.report(Report(gen=0, heap_free=4242))).code == Code.CHANGED
            s = dict((await _get(cluster, "devices", "alive")).get("status") or {})
            return datetime.fromisoformat(s["lastSeen"].replace("Z", "+00:00")) > seen

        await eventually(later, "lastSeen moving on while the device reports")
    s = await eventually(lambda: phase("Offline"), "alive Offline after it fell silent")
    assert {c["type"]: c["status"] for c in s["conditions"]}["Ready"] != "True"
    async with DeviceSim("alive", config["token"], port) as dev:
        assert (await dev.report(Report(gen=0))).code == Code.CHANGED  # still registered
        s = await eventually(lambda: phase("Online"), "alive Online again after a report")
        assert {c["type"]: c["status"] for c in s["conditions"]}["Ready"] == "True"


async def _next(it: AsyncIterator[tuple[DesiredDoc, bytes]]) -> tuple[DesiredDoc, bytes]:
    return await asyncio.wait_for(it.__anext__(), 30)


async def test_observe_notifies_every_change(cluster: Cluster, gateway: tuple[ServerProcess, int]) -> None:
    _, port = gateway
    config = cluster.add_device("obs", GW)
    async with DeviceSim("obs", config["token"], port) as dev:
        await _register(dev)
        notes = dev.observe()
        try:
            doc0, etag0 = await _next(notes)
            assert doc0.workloads == ()
            async with cluster.api() as api:
                created = await api.create(micropython_workload("obs-app"))
                await api.bind("default", "obs-app", "obs")
            doc1, etag1 = await _next(notes)
            assert [w.uid for w in doc1.workloads] == [created["metadata"]["uid"]]
            assert doc1.gen > doc0.gen and etag1 != etag0
            async with cluster.api() as api:
                await api.delete("workloads", "obs-app", "default")
            doc2, etag2 = await _next(notes)
            assert doc2.workloads == () and doc2.gen > doc1.gen and etag2 not in (etag0, etag1)
            # What was notified is what a plain GET answers now.
            assert await dev.desired() == (doc2, etag2)
        finally:
            await notes.aclose()


async def test_coap_client_observe_gets_the_change(
    cluster: Cluster, gateway: tuple[ServerProcess, int], coap_client_bin: str, tmp_path: Path
) -> None:
    """libcoap's coap-client observing: the initial document, then a notification after a bind."""
    _, port = gateway
    config = cluster.add_device("obs-cc", GW)
    async with DeviceSim("obs-cc", config["token"], port) as dev:
        # v1 identifies a device by the address it registered from: 127.0.0.1 for coap-client too.
        await _register(dev)
        empty = (await dev.desired_raw()).payload
        out = tmp_path / "observed.cbor"
        url = f"coap://127.0.0.1:{port}/d/obs-cc/desired"
        with _background(coap_client_bin, "-m", "get", "-s", "60", "-o", str(out), url) as proc:

            async def has(data: bytes) -> bool:
                assert proc.poll() is None, "coap-client ended before the notification"
                return out.exists() and data in out.read_bytes()

            await eventually(lambda: has(empty), "coap-client's first answer")
            async with cluster.api() as api:
                await api.create(micropython_workload("obs-cc-app"))
                await api.bind("default", "obs-cc-app", "obs-cc")

            async def changed() -> bytes | None:
                resp = await dev.desired_raw()
                return bytes(resp.payload) if DesiredDoc.from_cbor(resp.payload).workloads else None

            doc = await eventually(changed, "the document with obs-cc-app")
            await eventually(lambda: has(doc), "coap-client's notification of the new document")
        assert DesiredDoc.from_cbor(doc).gen > DesiredDoc.from_cbor(empty).gen


@contextlib.contextmanager
def _background(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
