"""Informer: a list-then-watch cache with callbacks, the way client-go's reflector works.

    informer = Informer(api, "workloads", field_selector="spec.gatewayName=gw1",
                        on_add=..., on_update=..., on_delete=...)
    task = asyncio.create_task(informer.run())
    await informer.wait_synced()
    informer.get("web", "default")

Guarantees: callbacks run one at a time, in event order; the cache is updated before the
callback is called; after a relist (410 Expired, or a failure we cannot resume from) the
cache is diffed against the fresh list, so callers see add/update/delete for what changed
while they were not watching. Connection errors are retried forever with capped
exponential backoff; ``run()`` only returns by cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .errors import ApiError, ConnectionFailed
from .resources import KindLike, resource_type

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class ListWatchClient(Protocol):
    """What an informer needs of a client: ``fleetlet.server.client.ApiClient`` (aiohttp), or the
    gateway's own small one (``fleetlet.gateway.apiclient``), which keeps aiohttp out of it."""

    async def list_all(self, *args: Any, **kwargs: Any) -> Obj: ...

    def watch(self, *args: Any, **kwargs: Any) -> Any: ...


AddHandler = Callable[[Obj], Awaitable[None] | None]
UpdateHandler = Callable[[Obj, Obj], Awaitable[None] | None]
DeleteHandler = Callable[[Obj], Awaitable[None] | None]


def object_key(obj: Obj) -> str:
    """``namespace/name`` for namespaced objects, ``name`` otherwise (client-go's MetaNamespaceKey)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = str(meta.get("name", ""))
    return f"{ns}/{name}" if ns else name


class Backoff:
    """Capped exponential backoff with jitter, so many clients don't reconnect in lockstep."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0):
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = self.initial


class Informer:
    def __init__(
        self,
        client: ListWatchClient,
        kind: KindLike,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
        watch_timeout_seconds: int = 300,
        page_size: int = 500,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        slim: Callable[[Obj], Obj] | None = None,
    ):
        self.client = client
        self.resource = resource_type(kind)
        # client-go's SetTransform: what the cache keeps of each object (handlers get it whole).
        self.slim = slim
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self._handlers: list[HandlerRegistration] = []
        if on_add or on_update or on_delete:
            self._handlers.append(HandlerRegistration(on_add, on_update, on_delete, active=True))
        self.shared = False  # run by a SharedInformers, not by whoever asked for it
        self.watch_timeout_seconds = watch_timeout_seconds
        self.page_size = page_size
        self.cache: dict[str, Obj] = {}
        self.resource_version: str | None = None
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._synced = asyncio.Event()
        self.relists = 0  # how many full lists were made (observability and tests)

    # ---- handlers ---------------------------------------------------------------------

    def add_handlers(
        self,
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
        *,
        active: bool = True,
    ) -> HandlerRegistration:
        """Another consumer of this informer's events (client-go's AddEventHandler).

        An inactive registration receives nothing until :meth:`activate`, so an owner can
        register in ``__init__`` and start listening once its own state exists.
        """
        reg = HandlerRegistration(on_add, on_update, on_delete, active=False)
        self._handlers.append(reg)
        if active:
            self.activate(reg)
        return reg

    def activate(self, reg: HandlerRegistration) -> None:
        """Start delivering to ``reg``. A late joiner first sees the cache as adds, as in
        client-go, all at once: its add handler must be synchronous so no event interleaves."""
        if reg.active:
            return
        reg.active = True
        if self._synced.is_set() and reg.on_add is not None:
            for obj in list(self.cache.values()):
                if inspect.isawaitable(reg.on_add(obj)):
                    raise TypeError("a late-joining handler must be synchronous")

    def remove_handlers(self, reg: HandlerRegistration) -> None:
        reg.active = False
        with contextlib.suppress(ValueError):
            self._handlers.remove(reg)

    # ---- reading the cache -------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def get(self, name: str, namespace: str | None = None) -> Obj | None:
        key = f"{namespace}/{name}" if self.resource.namespaced and namespace else name
        return self.cache.get(key)

    def items(self) -> list[Obj]:
        return list(self.cache.values())

    # ---- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch forever; resume from the last resourceVersion, relist on 410."""
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list_and_replace()
                    need_list = False
                    self._backoff.reset()
                got_events = await self._watch_once()
                if got_events:
                    self._backoff.reset()
                # A clean end (the server's timeoutSeconds) resumes at once from the last RV.
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                if e.is_gone:
                    log.info(
                        "%s watch expired at resourceVersion %s; relisting",
                        self.resource.plural,
                        self.resource_version,
                    )
                    need_list = True
                    continue
                delay = self._backoff.next_delay()
                if isinstance(e, ConnectionFailed):
                    log.warning("%s informer: %s; retrying in %.1fs", self.resource.plural, e.message, delay)
                else:
                    # Anything else from the server (403, 500...): relist after a pause, the safe way back.
                    log.warning("%s informer: %s; relisting in %.1fs", self.resource.plural, e, delay)
                    need_list = True
                await asyncio.sleep(delay)

    async def _list_and_replace(self) -> None:
        listing = await self.client.list_all(
            self.resource,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            page_size=self.page_size,
        )
        self.relists += 1
        fresh: dict[str, Obj] = {object_key(o): o for o in listing.get("items") or []}
        old = self.cache
        slim = self.slim
        self.cache = {key: slim(obj) for key, obj in fresh.items()} if slim else dict(fresh)
        self.resource_version = str((listing.get("metadata") or {}).get("resourceVersion") or "") or None
        del listing  # with slim, the whole objects need not outlive the handlers
        for key, obj in old.items():
            if key not in fresh:
                await self._call(_DELETE, obj)
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                await self._call(_ADD, obj)
            elif _rv(prev) != _rv(obj):
                await self._call(_UPDATE, prev, obj)
        self._synced.set()

    async def _watch_once(self) -> bool:
        started = time.monotonic()
        got = False
        stream = self.client.watch(
            self.resource,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout_seconds,
        )
        async with contextlib.aclosing(stream):
            async for event in stream:
                got = True
                await self._handle(event.type, event.object)
        if not got and time.monotonic() - started < 1.0:
            # A stream that ends at once with nothing is a server in trouble: don't spin on it.
            await asyncio.sleep(self._backoff.next_delay())
        return got

    async def _handle(self, etype: str, obj: Obj) -> None:
        rv = _rv(obj)
        if rv:
            self.resource_version = rv
        if etype == "BOOKMARK":
            return
        key = object_key(obj)
        old = self.cache.get(key)
        if etype == "DELETED":
            self.cache.pop(key, None)
            await self._call(_DELETE, obj)
            return
        self.cache[key] = self.slim(obj) if self.slim else obj
        if old is None:
            await self._call(_ADD, obj)
        else:
            await self._call(_UPDATE, old, obj)

    async def _call(self, slot: int, *args: Obj) -> None:
        for reg in tuple(self._handlers):  # a handler may remove a registration
            if not reg.active:
                continue
            handler = reg.slot(slot)
            if handler is None:
                continue
            try:
                result = handler(*args)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                # A broken handler must not kill the informer that every component relies on.
                name = getattr(handler, "__name__", repr(handler))
                log.exception("%s informer: handler %s failed", self.resource.plural, name)


