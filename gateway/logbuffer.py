"""Recent log lines per workload, in memory, bounded: what `fleetlet logs` answers from when the
device itself cannot be asked (MicroPython devices, or an SBC agent that does not answer).

Fed by the devices' log batches (``POST /d/<device>/logs``). A buffer exists only for a workload
that has sent lines (lazy), holds at most ``per_workload`` lines, and all buffers together hold at
most ``max_bytes`` of text: past that, the oldest lines of the least recently written buffer go
first. With 1,000 devices on a Raspberry Pi this stays a few MiB at most.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from .wire import LogBatch, LogClock

# One line: (Unix ms or 0 when unknown, stream 0/1, container or None, text)
Line = tuple[int, int, str | None, str]

PER_WORKLOAD = 200
MAX_BYTES = 2 * 1024 * 1024
MAX_LINE = 1024  # characters kept of one line
_OVERHEAD = 64  # rough cost of a line's tuple and deque slot, counted with its text


def _cost(line: Line) -> int:
    return len(line[3]) + _OVERHEAD


class LogBuffer:
    def __init__(
        self,
        *,
        per_workload: int = PER_WORKLOAD,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_workload = per_workload
        self.max_bytes = max_bytes
        self.clock = clock
        self.size = 0  # accounted bytes over all buffers
        self.dropped: dict[str, int] = {}  # lines the devices reported dropped, by uid
        self._buffers: OrderedDict[str, deque[Line]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buffers)

    def add(self, batch: LogBatch) -> int:
        """Keep the batch's lines; answers how many were kept."""
        if not batch.lines:
            return 0
        now_ms = int(self.clock() * 1000)
        last_t = batch.lines[-1].t
        container = sys.intern(batch.container) if batch.container else None
        buf = self._buffers.get(batch.uid)
        if buf is None:
            buf = self._buffers[batch.uid] = deque()
        else:
            self._buffers.move_to_end(batch.uid)
        for entry in batch.lines[-self.per_workload :]:
            if batch.clock == LogClock.UNIX_MS:
                t = entry.t
            else:  # device uptime: place the batch's last line at its arrival
                t = max(0, now_ms - max(0, last_t - entry.t))
            text = entry.text if len(entry.text) <= MAX_LINE else entry.text[:MAX_LINE] + "..."
            line: Line = (t, int(entry.stream), container, text)
            if len(buf) >= self.per_workload:
                self.size -= _cost(buf.popleft())
            buf.append(line)
            self.size += _cost(line)
        if batch.dropped:
            self.dropped[batch.uid] = self.dropped.get(batch.uid, 0) + batch.dropped
        self._evict()
        return min(len(batch.lines), self.per_workload)

    def _evict(self) -> None:
        while self.size > self.max_bytes and self._buffers:
            uid, oldest = next(iter(self._buffers.items()))
            if oldest:
                self.size -= _cost(oldest.popleft())
            if not oldest:
                del self._buffers[uid]

    def tail(self, uid: str, container: str | None = None, n: int | None = None) -> list[Line]:
        """The last ``n`` lines (all when None) of a workload, of one container when given."""
        buf = self._buffers.get(uid)
        if not buf:
            return []
        lines = [ln for ln in buf if container is None or ln[2] in (None, container)]
        if n is not None:
            lines = lines[-n:] if n > 0 else []
        return lines

    def forget(self, uid: str) -> None:
        buf = self._buffers.pop(uid, None)
        if buf:
            self.size -= sum(_cost(ln) for ln in buf)
        self.dropped.pop(uid, None)


__all__ = ["MAX_BYTES", "PER_WORKLOAD", "Line", "LogBuffer"]
