"""The namespace controller: deleting a Namespace deletes everything in it.

The API gives every Namespace the ``fleetlet.io/namespace`` finalizer, so DELETE only marks it
(deletionTimestamp, phase Terminating) and refuses new content. This controller deletes every
namespaced object inside, waits until none is left (objects with finalizers of their own take
a while), then removes the finalizer, which completes the deletion.
"""

from __future__ import annotations

import logging
from typing import Any

from fleetlet.server.client import REGISTRY, ApiClient, ApiError, SharedInformers

from .base import Controller
from .events import WARNING, EventRecorder

log = logging.getLogger(__name__)

Obj = dict[str, Any]

NAMESPACE_FINALIZER = "fleetlet.io/namespace"
# Deployments first, so nothing recreates workloads while we delete them; Events last, so the
# record of the deletion stays as long as possible.
FIRST = ("deployments",)
LAST = ("events",)


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def namespaced_plurals() -> list[str]:
    plurals = [rt.plural for rt in REGISTRY.all() if rt.namespaced]
    middle = [p for p in plurals if p not in FIRST and p not in LAST]
    return [p for p in FIRST if p in plurals] + middle + [p for p in LAST if p in plurals]


class NamespaceController(Controller):
    name = "namespace"

    def __init__(
        self,
        client: ApiClient,
        recorder: EventRecorder,
        *,
        workers: int = 1,
        retry_period: float = 1.0,
        informers: SharedInformers | None = None,
    ):
        super().__init__(client, workers=workers, informers=informers)
        self.recorder = recorder
        self.retry_period = retry_period
        self.namespaces = self.informer(
            "namespaces",
            on_add=self._on_ns,
            on_update=lambda _old, new: self._on_ns(new),
        )

    def _on_ns(self, obj: Obj) -> None:
        if _d(obj.get("metadata")).get("deletionTimestamp"):
            self.enqueue(str(_d(obj.get("metadata")).get("name")))

    async def reconcile(self, key: str) -> float | None:
        ns = self.namespaces.get(key)
        if ns is None:
            return None
        meta = _d(ns.get("metadata"))
        if not meta.get("deletionTimestamp") or NAMESPACE_FINALIZER not in (meta.get("finalizers") or []):
            return None
        remaining = 0
        for plural in namespaced_plurals():
            listing = await self.client.list_all(plural, key)
            for item in listing.get("items") or []:
                remaining += 1
                imeta = _d(item.get("metadata"))
                if imeta.get("deletionTimestamp"):
                    continue  # finalizers pending: the garbage collector (or its owner) finishes it
                try:
                    await self.client.delete(
                        plural, str(imeta.get("name")), key, preconditions={"uid": str(imeta.get("uid"))}
                    )
                except ApiError as e:
                    if not (e.is_not_found or e.is_conflict):
                        raise
        if remaining:
            log.info("namespace %s: %d object(s) left to delete", key, remaining)
            return self.retry_period  # look again: deletes with finalizers complete later
        body = {
            "apiVersion": "fleetlet.io/v1",
            "kind": "Namespace",
            "metadata": {
                **meta,
                "finalizers": [f for f in meta.get("finalizers") or [] if f != NAMESPACE_FINALIZER],
            },
        }
        if "spec" in ns:
            body["spec"] = ns["spec"]
        try:
            await self.client.replace(body)
        except ApiError as e:
            if e.is_not_found:
                return None
            if not e.is_conflict:
                await self.recorder.event(ns, WARNING, "NamespaceFinalizeFailed", str(e))
            raise
        log.info("namespace %s: empty, deletion complete", key)
        return None
