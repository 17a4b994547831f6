"""Status patches toward the API, coalesced per object, rate-limited, and kept while offline.

Reports arrive every few seconds from every device; the API must not see one write per
report. Each object (a Workload or a Device) has one pending merge patch. Fields fall in two
classes:

- *significant* (phase, conditions, restarts, message, firmware...): flushed on the next tick
  (``flush_interval``, 1 s), and only if they differ from what the server already has;
- *volatile* (lastSeen, freeMemory, uptime): flushed at most every ``volatile_interval`` per
  object, or together with a significant change.

A write that fails because the server is unreachable leaves the patch pending; pending patches
are saved to the local store (one row per object, the latest value wins) and delivered after
reconnection, also across a gateway restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from .localstore import LocalStore

# Status patches in flight at once during a flush.
FLUSH_CONCURRENCY = 32

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def object_key(plural: str, namespace: str | None, name: str) -> str:
    return f"{plural}/{namespace or ''}/{name}"


def split_key(key: str) -> tuple[str, str | None, str]:
    plural, ns, name = key.split("/", 2)
    return plural, ns or None, name


class StatusWriter(Protocol):
    """The upstream side: writes a status merge patch; knows the server's current status."""

    async def patch_status(self, plural: str, namespace: str | None, name: str, status: Obj) -> None:
        """Raise ``ConnectionFailed`` when the server is unreachable, ``ApiError`` otherwise."""
        ...

    def current_status(self, plural: str, namespace: str | None, name: str) -> Obj | None: ...


class _Entry:
    """One object's patch state. ``written``: what this gateway wrote that the server's copy
    (the informer cache) does not show yet."""

    __slots__ = ("last_write", "pending", "persisted", "volatile", "written")

    def __init__(self) -> None:
        self.pending: Obj = {}
        self.volatile: Obj = {}
        self.written: Obj = {}
        self.last_write = 0.0
        self.persisted = False


