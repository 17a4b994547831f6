"""A deduplicating, rate-limited work queue (client-go's workqueue, for asyncio).

Guarantees:
- a key waiting in the queue is held once, however often it is added;
- a key is handed to at most one worker at a time: adding a key that is being processed
  marks it dirty, and it is queued again when the worker calls :meth:`done`;
- :meth:`add_rate_limited` delays a key with exponential per-key backoff until :meth:`forget`;
- :meth:`add_after` keeps only the earliest pending delay per key.
"""

from __future__ import annotations

import asyncio
from collections import deque


class ShutDown(Exception):
    """The queue was shut down; workers should exit."""


class WorkQueue:
    def __init__(self, name: str = "", *, base_delay: float = 0.05, max_delay: float = 60.0):
        self.name = name
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._delayed: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._cond: asyncio.Condition | None = None
        self._shutdown = False

    def _condition(self) -> asyncio.Condition:
        # Made lazily so the queue can be built outside a running loop.
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutdown

    def add(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # re-queued by done()
        self._queue.append(key)
        self._wake()

    def _wake(self) -> None:
        cond = self._condition()

        async def notify() -> None:
            async with cond:
                cond.notify()

        # add() is synchronous (callbacks, timers); the notify needs the lock, so hop once.
        asyncio.get_running_loop().create_task(notify())

    def add_after(self, key: str, delay: float) -> None:
        if self._shutdown:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._delayed.get(key)
        if pending is not None:
            if pending[0] <= when:
                return  # an earlier wake-up is already scheduled
            pending[1].cancel()
        handle = loop.call_at(when, self._fire, key)
        self._delayed[key] = (when, handle)

    def _fire(self, key: str) -> None:
        self._delayed.pop(key, None)
        self.add(key)

    def backoff(self, key: str) -> float:
        """The delay the next :meth:`add_rate_limited` of ``key`` will use."""
        n = self._failures.get(key, 0)
        return min(self.max_delay, self.base_delay * float(2**n))

    def add_rate_limited(self, key: str) -> float:
        delay = self.backoff(key)
        self._failures[key] = self._failures.get(key, 0) + 1
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> str:
        """The next key; the caller must call :meth:`done` with it. Raises ShutDown."""
        cond = self._condition()
        async with cond:
            while True:
                if self._shutdown:
                    raise ShutDown(self.name)
                if self._queue:
                    break
                await cond.wait()
            key = self._queue.popleft()
            self._processing.add(key)
            self._dirty.discard(key)
            return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shutdown:
            self._queue.append(key)
            self._wake()

    def is_processing(self, key: str) -> bool:
        return key in self._processing

    async def shutdown(self) -> None:
        self._shutdown = True
        for _, handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        cond = self._condition()
        async with cond:
            cond.notify_all()
