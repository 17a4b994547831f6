"""kubectl-apply semantics over GET + PUT: a three-way merge that keeps fields others own.

The last manifest we applied is kept in an annotation. The change to send is
(desired) + (keys the user removed since last time -> delete); it is merged onto the live
object, so fields set by others (the scheduler's spec.deviceName, say) survive an apply.
"""

from __future__ import annotations

import copy
import json
from typing import Any

LAST_APPLIED = "fleetlet.io/last-applied-configuration"

Obj = dict[str, Any]


def with_last_applied(desired: Obj) -> Obj:
    """``desired`` plus the annotation recording it (without status, resourceVersion or itself)."""
    out = copy.deepcopy(desired)
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    record = copy.deepcopy(out)
    record["metadata"].pop("resourceVersion", None)
    if annotations:
        record["metadata"]["annotations"] = annotations
    else:
        record["metadata"].pop("annotations", None)
    annotations[LAST_APPLIED] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    meta["annotations"] = annotations
    return out


def last_applied(live: Obj) -> Obj | None:
    raw = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not isinstance(raw, str):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def three_way_patch(previous: Obj | None, desired: Obj) -> Obj:
    """A JSON merge patch turning ``live`` toward ``desired``; keys only in ``previous`` become null."""
    patch: Obj = {}
    for key, value in desired.items():
        prev_value = previous.get(key) if previous else None
        if isinstance(value, dict) and isinstance(prev_value, dict):
            patch[key] = three_way_patch(prev_value, value)
        else:
            patch[key] = copy.deepcopy(value)
    if previous:
        for key in previous:
            if key not in desired:
                patch[key] = None
    return patch


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def has_deletions(patch: Any) -> bool:
    if not isinstance(patch, dict):
        return False
    return any(v is None or has_deletions(v) for v in patch.values())


def is_subset(want: Any, have: Any) -> bool:
    """Every value in ``want`` equals the one in ``have``; ``have`` may carry server defaults."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and is_subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(is_subset(w, h) for w, h in zip(want, have, strict=True))
        )
    return bool(want == have)


def plan_update(live: Obj, manifest: Obj) -> Obj | None:
    """The PUT body for applying ``manifest`` over ``live``, or None when nothing would change."""
    desired = with_last_applied(manifest)
    patch = three_way_patch(last_applied(live), desired)
    base = copy.deepcopy(live)
    base.pop("status", None)
    if not has_deletions(patch) and is_subset(desired, base):
        return None
    body: Obj = merge_patch(base, patch)
    if body == base:
        return None
    if not (manifest.get("metadata") or {}).get("resourceVersion"):
        # The resourceVersion we read is the precondition: a concurrent writer gets us a 409.
        # (A resourceVersion written in the manifest stays: it is the user's own precondition.)
        body.setdefault("metadata", {})["resourceVersion"] = (live.get("metadata") or {}).get(
            "resourceVersion"
        )
    return body
