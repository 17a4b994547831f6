"""Watch fan-out: a ring of recent events and watchers with bounded buffers.

Publishing never awaits and never blocks: a watcher whose buffer is full is cut off with an
ERROR event (410 Expired, as kube-apiserver does), so a slow reader cannot slow a writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import jsoncodec

log = logging.getLogger("fleetlet.store.watch")

Predicate = Callable[[Mapping[str, Any]], bool]

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"


@dataclass(slots=True)
class WatchEvent:
    """One change. ``raw`` is the object's JSON text, shared by every watcher that receives it."""

    type: str
    resource: str
    namespace: str
    name: str
    revision: int
    raw: str
    prev_raw: str | None = None
    _obj: dict[str, Any] | None = field(default=None, repr=False)
    _prev: dict[str, Any] | None = field(default=None, repr=False)
    _line: bytes | None = field(default=None, repr=False)

    @property
    def object(self) -> dict[str, Any]:
        """The object, decoded once and cached. Callers must not mutate it."""
        if self._obj is None:
            self._obj = jsoncodec.loads(self.raw)
        return self._obj

    @property
    def prev(self) -> dict[str, Any] | None:
        if self._prev is None and self.prev_raw is not None:
            self._prev = jsoncodec.loads(self.prev_raw)
        return self._prev

    def line(self, type_: str | None = None) -> bytes:
        """The newline-delimited JSON watch line, built without re-encoding the object.

        The line of the event's own type is built once: every watcher sends the same bytes."""
        if type_ is not None and type_ != self.type:
            return b'{"type":"%s","object":%s}\n' % (type_.encode(), self.raw.encode())
        if self._line is None:
            self._line = b'{"type":"%s","object":%s}\n' % (self.type.encode(), self.raw.encode())
        return self._line


def error_event(code: int, reason: str, message: str, revision: int = 0) -> WatchEvent:
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return WatchEvent(ERROR, "", "", "", revision, jsoncodec.dumps(status))


def bookmark_event(kind: str, api_version: str, revision: int) -> WatchEvent:
    obj = {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(revision)}}
    return WatchEvent(BOOKMARK, "", "", "", revision, jsoncodec.dumps(obj))


def filter_event(ev: WatchEvent, namespace: str | None, predicate: Predicate | None) -> str | None:
    """The event type this watcher should see, or None. Selector transitions become ADDED/DELETED."""
    if namespace is not None and ev.namespace != namespace:
        return None
    if predicate is None:
        return ev.type
    now = predicate(ev.object)
    if ev.type != MODIFIED:
        return ev.type if now else None
    prev = ev.prev
    before = predicate(prev) if prev is not None else now
    if now and before:
        return MODIFIED
    if now:
        return ADDED
    if before:
        return DELETED
    return None


# A wake-up with no event, queued by Watcher.poke.
_TICK: Any = ("TICK", None)


