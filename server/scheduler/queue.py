"""The scheduling queue: an active heap, a backoff heap and an unschedulable pool.

As in kube-scheduler:

- ``active``: ready to schedule, ordered by (-priority, enqueue time).
- ``backoff``: failed recently; waits 1 s, 2 s, 4 s ... up to 10 s per failed attempt.
- ``unschedulable``: failed and nothing has changed since; moved out only by a cluster event
  that may make it schedulable (a device or gateway added or changed, a workload deleted or
  unbound freeing resources), or after ``max_unschedulable_seconds`` as a safety net.

A cluster event that arrives while a workload is being scheduled is not lost: the attempt's
cycle number is compared with the cycle of the last move request, and a workload whose
attempt started before that request goes to backoff rather than into the pool.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from .objects import WorkloadInfo


class ClusterEvent(Enum):
    """What changed in the fleet; a coarse hint of which unschedulable workloads it may help."""

    DEVICE_ADD = "DeviceAdd"
    DEVICE_UPDATE = "DeviceUpdate"
    GATEWAY_ADD = "GatewayAdd"
    GATEWAY_UPDATE = "GatewayUpdate"
    WORKLOAD_FREED = "WorkloadFreed"  # deleted, unbound or finished: resources (and spread) freed


# Plugins whose failures a freed workload can cure. Any device/gateway change may cure any failure.
_CURED_BY_FREED_WORKLOAD = frozenset({"ResourcesFit"})


def may_help(event: ClusterEvent, failed_plugins: frozenset[str]) -> bool:
    if event is ClusterEvent.WORKLOAD_FREED:
        return bool(failed_plugins & _CURED_BY_FREED_WORKLOAD)
    return True


@dataclass(slots=True)
class QueuedWorkload:
    info: WorkloadInfo
    timestamp: float  # when it last entered the active queue (the tie-breaker)
    initial_timestamp: float  # when it was first seen (for latency metrics)
    attempts: int = 0
    failed_plugins: frozenset[str] = frozenset()
    unschedulable_since: float = 0.0
    backoff_until: float = 0.0
    entry: int = 0  # the heap entry that is current; older entries are stale
    cycle: int = 0  # the scheduling cycle of its latest attempt

    @property
    def key(self) -> str:
        return self.info.key


@dataclass
class SchedulingQueue:
    initial_backoff: float = 1.0
    max_backoff: float = 10.0
    max_unschedulable_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic

    _active: list[tuple[int, float, int, str]] = field(default_factory=list)
    _backoff: list[tuple[float, int, str]] = field(default_factory=list)
    _items: dict[str, QueuedWorkload] = field(default_factory=dict)
    _where: dict[str, str] = field(default_factory=dict)  # key -> active | backoff | unschedulable | inflight
    _unschedulable: dict[str, QueuedWorkload] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _wakeup: asyncio.Event | None = None
    scheduling_cycle: int = 0
    move_request_cycle: int = -1
    _closed: bool = False

    # -- state ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def where(self, key: str) -> str | None:
        """``active``, ``backoff``, ``unschedulable``, ``inflight`` or None."""
        return self._where.get(key)

    def get(self, key: str) -> QueuedWorkload | None:
        return self._items.get(key)

    def counts(self) -> dict[str, int]:
        out = {"active": 0, "backoff": 0, "unschedulable": 0, "inflight": 0}
        for w in self._where.values():
            out[w] += 1
        return out

    def _event(self) -> asyncio.Event:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        return self._wakeup

    def _notify(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    # -- moving between the three places -----------------------------------------------------
    def _push_active(self, q: QueuedWorkload, *, now: float | None = None) -> None:
        q.entry = next(self._seq)
        q.timestamp = self.clock() if now is None else now
        heapq.heappush(self._active, (-q.info.priority, q.timestamp, q.entry, q.key))
        self._where[q.key] = "active"
        self._unschedulable.pop(q.key, None)
        self._notify()

    def _push_backoff(self, q: QueuedWorkload) -> None:
        q.entry = next(self._seq)
        heapq.heappush(self._backoff, (q.backoff_until, q.entry, q.key))
        self._where[q.key] = "backoff"
        self._unschedulable.pop(q.key, None)
        self._notify()

    def _push_unschedulable(self, q: QueuedWorkload) -> None:
        q.entry = next(self._seq)
        q.unschedulable_since = self.clock()
        self._unschedulable[q.key] = q
        self._where[q.key] = "unschedulable"

    def backoff_duration(self, attempts: int) -> float:
        if attempts <= 0:
            return 0.0
        return float(min(self.initial_backoff * 2.0 ** (attempts - 1), self.max_backoff))

    # -- producers ----------------------------------------------------------------------------
    def add(self, info: WorkloadInfo) -> None:
        """A pending workload was seen (created, or updated while pending)."""
        q = self._items.get(info.key)
        if q is None:
            now = self.clock()
            q = QueuedWorkload(info, now, now)
            self._items[info.key] = q
            self._push_active(q, now=now)
            return
        old, q.info = q.info, info
        where = self._where.get(info.key)
        if where == "active" and old.priority != info.priority:
            self._push_active(q, now=q.timestamp)  # re-sort; the old heap entry goes stale
        elif where == "unschedulable" and old.scheduling_signature != info.scheduling_signature:
            # Its constraints changed: worth another try (after any backoff still due).
            self._requeue(q)

    def delete(self, key: str) -> None:
        """The workload is gone, bound, or being deleted: nothing to schedule."""
        self._items.pop(key, None)
        self._where.pop(key, None)
        self._unschedulable.pop(key, None)

    def _requeue(self, q: QueuedWorkload) -> None:
        if q.backoff_until > self.clock():
            self._push_backoff(q)
        else:
            self._push_active(q)

    # -- consumers ----------------------------------------------------------------------------
    def flush_backoff(self) -> None:
        now = self.clock()
        while self._backoff and self._backoff[0][0] <= now:
            _, entry, key = heapq.heappop(self._backoff)
            q = self._items.get(key)
            if q is not None and q.entry == entry and self._where.get(key) == "backoff":
                self._push_active(q, now=now)

    def flush_unschedulable_leftover(self) -> None:
        """Safety net: a workload left in the pool too long gets another try."""
        now = self.clock()
        limit = self.max_unschedulable_seconds
        stale = [q for q in self._unschedulable.values() if now - q.unschedulable_since >= limit]
        for q in stale:
            self._requeue(q)

    def pop_nowait(self) -> QueuedWorkload | None:
        """The next workload to schedule, or None if nothing is active."""
        self.flush_backoff()
        while self._active:
            _, _, entry, key = heapq.heappop(self._active)
            q = self._items.get(key)
            if q is None or q.entry != entry or self._where.get(key) != "active":
                continue  # stale heap entry
            self._where[key] = "inflight"
            q.attempts += 1
            self.scheduling_cycle += 1
            q.cycle = self.scheduling_cycle
            return q
        return None

    def next_backoff_deadline(self) -> float | None:
        while self._backoff:
            _, entry, key = self._backoff[0]
            q = self._items.get(key)
            if q is not None and q.entry == entry and self._where.get(key) == "backoff":
                return self._backoff[0][0]
            heapq.heappop(self._backoff)
        return None

    async def pop(self) -> QueuedWorkload:
        """Wait for the next workload to schedule."""
        while True:
            q = self.pop_nowait()
            if q is not None:
                return q
            ev = self._event()
            ev.clear()
            deadline = self.next_backoff_deadline()
            timeout = None if deadline is None else max(deadline - self.clock(), 0.0)
            try:
                await asyncio.wait_for(ev.wait(), timeout)
            except TimeoutError:
                pass

    def pop_batch(self, limit: int) -> list[QueuedWorkload]:
        out: list[QueuedWorkload] = []
        while len(out) < limit:
            q = self.pop_nowait()
            if q is None:
                break
            out.append(q)
        return out

    # -- results of a cycle -------------------------------------------------------------------
    def done(self, key: str) -> None:
        """Scheduled (assumed and bind sent): it leaves the queue."""
        self.delete(key)

    def add_unschedulable(self, q: QueuedWorkload, failed_plugins: frozenset[str], cycle: int) -> None:
        """A failed attempt that started at scheduling ``cycle``. Backs off, then waits for an event."""
        if self._items.get(q.key) is not q:
            return  # deleted or replaced while it was being scheduled
        q.failed_plugins = failed_plugins
        q.backoff_until = self.clock() + self.backoff_duration(q.attempts)
        if self.move_request_cycle >= cycle:
            # The fleet changed while this attempt ran: it may fit now, so don't park it.
            self._push_backoff(q)
        else:
            self._push_unschedulable(q)

    def add_retry(self, q: QueuedWorkload) -> None:
        """An error that was not the workload's fault (a bind that failed): retry after backoff."""
        if self._items.get(q.key) is not q:
            return
        q.backoff_until = self.clock() + self.backoff_duration(q.attempts)
        self._push_backoff(q)

    def requeue_inflight(self, q: QueuedWorkload) -> None:
        """Give back a workload popped but never scheduled (leadership lost mid-cycle)."""
        if self._items.get(q.key) is q and self._where.get(q.key) == "inflight":
            q.attempts = max(q.attempts - 1, 0)
            self._push_active(q, now=q.timestamp)

    def move_all(self, event: ClusterEvent) -> int:
        """A cluster event: move the unschedulable workloads it may help. Returns how many moved."""
        self.move_request_cycle = self.scheduling_cycle
        moved = [q for q in self._unschedulable.values() if may_help(event, q.failed_plugins)]
        for q in moved:
            self._requeue(q)
        return len(moved)

    def unschedulable_keys(self) -> Iterable[str]:
        return self._unschedulable.keys()

    def close(self) -> None:
        self._closed = True
        self._notify()
