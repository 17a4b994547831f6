"""Pure rollout logic: revision hashes, wave targets, budgets, failure ratio and the planners."""

from __future__ import annotations

import pytest
from fleetlet.server.controllers import rollout as ro
from fleetlet.server.controllers.rollout import WorkloadView as W


def tpl(image: str = "nginx:1", **labels: str) -> dict[str, object]:
    return {
        "metadata": {"labels": {"app": "web", **labels}},
        "spec": {"runtime": "docker", "containers": [{"name": "c", "image": image}]},
    }


# ---- revision hashes and history ----------------------------------------------------------


def test_template_hash_is_stable_and_order_independent() -> None:
    a = {"spec": {"runtime": "docker", "containers": []}, "metadata": {"labels": {"x": "1", "y": "2"}}}
    b = {"metadata": {"labels": {"y": "2", "x": "1"}}, "spec": {"containers": [], "runtime": "docker"}}
    assert ro.template_hash(a) == ro.template_hash(b)
    assert len(ro.template_hash(a)) == 10


def test_template_hash_changes_with_spec_and_labels() -> None:
    base = ro.template_hash(tpl())
    assert ro.template_hash(tpl("nginx:2")) != base
    assert ro.template_hash(tpl(tier="x")) != base


def test_workload_name_shape() -> None:
    name = ro.workload_name("web", "abcdef1234")
    prefix, h, rand = name.rsplit("-", 2)
    assert prefix == "web" and h == "abcde" and len(rand) == 5
    assert ro.workload_name("web", "abcdef1234") != name


def test_history_appends_new_and_renumbers_a_return_to_old() -> None:
    h = ro.record_revision([], "aaa", tpl("1"), 10, set(), "t1")
    h = ro.record_revision(h, "bbb", tpl("2"), 10, set(), "t2")
    assert [(e.revision, e.hash) for e in h] == [(1, "aaa"), (2, "bbb")]
    # Unchanged template: no new revision.
    assert [(e.revision, e.hash) for e in ro.record_revision(h, "bbb", tpl("2"), 10, set(), "t3")] == [
        (1, "aaa"),
        (2, "bbb"),
    ]
    # Going back to aaa (undo or rollback) moves it to the newest number, as kubectl does.
    h2 = ro.record_revision(h, "aaa", tpl("1"), 10, set(), "t3")
    assert [(e.revision, e.hash) for e in h2] == [(2, "bbb"), (3, "aaa")]
    prev = ro.previous_revision(h2, "aaa")
    assert prev is not None and prev.hash == "bbb"


def test_history_limit_keeps_update_and_revisions_in_use() -> None:
    h: list[ro.HistoryEntry] = []
    for i, hsh in enumerate(["r1", "r2", "r3", "r4"]):
        h = ro.record_revision(h, hsh, tpl(str(i)), 1, {"r1"}, "t")
    # limit 1 keeps one old revision besides the update one; r1 still has workloads so it stays too.
    assert {e.hash for e in h} == {"r1", "r4"}


def test_parse_history_skips_junk() -> None:
    raw = [
        {"revision": 2, "hash": "b", "template": {}},
        {"hash": "x"},
        "junk",
        {"revision": 1, "hash": "a", "template": {}},
    ]
    assert [e.hash for e in ro.parse_history(raw)] == ["a", "b"]


# ---- waves and budgets --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("waves", "total", "expected"),
    [
        ([1, "10%", "50%", "100%"], 4, [1, 1, 2, 4]),
        ([1, "10%", "50%", "100%"], 100, [1, 10, 50, 100]),
        ([1, "50%", "100%"], 3, [1, 2, 3]),
        ([1, "50%"], 4, [1, 2, 4]),  # the last wave always reaches the total
        ([5, 2], 10, [5, 5, 10]),  # never goes down
        ([50], 3, [3]),  # capped
        (None, 7, [7]),
        ([1, "100%"], 0, [0, 0]),
        (["10%"], 30, [3, 30]),  # 10% of 30 is exactly 3, not 4
    ],
)
def test_wave_targets(waves: list[object] | None, total: int, expected: list[int]) -> None:
    assert ro.wave_targets(waves, total) == expected


def test_int_or_percent_rejects_junk() -> None:
    with pytest.raises(ValueError):
        ro.int_or_percent("lots", 10, round_up=True)
    with pytest.raises(ValueError):
        ro.int_or_percent(True, 10, round_up=True)


