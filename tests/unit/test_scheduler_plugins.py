"""Each filter and score plugin on its own, with the reason strings it gives."""

from __future__ import annotations

from typing import Any

import pytest
from fleetlet.server.scheduler.framework import CycleState, FilterPlugin, FilterResult, ScorePlugin
from fleetlet.server.scheduler.objects import parse_workload
from fleetlet.server.scheduler.plugins import (
    ArchitectureMatches,
    DeviceReady,
    GatewaySpread,
    LeastAllocated,
    NodeSelectorMatches,
    ResourcesFit,
    RuntimeSupported,
    TaintToleration,
    ZoneSpread,
)
from fleetlet.server.scheduler.snapshot import Cache, NodeInfo
from fleetlet.server.scheduler.testing import make_device, make_gateway, make_workload

NOSCHED = {"key": "dedicated", "value": "cam", "effect": "NoSchedule"}


def fleet(*devices: dict[str, Any], gateways: tuple[dict[str, Any], ...] = ()) -> Cache:
    cache = Cache()
    for gw in gateways or (make_gateway("gw1"),):
        cache.upsert_gateway(gw)
    for d in devices:
        cache.upsert_device(d)
    return cache


def run_filter(plugin: FilterPlugin, cache: Cache, device: str, wl: dict[str, Any]) -> FilterResult | None:
    """The plugin's verdict, or None when PreFilter says the workload does not concern it."""
    info = parse_workload(wl)
    state = CycleState()
    if not plugin.prefilter(state, info):
        return None
    node = cache.node(device)
    assert node is not None
    return plugin.filter(state, info, node)


def run_score(plugin: ScorePlugin, cache: Cache, wl: dict[str, Any]) -> dict[str, float]:
    info = parse_workload(wl)
    state = CycleState()
    nodes: list[NodeInfo] = cache.nodes()
    if not plugin.prescore(state, info, cache):
        return {}
    scores = plugin.score(state, info, nodes)
    plugin.normalize(state, scores)
    return {n.name: s for n, s in zip(nodes, scores, strict=True)}


# -- RuntimeSupported -----------------------------------------------------------------------------
def test_runtime_fits_and_reason() -> None:
    cache = fleet(
        make_device("pi", "gw1", runtimes=["docker"]),
        make_device("esp", "gw1", runtimes=["micropython"], arch="xtensawin"),
    )
    plugin = RuntimeSupported()
    assert run_filter(plugin, cache, "pi", make_workload("w")) == FilterResult(True)
    r = run_filter(plugin, cache, "esp", make_workload("w"))
    assert r is not None and not r.ok and r.reasons == ("lack runtime docker",)
    r = run_filter(plugin, cache, "pi", make_workload("m", runtime="micropython"))
    assert r is not None and r.reasons == ("lack runtime micropython",)


def test_runtime_defaults_from_board_profile() -> None:
    cache = fleet(make_device("esp", "gw1", board="esp32-wroom", runtimes=None, arch=None))
    node = cache.node("esp")
    assert node is not None and node.device.runtimes == frozenset({"micropython"})
    assert node.device.arch == "xtensawin"
    assert run_filter(
        RuntimeSupported(), cache, "esp", make_workload("m", runtime="micropython")
    ) == FilterResult(True)


# -- ArchitectureMatches ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device_arch", "platforms", "ok"),
    [
        ("aarch64", ["linux/arm64"], True),
        ("arm64", ["linux/amd64", "linux/arm64"], True),
        ("armhf", ["linux/arm/v7"], True),
        ("armv7l", ["linux/arm"], True),
        ("x86_64", ["linux/amd64"], True),
        ("amd64", ["linux/arm64"], False),
        ("armhf", ["linux/arm64"], False),
    ],
)
def test_arch_normalized_matching(device_arch: str, platforms: list[str], ok: bool) -> None:
    cache = fleet(make_device("d", "gw1", arch=device_arch))
    r = run_filter(ArchitectureMatches(), cache, "d", make_workload("w", platforms=platforms))
    assert r is not None and r.ok is ok
    if not ok:
        assert r.reasons == ("lack platform " + " or ".join(platforms),)


