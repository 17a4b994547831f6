"""A fleet end to end, with real processes only: `fleetlet server` (scheduler and controllers
in-process), a gateway, three MicroPython devices running the real firmware on the real
interpreter. One module-scoped fleet; the cases run in order and build on each other:

apply -> scheduled, delivered, running (and visible in `fleetlet get`) -> a rollout in waves
-> a broken version rolled back automatically -> the gateway restarted while the server is
down -> a device rebooted -> a device removed from the fleet.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.micropython.fw_harness import Device

from .harness import Fleet, deployment, eventually, workloads_of

pytestmark = [pytest.mark.e2e, pytest.mark.micropython]

GW = "gw-e2e"
NAMES = ("mpy-a", "mpy-b", "mpy-c")
HEAP = "128k"
APP = """import asyncio
VER = {ver}
async def main(ctx):
    ctx.log("sensor up ver=%d" % VER)
    n = 0
    while True:
        n += 1
        ctx.metric("temperature", 20 + n % 3)
        ctx.log("tick ver=%d n=%d" % (VER, n))
        await asyncio.sleep(1)
"""
BROKEN = "async def main(ctx):\n    ctx.log('broken ver={ver}')\n    raise ValueError('boom')\n"


def sensor_spec(ver: int, source: str = APP) -> dict[str, Any]:
    return {
        "runtime": "micropython",
        "restartPolicy": "Always",
        "app": {"entry": "main", "modules": [{"name": "main.py", "source": source.format(ver=ver)}]},
    }


class State:
    fleet: Fleet
    port: int
    devices: dict[str, Device]
    uids: dict[str, str]  # device -> workload uid of the good version


@pytest.fixture(scope="module")
def st(
    tmp_path_factory: pytest.TempPathFactory, fleetlet_bin: str, micropython_bin: str, e2e_firmware: Path
) -> Iterator[State]:
    tmp = tmp_path_factory.mktemp("e2e")
    s = State()
    s.fleet = Fleet(tmp, fleetlet_bin)
    s.devices = {}
    s.uids = {}
    try:
        s.fleet.start_server()
        asyncio.run(s.fleet.gateway_token(GW))
        _, s.port = s.fleet.start_gateway(GW)
        for name in NAMES:
            config = asyncio.run(s.fleet.add_device(name, GW, s.port, labels={"site": "e2e"}))
            config.update(reportInterval=2, goodAfter=1, ackTimeout=0.5, backoff=1, crashLimit=3)
            (tmp / name).mkdir()
            s.devices[name] = Device(micropython_bin, e2e_firmware, config, tmp / name, heap=HEAP).start()
        yield s
    finally:
        for d in s.devices.values():
            d.kill()
        s.fleet.close()


def cli(fleet: Fleet, *args: str) -> str:
    proc = subprocess.run(
        [fleet.fleetlet, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **fleet.env}
    )
    assert proc.returncode == 0, f"fleetlet {' '.join(args)}: {proc.stderr}"
    return proc.stdout


async def running_on_all(
    fleet: Fleet, name: str, devices: tuple[str, ...], revision: str | None = None
) -> list[dict[str, Any]]:
    """The deployment's workloads once every device runs one, Running at its generation."""

    async def check() -> list[dict[str, Any]] | None:
        async with fleet.api() as api:
            wls = await workloads_of(api, name)
        by_device = {w["spec"].get("deviceName"): w for w in wls}
        if sorted(by_device) != sorted(devices) or len(wls) != len(devices):
            return None
        for w in wls:
            s = w.get("status") or {}
            if s.get("phase") != "Running" or s.get("observedGeneration") != w["metadata"]["generation"]:
                return None
            if revision and w["metadata"]["labels"].get("fleetlet.io/revision") != revision:
                return None
        return wls

    return await eventually(check, f"{name} Running on {devices}", timeout=90)


