"""Per-workload reports: container states in Kubernetes terms, plus CPU and memory use.

States follow the kubelet: Waiting (not started yet: pulling, creating), Running,
Terminated (exited and will not be restarted) and CrashLoopBackOff (exited, restart due after
a backoff). A workload takes the worst state of its containers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from .runtime import ContainerInfo
from .spec import WorkloadSpec
from .state import ContainerRecord, WorkloadRecord

__all__ = [
    "ContainerReport",
    "ContainerState",
    "StatsSampler",
    "WorkloadReport",
    "build_report",
    "memory_bytes",
]

ContainerState = Literal["Waiting", "Running", "Terminated", "CrashLoopBackOff"]
_SEVERITY: dict[ContainerState, int] = {"Running": 0, "Terminated": 1, "Waiting": 2, "CrashLoopBackOff": 3}


@dataclass(frozen=True, slots=True)
class ContainerReport:
    name: str
    state: ContainerState
    ready: bool
    restarts: int
    container_id: str = ""
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    started_at: str = ""
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    backoff_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkloadReport:
    uid: str
    name: str
    generation: int
    state: ContainerState
    ready: bool
    restarts: int
    exit_code: int | None
    reason: str
    message: str
    has_readiness: bool
    containers: tuple[ContainerReport, ...] = field(default_factory=tuple)

    def container(self, name: str) -> ContainerReport:
        return next(c for c in self.containers if c.name == name)

    def to_wire(self) -> Any:
        """A ``fleetlet.gateway.wire.WorkloadStatus`` for the report message, with one entry per
        container carrying its CPU (millicores) and memory (bytes) use."""
        from fleetlet.gateway.wire import ContainerStatus, WorkloadStatus

        containers = tuple(
            ContainerStatus(
                name=c.name,
                state=_wire_state(c.state, c.reason, c.exit_code),
                restarts=c.restarts,
                exit_code=c.exit_code,
                ready=c.ready if self.has_readiness else None,
                # cpu_percent is of one core: 100 % = 1000 millicores.
                cpu=None if c.cpu_percent is None else max(0, round(c.cpu_percent * 10)),
                memory=c.memory_bytes,
            )
            for c in self.containers
        )
        return WorkloadStatus(
            uid=self.uid,
            generation=self.generation,
            state=_wire_state(self.state, self.reason, self.exit_code),
            restarts=self.restarts,
            exit_code=self.exit_code,
            message=self.message or self.reason or None,
            ready=self.ready if self.has_readiness else None,
            containers=containers,
        )


def _wire_state(state: ContainerState, reason: str, exit_code: int | None) -> Any:
    from fleetlet.gateway.wire import WorkloadState

    if state == "Running":
        return WorkloadState.RUNNING
    if state == "CrashLoopBackOff":
        return WorkloadState.BACKOFF
    if state == "Terminated":
        return WorkloadState.SUCCEEDED if not exit_code else WorkloadState.FAILED
    if reason in ("Pulling", "ErrImagePull", "ImagePullBackOff"):
        return WorkloadState.FETCHING
    if reason == "ContainerCreating":
        return WorkloadState.STARTING
    return WorkloadState.PENDING


def build_report(
    spec: WorkloadSpec,
    infos: list[ContainerInfo],
    record: WorkloadRecord,
    *,
    ready: dict[str, bool],
    probe_messages: dict[str, str] | None = None,
    usage: dict[str, tuple[float | None, int | None]] | None = None,
    waiting_reason: str = "",
    waiting_message: str = "",
    now: float | None = None,
) -> WorkloadReport:
    """Combine engine state (``infos``), agent records, probe results and usage samples.

    ``ready`` and ``usage`` are keyed by container id.
    """
    now = time.time() if now is None else now
    by_name = {i.container: i for i in infos}
    reports = []
    for c in spec.containers:
        rec = record.containers.get(c.name) or ContainerRecord()
        info = by_name.get(c.name)
        reports.append(
            _container_report(
                c.name,
                info,
                rec,
                spec,
                has_readiness=c.readiness is not None,
                ready=ready,
                probe_messages=probe_messages or {},
                usage=usage or {},
                waiting_reason=waiting_reason,
                waiting_message=waiting_message,
                now=now,
            )
        )
    worst = max(reports, key=lambda r: _SEVERITY[r.state])
    exit_codes = [r.exit_code for r in reports if r.exit_code is not None]
    failing = [code for code in exit_codes if code != 0]
    return WorkloadReport(
        uid=spec.uid,
        name=spec.name,
        generation=spec.generation,
        state=worst.state,
        ready=all(r.ready for r in reports),
        restarts=sum(r.restarts for r in reports),
        exit_code=failing[-1] if failing else (exit_codes[-1] if exit_codes else None),
        reason=worst.reason,
        message=next((f"{r.name}: {r.message}" for r in reports if r.message and r is worst), ""),
        has_readiness=any(c.readiness is not None for c in spec.containers),
        containers=tuple(reports),
    )


def _container_report(
    name: str,
    info: ContainerInfo | None,
    rec: ContainerRecord,
    spec: WorkloadSpec,
    *,
    has_readiness: bool,
    ready: dict[str, bool],
    probe_messages: dict[str, str],
    usage: dict[str, tuple[float | None, int | None]],
    waiting_reason: str,
    waiting_message: str,
    now: float,
) -> ContainerReport:
    if info is None or info.status == "created":
        return ContainerReport(
            name=name,
            state="Waiting",
            ready=False,
            restarts=rec.restarts,
            container_id=info.id if info else "",
            exit_code=rec.last_exit_code,
            reason=waiting_reason or "ContainerCreating",
            message=waiting_message,
        )
    cpu, mem = usage.get(info.id, (None, None))
    if info.running:
        is_ready = ready.get(info.id, False) if has_readiness else True
        return ContainerReport(
            name=name,
            state="Running",
            ready=is_ready,
            restarts=rec.restarts,
            container_id=info.id,
            exit_code=rec.last_exit_code,
            reason="" if is_ready else "NotReady",
            message="" if is_ready else probe_messages.get(info.id, ""),
            started_at=info.started_at,
            cpu_percent=cpu,
            memory_bytes=mem,
        )
    reason = rec.last_reason or ("Completed" if info.exit_code == 0 else "Error")
    if rec.restart_pending:
        wait = max(0.0, rec.backoff_until - now)
        return ContainerReport(
            name=name,
            state="CrashLoopBackOff",
            ready=False,
            restarts=rec.restarts,
            container_id=info.id,
            exit_code=info.exit_code,
            reason="CrashLoopBackOff",
            message=(
                f"back-off {rec.last_backoff:g}s restarting failed container "
                f"(last exit {info.exit_code}, {reason}{': ' + rec.last_message if rec.last_message else ''})"
            ),
            backoff_seconds=rec.last_backoff if wait > 0 else 0.0,
        )
    return ContainerReport(
        name=name,
        state="Terminated",
        ready=False,
        restarts=rec.restarts,
        container_id=info.id,
        exit_code=info.exit_code,
        reason=reason,
        message=rec.last_message
        or f"exited with code {info.exit_code} (restartPolicy {spec.restart_policy})",
    )


def memory_bytes(stats: dict[str, Any]) -> int | None:
    """Working set as `docker stats` shows it: usage minus inactive page cache."""
    mem = stats.get("memory_stats") or {}
    usage = mem.get("usage")
    if not isinstance(usage, int):
        return None
    extra = mem.get("stats") or {}
    inactive = extra.get("total_inactive_file", extra.get("inactive_file", 0))
    return max(0, usage - int(inactive or 0))


class StatsSampler:
    """CPU % from the difference of two one-shot samples (one-shot skips docker's 1 s wait)."""

    def __init__(self) -> None:
        self._prev: dict[str, tuple[int, int]] = {}
        self.usage: dict[str, tuple[float | None, int | None]] = {}

    def add(self, cid: str, stats: dict[str, Any]) -> None:
        cpu = stats.get("cpu_stats") or {}
        total = (cpu.get("cpu_usage") or {}).get("total_usage")
        system = cpu.get("system_cpu_usage")
        ncpu = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
        percent: float | None = None
        if isinstance(total, int) and isinstance(system, int):
            prev = self._prev.get(cid)
            if prev is not None and system > prev[1]:
                percent = round(max(0.0, (total - prev[0]) / (system - prev[1]) * ncpu * 100.0), 2)
            self._prev[cid] = (total, system)
        self.usage[cid] = (percent, memory_bytes(stats))

    def retain(self, cids: set[str]) -> None:
        for cid in list(self._prev):
            if cid not in cids:
                del self._prev[cid]
        for cid in list(self.usage):
            if cid not in cids:
                del self.usage[cid]
