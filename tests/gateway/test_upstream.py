"""The gateway's upstream half (gateway/upstream.py) in process, against a real `fleetlet server`.

- The provider interface is real: a second provider (in memory, no CoAP) plugs into the same
  Upstream and gets virtual-kubelet-style create/update/delete calls and ``go_live``.
- Lists and watches carry the field selectors that pin the gateway (``spec.gateway=<gw>`` for
  Devices, ``spec.gatewayName=<gw>`` for Workloads): objects of another gateway never arrive.
- A server restart is a disconnect: the watches resume from the last resourceVersion, with no
  relist. (410 Expired -> relist is tested on the same client and informer in test_apiclient.py.)
- A referenced ConfigMap that changes reaches the device's document (re-read, not watched: a
  gateway token may get Secrets and ConfigMaps, not list or watch them).

The requests are the gateway's own client's (gateway/apiclient.py); the test only records the
request lines it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fleetlet.gateway.apiclient import ApiClient
from fleetlet.gateway.coap_provider import CoapDeviceProvider
from fleetlet.gateway.localstore import LocalStore
from fleetlet.gateway.provider import DeviceSource, GatewayProvider, NodeProvider, WorkloadProvider
from fleetlet.gateway.status_sync import StatusSync
from fleetlet.gateway.upstream import Upstream
from fleetlet.gateway.wire import DesiredDoc, MicroPythonWorkload

from .harness import Cluster, eventually, micropython_workload
from .test_fuzz import NoRefs, Writer

pytestmark = pytest.mark.e2e

Obj = dict[str, Any]


class RecordingApi(ApiClient):
    """The gateway's HTTP client, unchanged, keeping a copy of every request line it sends."""

    def __init__(self, server: str, token: str) -> None:
        super().__init__(server, token, timeout=10.0, connect_timeout=2.0)
        self.sent: list[tuple[str, str, dict[str, str]]] = []

    def _head(self, method: str, path: str, params: Mapping[str, str] | None, extra: str) -> bytes:
        self.sent.append((method, path, dict(params or {})))
        return super()._head(method, path, params, extra)

    def collection_gets(self, plural: str, since: int = 0) -> list[dict[str, str]]:
        """Query parameters of every GET of /api/v1/<plural> (all namespaces) sent from ``since``."""
        return [p for m, path, p in self.sent[since:] if m == "GET" and path == f"/api/v1/{plural}"]


class MemoryProvider:
    """A second implementation of the provider interface: it only remembers what it is told."""

    def __init__(self) -> None:
        self.workloads: dict[str, Obj] = {}
        self.devices: dict[str, Obj] = {}
        self.calls: list[tuple[str, str]] = []
        self.live: set[str] | None = None
        self.on_node_changed: Callable[[], None] = lambda: None

    @staticmethod
    def _name(obj: Obj) -> str:
        return str(obj["metadata"]["name"])

    async def create_workload(self, workload: Obj) -> None:
        self.calls.append(("create", self._name(workload)))
        self.workloads[workload["metadata"]["uid"]] = workload

    async def update_workload(self, workload: Obj) -> None:
        self.calls.append(("update", self._name(workload)))
        self.workloads[workload["metadata"]["uid"]] = workload

    async def delete_workload(self, workload: Obj) -> None:
        self.calls.append(("delete", self._name(workload)))
        self.workloads.pop(workload["metadata"]["uid"], None)

    async def get_workload_status(self, namespace: str, name: str) -> Obj | None:
        for w in self.workloads.values():
            if (w["metadata"].get("namespace"), w["metadata"]["name"]) == (namespace, name):
                return dict(w.get("status") or {})
        return None

    async def list_workloads(self) -> list[Obj]:
        return list(self.workloads.values())

    async def upsert_device(self, device: Obj) -> None:
        self.devices[self._name(device)] = device
        self.on_node_changed()

    async def delete_device(self, device: Obj) -> None:
        self.devices.pop(self._name(device), None)
        self.on_node_changed()

    def capacity(self) -> Obj:
        return {"memory": 0, "cpu": "0m", "flash": 0}

    def device_count(self) -> tuple[int, int]:
        return len(self.devices), 0

    def conditions(self) -> list[Obj]:
        return []

    async def ping(self) -> None:
        return None

    async def go_live(self, known_uids: set[str] | None = None) -> None:
        self.live = set(known_uids or ())