def test_max_unavailable_rounding_and_every_device_floor() -> None:
    assert ro.max_unavailable("25%", 10, every_device=False) == 2
    assert ro.max_unavailable("25%", 3, every_device=False) == 0
    assert ro.max_unavailable("25%", 3, every_device=True) == 1
    assert ro.max_unavailable(None, 8, every_device=False) == 2
    assert ro.max_unavailable(20, 4, every_device=False) == 4


def test_advance_wave_moves_only_when_healthy_and_not_paused() -> None:
    targets = [1, 2, 4]
    assert ro.advance_wave(targets, 0, 0, paused=False) == 1
    assert ro.advance_wave(targets, 0, 0, paused=True) == 0
    assert ro.advance_wave(targets, 1, 0, paused=False) == 1
    assert ro.advance_wave(targets, 1, 1, paused=False) == 2
    assert ro.advance_wave(targets, 1, 1, paused=True) == 1
    assert ro.advance_wave(targets, 1, 4, paused=False) == 3
    assert ro.advance_wave(targets, 3, 4, paused=False) == 3


def test_failure_threshold_is_strict() -> None:
    assert ro.exceeds_threshold(1, 1, 0.5)
    assert not ro.exceeds_threshold(1, 2, 0.5)
    assert ro.exceeds_threshold(2, 3, 0.5)
    assert ro.exceeds_threshold(1, 10, 0.0)
    assert not ro.exceeds_threshold(0, 10, 0.0)
    assert not ro.exceeds_threshold(5, 5, 1.0)
    assert ro.failure_ratio(0, 0) == 0.0


# ---- workload health ----------------------------------------------------------------------


def wl(phase: str, ready: str | None = None, reason: str = "", restarts: int = 0) -> dict[str, object]:
    status: dict[str, object] = {"phase": phase, "restarts": restarts}
    if ready is not None:
        status["conditions"] = [
            {"type": "Ready", "status": ready, "reason": reason, "lastTransitionTime": "2024-01-01T00:00:00Z"}
        ]
    return {"status": status}


def test_ready_needs_running_and_ready_condition() -> None:
    assert ro.workload_ready(wl("Running", "True"))
    assert not ro.workload_ready(wl("Running", "False"))
    assert not ro.workload_ready(wl("Running"))
    assert not ro.workload_ready(wl("Delivered", "True"))
    assert ro.ready_since(wl("Running", "True")) == 1704067200.0


def test_failed_detection() -> None:
    assert ro.workload_failed(wl("Failed"))
    assert ro.workload_failed(wl("Running", "False", "CrashLoop"))
    assert ro.workload_failed(wl("Running", "False", "RolledBack"))
    assert ro.workload_failed(wl("Running", "True", restarts=3))
    assert not ro.workload_failed(wl("Running", "True", restarts=2))
    assert not ro.workload_failed(wl("Running", "False", "Starting"))
    assert not ro.workload_failed({"status": {}})


# ---- planners ----------------------------------------------------------------------------


def views(rev: str, n: int, *, available: bool = True, failed: bool = False, start: int = 0) -> list[W]:
    return [
        W(
            name=f"{rev}-{i}",
            revision=rev,
            device=f"d{i}",
            ready=available,
            available=available,
            failed=failed,
            created=f"2024-01-01T00:00:{i:02d}Z",
        )
        for i in range(start, start + n)
    ]


def test_replicas_fresh_create_all_at_once() -> None:
    plan = ro.plan_replicas(
        total=3, targets=[3], wave=1, new=[], old=[], max_unavail=0, halted=False, can_create_old=False
    )
    assert plan.create_new == 3 and plan.delete == [] and not plan.complete


def test_replicas_scale_down_deletes_the_worst_first() -> None:
    new = views("n", 3)
    new[1].available = new[1].ready = False
    plan = ro.plan_replicas(
        total=2, targets=[2], wave=1, new=new, old=[], max_unavail=0, halted=False, can_create_old=False
    )
    assert plan.delete == ["n-1"] and plan.create_new == 0


