"""What the gateway keeps per device and per workload stays small and bounded (issue #7: 1,000
devices in <= 40 MB): what each cache holds, not timings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetlet.gateway.coap_provider import CoapDeviceProvider
from fleetlet.gateway.localstore import LocalStore
from fleetlet.gateway.status_sync import StatusSync

from tests.gateway.test_units import Refs, Writer


def workload(name: str, device: str, modules: list[dict[str, Any]], generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "generation": generation,
            "resourceVersion": "7",
            "labels": {"app": "x"},
            "ownerReferences": [{"kind": "Deployment", "name": "x", "uid": "d"}],
        },
        "spec": {
            "runtime": "micropython",
            "deviceName": device,
            "gatewayName": "gw",
            "app": {"entry": "main", "modules": modules},
        },
        "status": {"phase": "Pending"},
    }


async def provider(tmp_path: Path) -> tuple[CoapDeviceProvider, LocalStore]:
    store = await LocalStore.open(tmp_path / "g.db")
    p = CoapDeviceProvider(store, StatusSync(Writer(), None), Refs())
    await p.go_live(set())
    return p, store


async def test_provider_keeps_whole_workloads_only_when_they_read_references(tmp_path: Path) -> None:
    p, store = await provider(tmp_path)
    try:
        inline = workload("a", "d1", [{"name": "main.py", "source": "print(1)\n"}])
        refs = workload("b", "d2", [{"name": "main.py", "configMapRef": {"name": "code", "key": "lib.py"}}])
        await p.create_workload(inline)
        await p.create_workload(refs)
        kept = {o["metadata"]["name"]: o for o in await p.list_workloads()}
        assert kept["a"] == {
            "metadata": {"name": "a", "namespace": "default", "uid": "uid-a", "resourceVersion": "7"},
            "spec": {"deviceName": "d1", "gatewayName": "gw"},
            "status": {"phase": "Pending"},
        }
        assert kept["b"] is refs  # refresh_refs translates it again from the whole object
        assert p.desired("d1").gen == 1 and p.desired("d2").gen == 1
        # A status-only update keeps the entry and still only the slim object.
        await p.update_workload({**inline, "status": {"phase": "Running"}})
        assert (await p.get_workload_status("default", "a")) == {"phase": "Running"}
        assert "app" not in (await p.list_workloads())[0].get("spec", {})
        assert p.desired("d1").gen == 1
    finally:
        await store.close()
