"""The desired -> actual loop of the SBC agent.

Each pass lists fleetlet containers by label and, per desired workload:
- creates it when it has no containers; creates single missing containers;
- replaces *all* its containers when any carries a stale spec hash (updated together);
- removes duplicates (only possible after a crash mid-update) and undesired workloads;
- restarts exited containers per restartPolicy with exponential backoff (kubelet's
  CrashLoopBackOff: 10 s doubling to 5 min, reset after a long enough run).

Adoption: on start the first pass with a desired state finds running containers with the
desired spec hash and keeps them. Until the first desired state arrives (the gateway may be
slow or away when the agent restarts), nothing is created, restarted or removed: an empty
"desired" that merely has not been heard yet must not wipe the device (the kubelet waits for
its sources in the same way). Restart counts and backoff deadlines come from the state file.
When the engine is away (dockerd restarting), a pass raises EngineUnavailable; the loop
backs off and retries, then rebuilds everything from labels. No state is dropped meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .probes import ProbeManager, ProbeTarget
from .runtime import ContainerInfo, DockerRuntime, EngineError, EngineUnavailable, parse_timestamp_ms
from .spec import WorkloadSpec
from .state import AgentState, ContainerRecord, WorkloadRecord
from .status import StatsSampler, WorkloadReport, build_report

__all__ = ["Backoff", "Reconciler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Restart delays: the first restart is immediate, then initial, 2x, 4x ... up to maximum."""

    initial: float = 10.0
    maximum: float = 300.0
    # A container that ran this long before exiting starts a fresh streak.
    reset_after: float = 600.0

    def delay(self, streak: int) -> float:
        if streak <= 1:
            return 0.0
        return float(min(self.maximum, self.initial * (2 ** (streak - 2))))


@dataclass
class _Waiting:
    """Why a workload has no running containers yet (pull or create failure), and when to retry."""

    reason: str
    message: str
    streak: int
    retry_at: float
    spec_hash: str = ""  # the spec that failed: a changed spec is tried at once


