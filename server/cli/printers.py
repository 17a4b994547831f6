"""Output: kubectl-like tables per kind, -o json|yaml|name, ages, and describe text."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..client.resources import API_VERSION, ResourceType

Obj = dict[str, Any]
NONE = "<none>"


# ---- small helpers -----------------------------------------------------------------------


def dig(obj: Any, path: str, default: Any = None) -> Any:
    """``dig(o, "spec.placement.mode")``: a dotted lookup that never raises."""
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration: 45s, 3m12s, 25m, 5h3m, 2d4h, 40d, 3y."""
    s = int(seconds)
    if s < 0:
        s = 0
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def age(ts: Any, now: datetime | None = None) -> str:
    t = parse_time(ts)
    if t is None:
        return NONE
    now = now or datetime.now(UTC)
    return human_duration((now - t).total_seconds())


def condition(obj: Obj, ctype: str) -> Obj | None:
    for c in dig(obj, "status.conditions", []) or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def fmt_labels(labels: Any) -> str:
    if not isinstance(labels, dict) or not labels:
        return NONE
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _s(value: Any, default: str = NONE) -> str:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or default
    return str(value)


# ---- columns per kind --------------------------------------------------------------------

Getter = Callable[[Obj, datetime], str]


@dataclass(frozen=True)
class Column:
    header: str
    get: Getter


def _name(o: Obj, now: datetime) -> str:
    return str(dig(o, "metadata.name", ""))


def _age(o: Obj, now: datetime) -> str:
    return age(dig(o, "metadata.creationTimestamp"), now)


def _terminating(o: Obj) -> bool:
    return bool(dig(o, "metadata.deletionTimestamp"))


def _workload_status(o: Obj, now: datetime) -> str:
    if _terminating(o):
        return "Terminating"
    return _s(dig(o, "status.phase"), "Pending")


def _workload_ready(o: Obj, now: datetime) -> str:
    c = condition(o, "Ready")
    return "True" if c and c.get("status") == "True" else "False"


def _device_phase(o: Obj, now: datetime) -> str:
    return _s(dig(o, "status.phase"), "Unknown")


def _last_seen(o: Obj, now: datetime) -> str:
    seen = dig(o, "status.lastSeen")
    return age(seen, now) if seen else "<never>"


def _gateway_status(o: Obj, now: datetime) -> str:
    c = condition(o, "Ready")
    status = "Unknown"
    if c is not None:
        status = {"True": "Ready", "False": "NotReady"}.get(str(c.get("status")), "Unknown")
    if dig(o, "spec.unschedulable"):
        status += ",SchedulingDisabled"
    return status


def _gateway_devices(o: Obj, now: datetime) -> str:
    count = dig(o, "status.deviceCount")
    if count is None and isinstance(dig(o, "status.devices"), int):
        count = dig(o, "status.devices")
    return _s(count, "0")


def _deploy_desired(o: Obj) -> Any:
    if dig(o, "spec.placement.mode") == "EveryDevice":
        return dig(o, "status.desiredReplicas", dig(o, "status.replicas", 0))
    return dig(o, "spec.placement.replicas", dig(o, "status.replicas", 0))


def _deploy_ready(o: Obj, now: datetime) -> str:
    return f"{dig(o, 'status.readyReplicas', 0) or 0}/{_deploy_desired(o) or 0}"


def _deploy_waves(o: Obj, now: datetime) -> str:
    return _s(dig(o, "spec.strategy.waves"))


def _event_last_seen(o: Obj, now: datetime) -> str:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp", "metadata.creationTimestamp"):
        ts = dig(o, key)
        if ts:
            return age(ts, now)
    return NONE


def _event_object(o: Obj, now: datetime) -> str:
    kind = str(dig(o, "involvedObject.kind", "")).lower()
    return f"{kind}/{dig(o, 'involvedObject.name', '')}"


def _count_data(o: Obj, now: datetime) -> str:
    data = o.get("data") or {}
    extra = o.get("stringData") or {}
    return str(len(data) + len(extra) if isinstance(data, dict) and isinstance(extra, dict) else 0)


def _addresses(o: Obj, now: datetime) -> str:
    addrs = dig(o, "status.addresses") or []
    return _s([a.get("address") for a in addrs if isinstance(a, dict) and a.get("address")])


def _field(path: str, default: str = NONE) -> Getter:
    return lambda o, now: _s(dig(o, path), default)


NAME = Column("NAME", _name)
AGE = Column("AGE", _age)

