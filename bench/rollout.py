"""Rollout benchmark: apply -> Running on 1,000 devices behind 10 gateways.

    python bench/rollout.py [--devices 1000] [--gateways 10] [--micropython 5] [--sims 4]
    python bench/rollout.py --memory-only [--big 1000]   # only the one-gateway RSS measurement

Real processes: `fleetlet server` (SQLite, scheduler, controllers), 10 gateway processes
(`python -m fleetlet.gateway.main`, distinct UDP ports), 5 MicroPython devices running the real
firmware on the real interpreter, and hollow devices (bench/hollow.py, kubemark/edgemark style:
the real wire protocol, many devices per process, one UDP socket each) for the rest.

Devices are created through the API and brought Online first (not timed). Then one EveryDevice
Deployment is applied; a watch on Workloads stamps, per device, the first time its workload
shows phase Running. Figures: p50, p99, max of apply -> Running. Target p99 <= 5 s (the
Kubernetes pod-startup SLO; KubeEdge reports 4.09 s).

Memory: VmRSS of the gateways serving ~100 devices each, then, separately, of one gateway
serving 1,000 hollow devices after they registered, received their document and reported.
Target <= 40 MB at 1,000 (OpenYurt YurtHub 30-40 MB, KubeEdge edgecore 70 MB, K3s agent 268 MB).
`--memory-only` skips the rollout and measures only that gateway (the same way), for quick
iteration; `--big 100` gives the figure at 100 devices.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import Proc, fleetlet_bin, free_port, percentile, print_json, print_table

HERE = Path(__file__).resolve().parent
APP = """import asyncio
async def main(ctx):
    while True:
        ctx.metric("t", 21)
        await asyncio.sleep(5)
