"""List-then-watch informers for the gateway, on its own API client (gateway/apiclient.py).

The same loop as ``fleetlet.server.client.Informer`` (list, watch from the last
resourceVersion, resume after a clean end, relist on 410 Gone or any other refusal, back off
while the server is unreachable), which the gateway cannot import without aiohttp. One
addition, as client-go's ``SetTransform``: a ``slim`` function shrinks what the cache keeps of
each object. The handlers still get the whole object; the cache only has to answer what the
gateway asks it later (an object's status, its resourceVersion, which objects exist), so with
1,000 devices it holds a few hundred bytes per object instead of the whole document.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fleetlet.server.client.errors import ApiError, ConnectionFailed

from .apiclient import ApiClient, KindLike, resource_type

log = logging.getLogger(__name__)

Obj = dict[str, Any]
AddHandler = Callable[[Obj], Awaitable[None] | None]
UpdateHandler = Callable[[Obj, Obj], Awaitable[None] | None]
DeleteHandler = Callable[[Obj], Awaitable[None] | None]


def object_key(obj: Obj) -> str:
    """``namespace/name`` for namespaced objects, ``name`` otherwise (client-go's MetaNamespaceKey)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = str(meta.get("name", ""))
    return f"{ns}/{name}" if ns else name


def slim_object(obj: Obj, *, status: bool = True) -> Obj:
    """What the gateway's caches keep of an object: identity, resourceVersion, the spec fields
    that route it to a device, and (unless ``status=False``) its status, compacted (:func:`compact`)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    out: Obj = {
        "metadata": {
            k: compact(meta[k]) for k in ("name", "namespace", "uid", "resourceVersion") if k in meta
        },
    }
    routing = {k: compact(spec[k]) for k in ("deviceName", "gatewayName", "gateway") if k in spec}
    if routing:
        out["spec"] = routing
    if status and "status" in obj:
        out["status"] = compact(obj["status"])
    return out


def compact(value: Any) -> Any:
    """A copy of decoded JSON whose keys and short strings are interned: 1,000 statuses repeat
    the same few dozen keys and values ("conditions", "type", "Ready", "True", a timestamp...),
    and a JSON decoder makes new string objects for every document."""
    if isinstance(value, str):
        return sys.intern(value) if len(value) <= 64 and type(value) is str else value
    if isinstance(value, dict):
        return {(sys.intern(k) if type(k) is str else k): compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value


class Backoff:
    """Capped exponential backoff with jitter, so many clients don't reconnect in lockstep."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0) -> None:
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
        client: ApiClient,
        kind: KindLike,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
        slim: Callable[[Obj], Obj] | None = None,
        watch_timeout_seconds: int = 300,
        page_size: int = 500,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.client = client
        self.resource = resource_type(kind)
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.on_add = on_add
        self.on_update = on_update
        self.on_delete = on_delete
        self.slim = slim if slim is not None else (lambda obj: obj)
        self.watch_timeout_seconds = watch_timeout_seconds
        self.page_size = page_size
        self.cache: dict[str, Obj] = {}  # key -> slim(object)
        self.resource_version: str | None = None
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._synced = asyncio.Event()
        self.relists = 0

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
                if await self._watch_once():
                    self._backoff.reset()
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
        self.cache = {key: self.slim(obj) for key, obj in fresh.items()}
        self.resource_version = str((listing.get("metadata") or {}).get("resourceVersion") or "") or None
        del listing
        for key, obj in old.items():
            if key not in fresh:
                await self._call(self.on_delete, obj)
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                await self._call(self.on_add, obj)
            elif _rv(prev) != _rv(obj):
                await self._call(self.on_update, prev, obj)
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
            await self._call(self.on_delete, obj)
            return
        self.cache[key] = self.slim(obj)
        if old is None:
            await self._call(self.on_add, obj)
        else:
            await self._call(self.on_update, old, obj)

    async def _call(self, handler: Callable[..., Awaitable[None] | None] | None, *args: Obj) -> None:
        if handler is None:
            return
        try:
            result = handler(*args)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            # A broken handler must not kill the informer the gateway relies on.
            name = getattr(handler, "__name__", repr(handler))
            log.exception("%s informer: handler %s failed", self.resource.plural, name)


def _rv(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv is not None else None


__all__ = ["Backoff", "Informer", "object_key", "slim_object"]