COLUMNS: dict[str, list[Column]] = {
    "Workload": [
        NAME,
        Column("STATUS", _workload_status),
        Column("DEVICE", _field("spec.deviceName")),
        Column("GATEWAY", _field("spec.gatewayName")),
        Column("RESTARTS", _field("status.restarts", "0")),
        AGE,
    ],
    "Device": [
        NAME,
        Column("GATEWAY", _field("spec.gateway")),
        Column("BOARD", _field("spec.board")),
        Column("PHASE", _device_phase),
        Column("LAST SEEN", _last_seen),
        AGE,
    ],
    "Gateway": [NAME, Column("STATUS", _gateway_status), Column("DEVICES", _gateway_devices), AGE],
    "Deployment": [
        NAME,
        Column("MODE", _field("spec.placement.mode", "Replicas")),
        Column("READY", _deploy_ready),
        Column("UP-TO-DATE", _field("status.updatedReplicas", "0")),
        AGE,
    ],
    "Namespace": [NAME, Column("STATUS", _field("status.phase", "Active")), AGE],
    "Event": [
        Column("LAST SEEN", _event_last_seen),
        Column("TYPE", _field("type", "Normal")),
        Column("REASON", _field("reason")),
        Column("OBJECT", _event_object),
        Column("MESSAGE", _field("message", "")),
    ],
    "Secret": [NAME, Column("TYPE", _field("type", "Opaque")), Column("DATA", _count_data), AGE],
    "ConfigMap": [NAME, Column("DATA", _count_data), AGE],
    "Lease": [NAME, Column("HOLDER", _field("spec.holderIdentity")), AGE],
    "Token": [
        NAME,
        Column("ROLE", _field("spec.role")),
        Column("GATEWAY", _field("spec.gateway")),
        Column("EXPIRES", _field("spec.expiresAt", "<never>")),
        AGE,
    ],
}

WIDE: dict[str, list[Column]] = {
    "Workload": [
        Column("RUNTIME", _field("spec.runtime")),
        Column("READY", _workload_ready),
        Column("MESSAGE", _field("status.message", "")),
    ],
    "Device": [
        Column("ARCH", _field("spec.arch")),
        Column("RUNTIMES", _field("spec.runtimes")),
        Column("FIRMWARE", _field("status.firmware")),
    ],
    "Gateway": [Column("VERSION", _field("status.version")), Column("ADDRESSES", _addresses)],
    "Deployment": [
        Column("RUNTIME", _field("spec.template.spec.runtime")),
        Column("WAVES", _deploy_waves),
        Column("SELECTOR", lambda o, now: fmt_labels(dig(o, "spec.selector.matchLabels"))),
    ],
    "Event": [Column("COUNT", _field("count", "1")), Column("SOURCE", _field("source.component", ""))],
}


def columns_for(rt: ResourceType, wide: bool = False, all_namespaces: bool = False) -> list[Column]:
    cols = list(COLUMNS.get(rt.kind, [NAME, AGE]))
    if wide:
        cols += WIDE.get(rt.kind, [])
    if all_namespaces and rt.namespaced:
        cols.insert(0, Column("NAMESPACE", _field("metadata.namespace", "")))
    return cols