def test_arch_skipped_without_platforms_annotation() -> None:
    cache = fleet(make_device("d", "gw1", arch="riscv64"))
    assert run_filter(ArchitectureMatches(), cache, "d", make_workload("w")) is None


def test_arch_unknown_device_arch() -> None:
    cache = fleet(make_device("d", "gw1", arch=None))
    r = run_filter(ArchitectureMatches(), cache, "d", make_workload("w", platforms=["linux/arm64"]))
    assert r is not None and r.reasons == ("have no known architecture",)


# -- ResourcesFit ------------------------------------------------------------------------------------
def test_resources_fit_counts_assumed_and_bound() -> None:
    cache = fleet(make_device("d", "gw1", memory="1Gi", cpu="1", flash="1Gi"))
    plugin = ResourcesFit()
    big = make_workload("big", memory="600Mi")
    assert run_filter(plugin, cache, "d", big) == FilterResult(True)
    cache.assume(parse_workload(make_workload("first", memory="600Mi")), "d")
    r = run_filter(plugin, cache, "d", big)
    assert r is not None and r.reasons == ("have insufficient memory",)


def test_resources_several_shortages_and_container_requests() -> None:
    cache = fleet(make_device("d", "gw1", memory="100Mi", cpu="500m", flash="10Mi"))
    wl = make_workload(
        "w",
        flash="20Mi",
        container_requests=[{"memory": "60Mi", "cpu": "300m"}, {"memory": "60Mi", "cpu": "100m"}],
    )
    assert parse_workload(wl).requests.memory == 120 * 2**20
    r = run_filter(ResourcesFit(), cache, "d", wl)
    assert r is not None and r.reasons == ("have insufficient memory", "have insufficient flash")
    r = run_filter(ResourcesFit(), cache, "d", make_workload("cpu", cpu="501m"))
    assert r is not None and r.reasons == ("have insufficient cpu",)


def test_resources_allocatable_beats_capacity_and_profile_fills_in() -> None:
    cache = fleet(
        make_device("a", "gw1", memory="1Gi", allocatable={"memory": "100Mi"}),
        make_device("pi", "gw1", board="raspberry-pi-4", memory=None, cpu=None, flash=None),
    )
    a, pi = cache.node("a"), cache.node("pi")
    assert a is not None and a.allocatable.memory == 100 * 2**20
    assert a.allocatable.cpu_millis == 2000  # from capacity, since allocatable has no cpu
    assert pi is not None and pi.allocatable.memory == 3 * 2**30 and pi.allocatable.cpu_millis == 3500
    r = run_filter(ResourcesFit(), cache, "a", make_workload("w", memory="200Mi"))
    assert r is not None and not r.ok


def test_resources_skipped_for_zero_requests() -> None:
    cache = fleet(make_device("d", "gw1", memory="0", cpu="0", flash="0"))
    assert run_filter(ResourcesFit(), cache, "d", make_workload("w")) is None


# -- NodeSelectorMatches -------------------------------------------------------------------------------
def test_node_selector_merges_gateway_labels_device_wins() -> None:
    cache = fleet(
        make_device("d", "gw1", labels={"zone": "b", "camera": "yes"}),
        gateways=(make_gateway("gw1", labels={"zone": "a", "site": "plant-1"}),),
    )
    plugin = NodeSelectorMatches()
    ok = {"site": "plant-1", "camera": "yes", "zone": "b"}
    assert run_filter(plugin, cache, "d", make_workload("w", node_selector=ok)) == FilterResult(True)
    r = run_filter(plugin, cache, "d", make_workload("w", node_selector={"zone": "a"}))
    assert r is not None and r.reasons == ("don't match the nodeSelector",)


