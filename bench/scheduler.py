"""bench/scheduler: workloads bound per second, end to end through the API, on a hollow fleet.

    python bench/scheduler.py            # 1,000 gateways x 10 devices, 10,000 workloads
    python bench/scheduler.py --quick    # 100 x 10 devices, 1,000 workloads (smoke check)

A `fleetlet server` process (tmp data dir, SQLite) holds the fleet: hollow gateways and
devices, objects in the store with no processes behind them. The scheduler runs as its own
client in this process, with leader election, exactly as `fleetlet scheduler` would. Creating
the fleet is not timed. Then a second process (the offered load: operators and controllers)
creates the workloads as fast as the API takes them while the scheduler binds, and a watch on
workloads in that process (what any client sees) stamps each bind.

    bound_per_s  = workloads / (last bind seen - first create sent)
    bind_p99_ms  = p99 of (bind seen on the watch - that workload's create sent)

Anchors: the target is 1,000 bound/s on this 2-core machine; kube-scheduler's CI floor
(scheduler_perf, SchedulingBasic at 5,000 nodes) is 680 pods/s. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import random
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Proc, fleetlet_bin, free_port, percentile, print_json, print_table
from fleetlet.server import eventloop
from fleetlet.server.client import ApiClient, ApiError
from fleetlet.server.scheduler.scheduler import Scheduler
from fleetlet.server.scheduler.testing import make_device, make_gateway, make_workload

ZONES = [f"z{i}" for i in range(10)]
CAMERA_TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "camera", "effect": "NoSchedule"}
Obj = dict[str, Any]


# -- the fleet --------------------------------------------------------------------------------------
def fleet_objects(gateways: int, per_gateway: int, rng: random.Random) -> tuple[list[Obj], list[Obj]]:
    """A mix: mostly Raspberry Pi class SBCs (arm64, some armhf and amd64), a quarter MicroPython
    boards; 10 zones; some tainted, offline or cordoned devices; a few soft-tainted gateways."""
    gws: list[Obj] = []
    devs: list[Obj] = []
    for g in range(gateways):
        soft = [{"key": "metered", "value": "lte", "effect": "PreferNoSchedule"}] if g % 50 == 0 else []
        gws.append(
            make_gateway(
                f"gw-{g:04}", labels={"zone": ZONES[g % len(ZONES)], "site": f"s{g % 7}"}, taints=soft
            )
        )
        for d in range(per_gateway):
            name = f"gw-{g:04}-d{d:02}"
            roll = rng.random()
            taints = (
                [{"key": "dedicated", "value": "camera", "effect": "NoSchedule"}]
                if rng.random() < 0.05
                else []
            )
            phase = "Offline" if rng.random() < 0.02 else "Online"
            cordoned = rng.random() < 0.01
            labels = {"camera": "yes"} if taints else {}
            if roll < 0.25:
                board = rng.choice(["esp32-wroom", "esp32-s3", "rp2040-pico-w"])
                devs.append(
                    make_device(
                        name, f"gw-{g:04}", board=board, arch=None, runtimes=None, memory=None, cpu=None,
                        flash=None, labels=labels, taints=taints, phase=phase, unschedulable=cordoned,
                    )
                )  # fmt: skip
            else:
                arch = "arm64" if roll < 0.80 else ("armhf" if roll < 0.90 else "amd64")
                devs.append(
                    make_device(
                        name, f"gw-{g:04}", board="raspberry-pi-4" if arch == "arm64" else None, arch=arch,
                        runtimes=["docker"], memory=rng.choice(["1Gi", "2Gi", "4Gi"]), cpu="4", flash="16Gi",
                        labels=labels, taints=taints, phase=phase, unschedulable=cordoned,
                    )
                )  # fmt: skip
    return gws, devs


def workload_objects(n: int, rng: random.Random) -> list[Obj]:
    """A mix of constraints: docker deployments with spread, arch-pinned images, zone selectors,
    camera tolerations, and MicroPython apps."""
    out: list[Obj] = []
    for i in range(n):
        name = f"wl-{i:05}"
        roll = rng.random()
        dep = {"fleetlet.io/deployment": f"dep-{i % 200}"}
        if roll < 0.45:
            out.append(make_workload(name, memory="64Mi", cpu="100m", labels=dep,
                                     container_requests=[{"memory": "32Mi"}]))  # fmt: skip
        elif roll < 0.60:
            out.append(make_workload(name, memory="128Mi", cpu="250m", labels=dep, platforms=["linux/arm64"]))
        elif roll < 0.70:
            out.append(
                make_workload(
                    name, memory="32Mi", cpu="50m", labels=dep, node_selector={"zone": rng.choice(ZONES)}
                )
            )
        elif roll < 0.75:
            out.append(
                make_workload(
                    name, memory="256Mi", cpu="500m", labels={"app": "cam"},
                    tolerations=[CAMERA_TOLERATION],
                    node_selector={"camera": "yes"} if rng.random() < 0.5 else None, priority=10,
                )
            )  # fmt: skip
        else:
            out.append(make_workload(name, runtime="micropython", memory="8Ki", flash="16Ki", labels=dep))
    return out


async def create_all(
    client: ApiClient, objs: list[Obj], concurrency: int, stamp: dict[str, float] | None = None
) -> None:
    queue: asyncio.Queue[Obj] = asyncio.Queue()
    for o in objs:
        queue.put_nowait(o)

    async def worker() -> None:
        while not queue.empty():
            obj = queue.get_nowait()
            if stamp is not None:
                stamp[obj["metadata"]["name"]] = time.perf_counter()
            status = obj.pop("status", None)
            for attempt in range(5):
                try:
                    await client.create(obj)
                    break
                except ApiError as e:
                    if e.code == 409:
                        break
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2)
            if status and obj["kind"] in ("Device", "Gateway"):
                await client.patch_status(
                    obj["kind"].lower() + "s", obj["metadata"]["name"], {"status": status}
                )

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def report_progress(scheduler: Scheduler | None, every: float) -> None:
    if every <= 0:
        return
    t0 = time.perf_counter()
    while True:
        await asyncio.sleep(every)
        if scheduler is not None:
            print(
                f"  t={time.perf_counter() - t0:5.1f}s bound={scheduler.stats.bound:6} "
                f"queue={scheduler.queue.counts()} binds={scheduler.binds_in_flight}",
                flush=True,
            )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (and its reaped children) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(f) for f in fields[11:15]) / ticks


# -- measuring --------------------------------------------------------------------------------------
async def watch_binds(
    client: ApiClient, namespace: str, seen: dict[str, float], want: int, done: asyncio.Event, rv: str
) -> None:
    """Stamp each workload the first time the watch shows it bound."""
    while len(seen) < want:
        try:
            async for ev in client.watch("workloads", namespace, resource_version=rv):
                obj = ev.object
                rv = str(obj["metadata"].get("resourceVersion") or rv)
                if (obj.get("spec") or {}).get("deviceName"):
                    seen.setdefault(obj["metadata"]["name"], time.perf_counter())
                    if len(seen) >= want:
                        break
        except ApiError as e:
            print(f"bench: watch interrupted ({e}); resuming", flush=True)
            await asyncio.sleep(0.1)
    done.set()


async def start_scheduler(
    url: str, token: str, args: argparse.Namespace, identity: str
) -> tuple[Scheduler, asyncio.Task[None]]:
    client = ApiClient(url, token)
    scheduler = Scheduler(
        client, identity=identity, lease_duration=15.0, max_binds_in_flight=args.binds_in_flight
    )
    task = asyncio.create_task(scheduler.run())
    t_wait = time.perf_counter()
    try:
        async with asyncio.timeout(180):
            await scheduler.wait_synced()
            while not scheduler.is_leader:  # noqa: ASYNC110 - a property of the elector, polled
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise SystemExit("bench: the scheduler did not become leader within 180 s") from None
    print(f"scheduler {identity}: synced and leading after {time.perf_counter() - t_wait:.1f} s", flush=True)
    return scheduler, task


async def stop_scheduler(scheduler: Scheduler, task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await scheduler.client.close()


def spread_quality(items: list[Obj]) -> float:
    """Mean over deployments of (distinct gateways used / replicas): 1.0 = no two on one gateway."""
    by_dep: dict[str, list[str]] = {}
    for w in items:
        dep = (w["metadata"].get("labels") or {}).get("fleetlet.io/deployment")
        if dep and w["spec"].get("gatewayName"):
            by_dep.setdefault(dep, []).append(w["spec"]["gatewayName"])
    ratios = [len(set(g)) / len(g) for g in by_dep.values() if g]
    return sum(ratios) / len(ratios) if ratios else float("nan")


async def _offered_load(url: str, token: str, workloads: list[Obj], concurrency: int, limit_s: float) -> Obj:
    """Create the workloads as fast as the API takes them and stamp each bind seen on a watch."""
    async with ApiClient(url, token) as creator, ApiClient(url, token) as watcher:
        rv = str((await creator.list("workloads", "default", limit=1))["metadata"]["resourceVersion"])
        created: dict[str, float] = {}
        bound: dict[str, float] = {}
        done = asyncio.Event()
        watch_task = asyncio.create_task(watch_binds(watcher, "default", bound, len(workloads), done, rv))
        cpu0 = time.process_time()
        t_start = time.perf_counter()
        await create_all(creator, workloads, concurrency, created)
        t_created = time.perf_counter()
        print(
            f"created {len(workloads)} workloads in {t_created - t_start:.1f} s "
            f"({len(workloads) / (t_created - t_start):.0f}/s); {len(bound)} already bound",
            flush=True,
        )
        try:
            async with asyncio.timeout(limit_s):
                await done.wait()
        except TimeoutError:
            print(f"bench: only {len(bound)}/{len(workloads)} bound after {limit_s} s", flush=True)
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch_task
        return {
            "created": created,
            "bound": bound,
            "t_start": t_start,
            "t_created": t_created,
            "cpu_s": time.process_time() - cpu0,
        }


def offered_load_process(
    url: str, token: str, workloads: list[Obj], concurrency: int, timeout: float, conn: Connection
) -> None:
    """The offered load in a process of its own: operators' and controllers' creates never share
    the scheduler's process (or its GIL) in a real deployment. perf_counter is CLOCK_MONOTONIC,
    one clock for every process on the machine, so its stamps compare with ours."""
    conn.send(eventloop.run(_offered_load(url, token, workloads, concurrency, timeout)))
    conn.close()


async def phase_stream(
    url: str, token: str, args: argparse.Namespace, server: Proc, workloads: list[Obj]
) -> dict[str, Any]:
    """The headline: the scheduler runs, workloads are created as fast as the API takes them."""
    scheduler: Scheduler | None = None
    task: asyncio.Task[None] | None = None
    if not args.embedded:
        scheduler, task = await start_scheduler(url, token, args, "bench-scheduler")
    elif args.embedded_warmup:
        await asyncio.sleep(args.embedded_warmup)  # let the server's own scheduler list the fleet
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    loadgen = ctx.Process(
        target=offered_load_process,
        args=(url, token, workloads, args.create_concurrency, args.timeout, child),
        name="bench-offered-load",
    )
    cpu_server0, cpu_self0 = cpu_seconds(server.proc.pid), time.process_time()
    loadgen.start()
    child.close()
    progress = asyncio.create_task(report_progress(scheduler, args.progress))
    try:
        got: Obj = await asyncio.to_thread(parent.recv)
    except EOFError:
        raise SystemExit("bench: the offered-load process failed (see above)") from None
    finally:
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await progress
        await asyncio.to_thread(loadgen.join, 30)
    cpu_server = cpu_seconds(server.proc.pid) - cpu_server0
    cpu_self = time.process_time() - cpu_self0
    created: dict[str, float] = got["created"]
    bound: dict[str, float] = got["bound"]
    t_start, t_created = got["t_start"], got["t_created"]
    async with ApiClient(url, token) as reader:
        listing = await reader.list_all("workloads", "default")
    stats: dict[str, Any] = {}
    if scheduler is not None and task is not None:
        await stop_scheduler(scheduler, task)
        st = scheduler.stats
        stats = {
            "scheduling_cycles": st.cycles,
            "unschedulable_attempts": st.unschedulable,
            "bind_conflicts": st.bind_conflicts,
            "bind_errors": st.bind_errors,
            "informer_relists": scheduler.workloads.relists,
            "cpu_s_scheduler": round(cpu_self, 2),
        }
    t_last = max(bound.values()) if bound else time.perf_counter()
    elapsed = t_last - t_start
    latencies = [(bound[n] - created[n]) * 1000 for n in bound if n in created]
    return {
        "bound": len(bound),
        "elapsed_s": round(elapsed, 2),
        "bound_per_s": round(len(bound) / elapsed, 1) if elapsed > 0 else 0.0,
        "create_per_s": round(len(workloads) / (t_created - t_start), 1),
        "bind_p50_ms": round(percentile(latencies, 50), 1),
        "bind_p99_ms": round(percentile(latencies, 99), 1),
        "bind_max_ms": round(max(latencies), 1) if latencies else None,
        "spread_quality": round(spread_quality(listing.get("items") or []), 3),
        "cpu_s_server": round(cpu_server, 2),
        "cpu_s_offered_load": round(got["cpu_s"], 2),
        **stats,
    }


async def phase_backlog(
    url: str, token: str, args: argparse.Namespace, workloads: list[Obj]
) -> dict[str, Any]:
    """Scheduler throughput alone: the workloads are all pending before a scheduler starts."""
    async with ApiClient(url, token) as creator, ApiClient(url, token) as watcher:
        ns = {"apiVersion": "fleetlet.io/v1", "kind": "Namespace", "metadata": {"name": "backlog"}}
        with contextlib.suppress(ApiError):
            await creator.create(ns)
        for w in workloads:
            w["metadata"]["namespace"] = "backlog"
        t0 = time.perf_counter()
        await create_all(creator, workloads, args.create_concurrency)
        print(
            f"backlog: {len(workloads)} pending workloads created in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        scheduler, task = await start_scheduler(url, token, args, "bench-scheduler-2")
        rv = str((await creator.list("workloads", "backlog", limit=1))["metadata"]["resourceVersion"])
        bound: dict[str, float] = {}
        done = asyncio.Event()
        already = sum(1 for k, p in scheduler.cache.placements_by_key().items() if k.startswith("backlog/"))
        t_start = time.perf_counter()
        watch_task = asyncio.create_task(
            watch_binds(watcher, "backlog", bound, len(workloads) - already, done, rv)
        )
        try:
            async with asyncio.timeout(args.timeout):
                await done.wait()
        except TimeoutError:
            print(f"bench: backlog: only {len(bound)} bound after {args.timeout} s", flush=True)
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch_task
        await stop_scheduler(scheduler, task)
    elapsed = (max(bound.values()) if bound else time.perf_counter()) - t_start
    n = len(bound) + already
    return {
        "backlog_bound_per_s": round(n / elapsed, 1) if elapsed > 0 else 0.0,
        "backlog_elapsed_s": round(elapsed, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    data = Path(tempfile.mkdtemp(prefix="bench-scheduler-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The hollow fleet needs no controllers. The scheduler runs as its own process-level client
    # here (like `fleetlet scheduler`), unless --embedded measures the one inside `fleetlet server`.
    loops = ["--no-controllers"] + ([] if args.embedded else ["--no-scheduler"])
    server = Proc(
        [fleetlet_bin(), "server", "--data-dir", str(data / "fleetlet"), "--listen", f"127.0.0.1:{port}",
         "--log-level", "warning", *loops],
        "server",
        env={"FLEETLET_CONFIG": str(data / "config.yaml")},
    )  # fmt: skip
    load_before = os.getloadavg()[0]
    try:
        server.wait_http(url + "/healthz")
        token_file = data / "fleetlet" / "admin.token"
        for _ in range(100):
            if token_file.exists():
                break
            await asyncio.sleep(0.1)
        token = token_file.read_text().strip()
        gws, devs = fleet_objects(args.gateways, args.devices_per_gateway, rng)
        workloads = workload_objects(args.workloads, rng)
        async with ApiClient(url, token) as setup:
            t0 = time.perf_counter()
            await create_all(setup, gws, 32)
            await create_all(setup, devs, 32)
            took = time.perf_counter() - t0
            print(
                f"fleet: {len(gws)} gateways, {len(devs)} devices created in {took:.1f} s (not timed)",
                flush=True,
            )
        stream = await phase_stream(url, token, args, server, workloads)
        backlog: dict[str, Any] = {}
        if args.backlog and not args.embedded:
            backlog = await phase_backlog(
                url, token, args, workload_objects(args.workloads, random.Random(args.seed + 1))
            )
        result = {
            "bench": "scheduler",
            "mode": "embedded" if args.embedded else "standalone",
            "gateways": len(gws),
            "devices": len(devs),
            "workloads": len(workloads),
            **stream,
            **backlog,
            "server_rss_mb": round(server.rss_mb(), 1),
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "target_bound_per_s": 1000,
            "kube_scheduler_ci_floor_pods_per_s": 680,
        }
        rows = [
            ("bound per second (end to end)", f"{result['bound_per_s']:.0f}/s",
             "target 1,000/s; kube-scheduler CI floor 680 pods/s at 5,000 nodes"),
            ("creates per second (API)", f"{result['create_per_s']:.0f}/s", "the offered load, same API"),
            ("create -> bind p50", f"{result['bind_p50_ms']:.0f} ms", "create sent -> bind seen on a watch"),
            ("create -> bind p99", f"{result['bind_p99_ms']:.0f} ms", ""),
            ("spread quality", f"{result['spread_quality']:.3f}", "replicas on distinct gateways (1 = all)"),
        ]  # fmt: skip
        if backlog:
            rows.append(("bound per second (10k backlog)", f"{backlog['backlog_bound_per_s']:.0f}/s",
                         "all pending first, then the scheduler starts"))  # fmt: skip
        load = f"{load_before:.1f}/{result['loadavg_1m_after']:.1f}"
        rows.append(
            ("load average (1 min) before/after", load, f"on {os.cpu_count()} cpus; other work skews figures")
        )
        print_table(
            f"scheduler: {len(devs)} hollow devices on {len(gws)} gateways, {len(workloads)} workloads", rows
        )
        return result
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 gateways, 1,000 workloads")
    parser.add_argument("--gateways", type=int, default=None)
    parser.add_argument("--devices-per-gateway", type=int, default=10)
    parser.add_argument("--workloads", type=int, default=None)
    parser.add_argument("--create-concurrency", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--binds-in-flight", type=int, default=256, help="the scheduler's default")
    parser.add_argument(
        "--embedded", action="store_true", help="measure the scheduler inside `fleetlet server`"
    )
    parser.add_argument("--embedded-warmup", type=float, default=20.0)
    parser.add_argument("--no-backlog", dest="backlog", action="store_false", help="skip the backlog phase")
    parser.add_argument(
        "--progress", type=float, default=1.0, help="seconds between progress lines (0: none)"
    )
    args = parser.parse_args()
    args.gateways = args.gateways or (100 if args.quick else 1000)
    args.workloads = args.workloads or (1000 if args.quick else 10_000)
    logging.basicConfig(level=os.environ.get("BENCH_LOG", "WARNING"))
    result = eventloop.run(run(args))  # the scheduler's loop, as `fleetlet scheduler` runs it
    print_json(result)


if __name__ == "__main__":
    main()
