"""The gateway's upstream half: its Gateway object, Lease, informers, references and Events.

- Registers the Gateway (create, or patch its labels), renews ``fleetlet-node-lease/<name>``
  every ``lease_interval`` seconds and reports capacity summed over the Online devices.
- Informers (list, then watch; resume from the last resourceVersion; relist on 410) over the
  Devices with ``spec.gateway=<name>`` and the Workloads (all namespaces) with
  ``spec.gatewayName=<name>``; their callbacks drive the provider.
- Watches each Secret and ConfigMap that a bound Workload references (:class:`RefWatches`): one
  list+watch per object with ``fieldSelector=metadata.name=<name>`` in its namespace, as the
  kubelet's Watch change-detection strategy, started with the first reference and stopped with
  the last; a change rebuilds the workloads that use it. Translation reads them with a get.
- Records Events (rate-limited per device and reason); while the server is unreachable they
  are queued in the local store and delivered after reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fleetlet.server.client.references import workload_references

from .localstore import LocalStore
from .report_status import set_condition
from .status_sync import StatusSync, now_rfc3339, object_key

if TYPE_CHECKING:
    from .apiclient import ApiClient
    from .informer import Informer
    from .provider import GatewayProvider

log = logging.getLogger(__name__)

Obj = dict[str, Any]
API_VERSION = "fleetlet.io/v1"
NODE_LEASE_NAMESPACE = "fleetlet-node-lease"
EVENTS_NAMESPACE = "default"
VERSION = "fleetlet-gateway/0.1"
# Watches on referenced Secrets/ConfigMaps at most (see RefWatches); past it, the rest are polled.
MAX_REF_WATCHES = 100


def _is_connection_failure(exc: BaseException) -> bool:
    from fleetlet.server.client.errors import ConnectionFailed

    return isinstance(exc, ConnectionFailed)


class Upstream:
    def __init__(
        self,
        api: ApiClient,
        store: LocalStore,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        coap_address: str = "127.0.0.1:5683",
        lease_interval: float = 10.0,
        lease_duration: int = 40,
        event_interval: float = 30.0,
        max_ref_watches: int = MAX_REF_WATCHES,
    ) -> None:
        self.api = api
        self.store = store
        self.name = name
        self.labels = labels or {}
        self.coap_address = coap_address
        self.lease_interval = lease_interval
        self.lease_duration = lease_duration
        self.event_interval = event_interval
        self.online = False
        self.synced = asyncio.Event()
        self._gateway_status: Obj = {}
        self._event_last: dict[tuple[str, str], float] = {}
        self.status: StatusSync | None = None
        self.provider: GatewayProvider | None = None
        self.devices: Informer | None = None
        self.workloads: Informer | None = None
        self.refs = RefWatches(api, self._refs_changed, max_watches=max_ref_watches)

    # ---- StatusWriter -------------------------------------------------------------------

    async def patch_status(self, plural: str, namespace: str | None, name: str, status: Obj) -> None:
        result = await self.api.patch_status(plural, name, {"status": status}, namespace)
        if plural == "gateways":
            self._gateway_status = dict(result.get("status") or {})

    def current_status(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        if plural == "gateways":
            return self._gateway_status
        informer = self.devices if plural == "devices" else self.workloads
        if informer is None:
            return None
        obj = informer.get(name, namespace)
        return None if obj is None else dict(obj.get("status") or {})

    # ---- RefResolver --------------------------------------------------------------------

    async def secret(self, namespace: str, name: str) -> Obj | None:
        return await self._read_ref("secret", namespace, name)

    async def configmap(self, namespace: str, name: str) -> Obj | None:
        return await self._read_ref("configmap", namespace, name)

    async def _read_ref(self, kind: str, namespace: str, name: str) -> Obj | None:
        key = ref_key(kind, namespace, name)
        if key in self.refs.fresh:  # the object a watch event just brought: no round trip
            return self.refs.fresh[key]
        obj = await self._get_or_none(kind + "s", namespace, name)
        self.refs.served(key, obj)
        return obj

    async def _get_or_none(self, plural: str, namespace: str, name: str) -> Obj | None:
        from fleetlet.server.client.errors import ApiError

        try:
            return await self.api.get(plural, name, namespace)
        except ApiError as e:
            if e.is_not_found:
                return None
            raise

    # ---- EventSink ----------------------------------------------------------------------

    async def device_event(self, device: str, etype: str, reason: str, message: str) -> None:
        now = time.monotonic()
        last = self._event_last.get((device, reason))
        if last is not None and now - last < self.event_interval:
            return
        self._event_last[(device, reason)] = now
        if len(self._event_last) > 4096:
            self._event_last.clear()
        stamp = now_rfc3339()
        body: Obj = {
            "apiVersion": API_VERSION,
            "kind": "Event",
            "metadata": {"generateName": f"gateway-{self.name}-", "namespace": EVENTS_NAMESPACE},
            "involvedObject": {"kind": "Device", "name": device, "apiVersion": API_VERSION},
            "reason": reason,
            "message": message,
            "type": etype,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": "fleetlet-gateway", "host": self.name},
            "reportingComponent": "fleetlet-gateway",
        }
        try:
            await self.api.create(body, EVENTS_NAMESPACE)
        except Exception as e:
            if _is_connection_failure(e):
                await self.store.queue_event(body)
            else:
                log.warning("recording event %s for %s failed: %s", reason, device, e)

    async def _deliver_queued_events(self) -> None:
        for event_id, body in await self.store.take_events():
            try:
                await self.api.create(body, EVENTS_NAMESPACE)
            except Exception as e:
                if _is_connection_failure(e):
                    return
                log.warning("queued event dropped: %s", e)
            await self.store.delete_event(event_id)

    # ---- Gateway object and Lease --------------------------------------------------------

    async def ensure_gateway(self) -> None:
        from fleetlet.server.client.errors import ApiError

        try:
            gw = await self.api.get("gateways", self.name)
        except ApiError as e:
            if not e.is_not_found:
                raise
            body: Obj = {
                "apiVersion": API_VERSION,
                "kind": "Gateway",
                "metadata": {"name": self.name, "labels": self.labels},
                "spec": {},
            }
            try:
                gw = await self.api.create(body)
                log.info("created Gateway %s", self.name)
            except ApiError as e2:
                if not e2.is_conflict:
                    raise
                gw = await self.api.get("gateways", self.name)
        have = (gw.get("metadata") or {}).get("labels") or {}
        if self.labels and any(have.get(k) != v for k, v in self.labels.items()):
            gw = await self.api.patch("gateways", self.name, {"metadata": {"labels": self.labels}})
        self._gateway_status = dict(gw.get("status") or {})
        self.node_changed()

    async def renew_lease(self) -> None:
        from fleetlet.server.client.errors import ApiError

        stamp = now_rfc3339()
        try:
            await self.api.patch(
                "leases",
                self.name,
                {"spec": {"renewTime": stamp, "leaseDurationSeconds": self.lease_duration}},
                NODE_LEASE_NAMESPACE,
            )
        except ApiError as e:
            if not e.is_not_found:
                raise
            body: Obj = {
                "apiVersion": API_VERSION,
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": NODE_LEASE_NAMESPACE},
                "spec": {
                    "holderIdentity": self.name,
                    "leaseDurationSeconds": self.lease_duration,
                    "acquireTime": stamp,
                    "renewTime": stamp,
                },
            }
            await self.api.create(body, NODE_LEASE_NAMESPACE)

    def node_changed(self) -> None:
        """Recompute the Gateway's status (capacity over Online devices) into the status sync."""
        if self.status is None or self.provider is None:
            return
        total, online = self.provider.device_count()
        cap = self.provider.capacity()
        conditions = set_condition(
            list(self._gateway_status.get("conditions") or []),
            "Ready",
            "True",
            "GatewayReady",
            "serving devices",
        )
        fields: Obj = {
            "conditions": conditions + self.provider.conditions(),
            "capacity": cap,
            "allocatable": cap,
            "deviceCount": total,
            "onlineDevices": online,
            "addresses": [{"type": "CoAP", "address": self.coap_address}],
            "version": VERSION,
        }
        self.status.update(object_key("gateways", None, self.name), fields)

    async def _lease_loop(self) -> None:
        registered = False
        while True:
            try:
                if not registered:
                    await self.ensure_gateway()
                    registered = True
                await self.renew_lease()
                if not self.online:
                    log.info("connected to the API server at %s", self.api.server)
                    self.online = True
                    await self._deliver_queued_events()
                    if self.status is not None:
                        await self.status.flush()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if self.online or not registered:
                    log.warning("API server: %s", e)
                self.online = False
            await asyncio.sleep(self.lease_interval)

    # ---- informers -----------------------------------------------------------------------

    def attach(self, provider: GatewayProvider, status: StatusSync) -> None:
        from .informer import Informer, slim_object

        self.provider = provider
        self.status = status
        provider.on_node_changed = self.node_changed
        provider.refs_watched = self.refs.watched
        self.devices = Informer(
            self.api,
            "devices",
            field_selector=f"spec.gateway={self.name}",
            on_add=provider.upsert_device,
            on_update=lambda old, new: provider.upsert_device(new),
            on_delete=provider.delete_device,
            slim=slim_object,
        )
        self.workloads = Informer(
            self.api,
            "workloads",
            field_selector=f"spec.gatewayName={self.name}",
            on_add=self._workload_added,
            on_update=lambda old, new: self._workload_updated(new),
            on_delete=self._workload_deleted,
            slim=slim_object,
        )

    async def _workload_added(self, workload: Obj) -> None:
        assert self.provider is not None
        self.refs.set_refs(*_workload_refs(workload))  # before translating: see RefWatches.served
        await self.provider.create_workload(workload)

    async def _workload_updated(self, workload: Obj) -> None:
        assert self.provider is not None
        self.refs.set_refs(*_workload_refs(workload))
        await self.provider.update_workload(workload)

    async def _workload_deleted(self, workload: Obj) -> None:
        assert self.provider is not None
        await self.provider.delete_workload(workload)
        self.refs.set_refs(_uid(workload), frozenset())

    async def _refs_changed(self, uids: set[str]) -> None:
        if self.provider is not None:
            await self.provider.refresh_refs(uids)

    async def run(self) -> None:
        assert self.devices is not None and self.workloads is not None and self.provider is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.refs.run())
            tg.create_task(self._lease_loop())
            tg.create_task(self.devices.run())
            tg.create_task(self.workloads.run())
            await self.devices.wait_synced()
            await self.workloads.wait_synced()
            uids = {str((o.get("metadata") or {}).get("uid")) for o in self.workloads.items()}
            await self.provider.go_live(uids)
            self.synced.set()
            log.info(
                "synced: %d devices, %d workloads bound to gateway %s",
                len(self.devices.cache),
                len(self.workloads.cache),
                self.name,
            )
            tg.create_task(self._save_versions())

    async def _save_versions(self) -> None:
        saved: dict[str, str | None] = {}
        while True:
            await asyncio.sleep(5.0)
            for name, inf in (("devices", self.devices), ("workloads", self.workloads)):
                rv = inf.resource_version if inf is not None else None
                if rv and saved.get(name) != rv:
                    with contextlib.suppress(Exception):
                        await self.store.set_meta(f"resourceVersion/{name}", rv)
                        saved[name] = rv


