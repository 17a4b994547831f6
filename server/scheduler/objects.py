"""Parsed, immutable views of the API objects the scheduler reads.

Parsing happens once per object version (on the watch event), never inside a scheduling
cycle: the filters then compare small tuples and ints.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetlet.hardware.profiles import BoardProfile, UnknownBoardError, load_profile
from fleetlet.hardware.quantity import QuantityError, parse_bytes, parse_cpu_millis

Obj = dict[str, Any]

PLATFORMS_ANNOTATION = "fleetlet.io/platforms"
DEPLOYMENT_LABEL = "fleetlet.io/deployment"
GATEWAY_LABEL = "fleetlet.io/gateway"
BOARD_LABEL = "fleetlet.io/board"
ARCH_LABEL = "kubernetes.io/arch"
ZONE_LABEL = "zone"

NO_SCHEDULE = "NoSchedule"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
NO_EXECUTE = "NoExecute"

_ARCH_ALIASES = {
    "aarch64": "arm64",
    "arm64": "arm64",
    "arm64v8": "arm64",
    "armhf": "arm",
    "arm": "arm",
    "armv7": "arm",
    "armv7l": "arm",
    "arm32v7": "arm",
    "amd64": "amd64",
    "x86_64": "amd64",
    "x86-64": "amd64",
    "x64": "amd64",
    "i386": "386",
    "i686": "386",
    "386": "386",
}


def normalize_arch(arch: str) -> str:
    """One spelling per architecture: aarch64 -> arm64, armhf/armv7 -> arm, x86_64 -> amd64."""
    a = arch.strip().lower()
    return _ARCH_ALIASES.get(a, a)


def platform_arch(platform: str) -> str:
    """The architecture of an OCI platform string: "linux/arm/v7" -> "arm", "arm64" -> "arm64"."""
    parts = [p for p in platform.strip().split("/") if p]
    if not parts:
        return ""
    return normalize_arch(parts[1] if len(parts) >= 2 else parts[0])


@dataclass(frozen=True, slots=True)
class Resources:
    """Requests or allocatable in base units: bytes and millicores."""

    memory: int = 0
    cpu_millis: int = 0
    flash: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.memory + other.memory, self.cpu_millis + other.cpu_millis, self.flash + other.flash
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.memory - other.memory, self.cpu_millis - other.cpu_millis, self.flash - other.flash
        )

    def is_zero(self) -> bool:
        return self.memory == 0 and self.cpu_millis == 0 and self.flash == 0


ZERO = Resources()


@functools.lru_cache(maxsize=4096)
def _bytes(value: str | int | float) -> int:
    return int(parse_bytes(value))


@functools.lru_cache(maxsize=4096)
def _millis(value: str | int | float) -> int:
    return int(parse_cpu_millis(value))


def parse_resources(raw: Mapping[str, Any] | None) -> Resources:
    """``{memory: "64Ki", cpu: "500m", flash: "1Mi"}`` -> Resources; raises QuantityError.

    A fleet repeats a few quantities endlessly ("64Mi"): parsed results are memoized."""
    if not raw:
        return ZERO
    mem, cpu, flash = raw.get("memory"), raw.get("cpu"), raw.get("flash")
    return Resources(
        _bytes(mem) if mem is not None else 0,
        _millis(cpu) if cpu is not None else 0,
        _bytes(flash) if flash is not None else 0,
    )


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str
    operator: str  # Equal | Exists
    value: str
    effect: str  # "" = every effect

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes semantics: an empty key with Exists tolerates everything."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


def parse_taints(raw: Any) -> tuple[Taint, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(
        Taint(str(t.get("key", "")), str(t.get("value", "") or ""), str(t.get("effect", NO_SCHEDULE)))
        for t in raw
        if isinstance(t, dict)
    )


def parse_tolerations(raw: Any) -> tuple[Toleration, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(
        Toleration(
            str(t.get("key", "") or ""),
            str(t.get("operator", "Equal") or "Equal"),
            str(t.get("value", "") or ""),
            str(t.get("effect", "") or ""),
        )
        for t in raw
        if isinstance(t, dict)
    )


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    s = obj.get("spec")
    return s if isinstance(s, dict) else {}


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    s = obj.get("status")
    return s if isinstance(s, dict) else {}


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    raw = _meta(obj).get("labels")
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def workload_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def object_key(obj: Mapping[str, Any]) -> str:
    meta = _meta(obj)
    return workload_key(str(meta.get("namespace", "") or ""), str(meta.get("name", "")))


def is_bound(obj: Mapping[str, Any]) -> bool:
    return bool(_spec(obj).get("deviceName"))


def is_pending(obj: Mapping[str, Any]) -> bool:
    """Unbound and not being deleted: what the scheduler must place."""
    return not is_bound(obj) and not _meta(obj).get("deletionTimestamp")


def is_terminated(obj: Mapping[str, Any]) -> bool:
    return _status(obj).get("phase") in ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True)
class WorkloadInfo:
    """What a scheduling cycle needs from one Workload."""

    key: str
    namespace: str
    name: str
    uid: str
    resource_version: str
    priority: int
    runtime: str
    requests: Resources
    platforms: tuple[str, ...]  # as declared ("linux/arm64"); () = any arch
    archs: frozenset[str] | None  # normalized archs of those platforms; None = any arch
    node_selector: tuple[tuple[str, str], ...]
    tolerations: tuple[Toleration, ...]
    group: tuple[str, ...] | None  # spread group: same namespace + deployment (or same labels)
    device_name: str
    terminated: bool
    invalid: str  # non-empty: why this workload can never be scheduled as written

    @property
    def scheduling_signature(self) -> tuple[Any, ...]:
        """Everything a filter looks at: equal signatures get equal placement constraints."""
        return (self.priority, self.runtime, self.requests, self.archs, self.node_selector, self.tolerations)


def _group(namespace: str, labels: Mapping[str, str]) -> tuple[str, ...] | None:
    dep = labels.get(DEPLOYMENT_LABEL)
    if dep:
        return (namespace, DEPLOYMENT_LABEL, dep)
    if labels:
        return (namespace, *sorted(f"{k}={v}" for k, v in labels.items()))
    return None


def workload_requests(spec: Mapping[str, Any]) -> Resources:
    """Workload-level requests plus each container's requests (docker)."""
    res = spec.get("resources")
    total = parse_resources(res.get("requests") if isinstance(res, dict) else None)
    containers = spec.get("containers")
    if isinstance(containers, list):
        for c in containers:
            cres = c.get("resources") if isinstance(c, dict) else None
            if isinstance(cres, dict):
                total = total + parse_resources(cres.get("requests"))
    return total


