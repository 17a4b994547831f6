"""slow_start: the window starts at one, doubles per success up to the limit, stops on failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from fleetlet.server.controllers.slowstart import slow_start


def _jobs(n: int, fail_at: set[int], log: list[int]) -> tuple[list[Callable[[], Awaitable[int]]], list[int]]:
    in_flight = [0]
    peaks: list[int] = []

    def make(i: int) -> Callable[[], Awaitable[int]]:
        async def job() -> int:
            in_flight[0] += 1
            peaks.append(in_flight[0])
            log.append(i)
            await asyncio.sleep(0.001)
            in_flight[0] -= 1
            if i in fail_at:
                raise RuntimeError(f"job {i} failed")
            return i

        return job

    return [make(i) for i in range(n)], peaks


async def test_all_succeed_window_grows_to_the_limit() -> None:
    log: list[int] = []
    jobs, peaks = _jobs(200, set(), log)
    results, failures, skipped = await slow_start(jobs, limit=16)
    assert sorted(results) == list(range(200)) and not failures and skipped == 0
    assert peaks[0] == 1  # the first create goes alone
    assert max(peaks) == 16  # then the burst, never past its limit


async def test_a_failure_stops_new_starts() -> None:
    log: list[int] = []
    jobs, _ = _jobs(100, {0}, log)
    results, failures, skipped = await slow_start(jobs, limit=50)
    assert log == [0]  # the first one failed alone: nothing else was tried
    assert results == [] and len(failures) == 1 and skipped == 99


async def test_cancellation_cancels_what_is_in_flight() -> None:
    started = asyncio.Event()
    cancelled: list[int] = []

    def make(i: int) -> Callable[[], Awaitable[int]]:
        async def job() -> int:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(i)
                raise
            return i

        return job

    task = asyncio.create_task(slow_start([make(i) for i in range(4)], limit=4))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert cancelled == [0]
