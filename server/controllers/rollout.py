"""Rollout logic without I/O: revision hashes, wave targets, workload health and the plans.

The deployment controller turns API objects into :class:`WorkloadView` lists, calls a planner,
and carries out the :class:`Plan`. Keeping this pure makes the arithmetic testable on its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

REVISION_LABEL = "fleetlet.io/revision"
DEPLOYMENT_LABEL = "fleetlet.io/deployment"
ROLLED_BACK_FROM = "fleetlet.io/rolled-back-from"

DEFAULT_WAVES: tuple[int | str, ...] = ("100%",)
DEFAULT_MAX_UNAVAILABLE = "25%"
DEFAULT_FAILURE_THRESHOLD = 0.5  # as the API defaults it
DEFAULT_AUTO_ROLLBACK = True
DEFAULT_HISTORY_LIMIT = 10
# A new workload that restarted this often during its rollout counts as failing.
RESTART_LIMIT = 3
# Ready=False reasons that devices report for a workload that will not come up on its own.
FAILURE_REASONS = frozenset({"CrashLoop", "CrashLoopBackOff", "RolledBack"})


# ---- revisions ----------------------------------------------------------------------------


def template_hash(template: Mapping[str, Any]) -> str:
    """A stable 10-hex-digit hash of a template (metadata and spec), the revision's identity."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


_ALNUM = string.ascii_lowercase + string.digits


def workload_name(deployment: str, revision: str) -> str:
    """``<deployment>-<hash5>-<rand5>``, within the 253-character name limit."""
    suffix = "".join(secrets.choice(_ALNUM) for _ in range(5))
    return f"{deployment[:240]}-{revision[:5]}-{suffix}"


@dataclass
class HistoryEntry:
    revision: int
    hash: str
    template: Obj
    created: str = ""

    def to_obj(self) -> Obj:
        return {
            "revision": self.revision,
            "hash": self.hash,
            "template": self.template,
            "created": self.created,
        }

    @classmethod
    def from_obj(cls, raw: Any) -> HistoryEntry | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("template"), dict):
            return None
        try:
            return cls(
                int(raw.get("revision", 0)),
                str(raw.get("hash", "")),
                raw["template"],
                str(raw.get("created", "")),
            )
        except (TypeError, ValueError):
            return None


def parse_history(raw: Any) -> list[HistoryEntry]:
    if not isinstance(raw, list):
        return []
    out = [e for e in (HistoryEntry.from_obj(r) for r in raw) if e is not None and e.hash]
    return sorted(out, key=lambda e: e.revision)


def record_revision(
    history: Sequence[HistoryEntry], update_hash: str, template: Obj, limit: int, keep: set[str], now: str
) -> list[HistoryEntry]:
    """History with ``update_hash`` as the newest revision.

    A template seen before keeps its entry but moves to the next revision number, as kubectl's
    rollout history does after an undo. Entries beyond ``limit`` are dropped, oldest first,
    except the update revision and the hashes in ``keep`` (revisions that still have workloads).
    """
    entries = [HistoryEntry(e.revision, e.hash, e.template, e.created) for e in history]
    top = max((e.revision for e in entries), default=0)
    current = next((e for e in entries if e.hash == update_hash), None)
    if current is None:
        entries.append(HistoryEntry(top + 1, update_hash, template, now))
    elif current.revision != top:
        current.revision = top + 1
    entries.sort(key=lambda e: e.revision)
    limit = max(0, limit)
    droppable = [e for e in entries if e.hash != update_hash and e.hash not in keep]
    excess = len(entries) - (limit + 1)
    drop = {id(e) for e in droppable[: max(0, excess)]}
    return [e for e in entries if id(e) not in drop]


def previous_revision(history: Sequence[HistoryEntry], update_hash: str) -> HistoryEntry | None:
    """The newest revision before the update one: where a rollback goes."""
    others = [e for e in history if e.hash != update_hash]
    return max(others, key=lambda e: e.revision) if others else None


# ---- waves and budgets --------------------------------------------------------------------


