"""The MicroPython firmware (device-firmware/micropython) end to end, on the real interpreter.

`micropython -X heapsize=...` runs main.py with the other modules precompiled by mpy-cross,
against a real `fleetlet server` and `fleetlet gateway` (tests/gateway/harness.py), through a
UDP relay (tests/micropython/fw_harness.py) that counts blob GETs and can drop datagrams.
Workloads are created and bound through the API; what the device does is read from its
output, its flash (state.json) and the Workload/Device status in the API.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleetlet.server.client import ApiError

from tests.fixtures import ServerProcess
from tests.gateway.harness import Cluster, eventually

from .fw_harness import Device, Relay

pytestmark = [pytest.mark.micropython, pytest.mark.e2e]

GW = "gw-fw"
HEAP = "96k"  # see bench/firmware.py for the smallest heap that works

APP = """import asyncio
import lib
VER = {ver}
async def main(ctx):
    ctx.log("up ver=%d lib=%s cfg=%r" % (VER, lib.NAME, ctx.config.get("ver")))
    n = 0
    while True:
        n += 1
        ctx.metric("n", n)
        await asyncio.sleep(1)
"""
LIB = 'NAME = "{name}"\n'
CRASH = "async def main(ctx):\n    ctx.log('crashing ver={ver}')\n    raise ValueError('boom {ver}')\n"


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    made: list[Relay] = []
    yield made
    for r in made:
        r.close()


@pytest.fixture
def devices() -> Iterator[list[Device]]:
    made: list[Device] = []
    yield made
    for d in made:
        d.kill()


def make_device(
    cluster: Cluster,
    name: str,
    port: int,
    micropython: str,
    firmware: Path,
    tmp: Path,
    devices: list[Device],
    **over: Any,
) -> Device:
    config = cluster.add_device(name, GW)
    config.update(port=port, reportInterval=2, goodAfter=1, ackTimeout=0.5, backoff=1, crashLimit=3, **over)
    (tmp / name).mkdir()
    dev = Device(micropython, firmware, config, tmp / name, heap=HEAP)
    devices.append(dev)
    return dev


def workload(name: str, ver: int, lib: str = "lib-1", source: str = APP) -> dict[str, Any]:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runtime": "micropython",
            "app": {
                "entry": "main",
                "modules": [
                    {"name": "main.py", "source": source.format(ver=ver)},
                    {"name": "lib.py", "source": LIB.format(name=lib)},
                ],
                "config": {"ver": ver},
            },
        },
    }


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def deploy(cluster: Cluster, device: str, *wls: dict[str, Any]) -> None:
    async with cluster.api() as api:
        for wl in wls:
            await api.create(wl)
            await api.bind("default", wl["metadata"]["name"], device)


async def update(cluster: Cluster, wl: dict[str, Any]) -> None:
    """Replace the app, retrying on 409: the gateway patches this workload's status meanwhile."""
    async with cluster.api() as api:
        for attempt in range(10):
            obj = await api.get("workloads", wl["metadata"]["name"], "default")
            obj["spec"]["app"] = wl["spec"]["app"]
            try:
                await api.replace(obj)
                return
            except ApiError as e:
                if e.code != 409 or attempt == 9:
                    raise


async def wl_get(cluster: Cluster, name: str) -> dict[str, Any]:
    async with cluster.api() as api:
        return await api.get("workloads", name, "default")


async def wl_status(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict((await wl_get(cluster, name)).get("status") or {})


async def running(cluster: Cluster, name: str) -> dict[str, Any]:
    """The Workload's status once the device reports its current generation running."""

    async def check() -> dict[str, Any] | None:
        obj = await wl_get(cluster, name)
        s = dict(obj.get("status") or {})
        ok = s.get("phase") == "Running" and s.get("reason") == "Running"
        return s if ok and s.get("observedGeneration") == obj["metadata"]["generation"] else None

    return await eventually(check, f"Workload {name} Running at its generation", timeout=60)


def check_flash(dev: Device) -> dict[str, Any]:
    """Sanity of the flash layout: state.json readable, every app folder of cur and good whole."""
    st = dev.state()
    for key in ("cur", "good"):
        rec = st.get(key)
        for app in (rec or {}).get("apps", []):
            folder = dev.data / "apps" / app["k"]
            assert (folder / "_c").is_file(), f"{key} app folder {app['k']} incomplete"
            for hexsha in app["m"]:
                assert hashlib.sha256((dev.data / "blobs" / hexsha).read_bytes()).hexdigest() == hexsha
            files = [p for p in folder.iterdir() if p.name != "_c"]
            assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in files) == sorted(app["m"])
    return st