async def test_apply_scheduled_delivered_running(st: State) -> None:
    async with st.fleet.api() as api:
        await api.create(deployment("sensor", sensor_spec(1), labels={"app": "sensor"}))
    wls = await running_on_all(st.fleet, "sensor", NAMES)
    for w in wls:
        conds = {c["type"]: c["status"] for c in w["status"].get("conditions") or []}
        # EveryDevice workloads are bound to their device at creation (no scheduler pass).
        assert conds.get("Scheduled", "True") == "True", conds
        assert conds.get("Delivered") == "True" and conds.get("Ready") == "True", conds
        assert w["spec"]["gatewayName"] == GW and w["spec"]["deviceName"] in NAMES
        st.uids[w["spec"]["deviceName"]] = w["metadata"]["uid"]
    # The app runs on every device: its log lines come out of the real interpreter.
    for d in st.devices.values():
        d.wait_for(r"sensor up ver=1")
    out = cli(st.fleet, "get", "wl")
    assert sum(1 for line in out.splitlines() if line.startswith("sensor-") and " Running " in line) == 3, out
    devs = cli(st.fleet, "get", "devices")
    assert all(any(line.startswith(n) and "Online" in line for line in devs.splitlines()) for n in NAMES), (
        devs
    )


async def test_rollout_in_waves(st: State) -> None:
    seen_partial: list[int] = []  # new-revision Running counts observed while old ones still ran
    waves: set[int] = set()
    async with st.fleet.api() as api:
        dep = await api.get("deployments", "sensor", "default")
        dep["spec"]["template"]["spec"] = sensor_spec(2)
        dep["spec"]["strategy"] = {"waves": [1, "50%", "100%"], "maxUnavailable": 1}
        await api.replace(dep)

        async def watch() -> None:
            while True:
                d = await api.get("deployments", "sensor", "default")
                update = (d.get("status") or {}).get("updateRevision")
                waves.add(int((d.get("status") or {}).get("currentWave") or 0))
                wls = await workloads_of(api, "sensor")
                revs = [w["metadata"]["labels"].get("fleetlet.io/revision") for w in wls]
                if update and update in revs and any(r != update for r in revs):
                    seen_partial.append(revs.count(update))
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        try:
            done = await eventually(
                lambda: _rolled_out(st.fleet), "deployment sensor rolled out to revision 2", timeout=120
            )
        finally:
            watcher.cancel()
    wls = await running_on_all(st.fleet, "sensor", NAMES, revision=done)
    # Waves: the rollout went through more than one wave, and at some point only part of the
    # fleet ran the new version while the rest still ran the old one.
    assert len(waves - {0}) >= 2, waves
    assert seen_partial and min(seen_partial) < len(NAMES), seen_partial
    for d in st.devices.values():
        d.wait_for(r"sensor up ver=2")
    st.uids = {w["spec"]["deviceName"]: w["metadata"]["uid"] for w in wls}
    history = cli(st.fleet, "rollout", "history", "deployment/sensor")
    assert len([line for line in history.splitlines() if line.strip()[:1].isdigit()]) >= 2, history


async def _rolled_out(fleet: Fleet) -> str | None:
    async with fleet.api() as api:
        d = await api.get("deployments", "sensor", "default")
    s = d.get("status") or {}
    if s.get("observedGeneration") != d["metadata"]["generation"]:
        return None
    if (
        s.get("updateRevision")
        and s.get("updateRevision") == s.get("currentRevision")
        and s.get("readyReplicas") == len(NAMES)
    ):
        return str(s["updateRevision"])
    return None


