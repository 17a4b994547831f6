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
from fleetlet.gateway.wire import DesiredDoc, MicroPythonWorkload, Report, WorkloadState, WorkloadStatus

from tests.fixtures import ServerProcess

from .devsim import DeviceSim
from .harness import Cluster, eventually, micropython_workload, running_cluster

pytestmark = pytest.mark.e2e

GW = "gw-e2e"
BIG_MODULE = "".join(f"# line {i:05d} of a module bigger than four kilobytes\n" for i in range(160))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, fleetlet_bin: str) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("gw"), fleetlet_bin) as c:
        yield c


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
        assert (await unknown.register()).code == Code.FORBIDDEN

    async def events() -> set[tuple[str, str]] | None:
        async with cluster.api() as api:
            items = (await api.list("events", "default"))["items"]
        found = {
            (e["involvedObject"]["name"], e["reason"])
            for e in items
            if e.get("reason") == "RegistrationRefused"
        }
        return (
            found
            if {("reg-ok", "RegistrationRefused"), ("nobody-knows-me", "RegistrationRefused")} <= found
            else None
        )

    await eventually(events, "RegistrationRefused events for the bad credential and the unknown device")
    # Device status: Online after the good registration.
    status = await eventually(lambda: _online(cluster, "reg-ok"), "reg-ok Online")
    assert status["firmware"] == "0.1.0"


async def _online(cluster: Cluster, name: str) -> dict[str, Any] | None:
    s = await _status(cluster, "devices", name)
    return s if s.get("phase") == "Online" else None


async def test_delivery_blobs_and_report(cluster: Cluster, gateway: tuple[ServerProcess, int]) -> None:
    _, port = gateway
    config = cluster.add_device("dlv", GW)
    async with cluster.api() as api:
        await api.create(
            {
                "apiVersion": "fleetlet.io/v1",
                "kind": "ConfigMap",
                "metadata": {"name": "big", "namespace": "default"},
                "data": {"lib.py": BIG_MODULE},
            }
        )
    wl = micropython_workload("dlv-app", config={"interval": 5})
    wl["spec"]["app"]["modules"].append({"name": "lib.py", "configMapRef": {"name": "big", "key": "lib.py"}})
    created = await _deliver(cluster, "dlv", wl)
    async with DeviceSim("dlv", config["token"], port) as dev:
        await dev.registered()
        doc, etag = await _doc_with(dev, 1)
        w = doc.workloads[0]
        assert isinstance(w, MicroPythonWorkload)
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


