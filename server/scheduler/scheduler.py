"""The scheduler process: informers feed a cache and a queue; the leader schedules and binds.

Flow (kube-scheduler's, shrunk):

    informers(devices, gateways, workloads) --> Cache (snapshot) + SchedulingQueue
    leader only:  pop --> Framework.schedule(cache) --> cache.assume --> bind (in the background)
                                                   \\-> Scheduled=False + FailedScheduling Event

Binding goes through the API's ``binding`` subresource, which is atomic and answers 409 when
the workload is already bound, so even two schedulers that both think they lead can never
bind a workload twice. Leader election keeps a second scheduler from placing on the same
devices with a different view of what is allocated (over-commit) and from wasting work.

Scheduling cycles are CPU work on the event loop: the loop takes a batch, schedules it
against the snapshot (assumed binds count at once), starts the binds (up to
``max_binds_in_flight``) and yields, so HTTP round trips overlap with the next cycles.
Binds go out as BindingLists, so 256 bindings in flight are a handful of requests; with 64 the
scheduler could not keep up with 1,100 creates/s in bench/scheduler (the bind round trip under
load, not CPU, was the limit: bind p99 2.7 s against 0.6 s with 256).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetlet.server.client import ApiClient, ApiError, HandlerRegistration, Informer, SharedInformers
from fleetlet.server.leaderelection import DEFAULT_LEASE_NAMESPACE, LeaderElector, default_identity, now_micro

from .framework import Framework
from .objects import (
    Obj,
    WorkloadInfo,
    is_bound,
    is_pending,
    is_terminated,
    object_key,
    parse_device,
    parse_gateway,
    parse_workload,
)
from .plugins import default_framework
from .queue import ClusterEvent, QueuedWorkload, SchedulingQueue
from .snapshot import Cache

log = logging.getLogger("fleetlet.scheduler")

SCHEDULED = "Scheduled"
REASON_UNSCHEDULABLE = "Unschedulable"
REASON_FAILED_SCHEDULING = "FailedScheduling"
COMPONENT = "fleetlet-scheduler"
# kube-scheduler's adaptive default scores 5% of a 10,000-node cluster (500 nodes) per pod; it is
# tuned for Go. Here a cycle scores 1% of the fleet, and never fewer than 100 devices (kube's
# minFeasibleNodesToFind), or all of them in fleets under 100. None restores kube's formula.
DEFAULT_PERCENTAGE_OF_DEVICES_TO_SCORE: int | None = 1


@dataclass
class SchedulerStats:
    cycles: int = 0
    bound: int = 0
    bind_conflicts: int = 0
    bind_errors: int = 0
    unschedulable: int = 0
    status_patches: int = 0
    events: int = 0
    expired_assumptions: int = 0
    leader_transitions: int = 0
    bind_latencies: list[float] = field(default_factory=list)  # queue entry -> bind answered (s)


@dataclass
class _EventRecord:
    name: str
    message: str
    count: int
    first: str
    last_sent: float


def _scheduled_condition(obj: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    status = (obj or {}).get("status")
    conditions = status.get("conditions") if isinstance(status, dict) else None
    if not isinstance(conditions, list):
        return None
    for c in conditions:
        if isinstance(c, dict) and c.get("type") == SCHEDULED:
            return c
    return None


def _with_condition(obj: Mapping[str, Any] | None, condition: Obj) -> list[Obj]:
    """The object's conditions with ``condition`` replacing (or added as) its type."""
    status = (obj or {}).get("status")
    conditions = status.get("conditions") if isinstance(status, dict) else None
    out = [c for c in (conditions or []) if isinstance(c, dict) and c.get("type") != condition["type"]]
    old = _scheduled_condition(obj) if condition["type"] == SCHEDULED else None
    if old is not None and old.get("status") == condition["status"] and old.get("lastTransitionTime"):
        condition = {**condition, "lastTransitionTime": old["lastTransitionTime"]}
    out.append(condition)
    return out


