"""Smallest MicroPython heap for the firmware, and the wire sizes of a report and a desired doc.

    python bench/firmware.py [--final-seconds 60] [--search-seconds 10] [--lo 32] [--hi 160]

Starts a real `fleetlet server` and `fleetlet gateway` on loopback, then for each heap size
a fresh device (`fleetlet device add`) with a two-app deployment, running the firmware
(main.py + .mpy modules, as a board would get it) under `micropython -X heapsize=N`, through
a counting UDP relay. A size passes when the device registers, both apps run, the API shows
both Workloads Running, and reports keep arriving for the phase without a MemoryError.
Binary search with short phases; the final candidate is confirmed over --final-seconds.
The last line is one JSON object (min_heap_kb, report/desired bytes vs JSON, ...).

Each app logs a line every 5 s, so the log ring and its POSTs to /d/<dev>/logs are part of
what is measured. Block size: the firmware's default (256 B; the desired doc comes in blocks).

Note: the unix port is a 64-bit build (8-byte objects); a 32-bit board needs less heap for
the same code.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import enum
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fleetlet.gateway.wire import DesiredDoc, Report  # noqa: E402

from tests.gateway.devsim import DeviceSim  # noqa: E402
from tests.gateway.harness import Cluster  # noqa: E402
from tests.micropython.fw_harness import Device, Relay, build_firmware  # noqa: E402

GW = "gw-bench"
APP = """import asyncio
async def main(ctx):
    ctx.log("up %s" % ctx.config.get("who"))
    n = 0
    while True:
        n += 1
        ctx.metric("n", n)
        if not n % 5:
            ctx.log("tick %d" % n)  # log lines are kept and shipped to the gateway too
        await asyncio.sleep(1)