_ADD, _UPDATE, _DELETE = 0, 1, 2


class HandlerRegistration:
    """One consumer's callbacks on an informer."""

    __slots__ = ("active", "on_add", "on_delete", "on_update")

    def __init__(
        self,
        on_add: AddHandler | None,
        on_update: UpdateHandler | None,
        on_delete: DeleteHandler | None,
        *,
        active: bool,
    ) -> None:
        self.on_add = on_add
        self.on_update = on_update
        self.on_delete = on_delete
        self.active = active

    def slot(self, which: int) -> Callable[..., Awaitable[None] | None] | None:
        return self.on_add if which == _ADD else self.on_update if which == _UPDATE else self.on_delete


class SharedInformers:
    """client-go's SharedInformerFactory: one list+watch per (resource, namespace, selectors)
    in a process, however many components consume it.

    `fleetlet server` runs the scheduler and four controllers in-process; on their own they
    held four watches on workloads and on devices, and parsed every event four times. Consumers
    share the cache too, so they must treat cached objects as read-only (client-go's rule).
    """

    def __init__(self, client: ListWatchClient) -> None:
        self.client = client
        self._informers: dict[tuple[str, str | None, str | None, str | None], Informer] = {}
        self._tasks: dict[Informer, asyncio.Task[None]] = {}
        self._running = False

    def informer(
        self,
        kind: KindLike,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Informer:
        plural = resource_type(kind).plural
        key = (plural, namespace, label_selector, field_selector)
        inf = self._informers.get(key)
        if inf is None:
            inf = Informer(
                self.client, plural, namespace, label_selector=label_selector, field_selector=field_selector
            )
            inf.shared = True
            self._informers[key] = inf
            if self._running:
                self._start(inf)
        return inf

    def _start(self, inf: Informer) -> None:
        if inf not in self._tasks:
            self._tasks[inf] = asyncio.create_task(inf.run(), name=f"shared-informer-{inf.resource.plural}")

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    async def run(self) -> None:
        """Run every informer asked for, now or later, until cancelled."""
        self._running = True
        try:
            for inf in self._informers.values():
                self._start(inf)
            await asyncio.Event().wait()
        finally:
            self._running = False
            tasks = list(self._tasks.values())
            self._tasks.clear()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t


def _rv(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv is not None else None
