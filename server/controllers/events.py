"""EventRecorder: Events through the API, rate-limited per (object, reason) and aggregated.

A repeat of the same (object, type, reason, message) bumps ``count`` and ``lastTimestamp`` on the
Event already written instead of creating a new object (client-go's EventCorrelator does the
same), so a controller retrying every few seconds leaves one Event, not thousands.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fleetlet.server.client import API_VERSION, ApiClient, ApiError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
NORMAL = "Normal"
WARNING = "Warning"
# Events about cluster-scoped objects (devices, gateways) go here, as Kubernetes does for nodes.
CLUSTER_EVENTS_NAMESPACE = "default"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class _Written:
    namespace: str
    name: str
    count: int


class EventRecorder:
    """``await recorder.event(obj, "Warning", "RolledBack", "...")``; never raises on API errors.

    Rate limit: a token bucket per (object uid, reason) with ``burst`` tokens refilled at one per
    ``refill_seconds``; events over the limit are dropped (and counted in ``dropped``).
    """

    def __init__(
        self,
        client: ApiClient,
        component: str,
        *,
        burst: int = 10,
        refill_seconds: float = 30.0,
        cache_size: int = 4096,
    ):
        self.client = client
        self.component = component
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.cache_size = cache_size
        self.dropped = 0
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._written: OrderedDict[tuple[str, str, str, str], _Written] = OrderedDict()
        self._lock = asyncio.Lock()

    def _allow(self, uid: str, reason: str) -> bool:
        now = time.monotonic()
        key = (uid, reason)
        b = self._buckets.get(key)
        if b is None:
            b = _Bucket(float(self.burst), now)
            self._buckets[key] = b
            if len(self._buckets) > self.cache_size:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b.tokens = min(float(self.burst), b.tokens + (now - b.stamp) / self.refill_seconds)
            b.stamp = now
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True

    async def event(self, obj: Obj, etype: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        name = str(meta.get("name") or "")
        if not name:
            return
        obj_ns = meta.get("namespace")
        namespace = str(obj_ns) if obj_ns else CLUSTER_EVENTS_NAMESPACE
        if not self._allow(uid or name, reason):
            self.dropped += 1
            log.debug("event %s on %s/%s dropped by the rate limit", reason, namespace, name)
            return
        involved: Obj = {"kind": str(obj.get("kind") or ""), "name": name}
        if obj_ns:
            involved["namespace"] = str(obj_ns)
        if uid:
            involved["uid"] = uid
        if obj.get("apiVersion"):
            involved["apiVersion"] = str(obj["apiVersion"])
        key = (uid or name, etype, reason, message)
        stamp = now_rfc3339()
        async with self._lock:  # one write per aggregation key at a time keeps counts exact
            try:
                written = self._written.get(key)
                if written is not None:
                    try:
                        await self.client.patch(
                            "events",
                            written.name,
                            {"count": written.count + 1, "lastTimestamp": stamp},
                            written.namespace,
                        )
                        written.count += 1
                        self._written.move_to_end(key)
                        return
                    except ApiError as e:
                        if not e.is_not_found:
                            raise
                        self._written.pop(key, None)  # deleted meanwhile: write a fresh one
                ev: Obj = {
                    "apiVersion": API_VERSION,
                    "kind": "Event",
                    "metadata": {"name": f"{name}.{os.urandom(8).hex()}", "namespace": namespace},
                    "involvedObject": involved,
                    "reason": reason,
                    "message": message[:1024],
                    "type": etype,
                    "count": 1,
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "source": {"component": self.component},
                    "reportingComponent": self.component,
                }
                await self.client.create(ev, namespace)
                self._written[key] = _Written(namespace, ev["metadata"]["name"], 1)
                if len(self._written) > self.cache_size:
                    self._written.popitem(last=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Events are best effort: never fail a reconcile because an Event could not be written.
                log.warning("could not record event %s on %s/%s: %s", reason, namespace, name, exc)