"""
GATEWAY_ENV = {"MALLOC_ARENA_MAX": "2"}
GATEWAY_CMD = [sys.executable, "-m", "fleetlet.gateway.main"]  # a memory probe may wrap it


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def rss_anon_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hollow_running(p: Proc) -> int:
    """The last "hollow: N registered, M running" count a simulator process printed."""
    for line in reversed(p.tail(5).splitlines()):
        if line.startswith("hollow:") and "running" in line:
            return int(line.split(",")[1].split()[0])
    return 0


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[Proc] = []
        self.gateways: dict[str, tuple[Proc, int]] = {}
        self.token = ""

    def start_server(self) -> None:
        server = Proc(
            [
                fleetlet_bin(),
                "server",
                "--data-dir",
                str(self.tmp / "server"),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "warning",
            ],
            "server",
            env={"FLEETLET_CONFIG": str(self.tmp / "config.yaml")},
        )
        self.procs.append(server)
        server.wait_http(f"{self.url}/healthz")
        self.token = (self.tmp / "server" / "admin.token").read_text().strip()

    def api(self) -> Any:
        from fleetlet.server.client import ApiClient

        return ApiClient(self.url, self.token, timeout=60)

    async def start_gateway(self, api: Any, name: str) -> tuple[Proc, int]:
        tok = await api.create(
            {
                "apiVersion": "fleetlet.io/v1",
                "kind": "Token",
                "metadata": {},
                "spec": {"role": "gateway", "gateway": name},
            }
        )
        port = free_udp_port()
        proc = Proc(
            [
                *GATEWAY_CMD,
                "--name",
                name,
                "--server",
                self.url,
                "--token",
                tok["status"]["token"],
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(self.tmp / name),
                "--log-level",
                "warning",
                "--offline-after",
                "120",
            ],
            name,
            env=GATEWAY_ENV,
        )
        self.procs.append(proc)
        self.gateways[name] = (proc, port)
        return proc, port

    async def create_devices(self, api: Any, names: list[tuple[str, str]], label: str) -> dict[str, str]:
        """name -> credential, created concurrently through the API (not timed)."""
        sem = asyncio.Semaphore(32)
        creds: dict[str, str] = {}

        async def one(name: str, gateway: str) -> None:
            cred = "fdc_" + secrets.token_urlsafe(16)
            creds[name] = cred
            async with sem:
                await api.create(
                    {
                        "apiVersion": "fleetlet.io/v1",
                        "kind": "Device",
                        "metadata": {"name": name, "labels": {"bench": label}},
                        "spec": {
                            "gateway": gateway,
                            "board": "esp32-s3",
                            "runtimes": ["micropython"],
                            "credentialHash": hashlib.sha256(cred.encode()).hexdigest(),
                        },
                    }
                )

        await asyncio.gather(*(one(n, g) for n, g in names))
        return creds

    def start_sims(self, specs: list[dict[str, Any]], sims: int, tag: str) -> list[Proc]:
        out = []
        for i in range(sims):
            part = specs[i::sims]
            if not part:
                continue
            f = self.tmp / f"hollow-{tag}-{i}.json"
            f.write_text(json.dumps(part))
            p = Proc(
                [sys.executable, str(HERE / "hollow.py"), "--devices", str(f), "--report-interval", "30"],
                f"hollow-{tag}-{i}",
            )
            self.procs.append(p)
            out.append(p)
        return out

    def start_micropython(self, specs: list[dict[str, Any]]) -> None:
        from fleetlet.server.up.runner import build_firmware, micropython_bin

        fw = build_firmware(self.tmp / "firmware")
        mpy = micropython_bin()
        for s in specs:
            d = self.tmp / "mpy" / s["name"]
            d.mkdir(parents=True)
            cfg = {
                "device": s["name"],
                "host": "127.0.0.1",
                "port": s["port"],
                "token": s["token"],
                "reportInterval": 30,
                "data": str(d / "data"),
            }
            (d / "device.json").write_text(json.dumps(cfg))
            p = Proc(
                [mpy, "-X", "heapsize=128k", str(fw / "main.py"), str(d / "device.json")],
                s["name"],
                env={"MICROPYPATH": f".frozen:{fw}"},
            )
            self.procs.append(p)

    async def wait_online(self, api: Any, label: str, n: int, limit: float) -> None:
        deadline = time.monotonic() + limit
        last = -1
        while True:
            items = (await api.list_all("devices", label_selector=f"bench={label}"))["items"]
            online = sum(1 for d in items if (d.get("status") or {}).get("phase") == "Online")
            if online != last:
                say(f"  {online}/{n} devices Online")
                last = online
            if online >= n:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: only {online}/{n} devices came Online")
            await asyncio.sleep(1.0)

    @staticmethod
    def deployment(name: str, label: str) -> dict[str, Any]:
        return {
            "apiVersion": "fleetlet.io/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "placement": {"mode": "EveryDevice"},
                "strategy": {"waves": ["100%"], "maxUnavailable": "100%"},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "runtime": "micropython",
                        "nodeSelector": {"bench": label},
                        "app": {"entry": "main", "modules": [{"name": "main.py", "source": APP}]},
                    },
                },
            },
        }

    async def apply_only(self, api: Any, name: str, label: str) -> None:
        await api.create(self.deployment(name, label))

    async def apply_and_measure(
        self, api: Any, name: str, label: str, n: int, limit: float
    ) -> dict[str, float]:
        """Apply one EveryDevice Deployment; device -> seconds from apply to its workload Running."""
        first = await api.list("workloads", "default", limit=1)
        rv = first["metadata"].get("resourceVersion")
        running: dict[str, float] = {}
        self.created: dict[str, float] = {}
        done = asyncio.Event()
        t0 = 0.0

        async def watch() -> None:
            nonlocal rv
            while True:
                try:
                    async for ev in api.watch(
                        "workloads",
                        "default",
                        resource_version=rv,
                        label_selector=f"fleetlet.io/deployment={name}",
                    ):
                        obj = ev.object
                        rv = obj["metadata"].get("resourceVersion", rv)
                        dev = (obj.get("spec") or {}).get("deviceName")
                        if dev and dev not in self.created:
                            self.created[dev] = time.monotonic() - t0
                        if dev and dev not in running and (obj.get("status") or {}).get("phase") == "Running":
                            running[dev] = time.monotonic() - t0
                            if len(running) >= n:
                                done.set()
                                return
                except Exception as e:  # stream ended: resume from the last revision
                    say(f"  watch restarted: {e!r}")
                    await asyncio.sleep(0.2)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.5)  # the watch is established before the apply
        t0 = time.monotonic()
        await api.create(self.deployment(name, label))
        last = -1
        deadline = time.monotonic() + limit
        while not done.is_set() and time.monotonic() < deadline:
            if len(running) != last:
                last = len(running)
                say(f"  {last}/{n} Running after {time.monotonic() - t0:.1f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 1.0)
        say(f"  {len(running)}/{n} Running after {time.monotonic() - t0:.1f} s")
        c = list(self.created.values())
        after = [running[d] - self.created[d] for d in running if d in self.created]
        say(
            f"  apply->workload created p50 {percentile(c, 50):.2f} s max {max(c, default=0):.2f} s; "
            f"created->Running p50 {percentile(after, 50):.2f} s max {max(after, default=0):.2f} s"
        )
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        return running

    async def measure_big(self, api: Any) -> tuple[float, float, int]:
        """One gateway ("gw-big") with --big hollow devices: (VmRSS MB, RssAnon MB, devices Running)."""
        big, big_port = await self.start_gateway(api, "gw-big")
        bnames = [(f"big-{i:04d}", "gw-big") for i in range(self.a.big)]
        bcreds = await self.create_devices(api, bnames, "big")
        bspecs = [{"name": n, "token": bcreds[n], "port": big_port} for n, _ in bnames]
        self.start_sims(bspecs, self.a.sims, "big")
        await self.wait_online(api, "big", self.a.big, 300)
        # The devices' side is what loads this gateway: wait until every hollow device got its
        # document and had its Running report accepted (the API catches up on its own).
        await self.apply_only(api, "bench-big", "big")
        sims = [p for p in self.procs if p.name.startswith("hollow-big")]
        deadline = time.monotonic() + 300
        while sum(hollow_running(p) for p in sims) < self.a.big and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(1.0)
        big_running = sum(hollow_running(p) for p in sims)
        say(f"  {big_running}/{self.a.big} hollow devices got their document and reported Running")
        await asyncio.sleep(10)  # a periodic report round under way
        rss_1000 = big.rss_mb()
        anon_1000 = rss_anon_mb(big.proc.pid)
        say(f"gw-big RSS with {self.a.big} devices: {rss_1000:.1f} MB (anonymous {anon_1000:.1f} MB)")
        return rss_1000, anon_1000, big_running

    async def run(self) -> dict[str, Any]:
        a = self.a
        say(f"bench/rollout: data in {self.tmp}")
        self.start_server()
        async with self.api() as api:
            if a.memory_only:
                rss, anon, running = await self.measure_big(api)
                return {
                    "big_gateway_devices": a.big,
                    "big_gateway_devices_running": running,
                    "gateway_rss_mb_big": round(rss, 1),
                    "gateway_rss_anon_mb_big": round(anon, 1),
                }
            # -- phase 1: the fleet ----------------------------------------------------------
            say(f"starting {a.gateways} gateways")
            gws = [f"gw-{i}" for i in range(a.gateways)]
            for g in gws:
                await self.start_gateway(api, g)
            names = [(f"dev-{i:04d}", gws[i % a.gateways]) for i in range(a.devices)]
            say(f"creating {a.devices} devices through the API (not timed)")
            creds = await self.create_devices(api, names, "fleet")
            specs = [{"name": n, "token": creds[n], "port": self.gateways[g][1]} for n, g in names]
            mpy_specs, hollow_specs = specs[: a.micropython], specs[a.micropython :]
            say(
                f"starting {len(mpy_specs)} MicroPython devices and {len(hollow_specs)} hollow devices "
                f"in {a.sims} simulator processes"
            )
            self.start_micropython(mpy_specs)
            self.start_sims(hollow_specs, a.sims, "fleet")
            await self.wait_online(api, "fleet", a.devices, 300)
            say("applying an EveryDevice Deployment")
            lat = await self.apply_and_measure(api, "bench-app", "fleet", a.devices, 300)
            mpy_lat = [lat[s["name"]] for s in mpy_specs if s["name"] in lat]
            await asyncio.sleep(3)
            rss_100 = {g: p.rss_mb() for g, (p, _) in self.gateways.items()}
            rss_list = ", ".join(f"{g} {v:.1f} MB" for g, v in rss_100.items())
            say(f"gateway RSS at ~{a.devices // a.gateways} devices: {rss_list}")
            created = list(self.created.values())
            to_running = [lat[d] - self.created[d] for d in lat if d in self.created]
            # -- phase 2: one gateway, 1,000 hollow devices ------------------------------------
            say(f"stopping the fleet; one gateway with {a.big} hollow devices next")
            for p in self.procs[1:]:
                p.stop()
            self.procs = self.procs[:1]
            rss_1000, anon_1000, big_running = await self.measure_big(api)
        values = list(lat.values())
        return {
            "devices": a.devices,
            "gateways": a.gateways,
            "micropython_devices": len(mpy_specs),
            "running": len(values),
            "p50_s": round(percentile(values, 50), 3),
            "p99_s": round(percentile(values, 99), 3),
            "max_s": round(max(values), 3) if values else None,
            "micropython_max_s": round(max(mpy_lat), 3) if mpy_lat else None,
            "big_gateway_devices_running": big_running,
            "gateway_rss_mb_100": round(max(rss_100.values()), 1),
            "gateway_rss_mb_100_median": round(percentile(list(rss_100.values()), 50), 1),
            "gateway_rss_mb_1000": round(rss_1000, 1),
            "gateway_rss_anon_mb_1000": round(anon_1000, 1),
            "apply_to_created_p50_s": round(percentile(created, 50), 3),
            "apply_to_created_p99_s": round(percentile(created, 99), 3),
            "created_to_running_p50_s": round(percentile(to_running, 50), 3),
            "created_to_running_p99_s": round(percentile(to_running, 99), 3),
        }

    def close(self) -> None:
        for p in reversed(self.procs + [g for g, _ in self.gateways.values()]):
            try:
                p.stop()
            except Exception as e:  # keep stopping the rest
                print(f"bench: stopping {p.name} failed: {e}", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description="apply -> Running on a fleet of devices")
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--gateways", type=int, default=10)
    p.add_argument("--micropython", type=int, default=5)
    p.add_argument("--sims", type=int, default=4, help="hollow-device simulator processes")
    p.add_argument("--big", type=int, default=1000, help="devices on the one gateway of the RSS measurement")
    p.add_argument(
        "--memory-only", action="store_true", help="only the one-gateway RSS measurement (no rollout)"
    )
    args = p.parse_args()
    bench = Bench(args)
    try:
        r = asyncio.run(bench.run())
    finally:
        bench.close()
    if args.memory_only:
        print_table(
            f"gateway memory, {r['big_gateway_devices']} hollow devices",
            [
                (
                    f"gateway RSS, {r['big_gateway_devices']:,} devices",
                    f"{r['gateway_rss_mb_big']:.1f} MB",
                    "target <= 40 MB at 1,000; YurtHub 30-40 MB, edgecore 70 MB, K3s agent 268 MB",
                ),
                ("  anonymous", f"{r['gateway_rss_anon_mb_big']:.1f} MB", ""),
            ],
        )
        print_json(r)
        return
    print_table(
        f"rollout: apply -> Running, {r['devices']} devices ({r['micropython_devices']} MicroPython), "
        f"{r['gateways']} gateways",
        [
            ("p50 apply->Running", f"{r['p50_s']:.2f} s", ""),
            (
                "p99 apply->Running",
                f"{r['p99_s']:.2f} s",
                "target <= 5 s (k8s pod-startup SLO); KubeEdge 4.09 s",
            ),
            (
                "  p99 apply->workload created",
                f"{r['apply_to_created_p99_s']:.2f} s",
                "deployment controller",
            ),
            ("  p99 created->Running", f"{r['created_to_running_p99_s']:.2f} s", "gateway, device, status"),
            ("max apply->Running", f"{r['max_s']:.2f} s", ""),
            ("gateway RSS, ~100 devices", f"{r['gateway_rss_mb_100']:.1f} MB", "max of the gateways"),
            (
                "gateway RSS, 1,000 devices",
                f"{r['gateway_rss_mb_1000']:.1f} MB",
                "target <= 40 MB; YurtHub 30-40 MB, edgecore 70 MB, K3s agent 268 MB",
            ),
        ],
    )
    print_json(r)


if __name__ == "__main__":
    main()
