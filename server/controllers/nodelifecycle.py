"""Node lifecycle: gateway leases, device reachability and eviction.

- A gateway whose Lease (``fleetlet-node-lease/<gateway>``) is older than renewTime +
  leaseDurationSeconds + grace gets Ready=False (reason NodeStatusUnknown); its devices go Unknown.
- A device whose ``status.lastSeen`` is older than ``device_grace`` goes Offline.
- Workloads of Replicas-mode Deployments on a device lost for ``eviction_timeout`` are deleted
  (the deployment controller then creates replacements the scheduler places elsewhere).
  EveryDevice workloads and workloads no controller owns stay: they wait for their device.
- A device that comes back only gets its status back. Workloads are never touched on reconnect
  (unlike KubeEdge, which recreates pods), so nothing restarts needlessly.

This runs as a periodic monitor (like Kubernetes' monitorNodeHealth) over informer caches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from fleetlet.server.client import ApiClient, ApiError, SharedInformers

from .base import Controller
from .deployment import LOST_PHASES, controller_owner, set_condition
from .events import NORMAL, WARNING, EventRecorder
from .rollout import condition, parse_time

log = logging.getLogger(__name__)

Obj = dict[str, Any]

NODE_LEASE_NAMESPACE = "fleetlet-node-lease"
REASON_GATEWAY_LOST = "NodeStatusUnknown"
REASON_GATEWAY_BACK = "LeaseRenewed"
REASON_DEVICE_NOT_SEEN = "DeviceNotSeen"
REASON_GATEWAY_DOWN = "GatewayNotReady"
REASON_DEVICE_SEEN = "DeviceSeen"
OUR_DEVICE_REASONS = frozenset({REASON_DEVICE_NOT_SEEN, REASON_GATEWAY_DOWN})
# A workload tolerating this NoExecute taint key chooses its own eviction timeout (or none).
UNREACHABLE_TAINT = "fleetlet.io/unreachable"


@dataclass
class LifecycleOptions:
    device_grace: float = 60.0  # lastSeen older than this: Offline
    eviction_timeout: float = 300.0  # lost this long: evict Replicas-mode workloads
    lease_grace: float = 2.0  # slack past renewTime + leaseDurationSeconds
    startup_grace: float = 60.0  # a gateway that never renewed a Lease gets this long from creation
    default_lease_seconds: float = 40.0
    monitor_period: float = 5.0


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


class NodeLifecycleController(Controller):
    name = "nodelifecycle"

    def __init__(
        self,
        client: ApiClient,
        recorder: EventRecorder,
        options: LifecycleOptions | None = None,
        *,
        informers: SharedInformers | None = None,
    ):
        super().__init__(client, workers=1, informers=informers)
        self.options = options or LifecycleOptions()
        self.recorder = recorder
        self.gateways = self.informer("gateways")
        self.leases = self.informer("leases", NODE_LEASE_NAMESPACE)
        self.devices = self.informer("devices")
        self.workloads = self.informer("workloads")
        self.deployments = self.informer("deployments")
        # Device name -> wall-clock time it was first seen lost (for the eviction timeout).
        self.lost_since: dict[str, float] = {}
        self.evicted = 0

    async def reconcile(self, key: str) -> float | None:
        return None  # all work happens in the monitor loop

    async def background(self) -> None:
        while True:
            try:
                await self.monitor()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node lifecycle monitor pass failed")
            await asyncio.sleep(self.options.monitor_period)

    async def monitor(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        ready = await self._gateways(now)
        await self._devices(now, ready)
        await self._evict(now)

    # ---- gateways ------------------------------------------------------------------------

    def _lease_expired(self, gw: Obj, now: float) -> bool:
        name = str(_d(gw.get("metadata")).get("name"))
        lease = self.leases.get(name, NODE_LEASE_NAMESPACE)
        if lease is None:
            created = parse_time(_d(gw.get("metadata")).get("creationTimestamp"))
            return created is not None and now > created + self.options.startup_grace
        spec = _d(lease.get("spec"))
        renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
        if renewed is None:
            return True
        duration = spec.get("leaseDurationSeconds")
        seconds = float(duration) if isinstance(duration, int | float) else self.options.default_lease_seconds
        return now > renewed + seconds + self.options.lease_grace

    async def _gateways(self, now: float) -> dict[str, bool]:
        ready: dict[str, bool] = {}
        for gw in self.gateways.items():
            meta = _d(gw.get("metadata"))
            name = str(meta.get("name"))
            expired = self._lease_expired(gw, now)
            ready[name] = not expired
            cond = condition(gw, "Ready") or {}
            conditions = list(_d(gw.get("status")).get("conditions") or [])
            if expired and not (cond.get("status") == "False" and cond.get("reason") == REASON_GATEWAY_LOST):
                msg = "the gateway stopped renewing its lease"
                await self._patch_status(
                    "gateways",
                    name,
                    {"conditions": set_condition(conditions, "Ready", "False", REASON_GATEWAY_LOST, msg)},
                )
                await self.recorder.event(gw, WARNING, "GatewayNotReady", f"Gateway {name}: {msg}")
            elif not expired and cond.get("reason") == REASON_GATEWAY_LOST and cond.get("status") != "True":
                msg = "the gateway renews its lease again"
                await self._patch_status(
                    "gateways",
                    name,
                    {"conditions": set_condition(conditions, "Ready", "True", REASON_GATEWAY_BACK, msg)},
                )
                await self.recorder.event(gw, NORMAL, "GatewayReady", f"Gateway {name}: {msg}")
        return ready

    # ---- devices -------------------------------------------------------------------------

    async def _devices(self, now: float, gateway_ready: dict[str, bool]) -> None:
        seen_names = set()
        for dev in self.devices.items():
            meta, spec, status = _d(dev.get("metadata")), _d(dev.get("spec")), _d(dev.get("status"))
            name = str(meta.get("name"))
            seen_names.add(name)
            phase = status.get("phase")
            last_seen = parse_time(status.get("lastSeen"))
            fresh = last_seen is not None and now - last_seen <= self.options.device_grace
            gw_down = gateway_ready.get(str(spec.get("gateway") or "")) is False
            cond = condition(dev, "Ready") or {}
            ours = cond.get("reason") in OUR_DEVICE_REASONS
            target: tuple[str, str, str, str] | None = None
            if gw_down:
                if phase not in LOST_PHASES:
                    target = (
                        "Unknown",
                        "Unknown",
                        REASON_GATEWAY_DOWN,
                        f"gateway {spec.get('gateway')} is not ready",
                    )
            elif last_seen is not None and not fresh:
                if phase != "Offline":
                    target = (
                        "Offline",
                        "False",
                        REASON_DEVICE_NOT_SEEN,
                        f"not seen for more than {self.options.device_grace:g}s",
                    )
            elif fresh and phase in LOST_PHASES and ours:
                # Back: status only. Its workloads are left exactly as they are.
                target = ("Online", "True", REASON_DEVICE_SEEN, "the device reports again")
            if target is not None:
                new_phase, cstatus, reason, msg = target
                conditions = set_condition(
                    list(status.get("conditions") or []), "Ready", cstatus, reason, msg
                )
                await self._patch_status("devices", name, {"phase": new_phase, "conditions": conditions})
                etype = NORMAL if new_phase == "Online" else WARNING
                await self.recorder.event(dev, etype, f"Device{new_phase}", f"Device {name}: {msg}")
                phase = new_phase
            if phase in LOST_PHASES:
                if name not in self.lost_since:
                    # Resume the clock from our condition after a restart; never start it earlier.
                    since = parse_time(cond.get("lastTransitionTime")) if ours and target is None else None
                    self.lost_since[name] = min(now, since) if since is not None else now
            else:
                self.lost_since.pop(name, None)
        for name in list(self.lost_since):
            if name not in seen_names:
                del self.lost_since[name]

    # ---- eviction ------------------------------------------------------------------------

    def _timeout_for(self, wl: Obj) -> float | None:
        """The workload's own tolerationSeconds for unreachable devices, if it has one."""
        for t in _d(wl.get("spec")).get("tolerations") or []:
            if not isinstance(t, dict) or t.get("effect") not in (None, "", "NoExecute"):
                continue
            key = t.get("key")
            if (t.get("operator") == "Exists" and not key) or key == UNREACHABLE_TAINT:
                secs = t.get("tolerationSeconds")
                return float(secs) if isinstance(secs, int | float) else None
        return self.options.eviction_timeout

    def _evictable(self, wl: Obj) -> bool:
        ref = controller_owner(wl)
        if ref is None:
            return False  # nothing would recreate it: let it wait for its device
        ns = str(_d(wl.get("metadata")).get("namespace"))
        dep = self.deployments.get(str(ref.get("name")), ns)
        if dep is None or _d(dep.get("metadata")).get("uid") != ref.get("uid"):
            return False
        mode = _d(_d(dep.get("spec")).get("placement")).get("mode", "Replicas")
        return bool(mode != "EveryDevice")

    async def _evict(self, now: float) -> None:
        if not self.lost_since:
            return
        for wl in self.workloads.items():
            meta, spec = _d(wl.get("metadata")), _d(wl.get("spec"))
            device = str(spec.get("deviceName") or "")
            since = self.lost_since.get(device)
            if since is None or meta.get("deletionTimestamp") or not self._evictable(wl):
                continue
            timeout = self._timeout_for(wl)
            if timeout is None or now - since < timeout:
                continue
            ns, name = str(meta.get("namespace")), str(meta.get("name"))
            try:
                await self.client.delete("workloads", name, ns, preconditions={"uid": str(meta.get("uid"))})
            except ApiError as e:
                if e.is_not_found or e.is_conflict:
                    continue
                log.warning("evicting %s/%s failed: %s", ns, name, e)
                continue
            self.evicted += 1
            msg = f"Evicted from device {device}: unreachable for more than {timeout:g}s"
            log.info("workload %s/%s: %s", ns, name, msg)
            await self.recorder.event(wl, WARNING, "Evicted", msg)

    async def _patch_status(self, plural: str, name: str, status: Obj) -> None:
        try:
            await self.client.patch_status(plural, name, {"status": status})
        except ApiError as e:
            if not e.is_not_found:
                log.warning("updating %s/%s status failed: %s", plural, name, e)