def test_node_selector_implicit_labels() -> None:
    cache = fleet(make_device("d", "gw1", board="raspberry-pi-4", arch="aarch64"))
    sel = {"fleetlet.io/gateway": "gw1", "fleetlet.io/board": "raspberry-pi-4", "kubernetes.io/arch": "arm64"}
    assert run_filter(
        NodeSelectorMatches(), cache, "d", make_workload("w", node_selector=sel)
    ) == FilterResult(True)
    r = run_filter(
        NodeSelectorMatches(), cache, "d", make_workload("w", node_selector={"fleetlet.io/gateway": "x"})
    )
    assert r is not None and not r.ok
    assert run_filter(NodeSelectorMatches(), cache, "d", make_workload("w")) is None


# -- TaintToleration ---------------------------------------------------------------------------------
def test_taints_device_and_gateway_reasons() -> None:
    cache = fleet(
        make_device("tainted", "gw1", taints=[NOSCHED]),
        make_device("behind", "gw2"),
        gateways=(
            make_gateway("gw1"),
            make_gateway("gw2", taints=[{"key": "maintenance", "effect": "NoExecute"}]),
        ),
    )
    plugin = TaintToleration()
    r = run_filter(plugin, cache, "tainted", make_workload("w"))
    assert r is not None and r.reasons == ("have untolerated taint dedicated=cam:NoSchedule",)
    r = run_filter(plugin, cache, "behind", make_workload("w"))
    assert r is not None and r.reasons == ("have a gateway with untolerated taint maintenance:NoExecute",)