class StatusSync:
    def __init__(
        self,
        writer: StatusWriter,
        store: LocalStore | None,
        *,
        flush_interval: float = 1.0,
        volatile_interval: float = 15.0,
        persist_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer = writer
        self.store = store
        self.flush_interval = flush_interval
        self.volatile_interval = volatile_interval
        self.persist_interval = persist_interval
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._dirty: set[str] = set()
        self._unsaved: set[str] = set()
        self._last_persist = 0.0
        self.online = True
        self.writes = 0  # status writes sent (observability and tests)
        self._wake = asyncio.Event()

    # ---- input ------------------------------------------------------------------------------

    def update(self, key: str, fields: Obj | None = None, volatile: Obj | None = None) -> None:
        """Merge ``fields`` (significant) and ``volatile`` into the object's pending patch."""
        e = self._entries.get(key)
        if e is None:
            e = self._entries[key] = _Entry()
        if fields:
            e.pending.update(fields)
        if volatile:
            e.volatile.update(volatile)
        self._dirty.add(key)
        if not self.online:
            self._unsaved.add(key)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)
        self._dirty.discard(key)

    def last_known(self, key: str) -> Obj:
        """What we last wrote plus what is pending: the provider's view of the status."""
        e = self._entries.get(key)
        return {} if e is None else {**e.written, **e.pending, **e.volatile}

    def pending_count(self) -> int:
        return sum(1 for k in self._dirty if (e := self._entries.get(k)) and (e.pending or e.volatile))

    async def load(self) -> None:
        """Pending patches saved before a restart become pending again (significant)."""
        if self.store is None:
            return
        for key, patch in (await self.store.load_pending()).items():
            self.update(key, patch)
            self._entries[key].persisted = True
        if self._dirty:
            log.info("%d status patches pending from before the restart", len(self._dirty))

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("status flush failed")
            await asyncio.sleep(self.flush_interval)

    async def flush(self, *, force: bool = False) -> int:
        """One pass over the dirty objects; answers how many writes succeeded.

        Patches go out FLUSH_CONCURRENCY at a time, so the server's group commit batches them: one
        at a time, a gateway with 1,000 devices needed about a minute to report them all Running.
        """
        now = self.clock()
        done = 0
        delivered: list[str] = []
        todo: list[tuple[str, _Entry, Obj]] = []
        for key in list(self._dirty):
            e = self._entries.get(key)
            if e is None:
                self._dirty.discard(key)
                continue
            body = self._body(key, e, now, force)
            if body is None:
                continue
            if not body:
                if not e.volatile:
                    self._dirty.discard(key)
                    if e.persisted:
                        delivered.append(key)
                        e.persisted = False
                continue
            todo.append((key, e, body))
        for i in range(0, len(todo), FLUSH_CONCURRENCY):
            chunk = todo[i : i + FLUSH_CONCURRENCY]
            results = await asyncio.gather(
                *(self.writer.patch_status(*split_key(key), body) for key, _, body in chunk),
                return_exceptions=True,
            )
            unreachable: BaseException | None = None
            for (key, e, body), res in zip(chunk, results, strict=True):
                if isinstance(res, BaseException):
                    if not isinstance(res, Exception):
                        raise res
                    if _is_connection_failure(res):
                        unreachable = res  # stays dirty: delivered after reconnection
                        continue
                    if getattr(res, "code", None) == 404:
                        log.info("%s is gone; dropping its status", key)
                        self._entries.pop(key, None)
                    else:
                        log.warning("status patch of %s refused: %s", key, res)
                        _drop_sent(e, body)
                    if key not in self._entries or not (e.pending or e.volatile):
                        self._dirty.discard(key)
                    if e.persisted:
                        delivered.append(key)
                    continue
                if not self.online:
                    log.info("API server reachable again; delivering pending status")
                    self.online = True
                self.writes += 1
                done += 1
                e.written.update(body)
                _drop_sent(e, body)
                e.last_write = now
                if not (e.pending or e.volatile):  # else it changed while the write was in flight
                    self._dirty.discard(key)
                    self._unsaved.discard(key)
                if e.persisted:
                    delivered.append(key)
                    e.persisted = False
            if unreachable is not None:
                if self.online:
                    log.warning("API server unreachable; keeping status patches locally: %s", unreachable)
                self.online = False
                self._unsaved.update(self._dirty)
                break
        await self._persist(now, delivered, force=force)
        return done

    def _body(self, key: str, e: _Entry, now: float, force: bool) -> Obj | None:
        """The patch to send now: ``None`` to wait, ``{}`` when nothing differs from the server."""
        plural, ns, name = split_key(key)
        server = self.writer.current_status(plural, ns, name) or {}
        if e.written:  # what the server's copy (the informer) shows already need not be kept twice
            e.written = {k: v for k, v in e.written.items() if server.get(k) != v}
        current = {**server, **e.written}
        changed = {k: v for k, v in e.pending.items() if current.get(k) != v}
        e.pending = changed
        volatile_due = bool(e.volatile) and (force or now - e.last_write >= self.volatile_interval)
        if not changed and not volatile_due:
            return None if e.volatile else {}
        return {**changed, **e.volatile}

    async def _persist(self, now: float, delivered: list[str], *, force: bool) -> None:
        if self.store is None:
            return
        save: dict[str, Obj] = {}
        if self._unsaved and (force or now - self._last_persist >= self.persist_interval):
            for key in self._unsaved:
                e = self._entries.get(key)
                if e is not None and (e.pending or e.volatile):
                    save[key] = {**e.pending, **e.volatile}
                    e.persisted = True
            self._unsaved.clear()
            self._last_persist = now
        if save or delivered:
            try:
                await self.store.save_pending(save, [k for k in delivered if k not in save])
            except Exception:
                log.exception("saving pending status patches failed")

    async def save_all(self) -> None:
        """On shutdown: everything still pending goes to the local store."""
        self._unsaved.update(k for k in self._dirty if k in self._entries)
        await self._persist(self.clock(), [], force=True)


def _drop_sent(e: _Entry, body: Obj) -> None:
    """Forget the pending fields ``body`` carried; fields updated since it was made stay."""
    for k, v in body.items():
        if k in e.pending and e.pending[k] == v:
            del e.pending[k]
        if k in e.volatile and e.volatile[k] == v:
            del e.volatile[k]


def _is_connection_failure(exc: BaseException) -> bool:
    from fleetlet.server.client.errors import ConnectionFailed

    return isinstance(exc, ConnectionFailed | OSError | asyncio.TimeoutError) or getattr(exc, "code", 0) in (
        500,
        502,
        503,
        504,
    )
