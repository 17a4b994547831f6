"""Device reports (wire) -> Workload and Device status fields (API). Pure functions."""

from __future__ import annotations

from typing import Any

from .status_sync import now_rfc3339
from .wire import WorkloadState, WorkloadStatus

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
    fields: Obj = {
        "phase": phase,
        "reason": reason,
        "message": message,
        "restarts": ws.restarts,
        "observedGeneration": ws.generation,
        "conditions": conditions,
        ("containerStatuses" if runtime == "docker" else "appStatuses"): [app],
    }
    return fields


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
