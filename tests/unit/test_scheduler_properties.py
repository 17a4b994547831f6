"""Property tests on random fleets and workloads, through the framework and the snapshot (no HTTP).

The checks use a reference implementation written here from the rules in the issue, not the
plugins themselves:

- no device is ever over-committed (memory, cpu, flash) by what is placed on it;
- every placement satisfies every constraint (runtime, arch, resources, nodeSelector,
  taints of device and gateway, readiness);
- a workload is declared unschedulable only if no device could take it at that moment;
- the cache's running totals equal a recount from scratch after any sequence of changes.
"""

from __future__ import annotations

import random
from typing import Any

from fleetlet.hardware.quantity import parse_bytes, parse_cpu_millis
from fleetlet.server.scheduler.objects import parse_workload
from fleetlet.server.scheduler.plugins import default_framework
from fleetlet.server.scheduler.snapshot import Cache
from fleetlet.server.scheduler.testing import make_device, make_gateway, make_workload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ARCH_SPELLINGS = {
    "arm64": ["arm64", "aarch64"],
    "arm": ["armhf", "armv7l", "arm"],
    "amd64": ["amd64", "x86_64"],
}
ZONES = ["north", "south"]
ROLES = ["cam", "sensor"]
TAINT_KEYS = ["dedicated", "maintenance"]
EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]

Obj = dict[str, Any]

labels_st = st.dictionaries(
    st.sampled_from(["zone", "role"]), st.sampled_from(ZONES + ROLES), max_size=2
).map(lambda d: {k: v for k, v in d.items() if (k == "zone") == (v in ZONES)})
taint_st = st.fixed_dictionaries(
    {
        "key": st.sampled_from(TAINT_KEYS),
        "value": st.sampled_from(["", "a", "b"]),
        "effect": st.sampled_from(EFFECTS),
    }
)
toleration_st = st.one_of(
    st.fixed_dictionaries(
        {"key": st.sampled_from(TAINT_KEYS), "operator": st.just("Exists")},
        optional={"effect": st.sampled_from(EFFECTS)},
    ),
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(TAINT_KEYS),
            "operator": st.just("Equal"),
            "value": st.sampled_from(["a", "b"]),
        },
        optional={"effect": st.sampled_from(EFFECTS)},
    ),
    st.just({"operator": "Exists"}),
)


@st.composite
def gateways_st(draw: st.DrawFn) -> list[Obj]:
    n = draw(st.integers(1, 4))
    return [
        make_gateway(
            f"gw{i}",
            labels=draw(labels_st),
            taints=draw(st.lists(taint_st, max_size=1)),
            unschedulable=draw(st.booleans().map(lambda b: b and draw(st.integers(0, 4)) == 0)),
            ready=draw(st.integers(0, 5)) > 0,
        )
        for i in range(n)
    ]


@st.composite
def devices_st(draw: st.DrawFn, gateways: int) -> list[Obj]:
    n = draw(st.integers(0, 25))
    out = []
    for i in range(n):
        arch = draw(st.sampled_from(sorted(ARCH_SPELLINGS)))
        out.append(
            make_device(
                f"d{i:02}",
                f"gw{draw(st.integers(0, gateways))}",  # gw{gateways} does not exist
                arch=draw(st.sampled_from(ARCH_SPELLINGS[arch])),
                runtimes=draw(st.sampled_from([["docker"], ["micropython"], ["docker", "micropython"]])),
                memory=f"{draw(st.integers(0, 64))}Mi",
                cpu=f"{draw(st.integers(0, 4000))}m",
                flash=f"{draw(st.integers(0, 64))}Mi",
                labels=draw(labels_st),
                taints=draw(st.lists(taint_st, max_size=2)),
                unschedulable=draw(st.integers(0, 9)) == 0,
                phase=draw(st.sampled_from(["Online"] * 6 + ["Offline", "Unknown"])),
            )
        )
    return out


