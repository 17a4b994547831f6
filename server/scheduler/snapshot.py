"""The scheduler's cache: devices with what is allocated on them, and assumed bindings.

kube-scheduler's cache, shrunk: the scheduler places a workload on the cache at once
(``assume``), binds through the API in the background, and the watch event of the bind
``confirm``s it. A bind that fails is ``forget``-ed. An assumed binding never confirmed
expires after a TTL counted from the end of its bind call, so a lost event cannot leak
capacity forever.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .objects import (
    ARCH_LABEL,
    BOARD_LABEL,
    GATEWAY_LABEL,
    PREFER_NO_SCHEDULE,
    ZONE_LABEL,
    DeviceInfo,
    GatewayInfo,
    Resources,
    Taint,
    WorkloadInfo,
    object_key,
    parse_device,
    parse_gateway,
    parse_workload,
)

Group = tuple[str, ...]


class NodeInfo:
    """One device as the scheduler sees it: the device, its gateway, and what is allocated."""

    __slots__ = (
        "alloc_cpu",
        "alloc_dims",
        "alloc_flash",
        "alloc_memory",
        "allocatable",
        "device",
        "gateway",
        "gateway_name",
        "inv_cpu",
        "inv_flash",
        "inv_memory",
        "labels",
        "name",
        "prefer_taints",
        "req_cpu",
        "req_flash",
        "req_memory",
        "workload_count",
        "workloads",
        "zone",
    )

    def __init__(self, device: DeviceInfo, gateway: GatewayInfo | None, zone_label: str = ZONE_LABEL):
        self.name = device.name
        self.req_memory = 0
        self.req_cpu = 0
        self.req_flash = 0
        self.workload_count = 0
        self.workloads: set[str] = set()
        self.set_objects(device, gateway, zone_label)

    def set_objects(
        self, device: DeviceInfo, gateway: GatewayInfo | None, zone_label: str = ZONE_LABEL
    ) -> None:
        self.device = device
        self.gateway = gateway
        self.gateway_name = device.gateway
        self.allocatable = a = device.allocatable
        self.alloc_memory, self.alloc_cpu, self.alloc_flash = a.memory, a.cpu_millis, a.flash
        self.inv_memory = 1.0 / a.memory if a.memory > 0 else 0.0
        self.inv_cpu = 1.0 / a.cpu_millis if a.cpu_millis > 0 else 0.0
        self.inv_flash = 1.0 / a.flash if a.flash > 0 else 0.0
        self.alloc_dims = (a.memory > 0) + (a.cpu_millis > 0) + (a.flash > 0)
        self.prefer_taints = tuple(
            t
            for t in (*device.taints, *(gateway.taints if gateway is not None else ()))
            if t.effect == PREFER_NO_SCHEDULE
        )
        labels: dict[str, str] = dict(gateway.labels) if gateway is not None else {}
        labels.update(device.labels)  # the device wins on conflicts
        labels[GATEWAY_LABEL] = device.gateway
        if device.board:
            labels[BOARD_LABEL] = device.board
        if device.arch:
            labels[ARCH_LABEL] = device.arch
        self.labels: Mapping[str, str] = labels
        self.zone = labels.get(zone_label, "")

    @property
    def requested(self) -> Resources:
        return Resources(self.req_memory, self.req_cpu, self.req_flash)

    @property
    def taints(self) -> tuple[Taint, ...]:
        return self.device.taints

    @property
    def gateway_taints(self) -> tuple[Taint, ...]:
        return self.gateway.taints if self.gateway is not None else ()

    def fits(self, req: Resources) -> bool:
        a = self.allocatable
        return (
            self.req_memory + req.memory <= a.memory
            and self.req_cpu + req.cpu_millis <= a.cpu_millis
            and self.req_flash + req.flash <= a.flash
        )

    def __repr__(self) -> str:
        return f"NodeInfo({self.name!r}, gateway={self.gateway_name!r}, requested={self.requested})"


@dataclass(slots=True)
class Placement:
    info: WorkloadInfo
    device: str
    assumed: bool
    deadline: float | None = None  # assumed and bind finished: expires at this time


class Cache:
    """Devices, gateways and placed workloads; the one source every scheduling cycle reads."""

    def __init__(
        self,
        *,
        assume_ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        zone_label: str = ZONE_LABEL,
    ) -> None:
        self.assume_ttl = assume_ttl
        self.zone_label = zone_label
        self._clock = clock
        self._nodes: dict[str, NodeInfo] = {}
        self._node_list: list[NodeInfo] | None = None
        self._gateways: dict[str, GatewayInfo] = {}
        self._devices_of_gateway: dict[str, set[str]] = defaultdict(set)
        self._placements: dict[str, Placement] = {}
        self._on_device: dict[str, set[str]] = defaultdict(set)
        self._gateway_counts: dict[Group, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._zone_counts: dict[Group, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        # Bumped whenever a device or gateway changes: static filter results keyed by it stay valid.
        self.static_generation = 0
        self._prefer_generation = -1
        self._prefer_count = 0

    # -- reads --------------------------------------------------------------------------
    def nodes(self) -> list[NodeInfo]:
        """Every device, in a stable order (by name)."""
        if self._node_list is None:
            self._node_list = [self._nodes[n] for n in sorted(self._nodes)]
        return self._node_list

    def node(self, name: str) -> NodeInfo | None:
        return self._nodes.get(name)

    def gateway(self, name: str) -> GatewayInfo | None:
        return self._gateways.get(name)

    def placement(self, key: str) -> Placement | None:
        return self._placements.get(key)

    def placements_by_key(self) -> Mapping[str, Placement]:
        return self._placements

    def placements(self) -> Iterable[Placement]:
        return self._placements.values()

    def is_assumed(self, key: str) -> bool:
        p = self._placements.get(key)
        return p is not None and p.assumed

    @property
    def prefer_tainted_devices(self) -> int:
        """How many devices carry a PreferNoSchedule taint (their own or their gateway's)."""
        if self._prefer_generation != self.static_generation:
            self._prefer_count = sum(1 for n in self._nodes.values() if n.prefer_taints)
            self._prefer_generation = self.static_generation
        return self._prefer_count

    def gateway_counts(self, group: Group) -> Mapping[str, int]:
        """How many of ``group`` each gateway has (read-only view)."""
        return self._gateway_counts.get(group) or {}

    def zone_counts(self, group: Group) -> Mapping[str, int]:
        return self._zone_counts.get(group) or {}

    def gateway_count(self, group: Group, gateway: str) -> int:
        counts = self._gateway_counts.get(group)
        return counts.get(gateway, 0) if counts is not None else 0

    def zone_count(self, group: Group, zone: str) -> int:
        counts = self._zone_counts.get(group)
        return counts.get(zone, 0) if counts is not None else 0

    def __len__(self) -> int:
        return len(self._nodes)

    # -- accounting -----------------------------------------------------------------------
    def _account(self, p: Placement, sign: int) -> None:
        node = self._nodes.get(p.device)
        if node is None:
            return
        req = p.info.requests
        node.req_memory += sign * req.memory
        node.req_cpu += sign * req.cpu_millis
        node.req_flash += sign * req.flash
        node.workload_count += sign
        if sign > 0:
            node.workloads.add(p.info.key)
        else:
            node.workloads.discard(p.info.key)
        group = p.info.group
        if group is not None:
            self._gateway_counts[group][node.gateway_name] += sign
            if node.zone:
                self._zone_counts[group][node.zone] += sign

    def _place(self, p: Placement) -> None:
        self._placements[p.info.key] = p
        self._on_device[p.device].add(p.info.key)
        self._account(p, +1)

    def _unplace(self, key: str) -> Placement | None:
        p = self._placements.pop(key, None)
        if p is None:
            return None
        self._account(p, -1)
        keys = self._on_device.get(p.device)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._on_device[p.device]
        return p

    def _reaccount_device(self, name: str, change: Callable[[], None]) -> None:
        """Apply ``change`` to a device's node with its workloads taken off and put back."""
        placed = [self._placements[k] for k in self._on_device.get(name, ())]
        for p in placed:
            self._account(p, -1)
        change()
        for p in placed:
            self._account(p, +1)

    # -- devices and gateways ---------------------------------------------------------------
    def upsert_device(self, obj: Mapping[str, Any]) -> NodeInfo:
        return self.set_device(parse_device(obj))

    def set_device(self, device: DeviceInfo) -> NodeInfo:
        self.static_generation += 1
        node = self._nodes.get(device.name)
        if node is None:
            node = NodeInfo(device, self._gateways.get(device.gateway), self.zone_label)
            self._nodes[device.name] = node
            self._node_list = None
            self._devices_of_gateway[device.gateway].add(device.name)
            for key in self._on_device.get(device.name, ()):
                self._account(self._placements[key], +1)
            return node
        if node.gateway_name != device.gateway:
            self._devices_of_gateway[node.gateway_name].discard(device.name)
            self._devices_of_gateway[device.gateway].add(device.name)
        new_node = node
        self._reaccount_device(
            device.name,
            lambda: new_node.set_objects(device, self._gateways.get(device.gateway), self.zone_label),
        )
        return node

    def remove_device(self, name: str) -> None:
        node = self._nodes.get(name)
        if node is None:
            return
        self.static_generation += 1
        for key in self._on_device.get(name, ()):
            self._account(self._placements[key], -1)
        del self._nodes[name]
        self._node_list = None
        self._devices_of_gateway[node.gateway_name].discard(name)

    def upsert_gateway(self, obj: Mapping[str, Any]) -> None:
        self.set_gateway(parse_gateway(obj))

    def set_gateway(self, gateway: GatewayInfo | None, name: str = "") -> None:
        name = gateway.name if gateway is not None else name
        self.static_generation += 1
        if gateway is None:
            self._gateways.pop(name, None)
        else:
            self._gateways[name] = gateway
        for dev in list(self._devices_of_gateway.get(name, ())):
            node = self._nodes[dev]

            def relink(n: NodeInfo = node) -> None:
                n.set_objects(n.device, gateway, self.zone_label)

            self._reaccount_device(dev, relink)

    def remove_gateway(self, name: str) -> None:
        self.set_gateway(None, name)

    # -- workloads ----------------------------------------------------------------------------
    def upsert_workload(self, obj: Mapping[str, Any]) -> None:
        """Apply a watched workload. A bound one is placed (confirming an assumed bind)."""
        info = parse_workload(obj)
        self.set_workload(info)

    def set_workload(self, info: WorkloadInfo) -> None:
        current = self._placements.get(info.key)
        if current is not None and _older(info.resource_version, current.info.resource_version):
            return  # a stale event (e.g. replayed after a relist): the placement we have is newer
        if not info.device_name or info.terminated:
            if current is not None and not (current.assumed and not info.terminated):
                # Unbound (or finished) on the server. An assumed placement stays: its bind is in flight.
                self._unplace(info.key)
            return
        if current is not None:
            if (
                current.device == info.device_name
                and current.info.requests == info.requests
                and current.info.group == info.group
            ):
                current.info = info
                current.assumed = False
                current.deadline = None
                return
            self._unplace(info.key)
        self._place(Placement(info, info.device_name, assumed=False))

    def remove_workload(self, key_or_obj: str | Mapping[str, Any]) -> None:
        key = key_or_obj if isinstance(key_or_obj, str) else object_key(key_or_obj)
        self._unplace(key)

    def assume(self, info: WorkloadInfo, device: str) -> None:
        """Place ``info`` on ``device`` now; the bind is about to be sent."""
        if info.key in self._placements:
            raise ValueError(f"workload {info.key} is already placed on {self._placements[info.key].device}")
        self._place(Placement(info, device, assumed=True))

    def finish_binding(self, key: str) -> None:
        """The bind call returned: start the expiry clock unless the watch confirmed it already."""
        p = self._placements.get(key)
        if p is not None and p.assumed:
            p.deadline = self._clock() + self.assume_ttl

    def forget(self, key: str) -> None:
        """Undo an assumed placement whose bind failed."""
        p = self._placements.get(key)
        if p is not None and p.assumed:
            self._unplace(key)

    def confirm(self, obj: Mapping[str, Any]) -> None:
        self.upsert_workload(obj)

    def cleanup_expired(self) -> list[str]:
        now = self._clock()
        expired = [
            k
            for k, p in self._placements.items()
            if p.assumed and p.deadline is not None and p.deadline <= now
        ]
        for key in expired:
            self._unplace(key)
        return expired

    def reset_workloads(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Replace every confirmed placement by this list (after a relist); assumed ones stay."""
        for key in [k for k, p in self._placements.items() if not p.assumed]:
            self._unplace(key)
        for obj in objs:
            self.upsert_workload(obj)


def _older(rv: str, than: str) -> bool:
    """resourceVersions are store revisions: compare them as numbers when both are."""
    return rv.isdigit() and than.isdigit() and int(rv) < int(than)
