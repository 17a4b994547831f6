"""Filter: the device is Online and not cordoned; its gateway exists, is Ready and not cordoned."""

from __future__ import annotations

from collections.abc import Hashable

from ..framework import FEASIBLE, CycleState, FilterResult, unfit
from ..objects import WorkloadInfo
from ..snapshot import NodeInfo

CORDONED = unfit("are cordoned")
NO_GATEWAY = unfit("have no gateway")
GATEWAY_CORDONED = unfit("have a cordoned gateway")
GATEWAY_NOT_READY = unfit("have a gateway that is not Ready")
_NOT_ONLINE: dict[str, FilterResult] = {}


def not_online(phase: str) -> FilterResult:
    result = _NOT_ONLINE.get(phase)
    if result is None:
        result = _NOT_ONLINE[phase] = unfit(f"are {phase}")
    return result


class DeviceReady:
    """Reasons: ``are Offline`` / ``are Unknown`` (the device phase), ``are cordoned``,
    ``have no gateway``, ``have a cordoned gateway``, ``have a gateway that is not Ready``."""

    name = "DeviceReady"
    dynamic = False

    def signature(self, workload: WorkloadInfo) -> Hashable:
        return None

    def prefilter(self, state: CycleState, workload: WorkloadInfo) -> bool:
        return True

    def filter(self, state: CycleState, workload: WorkloadInfo, node: NodeInfo) -> FilterResult:
        device = node.device
        if device.unschedulable:
            return CORDONED
        if device.phase != "Online":
            return not_online(device.phase)
        gateway = node.gateway
        if gateway is None:
            return NO_GATEWAY
        if gateway.unschedulable:
            return GATEWAY_CORDONED
        if not gateway.ready:
            return GATEWAY_NOT_READY
        return FEASIBLE