# ---- referenced Secrets and ConfigMaps ------------------------------------------------------


def ref_key(kind: str, namespace: str, name: str) -> str:
    """``secret:<ns>/<name>`` or ``configmap:<ns>/<name>``, as gateway/translate.py names what it read."""
    return f"{kind}:{namespace}/{name}"


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _rv(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def _workload_refs(workload: Obj) -> tuple[str, frozenset[str]]:
    """(uid, ref keys) of a bound Workload: what the server lets this gateway read of it."""
    meta = workload.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return _uid(workload), frozenset()
    ns = str(meta.get("namespace") or "default")
    secrets, configmaps = workload_references(workload.get("spec") or {})
    keys = [ref_key("secret", ns, n) for n in secrets] + [ref_key("configmap", ns, n) for n in configmaps]
    return _uid(workload), frozenset(keys)


class _Watch:
    __slots__ = ("informer", "synced", "task")

    def __init__(self, informer: Informer) -> None:
        self.informer = informer
        self.synced = False
        self.task: asyncio.Task[None] | None = None


class RefWatches:
    """One list+watch per Secret/ConfigMap the bound Workloads reference, the way the kubelet's
    Watch change-detection strategy does: ``fieldSelector=metadata.name=<name>`` in the object's
    namespace (all a gateway token may list or watch of them, server/auth/rbac.py), started when
    the first bound Workload references the object and stopped when the last reference goes.

    A change calls ``on_change(uids)`` with the Workloads that reference the object; while that
    runs, ``fresh`` holds the object the event brought (``None``: deleted), so rebuilding a
    thousand Workloads that share a Secret reads it once. Each watch is the shared Informer with
    the gateway's slim transform (its cache keeps name and resourceVersion, not the data) on one
    HTTP connection of its own. At most ``max_watches`` run; references past that are not
    watched (:meth:`watched` says so) and the provider's fallback poll re-reads them, and so it
    does for a watch that has not synced (refused, or the server down).
    """

    def __init__(
        self,
        api: ApiClient,
        on_change: Callable[[set[str]], Awaitable[None]],
        *,
        max_watches: int = MAX_REF_WATCHES,
    ) -> None:
        self.api = api
        self.on_change = on_change
        self.max_watches = max_watches
        self.fresh: dict[str, Obj | None] = {}
        self._refs: dict[str, frozenset[str]] = {}  # workload uid -> ref keys
        self._users: dict[str, set[str]] = {}  # ref key -> workload uids
        self._watches: dict[str, _Watch] = {}
        # resourceVersions ("" = absent) that gets read of a watched key before its watch synced:
        # if the first list shows the same one, nobody needs rebuilding.
        self._served: dict[str, set[str]] = {}
        self._running = False

    # ---- what is referenced ------------------------------------------------------------

    def set_refs(self, uid: str, keys: frozenset[str]) -> None:
        """``uid`` now references ``keys`` (empty: it is gone)."""
        if not uid:
            return
        old = self._refs.get(uid, frozenset())
        if keys == old:
            return
        if keys:
            self._refs[uid] = keys
        else:
            self._refs.pop(uid, None)
        for key in keys - old:
            self._users.setdefault(key, set()).add(uid)
            self._start(key)
        for key in old - keys:
            users = self._users.get(key)
            if users is not None:
                users.discard(uid)
                if not users:
                    del self._users[key]
                    self._stop(key)
        self._fill()

    def watched(self, uid: str) -> bool:
        """Whether every object ``uid`` references has a watch that has synced."""
        for key in self._refs.get(uid, ()):
            w = self._watches.get(key)
            if w is None or not w.synced:
                return False
        return True

    def served(self, key: str, obj: Obj | None) -> None:
        """A translation read ``key`` with a get (and got ``obj``)."""
        w = self._watches.get(key)
        if w is not None and not w.synced:
            self._served.setdefault(key, set()).add(_rv(obj))

    @property
    def keys(self) -> list[str]:
        """The objects watched right now (observability and tests)."""
        return sorted(self._watches)

    # ---- the watches -------------------------------------------------------------------

    def _start(self, key: str) -> None:
        if key in self._watches:
            return
        if len(self._watches) >= self.max_watches:
            log.warning(
                "%d Secrets/ConfigMaps watched already: %s is polled instead", len(self._watches), key
            )
            return
        from .informer import Informer, slim_object

        kind, _, rest = key.partition(":")
        namespace, _, name = rest.partition("/")
        inf = Informer(
            self.api,
            kind + "s",
            namespace,
            field_selector=f"metadata.name={name}",
            slim=lambda obj: slim_object(obj, status=False),
        )
        w = _Watch(inf)
        inf.add_handlers(
            lambda obj: self._event(key, w, obj),
            lambda old, new: self._event(key, w, new),
            lambda obj: self._event(key, w, None),
        )
        self._watches[key] = w
        if self._running:
            w.task = asyncio.create_task(self._run_one(key, w), name=f"watch-{key}")
        log.debug("watching %s", key)

    def _stop(self, key: str) -> None:
        w = self._watches.pop(key, None)
        self._served.pop(key, None)
        if w is not None:
            if w.task is not None:
                w.task.cancel()
            log.debug("stopped watching %s", key)

    def _fill(self) -> None:
        """Start watches for references past the cap once there is room for them."""
        if len(self._watches) < self.max_watches and len(self._users) > len(self._watches):
            for key in [k for k in self._users if k not in self._watches]:
                if len(self._watches) >= self.max_watches:
                    break
                self._start(key)

    async def _run_one(self, key: str, w: _Watch) -> None:
        inf = w.informer
        runner = asyncio.create_task(inf.run(), name=f"informer-{key}")
        try:
            await inf.wait_synced()
            w.synced = True
            _, _, name = key.partition("/")
            now = _rv(inf.get(name, inf.namespace))
            if self._served.pop(key, None) != {now}:
                # Changed (or first read by none) between the translations' gets and the list.
                await self._changed(key, None, fresh=False)
            await runner
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner

    async def _event(self, key: str, w: _Watch, obj: Obj | None) -> None:
        if not w.synced or self._watches.get(key) is not w:
            return  # the first list: _run_one compares it with what was read
        await self._changed(key, obj, fresh=True)

    async def _changed(self, key: str, obj: Obj | None, *, fresh: bool) -> None:
        uids = set(self._users.get(key, ()))
        if not uids:
            return
        log.info("%s changed: rebuilding %d workloads", key, len(uids))
        if fresh:
            self.fresh[key] = obj
        try:
            await self.on_change(uids)
        finally:
            if fresh:
                self.fresh.pop(key, None)

    async def run(self) -> None:
        """Run the watches asked for, now and later, until cancelled."""
        self._running = True
        try:
            for key, w in self._watches.items():
                if w.task is None:
                    w.task = asyncio.create_task(self._run_one(key, w), name=f"watch-{key}")
            await asyncio.Event().wait()
        finally:
            self._running = False
            tasks = [w.task for w in self._watches.values() if w.task is not None]
            for w in self._watches.values():
                w.task = None
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