class Watcher:
    """An async iterator of (type, event) pairs for one client."""

    def __init__(
        self,
        hub: WatchHub,
        resource: str,
        namespace: str | None,
        predicate: Predicate | None,
        buffer: int,
        start_revision: int,
        history: Callable[[], Awaitable[list[WatchEvent]]] | None = None,
    ) -> None:
        self.hub = hub
        self.resource = resource
        self.namespace = namespace
        self.predicate = predicate
        self.start_revision = start_revision
        self._queue: asyncio.Queue[tuple[str, WatchEvent] | None] = asyncio.Queue(maxsize=buffer)
        self._backlog: deque[tuple[str, WatchEvent]] = deque()
        self._history = history
        self.closed = False
        self.overflowed = False
        self.last_revision = start_revision
        # Set by the consumer while it is caught up: offer() hands lines straight to it.
        self.sink: Callable[[bytes], bool] | None = None

    def add_backlog(self, events: Iterable[WatchEvent]) -> None:
        for ev in events:
            t = filter_event(ev, self.namespace, self.predicate)
            if t is not None:
                self._backlog.append((t, ev))

    def offer_many(self, events: Iterable[WatchEvent]) -> None:
        """The events of one commit for this resource, in order. Never blocks."""
        if self.closed:
            return
        matched: list[tuple[str, WatchEvent]] = []
        for ev in events:
            t = filter_event(ev, self.namespace, self.predicate)
            if t is not None:
                matched.append((t, ev))
        if not matched:
            return
        # Write-through: with nothing queued ahead of them (order holds), the lines go to the
        # client's socket now, as one write, without waking the consumer's coroutine. With
        # 1,000 watchers that wake-up was most of an event's delivery time (bench/store, watch
        # p99); one write per commit instead of one per event saves the syscalls at both ends.
        sink = self.sink
        if sink is not None and self._history is None and not self._backlog and self._queue.empty():
            if sink(b"".join([ev.line(t) for t, ev in matched])):  # one line: itself, no copy
                self.last_revision = matched[-1][1].revision or self.last_revision
                return
        for item in matched:
            try:
                self._queue.put_nowait(item)
            except asyncio.QueueFull:
                self._overflow()
                return

    def _overflow(self) -> None:
        self.sink = None
        self.overflowed = True
        log.warning(
            "watch on %s cut off: buffer of %d events full (client too slow)",
            self.resource,
            self._queue.maxsize,
        )
        while not self._queue.empty():
            self._queue.get_nowait()
        msg = "watch closed: the client did not keep up; relist and watch again"
        self._queue.put_nowait((ERROR, error_event(410, "Expired", msg)))
        self.hub.remove(self)
        self.closed = True

    def close(self) -> None:
        self.sink = None
        if not self.closed:
            self.closed = True
            self.hub.remove(self)
            try:
                self._queue.put_nowait(None)
            except asyncio.QueueFull:
                pass

    def __aiter__(self) -> AsyncIterator[tuple[str, WatchEvent]]:
        return self

    async def __anext__(self) -> tuple[str, WatchEvent]:
        while True:  # a poke with nothing to deliver gives an empty batch: wait again
            batch = await self.next_batch(max_items=1)
            if batch:
                return batch[0]

    async def next_batch(self, max_items: int = 512) -> list[tuple[str, WatchEvent]]:
        """Wait for at least one event (or a poke), then take what is queued without waiting.

        Returns [] when woken by ``poke`` with nothing to send; raises StopAsyncIteration at the end.
        One await per wake-up, not per event: this is the fan-out hot path.
        """
        if self._history is not None:
            fetch, self._history = self._history, None
            self.add_backlog(await fetch())
        out: list[tuple[str, WatchEvent]] = []
        while self._backlog and len(out) < max_items:
            out.append(self._backlog.popleft())
        if not out:
            if self.closed and self._queue.empty():
                raise StopAsyncIteration
            got = await self._queue.get()
            if got is None:
                raise StopAsyncIteration
            if got is not _TICK:
                out.append(got)
        queue = self._queue
        while len(out) < max_items and not queue.empty():
            got = queue.get_nowait()
            if got is None:
                self.closed = True
                break
            if got is not _TICK:
                out.append(got)
        if out:
            self.last_revision = out[-1][1].revision or self.last_revision
        return out

    def poke(self) -> None:
        """Wake a consumer blocked in next_batch (for timers: bookmarks, deadlines, idle checks)."""
        if not self.closed:
            try:
                self._queue.put_nowait(_TICK)
            except asyncio.QueueFull:
                pass  # it has plenty to wake up for already

    def pending(self) -> int:
        return self._queue.qsize() + len(self._backlog)


class WatchHub:
    """Routes committed events to the watchers of their resource and keeps a ring of recent ones."""

    def __init__(self, ring_size: int) -> None:
        self.ring: deque[WatchEvent] = deque(maxlen=ring_size)
        self._by_resource: dict[str, set[Watcher]] = {}
        self.cutoffs = 0

    @property
    def count(self) -> int:
        return sum(len(s) for s in self._by_resource.values())

    def add(self, w: Watcher) -> None:
        self._by_resource.setdefault(w.resource, set()).add(w)

    def remove(self, w: Watcher) -> None:
        watchers = self._by_resource.get(w.resource)
        if watchers is not None:
            watchers.discard(w)
            if w.overflowed:
                self.cutoffs += 1

    def close_all(self) -> None:
        for watchers in list(self._by_resource.values()):
            for w in list(watchers):
                w.close()

    def ring_covers(self, since: int, current: int) -> bool:
        """Whether every event with revision in (since, current] is in the ring."""
        if since >= current:
            return True
        return bool(self.ring) and self.ring[0].revision <= since + 1

    def ring_since(self, resource: str, since: int) -> list[WatchEvent]:
        out: list[WatchEvent] = []
        for ev in reversed(self.ring):
            if ev.revision <= since:
                break
            if ev.resource == resource:
                out.append(ev)
        out.reverse()
        return out

    def publish(self, events: list[WatchEvent]) -> None:
        """One commit's events: each watcher gets its resource's events in one call."""
        self.ring.extend(events)
        by_resource: dict[str, list[WatchEvent]] = {}
        for ev in events:
            if ev.resource in self._by_resource:
                by_resource.setdefault(ev.resource, []).append(ev)
        for resource, evs in by_resource.items():
            watchers = self._by_resource.get(resource)
            if watchers:
                for w in list(watchers):
                    w.offer_many(evs)
