"""The Gateway (virtual node) reports capacity summed over its Online devices only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetlet.gateway.coap_provider import CoapDeviceProvider
from fleetlet.gateway.localstore import LocalStore
from fleetlet.gateway.status_sync import StatusSync

from .test_fuzz import NoRefs, Writer


def device(name: str, memory: str, cpu: str, flash: str, phase: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"gateway": "gw", "credentialHash": "0" * 64,
                 "capacity": {"memory": memory, "cpu": cpu, "flash": flash}},
        "status": {"phase": phase},
    }  # fmt: skip


async def test_capacity_sums_online_devices_only(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path / "g.db")
    try:
        provider = CoapDeviceProvider(store, StatusSync(Writer(), store), NoRefs())
        changes: list[int] = []
        provider.on_node_changed = lambda: changes.append(1)
        await provider.upsert_device(device("pi-1", "2Gi", "2", "16Gi", "Online"))
        await provider.upsert_device(device("esp-1", "100Ki", "240m", "4Mi", "Online"))
        await provider.upsert_device(device("pi-2", "4Gi", "4", "32Gi", "Offline"))
        assert changes, "a capacity change must tell the upstream to refresh the Gateway status"
        cap = provider.capacity()
        assert cap["memory"] == 2 * 1024**3 + 100 * 1024
        assert cap["cpu"] == "2240m"
        assert cap["flash"] == 16 * 1024**3 + 4 * 1024**2
        assert provider.device_count() == (3, 2)
        # A device going silent leaves the sum.
        provider.devices.get("pi-1").online = False  # type: ignore[union-attr]
        assert provider.capacity()["memory"] == 100 * 1024
        await provider.delete_device(device("esp-1", "100Ki", "240m", "4Mi", "Online"))
        assert provider.capacity() == {"memory": 0, "cpu": "0m", "flash": 0}
    finally:
        await store.close()
