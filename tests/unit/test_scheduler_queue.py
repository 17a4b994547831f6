"""The scheduling queue: priority order, backoff, and the unschedulable pool's requeue hints."""

from __future__ import annotations

import asyncio

from fleetlet.server.scheduler.objects import WorkloadInfo, parse_workload
from fleetlet.server.scheduler.queue import ClusterEvent, SchedulingQueue
from fleetlet.server.scheduler.testing import make_workload


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_queue() -> tuple[SchedulingQueue, Clock]:
    clock = Clock()
    return SchedulingQueue(clock=clock), clock


def wl(name: str, priority: int | None = None, memory: str | None = None) -> WorkloadInfo:
    return parse_workload(make_workload(name, priority=priority, memory=memory))


def pop_names(q: SchedulingQueue) -> list[str]:
    return [item.info.name for item in q.pop_batch(100)]


def test_priority_then_fifo() -> None:
    q, clock = make_queue()
    for name, prio in [("low", 0), ("high", 10), ("mid", 5), ("low2", 0), ("high2", 10)]:
        q.add(wl(name, prio))
        clock.now += 1
    assert pop_names(q) == ["high", "high2", "mid", "low", "low2"]


def test_priority_change_while_active_resorts() -> None:
    q, clock = make_queue()
    q.add(wl("a", 1))
    clock.now += 1
    q.add(wl("b", 1))
    q.add(wl("b", 9))
    assert pop_names(q) == ["b", "a"]
    assert len(q) == 2  # popped but still tracked (in flight) until done


def test_backoff_doubles_to_ten_seconds() -> None:
    q, _ = make_queue()
    assert [q.backoff_duration(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_unschedulable_waits_for_event_then_backoff() -> None:
    q, clock = make_queue()
    q.add(wl("w"))
    item = q.pop_nowait()
    assert item is not None and q.where("default/w") == "inflight"
    q.add_unschedulable(item, frozenset({"RuntimeSupported"}), item.cycle)
    assert q.where("default/w") == "unschedulable"
    clock.now += 100  # time alone does not bring it back (before the safety-net interval)
    assert q.pop_nowait() is None
    # A freed workload cannot cure a runtime mismatch: it stays.
    assert q.move_all(ClusterEvent.WORKLOAD_FREED) == 0
    assert q.move_all(ClusterEvent.DEVICE_ADD) == 1
    again = q.pop_nowait()
    assert again is item and again.attempts == 2
    # Second failure: 2 s backoff applies after a move.
    q.add_unschedulable(again, frozenset({"ResourcesFit"}), again.cycle)
    assert q.move_all(ClusterEvent.WORKLOAD_FREED) == 1
    assert q.where("default/w") == "backoff"
    assert q.pop_nowait() is None
    clock.now += 2.0
    assert q.pop_nowait() is item


def test_event_during_the_attempt_is_not_lost() -> None:
    q, clock = make_queue()
    q.add(wl("w"))
    item = q.pop_nowait()
    assert item is not None
    q.move_all(ClusterEvent.DEVICE_ADD)  # arrives while "w" is being scheduled
    q.add_unschedulable(item, frozenset({"ResourcesFit"}), item.cycle)
    assert q.where("default/w") == "backoff"  # not parked in the pool
    clock.now += 1.0
    assert q.pop_nowait() is item


def test_safety_net_flushes_old_unschedulable() -> None:
    q, clock = make_queue()
    q.add(wl("w"))
    item = q.pop_nowait()
    assert item is not None
    q.add_unschedulable(item, frozenset({"RuntimeSupported"}), item.cycle)
    clock.now += q.max_unschedulable_seconds
    q.flush_unschedulable_leftover()
    assert q.pop_nowait() is item


def test_spec_update_moves_out_of_pool_and_delete_forgets() -> None:
    q, clock = make_queue()
    q.add(wl("w", memory="1Gi"))
    item = q.pop_nowait()
    assert item is not None
    q.add_unschedulable(item, frozenset({"ResourcesFit"}), item.cycle)
    q.add(wl("w", memory="1Gi"))  # same constraints (e.g. a status write)
    assert q.where("default/w") == "unschedulable"
    clock.now += 5
    q.add(wl("w", memory="1Mi"))
    assert q.where("default/w") == "active"
    q.delete("default/w")
    assert q.pop_nowait() is None and "default/w" not in q


def test_result_of_deleted_workload_is_dropped() -> None:
    q, _ = make_queue()
    q.add(wl("w"))
    item = q.pop_nowait()
    assert item is not None
    q.delete("default/w")
    q.add_unschedulable(item, frozenset({"ResourcesFit"}), item.cycle)
    q.add_retry(item)
    assert "default/w" not in q and q.counts() == {
        "active": 0,
        "backoff": 0,
        "unschedulable": 0,
        "inflight": 0,
    }


def test_requeue_inflight_keeps_order_and_attempts() -> None:
    q, clock = make_queue()
    q.add(wl("first"))
    clock.now += 1
    q.add(wl("second"))
    batch = q.pop_batch(2)
    for item in reversed(batch):
        q.requeue_inflight(item)
    again = q.pop_batch(2)
    assert [i.info.name for i in again] == ["first", "second"]
    assert all(i.attempts == 1 for i in again)


async def test_pop_waits_for_add_and_for_backoff() -> None:
    q = SchedulingQueue(initial_backoff=0.05)
    waiter = asyncio.create_task(q.pop())
    await asyncio.sleep(0)
    assert not waiter.done()
    q.add(wl("w"))
    item = await asyncio.wait_for(waiter, 5)
    assert item.info.name == "w"
    q.add_retry(item)  # backs off 50 ms; pop() wakes up by itself
    again = await asyncio.wait_for(q.pop(), 5)
    assert again is item