def int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    """``3`` -> 3, ``"25%"`` of ``total`` -> rounded up or down; junk -> ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not an integer or percentage: {value!r}")
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            pct = float(text[:-1])
            exact = pct * total / 100.0
            # Guard float noise: 10% of 30 must be exactly 3.
            exact = round(exact, 9)
            return max(0, math.ceil(exact) if round_up else math.floor(exact))
        return max(0, int(text))
    raise ValueError(f"not an integer or percentage: {value!r}")


def wave_targets(waves: Sequence[Any] | None, total: int) -> list[int]:
    """Cumulative number of updated workloads at the end of each wave.

    Percentages round up (a 10% wave of 4 is 1, never 0), every target is capped at ``total``,
    targets never go down, and the last wave always reaches ``total``.
    """
    spec = list(waves) if waves else list(DEFAULT_WAVES)
    out: list[int] = []
    prev = 0
    for w in spec:
        t = min(total, int_or_percent(w, total, round_up=True))
        t = max(prev, t)
        out.append(t)
        prev = t
    if not out or out[-1] < total:
        out.append(total)
    return out


def max_unavailable(value: Any, total: int, *, every_device: bool) -> int:
    """Rounded down as in Kubernetes. EveryDevice replaces in place (delete, then create), so it
    needs at least 1 to make progress; Replicas mode creates before it deletes and can use 0."""
    raw = DEFAULT_MAX_UNAVAILABLE if value is None else value
    n = min(total, int_or_percent(raw, total, round_up=False))
    return max(1, n) if every_device else n


def advance_wave(targets: Sequence[int], started: int, healthy_new: int, *, paused: bool) -> int:
    """The wave (1-based) the rollout is in. 0 = not started (paused before the first wave).

    A wave is complete when ``healthy_new`` reaches its target; the next one starts only
    when not paused, so pause holds the rollout between waves.
    """
    wave = max(0, min(started, len(targets)))
    if wave == 0:
        if paused:
            return 0
        wave = 1
    while wave < len(targets) and healthy_new >= targets[wave - 1] and not paused:
        wave += 1
    return wave


def failure_ratio(failed: int, total: int) -> float:
    return failed / total if total > 0 else 0.0


def exceeds_threshold(failed: int, total: int, threshold: float) -> bool:
    """Strictly above: threshold 0 rolls back on any failure, 1 never does."""
    return failed > 0 and failure_ratio(failed, total) > threshold


# ---- workload health ----------------------------------------------------------------------


def parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def condition(obj: Mapping[str, Any], ctype: str) -> Obj | None:
    status = obj.get("status")
    conds = status.get("conditions") if isinstance(status, dict) else None
    if isinstance(conds, list):
        for c in conds:
            if isinstance(c, dict) and c.get("type") == ctype:
                return c
    return None


def workload_ready(wl: Mapping[str, Any]) -> bool:
    status = wl.get("status")
    if not isinstance(status, dict) or status.get("phase") != "Running":
        return False
    c = condition(wl, "Ready")
    return c is not None and c.get("status") == "True"


def ready_since(wl: Mapping[str, Any]) -> float | None:
    c = condition(wl, "Ready")
    return parse_time(c.get("lastTransitionTime")) if c else None


def workload_failed(wl: Mapping[str, Any], restart_limit: int = RESTART_LIMIT) -> bool:
    status = wl.get("status")
    if not isinstance(status, dict):
        return False
    if status.get("phase") == "Failed":
        return True
    restarts = status.get("restarts")
    if isinstance(restarts, int) and restarts >= restart_limit:
        return True
    c = condition(wl, "Ready")
    return c is not None and c.get("status") == "False" and c.get("reason") in FAILURE_REASONS


@dataclass
class WorkloadView:
    """What planning needs to know about one live workload."""

    name: str
    revision: str
    device: str = ""
    ready: bool = False
    available: bool = False  # ready for at least minReadySeconds (and its device reachable)
    failed: bool = False
    created: str = ""

    def rank(self) -> tuple[int, int, int, int, str]:
        """Lower is worse: what to delete first."""
        return (
            int(self.available),
            int(self.ready),
            int(not self.failed),
            int(bool(self.device)),
            _invert(self.created),
        )


def _invert(created: str) -> str:
    # Newer (larger) timestamps sort first among equals: delete the youngest first.
    return "".join(chr(0x10FFFF - ord(ch)) for ch in created)


@dataclass
class Plan:
    wave: int
    targets: list[int]
    create_new: int = 0
    create_old: int = 0
    create_on_devices: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    complete: bool = False  # no old workloads left and the update revision is fully available


def _delete_within_budget(candidates: Sequence[WorkloadView], want: int, budget: int, plan: Plan) -> None:
    """Delete up to ``want``: unavailable ones are free, available ones spend the budget."""
    for w in sorted(candidates, key=WorkloadView.rank):
        if want <= 0:
            break
        if not w.available:
            plan.delete.append(w.name)
            want -= 1
        elif budget > 0:
            plan.delete.append(w.name)
            want -= 1
            budget -= 1


def plan_replicas(
    *,
    total: int,
    targets: list[int],
    wave: int,
    new: Sequence[WorkloadView],
    old: Sequence[WorkloadView],
    max_unavail: int,
    halted: bool,
    can_create_old: bool,
) -> Plan:
    """Replicas mode: create updated workloads for the wave first, then retire old ones as long
    as at least ``total - max_unavail`` workloads stay available."""
    plan = Plan(wave=wave, targets=targets)
    if not old:
        desired_new = total
    elif halted or wave == 0:
        desired_new = len(new)
    else:
        desired_new = targets[wave - 1]
    new_target = min(total, max(desired_new, len(new)))
    old_target = total - new_target
    if len(new) > total:
        plan.delete.extend(w.name for w in sorted(new, key=WorkloadView.rank)[: len(new) - total])
    missing_new = new_target - min(len(new), total)
    missing_old = max(0, old_target - len(old))
    if missing_old and not can_create_old:
        missing_new += missing_old  # never leave the fleet short for want of the old template
        missing_old = 0
    plan.create_new = max(0, missing_new)
    plan.create_old = missing_old
    excess_old = len(old) - old_target
    if excess_old > 0:
        available = sum(w.available for w in (*new, *old))
        budget = max(0, available - (total - max_unavail))
        _delete_within_budget(old, excess_old, budget, plan)
    healthy_new = sum(w.available for w in new)
    plan.complete = not old and healthy_new >= total
    return plan


def plan_every_device(
    *,
    devices: Sequence[str],
    on_device: Mapping[str, Sequence[WorkloadView]],
    strays: Sequence[WorkloadView],
    update: str,
    targets: list[int],
    wave: int,
    max_unavail: int,
    halted: bool,
) -> Plan:
    """EveryDevice mode: one workload per matching device, replaced in place (delete, then
    create on the next pass) with at most ``max_unavail`` devices unavailable at a time."""
    plan = Plan(wave=wave, targets=targets)
    plan.delete.extend(w.name for w in strays)
    total = len(devices)
    old_keepers: list[WorkloadView] = []
    new_count = 0
    available = 0
    for dev in devices:
        wls = list(on_device.get(dev, ()))
        if not wls:
            plan.create_on_devices.append(dev)
            continue
        wls.sort(key=lambda w: (w.revision == update, *w.rank()), reverse=True)
        keeper, extra = wls[0], wls[1:]
        plan.delete.extend(w.name for w in extra)
        available += int(keeper.available)
        if keeper.revision == update:
            new_count += 1
        else:
            old_keepers.append(keeper)
    if not old_keepers:
        desired_new = total
    elif halted or wave == 0:
        desired_new = new_count
    else:
        desired_new = targets[wave - 1]
    replace = desired_new - new_count - len(plan.create_on_devices)
    if replace > 0:
        budget = max(0, max_unavail - (total - available))
        _delete_within_budget(old_keepers, replace, budget, plan)
    plan.complete = not old_keepers and not plan.create_on_devices and available >= total
    return plan


def undo_template(deployment: Mapping[str, Any], to_revision: int | None = None) -> tuple[Obj, int]:
    """The template ``rollout undo`` puts back, and its revision number.

    Default: the newest revision before the one the Deployment's template is now. Raises
    ValueError with a message for the user when there is nothing to go back to.
    """
    spec = deployment.get("spec")
    status = deployment.get("status")
    template = spec.get("template") if isinstance(spec, dict) else None
    if not isinstance(template, dict):
        raise ValueError("the deployment has no template")
    history = parse_history(status.get("history") if isinstance(status, dict) else None)
    current = template_hash(template)
    if to_revision:
        entry = next((e for e in history if e.revision == to_revision), None)
        if entry is None:
            have = ", ".join(str(e.revision) for e in history) or "none"
            raise ValueError(f"revision {to_revision} not found in the history (revisions: {have})")
    else:
        entry = previous_revision(history, current)
        if entry is None:
            raise ValueError("no previous revision to roll back to")
    if entry.hash == current:
        raise ValueError(f"revision {entry.revision} is already the deployment's template")
    return json.loads(json.dumps(entry.template)), entry.revision