@pytest.fixture
def cluster(tmp_path: Path, fleetlet_bin: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, fleetlet_bin)
    try:
        c.start_server()
        yield c
    finally:
        c.close()


@contextlib.asynccontextmanager
async def running_upstream(
    cluster: Cluster, gateway: str, provider: GatewayProvider, data: Path
) -> AsyncIterator[tuple[Upstream, RecordingApi]]:
    api = RecordingApi(cluster.url, cluster.gateway_token(gateway))
    store = await LocalStore.open(data / "gateway.db")
    upstream = Upstream(api, store, gateway, lease_interval=1.0)
    upstream.attach(provider, StatusSync(upstream, store))
    task = asyncio.create_task(upstream.run())
    try:
        await asyncio.wait_for(upstream.synced.wait(), 30)
        yield upstream, api
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()
        await store.close()


async def _bound(cluster: Cluster, name: str, device: str, **app: Any) -> Obj:
    async with cluster.api() as api:
        created: Obj = await api.create(micropython_workload(name, **app))
        await api.bind("default", name, device)
    return created


async def test_the_coap_provider_and_a_second_one_implement_the_interface(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path / "g.db")
    try:
        coap = CoapDeviceProvider(store, StatusSync(Writer(), store), NoRefs())
        for protocol in (WorkloadProvider, DeviceSource, NodeProvider, GatewayProvider):
            assert isinstance(coap, protocol), protocol
            assert isinstance(MemoryProvider(), protocol), protocol
        assert not isinstance(object(), WorkloadProvider)
    finally:
        await store.close()