def _coap_client(coap_client_bin: str, *args: str, timeout: float = 30) -> bytes:
    proc = subprocess.run([coap_client_bin, *args], capture_output=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def test_coap_client_interop(
    cluster: Cluster, gateway: tuple[ServerProcess, int], coap_client_bin: str, tmp_path: Path
) -> None:
    """libcoap's coap-client, not aiocoap: discovery, GET, Observe and a Block2 blob over 4 KB."""
    _, port = gateway
    base = f"coap://127.0.0.1:{port}"
    wkc = await asyncio.to_thread(_coap_client, coap_client_bin, "-m", "get", f"{base}/.well-known/core")
    assert b"</rd>" in wkc and b'rt="core.rd"' in wkc and b"</b>" in wkc and b"</d>" in wkc

    config = cluster.add_device("interop", GW)
    async with cluster.api() as api:
        await api.create(
            {
                "apiVersion": "fleetlet.io/v1",
                "kind": "ConfigMap",
                "metadata": {"name": "big2", "namespace": "default"},
                "data": {"big.py": BIG_MODULE + "# interop\n"},
            }
        )
    wl = micropython_workload("interop-app")
    wl["spec"]["app"]["modules"].append({"name": "big.py", "configMapRef": {"name": "big2", "key": "big.py"}})
    await _deliver(cluster, "interop", wl)
    async with DeviceSim("interop", config["token"], port) as dev:
        # v1 identifies a device by the address it registered from: 127.0.0.1 for coap-client too.
        await dev.registered()
        doc, _ = await _doc_with(dev, 1)
        raw = (await dev.desired_raw()).payload

    out = tmp_path / "desired.cbor"
    await asyncio.to_thread(
        _coap_client, coap_client_bin, "-m", "get", "-o", str(out), f"{base}/d/interop/desired"
    )
    assert out.read_bytes() == raw
    assert DesiredDoc.from_cbor(out.read_bytes()).gen == doc.gen

    observed = tmp_path / "observed.cbor"
    await asyncio.to_thread(
        _coap_client,
        coap_client_bin,
        "-m",
        "get",
        "-s",
        "2",
        "-o",
        str(observed),
        f"{base}/d/interop/desired",
    )
    assert raw in observed.read_bytes()

    (w,) = doc.workloads
    assert isinstance(w, MicroPythonWorkload)
    big = next(m for m in w.modules if m.name == "big.py")
    assert big.size > 4096
    blob = tmp_path / "blob.bin"
    await asyncio.to_thread(
        _coap_client,
        coap_client_bin,
        "-m",
        "get",
        "-b",
        "64",
        "-o",
        str(blob),
        f"{base}/b/{big.sha256.hex()}",
    )
    data = blob.read_bytes()
    assert len(data) == big.size and hashlib.sha256(data).digest() == big.sha256


async def test_bad_input_gets_4xx_and_the_gateway_keeps_answering(
    cluster: Cluster, gateway: tuple[ServerProcess, int]
) -> None:
    proc, port = gateway
    config = cluster.add_device("badin", GW)
    async with DeviceSim("badin", config["token"], port) as dev:
        await dev.registered()
        report = "/d/badin/report"
        r = await dev.request(Code.POST, report, b"\xff\x00garbage")
        assert r.code == Code.BAD_REQUEST and b"malformed CBOR" in r.payload
        # A map where the report wants uint gen: the diagnostic names the field.
        r = await dev.request(Code.POST, report, bytes.fromhex("a20001016378797a"))
        assert r.code == Code.BAD_REQUEST and b"report.gen" in r.payload
        r = await dev.request(Code.POST, "/rd?ep=badin", bytes.fromhex("a10002"))
        assert r.code == Code.BAD_REQUEST
        r = await dev.request(Code.POST, report, b"\x00" * 20000)
        assert r.code == Code.REQUEST_ENTITY_TOO_LARGE
        for path in ("/nowhere", "/d/badin/nothing", "/b/xyz", "/b/" + "00" * 32, "/d"):
            r = await dev.request(Code.GET, path)
            assert r.code == Code.NOT_FOUND, path
        r = await dev.request(Code.DELETE, "/d/badin/desired")
        assert r.code == Code.METHOD_NOT_ALLOWED
        r = await dev.request(Code.POST, "/rd", b"")
        assert r.code == Code.BAD_REQUEST
        # Still serving, and still the same process.
        assert (await dev.register()).code == Code.CREATED
        assert (await dev.desired_raw()).code == Code.CONTENT
    assert proc.is_running()
    log = proc.log_text()
    assert "bad payload" in log and "over 16384 bytes" in log
    # Each kind of bad input has its own line at INFO or above (the gateway's own logger).
    for line in (
        "report of badin from 127.0.0.1: bad payload: report: malformed CBOR",
        "report of badin from 127.0.0.1: bad payload: report.gen: expected uint",
        "registration from 127.0.0.1: bad payload: hello.v: unsupported protocol version 2",
        "POST from 127.0.0.1: request body over 16384 bytes",
        "INFO fleetlet.gateway.coap_server: unknown path /d/badin/nothing from 127.0.0.1",
        "INFO fleetlet.gateway.coap_server: bad blob path /b/xyz from 127.0.0.1",
        f"INFO fleetlet.gateway.coap_server: blob {'00' * 32} not found",
        "registration from 127.0.0.1 without a valid ?ep=",
    ):
        assert line in log, line


async def test_unknown_top_level_path_is_logged(cluster: Cluster, gateway: tuple[ServerProcess, int]) -> None:
    proc, port = gateway
    async with DeviceSim("nobody", None, port) as dev:
        assert (await dev.request(Code.GET, "/not-a-resource")).code == Code.NOT_FOUND
    lines = [ln for ln in proc.log_text().splitlines() if "not-a-resource" in ln and " DEBUG " not in ln]
    assert lines, "no INFO/WARNING line for GET /not-a-resource"


async def test_offline_detection(cluster: Cluster, gateway: tuple[ServerProcess, int]) -> None:
    _, port = gateway
    config = cluster.add_device("quiet", GW)
    async with DeviceSim("quiet", config["token"], port) as dev:
        await dev.registered()
        assert (await dev.report(Report(gen=0, heap_free=1000))).code == Code.CHANGED
    await eventually(lambda: _online(cluster, "quiet"), "quiet Online")

    async def offline() -> dict[str, Any] | None:
        s = await _status(cluster, "devices", "quiet")
        return s if s.get("phase") == "Offline" else None

    s = await eventually(offline, "quiet Offline (gateway started with --offline-after 3)")
    assert {c["type"]: c["reason"] for c in s["conditions"]}["Ready"] == "DeviceSilent"


def _patches(metrics: str, resource: str) -> int:
    total = 0
    for m in re.finditer(r"^fleetlet_apiserver_requests_total\{([^}]*)\} ([0-9.e+]+)$", metrics, re.M):
        labels = m.group(1)
        if 'verb="patch"' in labels and f'resource="{resource}"' in labels:
            total += int(float(m.group(2)))
    return total


async def test_reports_are_coalesced(cluster: Cluster, gateway: tuple[ServerProcess, int]) -> None:
    """N reports do not make N status writes; the last value wins."""
    _, port = gateway
    config = cluster.add_device("chatty", GW)
    await _deliver(cluster, "chatty", micropython_workload("chatty-app"))
    async with DeviceSim("chatty", config["token"], port) as dev:
        await dev.registered()
        doc, _ = await _doc_with(dev, 1)
        await dev.report_running(doc)

        async def running() -> bool:
            return (await _status(cluster, "workloads", "chatty-app", "default")).get("phase") == "Running"

        await eventually(running, "chatty-app Running")
        async with cluster.api() as api:
            before = await api.request("GET", "/metrics")
        n = 40
        for i in range(n):
            # Same workload state every time; only volatile device fields change.
            await dev.report_running(doc, heap=50_000 + i)
        w = doc.workloads[0]
        final = Report(
            gen=doc.gen, workloads=(WorkloadStatus(w.uid, w.generation, WorkloadState.RUNNING, restarts=4),)
        )
        await dev.report(final)

    async def restarted() -> bool:
        return (await _status(cluster, "workloads", "chatty-app", "default")).get("restarts") == 4

    await eventually(restarted, "the last report's restarts")
    async with cluster.api() as api:
        after = await api.request("GET", "/metrics")
    workload_writes = _patches(after, "workloads") - _patches(before, "workloads")
    device_writes = _patches(after, "devices") - _patches(before, "devices")
    # Other devices of the module may write too, but nowhere near one write per report.
    assert 1 <= workload_writes < n // 4, workload_writes
    assert device_writes < n // 2, device_writes