@st.composite
def workloads_st(draw: st.DrawFn) -> list[Obj]:
    n = draw(st.integers(1, 40))
    out = []
    for i in range(n):
        runtime = draw(st.sampled_from(["docker", "micropython"]))
        out.append(
            make_workload(
                f"w{i:02}",
                runtime=runtime,
                memory=draw(st.one_of(st.none(), st.integers(0, 32).map(lambda m: f"{m}Mi"))),
                cpu=draw(st.one_of(st.none(), st.integers(0, 2000).map(lambda c: f"{c}m"))),
                flash=draw(st.one_of(st.none(), st.integers(0, 32).map(lambda m: f"{m}Mi"))),
                container_requests=draw(
                    st.lists(st.fixed_dictionaries({"memory": st.sampled_from(["1Mi", "4Mi"])}), max_size=2)
                )
                if runtime == "docker"
                else (),
                node_selector=draw(labels_st),
                tolerations=draw(st.lists(toleration_st, max_size=2)),
                platforms=draw(
                    st.lists(
                        st.sampled_from(["linux/arm64", "linux/arm/v7", "linux/amd64"]),
                        max_size=2,
                        unique=True,
                    )
                ),
                priority=draw(st.integers(0, 3)),
                labels=draw(st.sampled_from([{}, {"fleetlet.io/deployment": "web"}, {"app": "x"}])),
            )
        )
    return out


# -- the reference rules ---------------------------------------------------------------------------------
def requests_of(wl: Obj) -> tuple[int, int, int]:
    spec = wl["spec"]
    reqs = [spec.get("resources", {}).get("requests", {})]
    reqs += [c.get("resources", {}).get("requests", {}) for c in spec.get("containers", [])]
    return (
        sum(parse_bytes(r.get("memory", 0)) for r in reqs),
        sum(parse_cpu_millis(r.get("cpu", 0)) for r in reqs),
        sum(parse_bytes(r.get("flash", 0)) for r in reqs),
    )


def capacity_of(dev: Obj) -> tuple[int, int, int]:
    cap = dev["spec"]["capacity"]
    return parse_bytes(cap["memory"]), parse_cpu_millis(cap["cpu"]), parse_bytes(cap["flash"])


def canonical_arch(arch: str) -> str:
    return next(k for k, spellings in ARCH_SPELLINGS.items() if arch in spellings)


def tolerates(tol: Obj, taint: Obj) -> bool:
    if tol.get("effect") and tol["effect"] != taint["effect"]:
        return False
    if tol.get("operator") == "Exists":
        return not tol.get("key") or tol["key"] == taint["key"]
    return tol.get("key") == taint["key"] and tol.get("value", "") == taint.get("value", "")


def violations(wl: Obj, dev: Obj, gateways: dict[str, Obj], used: tuple[int, int, int]) -> list[str]:
    """Every rule ``wl`` on ``dev`` breaks, given what ``dev`` already has."""
    spec = wl["spec"]
    out = []
    gw = gateways.get(dev["spec"]["gateway"])
    if dev["status"]["phase"] != "Online" or dev["spec"].get("unschedulable"):
        out.append("device not ready")
    if gw is None or gw["spec"].get("unschedulable") or gw["status"]["conditions"][0]["status"] != "True":
        out.append("gateway not ready")
    if spec["runtime"] not in dev["spec"]["runtimes"]:
        out.append("runtime")
    platforms = wl["metadata"].get("annotations", {}).get("fleetlet.io/platforms")
    if platforms:
        wanted = {canonical_arch(p.split("/")[1]) for p in platforms.split(",")}
        if canonical_arch(dev["spec"]["arch"]) not in wanted:
            out.append("arch")
    labels = dict(gw["metadata"]["labels"]) if gw else {}
    labels.update(dev["metadata"]["labels"])
    if any(labels.get(k) != v for k, v in spec.get("nodeSelector", {}).items()):
        out.append("nodeSelector")
    tolerations = spec.get("tolerations", [])
    for taint in dev["spec"].get("taints", []) + (gw["spec"].get("taints", []) if gw else []):
        if taint["effect"] != "PreferNoSchedule" and not any(tolerates(t, taint) for t in tolerations):
            out.append("taint")
    req, cap = requests_of(wl), capacity_of(dev)
    if any(u + r > c for u, r, c in zip(used, req, cap, strict=True)):
        out.append("resources")
    return out