class Reconciler:
    def __init__(
        self,
        runtime: DockerRuntime,
        state: AgentState,
        *,
        backoff: Backoff | None = None,
        resync: float = 2.0,
        engine_retry: Backoff | None = None,
        stats_interval: float = 30.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.state = state
        self.backoff = backoff or Backoff()
        self.engine_retry = engine_retry or Backoff(initial=0.5, maximum=10.0)
        self.resync = resync
        self.stats_interval = stats_interval
        self.on_change = on_change
        self.desired: dict[str, WorkloadSpec] = {}
        self.desired_gen = 0
        # False until set_desired() was called once: before that, an empty desired map means
        # "not heard yet", not "run nothing", so no container is removed.
        self.has_desired = False
        self.applied_gen = 0
        self.actual: dict[str, list[ContainerInfo]] = {}
        self.engine_error = ""
        self.passes = 0
        self.probes = ProbeManager(runtime, self._on_unhealthy)
        self.probes.on_readiness_change = self._changed
        self.stats = StatsSampler()
        self._waiting: dict[str, _Waiting] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._last_digest = ""
        self._pass_done = asyncio.Condition()

    # ------------------------------------------------------------ inputs

    def set_desired(self, workloads: list[WorkloadSpec], gen: int | None = None) -> None:
        self.desired = {w.uid: w for w in workloads}
        self.desired_gen = gen if gen is not None else self.desired_gen + 1
        self.has_desired = True
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------ loop

    async def run(self) -> None:
        """Reconcile until cancelled; never dies on engine outages."""
        engine_streak = 0
        stats_task = asyncio.create_task(self._stats_loop(), name="agent stats")
        try:
            while True:
                try:
                    await self.reconcile_once()
                    engine_streak = 0
                    timeout = self._next_wakeup()
                except EngineUnavailable as exc:
                    engine_streak += 1
                    if not self.engine_error:
                        log.warning("docker engine unavailable: %s", exc)
                    self.engine_error = f"docker engine unavailable: {exc}"
                    self._changed()
                    timeout = self.engine_retry.delay(engine_streak + 1)
                except Exception:
                    log.exception("reconcile pass failed")
                    timeout = self.resync
                # asyncio.timeout, not wait_for: 3.11's wait_for can lose a cancellation that
                # races with the inner wait finishing, which made stop() hang.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stats_task
            await self.probes.close()
            self.state.save_if_dirty()

    async def wait_pass(self, passes: int = 1) -> None:
        """Wait for ``passes`` more completed reconcile passes (for tests and the CLI)."""
        async with self._pass_done:
            target = self.passes + passes
            await self._pass_done.wait_for(lambda: self.passes >= target)

    def _next_wakeup(self) -> float:
        now = time.time()
        due = [self.resync]
        for uid in self.desired:
            rec = self.state.workloads.get(uid)
            for c in rec.containers.values() if rec else ():
                if c.restart_pending:
                    due.append(c.backoff_until - now)
        due += [w.retry_at - now for w in self._waiting.values()]
        return max(0.01, min(due))

    async def reconcile_once(self) -> None:
        async with self._lock:
            # A snapshot: set_desired() may run while this pass awaits the engine, and the
            # generation reported as applied must be the one this pass worked on.
            gen, desired, known = self.desired_gen, dict(self.desired), self.has_desired
            actual = await self.runtime.list_workloads()
            for uid, infos in actual.items():
                if uid not in desired and known:
                    log.info("removing undesired workload %s (%d containers)", uid, len(infos))
                    await self.runtime.delete_workload(uid)
            for uid in list(self.state.workloads):
                if uid not in desired and known:
                    self.state.forget(uid)
            for uid in list(self._waiting):
                if uid not in desired:
                    del self._waiting[uid]
            for uid, spec in desired.items():
                await self._reconcile_workload(spec, actual.get(uid, []))
            self.actual = await self.runtime.list_workloads()
            self.probes.sync(self._probe_targets())
            self.applied_gen = gen
            self.state.save_if_dirty()
            if self.engine_error:
                # Cleared only after a whole pass, so reports never mix pre-outage state with "ok".
                log.info("docker engine is back; state rebuilt from container labels")
                self.engine_error = ""
        async with self._pass_done:
            self.passes += 1
            self._pass_done.notify_all()
        self._changed()

    async def _reconcile_workload(self, spec: WorkloadSpec, infos: list[ContainerInfo]) -> None:
        want_hash = spec.spec_hash()
        rec = self.state.workload(spec.uid)
        names = {c.name for c in spec.containers}
        stale = [i for i in infos if i.spec_hash != want_hash or i.container not in names]
        if not infos or stale:
            waiting = self._waiting.get(spec.uid)
            if waiting is not None and waiting.spec_hash == want_hash and time.time() < waiting.retry_at:
                return
            try:
                if infos:
                    log.info("updating workload %s to generation %d", spec.name, spec.generation)
                    await self.runtime.update_workload(spec)
                else:
                    log.info("creating workload %s generation %d", spec.name, spec.generation)
                    await self.runtime.create_workload(spec)
            except EngineError as exc:
                self._set_waiting(spec.uid, exc.reason, str(exc), want_hash)
                return
            self._waiting.pop(spec.uid, None)
            # A new spec is a new pod: its restart history starts over.
            rec.containers = {}
            rec.generation, rec.spec_hash = spec.generation, want_hash
            self.state.dirty = True
            return
        if rec.generation != spec.generation or rec.spec_hash != want_hash:
            rec.generation, rec.spec_hash = spec.generation, want_hash
            self.state.dirty = True
        by_name: dict[str, list[ContainerInfo]] = {}
        for info in infos:
            by_name.setdefault(info.container, []).append(info)
        for group in by_name.values():
            if len(group) > 1:
                # Keep the running (or most recently started) one; never two of a container.
                group.sort(key=lambda i: (i.running, i.started_at), reverse=True)
                for extra in group[1:]:
                    log.warning("removing duplicate container %s of %s", extra.docker_name, spec.name)
                    await self.runtime.remove_container(extra.id)
                del group[1:]
        missing = [c for c in spec.containers if c.name not in by_name]
        if missing:
            try:
                await self.runtime.create_containers(spec, missing)
            except EngineError as exc:
                self._set_waiting(spec.uid, exc.reason, str(exc), want_hash)
                return
        for name, group in by_name.items():
            await self._handle_container(spec, group[0], rec.container(name))

    def _set_waiting(self, uid: str, reason: str, message: str, spec_hash: str) -> None:
        prev = self._waiting.get(uid)
        if prev is not None and prev.spec_hash != spec_hash:
            prev = None  # a new spec starts a fresh streak
        streak = (prev.streak if prev else 0) + 1
        delay = max(self.backoff.delay(streak + 1), 0.0)
        if reason == "ErrImagePull" and prev is not None:
            reason = "ImagePullBackOff"
        log.warning("workload %s waiting (%s): %s; retry in %.1fs", uid, reason, message, delay)
        self._waiting[uid] = _Waiting(reason, message, streak, time.time() + delay, spec_hash)

    async def _handle_container(self, spec: WorkloadSpec, info: ContainerInfo, rec: ContainerRecord) -> None:
        if info.running:
            return
        if info.status == "created":
            # Created but never started (agent stopped mid-create): start it now.
            await self.runtime.start_container(info.id)
            return
        now = time.time()
        if info.finished_at != rec.last_finished_at:
            self._account_exit(spec, info, rec, now)
        if rec.restart_pending and now >= rec.backoff_until:
            log.info(
                "restarting %s of %s (restart %d, last exit %s)",
                info.container,
                spec.name,
                rec.restarts + 1,
                rec.last_exit_code,
            )
            await self.runtime.start_container(info.id)
            rec.restarts += 1
            rec.restart_pending = False
            rec.backoff_until = 0.0
            self.state.dirty = True

    def _account_exit(
        self, spec: WorkloadSpec, info: ContainerInfo, rec: ContainerRecord, now: float
    ) -> None:
        """A new exit: record code and reason, and plan a restart if the policy wants one."""
        rec.last_finished_at = info.finished_at
        rec.last_exit_code = info.exit_code
        if rec.kill_reason:
            rec.last_reason, rec.kill_reason = rec.kill_reason, ""
        else:
            rec.last_reason = (
                "OOMKilled" if info.oom_killed else ("Completed" if info.exit_code == 0 else "Error")
            )
            rec.last_message = info.error
        policy = spec.restart_policy
        restart = policy == "Always" or (policy == "OnFailure" and info.exit_code != 0)
        if restart:
            ran = _seconds_between(info.started_at, info.finished_at)
            rec.crash_streak = (
                1 if ran is not None and ran >= self.backoff.reset_after else rec.crash_streak + 1
            )
            rec.last_backoff = self.backoff.delay(rec.crash_streak)
            rec.backoff_until = now + rec.last_backoff
            rec.restart_pending = True
        else:
            rec.restart_pending = False
        log.info(
            "container %s of %s exited %d (%s)%s",
            info.container,
            spec.name,
            info.exit_code,
            rec.last_reason,
            f"; restart in {rec.last_backoff:g}s" if restart else "",
        )
        self.state.dirty = True

    async def _on_unhealthy(self, target: ProbeTarget, message: str) -> None:
        """Liveness failed: stop the container; the next pass restarts it per policy."""
        async with self._lock:
            spec = self.desired.get(target.uid)
            if spec is None:
                return
            info = await self.runtime.inspect(target.cid)
            if info is None or not info.running or info.started_at != target.started_at:
                return  # already gone or restarted since the probe began
            rec = self.state.workload(target.uid).container(target.container)
            rec.kill_reason = "Unhealthy"
            rec.last_message = message
            self.state.dirty = True
            self.state.save_if_dirty()
            try:
                await self.runtime.stop_container(target.cid)
            except EngineUnavailable:
                pass  # the engine is away; the container's fate is decided on its return
        self.wake()

    def _probe_targets(self) -> list[ProbeTarget]:
        targets = []
        for uid, infos in self.actual.items():
            spec = self.desired.get(uid)
            if spec is None:
                continue
            for info in infos:
                c = spec.container(info.container)
                if c is None or not info.running or info.spec_hash != spec.spec_hash():
                    continue
                if c.liveness or c.readiness:
                    targets.append(
                        ProbeTarget(uid, c.name, info.id, info.started_at, c.liveness, c.readiness)
                    )
        return targets

    # ------------------------------------------------------------ outputs

    def reports(self) -> list[WorkloadReport]:
        out = []
        for uid, spec in self.desired.items():
            infos = [i for i in self.actual.get(uid, []) if i.spec_hash == spec.spec_hash()]
            ready = {i.id: self.probes.ready(i.id, i.started_at) for i in infos}
            messages = {i.id: self.probes.message(i.id, i.started_at) for i in infos}
            waiting = self._waiting.get(uid)
            out.append(
                build_report(
                    spec,
                    infos,
                    self.state.workloads.get(uid) or WorkloadRecord(),
                    ready=ready,
                    probe_messages=messages,
                    usage=self.stats.usage,
                    waiting_reason=waiting.reason if waiting else "",
                    waiting_message=waiting.message if waiting else "",
                )
            )
        return out

    def report(self, uid: str) -> WorkloadReport:
        return next(r for r in self.reports() if r.uid == uid)

    def _changed(self) -> None:
        """Tell the session when the reportable picture changed (it then sends a report)."""
        if self.on_change is None:
            return
        parts = [self.engine_error, str(self.applied_gen)]
        for r in self.reports():
            parts.append(f"{r.uid}:{r.generation}:{r.state}:{r.ready}:{r.restarts}:{r.exit_code}:{r.reason}")
        digest = hashlib.sha256("|".join(parts).encode()).hexdigest()
        if digest != self._last_digest:
            self._last_digest = digest
            self.on_change()

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval)
            running = {i.id for infos in self.actual.values() for i in infos if i.running}
            for cid in running:
                try:
                    self.stats.add(cid, await self.runtime.stats(cid))
                except EngineUnavailable:
                    break
                except Exception as exc:  # container went away between list and stats
                    log.debug("stats of %s failed: %s", cid[:12], exc)
            self.stats.retain(running)


def _seconds_between(start: str, end: str) -> float | None:
    a, b = parse_timestamp_ms(start), parse_timestamp_ms(end)
    if a <= 0 or b <= 0:
        return None
    return (b - a) / 1000.0