def parse_workload(obj: Mapping[str, Any]) -> WorkloadInfo:
    meta, spec = _meta(obj), _spec(obj)
    namespace = str(meta.get("namespace", "") or "")
    name = str(meta.get("name", ""))
    labels = _labels(obj)
    invalid = ""
    try:
        requests = workload_requests(spec)
    except (QuantityError, TypeError) as exc:  # TypeError: not a string or number at all
        requests, invalid = ZERO, f"invalid resource requests: {exc}"
    annotations = meta.get("annotations")
    raw_platforms = annotations.get(PLATFORMS_ANNOTATION, "") if isinstance(annotations, dict) else ""
    platforms = tuple(p.strip() for p in str(raw_platforms).split(",") if p.strip())
    archs = frozenset(platform_arch(p) for p in platforms) if platforms else None
    selector = spec.get("nodeSelector")
    node_selector = (
        tuple(sorted((str(k), str(v)) for k, v in selector.items())) if isinstance(selector, dict) else ()
    )
    priority = spec.get("priority", 0)
    return WorkloadInfo(
        key=workload_key(namespace, name),
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        priority=priority if isinstance(priority, int) else 0,
        runtime=str(spec.get("runtime", "docker") or "docker"),
        requests=requests,
        platforms=platforms,
        archs=archs,
        node_selector=node_selector,
        tolerations=parse_tolerations(spec.get("tolerations")),
        group=_group(namespace, labels),
        device_name=str(spec.get("deviceName", "") or ""),
        terminated=is_terminated(obj),
        invalid=invalid,
    )


def _profile(board: Any) -> BoardProfile | None:
    if not isinstance(board, str) or not board:
        return None
    try:
        return load_profile(board)
    except (UnknownBoardError, ValueError):
        return None


def device_allocatable(obj: Mapping[str, Any]) -> Resources:
    """spec.allocatable, else status.allocatable, else capacity, else the board profile's allocatable.

    Each dimension falls back on its own; a dimension nobody states is 0 (nothing fits there).
    """
    spec, status = _spec(obj), _status(obj)
    sources: list[Mapping[str, Any]] = [
        s
        for s in (
            spec.get("allocatable"),
            status.get("allocatable"),
            spec.get("capacity"),
            status.get("capacity"),
        )
        if isinstance(s, dict)
    ]
    profile = _profile(spec.get("board"))
    if profile is not None:
        sources.append(profile.allocatable.as_quantities())
    values: dict[str, Any] = {}
    for dim in ("memory", "cpu", "flash"):
        for src in sources:
            if src.get(dim) is not None:
                values[dim] = src[dim]
                break
    try:
        return parse_resources(values)
    except (QuantityError, TypeError):
        return ZERO


def device_arch(obj: Mapping[str, Any]) -> str:
    arch = _spec(obj).get("arch")
    if not arch:
        profile = _profile(_spec(obj).get("board"))
        arch = profile.arch if profile is not None else ""
    return normalize_arch(str(arch)) if arch else ""


def device_runtimes(obj: Mapping[str, Any]) -> frozenset[str]:
    runtimes = _spec(obj).get("runtimes")
    if isinstance(runtimes, list) and runtimes:
        return frozenset(str(r) for r in runtimes)
    profile = _profile(_spec(obj).get("board"))
    return frozenset(profile.runtimes) if profile is not None else frozenset()


def gateway_ready(obj: Mapping[str, Any]) -> bool:
    conditions = _status(obj).get("conditions")
    if not isinstance(conditions, list):
        return False
    return any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
    )


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """The scheduling-relevant facts of a Device, parsed once per version."""

    name: str
    gateway: str
    board: str
    arch: str
    runtimes: frozenset[str]
    allocatable: Resources
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]
    unschedulable: bool
    phase: str


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]
    unschedulable: bool
    ready: bool


def parse_device(obj: Mapping[str, Any]) -> DeviceInfo:
    spec = _spec(obj)
    return DeviceInfo(
        name=str(_meta(obj).get("name", "")),
        gateway=str(spec.get("gateway", "") or ""),
        board=str(spec.get("board", "") or ""),
        arch=device_arch(obj),
        runtimes=device_runtimes(obj),
        allocatable=device_allocatable(obj),
        labels=_labels(obj),
        taints=parse_taints(spec.get("taints")),
        unschedulable=bool(spec.get("unschedulable", False)),
        phase=str(_status(obj).get("phase", "Unknown") or "Unknown"),
    )


def parse_gateway(obj: Mapping[str, Any]) -> GatewayInfo:
    spec = _spec(obj)
    return GatewayInfo(
        name=str(_meta(obj).get("name", "")),
        labels=_labels(obj),
        taints=parse_taints(spec.get("taints")),
        unschedulable=bool(spec.get("unschedulable", False)),
        ready=gateway_ready(obj),
    )