async def test_register_deliver_two_apps_and_report(
    cluster: Cluster,
    gateway: tuple[ServerProcess, int],
    micropython_bin: str,
    firmware: Path,
    tmp_path: Path,
    devices: list[Device],
) -> None:
    _, port = gateway
    dev = make_device(cluster, "fw-two", port, micropython_bin, firmware, tmp_path, devices)
    await deploy(cluster, "fw-two", workload("two-a", 1, "liba"), workload("two-b", 1, "libb"))
    dev.start()
    dev.wait_for(r"registered as fw-two")
    # Both apps run on the device, each with its own lib.py and config.
    dev.wait_for(r"\[default/two-a\] up ver=1 lib=liba cfg=1")
    dev.wait_for(r"\[default/two-b\] up ver=1 lib=libb cfg=1")
    for name in ("two-a", "two-b"):
        s = await running(cluster, name)
        assert s["appStatuses"][0]["state"] == "running" and s["restarts"] == 0

    async def online() -> dict[str, Any] | None:
        async with cluster.api() as api:
            s = (await api.get("devices", "fw-two")).get("status") or {}
        return s if s.get("phase") == "Online" and s.get("uptime") is not None else None

    ds = await eventually(online, "device fw-two Online with an uptime from a report")
    assert ds["firmware"] == "0.1.0" and ds["bootCount"] == 1 and ds["freeMemory"] > 0
    st = await eventually(lambda: _proven(dev, 1), "the deployment proven good on flash")
    assert st["good"] == st["cur"]
    assert sorted(a["n"] for a in st["cur"]["apps"]) == ["default/two-a", "default/two-b"]


async def test_update_and_unchanged_module_not_refetched(
    cluster: Cluster,
    gateway: tuple[ServerProcess, int],
    micropython_bin: str,
    firmware: Path,
    tmp_path: Path,
    devices: list[Device],
    relays: list[Relay],
) -> None:
    _, port = gateway
    relay = Relay(port)
    relays.append(relay)
    dev = make_device(cluster, "fw-upd", relay.port, micropython_bin, firmware, tmp_path, devices)
    await deploy(cluster, "fw-upd", workload("upd", 1, "same"))
    dev.start()
    dev.wait_for(r"up ver=1 lib=same cfg=1")
    await running(cluster, "upd")
    assert relay.blob_gets(sha(LIB.format(name="same"))) >= 1
    assert relay.blob_gets(sha(APP.format(ver=1))) >= 1
    before = len(relay.paths)

    # main.py changes, lib.py does not: only main.py's blob is fetched.
    await update(cluster, workload("upd", 2, "same"))
    dev.wait_for(r"up ver=2 lib=same cfg=2")
    await running(cluster, "upd")
    later = relay.paths[before:]
    assert f"/b/{sha(APP.format(ver=2))}" in later
    assert f"/b/{sha(LIB.format(name='same'))}" not in later
    # The update went on trial, was promoted, and the old version's files were collected.
    st = await eventually(lambda: _proven(dev, 2), "gen with ver=2 proven good")
    blobs = {p.name for p in (dev.data / "blobs").iterdir()}
    assert blobs == {sha(APP.format(ver=2)), sha(LIB.format(name="same"))}
    assert st["good"] == st["cur"]


async def _proven(dev: Device, ver: int) -> dict[str, Any] | None:
    st = check_flash(dev)
    cur = st.get("cur") or {}
    mods = [m for a in cur.get("apps", []) for m in a["m"]]
    return st if st.get("trial") == 0 and sha(APP.format(ver=ver)) in mods else None


async def test_crash_loop_rolls_back(
    cluster: Cluster,
    gateway: tuple[ServerProcess, int],
    micropython_bin: str,
    firmware: Path,
    tmp_path: Path,
    devices: list[Device],
) -> None:
    _, port = gateway
    dev = make_device(cluster, "fw-crash", port, micropython_bin, firmware, tmp_path, devices)
    await deploy(cluster, "fw-crash", workload("crashy", 1))
    dev.start()
    dev.wait_for(r"up ver=1 ")
    await eventually(lambda: _proven(dev, 1), "ver=1 proven good")
    good_generation = (await running(cluster, "crashy"))["observedGeneration"]
    await update(cluster, workload("crashy", 2, source=CRASH))
    dev.wait_for(r"crashing ver=2")
    m = dev.wait_for(r"rolled back to (\d+): default/crashy crashed 3 times: ValueError: boom 2")
    # Back on version 1: it runs again, and the report says the device rolled back.
    dev.wait_for(r"up ver=1 ", after=m.end())

    async def rolled_back() -> dict[str, Any] | None:
        s = await wl_status(cluster, "crashy")
        return s if s.get("reason") == "RolledBack" else None

    s = await eventually(rolled_back, "Workload crashy RolledBack")
    assert s["appStatuses"][0]["rolledBack"] is True
    assert s["observedGeneration"] == good_generation and "boom 2" in s["message"]
    st = check_flash(dev)
    assert st["cur"] == st["good"] and st["trial"] == 0 and st["bad"] > st["cur"]["gen"]
    # A restart stays on the good version and does not try the bad one again.
    dev.kill()
    dev.start()
    dev.wait_for(r"registered as fw-crash")
    dev.wait_for(r"up ver=1 ")
    assert "applying gen" not in dev.log()


