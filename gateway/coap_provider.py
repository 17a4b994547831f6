"""The CoAP device provider: Workloads -> per-device desired documents; reports -> status.

Implements :class:`~.provider.WorkloadProvider`, :class:`~.provider.DeviceSource` and
:class:`~.provider.NodeProvider`. The CoAP resources (gateway/coap_server.py) call its
device-facing half: :meth:`register`, :meth:`desired`, :meth:`blob`, :meth:`report`.

Per device it keeps the workload entries (plain CBOR-ready objects) and the encoded document
with its gen and ETag. ``gen`` changes only when the entries change (a content hash decides),
and documents are persisted, so restarts and relists never make a device restart anything.
Until the informers have synced (:meth:`go_live`), documents loaded from the local store are
served unchanged: a half-built document would remove workloads from devices.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from fleetlet.hardware.quantity import parse_bytes, parse_cpu_millis

from .devices import DeviceState, DeviceTable, Refusal
from .informer import slim_object
from .localstore import LocalStore, StoredDoc
from .report_status import delivery_failed_fields, device_conditions, workload_fields
from .status_sync import StatusSync, now_rfc3339, object_key
from .translate import (
    RefResolver,
    TranslateError,
    content_hash,
    encode_doc,
    etag_of,
    referenced_blobs,
    sort_entries,
    translate_workload,
)
from .wire import Hello, LogBatch, Registered, Report, WireError, decode_value

log = logging.getLogger(__name__)

Obj = dict[str, Any]
EMPTY_DOC = encode_doc(0, [])
BLOB_CACHE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class DocView:
    gen: int
    etag: bytes
    doc: bytes


class _Wl:
    """What the provider remembers of one bound Workload: the whole object only while it may be
    translated again (it reads Secrets or ConfigMaps), else its identity and status."""

    __slots__ = ("device", "generation", "has_refs", "key", "obj", "runtime")

    def __init__(self, obj: Obj, device: str) -> None:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        self.obj = obj
        self.device = device
        self.key = object_key("workloads", meta.get("namespace") or "default", str(meta.get("name")))
        self.generation = int(meta.get("generation") or 1)
        self.runtime = str(spec.get("runtime") or "")
        self.has_refs = False


class EventSink(Protocol):
    """Records Events about devices (gateway/upstream.py implements it)."""

    async def device_event(self, device: str, etype: str, reason: str, message: str) -> None: ...


class LogEvents:
    """An EventSink that only logs (unit tests, or a gateway without an API server)."""

    async def device_event(self, device: str, etype: str, reason: str, message: str) -> None:
        log.info("event %s %s: %s", device, reason, message)


class CoapDeviceProvider:
    def __init__(
        self,
        store: LocalStore,
        status: StatusSync,
        resolver: RefResolver,
        *,
        devices: DeviceTable | None = None,
        events: EventSink | None = None,
    ) -> None:
        self.store = store
        self.status = status
        self.resolver = resolver
        self.devices = devices if devices is not None else DeviceTable()
        self.events: EventSink = events if events is not None else LogEvents()
        self.live = False
        self._docs: dict[str, DocView] = {}
        self._hashes: dict[str, bytes] = {}
        self._entries: dict[str, dict[str, dict[int, Any]]] = {}
        self._wls: dict[str, _Wl] = {}  # by uid
        # uid -> (device, status key, runtime) from stored documents: reports map to workloads
        # even when the gateway restarted without its API server.
        self._stored: dict[str, tuple[str, str, str]] = {}
        self._capacity: dict[str, tuple[int, int, int]] = {}
        self._blob_cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._blob_cache_size = 0
        self._lock = asyncio.Lock()
        # Set by the CoAP layer: a device's document changed, notify its observers.
        self.on_doc_changed: Callable[[str], None] = lambda device: None
        # Set by the upstream: Online devices or capacity changed.
        self.on_node_changed: Callable[[], None] = lambda: None
        # Set by the upstream: whether a workload's Secrets/ConfigMaps are all watched.
        self.refs_watched: Callable[[str], bool] = lambda uid: False

    async def load(self) -> None:
        """Documents and credentials from the local store: what is served before the API answers."""
        for d in await self.store.load_docs():
            self._docs[d.device] = DocView(d.gen, d.etag, d.doc)
            self._hashes[d.device] = d.content_hash
            try:
                entries = decode_value(d.doc, max_size=None).get(2) or []
                self._entries[d.device] = {str(e[1]): e for e in entries}
                for e in entries:
                    ns, _, name = str(e[2]).partition("/")
                    self._stored[str(e[1])] = (d.device, object_key("workloads", ns, name), str(e[4]))
            except (WireError, AttributeError, KeyError, TypeError):
                log.warning("stored document of %s is unreadable; it will be rebuilt", d.device)
        for name, cred in (await self.store.load_devices()).items():
            self.devices.upsert(name, cred)
        log.info("loaded %d devices and %d desired documents", len(self.devices), len(self._docs))

    # ---- WorkloadProvider ------------------------------------------------------------------

    async def create_workload(self, workload: Obj) -> None:
        await self._apply(workload, force=False)

    async def update_workload(self, workload: Obj) -> None:
        await self._apply(workload, force=False)

    async def delete_workload(self, workload: Obj) -> None:
        uid = str((workload.get("metadata") or {}).get("uid") or "")
        async with self._lock:
            info = self._wls.pop(uid, None)
            device = info.device if info else str((workload.get("spec") or {}).get("deviceName") or "")
            if self._entries.get(device, {}).pop(uid, None) is not None and self.live:
                await self._rebuild(device)
            if info is not None:
                self.status.forget(info.key)

    async def get_workload_status(self, namespace: str, name: str) -> Obj | None:
        key = object_key("workloads", namespace, name)
        for info in self._wls.values():
            if info.key == key:
                return self._workload_status(info)
        return None

    async def list_workloads(self) -> list[Obj]:
        """The bound workloads: identity (the whole object for those that use references); their
        status is in the Workload informer's cache (:meth:`get_workload_status`)."""
        return [info.obj for info in self._wls.values()]

    async def _apply(self, workload: Obj, *, force: bool) -> None:
        meta, spec = workload.get("metadata") or {}, workload.get("spec") or {}
        uid, device = str(meta.get("uid") or ""), str(spec.get("deviceName") or "")
        if not uid or not device:
            return
        if meta.get("deletionTimestamp"):
            await self.delete_workload(workload)
            return
        async with self._lock:
            old = self._wls.get(uid)
            info = _Wl(workload, device)
            if old is not None:
                info.has_refs = old.has_refs
            self._wls[uid] = info
            try:
                await self._translate(info, workload, uid, device, old, force=force)
            finally:
                if not info.has_refs:  # only refresh_refs translates it again from info.obj
                    info.obj = slim_object(workload, status=False)

    async def _translate(
        self, info: _Wl, workload: Obj, uid: str, device: str, old: _Wl | None, *, force: bool
    ) -> None:
        current = self._entries.get(device, {}).get(uid)
        if not force and old is not None and old.generation == info.generation and current is not None:
            return  # a status or metadata change: the device's entry is the same
        try:
            translated = await translate_workload(workload, self.resolver)
        except TranslateError as e:
            log.warning("workload %s cannot be delivered: %s", info.key, e.message)
            current_status = {**(workload.get("status") or {}), **self.status.last_known(info.key)}
            self.status.update(info.key, delivery_failed_fields(current_status, e.reason, e.message))
            info.has_refs = True  # kept whole: a Secret/ConfigMap that appears may fix it
            return  # the device keeps what it had
        except Exception as e:
            if current is None:
                log.warning("workload %s: reading its references failed (%s); retrying later", info.key, e)
            info.has_refs = True  # retried by refresh_refs
            return
        info.has_refs = bool(translated.refs)
        await self.store.put_blobs(translated.blobs)
        self._entries.setdefault(device, {})[uid] = translated.entry
        if self.live:
            await self._rebuild(device)

    async def refresh_refs(self, uids: Iterable[str] | None = None) -> None:
        """Translate again (re-reading Secrets/ConfigMaps) these workloads, or with ``None`` those
        whose references the upstream does not watch (the fallback poll)."""
        for uid in list(self._wls) if uids is None else list(uids):
            info = self._wls.get(uid)
            if info is not None and info.has_refs and (uids is not None or not self.refs_watched(uid)):
                await self._apply(info.obj, force=True)

    async def go_live(self, known_uids: set[str] | None = None) -> None:
        """The informers have synced: drop entries of workloads that are gone, publish changes."""
        async with self._lock:
            known = set(self._wls) if known_uids is None else known_uids
            for entries in self._entries.values():
                for uid in [u for u in entries if u not in known]:
                    del entries[uid]
            self.live = True
            self._stored.clear()
            for device in set(self._entries) | set(self._docs):
                await self._rebuild(device)
            keep: set[bytes] = set()
            for entries in self._entries.values():
                keep |= referenced_blobs(list(entries.values()))
            dropped = await self.store.gc_blobs(keep)
            if dropped:
                log.info("removed %d blobs no document refers to", dropped)

    async def _rebuild(self, device: str) -> None:
        entries = sort_entries(list(self._entries.get(device, {}).values()))
        digest = content_hash(entries)
        old = self._docs.get(device)
        if self._hashes.get(device) == digest or (old is None and not entries):
            return
        gen = (old.gen + 1) if old else 1
        try:
            doc = encode_doc(gen, entries)
        except WireError as e:
            log.error(
                "desired document of %s is not deliverable (%s); the device keeps the last one", device, e
            )
            return
        view = DocView(gen, etag_of(doc), doc)
        await self.store.put_doc(StoredDoc(device, gen, view.etag, digest, doc))
        self._docs[device] = view
        self._hashes[device] = digest
        log.info("device %s: desired gen %d (%d workloads)", device, gen, len(entries))
        self.on_doc_changed(device)

    # ---- DeviceSource --------------------------------------------------------------------

    async def upsert_device(self, device: Obj) -> None:
        meta, spec, status = (
            device.get("metadata") or {},
            device.get("spec") or {},
            device.get("status") or {},
        )
        name = str(meta.get("name") or "")
        if not name:
            return
        cred = str(spec.get("credentialHash") or "")
        if self.devices.upsert(name, cred):
            await self.store.put_device(name, cred)
        d = self.devices.get(name)
        if d is not None and status.get("phase") == "Online" and not d.online and d.last_seen == 0.0:
            # Online per the server but not heard by this gateway yet: start its silence clock.
            d.online = True
            d.last_seen = self.devices.clock()
        cap = spec.get("capacity") or {}
        try:
            triple = (
                parse_bytes(cap["memory"]) if "memory" in cap else 0,
                parse_cpu_millis(cap["cpu"]) if "cpu" in cap else 0,
                parse_bytes(cap["flash"]) if "flash" in cap else 0,
            )
        except (ValueError, ArithmeticError):
            triple = (0, 0, 0)
        if self._capacity.get(name) != triple:
            self._capacity[name] = triple
            self.on_node_changed()

    async def delete_device(self, device: Obj) -> None:
        name = str((device.get("metadata") or {}).get("name") or "")
        self.devices.remove(name)
        self._capacity.pop(name, None)
        self._docs.pop(name, None)
        self._hashes.pop(name, None)
        self._entries.pop(name, None)
        self.status.forget(object_key("devices", None, name))
        await self.store.delete_device(name)
        self.on_node_changed()

    # ---- NodeProvider -------------------------------------------------------------------

    def capacity(self) -> Obj:
        mem = cpu = flash = 0
        for d in self.devices:
            if d.online:
                m, c, f = self._capacity.get(d.name, (0, 0, 0))
                mem, cpu, flash = mem + m, cpu + c, flash + f
        return {"memory": mem, "cpu": f"{cpu}m", "flash": flash}

    def device_count(self) -> tuple[int, int]:
        return len(self.devices), self.devices.online_count()

    def conditions(self) -> list[Obj]:
        return []

    async def ping(self) -> None:
        return None

    # ---- device-facing half (called by the CoAP resources) ----------------------------

    async def register(self, ep: str, hello: Hello, host: str) -> Registered | Refusal:
        result = self.devices.register(ep, hello.token, host)
        if isinstance(result, Refusal):
            log.warning("registration of %r from %s refused: %s", ep, host, result.message)
            await self.events.device_event(ep, "Warning", "RegistrationRefused", result.message)
            return result
        key = object_key("devices", None, ep)
        fields: Obj = {"firmware": hello.firmware, "bootCount": hello.boot_count}
        self._seen(result, key, fields)
        self.status.update(key, fields, {"lastSeen": now_rfc3339(), "freeMemory": hello.mem_free})
        log.info(
            "device %s registered from %s (firmware %s, boot %d)", ep, host, hello.firmware, hello.boot_count
        )
        return Registered(self.devices.lifetime, f"/rd/{ep}", int(time.time()))

    def authorize(self, ep: str, host: str) -> DeviceState | Refusal:
        return self.devices.authorize(ep, host)

    def desired(self, ep: str) -> DocView:
        return self._docs.get(ep) or DocView(0, etag_of(EMPTY_DOC), EMPTY_DOC)

    def touch(self, d: DeviceState) -> None:
        """A poll of the desired document also proves the device alive."""
        key = object_key("devices", None, d.name)
        fields: Obj = {}
        self._seen(d, key, fields)
        self.status.update(key, fields, {"lastSeen": now_rfc3339()})

    async def blob(self, sha256: bytes) -> bytes | None:
        data = self._blob_cache.get(sha256)
        if data is not None:
            self._blob_cache.move_to_end(sha256)
            return data
        data = await self.store.get_blob(sha256)
        if data is not None and len(data) <= BLOB_CACHE_BYTES // 4:
            self._blob_cache[sha256] = data
            self._blob_cache_size += len(data)
            while self._blob_cache_size > BLOB_CACHE_BYTES:
                _, old = self._blob_cache.popitem(last=False)
                self._blob_cache_size -= len(old)
        return data

    def report(self, d: DeviceState, report: Report) -> None:
        key = object_key("devices", None, d.name)
        fields: Obj = {}
        if report.error:
            fields["lastError"] = report.error
        self._seen(d, key, fields)
        volatile: Obj = {"lastSeen": now_rfc3339()}
        if report.heap_free is not None:
            volatile["freeMemory"] = report.heap_free
        if report.uptime is not None:
            volatile["uptime"] = report.uptime
        self.status.update(key, fields, volatile)
        for ws in report.workloads:
            info = self._wls.get(ws.uid)
            if info is not None:
                device, wkey, runtime = info.device, info.key, info.runtime
            elif not self.live and ws.uid in self._stored:
                device, wkey, runtime = self._stored[ws.uid]
            else:
                device = ""
            if device != d.name:
                log.debug("device %s reports unknown workload %s", d.name, ws.uid)
                continue
            current = self._workload_status(info) if info is not None else self.status.last_known(wkey)
            self.status.update(wkey, workload_fields(ws, current, runtime))

    def logs(self, d: DeviceState, batch: LogBatch) -> None:
        info = self._wls.get(batch.uid)
        name = info.key if info else batch.uid
        for line in batch.lines[-20:]:
            log.debug("[%s %s] %s", d.name, name, line.text)

    def _seen(self, d: DeviceState, key: str, fields: Obj) -> None:
        if self.devices.seen(d):
            current = self._device_status(key)
            fields["phase"] = "Online"
            fields["conditions"] = device_conditions(current, True)
            self.on_node_changed()

    def _workload_status(self, info: _Wl) -> Obj:
        """The server's status of a workload (the informer's cache) with what is pending on top."""
        _, ns, name = info.key.split("/", 2)
        server = self.status.writer.current_status("workloads", ns, name)
        if server is None:  # not in the cache (yet): the status the object came with
            server = info.obj.get("status") or {}
        return {**server, **self.status.last_known(info.key)}

    def _device_status(self, key: str) -> Obj:
        writer = self.status.writer
        _, _, name = key.split("/", 2)
        return {**(writer.current_status("devices", None, name) or {}), **self.status.last_known(key)}

    def sweep(self) -> None:
        """Devices silent for ``offline_after`` go Offline."""
        gone = self.devices.sweep()
        for d in gone:
            key = object_key("devices", None, d.name)
            log.info("device %s is silent; marking it Offline", d.name)
            current = self._device_status(key)
            self.status.update(key, {"phase": "Offline", "conditions": device_conditions(current, False)})
        if gone:
            self.on_node_changed()


__all__ = ["EMPTY_DOC", "CoapDeviceProvider", "DocView", "EventSink", "LogEvents"]