"""


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _workload(name: str, who: str) -> dict[str, Any]:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runtime": "micropython",
            "app": {
                "entry": "main",
                "modules": [
                    {"name": "main.py", "source": APP},
                    {"name": "util.py", "source": f"WHO = {who!r}\n"},
                ],
                "config": {"who": who, "interval": 1},
            },
        },
    }


async def _deploy(cluster: Cluster, device: str, names: list[str]) -> None:
    async with cluster.api() as api:
        for n in names:
            await api.create(_workload(n, n))
            await api.bind("default", n, device)


async def _all_running(cluster: Cluster, names: list[str]) -> bool:
    async with cluster.api() as api:
        for n in names:
            obj = await api.get("workloads", n, "default")
            s = obj.get("status") or {}
            if s.get("phase") != "Running" or s.get("observedGeneration") != obj["metadata"]["generation"]:
                return False
    return True


class Bench:
    def __init__(self, tmp: Path, gw_port: int, cluster: Cluster, fw: Path) -> None:
        self.tmp, self.gw_port, self.cluster, self.fw = tmp, gw_port, cluster, fw
        self.n = 0
        self.report = b""
        self.desired = b""

    def trial(self, heap_kb: int, seconds: float) -> bool:
        self.n += 1
        name = f"bench{self.n}-{heap_kb}k"
        relay = Relay(self.gw_port)
        config = self.cluster.add_device(name, GW)
        config.update(port=relay.port, reportInterval=2, goodAfter=3)
        (self.tmp / name).mkdir()
        dev = Device(_tool("micropython"), self.fw, config, self.tmp / name, heap=f"{heap_kb}k")
        apps = [f"{name}-a", f"{name}-b"]
        ok = False
        try:
            asyncio.run(_deploy(self.cluster, name, apps))
            dev.start()
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and dev.alive():
                if "up " + apps[1] in dev.log() and "up " + apps[0] in dev.log():
                    break
                time.sleep(0.1)
            while time.monotonic() < deadline and dev.alive():
                if asyncio.run(_all_running(self.cluster, apps)):
                    break
                time.sleep(0.2)
            if not (dev.alive() and asyncio.run(_all_running(self.cluster, apps))):
                return False
            reports0 = relay.paths.count(f"/d/{name}/report")
            time.sleep(seconds)
            reports = relay.paths.count(f"/d/{name}/report") - reports0
            ok = dev.alive() and "MemoryError" not in dev.log() and reports >= max(1, int(seconds / 2) - 2)
            if ok:
                self.report = relay.payloads.get(f"/d/{name}/report", self.report)
                self.desired = asyncio.run(self._desired(name, config["token"])) or self.desired
            return ok
        finally:
            dev.kill()
            relay.close()
            print(f"  heap {heap_kb:4d} KB, {seconds:4.0f} s: {'ok' if ok else 'FAIL'}", file=sys.stderr)

    async def _desired(self, name: str, token: str) -> bytes:
        # the device gets it in 256-byte blocks: fetch it whole (aiocoap reassembles Block2)
        try:
            async with DeviceSim(name, token, self.gw_port) as sim:
                resp = await sim.desired_raw()
            DesiredDoc.from_cbor(resp.payload)
            return bytes(resp.payload)
        except Exception:
            return b""


def _jsonable(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        fields = ((f.name, getattr(v, f.name)) for f in dataclasses.fields(v))
        return {k: _jsonable(x) for k, x in fields if x not in (None, (), {}, False)}
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def as_json(obj: Any) -> bytes:
    """The same content as compact JSON with field names (bytes as base64), as a JSON API would send it."""
    return json.dumps(_jsonable(obj), separators=(",", ":")).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lo", type=int, default=32, help="KB known or assumed to fail")
    ap.add_argument("--hi", type=int, default=160, help="KB expected to pass")
    ap.add_argument("--step", type=int, default=4)
    ap.add_argument("--search-seconds", type=float, default=10)
    ap.add_argument("--final-seconds", type=float, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetlet-bench-fw-") as t:
        tmp = Path(t)
        cluster = Cluster(tmp / "cluster", _tool("fleetlet"))
        (tmp / "cluster").mkdir()
        try:
            cluster.start_server()
            _, gw_port = cluster.start_gateway(GW, cluster.gateway_token(GW))
            fw = build_firmware(_tool("mpy-cross"), tmp / "firmware")
            firmware_bytes = sum(p.stat().st_size for p in fw.glob("*"))
            b = Bench(tmp, gw_port, cluster, fw)
            lo, hi = args.lo, args.hi
            if not b.trial(hi, args.search_seconds):
                sys.exit(f"bench: the firmware does not run even with {hi} KB")
            while True:
                while hi - lo > args.step:
                    mid = (lo + hi) // 2 // args.step * args.step
                    if b.trial(mid, args.search_seconds):
                        hi = mid
                    else:
                        lo = mid
                if b.trial(hi, args.final_seconds):
                    break
                lo, hi = hi, hi + args.step  # failed the long run: a little more
        finally:
            cluster.close()
    report = Report.from_cbor(b.report)
    desired = DesiredDoc.from_cbor(b.desired)
    result = {
        "min_heap_kb": hi,
        "target_kb": 64,
        "moonshot_kb": 32,
        "gateway": "real (fleetlet server + fleetlet gateway)",
        "interpreter": "micropython unix port, 64-bit",
        "final_seconds": args.final_seconds,
        "report_bytes": len(b.report),
        "report_json_bytes": len(as_json(report)),
        "desired_bytes": len(b.desired),
        "desired_json_bytes": len(as_json(desired)),
        "desired_workloads": len(desired.workloads),
        "trials": b.n,
    }
    print(f"firmware: {firmware_bytes} bytes on flash (main.py + .mpy); gateway: real")
    print(f"min heap: {hi} KB (target 64, moonshot 32)")
    print(f"report:  {len(b.report)} B CBOR vs {result['report_json_bytes']} B JSON")
    print(f"desired: {len(b.desired)} B CBOR vs {result['desired_json_bytes']} B JSON (2 workloads)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
