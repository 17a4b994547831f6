"""The fleetlet store: a revisioned, watchable object store in the shape of etcd + kube-apiserver's registry.

Design (see docs/ARCHITECTURE.md):
- One writer task per process. Writes queue up; the writer takes everything queued, applies each
  operation in order against the in-memory state, and commits the whole group in one transaction
  on a dedicated thread (group commit: one fsync for many writes). Revisions are assigned in that
  order, so they are in commit order on every backend.
- Reads are served from memory (the latest value of every object), like kube-apiserver's watch cache.
- Watchers get events from a ring of recent events; older history is read from the log table.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import builtins
import logging
import os
import secrets
import string
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import jsoncodec
from .errors import AlreadyExists, Conflict, Gone, Invalid, NotFound, StoreError, Unavailable
from .selectors import make_predicate
from .sql import Row, SQLBackend
from .watch import ADDED, DELETED, MODIFIED, Watcher, WatchEvent, WatchHub

log = logging.getLogger("fleetlet.store")

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped objects
UpdateFn = Callable[[Obj], Obj]

_dumps = jsoncodec.dumps


_clock_cache: tuple[int, str] = (0, "")


def now_rfc3339() -> str:
    """The current UTC time in RFC 3339 at second precision, formatted once per second."""
    global _clock_cache
    sec = int(time.time())
    if _clock_cache[0] != sec:
        _clock_cache = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _clock_cache[1]


def _new_uid() -> str:
    """A random (version 4) UUID; os.urandom in one call is cheaper than uuid.uuid4()'s path."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _content(obj: Obj) -> Obj:
    """The parts of an object whose change bumps metadata.generation (all but metadata and status)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


@dataclass(slots=True)
class _Entry:
    obj: Obj  # never handed out: callers get copies decoded from ``raw``
    raw: str
    revision: int


@dataclass(slots=True)
class ListResult:
    items: list[Obj]
    resource_version: int
    continue_token: str | None = None
    remaining: int | None = None


@dataclass(slots=True)
class RawListResult:
    """Like ListResult, but items are JSON texts, for the API to stream without re-encoding."""

    items: list[str]
    resource_version: int
    continue_token: str | None = None
    remaining: int | None = None


@dataclass(slots=True)
class _Op:
    kind: str  # create | update | delete
    resource: str
    namespace: str
    name: str
    obj: Obj | None = None
    fn: UpdateFn | None = None
    expected_rv: str | None = None
    expected_uid: str | None = None
    owned: bool = False
    future: asyncio.Future[str] = field(init=False)  # set by Store._submit


@dataclass(slots=True)
class StoreStats:
    revision: int
    compacted_revision: int
    watchers: int
    watchers_cut_off: int
    objects: int
    commits: int
    writes: int
    last_batch_size: int
    max_batch_size: int
    last_compaction_step_ms: float
    commit_seconds: float = 0.0


class Store:
    """Async object store. Create with ``await Store.open(url)``."""

    def __init__(
        self,
        url: str,
        *,
        compaction_window: int = 20000,
        compaction_interval: float = 5.0,
        compaction_step_rows: int = 2000,
        ring_size: int = 8192,
        watcher_buffer: int = 1000,
        max_batch: int = 512,
    ) -> None:
        self.url = url
        self.compaction_window = compaction_window
        self.compaction_interval = compaction_interval
        self.compaction_step_rows = compaction_step_rows
        self.watcher_buffer = watcher_buffer
        self.max_batch = max_batch
        self._backend = SQLBackend(url)
        self._writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetlet-store-w")
        self._data: dict[str, dict[Key, _Entry]] = {}
        self._sorted_keys: dict[str, list[Key] | None] = {}
        self._hub = WatchHub(ring_size)
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._revision = 0
        self._compacted = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.commits = 0
        self.commit_seconds = 0.0  # time from handing a batch to the database until it committed
        self.writes = 0
        self.last_batch_size = 0
        self.max_batch_size = 0
        self.ready = False

    # -- lifecycle -----------------------------------------------------------------------
    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> Store:
        store = cls(url, **kwargs)
        await store._start()
        return store

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, fn, *args)

    async def _start(self) -> None:
        waited = False
        while not await self._run(self._backend.try_become_writer):
            if not waited:
                log.warning("another fleetlet server is the active writer of %s; waiting", self._backend.url)
                waited = True
            await asyncio.sleep(1.0)
        self._revision, self._compacted = await self._run(self._backend.setup)
        rows = await self._run(self._backend.load_objects)
        for resource, ns, name, rev, raw in rows:
            self._data.setdefault(resource, {})[(ns, name)] = _Entry(jsoncodec.loads(raw), raw, rev)
        log.info(
            "store open: %s, %d objects, revision %d, compacted %d",
            self._backend.dialect,
            len(rows),
            self._revision,
            self._compacted,
        )
        self._tasks.append(asyncio.create_task(self._writer(), name="fleetlet-store-writer"))
        if self.compaction_interval > 0:
            self._tasks.append(asyncio.create_task(self._compactor(), name="fleetlet-store-compactor"))
        self.ready = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.ready = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        while not self._queue.empty():
            op = self._queue.get_nowait()
            if not op.future.done():
                op.future.set_exception(Unavailable("store closed"))
        self._hub.close_all()
        await self._run(self._backend.close)
        self._writer_pool.shutdown(wait=True)

    # -- introspection --------------------------------------------------------------------
    @property
    def revision(self) -> int:
        return self._revision

    @property
    def compacted_revision(self) -> int:
        return self._compacted

    @property
    def dialect(self) -> str:
        return self._backend.dialect

    def stats(self) -> StoreStats:
        return StoreStats(
            revision=self._revision,
            compacted_revision=self._compacted,
            watchers=self._hub.count,
            watchers_cut_off=self._hub.cutoffs,
            objects=sum(len(d) for d in self._data.values()),
            commits=self.commits,
            writes=self.writes,
            last_batch_size=self.last_batch_size,
            max_batch_size=self.max_batch_size,
            last_compaction_step_ms=self._backend.last_compaction_step_ms,
            commit_seconds=self.commit_seconds,
        )

    async def database_bytes(self) -> int:
        return int(await asyncio.to_thread(self._backend.database_bytes))

    async def log_rows(self) -> int:
        return int(await asyncio.to_thread(self._backend.log_count))

    # -- reads ----------------------------------------------------------------------------
    def _entry(self, resource: str, namespace: str, name: str) -> _Entry:
        entry = self._data.get(resource, {}).get((namespace, name))
        if entry is None:
            raise NotFound(f'{resource} "{name}" not found')
        return entry

    async def get(self, resource: str, namespace: str, name: str) -> Obj:
        return jsoncodec.loads(self._entry(resource, namespace, name).raw)  # type: ignore[no-any-return]

    async def get_raw(self, resource: str, namespace: str, name: str) -> str:
        return self._entry(resource, namespace, name).raw

    def peek(self, resource: str, namespace: str, name: str) -> Obj | None:
        """The live cached object, for read-only use on the event loop (no copy). Do not mutate."""
        entry = self._data.get(resource, {}).get((namespace, name))
        return entry.obj if entry else None

    def _keys(self, resource: str) -> list[Key]:
        keys = self._sorted_keys.get(resource)
        if keys is None:
            keys = sorted(self._data.get(resource, {}))
            self._sorted_keys[resource] = keys
        return keys

    async def list_raw(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> RawListResult:
        predicate = make_predicate(label_selector, field_selector)
        start: Key | None = None
        if continue_token:
            start = self._decode_continue(continue_token)
        table = self._data.get(resource, {})
        keys = self._keys(resource)
        items: list[str] = []
        last: Key | None = None
        lo = 0
        if start is not None:
            lo = bisect.bisect_right(keys, start)
        elif namespace:
            lo = bisect.bisect_left(keys, (namespace, ""))
        more = False
        remaining = 0
        for i in range(lo, len(keys)):
            key = keys[i]
            if namespace is not None and key[0] != namespace:
                if namespace and key[0] > namespace:
                    break
                continue
            entry = table[key]
            if predicate is not None and not predicate(entry.obj):
                continue
            if limit and len(items) >= limit:
                more = True
                remaining += 1
                continue
            items.append(entry.raw)
            last = key
        token = None
        if more and last is not None:
            token = self._encode_continue(last)
        return RawListResult(items, self._revision, token, remaining if more else None)

    async def list(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> ListResult:
        raw = await self.list_raw(
            resource,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            limit=limit,
            continue_token=continue_token,
        )
        return ListResult(
            [jsoncodec.loads(r) for r in raw.items], raw.resource_version, raw.continue_token, raw.remaining
        )

    def _encode_continue(self, key: Key) -> str:
        body = _dumps({"rv": self._revision, "k": list(key)}).encode()
        return base64.urlsafe_b64encode(body).decode().rstrip("=")

    def _decode_continue(self, token: str) -> Key:
        try:
            body = jsoncodec.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            rv, key = int(body["rv"]), body["k"]
            ns, name = str(key[0]), str(key[1])
        except (ValueError, KeyError, TypeError, IndexError, binascii.Error) as e:
            raise Invalid(f"invalid continue token: {e}") from None
        if rv < self._compacted:
            raise Gone("the provided continue parameter is too old; relist without it")
        return (ns, name)

    # -- writes ---------------------------------------------------------------------------
    async def _submit(self, op: _Op) -> str:
        """Queue one write for the writer and wait for the stored JSON text."""
        if self._closed:
            raise Unavailable("store closed")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        op.future = future
        self._queue.put_nowait(op)
        # No shield: a caller cancelled before the writer reaches its op skips it; one cancelled
        # later may still commit, as a Kubernetes request whose client went away may.
        return await future

    async def create(self, resource: str, obj: Obj) -> Obj:
        return jsoncodec.loads(await self.create_raw(resource, obj))  # type: ignore[no-any-return]

    async def create_raw(self, resource: str, obj: Obj, *, owned: bool = False) -> str:
        """Create and return the stored JSON text. ``owned``: the store may keep ``obj`` (no copy)."""
        meta = obj.get("metadata") or {}
        name = meta.get("name") or ""
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise Invalid("metadata.name: Required value: name or generateName is required")
            alphabet = string.ascii_lowercase + string.digits
            name = prefix + "".join(secrets.choice(alphabet) for _ in range(5))
        op = _Op("create", resource, meta.get("namespace") or "", name, obj=obj, owned=owned)
        return await self._submit(op)

    async def guaranteed_update(
        self,
        resource: str,
        namespace: str,
        name: str,
        fn: UpdateFn,
        *,
        expected_rv: str | None = None,
        expected_uid: str | None = None,
    ) -> Obj:
        """Atomically replace an object with ``fn(copy_of_current)``.

        ``fn`` runs on the writer, serialized with every other write, so read-modify-write needs no
        retry loop. It may raise a StoreError (for example Conflict) to refuse the change.
        """
        raw = await self.guaranteed_update_raw(
            resource, namespace, name, fn, expected_rv=expected_rv, expected_uid=expected_uid
        )
        return jsoncodec.loads(raw)  # type: ignore[no-any-return]

    async def guaranteed_update_raw(
        self,
        resource: str,
        namespace: str,
        name: str,
        fn: UpdateFn,
        *,
        expected_rv: str | None = None,
        expected_uid: str | None = None,
    ) -> str:
        """Like guaranteed_update, but returns the stored JSON text (no decode)."""
        op = _Op(
            "update",
            resource,
            namespace,
            name,
            fn=fn,
            expected_rv=expected_rv,
            expected_uid=expected_uid,
        )
        return await self._submit(op)

    async def update(self, resource: str, obj: Obj) -> Obj:
        """Replace an object; ``metadata.resourceVersion``, when set, is a precondition (409 if stale)."""
        meta = obj.get("metadata") or {}
        rv = meta.get("resourceVersion") or None
        return await self.guaranteed_update(
            resource,
            meta.get("namespace") or "",
            meta.get("name") or "",
            lambda _cur: obj,
            expected_rv=str(rv) if rv is not None else None,
        )

    async def delete(
        self,
        resource: str,
        namespace: str,
        name: str,
        *,
        expected_rv: str | None = None,
        expected_uid: str | None = None,
    ) -> Obj:
        """Delete an object. With finalizers, it only gets a deletionTimestamp until they are removed."""
        op = _Op(
            "delete",
            resource,
            namespace,
            name,
            expected_rv=expected_rv,
            expected_uid=expected_uid,
        )
        return jsoncodec.loads(await self._submit(op))  # type: ignore[no-any-return]

    # -- the writer -----------------------------------------------------------------------
    def _apply(
        self, op: _Op, current: _Entry | None, revision: int
    ) -> tuple[str, Obj, str, str | None] | None:
        """Compute one operation's result. Returns (event type, obj, raw, prev raw) or None for no-op."""
        if op.kind == "create":
            if current is not None:
                raise AlreadyExists(f'{op.resource} "{op.name}" already exists')
            assert op.obj is not None
            obj = op.obj if op.owned else jsoncodec.loads(_dumps(op.obj))  # detach from the caller's dict
            meta = obj.setdefault("metadata", {})
            if meta.get("name"):
                meta.pop("generateName", None)
            meta["name"] = op.name
            if op.namespace:
                meta["namespace"] = op.namespace
            else:
                meta.pop("namespace", None)
            meta["uid"] = _new_uid()
            meta["creationTimestamp"] = now_rfc3339()
            meta["generation"] = 1
            meta["resourceVersion"] = str(revision)
            meta.pop("deletionTimestamp", None)
            return ADDED, obj, _dumps(obj), None

        if current is None:
            raise NotFound(f'{op.resource} "{op.name}" not found')
        cur_meta = current.obj["metadata"]
        if op.expected_uid is not None and op.expected_uid != cur_meta.get("uid"):
            raise Conflict(
                f'Operation cannot be fulfilled on {op.resource} "{op.name}": '
                f"precondition failed: UID in precondition: {op.expected_uid}, UID in object meta: "
                f"{cur_meta.get('uid')}"
            )
        if op.expected_rv is not None and op.expected_rv != cur_meta.get("resourceVersion"):
            raise Conflict(
                f'Operation cannot be fulfilled on {op.resource} "{op.name}": the object has been '
                "modified; please apply your changes to the latest version and try again"
            )

        if op.kind == "delete":
            if cur_meta.get("finalizers"):
                if cur_meta.get("deletionTimestamp"):
                    return None
                obj = jsoncodec.loads(current.raw)
                obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                obj["metadata"]["resourceVersion"] = str(revision)
                return MODIFIED, obj, _dumps(obj), current.raw
            obj = jsoncodec.loads(current.raw)
            obj["metadata"]["resourceVersion"] = str(revision)
            return DELETED, obj, _dumps(obj), current.raw

        assert op.fn is not None
        new = op.fn(jsoncodec.loads(current.raw))
        if not isinstance(new, dict):
            raise Invalid("update function returned a non-object")
        new = jsoncodec.loads(_dumps(new))
        meta = new.setdefault("metadata", {})
        # Identity and server-owned fields cannot be changed by an update.
        for k in ("uid", "creationTimestamp", "name", "deletionTimestamp"):
            if k in cur_meta:
                meta[k] = cur_meta[k]
            else:
                meta.pop(k, None)
        if op.namespace:
            meta["namespace"] = op.namespace
        else:
            meta.pop("namespace", None)
        gen = int(cur_meta.get("generation", 1))
        if _content(new) != _content(current.obj):
            gen += 1
        meta["generation"] = gen
        meta["resourceVersion"] = cur_meta.get("resourceVersion")
        if new == current.obj:
            return None  # no-op updates write nothing, as in Kubernetes
        meta["resourceVersion"] = str(revision)
        raw = _dumps(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return DELETED, new, raw, current.raw
        return MODIFIED, new, raw, current.raw

    async def _writer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit_batch(batch)
            except asyncio.CancelledError:
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(Unavailable("store closed"))
                raise
            except Exception as e:  # defensive: the writer must survive anything
                log.exception("store writer: unexpected error")
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(StoreError(f"internal store error: {e}"))

    async def _commit_batch(self, batch: builtins.list[_Op]) -> None:
        overlay: dict[tuple[str, Key], _Entry | None] = {}
        rows: list[Row] = []
        events: list[WatchEvent] = []
        done: list[tuple[_Op, str]] = []  # each op and the JSON text it answers with
        rev = self._revision
        for op in batch:
            if op.future.done():  # cancelled before we got to it: do nothing
                continue
            okey = (op.resource, (op.namespace, op.name))
            current = overlay[okey] if okey in overlay else self._data.get(op.resource, {}).get(okey[1])
            try:
                result = self._apply(op, current, rev + 1)
            except StoreError as e:
                op.future.set_exception(e)
                continue
            except Exception as e:  # an update function failed: refuse that write only
                op.future.set_exception(Invalid(f"update rejected: {e}"))
                continue
            if result is None:
                assert current is not None
                done.append((op, current.raw))
                continue
            rev += 1
            etype, obj, raw, prev_raw = result
            rows.append(Row(rev, etype, op.resource, op.namespace, op.name, raw))
            events.append(WatchEvent(etype, op.resource, op.namespace, op.name, rev, raw, prev_raw, obj))
            overlay[okey] = None if etype == DELETED else _Entry(obj, raw, rev)
            done.append((op, raw))
        if rows:
            try:
                started = time.perf_counter()
                await self._run(self._backend.commit, rows, rev)
                self.commit_seconds += time.perf_counter() - started
            except Exception as e:
                log.error("store commit of %d writes failed: %s", len(rows), e)
                for op, _ in done:
                    if not op.future.done():
                        op.future.set_exception(Unavailable(f"store commit failed: {e}"))
                return
            # Committed: apply to memory, publish, then acknowledge (no await in between).
            for (resource, key), entry in overlay.items():
                table = self._data.setdefault(resource, {})
                if entry is None:
                    if table.pop(key, None) is not None:
                        self._sorted_keys[resource] = None
                else:
                    if key not in table:
                        self._sorted_keys[resource] = None
                    table[key] = entry
            self._revision = rev
            self.commits += 1
            self.writes += len(rows)
            self.last_batch_size = len(rows)
            self.max_batch_size = max(self.max_batch_size, len(rows))
            self._hub.publish(events)
        for op, raw in done:
            if not op.future.done():
                op.future.set_result(raw)

    # -- watch ----------------------------------------------------------------------------
    def watch(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        since: int | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        buffer: int | None = None,
    ) -> Watcher:
        """Watch changes with revision > ``since`` (default: from now). Raises Gone if compacted."""
        if self._closed:
            raise Unavailable("store closed")
        predicate = make_predicate(label_selector, field_selector)
        current = self._revision
        if since is None or since > current:
            since = current
        if since < self._compacted:
            raise Gone(
                f"too old resource version: {since} (compacted to {self._compacted}); relist and watch again"
            )
        ns = namespace if namespace else None
        history = None
        covered = self._hub.ring_covers(since, current)
        if not covered:
            backend = self._backend
            start = since

            async def fetch() -> list[WatchEvent]:
                rows = await asyncio.to_thread(backend.history, resource, start, current)
                if rows and rows[0].revision > start + 1 and start < self._compacted:
                    log.info("watch history for %s partly compacted", resource)
                return [
                    WatchEvent(r.type, r.resource, r.namespace, r.name, r.revision, r.value) for r in rows
                ]

            history = fetch
        w = Watcher(self._hub, resource, ns, predicate, buffer or self.watcher_buffer, since, history)
        if covered:
            w.add_backlog(self._hub.ring_since(resource, since))
        self._hub.add(w)
        return w

    # -- compaction -----------------------------------------------------------------------
    async def compact(self, keep: int | None = None) -> int:
        """Drop log history older than the window, in short steps interleaved with writes."""
        window = self.compaction_window if keep is None else keep
        target = self._revision - window
        while target > self._compacted and not self._closed:
            self._compacted = await self._run(
                self._backend.compact_step, target, self._compacted, self.compaction_step_rows
            )
            await asyncio.sleep(0)
        return self._compacted

    async def _compactor(self) -> None:
        while True:
            await asyncio.sleep(self.compaction_interval)
            try:
                t0 = time.monotonic()
                before = self._compacted
                after = await self.compact()
                if after != before:
                    log.debug("compacted %d..%d in %.1f ms", before, after, (time.monotonic() - t0) * 1e3)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("compaction failed; will retry")