async def test_broken_version_is_rolled_back(st: State) -> None:
    async with st.fleet.api() as api:
        dep = await api.get("deployments", "sensor", "default")
        good = dep["status"]["currentRevision"]
        dep["spec"]["template"]["spec"] = sensor_spec(3, BROKEN)
        dep["spec"]["strategy"] = {"waves": [1, "100%"], "maxUnavailable": 1, "failureThreshold": 0.5}
        await api.replace(dep)

    async def rolled_back() -> dict[str, Any] | None:
        async with st.fleet.api() as api:
            d = await api.get("deployments", "sensor", "default")
        return d if (d.get("status") or {}).get("rolledBack") else None

    d = await eventually(rolled_back, "deployment sensor rolled back", timeout=120)
    assert d["status"]["rolledBack"]["to"] == good
    conds = {c["type"]: c for c in d["status"].get("conditions") or []}
    assert conds["RolledBack"]["status"] == "True"
    # The broken version reached exactly one device (the first wave) and crashed there.
    crashed = [n for n, dev in st.devices.items() if "broken ver=3" in dev.log()]
    assert len(crashed) == 1, crashed
    # The fleet is back on the good version, Running everywhere; the untouched devices kept
    # their workloads (same uids), the crashed one runs the good version again.
    wls = await running_on_all(st.fleet, "sensor", NAMES, revision=good)
    now = {w["spec"]["deviceName"]: w["metadata"]["uid"] for w in wls}
    for name in NAMES:
        if name not in crashed:
            assert now[name] == st.uids[name]
    st.devices[crashed[0]].wait_for(
        r"sensor up ver=2", after=st.devices[crashed[0]].log().index("broken ver=3")
    )
    st.uids = now


async def test_gateway_restart_while_server_down(st: State) -> None:
    fleet = st.fleet
    fleet.stop_server()
    fleet.gateways[GW].stop()
    marks = {n: len(d.log()) for n, d in st.devices.items()}
    _, port = fleet.start_gateway(GW, st.port)
    assert port == st.port
    # Devices keep running their app through it all (nothing restarts them) ...
    for n, d in st.devices.items():
        assert d.alive(), d.log()[-2000:]
        d.wait_for(r"tick ver=2 n=\d+", after=marks[n])
    # ... and the restarted gateway serves a rebooted device from its local store alone.
    dev = st.devices["mpy-a"]
    dev.kill()
    dev.start()
    dev.wait_for(r"registered as mpy-a")
    dev.wait_for(r"sensor up ver=2")
    assert dev.state()["cur"] == dev.state()["good"]
    fleet.start_server()
    wls = await running_on_all(fleet, "sensor", NAMES)
    assert {w["spec"]["deviceName"]: w["metadata"]["uid"] for w in wls} == st.uids


async def test_device_reboot(st: State) -> None:
    dev = st.devices["mpy-b"]
    boots = dev.boots
    dev.kill()
    dev.start()
    dev.wait_for(r"registered as mpy-b")
    dev.wait_for(r"sensor up ver=2")

    async def rebooted() -> dict[str, Any] | None:
        async with st.fleet.api() as api:
            s = (await api.get("devices", "mpy-b")).get("status") or {}
        return s if s.get("bootCount", 0) >= boots + 1 and s.get("phase") == "Online" else None

    await eventually(rebooted, "mpy-b Online with a new boot count", timeout=60)
    wls = await running_on_all(st.fleet, "sensor", NAMES)
    assert {w["spec"]["deviceName"]: w["metadata"]["uid"] for w in wls} == st.uids


async def test_device_removed(st: State) -> None:
    async with st.fleet.api() as api:
        await api.delete("devices", "mpy-c")
    gone = ("mpy-a", "mpy-b")
    wls = await running_on_all(st.fleet, "sensor", gone)
    assert {w["spec"]["deviceName"] for w in wls} == set(gone)

    async def device_deleted() -> bool:
        async with st.fleet.api() as api:
            items = (await api.list_all("devices"))["items"]
        return all(i["metadata"]["name"] != "mpy-c" for i in items)

    await eventually(device_deleted, "Device mpy-c deleted")
    # The gateway no longer serves it: the device's requests are refused from now on.
    gw = st.fleet.gateways[GW]
    await eventually(
        lambda: _true(("mpy-c" in gw.log_text() and "refused" in gw.log_text()) or None),
        "the gateway refusing mpy-c",
        timeout=60,
    )
    out = cli(st.fleet, "get", "devices")
    assert "mpy-c" not in out and "mpy-a" in out


async def _true(v: Any) -> Any:
    return v
