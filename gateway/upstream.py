"""The gateway's upstream half: its Gateway object, Lease, informers, references and Events.

- Registers the Gateway (create, or patch its labels), renews ``fleetlet-node-lease/<name>``
  every ``lease_interval`` seconds and reports capacity summed over the Online devices.
- Informers (list, then watch; resume from the last resourceVersion; relist on 410) over the
  Devices with ``spec.gateway=<name>`` and the Workloads (all namespaces) with
  ``spec.gatewayName=<name>``; their callbacks drive the provider.
- Reads referenced Secrets and ConfigMaps on demand (a gateway token may get, not watch them).
- Records Events (rate-limited per device and reason); while the server is unreachable they
  are queued in the local store and delivered after reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

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
        return await self._get_or_none("secrets", namespace, name)

    async def configmap(self, namespace: str, name: str) -> Obj | None:
        return await self._get_or_none("configmaps", namespace, name)

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
            on_add=provider.create_workload,
            on_update=lambda old, new: provider.update_workload(new),
            on_delete=provider.delete_workload,
            slim=slim_object,
        )

    async def run(self) -> None:
        assert self.devices is not None and self.workloads is not None and self.provider is not None
        async with asyncio.TaskGroup() as tg:
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
