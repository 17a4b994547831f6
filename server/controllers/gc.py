"""Garbage collection by ownerReferences, with the three Kubernetes propagation policies.

- Background: the owner is gone at once; its dependents, whose owners are now all absent,
  are deleted here.
- Foreground: the owner keeps a ``foregroundDeletion`` finalizer (set by the API on DELETE) until
  every dependent is gone; dependents are deleted here, then the finalizer is removed.
- Orphan: the owner keeps an ``orphan`` finalizer until its reference has been stripped from
  every dependent; then the finalizer is removed and the dependents live on.

Absence is confirmed with a live GET before anything is deleted, because an informer may not
have seen a freshly created owner yet (Kubernetes' GC does the same).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from fleetlet.server.client import REGISTRY, ApiClient, ApiError, Informer, ResourceType, SharedInformers

from .base import Controller

log = logging.getLogger(__name__)

Obj = dict[str, Any]

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
# Kinds whose objects can own or be owned. Events and tokens are left out: they are
# numerous or secret and nobody hangs objects off them.
GC_PLURALS = ("deployments", "workloads", "configmaps", "secrets", "leases", "devices", "gateways")


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def gc_key(plural: str, namespace: str | None, name: str) -> str:
    return f"{plural}|{namespace or ''}|{name}"


class GarbageCollector(Controller):
    name = "garbagecollector"

    def __init__(
        self,
        client: ApiClient,
        *,
        workers: int = 2,
        plurals: tuple[str, ...] = GC_PLURALS,
        informers: SharedInformers | None = None,
    ):
        super().__init__(client, workers=workers, informers=informers)
        self.by_plural: dict[str, Informer] = {}
        for plural in plurals:
            self.by_plural[plural] = self.informer(
                plural,
                on_add=lambda o, p=plural: self._observe(p, o),
                on_update=lambda _old, o, p=plural: self._observe(p, o),
                on_delete=lambda o, p=plural: self._forget(p, o),
            )
        self.nodes: dict[str, str] = {}  # uid -> gc key of every object we watch
        self.dependents: dict[str, set[str]] = {}  # owner uid -> gc keys of its dependents
        self._refs: dict[str, set[str]] = {}  # gc key -> owner uids it references

    # ---- the graph -----------------------------------------------------------------------

    def _observe(self, plural: str, obj: Obj) -> None:
        meta = _d(obj.get("metadata"))
        key = gc_key(plural, meta.get("namespace"), str(meta.get("name")))
        uid = str(meta.get("uid") or "")
        if uid:
            self.nodes[uid] = key
        owners = {str(r.get("uid")) for r in meta.get("ownerReferences") or [] if isinstance(r, dict)}
        for gone in self._refs.get(key, set()) - owners:
            self.dependents.get(gone, set()).discard(key)
        for owner in owners:
            self.dependents.setdefault(owner, set()).add(key)
        self._refs[key] = owners
        if owners or meta.get("deletionTimestamp"):
            self.enqueue(key)
        # A dependent that changed or went away may unblock an owner being deleted in the foreground.
        for owner in owners:
            self._enqueue_uid(owner)

    def _forget(self, plural: str, obj: Obj) -> None:
        meta = _d(obj.get("metadata"))
        key = gc_key(plural, meta.get("namespace"), str(meta.get("name")))
        uid = str(meta.get("uid") or "")
        if self.nodes.get(uid) == key:
            del self.nodes[uid]
        for owner in self._refs.pop(key, set()):
            self.dependents.get(owner, set()).discard(key)
            self._enqueue_uid(owner)
        # Its dependents may be orphans now.
        for dep in self.dependents.pop(uid, set()):
            self.enqueue(dep)

    def _enqueue_uid(self, uid: str) -> None:
        key = self.nodes.get(uid)
        if key is not None:
            self.enqueue(key)

    def _get_cached(self, key: str) -> tuple[ResourceType, str | None, str, Obj | None]:
        plural, ns, name = key.split("|", 2)
        inf = self.by_plural[plural]
        return inf.resource, ns or None, name, inf.get(name, ns or None)

    def _live_dependents(self, uid: str) -> list[tuple[str, Obj]]:
        out = []
        for key in sorted(self.dependents.get(uid, ())):
            obj = self._get_cached(key)[3]
            if obj is not None:
                out.append((key, obj))
        return out

    # ---- reconcile -----------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        rt, ns, _name, obj = self._get_cached(key)
        if obj is None:
            return None
        meta = _d(obj.get("metadata"))
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            if ORPHAN in finalizers:
                await self._orphan(rt, ns, obj)
                return None
            if FOREGROUND in finalizers:
                return await self._foreground(rt, ns, obj)
        if meta.get("ownerReferences"):
            await self._check_owners(rt, ns, obj)
        return None

    async def _orphan(self, rt: ResourceType, ns: str | None, obj: Obj) -> None:
        uid = str(_d(obj.get("metadata")).get("uid"))
        for key, dep in self._live_dependents(uid):
            drt, dns, dname, _ = self._get_cached(key)
            refs = [r for r in _d(dep.get("metadata")).get("ownerReferences") or [] if r.get("uid") != uid]
            await self._ignore_missing(
                self.client.patch(drt, dname, {"metadata": {"ownerReferences": refs or None}}, dns)
            )
        await self._remove_finalizer(rt, ns, obj, ORPHAN)

    async def _foreground(self, rt: ResourceType, ns: str | None, obj: Obj) -> float | None:
        uid = str(_d(obj.get("metadata")).get("uid"))
        deps = self._live_dependents(uid)
        if not deps:
            await self._remove_finalizer(rt, ns, obj, FOREGROUND)
            return None
        for key, dep in deps:
            if _d(dep.get("metadata")).get("deletionTimestamp"):
                continue  # already on its way out
            drt, dns, dname, _ = self._get_cached(key)
            dep_uid = str(_d(dep.get("metadata")).get("uid"))
            # Cascade in order: a dependent with dependents of its own goes in the foreground too.
            policy = "Foreground" if self.dependents.get(dep_uid) else "Background"
            await self._ignore_missing(self.client.delete(drt, dname, dns, propagation_policy=policy))
        return 2.0  # dependents' delete events requeue us sooner; this is the safety net

    async def _owner_state(self, ref: Obj, ns: str | None) -> str:
        """``present``, ``absent`` or ``deleting-foreground`` for one owner reference."""
        uid = str(ref.get("uid"))
        key = self.nodes.get(uid)
        owner: Obj | None = self._get_cached(key)[3] if key is not None else None
        if owner is None:
            try:
                ort = REGISTRY.for_kind(str(ref.get("kind")))
            except LookupError:
                return "present"  # a kind we don't know: never delete on a guess
            try:
                owner = await self.client.get(ort, str(ref.get("name")), ns if ort.namespaced else None)
            except ApiError as e:
                if e.is_not_found:
                    return "absent"
                raise
            if _d(owner.get("metadata")).get("uid") != uid:
                return "absent"  # same name, a different (newer) object
        ometa = _d(owner.get("metadata"))
        if ometa.get("deletionTimestamp") and FOREGROUND in (ometa.get("finalizers") or []):
            return "deleting-foreground"
        return "present"

    async def _check_owners(self, rt: ResourceType, ns: str | None, obj: Obj) -> None:
        meta = _d(obj.get("metadata"))
        refs = [r for r in meta.get("ownerReferences") or [] if isinstance(r, dict)]
        states = [await self._owner_state(r, ns) for r in refs]
        name = str(meta.get("name"))
        if all(s == "absent" for s in states):
            if meta.get("deletionTimestamp"):
                return
            log.info("garbage collecting %s %s/%s: its owners are gone", rt.kind, ns or "", name)
            await self._ignore_missing(
                self.client.delete(
                    rt, name, ns, propagation_policy="Background", preconditions={"uid": str(meta.get("uid"))}
                )
            )
        elif "absent" in states:
            # Some owners live on: only drop the dangling references.
            keep = [r for r, s in zip(refs, states, strict=True) if s != "absent"]
            await self._ignore_missing(
                self.client.patch(rt, name, {"metadata": {"ownerReferences": keep}}, ns)
            )

    async def _remove_finalizer(self, rt: ResourceType, ns: str | None, obj: Obj, finalizer: str) -> None:
        body = copy.deepcopy(obj)
        body.setdefault("kind", rt.kind)
        body.setdefault("apiVersion", "fleetlet.io/v1")
        meta = body["metadata"]
        meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != finalizer]
        body.pop("status", None)
        # PUT with the resourceVersion we read: a concurrent finalizer change is a 409 and a retry,
        # never a lost write.
        await self._ignore_missing(self.client.replace(body, ns))

    @staticmethod
    async def _ignore_missing(call: Any) -> Any:
        try:
            return await call
        except ApiError as e:
            if e.is_not_found:
                return None
            if e.is_conflict and "precondition" in e.message.lower():
                return None  # the uid changed: a different object now, not ours to touch
            raise
