"""The controller pattern: informers feed keys into a work queue; workers reconcile one key at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fleetlet.server.client import ApiClient, ApiError, HandlerRegistration, Informer, SharedInformers
from fleetlet.server.client.api import KindLike

from .workqueue import ShutDown, WorkQueue

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class Controller:
    """Subclasses register informers in ``__init__`` and implement :meth:`reconcile`.

    ``reconcile`` returns ``None`` when done, or a delay in seconds to look at the key again
    (waiting on time, e.g. minReadySeconds). An exception retries the key with backoff.
    """

    name = "controller"

    def __init__(
        self,
        client: ApiClient,
        *,
        workers: int = 2,
        max_retry_delay: float = 30.0,
        informers: SharedInformers | None = None,
    ):
        self.client = client
        self.workers = max(1, workers)
        self.queue = WorkQueue(self.name, max_delay=max_retry_delay)
        self.informers: list[Informer] = []
        self.shared = informers
        self._registrations: list[tuple[Informer, HandlerRegistration]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._synced = asyncio.Event()

    def informer(self, kind: KindLike, namespace: str | None = None, **kwargs: Any) -> Informer:
        """An informer with this controller's handlers: the process's shared one when there is
        a :class:`SharedInformers`, else a private one. Handlers start when :meth:`run` does."""
        if self.shared is None:
            inf = Informer(self.client, kind, namespace, **kwargs)
        else:
            handlers = {k: kwargs.pop(k) for k in ("on_add", "on_update", "on_delete") if k in kwargs}
            inf = self.shared.informer(kind, namespace, **kwargs)
            self._registrations.append((inf, inf.add_handlers(**handlers, active=False)))
        self.informers.append(inf)
        return inf

    async def reconcile(self, key: str) -> float | None:
        raise NotImplementedError

    async def background(self) -> None:
        """Optional periodic loop (run after the caches synced); the default does nothing."""
        return None

    async def on_synced(self) -> None:
        """Called once every informer has listed; the default enqueues nothing."""
        return None

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def run(self) -> None:
        """Run until cancelled."""
        try:
            for inf, reg in self._registrations:
                inf.activate(reg)
            for inf in self.informers:
                if not inf.shared:
                    self._tasks.append(
                        asyncio.create_task(inf.run(), name=f"{self.name}-{inf.resource.plural}")
                    )
            for inf in self.informers:
                await inf.wait_synced()
            await self.on_synced()
            self._synced.set()
            log.info("%s controller: caches synced, starting %d workers", self.name, self.workers)
            for i in range(self.workers):
                self._tasks.append(asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}"))
            self._tasks.append(asyncio.create_task(self._background(), name=f"{self.name}-background"))
            await asyncio.gather(*self._tasks)
        finally:
            for inf, reg in self._registrations:
                inf.remove_handlers(reg)
            await self.queue.shutdown()
            for t in self._tasks:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self._tasks.clear()

    async def _background(self) -> None:
        try:
            await self.background()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s controller: background loop failed", self.name)
            raise

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                after = await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.queue.add_rate_limited(key)
                if isinstance(exc, ApiError) and exc.is_conflict:
                    # Stale cache: normal under concurrency, retry quietly.
                    log.debug("%s: %s: conflict, retrying in %.2fs", self.name, key, delay)
                elif isinstance(exc, ApiError):
                    log.warning(
                        "%s: reconciling %s failed: %s; retrying in %.2fs", self.name, key, exc, delay
                    )
                else:
                    log.exception("%s: reconciling %s failed; retrying in %.2fs", self.name, key, delay)
            else:
                self.queue.forget(key)
                if after is not None:
                    self.queue.add_after(key, after)
            finally:
                self.queue.done(key)

    def enqueue(self, key: str) -> None:
        self.queue.add(key)


async def call_quietly(fn: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Run one API call whose failure should be logged, not raised (best-effort writes)."""
    try:
        return await fn()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("%s failed: %s", what, exc)
        return None
