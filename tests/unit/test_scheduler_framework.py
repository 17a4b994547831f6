"""The framework (filters, summary message, sampling, scoring) and the snapshot cache."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest
from fleetlet.server.scheduler.framework import Framework, default_normalize, summarize
from fleetlet.server.scheduler.objects import parse_workload
from fleetlet.server.scheduler.plugins import default_framework
from fleetlet.server.scheduler.snapshot import Cache
from fleetlet.server.scheduler.testing import make_device, make_gateway, make_workload


def test_summary_sorted_by_count_then_reason() -> None:
    msg = summarize(120, {"have insufficient memory": 40, "lack runtime docker": 80})
    assert msg == "0/120 devices are available: 80 lack runtime docker, 40 have insufficient memory."
    tie = summarize(4, {"b": 2, "a": 2})
    assert tie == "0/4 devices are available: 2 a, 2 b."
    assert summarize(0, {}) == "0/0 devices are available: no devices registered."


def test_unschedulable_summary_counts_every_device() -> None:
    cache = Cache()
    cache.upsert_gateway(make_gateway("gw"))
    for i in range(80):
        cache.upsert_device(make_device(f"esp-{i:03}", "gw", runtimes=["micropython"], arch="xtensawin"))
    for i in range(40):
        cache.upsert_device(make_device(f"pi-{i:03}", "gw", memory="64Mi"))
    result = default_framework().schedule(cache, parse_workload(make_workload("w", memory="128Mi")))
    assert result.device is None
    assert (
        result.summary == "0/120 devices are available: 80 lack runtime docker, 40 have insufficient memory."
    )
    assert result.failed_plugins == frozenset({"RuntimeSupported", "ResourcesFit"})
    # The 80 esp devices were ruled out once by the cached static verdict; resources ran on 40.
    assert result.evaluated == 40


def test_device_short_of_two_resources_counts_under_each() -> None:
    cache = Cache()
    cache.upsert_gateway(make_gateway("gw"))
    cache.upsert_device(make_device("d", "gw", memory="1Mi", cpu="100m"))
    result = default_framework().schedule(cache, parse_workload(make_workload("w", memory="2Mi", cpu="1")))
    assert result.summary == "0/1 devices are available: 1 have insufficient cpu, 1 have insufficient memory."


def test_invalid_requests_are_reported_not_raised() -> None:
    cache = Cache()
    wl = make_workload("w")
    wl["spec"]["resources"] = {"requests": {"memory": "lots"}}
    result = default_framework().schedule(cache, parse_workload(wl))
    assert result.device is None and "invalid resource requests" in result.summary


@pytest.mark.parametrize(("total", "expected"), [(10, 10), (99, 99), (100, 100), (1000, 420), (10_000, 500)])
def test_feasible_to_find_follows_kube_adaptive_percentage(total: int, expected: int) -> None:
    assert default_framework().feasible_to_find(total) == expected


@pytest.mark.parametrize("memory", [None, "1Mi"])  # without / with the dynamic (resources) filter
def test_sampling_rotates_start_and_stops_early(memory: str | None) -> None:
    cache = Cache()
    cache.upsert_gateway(make_gateway("gw"))
    for i in range(1000):
        cache.upsert_device(make_device(f"d{i:04}", "gw", memory="4Mi" if i % 2 else "1Gi"))
    fw = default_framework()
    r1 = fw.schedule(cache, parse_workload(make_workload("a", memory=memory)))
    r2 = fw.schedule(cache, parse_workload(make_workload("b", memory=memory)))
    assert r1.feasible == 420 and r2.feasible == 420
    assert r1.evaluated == 420 and r2.evaluated == 420
    # The second cycle starts where the first stopped: disjoint windows of devices.
    assert r1.device is not None and r2.device is not None
    assert int(r1.device[1:]) < 420 <= int(r2.device[1:]) < 840
    # A workload that fits only on the odd (4Mi) devices' complement: the 1Gi ones, half the fleet.
    big = fw.schedule(cache, parse_workload(make_workload("big", memory="8Mi")))
    assert big.feasible == 420 and big.device is not None and int(big.device[1:]) % 2 == 0
    assert big.evaluated >= 839  # it had to look at about twice as many devices


def test_scores_weighted_and_ties_random() -> None:
    cache = Cache()
    cache.upsert_gateway(make_gateway("gw"))
    cache.upsert_device(make_device("big", "gw", memory="4Gi", cpu="4", flash="8Gi"))
    cache.upsert_device(make_device("small", "gw", memory="1Gi", cpu="1", flash="8Gi"))
    fw = default_framework(rng=random.Random(1))
    wl = parse_workload(make_workload("w", memory="512Mi", cpu="500m"))
    assert fw.schedule(cache, wl).device == "big"
    # Identical devices: every one gets picked sometimes.
    tied = Cache()
    tied.upsert_gateway(make_gateway("gw"))
    for name in ("x", "y", "z"):
        tied.upsert_device(make_device(name, "gw"))
    picks = {fw.schedule(tied, parse_workload(make_workload(f"w{i}"))).device for i in range(60)}
    assert picks == {"x", "y", "z"}


def test_spread_places_a_deployment_across_gateways() -> None:
    cache = Cache()
    for g in range(4):
        cache.upsert_gateway(make_gateway(f"gw{g}"))
        for d in range(5):
            cache.upsert_device(make_device(f"gw{g}-d{d}", f"gw{g}"))
    fw = default_framework(rng=random.Random(7))
    gateways = []
    for i in range(4):
        info = parse_workload(make_workload(f"web-{i}", labels={"fleetlet.io/deployment": "web"}))
        result = fw.schedule(cache, info)
        assert result.device is not None
        cache.assume(info, result.device)
        node = cache.node(result.device)
        assert node is not None
        gateways.append(node.gateway_name)
    assert sorted(gateways) == ["gw0", "gw1", "gw2", "gw3"]


def test_default_normalize() -> None:
    s = [0.0, 5.0, 10.0]
    default_normalize(s)
    assert s == [0.0, 50.0, 100.0]
    s = [0.0, 5.0, 10.0]
    default_normalize(s, reverse=True)
    assert s == [100.0, 50.0, 0.0]
    s = [0.0, 0.0]
    default_normalize(s, reverse=True)
    assert s == [100, 100]


def test_framework_with_no_plugins_takes_any_device() -> None:
    cache = Cache()
    cache.upsert_device(make_device("only", "gw"))
    assert Framework([], []).schedule(cache, parse_workload(make_workload("w"))).device == "only"


# -- snapshot cache -------------------------------------------------------------------------------------
def _cache_with_device(clock: Callable[[], float] = time.monotonic) -> Cache:
    cache = Cache(assume_ttl=5.0, clock=clock)
    cache.upsert_gateway(make_gateway("gw", labels={"zone": "a"}))
    cache.upsert_device(make_device("d", "gw", memory="1Gi"))
    return cache


def test_assume_confirm_forget() -> None:
    cache = _cache_with_device()
    info = parse_workload(make_workload("w", memory="100Mi", resource_version="5"))
    cache.assume(info, "d")
    node = cache.node("d")
    assert node is not None and node.req_memory == 100 * 2**20 and cache.is_assumed("default/w")
    with pytest.raises(ValueError):
        cache.assume(info, "d")
    # The watch shows the bind: confirmed, counted once.
    cache.confirm(make_workload("w", memory="100Mi", device_name="d", resource_version="6"))
    assert not cache.is_assumed("default/w") and node.req_memory == 100 * 2**20 and node.workload_count == 1
    cache.forget("default/w")  # confirmed placements are not forgotten
    assert node.req_memory == 100 * 2**20
    other = parse_workload(make_workload("o", memory="1Mi"))
    cache.assume(other, "d")
    cache.forget("default/o")
    assert node.workload_count == 1 and cache.placement("default/o") is None


def test_assumed_binding_expires_only_after_bind_finished_and_ttl() -> None:
    now = [100.0]
    cache = _cache_with_device(clock=lambda: now[0])
    cache.assume(parse_workload(make_workload("w", memory="1Mi")), "d")
    now[0] += 1000
    assert cache.cleanup_expired() == []  # bind still in flight: no deadline yet
    cache.finish_binding("default/w")
    now[0] += 4.9
    assert cache.cleanup_expired() == []
    now[0] += 0.2
    assert cache.cleanup_expired() == ["default/w"]
    node = cache.node("d")
    assert node is not None and node.req_memory == 0


def test_stale_pending_event_does_not_drop_assumed_or_newer_placement() -> None:
    cache = _cache_with_device()
    cache.assume(parse_workload(make_workload("w", memory="1Mi", resource_version="3")), "d")
    cache.upsert_workload(make_workload("w", memory="1Mi", resource_version="4"))  # pending, bind in flight
    assert cache.is_assumed("default/w")
    cache.upsert_workload(make_workload("w", memory="1Mi", device_name="d", resource_version="9"))
    cache.upsert_workload(make_workload("w", memory="1Mi", resource_version="4"))  # replayed, older
    assert cache.placement("default/w") is not None


def test_bound_workload_seen_before_its_device() -> None:
    cache = Cache()
    cache.upsert_workload(make_workload("w", memory="10Mi", device_name="late"))
    cache.upsert_device(make_device("late", "gw"))
    node = cache.node("late")
    assert node is not None and node.req_memory == 10 * 2**20
    cache.remove_device("late")
    cache.upsert_device(make_device("late", "gw"))
    node = cache.node("late")
    assert node is not None and node.req_memory == 10 * 2**20 and node.workload_count == 1


def test_spread_counts_follow_device_and_gateway_changes() -> None:
    cache = _cache_with_device()
    group = ("default", "fleetlet.io/deployment", "web")
    cache.upsert_workload(
        make_workload("w", device_name="d", labels={"fleetlet.io/deployment": "web"}, resource_version="2")
    )
    assert cache.gateway_count(group, "gw") == 1 and cache.zone_count(group, "a") == 1
    cache.upsert_gateway(make_gateway("gw", labels={"zone": "b"}))
    assert cache.zone_count(group, "a") == 0 and cache.zone_count(group, "b") == 1
    cache.upsert_device(make_device("d", "gw2", labels={"zone": "c"}))
    assert cache.gateway_count(group, "gw") == 0 and cache.gateway_count(group, "gw2") == 1
    assert cache.zone_count(group, "c") == 1 and cache.zone_count(group, "b") == 0
    cache.remove_workload("default/w")
    assert cache.gateway_count(group, "gw2") == 0 and cache.zone_count(group, "c") == 0


def test_terminated_workloads_free_their_resources() -> None:
    cache = _cache_with_device()
    wl = make_workload("w", memory="100Mi", device_name="d", resource_version="2")
    cache.upsert_workload(wl)
    done = make_workload("w", memory="100Mi", device_name="d", resource_version="3")
    done["status"] = {"phase": "Succeeded"}
    cache.upsert_workload(done)
    node = cache.node("d")
    assert node is not None and node.req_memory == 0 and node.workload_count == 0


def test_static_verdicts_are_cached_per_signature_and_dropped_on_fleet_changes() -> None:
    cache = Cache()
    cache.upsert_gateway(make_gateway("gw"))
    cache.upsert_device(make_device("d", "gw", labels={"role": "sensor"}))
    fw = default_framework()
    cam = parse_workload(make_workload("a", node_selector={"role": "cam"}))
    first = fw.schedule(cache, cam)
    assert first.device is None
    assert first.summary == "0/1 devices are available: 1 don't match the nodeSelector."
    fw.schedule(cache, parse_workload(make_workload("b", node_selector={"role": "cam"})))
    assert (fw.static_misses, fw.static_hits) == (1, 1)  # same signature: the verdict was reused
    cache.upsert_device(make_device("d", "gw", labels={"role": "cam"}))  # the fleet changed
    assert fw.schedule(cache, cam).device == "d"
    assert fw.static_misses == 2
    # Resources are never cached: they change with every placement.
    big = parse_workload(make_workload("big", memory="600Mi"))
    assert fw.schedule(cache, big).device == "d"
    cache.assume(big, "d")
    again = fw.schedule(cache, parse_workload(make_workload("big2", memory="600Mi")))
    assert again.device is None and again.summary == "0/1 devices are available: 1 have insufficient memory."
