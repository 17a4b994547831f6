"""Referenced Secrets and ConfigMaps are watched, with real processes: a `fleetlet server`, a
`fleetlet gateway` and a device simulator.

- A changed ConfigMap and a changed Secret reach the device's desired document through the
  gateway's watches (the fallback poll runs only every 60 s, for references it cannot watch).
- The server counts the gateway's watch streams (``fleetlet_apiserver_watchers`` in /metrics, on
  top of the server's own): one per referenced object while a bound workload references it, none
  once the last one is gone.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest
from fleetlet.gateway.wire import MicroPythonWorkload

from .devsim import DeviceSim
from .harness import Cluster, eventually, micropython_workload

pytestmark = pytest.mark.e2e


async def _watchers(cluster: Cluster) -> dict[str, float]:
    """The server's open watch streams per resource, from /metrics."""
    async with cluster.api() as api:
        text = await api.request("GET", "/metrics")
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^fleetlet_apiserver_watchers\{resource="(\w+)"\} (\S+)$', str(text), re.M)
    }


def _workload(name: str) -> dict[str, Any]:
    wl = micropython_workload(name, secrets=["creds"])
    wl["spec"]["app"]["modules"].append(
        {"name": "settings.json", "configMapRef": {"name": "conf", "key": "settings.json"}}
    )
    return wl


async def test_changed_secret_and_configmap_reach_the_device_and_the_watches_stop(cluster: Cluster) -> None:
    token = cluster.gateway_token("gw-w")
    config = cluster.add_device("w1", "gw-w")
    async with cluster.api() as api:
        await api.create(
            {
                "apiVersion": "fleetlet.io/v1",
                "kind": "ConfigMap",
                "metadata": {"name": "conf", "namespace": "default"},
                "data": {"settings.json": '{"v": 1}'},
            }
        )
        await api.create(
            {
                "apiVersion": "fleetlet.io/v1",
                "kind": "Secret",
                "metadata": {"name": "creds", "namespace": "default"},
                "stringData": {"pw": "one"},
            }
        )
        for name in ("w1-app", "w1-app-2"):
            await api.create(_workload(name))
            await api.bind("default", name, "w1")
    base = await _watchers(cluster)  # the server's own (its garbage collector watches every kind)
    gw, port = cluster.start_gateway("gw-w", token)

    async with DeviceSim("w1", config["token"], port) as dev:
        await dev.registered()

        async def delivered(settings: bytes, pw: bytes, count: int = 2) -> Any:
            doc, _ = await dev.desired()
            if len(doc.workloads) != count:
                return None
            for w in doc.workloads:
                assert isinstance(w, MicroPythonWorkload)
                module = next(m for m in w.modules if m.name == "settings.json")
                if module.sha256 != hashlib.sha256(settings).digest() or w.secrets.get("pw") != pw:
                    return None
            return doc

        doc = await eventually(lambda: delivered(b'{"v": 1}', b"one"), "the first document")

        async def watching() -> bool:
            w = await _watchers(cluster)
            return all(w.get(r) == base.get(r, 0.0) + 1 for r in ("configmaps", "secrets"))

        # One watch per referenced object, shared by the two workloads that reference it.
        await eventually(watching, "one watch on the ConfigMap and one on the Secret")

        async with cluster.api() as api:
            await api.patch("configmaps", "conf", {"data": {"settings.json": '{"v": 2}'}}, "default")
        doc2 = await eventually(lambda: delivered(b'{"v": 2}', b"one"), "the changed ConfigMap", timeout=45)
        assert doc2.gen > doc.gen
        first = doc2.workloads[0]
        assert isinstance(first, MicroPythonWorkload)
        sha = next(m.sha256 for m in first.modules if m.name == "settings.json")
        assert await dev.blob(sha) == b'{"v": 2}'

        async with cluster.api() as api:
            await api.patch(
                "secrets", "creds", {"data": {"pw": base64.b64encode(b"two").decode()}}, "default"
            )
        await eventually(lambda: delivered(b'{"v": 2}', b"two"), "the changed Secret", timeout=45)

        # The first workload goes: the other still references both, so the watches stay.
        async with cluster.api() as api:
            await api.delete("workloads", "w1-app", "default")
        await eventually(lambda: delivered(b'{"v": 2}', b"two", 1), "one workload left")
        assert await watching()

        async def stopped() -> bool:
            w = await _watchers(cluster)
            return all(w.get(r) == base.get(r, 0.0) for r in ("configmaps", "secrets"))

        async with cluster.api() as api:
            await api.delete("workloads", "w1-app-2", "default")
        await eventually(stopped, "the watches to stop with the last reference")
    assert gw.is_running()
    assert "Forbidden" not in gw.log_text()
