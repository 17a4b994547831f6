"""Bursts of creates that start small: Kubernetes' slowStartBatch, pipelined.

The ReplicaSet and DaemonSet controllers create in batches of 1, 2, 4, ... so that a create
that will always fail (a quota, a webhook, an invalid template) fails once, not a thousand
times; and they allow a large burst (DaemonSet's burstReplicas is 250) once creates succeed.
Here the window doubles on each success instead of each batch, so no batch waits on its
slowest request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def slow_start(
    jobs: Sequence[Callable[[], Awaitable[T]]], *, limit: int, initial: int = 1
) -> tuple[list[T], list[BaseException], int]:
    """Run ``jobs`` with at most ``window`` in flight; the window starts at ``initial`` and
    doubles with each success up to ``limit``. After a failure nothing new starts.

    Returns (results, failures, how many jobs never started).
    """
    results: list[T] = []
    failures: list[BaseException] = []
    pending: set[asyncio.Future[T]] = set()
    window = max(1, initial)
    started = 0

    def fill() -> None:
        nonlocal started
        while not failures and started < len(jobs) and len(pending) < window:
            pending.add(asyncio.ensure_future(jobs[started]()))
            started += 1

    try:
        fill()
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                pending.discard(fut)
                exc = fut.exception()
                if exc is not None:
                    failures.append(exc)
                else:
                    results.append(fut.result())
                    window = min(window * 2, limit)
            fill()
    finally:
        for fut in pending:
            fut.cancel()
    return results, failures, len(jobs) - started