def test_replicas_wave_one_surges_one_and_keeps_old_until_new_available() -> None:
    old = views("o", 4)
    plan = ro.plan_replicas(
        total=4, targets=[1, 2, 4], wave=1, new=[], old=old, max_unavail=0, halted=False, can_create_old=True
    )
    assert plan.create_new == 1 and plan.delete == []
    new = views("n", 1, available=False, start=10)
    plan = ro.plan_replicas(
        total=4, targets=[1, 2, 4], wave=1, new=new, old=old, max_unavail=0, halted=False, can_create_old=True
    )
    assert plan.create_new == 0 and plan.delete == [], (
        "maxUnavailable 0: no old goes before a new is available"
    )
    new[0].available = new[0].ready = True
    plan = ro.plan_replicas(
        total=4, targets=[1, 2, 4], wave=1, new=new, old=old, max_unavail=0, halted=False, can_create_old=True
    )
    assert len(plan.delete) == 1 and plan.delete[0].startswith("o-")


def test_replicas_halted_or_paused_rollout_creates_no_more_new() -> None:
    old, new = views("o", 3), views("n", 1, available=False, failed=True, start=5)
    for halted, wave in ((True, 1), (False, 0)):
        plan = ro.plan_replicas(
            total=4,
            targets=[1, 2, 4],
            wave=wave,
            new=new,
            old=old,
            max_unavail=1,
            halted=halted,
            can_create_old=True,
        )
        assert plan.create_new == 0 and plan.delete == []


def test_replicas_missing_old_is_recreated_from_the_stable_revision() -> None:
    old, new = views("o", 2), views("n", 1, start=5)
    plan = ro.plan_replicas(
        total=4, targets=[1, 2, 4], wave=1, new=new, old=old, max_unavail=0, halted=False, can_create_old=True
    )
    assert plan.create_old == 1 and plan.create_new == 0
    plan = ro.plan_replicas(
        total=4,
        targets=[1, 2, 4],
        wave=1,
        new=new,
        old=old,
        max_unavail=0,
        halted=False,
        can_create_old=False,
    )
    assert plan.create_old == 0 and plan.create_new == 1


def test_replicas_unavailable_old_are_free_to_delete() -> None:
    old = views("o", 2, available=False)
    new = views("n", 2, start=5)
    plan = ro.plan_replicas(
        total=2, targets=[2], wave=1, new=new, old=old, max_unavail=0, halted=False, can_create_old=True
    )
    assert sorted(plan.delete) == ["o-0", "o-1"]
    plan = ro.plan_replicas(
        total=2, targets=[2], wave=1, new=new, old=[], max_unavail=0, halted=False, can_create_old=True
    )
    assert plan.complete


def test_every_device_creates_on_uncovered_devices_and_drops_strays() -> None:
    plan = ro.plan_every_device(
        devices=["a", "b"],
        on_device={"a": views("n", 1)},
        strays=views("n", 1, start=7),
        update="n",
        targets=[2],
        wave=1,
        max_unavail=1,
        halted=False,
    )
    assert plan.create_on_devices == ["b"]
    assert plan.delete == ["n-7"]


def test_every_device_replaces_in_waves_within_max_unavailable() -> None:
    devices = ["a", "b", "c", "d"]
    on = {d: [W(name=f"o-{d}", revision="o", device=d, ready=True, available=True)] for d in devices}
    plan = ro.plan_every_device(
        devices=devices,
        on_device=on,
        strays=[],
        update="n",
        targets=[1, 2, 4],
        wave=1,
        max_unavail=1,
        halted=False,
    )
    assert plan.delete == ["o-a"] and plan.create_on_devices == []
    # Wave 3 wants everything, but only one more device may be down at a time.
    on["a"] = [W(name="n-a", revision="n", device="a", ready=True, available=True)]
    plan = ro.plan_every_device(
        devices=devices,
        on_device=on,
        strays=[],
        update="n",
        targets=[1, 2, 4],
        wave=3,
        max_unavail=1,
        halted=False,
    )
    assert len(plan.delete) == 1
    # A device already down costs nothing from the budget.
    on["b"][0].available = on["b"][0].ready = False
    plan = ro.plan_every_device(
        devices=devices,
        on_device=on,
        strays=[],
        update="n",
        targets=[1, 2, 4],
        wave=3,
        max_unavail=1,
        halted=False,
    )
    assert plan.delete == ["o-b"], "b is already unavailable (free) and the budget is used up by it"


def test_every_device_keeps_one_per_device_preferring_the_update() -> None:
    on = {
        "a": [
            W(name="o-a", revision="o", device="a", ready=True, available=True),
            W(name="n-a", revision="n", device="a", ready=False, available=False),
        ]
    }
    plan = ro.plan_every_device(
        devices=["a"], on_device=on, strays=[], update="n", targets=[1], wave=1, max_unavail=1, halted=False
    )
    assert plan.delete == ["o-a"]
