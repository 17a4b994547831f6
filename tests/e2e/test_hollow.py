"""The hollow-device simulator (bench/hollow.py) against a real server and gateway: what the
rollout benchmark relies on. Many simulated devices in this process register, receive an
EveryDevice Deployment's documents, fetch its blob and report Running; the API shows it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.hollow import DeviceSpec, HollowFleet

from .harness import Fleet, deployment, eventually, workloads_of

pytestmark = [pytest.mark.e2e]

N = 30
APP = "async def main(ctx):\n    pass\n" + "# padding to need Block2\n" * 60


@pytest.fixture
def fleet(tmp_path: Path, fleetlet_bin: str) -> Iterator[Fleet]:
    f = Fleet(tmp_path, fleetlet_bin)
    try:
        f.start_server()
        yield f
    finally:
        f.close()


async def test_hollow_devices_run_an_every_device_deployment(fleet: Fleet) -> None:
    await fleet.gateway_token("gw-h")
    _, port = await asyncio.to_thread(fleet.start_gateway, "gw-h")
    specs = []
    for i in range(N):
        cfg = await fleet.add_device(f"h-{i:02d}", "gw-h", port)
        specs.append(DeviceSpec(cfg["device"], cfg["token"], port))
    async with HollowFleet(specs, report_interval=5) as hollow:
        await hollow.wait(lambda d: d.registered, timeout=60)
        async with fleet.api() as api:
            await api.create(
                deployment(
                    "app",
                    {
                        "runtime": "micropython",
                        "app": {"entry": "main", "modules": [{"name": "main.py", "source": APP}]},
                    },
                )
            )

        async def all_running() -> bool:
            async with fleet.api() as api:
                wls = await workloads_of(api, "app")
            return len(wls) == N and all((w.get("status") or {}).get("phase") == "Running" for w in wls)

        await eventually(all_running, f"{N} hollow devices Running", timeout=90)
        # Every device fetched the module over Block2 and verified its sha256.
        assert all(len(d.blobs) == 1 for d in hollow.devices)
        assert all(d.running_gen > 0 and d.reports >= 1 for d in hollow.devices)
