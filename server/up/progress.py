"""Live progress of ``fleetlet up``: devices and workloads with their phases, from the API.

On a terminal it is a rich table redrawn in place; otherwise (a pipe, a test) one summary
line is printed whenever it changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

__all__ = ["Progress", "Snapshot"]

Obj = dict[str, Any]


def _d(v: Any) -> Obj:
    return v if isinstance(v, dict) else {}


@dataclass
class Row:
    name: str
    kind: str
    phase: str
    where: str = ""


@dataclass
class Snapshot:
    devices: list[Row] = field(default_factory=list)
    workloads: list[Row] = field(default_factory=list)
    waiting_for: list[str] = field(default_factory=list)  # why it is not ready yet
    skipped: int = 0  # container workloads without a Docker Engine

    @property
    def ready(self) -> bool:
        return not self.waiting_for

    @classmethod
    def of(
        cls, devices: Obj, workloads: Obj, deployments: Obj, ours: Iterable[str], docker: bool
    ) -> Snapshot:
        snap = cls()
        wanted = set(ours)
        on_device: dict[str, int] = {}
        for w in workloads.get("items") or []:
            spec, meta = _d(w.get("spec")), _d(w.get("metadata"))
            if meta.get("deletionTimestamp"):
                continue
            runtime = str(spec.get("runtime") or "")
            phase = str(_d(w.get("status")).get("phase") or "Pending")
            device = str(spec.get("deviceName") or "")
            on_device[device] = on_device.get(device, 0) + 1
            snap.workloads.append(Row(f"{meta.get('namespace')}/{meta.get('name')}", runtime, phase, device))
            if runtime == "docker" and not docker:
                snap.skipped += 1
            elif phase != "Running":
                snap.waiting_for.append(f"workload {meta.get('name')} {phase}")
        for d in devices.get("items") or []:
            name = str(_d(d.get("metadata")).get("name"))
            if name not in wanted:
                continue
            phase = str(_d(d.get("status")).get("phase") or "Unknown")
            runtimes = ",".join(_d(d.get("spec")).get("runtimes") or [])
            snap.devices.append(Row(name, runtimes, phase, str(on_device.get(name, 0))))
            if phase != "Online":
                snap.waiting_for.append(f"device {name} {phase}")
        missing = wanted - {r.name for r in snap.devices}
        snap.waiting_for += [f"device {n} not created" for n in sorted(missing)]
        owned = {
            str(_d(ref).get("name"))
            for w in workloads.get("items") or []
            for ref in _d(w.get("metadata")).get("ownerReferences") or []
        }
        for dep in deployments.get("items") or []:
            meta = _d(dep.get("metadata"))
            template = _d(_d(dep.get("spec")).get("template"))
            if _d(template.get("spec")).get("runtime") == "docker" and not docker:
                continue
            status = _d(dep.get("status"))
            if status.get("observedGeneration") != meta.get("generation"):
                snap.waiting_for.append(f"deployment {meta.get('name')} not reconciled yet")
            elif str(meta.get("name")) not in owned:
                snap.waiting_for.append(f"deployment {meta.get('name')} has no workloads yet")
            elif status.get("updateRevision") != status.get("currentRevision"):
                snap.waiting_for.append(f"deployment {meta.get('name')} rolling out")
        snap.devices.sort(key=lambda r: r.name)
        snap.workloads.sort(key=lambda r: r.name)
        return snap

    def summary(self) -> str:
        online = sum(r.phase == "Online" for r in self.devices)
        running = sum(r.phase == "Running" for r in self.workloads)
        text = (
            f"progress: devices {online}/{len(self.devices)} Online, "
            f"workloads {running}/{len(self.workloads)} Running"
        )
        if self.skipped:
            text += f" ({self.skipped} container workload(s) stay Pending: no Docker Engine)"
        if self.waiting_for:
            text += f"; waiting for {', '.join(self.waiting_for[:3])}"
            if len(self.waiting_for) > 3:
                text += f" (+{len(self.waiting_for) - 3})"
        return text

    def table(self) -> Group:
        dt = Table(title="devices", title_justify="left")
        for col in ("DEVICE", "RUNTIMES", "PHASE", "WORKLOADS"):
            dt.add_column(col)
        for r in self.devices:
            dt.add_row(r.name, r.kind, _color(r.phase), r.where)
        wt = Table(title="workloads", title_justify="left")
        for col in ("WORKLOAD", "RUNTIME", "DEVICE", "PHASE"):
            wt.add_column(col)
        for r in self.workloads:
            wt.add_row(r.name, r.kind, r.where or "-", _color(r.phase))
        return Group(dt, wt, self.summary())


def _color(phase: str) -> str:
    color = {"Running": "green", "Online": "green", "Failed": "red", "Offline": "red"}.get(phase, "yellow")
    return f"[{color}]{phase}[/{color}]"


class Progress:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.last = ""
        if console.is_terminal:
            self.live = Live(console=console, refresh_per_second=4, transient=False)
            self.live.start()

    def show(self, snap: Snapshot) -> None:
        if self.live is not None:
            self.live.update(snap.table())
            return
        line = snap.summary()
        if line != self.last:
            self.console.print(line, highlight=False, soft_wrap=True)
            self.last = line

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
