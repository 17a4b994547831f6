"""The MicroPython firmware against a real `fleetlet server` + `fleetlet gateway`: a desired
document larger than one block under Observe, sleepy ETag polling (2.03 Valid), app logs
reaching the gateway, and the private wire constants the firmware folds at compile time.

Each device runs `micropython -X heapsize=HEAP` (main.py + .mpy modules) through a relay
that records the requests' Block2 numbers and the gateway's response codes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import ServerProcess
from tests.gateway.harness import Cluster, eventually

from .fw_harness import FIRMWARE, Device, Relay
from .test_firmware_e2e import HEAP, deploy, running, update, workload

pytestmark = [pytest.mark.micropython, pytest.mark.e2e]

GW = "gw-fw-proto"
VALID, CONTENT = 0x43, 0x45
SHOW = """import asyncio
async def main(ctx):
    c = ctx.config
    ctx.log("cfg keys=%d last=%s ver=%d" % (len(c), c.get("k07"), c.get("ver")))
    ctx.log("hello %d" % c.get("answer", 0))
    while True:
        await asyncio.sleep(1)
"""


@pytest.fixture
def rigs() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for x in made:
        x.kill() if isinstance(x, Device) else x.close()


def rig(
    cluster: Cluster,
    gw_port: int,
    name: str,
    micropython: str,
    fw: Path,
    tmp: Path,
    made: list[Any],
    **over: Any,
) -> tuple[Device, Relay]:
    relay = Relay(gw_port)
    made.append(relay)
    config = cluster.add_device(name, GW)
    config.update(port=relay.port, reportInterval=2, goodAfter=1, ackTimeout=0.5, **over)
    (tmp / name).mkdir()
    dev = Device(micropython, fw, config, tmp / name, heap=HEAP)
    made.append(dev)
    return dev, relay


def big_workload(name: str, ver: int, **config: Any) -> dict[str, Any]:
    wl = workload(name, ver, source=SHOW)
    wl["spec"]["app"]["config"] = {f"k{i:02d}": f"value {i:02d} " + "x" * 120 for i in range(8)} | {
        "ver": ver,
        **config,
    }
    return wl


async def test_desired_larger_than_a_block_arrives_whole_under_observe(
    cluster: Cluster,
    gateway: tuple[ServerProcess, int],
    micropython_bin: str,
    firmware: Path,
    tmp_path: Path,
    rigs: list[Any],
) -> None:
    _, port = gateway
    dev, relay = rig(cluster, port, "fwp-big", micropython_bin, firmware, tmp_path, rigs, blockSize=256)
    dev.start()
    dev.wait_for(r"registered as fwp-big")
    # Deployed after the Observe registration: the document comes as a notification.
    await deploy(cluster, "fwp-big", big_workload("big", 1))
    dev.wait_for(r"\[default/big\] cfg keys=9 last=value 07 x{120} ver=1")
    desired = [b for p, b in relay.requests if p == "/d/fwp-big/desired"]
    # Block2 went with the registration (block 0: the device's size), and the rest of the
    # ~1.2 KB document was fetched block by block.
    assert desired[0] == 0
    assert max(b or 0 for b in desired) >= 3
    await running(cluster, "big")
    # An update of the big document arrives whole too.
    await update(cluster, big_workload("big", 2))
    dev.wait_for(r"\[default/big\] cfg keys=9 last=value 07 x{120} ver=2")
    # On this heap an apply may meet a MemoryError; it is caught and retried, never fatal.
    assert dev.alive() and "Traceback" not in dev.log()


async def test_sleepy_device_polls_with_etag_and_gets_valid(
    cluster: Cluster,
    gateway: tuple[ServerProcess, int],
    micropython_bin: str,
    firmware: Path,
    tmp_path: Path,
    rigs: list[Any],
) -> None:
    _, port = gateway
    dev, relay = rig(
        cluster, port, "fwp-sleepy", micropython_bin, firmware, tmp_path, rigs, sleepy=True, pollInterval=1
    )
    await deploy(cluster, "fwp-sleepy", workload("nap", 1))
    dev.start()
    dev.wait_for(r"\[default/nap\] up ver=1 ")
    path = "/d/fwp-sleepy/desired"

    async def valid_polls(n: int) -> int | None:
        k = relay.responses.count((path, VALID))
        return k if k >= n else None

    # Nothing changes: the polls get 2.03 Valid (no document resent).
    await eventually(lambda: valid_polls(2), "two 2.03 Valid answers to ETag polls")
    contents = relay.responses.count((path, CONTENT))
    await update(cluster, workload("nap", 2))
    dev.wait_for(r"\[default/nap\] up ver=2 ")
    assert relay.responses.count((path, CONTENT)) > contents  # the changed document came
    await running(cluster, "nap")
    n = relay.responses.count((path, VALID))
    await eventually(lambda: valid_polls(n + 1), "2.03 Valid again once the new doc is applied")


async def test_app_log_reaches_the_gateway(
    cluster: Cluster,
    gateway: tuple[ServerProcess, int],
    micropython_bin: str,
    firmware: Path,
    tmp_path: Path,
    rigs: list[Any],
) -> None:
    gw, port = gateway
    dev, relay = rig(cluster, port, "fwp-logs", micropython_bin, firmware, tmp_path, rigs, logInterval=1)
    await deploy(cluster, "fwp-logs", talker())
    dev.start()
    dev.wait_for(r"\[default/talker\] hello 42")

    async def in_gateway_log() -> str | None:
        text = gw.log_text()
        m = re.search(r"\[fwp-logs \S*default/talker\] hello 42", text)
        return m.group(0) if m else None

    await eventually(in_gateway_log, "the app's log line in the gateway's log")
    assert "/d/fwp-logs/logs" in relay.paths


def talker() -> dict[str, Any]:
    wl = workload("talker", 1, source=SHOW)
    wl["spec"]["app"]["config"] = {"ver": 1, "answer": 42}
    return wl


def _consts(path: Path, private: bool) -> dict[str, int]:
    rx = r"^_([A-Z][A-Z0-9_]*) = const\((\d+)\)" if private else r"^([A-Z][A-Z0-9_]*) = const\((\d+)\)"
    return {m[1]: int(m[2]) for m in re.finditer(rx, path.read_text(), re.M)}


def test_private_wire_constants_match_wire_py() -> None:
    """agent.py (the report), supervisor.py, msg.py and applier.py fold wire.py's numbers as
    _private consts: same values."""
    public = _consts(FIRMWARE / "wire.py", private=False)
    for module in ("agent.py", "supervisor.py", "msg.py", "applier.py"):
        # not wire.py's: the log line limit, and CoAP's Content-Format number for CBOR
        private = _consts(FIRMWARE / module, private=True)
        private = {k: v for k, v in private.items() if k not in ("LINE_MAX", "CBOR_CF")}
        assert private, module
        assert {k: public.get(k) for k in private} == private, module