@pytest.mark.parametrize(
    ("toleration", "ok"),
    [
        ({"key": "dedicated", "operator": "Equal", "value": "cam", "effect": "NoSchedule"}, True),
        ({"key": "dedicated", "value": "cam"}, True),  # default operator Equal, any effect
        ({"key": "dedicated", "operator": "Exists"}, True),
        ({"operator": "Exists"}, True),  # empty key + Exists tolerates everything
        ({"key": "dedicated", "operator": "Equal", "value": "other"}, False),
        ({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_toleration_semantics(toleration: dict[str, str], ok: bool) -> None:
    cache = fleet(make_device("d", "gw1", taints=[NOSCHED]))
    r = run_filter(TaintToleration(), cache, "d", make_workload("w", tolerations=[toleration]))
    assert r is not None and r.ok is ok


def test_prefer_no_schedule_only_scores() -> None:
    soft = {"key": "busy", "value": "yes", "effect": "PreferNoSchedule"}
    cache = fleet(
        make_device("soft", "gw1", taints=[soft]),
        make_device("clean", "gw1"),
        make_device("soft-gw", "gw2"),
        gateways=(make_gateway("gw1"), make_gateway("gw2", taints=[soft])),
    )
    plugin = TaintToleration()
    assert run_filter(plugin, cache, "soft", make_workload("w")) == FilterResult(True)
    scores = run_score(plugin, cache, make_workload("w"))
    assert scores["clean"] == 100 and scores["soft"] == 0 and scores["soft-gw"] == 0
    tolerant = make_workload("t", tolerations=[{"key": "busy", "operator": "Exists"}])
    assert set(run_score(plugin, cache, tolerant).values()) == {100}


# -- DeviceReady ------------------------------------------------------------------------------------
def test_readiness_reasons() -> None:
    cache = fleet(
        make_device("ok", "gw1"),
        make_device("off", "gw1", phase="Offline"),
        make_device("unk", "gw1", phase="Unknown"),
        make_device("cordoned", "gw1", unschedulable=True),
        make_device("orphan", "nope"),
        make_device("gw-cordoned", "gw2"),
        make_device("gw-notready", "gw3"),
        gateways=(
            make_gateway("gw1"),
            make_gateway("gw2", unschedulable=True),
            make_gateway("gw3", ready=False),
        ),
    )
    expected = {
        "ok": (),
        "off": ("are Offline",),
        "unk": ("are Unknown",),
        "cordoned": ("are cordoned",),
        "orphan": ("have no gateway",),
        "gw-cordoned": ("have a cordoned gateway",),
        "gw-notready": ("have a gateway that is not Ready",),
    }
    for name, reasons in expected.items():
        r = run_filter(DeviceReady(), cache, name, make_workload("w"))
        assert r is not None and r.reasons == reasons, name


def test_gateway_readiness_follows_gateway_updates() -> None:
    cache = fleet(make_device("d", "gw1"), gateways=(make_gateway("gw1", ready=False),))
    r = run_filter(DeviceReady(), cache, "d", make_workload("w"))
    assert r is not None and not r.ok
    cache.upsert_gateway(make_gateway("gw1", ready=True))
    assert run_filter(DeviceReady(), cache, "d", make_workload("w")) == FilterResult(True)


# -- LeastAllocated ---------------------------------------------------------------------------------
def test_least_allocated_prefers_emptier_devices() -> None:
    cache = fleet(
        make_device("empty", "gw1", memory="1Gi", cpu="1", flash="1Gi"),
        make_device("half", "gw1", memory="1Gi", cpu="1", flash="1Gi"),
    )
    cache.assume(parse_workload(make_workload("x", memory="512Mi", cpu="500m", flash="512Mi")), "half")
    scores = run_score(LeastAllocated(), cache, make_workload("w", memory="0", cpu="0"))
    assert scores["empty"] == pytest.approx(100.0)
    assert scores["half"] == pytest.approx(50.0)


# -- spread ------------------------------------------------------------------------------------------
def test_gateway_spread_prefers_gateways_without_the_group() -> None:
    cache = fleet(
        make_device("a1", "gwa"),
        make_device("a2", "gwa"),
        make_device("b1", "gwb"),
        gateways=(make_gateway("gwa"), make_gateway("gwb")),
    )
    dep = {"fleetlet.io/deployment": "web"}
    cache.assume(parse_workload(make_workload("web-1", labels=dep)), "a1")
    scores = run_score(GatewaySpread(), cache, make_workload("web-2", labels=dep))
    assert scores == {"a1": 0, "a2": 0, "b1": 100}
    # Another deployment (or another namespace) has none placed: skipped, every device scores the same.
    api = {"fleetlet.io/deployment": "api"}
    assert run_score(GatewaySpread(), cache, make_workload("api-1", labels=api)) == {}
    assert run_score(GatewaySpread(), cache, make_workload("web-x", "other-ns", labels=dep)) == {}
    assert run_score(GatewaySpread(), cache, make_workload("solo")) == {}  # no group: skipped
    # Once one of "api" is placed, it counts only for "api".
    cache.assume(parse_workload(make_workload("api-0", labels=api)), "b1")
    assert run_score(GatewaySpread(), cache, make_workload("api-1", labels=api)) == {
        "a1": 100,
        "a2": 100,
        "b1": 0,
    }
    assert run_score(GatewaySpread(), cache, make_workload("web-3", labels=dep)) == {
        "a1": 0,
        "a2": 0,
        "b1": 100,
    }


def test_zone_spread_and_unlabeled_devices() -> None:
    cache = fleet(
        make_device("z1", "gw1", labels={"zone": "north"}),
        make_device("z2", "gw2"),  # zone from its gateway
        make_device("nozone", "gw3"),
        gateways=(make_gateway("gw1"), make_gateway("gw2", labels={"zone": "south"}), make_gateway("gw3")),
    )
    same = {"app": "cam"}
    cache.assume(parse_workload(make_workload("cam-1", labels=same)), "z1")
    scores = run_score(ZoneSpread(), cache, make_workload("cam-2", labels=same))
    assert scores["z2"] == 100 and scores["z1"] == 0
    assert scores["nozone"] == 0  # scored like the most crowded zone
