"""Device reports (wire) -> Workload and Device status fields (API). Pure functions."""

from __future__ import annotations

from math import floor, log10
from typing import Any

from fleetlet.hardware.quantity import QuantityError, parse_bytes, parse_cpu_millis

from .status_sync import now_rfc3339
from .wire import ContainerStatus, WorkloadState, WorkloadStatus

Obj = dict[str, Any]

# wire state -> (phase, reason) in the API's WorkloadStatus
_PHASES: dict[WorkloadState, tuple[str, str]] = {
    WorkloadState.PENDING: ("Delivered", "Pending"),
    WorkloadState.FETCHING: ("Delivered", "Fetching"),
    WorkloadState.STARTING: ("Delivered", "Starting"),
    WorkloadState.RUNNING: ("Running", "Running"),
    WorkloadState.SUCCEEDED: ("Succeeded", "Completed"),
    WorkloadState.FAILED: ("Failed", "Error"),
    WorkloadState.BACKOFF: ("Running", "CrashLoopBackOff"),
    WorkloadState.TERMINATING: ("Running", "Terminating"),
}


def set_condition(
    conditions: list[Obj], ctype: str, status: str, reason: str, message: str = ""
) -> list[Obj]:
    """Replace condition ``ctype``; keep its lastTransitionTime when the status did not change."""
    out: list[Obj] = []
    old: Obj | None = None
    for c in conditions:
        if isinstance(c, dict) and c.get("type") == ctype:
            old = c
        elif isinstance(c, dict):
            out.append(c)
    new: Obj = {"type": ctype, "status": status, "reason": reason}
    if message:
        new["message"] = message
    if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
        new["lastTransitionTime"] = old["lastTransitionTime"]
    else:
        new["lastTransitionTime"] = now_rfc3339()
    out.append(new)
    return sorted(out, key=lambda c: str(c.get("type")))


def workload_fields(ws: WorkloadStatus, current: Obj, runtime: str) -> Obj:
    """Significant status fields of one Workload from its entry in a device report."""
    phase, reason = _PHASES.get(ws.state, ("Unknown", "Unknown"))
    if ws.rolled_back:
        reason = "RolledBack"
    ready = ws.state is WorkloadState.RUNNING and ws.ready is not False
    message = ws.message or ""
    conditions = list(current.get("conditions") or [])
    conditions = set_condition(conditions, "Delivered", "True", "DeviceReported")
    conditions = set_condition(conditions, "Ready", "True" if ready else "False", reason, message)
    app: Obj = {"state": ws.state.name.lower(), "restarts": ws.restarts, "ready": ready}
    if ws.exit_code is not None:
        app["exitCode"] = ws.exit_code
    if ws.rolled_back:
        app["rolledBack"] = True
    statuses = [app]
    if runtime == "docker" and ws.containers:
        before = {
            str(c.get("name")): c.get("usage")
            for c in current.get("containerStatuses") or []
            if isinstance(c, dict) and isinstance(c.get("usage"), dict)
        }
        statuses = [_container_status(c, before.get(c.name)) for c in ws.containers]
    fields: Obj = {
        "phase": phase,
        "reason": reason,
        "message": message,
        "restarts": ws.restarts,
        "observedGeneration": ws.generation,
        "conditions": conditions,
        ("containerStatuses" if runtime == "docker" else "appStatuses"): statuses,
    }
    return fields


def _container_status(c: ContainerStatus, before: Obj | None) -> Obj:
    """One entry of containerStatuses: as the workload's aggregate entry, plus name and usage."""
    out: Obj = {
        "name": c.name,
        "state": c.state.name.lower(),
        "restarts": c.restarts,
        "ready": c.state is WorkloadState.RUNNING and c.ready is not False,
    }
    if c.exit_code is not None:
        out["exitCode"] = c.exit_code
    usage: Obj = {}
    before = before or {}
    if c.cpu is not None:
        usage["cpu"] = cpu_usage(c.cpu, before.get("cpu"))
    if c.memory is not None:
        usage["memory"] = memory_usage(c.memory, before.get("memory"))
    if usage:
        out["usage"] = usage
    return out


# Usage goes into status, and every change of status is a write to the server (coalesced to at
# most one per second per object, but a heartbeat every report_interval would still be one write
# per device per heartbeat if usage were copied exactly: CPU use is never the same twice). So a
# value is rounded to 2 significant figures (within 5 %, which is what a human reads anyway), and
# it is kept as it was unless the new sample moved out of a band around it: 25 % or 20 m for CPU
# (noisy), 10 % or 1 MiB for memory. A steady container then writes nothing after its first
# report, a jittery one writes only when its use really changes, and a value sitting on a
# rounding boundary cannot flap between two roundings.
CPU_BAND, CPU_FLOOR = 0.25, 20  # millicores
MEMORY_BAND, MEMORY_FLOOR = 0.10, 1 << 20  # bytes


def _round_sig(value: float, digits: int = 2) -> float:
    if value <= 0:
        return 0.0
    scale = 10 ** (floor(log10(value)) - digits + 1)
    return float(round(value / scale) * scale)


def _within(new: int, old: int, band: float, floor_: int) -> bool:
    return abs(new - old) <= max(band * old, floor_)


def cpu_usage(millicores: int, before: Any = None) -> str:
    """``millicores`` as a quantity ("0", "7m", "120m", "1300m"), or ``before`` if close enough."""
    if isinstance(before, str):
        try:
            if _within(millicores, parse_cpu_millis(before), CPU_BAND, CPU_FLOOR):
                return before
        except QuantityError:
            pass
    rounded = int(_round_sig(millicores))
    return f"{rounded}m" if rounded else "0"


def memory_usage(num_bytes: int, before: Any = None) -> str:
    """``num_bytes`` as a binary quantity ("512Ki", "34Mi", "1.2Gi"), or ``before`` if close enough."""
    if isinstance(before, str):
        try:
            if _within(num_bytes, parse_bytes(before), MEMORY_BAND, MEMORY_FLOOR):
                return before
        except QuantityError:
            pass
    value, unit = float(num_bytes), ""
    for suffix in ("Ki", "Mi", "Gi", "Ti"):
        if value < 1024:
            break
        value, unit = value / 1024, suffix
    rounded = _round_sig(value)  # below 1024 of its unit: 1023.9Mi is 1000Mi
    text = f"{rounded:.1f}" if rounded < 10 and rounded != int(rounded) else f"{int(rounded)}"
    return f"{text}{unit}"


def delivery_failed_fields(current: Obj, reason: str, message: str) -> Obj:
    """The gateway could not build the workload's entry (a missing ConfigMap, say)."""
    conditions = set_condition(list(current.get("conditions") or []), "Delivered", "False", reason, message)
    return {"reason": reason, "message": message, "conditions": conditions}


def device_conditions(current: Obj, online: bool) -> list[Obj]:
    if online:
        return set_condition(list(current.get("conditions") or []), "Ready", "True", "DeviceReporting")
    return set_condition(
        list(current.get("conditions") or []),
        "Ready",
        "False",
        "DeviceSilent",
        "the device stopped reporting",
    )
