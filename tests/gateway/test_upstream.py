"""The gateway's upstream half (gateway/upstream.py) in process, against a real `fleetlet server`.

- The provider interface is real: a second provider (in memory, no CoAP) plugs into the same
  Upstream and gets virtual-kubelet-style create/update/delete calls and ``go_live``.
- Lists and watches carry the field selectors that pin the gateway (``spec.gateway=<gw>`` for
  Devices, ``spec.gatewayName=<gw>`` for Workloads): objects of another gateway never arrive.
- A server restart is a disconnect: the watches resume from the last resourceVersion, with no
  relist. (410 Expired -> relist is tested on the same client and informer in test_apiclient.py.)
- A referenced ConfigMap that changes reaches the device's document through a list+watch of that
  object alone (``fieldSelector=metadata.name=<name>``), started with the first workload that
  references it and stopped with the last; past ``max_ref_watches`` references are polled.

The requests are the gateway's own client's (gateway/apiclient.py); the test only records the
request lines it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
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
        self.refs_watched: Callable[[str], bool] = lambda uid: False
        self.refreshed: list[set[str]] = []

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

    async def refresh_refs(self, uids: Iterable[str] | None = None) -> None:
        self.refreshed.append(set(self._refs_polled() if uids is None else uids))

    def _refs_polled(self) -> list[str]:
        return [uid for uid in self.workloads if not self.refs_watched(uid)]

    async def go_live(self, known_uids: set[str] | None = None) -> None:
        self.live = set(known_uids or ())


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


def _configmap(name: str, text: str) -> Obj:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"settings.json": text},
    }


def _with_settings(name: str, configmap: str) -> Obj:
    wl = micropython_workload(name)
    wl["spec"]["app"]["modules"].append(
        {"name": "settings.json", "configMapRef": {"name": configmap, "key": "settings.json"}}
    )
    return wl


@contextlib.asynccontextmanager
async def coap_upstream(
    cluster: Cluster, gateway: str, data: Path, **kwargs: Any
) -> AsyncIterator[tuple[Upstream, CoapDeviceProvider, RecordingApi]]:
    """The real CoAP provider behind an in-process Upstream (no poll loop runs: only watches)."""
    store = await LocalStore.open(data / "provider.db")
    api = RecordingApi(cluster.url, cluster.gateway_token(gateway))
    upstream = Upstream(api, store, gateway, lease_interval=1.0, **kwargs)
    status = StatusSync(upstream, store)
    provider = CoapDeviceProvider(store, status, upstream, events=upstream)
    upstream.attach(provider, status)
    task = asyncio.create_task(upstream.run())
    try:
        await asyncio.wait_for(upstream.synced.wait(), 30)
        yield upstream, provider, api
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()
        await store.close()


def _settings(provider: CoapDeviceProvider, device: str) -> dict[str, bytes]:
    """settings.json's digest per workload in the device's document."""
    out: dict[str, bytes] = {}
    for w in DesiredDoc.from_cbor(provider.desired(device).doc).workloads:
        assert isinstance(w, MicroPythonWorkload)
        out[w.name] = next(m.sha256 for m in w.modules if m.name == "settings.json")
    return out


def _sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


async def test_a_changed_configmap_reaches_the_document_through_its_watch(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.add_device("ref-a", "gw-ref")
    async with cluster.api() as admin:
        await admin.create(_configmap("conf", '{"v": 1}'))
        await admin.create(_with_settings("ref-app", "conf"))
        await admin.bind("default", "ref-app", "ref-a")

    async with coap_upstream(cluster, "gw-ref", tmp_path) as (upstream, provider, api):
        key = "configmap:default/conf"
        assert upstream.refs.keys == [key]
        gen = provider.desired("ref-a").gen
        assert _settings(provider, "ref-a") == {"default/ref-app": _sha('{"v": 1}')}
        assert await provider.blob(_sha('{"v": 1}')) == b'{"v": 1}'
        # One list+watch of that object alone: by name, in its namespace.
        watches = [
            p
            for m, path, p in api.sent
            if m == "GET" and path == "/api/v1/namespaces/default/configmaps" and p.get("watch") == "true"
        ]
        assert watches and {p["fieldSelector"] for p in watches} == {"metadata.name=conf"}
        assert api.collection_gets("configmaps") == []  # never across namespaces
        one = "/api/v1/namespaces/default/configmaps/conf"
        gets = sum(1 for m, path, _ in api.sent if m == "GET" and path == one)

        async def watched() -> bool:
            return provider.refs_watched(next(iter(provider._wls)))

        await eventually(watched, "the watch to sync")
        async with cluster.api() as admin:
            await admin.patch("configmaps", "conf", {"data": {"settings.json": '{"v": 2}'}}, "default")

        async def changed() -> bool:
            return _settings(provider, "ref-a") == {"default/ref-app": _sha('{"v": 2}')}

        await eventually(changed, "the new ConfigMap in the document (no poll runs here)")
        assert provider.desired("ref-a").gen == gen + 1
        assert await provider.blob(_sha('{"v": 2}')) == b'{"v": 2}'
        # The watch event carried the object: the rebuild did not get it again.
        assert sum(1 for m, path, _ in api.sent if m == "GET" and path == one) == gets
        # The poll (main.py runs it every refresh interval) leaves watched references alone.
        await provider.refresh_refs()
        assert sum(1 for m, path, _ in api.sent if m == "GET" and path == one) == gets

        # A second workload on the same ConfigMap shares the watch; the last one gone stops it.
        async with cluster.api() as admin:
            await admin.create(_with_settings("ref-app-2", "conf"))
            await admin.bind("default", "ref-app-2", "ref-a")

        async def both() -> bool:
            return len(_settings(provider, "ref-a")) == 2

        await eventually(both, "the second workload")
        assert upstream.refs.keys == [key]
        async with cluster.api() as admin:
            await admin.delete("workloads", "ref-app", "default")
        await eventually(lambda: _async(len(_settings(provider, "ref-a")) == 1), "the first one gone")
        assert upstream.refs.keys == [key]
        async with cluster.api() as admin:
            await admin.delete("workloads", "ref-app-2", "default")
        await eventually(lambda: _async(upstream.refs.keys == []), "the watch stopped")


async def _async(value: bool) -> bool:
    return value


async def test_references_past_the_cap_are_polled_until_a_watch_frees(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.add_device("cap-a", "gw-cap")
    async with cluster.api() as admin:
        for n in (1, 2):
            await admin.create(_configmap(f"conf-{n}", f'{{"n": {n}}}'))
            await admin.create(_with_settings(f"cap-app-{n}", f"conf-{n}"))
            await admin.bind("default", f"cap-app-{n}", "cap-a")

    async with coap_upstream(cluster, "gw-cap", tmp_path, max_ref_watches=1) as (upstream, provider, _api):
        (watched_key,) = upstream.refs.keys
        n_watched = int(watched_key[-1])
        n_polled = 3 - n_watched
        by_name = {w.obj["metadata"]["name"]: uid for uid, w in provider._wls.items()}

        async def synced() -> bool:
            return provider.refs_watched(by_name[f"cap-app-{n_watched}"])

        await eventually(synced, "the one watch to sync")
        assert not provider.refs_watched(by_name[f"cap-app-{n_polled}"])
        async with cluster.api() as admin:
            await admin.patch(
                "configmaps", f"conf-{n_polled}", {"data": {"settings.json": '{"polled": 1}'}}, "default"
            )
        # Not watched: the fallback poll is what brings it.
        await provider.refresh_refs()
        assert _settings(provider, "cap-a")[f"default/cap-app-{n_polled}"] == _sha('{"polled": 1}')

        # The watched reference goes: the polled one gets the free watch, and then its changes
        # arrive without a poll.
        async with cluster.api() as admin:
            await admin.delete("workloads", f"cap-app-{n_watched}", "default")
        polled_key = f"configmap:default/conf-{n_polled}"
        await eventually(lambda: _async(upstream.refs.keys == [polled_key]), "the freed watch taken")
        await eventually(
            lambda: _async(provider.refs_watched(by_name[f"cap-app-{n_polled}"])), "its watch to sync"
        )
        async with cluster.api() as admin:
            await admin.patch(
                "configmaps", f"conf-{n_polled}", {"data": {"settings.json": '{"watched": 1}'}}, "default"
            )

        async def arrived() -> bool:
            return _settings(provider, "cap-a").get(f"default/cap-app-{n_polled}") == _sha('{"watched": 1}')

        await eventually(arrived, "the change through the promoted watch")