def add(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_fleets_never_overcommit_and_respect_every_constraint(data: st.DataObject) -> None:
    gateways = data.draw(gateways_st())
    devices = data.draw(devices_st(len(gateways)))
    workloads = data.draw(workloads_st())
    seed = data.draw(st.integers(0, 2**32 - 1))
    cache = Cache()
    for gw in gateways:
        cache.upsert_gateway(gw)
    for dev in devices:
        cache.upsert_device(dev)
    gw_by_name = {g["metadata"]["name"]: g for g in gateways}
    dev_by_name = {d["metadata"]["name"]: d for d in devices}
    used: dict[str, tuple[int, int, int]] = {name: (0, 0, 0) for name in dev_by_name}
    placed: dict[str, str] = {}
    fw = default_framework(rng=random.Random(seed))
    # Small fleets: force sampling on too, so partial scans are exercised.
    fw.min_feasible = data.draw(st.sampled_from([1, 3, 100]))
    for wl in sorted(workloads, key=lambda w: -w["spec"]["priority"]):
        info = parse_workload(wl)
        result = fw.schedule(cache, info)
        if result.device is None:
            fits = [n for n, d in dev_by_name.items() if not violations(wl, d, gw_by_name, used[n])]
            assert not fits, f"{info.key} declared unschedulable ({result.summary}) but fits on {fits}"
            assert result.summary.startswith(f"0/{len(devices)} devices are available")
            continue
        broken = violations(wl, dev_by_name[result.device], gw_by_name, used[result.device])
        assert not broken, f"{info.key} placed on {result.device} breaking {broken}"
        cache.assume(info, result.device)
        used[result.device] = add(used[result.device], requests_of(wl))
        placed[info.key] = result.device
        # Half the binds are confirmed by a watch event (the totals must not double count).
        if data.draw(st.booleans()):
            bound = {**wl, "spec": {**wl["spec"], "deviceName": result.device}}
            cache.confirm(bound)
    for name, dev in dev_by_name.items():
        cap = capacity_of(dev)
        assert all(u <= c for u, c in zip(used[name], cap, strict=True)), f"{name} over-committed"
        node = cache.node(name)
        assert node is not None and (node.req_memory, node.req_cpu, node.req_flash) == used[name]
        assert node.workload_count == sum(1 for d in placed.values() if d == name)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_cache_totals_match_a_recount_after_any_changes(data: st.DataObject) -> None:
    cache = Cache()
    devices = [f"d{i}" for i in range(4)]
    gateways = ["g0", "g1"]
    placed: dict[str, tuple[str, Obj]] = {}
    rv = 0
    for _ in range(data.draw(st.integers(1, 60))):
        rv += 1
        op = data.draw(
            st.sampled_from(["device", "gateway", "remove-device", "bind", "assume", "forget", "delete"])
        )
        if op == "device":
            cache.upsert_device(
                make_device(
                    data.draw(st.sampled_from(devices)),
                    data.draw(st.sampled_from(gateways)),
                    labels=data.draw(labels_st),
                )
            )
        elif op == "gateway":
            cache.upsert_gateway(
                make_gateway(data.draw(st.sampled_from(gateways)), labels=data.draw(labels_st))
            )
        elif op == "remove-device":
            cache.remove_device(data.draw(st.sampled_from(devices)))
        elif op in ("bind", "assume"):
            name = f"w{data.draw(st.integers(0, 6))}"
            if f"default/{name}" in placed:
                continue
            dev = data.draw(st.sampled_from(devices))
            wl = make_workload(
                name,
                memory=f"{data.draw(st.integers(0, 5))}Mi",
                labels=data.draw(st.sampled_from([{}, {"fleetlet.io/deployment": "web"}])),
                resource_version=str(rv),
                device_name=dev if op == "bind" else None,
            )
            if op == "bind":
                cache.upsert_workload(wl)
            else:
                cache.assume(parse_workload(wl), dev)
            placed[f"default/{name}"] = (dev, wl)
        elif op == "forget" and placed:
            key = data.draw(st.sampled_from(sorted(placed)))
            if cache.is_assumed(key):
                cache.forget(key)
                del placed[key]
        elif op == "delete" and placed:
            key = data.draw(st.sampled_from(sorted(placed)))
            cache.remove_workload(key)
            del placed[key]
    # Recount from scratch.
    for node in cache.nodes():
        mine = [wl for dev, wl in placed.values() if dev == node.name]
        assert node.req_memory == sum(requests_of(wl)[0] for wl in mine)
        assert node.workload_count == len(mine)
    group = ("default", "fleetlet.io/deployment", "web")
    for gw in gateways:
        expected = sum(
            1
            for dev, wl in placed.values()
            if wl["metadata"]["labels"] and (node := cache.node(dev)) is not None and node.gateway_name == gw
        )
        assert cache.gateway_count(group, gw) == expected
    for zone in ZONES:
        expected = sum(
            1
            for dev, wl in placed.values()
            if wl["metadata"]["labels"] and (node := cache.node(dev)) is not None and node.zone == zone
        )
        assert cache.zone_count(group, zone) == expected
