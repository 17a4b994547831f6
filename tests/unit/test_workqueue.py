"""The controllers' work queue: dedup, no concurrent processing of a key, backoff, delays."""

from __future__ import annotations

import asyncio

import pytest
from fleetlet.server.controllers.workqueue import ShutDown, WorkQueue


async def test_duplicate_adds_are_held_once() -> None:
    q = WorkQueue()
    for _ in range(5):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"
    assert len(q) == 0


async def test_key_being_processed_is_requeued_after_done_not_before() -> None:
    q = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")  # changed while a worker holds it
    assert len(q) == 0, "a key in processing must not be handed to a second worker"
    assert q.is_processing("a")
    q.done(key)
    assert len(q) == 1
    assert await q.get() == "a"


async def test_two_workers_never_hold_the_same_key() -> None:
    q = WorkQueue()
    active: set[str] = set()
    overlaps = 0
    handled = 0
    enough = asyncio.Event()

    async def worker() -> None:
        nonlocal overlaps, handled
        while True:
            try:
                key = await q.get()
            except ShutDown:
                return
            if key in active:
                overlaps += 1
            active.add(key)
            await asyncio.sleep(0.001)
            q.add(key)  # re-added while processing
            handled += 1
            if handled >= 60:
                enough.set()
            active.discard(key)
            q.done(key)

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    for k in ("x", "y"):
        q.add(k)
    await asyncio.wait_for(enough.wait(), timeout=10)
    await q.shutdown()
    await asyncio.gather(*workers)
    assert overlaps == 0


async def test_rate_limited_backoff_grows_and_forget_resets() -> None:
    q = WorkQueue(base_delay=0.01, max_delay=0.08)
    delays = [q.add_rate_limited("k") for _ in range(6)]
    assert delays[:4] == [0.01, 0.02, 0.04, 0.08]
    assert delays[4:] == [0.08, 0.08], "backoff is capped"
    assert q.num_requeues("k") == 6
    q.forget("k")
    assert q.num_requeues("k") == 0
    assert q.backoff("k") == 0.01


async def test_add_after_delivers_later_and_keeps_earliest() -> None:
    q = WorkQueue()
    q.add_after("k", 5.0)
    q.add_after("k", 0.02)  # earlier wins
    q.add_after("k", 3.0)  # later is ignored
    assert len(q) == 0
    key = await asyncio.wait_for(q.get(), timeout=2.0)
    assert key == "k"
    q.done(key)
    await asyncio.sleep(0.05)
    assert len(q) == 0, "the cancelled later timers must not fire again"


async def test_shutdown_wakes_waiting_workers() -> None:
    q = WorkQueue()
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    await q.shutdown()
    with pytest.raises(ShutDown):
        await asyncio.wait_for(waiter, timeout=1.0)
    q.add("late")
    assert len(q) == 0
