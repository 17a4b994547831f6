"""The deployment controller: workloads from a template, Replicas or EveryDevice, rolled out in waves.

One reconcile of ``namespace/name`` reads the Deployment, its workloads (ownerReferences with
controller=true) and the devices from the informer caches, asks :mod:`.rollout` for a plan,
creates and deletes workloads, and writes status. It is idempotent: running it twice on the
same state does nothing the second time.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fleetlet.server.client import (
    API_VERSION,
    ApiClient,
    ApiError,
    SharedInformers,
    object_key,
    strip_for_write,
)

from . import rollout as ro
from .base import Controller
from .events import NORMAL, WARNING, EventRecorder, now_rfc3339
from .slowstart import slow_start

log = logging.getLogger(__name__)

Obj = dict[str, Any]

GATEWAY_LABEL = "fleetlet.io/gateway"
DEVICE_LABEL = "fleetlet.io/device"
BOARD_LABEL = "fleetlet.io/board"
ARCH_LABEL = "kubernetes.io/arch"
LOST_PHASES = frozenset({"Offline", "Unknown"})
# How long our own writes are trusted over a cache that has not shown them yet.
EXPECTATION_TTL = 30.0
# The most workload creates in flight for one Deployment (DaemonSet's burstReplicas). Wide, so a
# rollout's creates get their share of the store's writer next to 1,000 devices' status reports;
# with 32, an EveryDevice rollout to 1,000 devices took about 6 s before its last workload existed.
CREATE_BURST = 250


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def controller_owner(obj: Mapping[str, Any], kind: str = "Deployment") -> Obj | None:
    for ref in _d(obj.get("metadata")).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") and ref.get("kind") == kind:
            return ref
    return None


def device_labels(device: Mapping[str, Any], gateway: Mapping[str, Any] | None) -> dict[str, str]:
    """Labels a nodeSelector sees: the gateway's, overridden by the device's, plus well-known ones."""
    spec = _d(device.get("spec"))
    labels: dict[str, str] = {}
    if gateway:
        labels.update({str(k): str(v) for k, v in _d(_d(gateway.get("metadata")).get("labels")).items()})
    labels.update({str(k): str(v) for k, v in _d(_d(device.get("metadata")).get("labels")).items()})
    labels.setdefault(DEVICE_LABEL, str(_d(device.get("metadata")).get("name", "")))
    if spec.get("gateway"):
        labels.setdefault(GATEWAY_LABEL, str(spec["gateway"]))
    if spec.get("board"):
        labels.setdefault(BOARD_LABEL, str(spec["board"]))
    if spec.get("arch"):
        labels.setdefault(ARCH_LABEL, str(spec["arch"]))
    return labels


def _tolerated(taint: Mapping[str, Any], tolerations: list[Any]) -> bool:
    for t in tolerations:
        if not isinstance(t, dict):
            continue
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def device_matches(
    wspec: Mapping[str, Any], device: Mapping[str, Any], gateway: Mapping[str, Any] | None
) -> bool:
    """Would an EveryDevice workload run here? nodeSelector, runtime and NoSchedule/NoExecute taints
    (like a DaemonSet, ``unschedulable`` is ignored: the workload belongs to the device)."""
    if _d(device.get("metadata")).get("deletionTimestamp"):
        return False
    labels = device_labels(device, gateway)
    for k, v in _d(wspec.get("nodeSelector")).items():
        if labels.get(str(k)) != str(v):
            return False
    runtimes = _d(device.get("spec")).get("runtimes")
    runtime = wspec.get("runtime")
    if isinstance(runtimes, list) and runtimes and runtime and runtime not in runtimes:
        return False
    tolerations = wspec.get("tolerations") or []
    taints = list(_d(device.get("spec")).get("taints") or [])
    if gateway:
        taints += list(_d(gateway.get("spec")).get("taints") or [])
    for taint in taints:
        if isinstance(taint, dict) and taint.get("effect") in ("NoSchedule", "NoExecute"):
            if not _tolerated(taint, tolerations if isinstance(tolerations, list) else []):
                return False
    return True


def set_condition(conditions: list[Obj], ctype: str, status: str, reason: str, message: str) -> list[Obj]:
    """Conditions with one replaced; lastTransitionTime moves only when the status changes."""
    out: list[Obj] = []
    old = next((c for c in conditions if c.get("type") == ctype), None)
    stamp = old.get("lastTransitionTime") if old and old.get("status") == status else now_rfc3339()
    new: Obj = {"type": ctype, "status": status, "reason": reason, "message": message}
    if stamp:
        new["lastTransitionTime"] = stamp
    replaced = False
    for c in conditions:
        if c.get("type") == ctype:
            out.append(new)
            replaced = True
        else:
            out.append(c)
    if not replaced:
        out.append(new)
    return out


class DeploymentController(Controller):
    name = "deployment"

    def __init__(
        self,
        client: ApiClient,
        recorder: EventRecorder,
        *,
        workers: int = 2,
        restart_limit: int = ro.RESTART_LIMIT,
        informers: SharedInformers | None = None,
    ):
        super().__init__(client, workers=workers, informers=informers)
        self.recorder = recorder
        self.restart_limit = restart_limit
        self.deployments = self.informer(
            "deployments",
            on_add=self._on_deploy,
            on_update=lambda _o, n: self._on_deploy(n),
            on_delete=self._on_deploy,
        )
        self.workloads = self.informer(
            "workloads",
            on_add=self._on_workload_add,
            on_update=self._on_workload_update,
            on_delete=self._on_workload_delete,
        )
        self.devices = self.informer(
            "devices", on_add=self._on_device, on_update=self._on_device_update, on_delete=self._on_device
        )
        self.gateways = self.informer(
            "gateways", on_add=self._on_device, on_update=self._on_device_update, on_delete=self._on_device
        )
        # Workload keys by the uid of the Deployment that controls them.
        self._owned: dict[str, set[str]] = {}
        self._ready_seen: dict[str, float] = {}  # workload uid -> when we first saw it Ready
        # Expectations (client-go's ControllerExpectations): our own creates and deletes, counted
        # until the watch shows them, so a reconcile in between does not create twice.
        self._expected: dict[str, tuple[Obj, float]] = {}
        self._gone: dict[str, float] = {}

    # ---- event handlers ------------------------------------------------------------------

    def _on_deploy(self, obj: Obj) -> None:
        self.enqueue(object_key(obj))

    def _index(self, obj: Obj, present: bool) -> None:
        ref = controller_owner(obj)
        if ref is None:
            return
        keys = self._owned.setdefault(str(ref.get("uid")), set())
        if present:
            keys.add(object_key(obj))
        else:
            keys.discard(object_key(obj))
            self._ready_seen.pop(str(_d(obj.get("metadata")).get("uid")), None)

    def _enqueue_owner(self, obj: Obj) -> None:
        ref = controller_owner(obj)
        if ref is not None:
            self.enqueue(f"{_d(obj.get('metadata')).get('namespace')}/{ref.get('name')}")

    def _on_workload_add(self, obj: Obj) -> None:
        self._expected.pop(object_key(obj), None)
        self._index(obj, True)
        self._enqueue_owner(obj)

    def _on_workload_update(self, old: Obj, new: Obj) -> None:
        self._expected.pop(object_key(new), None)
        if controller_owner(old) != controller_owner(new):
            self._index(old, False)
            self._enqueue_owner(old)
        self._index(new, True)
        self._enqueue_owner(new)

    def _on_workload_delete(self, obj: Obj) -> None:
        self._expected.pop(object_key(obj), None)
        self._gone.pop(object_key(obj), None)
        self._index(obj, False)
        self._enqueue_owner(obj)

    def _on_device(self, _obj: Obj) -> None:
        self._enqueue_all()

    def _on_device_update(self, old: Obj, new: Obj) -> None:
        # Heartbeats (lastSeen) arrive often; only what placement or availability depends on counts.
        def facts(o: Obj) -> tuple[Any, ...]:
            meta, status = _d(o.get("metadata")), _d(o.get("status"))
            return (
                meta.get("labels"),
                meta.get("deletionTimestamp"),
                o.get("spec"),
                status.get("phase"),
                ro.condition(o, "Ready"),
            )

        if facts(old) != facts(new):
            self._enqueue_all()

    def _enqueue_all(self) -> None:
        for key in list(self.deployments.cache):
            self.enqueue(key)

    # ---- reconcile -----------------------------------------------------------------------

    def _view(self, wl: Obj, min_ready: int, now: float) -> tuple[ro.WorkloadView, float | None]:
        meta, spec = _d(wl.get("metadata")), _d(wl.get("spec"))
        uid = str(meta.get("uid", ""))
        device = str(spec.get("deviceName") or "")
        dev = self.devices.get(device) if device else None
        lost = dev is not None and _d(dev.get("status")).get("phase") in LOST_PHASES
        ready = ro.workload_ready(wl) and not lost
        wait: float | None = None
        available = False
        if ready:
            since = ro.ready_since(wl) or self._ready_seen.setdefault(uid, now)
            left = since + min_ready - now
            available = left <= 0
            if not available:
                wait = left
        else:
            self._ready_seen.pop(uid, None)
        view = ro.WorkloadView(
            name=str(meta.get("name")),
            revision=str(_d(meta.get("labels")).get(ro.REVISION_LABEL, "")),
            device=device,
            ready=ready,
            available=available,
            failed=ro.workload_failed(wl, self.restart_limit),
            created=str(meta.get("creationTimestamp", "")),
        )
        return view, wait

    def _lookup(self, key: str, now: float) -> Obj | None:
        """A workload as we expect it: the cache, plus our creates and minus our deletes it lags behind."""
        gone = self._gone.get(key)
        if gone is not None:
            if gone > now:
                return None
            del self._gone[key]
        obj: Obj | None = self.workloads.cache.get(key)
        if obj is not None:
            return obj
        expected = self._expected.get(key)
        if expected is None:
            return None
        if expected[1] < now:
            # The watch never showed it (deleted meanwhile?): stop expecting it.
            del self._expected[key]
            return None
        return expected[0]

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        dep = self.deployments.get(name, ns)
        if dep is None or _d(dep.get("metadata")).get("deletionTimestamp"):
            return None  # dependents are the garbage collector's business
        meta, spec, status = _d(dep.get("metadata")), _d(dep.get("spec")), _d(dep.get("status"))
        uid = str(meta.get("uid"))
        template = _d(spec.get("template"))
        placement = _d(spec.get("placement"))
        strategy = _d(spec.get("strategy"))
        every_device = placement.get("mode") == "EveryDevice"
        paused = bool(spec.get("paused"))
        min_ready = int(strategy.get("minReadySeconds") or 0)
        threshold = float(strategy.get("failureThreshold", ro.DEFAULT_FAILURE_THRESHOLD))
        auto_rollback = bool(strategy.get("autoRollback", ro.DEFAULT_AUTO_ROLLBACK))
        update = ro.template_hash(template)
        current = str(status.get("currentRevision") or "")
        now = time.time()

        wls = [
            w
            for k in sorted(self._owned.get(uid, ()))
            if (w := self._lookup(k, now)) is not None
            and not _d(w.get("metadata")).get("deletionTimestamp")
            and _d(controller_owner(w)).get("uid") == uid
        ]
        requeue: float | None = None
        views: list[ro.WorkloadView] = []
        for w in wls:
            v, wait = self._view(w, min_ready, now)
            views.append(v)
            if wait is not None:
                requeue = wait if requeue is None else min(requeue, wait)

        history = ro.parse_history(status.get("history"))
        history = ro.record_revision(
            history,
            update,
            template,
            int(spec.get("revisionHistoryLimit", ro.DEFAULT_HISTORY_LIMIT)),
            {v.revision for v in views},
            now_rfc3339(),
        )
        by_hash = {e.hash: e for e in history}

        # Devices EveryDevice places on; computed first so the total is known.
        matching: dict[str, Obj] = {}
        if every_device:
            wspec = _d(template.get("spec"))
            for dev in self.devices.items():
                gw_name = _d(dev.get("spec")).get("gateway")
                gw = self.gateways.get(str(gw_name)) if gw_name else None
                if device_matches(wspec, dev, gw):
                    matching[str(_d(dev.get("metadata")).get("name"))] = dev
            total = len(matching)
            considered = [v for v in views if v.device in matching]
        else:
            total = int(placement.get("replicas", 1))
            considered = views

        new = [v for v in considered if v.revision == update]
        old = [v for v in considered if v.revision != update]
        failed_new = sum(v.failed for v in new)
        healthy_new = sum(v.available for v in new)

        # A failing wave: roll back, or hold the rollout where it is.
        halted = False
        halt_message = ""
        if update != current and new and ro.exceeds_threshold(failed_new, len(new), threshold):
            ratio = ro.failure_ratio(failed_new, len(new))
            halt_message = (
                f"{failed_new}/{len(new)} workloads of revision {by_hash[update].revision} ({update}) failed"
                f" ({ratio:.0%} > threshold {threshold:.0%})"
            )
            target = by_hash.get(current) if current and current != update else None
            target = target or ro.previous_revision(history, update)
            if auto_rollback and target is not None:
                await self._rollback(dep, history, update, target, halt_message)
                return None
            halted = True

        if old and update == current:
            targets = [total]  # going back to the stable revision (abort or rollback): one wave
        else:
            targets = ro.wave_targets(strategy.get("waves"), total)
        started = int(status.get("currentWave") or 0) if status.get("updateRevision") == update else 0
        wave = ro.advance_wave(targets, started, healthy_new, paused=paused or halted)
        max_unavail = ro.max_unavailable(strategy.get("maxUnavailable"), total, every_device=every_device)

        if every_device:
            on_device: dict[str, list[ro.WorkloadView]] = {}
            for v in considered:
                on_device.setdefault(v.device, []).append(v)
            strays = [v for v in views if v.device not in matching]
            plan = ro.plan_every_device(
                devices=sorted(matching),
                on_device=on_device,
                strays=strays,
                update=update,
                targets=targets,
                wave=wave,
                max_unavail=max_unavail,
                halted=halted,
            )
        else:
            stable = by_hash.get(current) if current and current != update else None
            plan = ro.plan_replicas(
                total=total,
                targets=targets,
                wave=wave,
                new=new,
                old=old,
                max_unavail=max_unavail,
                halted=halted,
                can_create_old=stable is not None,
            )

        if wave != started or status.get("updateRevision") != update or status.get("waves") != targets:
            # Announce a new wave before acting on it, so status never trails what the fleet runs.
            await self.client.patch_status(
                "deployments",
                name,
                {"status": {"currentWave": wave, "updateRevision": update, "waves": targets}},
                ns,
            )
        await self._execute(dep, plan, update, by_hash.get(current), matching)

        if plan.complete:
            current = update
        wave_done = wave if healthy_new >= (targets[wave - 1] if wave else 0) else wave - 1
        await self._write_status(
            dep,
            history=history,
            update=update,
            current=current,
            total=total,
            views=considered,
            new=new,
            healthy_new=healthy_new,
            failed_new=failed_new,
            targets=targets,
            wave=wave,
            wave_done=wave_done,
            max_unavail=max_unavail,
            paused=paused,
            halted=halted,
            halt_message=halt_message,
            complete=plan.complete,
        )
        if started != wave and wave:
            await self.recorder.event(
                dep,
                NORMAL,
                "WaveStarted",
                f"wave {wave}/{len(targets)} of revision {by_hash[update].revision}:"
                f" target {targets[wave - 1]} of {total} updated",
            )
        return requeue

    async def _execute(
        self, dep: Obj, plan: ro.Plan, update: str, stable: ro.HistoryEntry | None, matching: dict[str, Obj]
    ) -> None:
        meta = _d(dep.get("metadata"))
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        template = _d(_d(dep.get("spec")).get("template"))
        # Creates go out concurrently (slow start, then bounded) so the store's group commit
        # batches them; a create that fails stops the burst, and the work queue retries.
        jobs: list[Callable[[], Awaitable[str]]] = [
            functools.partial(self._create, dep, template, update) for _ in range(plan.create_new)
        ]
        if stable is not None:
            jobs += [
                functools.partial(self._create, dep, stable.template, stable.hash)
                for _ in range(plan.create_old)
            ]
        for dev_name in plan.create_on_devices:
            gateway = str(_d(matching[dev_name].get("spec")).get("gateway") or "")
            jobs.append(functools.partial(self._create, dep, template, update, dev_name, gateway))
        created, failures, skipped = await slow_start(jobs, limit=CREATE_BURST)
        if skipped:
            log.info("%s/%s: %d creates not attempted after a failure; retrying later", ns, name, skipped)
        deleted: list[str] = []
        for wl_name in plan.delete:
            try:
                await self.client.delete("workloads", wl_name, ns)
                deleted.append(wl_name)
                self._gone[f"{ns}/{wl_name}"] = time.time() + EXPECTATION_TTL
            except ApiError as e:
                if not e.is_not_found:
                    raise
        if created:
            await self.recorder.event(
                dep,
                NORMAL,
                "SuccessfulCreate",
                f"Created {len(created)} workload(s): {', '.join(created[:5])}",
            )
        if deleted:
            await self.recorder.event(
                dep,
                NORMAL,
                "SuccessfulDelete",
                f"Deleted {len(deleted)} workload(s): {', '.join(deleted[:5])}",
            )
        log.debug("%s/%s: created %s deleted %s", ns, name, created, deleted)
        if failures:
            raise failures[0]  # retried with backoff by the work queue, like any failed reconcile

    async def _create(
        self, dep: Obj, template: Obj, revision: str, device: str = "", gateway: str = ""
    ) -> str:
        meta = _d(dep.get("metadata"))
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        tmeta = _d(template.get("metadata"))
        labels = {**_d(tmeta.get("labels")), ro.DEPLOYMENT_LABEL: name, ro.REVISION_LABEL: revision}
        wspec = copy.deepcopy(_d(template.get("spec")))
        if device:
            # Pre-bound, like DaemonSet pods: the scheduler has nothing to decide.
            wspec["deviceName"] = device
            if gateway:
                wspec["gatewayName"] = gateway
        wl_meta: Obj = {
            "namespace": ns,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Deployment",
                    "name": name,
                    "uid": str(meta.get("uid")),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if tmeta.get("annotations"):
            wl_meta["annotations"] = dict(_d(tmeta.get("annotations")))
        for _attempt in range(3):
            wl_meta["name"] = ro.workload_name(name, revision)
            body: Obj = {"apiVersion": API_VERSION, "kind": "Workload", "metadata": wl_meta, "spec": wspec}
            try:
                created = await self.client.create(body, ns)
            except ApiError as e:
                if e.code == 409 and e.reason == "AlreadyExists":
                    continue  # random suffix collided; draw another
                raise
            self._expected[object_key(created)] = (created, time.time() + EXPECTATION_TTL)
            self._index(created, True)
            return str(wl_meta["name"])
        raise ApiError(409, "AlreadyExists", f"could not find a free name for a workload of {ns}/{name}")

    async def _rollback(
        self, dep: Obj, history: list[ro.HistoryEntry], bad: str, target: ro.HistoryEntry, why: str
    ) -> None:
        meta = _d(dep.get("metadata"))
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        status = _d(dep.get("status"))
        bad_rev = next((e.revision for e in history if e.hash == bad), 0)
        message = f"{why}; rolled back to revision {target.revision} ({target.hash})"
        conditions = set_condition(
            list(status.get("conditions") or []), "RolledBack", "True", "FailureThresholdExceeded", message
        )
        conditions = set_condition(conditions, "Progressing", "False", "RolledBack", message)
        # Status first: if the spec write fails, the next pass sees the same failure and retries.
        patched = await self.client.patch_status(
            "deployments",
            name,
            {
                "status": {
                    "conditions": conditions,
                    "rolledBack": {
                        "from": bad,
                        "fromRevision": bad_rev,
                        "to": target.hash,
                        "at": now_rfc3339(),
                    },
                    "history": [e.to_obj() for e in history],
                }
            },
            ns,
        )
        if _d(patched.get("metadata")).get("generation") != meta.get("generation"):
            # The spec moved on since we looked: decide again from the fresh object.
            raise ApiError(409, "Conflict", f"deployment {ns}/{name} changed during rollback")
        body = strip_for_write(dep)
        body["metadata"]["resourceVersion"] = _d(patched.get("metadata")).get("resourceVersion")
        body["spec"]["template"] = copy.deepcopy(target.template)
        body["metadata"].setdefault("annotations", {})[ro.ROLLED_BACK_FROM] = bad
        await self.client.replace(body, ns)  # resourceVersion precondition: 409 retries from fresh state
        await self.recorder.event(dep, WARNING, "RolledBack", message)
        log.warning("deployment %s/%s: %s", ns, name, message)

    async def _write_status(
        self,
        dep: Obj,
        *,
        history: list[ro.HistoryEntry],
        update: str,
        current: str,
        total: int,
        views: list[ro.WorkloadView],
        new: list[ro.WorkloadView],
        healthy_new: int,
        failed_new: int,
        targets: list[int],
        wave: int,
        wave_done: int,
        max_unavail: int,
        paused: bool,
        halted: bool,
        halt_message: str,
        complete: bool,
    ) -> None:
        meta = _d(dep.get("metadata"))
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        status = _d(dep.get("status"))
        available = sum(v.available for v in views)
        ready = sum(v.ready for v in views)
        update_rev = next((e.revision for e in history if e.hash == update), 0)
        conditions = list(status.get("conditions") or [])
        if paused and not complete:
            conditions = set_condition(
                conditions,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                f"paused at wave {wave}/{len(targets)}",
            )
        elif halted:
            conditions = set_condition(conditions, "Progressing", "False", "WaveFailed", halt_message)
        elif complete:
            conditions = set_condition(
                conditions,
                "Progressing",
                "True",
                "NewRevisionAvailable",
                f"revision {update_rev} ({update}) is available on {total} workload(s)",
            )
        else:
            conditions = set_condition(
                conditions,
                "Progressing",
                "True",
                "RolloutInProgress",
                f"wave {wave}/{len(targets)}: {healthy_new}/{targets[wave - 1] if wave else 0}"
                " updated available",
            )
        if available >= total - max_unavail:
            conditions = set_condition(
                conditions, "Available", "True", "MinimumReplicasAvailable", f"{available}/{total} available"
            )
        else:
            conditions = set_condition(
                conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                f"{available}/{total} available, at least {total - max_unavail} needed",
            )
        rolled = _d(status.get("rolledBack"))
        rolled_back: Obj | None = rolled or None
        if rolled and rolled.get("to") != update:
            # The operator moved on to another template: the rollback is history now.
            rolled_back = None
            conditions = set_condition(
                conditions,
                "RolledBack",
                "False",
                "NewRevision",
                f"revision {update_rev} ({update}) replaced the rolled-back template",
            )
        new_status: Obj = {
            "observedGeneration": meta.get("generation"),
            "replicas": len(views),
            "desiredReplicas": total,
            "updatedReplicas": len(new),
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": max(0, total - available),
            "updatedAvailableReplicas": healthy_new,
            "updatedFailedReplicas": failed_new,
            "currentRevision": current,
            "updateRevision": update,
            "revision": update_rev,
            "currentWave": wave,
            "completedWaves": max(0, wave_done),
            "waves": targets,
            "paused": paused,
            "conditions": conditions,
            "history": [e.to_obj() for e in history],
            "rolledBack": rolled_back,
        }
        changed = {k: v for k, v in new_status.items() if status.get(k) != v}
        if not changed:
            return
        await self.client.patch_status("deployments", name, {"status": changed}, ns)
        if complete and status.get("currentRevision") != current:
            await self.recorder.event(
                dep,
                NORMAL,
                "RolloutComplete",
                f"revision {update_rev} ({update}) rolled out to {total} workload(s)",
            )