async def test_packet_loss_30_percent_converges(
    cluster: Cluster,
    gateway: tuple[ServerProcess, int],
    micropython_bin: str,
    firmware: Path,
    tmp_path: Path,
    devices: list[Device],
    relays: list[Relay],
) -> None:
    _, port = gateway
    relay = Relay(port, drop=0.3, seed=30)
    relays.append(relay)
    dev = make_device(cluster, "fw-lossy", relay.port, micropython_bin, firmware, tmp_path, devices)
    await deploy(cluster, "fw-lossy", workload("lossy-a", 1, "la"), workload("lossy-b", 1, "lb"))
    dev.start()
    dev.wait_for(r"\[default/lossy-a\] up ver=1 lib=la", timeout=180)
    dev.wait_for(r"\[default/lossy-b\] up ver=1 lib=lb", timeout=180)
    await update(cluster, workload("lossy-a", 2, "la"))
    dev.wait_for(r"\[default/lossy-a\] up ver=2 lib=la", timeout=180)
    await running(cluster, "lossy-a")
    await running(cluster, "lossy-b")
    assert relay.dropped > 0  # the relay really did lose datagrams (30% of them, seeded)
    check_flash(dev)


async def test_power_loss_during_updates(
    cluster: Cluster,
    gateway: tuple[ServerProcess, int],
    micropython_bin: str,
    firmware: Path,
    tmp_path: Path,
    devices: list[Device],
) -> None:
    """kill -9 at random points of 32 updates; every restart runs the old or the new version."""
    _, port = gateway
    rng = random.Random(20240917)
    dev = make_device(cluster, "fw-power", port, micropython_bin, firmware, tmp_path, devices, trialBoots=3)
    await deploy(cluster, "fw-power", workload("pw", 1, "lib-1"))
    dev.start()
    dev.wait_for(r"up ver=1 ")
    await eventually(lambda: _proven(dev, 1), "ver=1 proven good")
    # How long an update takes on this machine (notify, fetch, build, switch), measured once
    # without a kill: the kills land at random points of a window that long, so they hit
    # both sides of the switch however fast the gateway and the device are.
    started = time.monotonic()
    await update(cluster, workload("pw", 2, "lib-2"))
    dev.wait_for(r"up ver=2 ")
    window = time.monotonic() - started
    await eventually(lambda: _proven(dev, 2), "ver=2 proven good")
    outcomes = {"old": 0, "new": 0}
    trials = 32
    for i in range(2, trials + 2):
        old, new = i, i + 1
        # Every other update keeps lib.py; the others change both modules.
        lib = f"lib-{new if i % 2 else old}"
        await update(cluster, workload("pw", new, lib))
        # Somewhere in notify/fetch/build/switch/promote; every fourth kill right after the
        # update is accepted, before the device can have switched, so the old side is always hit.
        await asyncio.sleep(0.0 if i % 4 == 0 else rng.uniform(0.0, window))
        dev.kill()
        st = check_flash(dev)  # the flash as the power cut left it
        dev.start()
        m = dev.wait_for(r"up ver=(\d+) ")
        ver = int(m.group(1))
        assert ver in (old, new), f"trial {i}: booted ver={ver}, expected {old} or {new}"
        outcomes["old" if ver == old else "new"] += 1
        assert st["cur"]["gen"] >= 1
        # Then it converges to the new version and proves it.
        dev.wait_for(rf"up ver={new} ")
        await eventually(lambda v=new: _proven(dev, v), f"trial {i}: ver={new} proven")
    dev.kill()
    assert outcomes["old"] + outcomes["new"] == trials
    assert outcomes["old"] and outcomes["new"], outcomes  # the kills hit both sides of the switch
    (tmp_path / "power-outcomes.json").write_text(json.dumps(outcomes))