async def test_a_second_provider_gets_only_its_gateways_objects_and_resumes_after_a_disconnect(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.add_device("up-a", "gw-up")
    cluster.add_device("other-a", "gw-other")
    mine = await _bound(cluster, "up-app", "up-a")
    await _bound(cluster, "other-app", "other-a")
    provider = MemoryProvider()

    async with running_upstream(cluster, "gw-up", provider, tmp_path) as (upstream, api):
        assert upstream.workloads is not None and upstream.devices is not None
        # Only this gateway's objects, and go_live with exactly the bound workloads.
        assert set(provider.devices) == {"up-a"}
        assert set(provider.workloads) == {mine["metadata"]["uid"]}
        assert provider.live == {mine["metadata"]["uid"]}
        assert ("create", "up-app") in provider.calls and ("create", "other-app") not in provider.calls
        # Every list and watch of the collections carries the selector that pins the gateway.
        device_gets = api.collection_gets("devices")
        workload_gets = api.collection_gets("workloads")
        assert any(p.get("watch") == "true" for p in device_gets)
        assert any(p.get("watch") == "true" for p in workload_gets)
        assert any("watch" not in p for p in workload_gets)  # the list
        assert {p.get("fieldSelector") for p in device_gets} == {"spec.gateway=gw-up"}
        assert {p.get("fieldSelector") for p in workload_gets} == {"spec.gatewayName=gw-up"}

        # The Gateway object and its Lease come from the same upstream.
        async with cluster.api() as admin:
            await eventually(lambda: admin.get("leases", "gw-up", "fleetlet-node-lease"), "the Lease")
            assert (await admin.get("gateways", "gw-up"))["metadata"]["name"] == "gw-up"

        # A disconnect: the server goes away and comes back with its data.
        cluster.stop_server()
        rv_devices = upstream.devices.resource_version
        rv_workloads = upstream.workloads.resource_version
        assert rv_devices and rv_workloads
        mark = len(api.sent)

        async def refused() -> bool:
            # The watches tried again while the server was away (and failed).
            return len(api.collection_gets("workloads", mark)) >= 1

        await eventually(refused, "a watch attempt while the server is down")
        cluster.start_server()
        later = await _bound(cluster, "up-app-2", "up-a")
        await _bound(cluster, "other-app-2", "other-a")

        async def arrived() -> bool:
            return later["metadata"]["uid"] in provider.workloads

        await eventually(arrived, "a workload bound after the server restart", timeout=60)
        after_workloads = api.collection_gets("workloads", mark)
        after_devices = api.collection_gets("devices", mark)
        # Resumed, not relisted: only watches, the first from where the informer stood.
        assert all(p.get("watch") == "true" for p in after_workloads + after_devices), after_workloads
        assert after_workloads[0]["resourceVersion"] == rv_workloads
        assert after_devices and after_devices[0]["resourceVersion"] == rv_devices
        assert (upstream.workloads.relists, upstream.devices.relists) == (1, 1)
        assert ("create", "other-app-2") not in provider.calls
        assert set(provider.workloads) == {mine["metadata"]["uid"], later["metadata"]["uid"]}

        # A delete reaches the provider as delete_workload.
        async with cluster.api() as admin:
            await admin.delete("workloads", "up-app", "default")

        async def deleted() -> bool:
            return ("delete", "up-app") in provider.calls

        await eventually(deleted, "delete_workload for up-app")
        assert set(provider.workloads) == {later["metadata"]["uid"]}


async def test_a_changed_configmap_reaches_the_document(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add_device("ref-a", "gw-ref")
    async with cluster.api() as admin:
        await admin.create(
            {
                "apiVersion": "fleetlet.io/v1",
                "kind": "ConfigMap",
                "metadata": {"name": "conf", "namespace": "default"},
                "data": {"settings.json": '{"v": 1}'},
            }
        )
    wl = micropython_workload("ref-app")
    wl["spec"]["app"]["modules"].append(
        {"name": "settings.json", "configMapRef": {"name": "conf", "key": "settings.json"}}
    )
    async with cluster.api() as admin:
        await admin.create(wl)
        await admin.bind("default", "ref-app", "ref-a")

    store = await LocalStore.open(tmp_path / "provider.db")
    try:
        api = RecordingApi(cluster.url, cluster.gateway_token("gw-ref"))
        upstream = Upstream(api, store, "gw-ref", lease_interval=1.0)
        status = StatusSync(upstream, store)
        provider = CoapDeviceProvider(store, status, upstream, events=upstream)
        upstream.attach(provider, status)
        task = asyncio.create_task(upstream.run())
        try:
            await asyncio.wait_for(upstream.synced.wait(), 30)

            def settings_blob() -> tuple[int, bytes]:
                view = provider.desired("ref-a")
                (w,) = DesiredDoc.from_cbor(view.doc).workloads
                assert isinstance(w, MicroPythonWorkload)
                (ref,) = [m for m in w.modules if m.name == "settings.json"]
                return view.gen, ref.sha256

            gen, sha = settings_blob()
            assert sha == hashlib.sha256(b'{"v": 1}').digest()
            assert await provider.blob(sha) == b'{"v": 1}'
            async with cluster.api() as admin:
                await admin.patch("configmaps", "conf", {"data": {"settings.json": '{"v": 2}'}}, "default")
            await provider.refresh_refs()  # what the gateway runs every refresh interval
            gen2, sha2 = settings_blob()
            assert gen2 == gen + 1 and sha2 == hashlib.sha256(b'{"v": 2}').digest()
            assert await provider.blob(sha2) == b'{"v": 2}'
            # Nothing changed: re-reading keeps gen (and so the ETag) where it is.
            await provider.refresh_refs()
            assert settings_blob() == (gen2, sha2)
            # Secrets and ConfigMaps are read one by one: never listed or watched.
            assert api.collection_gets("configmaps") == []
            one = "/api/v1/namespaces/default/configmaps/conf"
            assert any(m == "GET" and path == one for m, path, _ in api.sent)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await api.close()
    finally:
        await store.close()