class Scheduler:
    def __init__(
        self,
        client: ApiClient,
        *,
        name: str = "fleetlet-scheduler",
        leader_election: bool = True,
        identity: str | None = None,
        lease_namespace: str = DEFAULT_LEASE_NAMESPACE,
        lease_duration: float = 15.0,
        framework: Framework | None = None,
        percentage_of_devices_to_score: int | None = DEFAULT_PERCENTAGE_OF_DEVICES_TO_SCORE,
        max_binds_in_flight: int = 256,
        batch_size: int = 32,
        assume_ttl: float = 30.0,
        event_interval: float = 60.0,
        max_writes_in_flight: int = 16,
        queue: SchedulingQueue | None = None,
        informers: SharedInformers | None = None,
    ) -> None:
        self.client = client
        self.shared = informers
        self.name = name
        self.identity = identity or default_identity()
        self.framework = framework or default_framework(
            percentage_of_devices_to_score=percentage_of_devices_to_score
        )
        self.cache = Cache(assume_ttl=assume_ttl)
        self.queue = queue or SchedulingQueue()
        self.batch_size = batch_size
        self.max_binds_in_flight = max_binds_in_flight
        self.event_interval = event_interval
        self.stats = SchedulerStats()
        self.elector: LeaderElector | None = None
        if leader_election:
            self.elector = LeaderElector(
                client,
                name=name,
                namespace=lease_namespace,
                identity=self.identity,
                lease_duration=lease_duration,
                on_started_leading=self._started_leading,
                on_stopped_leading=self._stopped_leading,
            )
        self._bind_slots = asyncio.Semaphore(max_binds_in_flight)
        self._write_slots = asyncio.Semaphore(max_writes_in_flight)
        self._binds: set[asyncio.Task[None]] = set()
        self._to_bind: list[tuple[QueuedWorkload, str]] = []  # assumed, not yet sent
        self._binding = 0  # bindings sent, not yet answered
        self._writes: set[asyncio.Task[None]] = set()
        self._lead_task: asyncio.Task[None] | None = None
        self._leading = False
        self._reported: dict[str, str] = {}  # workload key -> the Unschedulable message last written
        self._events: dict[str, _EventRecord] = {}
        self._registrations: list[tuple[Informer, HandlerRegistration]] = []
        self.devices = self._informer(
            "devices", self._device_added, self._device_updated, self._device_deleted
        )
        self.gateways = self._informer(
            "gateways", self._gateway_added, self._gateway_updated, self._gateway_deleted
        )
        self.workloads = self._informer(
            "workloads", self._workload_added, self._workload_updated, self._workload_deleted
        )

    def _informer(
        self,
        plural: str,
        on_add: Callable[[Obj], None],
        on_update: Callable[[Obj, Obj], None],
        on_delete: Callable[[Obj], None],
    ) -> Informer:
        """The process's shared informer when there is one (handlers start in run()), else our own."""
        if self.shared is None:
            return Informer(self.client, plural, on_add=on_add, on_update=on_update, on_delete=on_delete)
        inf = self.shared.informer(plural)
        self._registrations.append((inf, inf.add_handlers(on_add, on_update, on_delete, active=False)))
        return inf

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        if self.elector is None:
            return self._leading
        return self._leading and self.elector.is_leader

    @property
    def binds_in_flight(self) -> int:
        return self._binding

    async def wait_synced(self) -> None:
        for inf in (self.devices, self.gateways, self.workloads):
            await inf.wait_synced()

    async def run(self) -> None:
        """Watch the fleet, campaign for leadership, schedule while leading. Ends by cancellation."""
        for inf, reg in self._registrations:
            inf.activate(reg)
        informer_tasks = [
            asyncio.create_task(inf.run(), name=f"{self.name}-informer-{inf.resource.plural}")
            for inf in (self.devices, self.gateways, self.workloads)
            if not inf.shared
        ]
        housekeeping = asyncio.create_task(self._housekeeping(), name=f"{self.name}-housekeeping")
        try:
            await self.wait_synced()
            log.info(
                "%s: synced %d devices, %d pending workloads",
                self.identity, len(self.cache), len(self.queue),
            )  # fmt: skip
            if self.elector is not None:
                await self.elector.run()
            else:
                await self._started_leading()
                await asyncio.Event().wait()
        finally:
            for inf, reg in self._registrations:
                inf.remove_handlers(reg)
            await self._stopped_leading()
            for t in [*informer_tasks, housekeeping, *self._writes]:
                t.cancel()
            for t in [*informer_tasks, housekeeping, *self._writes]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def _started_leading(self) -> None:
        self._leading = True
        self.stats.leader_transitions += 1
        if self._lead_task is None or self._lead_task.done():
            self._lead_task = asyncio.create_task(self._lead(), name=f"{self.name}-schedule")

    async def _stopped_leading(self) -> None:
        """Stop binding at once; let binds already sent finish (they are atomic) before the
        lease is released, so a successor sees them in its cache."""
        self._leading = False
        task, self._lead_task = self._lead_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._binds:
            await asyncio.wait(list(self._binds), timeout=5.0)

    # -- the scheduling loop -------------------------------------------------------------------
    async def _lead(self) -> None:
        await self._catch_up_bound()
        log.info("%s: scheduling (%d pending)", self.identity, len(self.queue))
        while True:
            first = await self.queue.pop()
            batch = [first, *self.queue.pop_batch(self.batch_size - 1)]
            i = 0
            try:
                while i < len(batch):
                    if self._bind_slots.locked():
                        self._flush_binds()  # ours hold the slots we are about to wait for
                    await self._bind_slots.acquire()
                    if not self.is_leader:
                        self._bind_slots.release()
                        break
                    q = batch[i]
                    i += 1
                    started = False
                    try:
                        started = self._schedule_one(q)
                    except Exception:
                        # A bug must not stop scheduling for everyone: log it, retry this one later.
                        log.exception("%s: scheduling %s failed", self.identity, q.key)
                        self.cache.forget(q.key)
                        self.queue.add_retry(q)
                    finally:
                        if not started:
                            self._bind_slots.release()  # no bind task took the slot
            finally:
                self._flush_binds()
                for q in batch[i:]:
                    self.queue.requeue_inflight(q)
            if not self.is_leader:
                return
            await asyncio.sleep(0)

    async def _catch_up_bound(self) -> None:
        """A new leader's barrier: every bind made so far (by any scheduler) is in the cache."""
        try:
            listing = await self.client.list_all("workloads", field_selector="spec.deviceName!=")
        except ApiError as e:
            log.warning("%s: could not list bound workloads (%s); relying on the watch", self.identity, e)
            return
        for obj in listing.get("items") or []:
            self.cache.set_workload(parse_workload(obj))
            self.queue.delete(object_key(obj))

    def _schedule_one(self, q: QueuedWorkload) -> bool:
        """One cycle for one workload (CPU only). True when a bind was started (it owns a slot)."""
        info = q.info
        if self.cache.placement(info.key) is not None:
            self.queue.done(info.key)
            return False
        self.stats.cycles += 1
        result = self.framework.schedule(self.cache, info)
        if result.device is None:
            self.stats.unschedulable += 1
            self.queue.add_unschedulable(q, result.failed_plugins, q.cycle)
            self._report_unschedulable(info, result.summary)
            return False
        self.cache.assume(info, result.device)
        self._to_bind.append((q, result.device))
        return True

    def _flush_binds(self) -> None:
        """Send the assumed bindings of this cycle: one BindingList request per namespace.

        One request per binding cost the scheduler and the server more CPU in HTTP handling
        than the scheduling itself (bench/scheduler profiles); the list's bindings also share
        one group commit on the server.
        """
        if not self._to_bind:
            return
        by_namespace: dict[str, list[tuple[QueuedWorkload, str]]] = {}
        for q, device in self._to_bind:
            by_namespace.setdefault(q.info.namespace, []).append((q, device))
        self._to_bind = []
        for namespace, items in by_namespace.items():
            self._binding += len(items)
            task = asyncio.create_task(self._bind_batch(namespace, items))
            self._binds.add(task)
            task.add_done_callback(self._binds.discard)

    async def _bind_batch(self, namespace: str, items: list[tuple[QueuedWorkload, str]]) -> None:
        results: list[ApiError | None]
        try:
            results = await self.client.bind_many(namespace, [(q.info.name, d) for q, d in items])
        except asyncio.CancelledError:
            for q, _ in items:
                self.cache.forget(q.info.key)
                self.queue.requeue_inflight(q)
            raise
        except ApiError as e:  # the request as a whole failed (connection, 5xx): each item did
            results = [e] * len(items)
        finally:
            self._binding -= len(items)
            for _ in items:
                self._bind_slots.release()
        for (q, device), err in zip(items, results, strict=True):
            if err is None:
                self._bound(q)
            else:
                self._bind_failed(q, device, err)

    def _bind_failed(self, q: QueuedWorkload, device: str, e: ApiError) -> None:
        info = q.info
        self.cache.forget(info.key)
        latest = self.workloads.get(info.name, info.namespace)
        if e.is_conflict and (latest is None or not is_pending(latest)):
            self.stats.bind_conflicts += 1
            self.queue.done(info.key)  # bound by someone else: the watch tells us where
        else:
            # 409 while our view still says pending, 404 (device gone), 5xx, connection: retry.
            self.stats.bind_errors += 1
            log.info("%s: binding %s to %s failed: %s", self.identity, info.key, device, e)
            self.queue.add_retry(q)

    def _bound(self, q: QueuedWorkload) -> None:
        info = q.info
        self.cache.finish_binding(info.key)
        self.queue.done(info.key)
        self.stats.bound += 1
        self.stats.bind_latencies.append(time.monotonic() - q.initial_timestamp)
        # The binding subresource itself sets Scheduled=True (reason Bound) with the bind.
        self._reported.pop(info.key, None)
        self._events.pop(info.key, None)

    # -- unschedulable: condition and event ----------------------------------------------------
    def _report_unschedulable(self, info: WorkloadInfo, message: str) -> None:
        latest = self.workloads.get(info.name, info.namespace)
        cond = _scheduled_condition(latest)
        unchanged_on_server = (
            cond is not None
            and cond.get("status") == "False"
            and cond.get("reason") == REASON_UNSCHEDULABLE
            and cond.get("message") == message
        )
        if not unchanged_on_server and self._reported.get(info.key) != message:
            self._reported[info.key] = message
            self._spawn_write(self._patch_scheduled(info, latest, "False", REASON_UNSCHEDULABLE, message))
        self._record_event(info, message)

    def _record_event(self, info: WorkloadInfo, message: str) -> None:
        """One FailedScheduling Event per message; a repeat bumps its count at most once per interval."""
        now = time.monotonic()
        rec = self._events.get(info.key)
        if rec is not None and rec.message == message:
            if now - rec.last_sent < self.event_interval:
                return
            rec.count += 1
            rec.last_sent = now
            self._spawn_write(self._bump_event(info, rec))
            return
        rec = _EventRecord(f"{info.name}.{uuid.uuid4().hex[:16]}", message, 1, now_micro(), now)
        self._events[info.key] = rec
        self._spawn_write(self._create_event(info, rec))

    async def _patch_scheduled(
        self, info: WorkloadInfo, latest: Mapping[str, Any] | None, status: str, reason: str, message: str
    ) -> None:
        condition: Obj = {
            "type": SCHEDULED,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now_micro(),
        }
        patch = {"status": {"conditions": _with_condition(latest, condition)}}
        try:
            await self.client.patch_status("workloads", info.name, patch, info.namespace)
            self.stats.status_patches += 1
        except ApiError as e:
            if status == "False":
                self._reported.pop(info.key, None)  # try again on the next failure
            if not e.is_not_found:
                log.info("%s: status of %s: %s", self.identity, info.key, e)

    def _event_body(self, info: WorkloadInfo, rec: _EventRecord) -> Obj:
        return {
            "apiVersion": "fleetlet.io/v1",
            "kind": "Event",
            "metadata": {"name": rec.name, "namespace": info.namespace},
            "involvedObject": {
                "apiVersion": "fleetlet.io/v1",
                "kind": "Workload",
                "namespace": info.namespace,
                "name": info.name,
                "uid": info.uid,
            },
            "reason": REASON_FAILED_SCHEDULING,
            "message": rec.message,
            "type": "Warning",
            "count": rec.count,
            "firstTimestamp": rec.first,
            "lastTimestamp": now_micro(),
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "action": "Scheduling",
        }

    async def _create_event(self, info: WorkloadInfo, rec: _EventRecord) -> None:
        try:
            await self.client.create(self._event_body(info, rec), info.namespace)
            self.stats.events += 1
        except ApiError as e:
            log.info("%s: event for %s: %s", self.identity, info.key, e)

    async def _bump_event(self, info: WorkloadInfo, rec: _EventRecord) -> None:
        patch = {"count": rec.count, "lastTimestamp": now_micro()}
        try:
            await self.client.patch("events", rec.name, patch, info.namespace)
            self.stats.events += 1
        except ApiError as e:
            if e.is_not_found:
                await self._create_event(info, rec)
            else:
                log.info("%s: event for %s: %s", self.identity, info.key, e)

    def _spawn_write(self, coro: Coroutine[Any, Any, None]) -> None:
        async def bounded() -> None:
            async with self._write_slots:
                await coro

        task = asyncio.create_task(bounded())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    # -- housekeeping ----------------------------------------------------------------------------
    async def _housekeeping(self, period: float = 1.0) -> None:
        while True:
            await asyncio.sleep(period)
            expired = self.cache.cleanup_expired()
            if expired:
                self.stats.expired_assumptions += len(expired)
                log.warning(
                    "%s: %d assumed binds never confirmed; retrying them", self.identity, len(expired)
                )
                for key in expired:
                    ns, _, name = key.partition("/")
                    obj = self.workloads.get(name, ns)
                    if obj is not None and is_pending(obj):
                        self.queue.add(parse_workload(obj))
                self.queue.move_all(ClusterEvent.WORKLOAD_FREED)
            self.queue.flush_unschedulable_leftover()

    # -- informer handlers (run on the loop, between cycles) --------------------------------------
    def _device_added(self, obj: Obj) -> None:
        self.cache.upsert_device(obj)
        self.queue.move_all(ClusterEvent.DEVICE_ADD)

    def _device_updated(self, old: Obj, new: Obj) -> None:
        info = parse_device(new)
        node = self.cache.node(info.name)
        if node is not None and node.device == info:
            return  # a heartbeat or another change no filter looks at
        self.cache.set_device(info)
        self.queue.move_all(ClusterEvent.DEVICE_UPDATE)

    def _device_deleted(self, obj: Obj) -> None:
        self.cache.remove_device(str((obj.get("metadata") or {}).get("name", "")))

    def _gateway_added(self, obj: Obj) -> None:
        self.cache.upsert_gateway(obj)
        self.queue.move_all(ClusterEvent.GATEWAY_ADD)

    def _gateway_updated(self, old: Obj, new: Obj) -> None:
        info = parse_gateway(new)
        if self.cache.gateway(info.name) == info:
            return
        self.cache.set_gateway(info)
        self.queue.move_all(ClusterEvent.GATEWAY_UPDATE)

    def _gateway_deleted(self, obj: Obj) -> None:
        self.cache.remove_gateway(str((obj.get("metadata") or {}).get("name", "")))

    def _workload_added(self, obj: Obj) -> None:
        self._workload_changed(None, obj)

    def _workload_updated(self, old: Obj, new: Obj) -> None:
        self._workload_changed(old, new)

    def _workload_changed(self, old: Obj | None, new: Obj) -> None:
        info = parse_workload(new)
        key = info.key
        freed = old is not None and (
            (is_bound(old) and not is_bound(new))
            or (is_bound(new) and is_terminated(new) and not is_terminated(old))
        )
        self.cache.set_workload(info)
        if is_pending(new):
            if self.cache.placement(key) is None:
                self.queue.add(info)
        elif key in self.queue and self.queue.where(key) != "inflight":
            self.queue.delete(key)
        if freed:
            self.queue.move_all(ClusterEvent.WORKLOAD_FREED)

    def _workload_deleted(self, obj: Obj) -> None:
        key = object_key(obj)
        placed = self.cache.placement(key)
        self.cache.remove_workload(key)
        self.queue.delete(key)
        self._reported.pop(key, None)
        self._events.pop(key, None)
        if placed is not None:
            self.queue.move_all(ClusterEvent.WORKLOAD_FREED)