def table_rows(cols: Sequence[Column], items: Iterable[Obj], now: datetime | None = None) -> list[list[str]]:
    now = now or datetime.now(UTC)
    return [[c.get(o, now) for c in cols] for o in items]


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    min_widths: Sequence[int] | None = None,
    show_header: bool = True,
) -> tuple[list[str], list[int]]:
    """Render like kubectl (no borders, 3 spaces between columns); also return column widths.

    Passing the widths back in keeps rows printed later (``get -w``) aligned with the header.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    if min_widths:
        widths = [max(w, m) for w, m in zip(widths, min_widths, strict=True)]
    table = Table(
        box=None,
        show_header=show_header,
        header_style=None,
        pad_edge=False,
        padding=(0, 3, 0, 0),
        show_edge=False,
    )
    for h, w in zip(headers, widths, strict=True):
        table.add_column(h, min_width=w, no_wrap=True, overflow="ignore")
    for row in rows:
        # Text() so that "[1, 10%]" or "[bold]" in a value is never read as rich markup.
        table.add_row(*(Text(cell) for cell in row))
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=sum(widths) + 3 * len(widths) + 10,
        color_system=None,
        highlight=False,
        emoji=False,
        markup=False,
    )
    console.print(table)
    lines = [line.rstrip() for line in buf.getvalue().splitlines()]
    return lines, widths


# ---- -o json|yaml|name -------------------------------------------------------------------


def as_list(items: list[Obj]) -> Obj:
    return {"apiVersion": API_VERSION, "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def dump(obj: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=2)
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip("\n")


def object_name(rt: ResourceType, obj: Obj) -> str:
    return f"{rt.qualified}/{dig(obj, 'metadata.name', '')}"


# ---- describe ----------------------------------------------------------------------------


def _tree(value: Any, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict) and v:
                out.append(f"{pad}{k}:")
                _tree(v, indent + 1, out)
            elif isinstance(v, list) and v and not all(_scalar(x) for x in v):
                out.append(f"{pad}{k}:")
                _tree(v, indent + 1, out)
            else:
                out.append(f"{pad}{k}:{_inline(v)}")
    elif isinstance(value, list):
        for item in value:
            sub: list[str] = []
            if isinstance(item, dict | list):
                _tree(item, 0, sub)
            else:
                sub.append(_inline(item).strip())
            for i, line in enumerate(sub or ["{}"]):
                out.append(f"{pad}{'- ' if i == 0 else '  '}{line}")


def _scalar(v: Any) -> bool:
    return not isinstance(v, dict | list)


def _inline(v: Any) -> str:
    if isinstance(v, list):
        return "  " + (", ".join(_s(x, "") for x in v) if v else "[]")
    if isinstance(v, dict):
        return "  {}"
    if isinstance(v, str) and "\n" in v:
        lines = v.rstrip("\n").splitlines()
        # Inline module sources can be long: describe is a summary, -o yaml has it all.
        return f"  {lines[0]} ... ({len(lines)} lines)"
    return "  " + _s(v, '""' if v == "" else NONE)


def _kv(out: list[str], key: str, value: str, width: int = 18) -> None:
    out.append(f"{key + ':':<{width}}{value}")


def _map_lines(out: list[str], key: str, m: Any, width: int = 18) -> None:
    if not isinstance(m, dict) or not m:
        _kv(out, key, NONE, width)
        return
    for i, (k, v) in enumerate(sorted(m.items())):
        text = f"{k}={v}"
        if len(text) > 120:
            text = text[:117] + "..."
        out.append(f"{(key + ':') if i == 0 else '':<{width}}{text}")


def describe_text(
    rt: ResourceType,
    obj: Obj,
    events: list[Obj] | None,
    now: datetime | None = None,
    events_error: str | None = None,
) -> str:
    now = now or datetime.now(UTC)
    meta = obj.get("metadata") or {}
    out: list[str] = []
    _kv(out, "Name", str(meta.get("name", "")))
    if rt.namespaced:
        _kv(out, "Namespace", str(meta.get("namespace", "")))
    _kv(out, "Kind", rt.kind)
    _map_lines(out, "Labels", meta.get("labels"))
    _map_lines(out, "Annotations", meta.get("annotations"))
    created = meta.get("creationTimestamp")
    _kv(out, "Created", f"{created} ({age(created, now)} ago)" if created else NONE)
    _kv(out, "UID", _s(meta.get("uid")))
    _kv(out, "Generation", _s(meta.get("generation")))
    _kv(out, "Resource Version", _s(meta.get("resourceVersion")))
    owners = meta.get("ownerReferences") or []
    if owners:
        _kv(out, "Controlled By", ", ".join(f"{o.get('kind')}/{o.get('name')}" for o in owners))
    if meta.get("deletionTimestamp"):
        _kv(out, "Terminating", f"since {meta['deletionTimestamp']}")
    if meta.get("finalizers"):
        _kv(out, "Finalizers", ", ".join(str(f) for f in meta["finalizers"]))
    body_keys = [k for k in obj if k not in ("apiVersion", "kind", "metadata", "status")]
    for key in body_keys:
        value = obj[key]
        if isinstance(value, dict | list) and value:
            out.append(f"{key[:1].upper()}{key[1:]}:")
            _tree(value, 1, out)
        else:
            _kv(out, f"{key[:1].upper()}{key[1:]}", _inline(value).strip())
    status = dict(obj.get("status") or {})
    conditions = status.pop("conditions", None)
    if status:
        out.append("Status:")
        _tree(status, 1, out)
    if conditions:
        out.append("Conditions:")
        rows = [
            [
                _s(c.get("type")),
                _s(c.get("status")),
                _s(c.get("reason"), ""),
                age(c.get("lastTransitionTime"), now) if c.get("lastTransitionTime") else "",
                _s(c.get("message"), ""),
            ]
            for c in conditions
            if isinstance(c, dict)
        ]
        lines, _ = render_table(["Type", "Status", "Reason", "Age", "Message"], rows)
        out.extend("  " + line for line in lines)
    if events_error:
        _kv(out, "Events", f"<unable to list events: {events_error}>")
    elif not events:
        _kv(out, "Events", NONE)
    else:
        out.append("Events:")
        ordered = sorted(
            events,
            key=lambda e: str(
                e.get("lastTimestamp") or e.get("eventTime") or dig(e, "metadata.creationTimestamp", "")
            ),
        )
        rows = []
        for e in ordered:
            ts = e.get("lastTimestamp") or e.get("eventTime") or dig(e, "metadata.creationTimestamp")
            when = age(ts, now)
            count = e.get("count")
            if isinstance(count, int) and count > 1:
                when = f"{when} (x{count})"
            rows.append(
                [
                    _s(e.get("type"), "Normal"),
                    _s(e.get("reason"), ""),
                    when,
                    _s(dig(e, "source.component") or e.get("reportingController"), ""),
                    _s(e.get("message"), ""),
                ]
            )
        headers = ["Type", "Reason", "Age", "From", "Message"]
        lines, _ = render_table(headers, [["-" * len(h) for h in headers], *rows])
        out.extend("  " + line for line in lines)
    return "\n".join(out)
