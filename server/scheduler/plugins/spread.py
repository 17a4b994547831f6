"""Scores: spread workloads of one group across gateways and across a topology label (``zone``).

A group is the workloads of one namespace with the same ``fleetlet.io/deployment`` label or,
without it, the same labels. Fewer of the group already on the device's gateway (or zone)
scores higher. Devices without the zone label score like the most crowded zone: neither
preferred nor excluded.
"""

from __future__ import annotations

from ..framework import CycleState, default_normalize
from ..objects import WorkloadInfo
from ..snapshot import Cache, NodeInfo


class GatewaySpread:
    name = "GatewaySpread"

    def prescore(self, state: CycleState, workload: WorkloadInfo, cache: Cache) -> bool:
        if workload.group is None:
            return False
        state[self.name] = cache
        return True

    def score(self, state: CycleState, workload: WorkloadInfo, node: NodeInfo) -> float:
        cache: Cache = state[self.name]
        assert workload.group is not None
        return cache.gateway_count(workload.group, node.gateway_name)

    def normalize(self, state: CycleState, scores: list[float]) -> None:
        default_normalize(scores, reverse=True)


class ZoneSpread:
    name = "ZoneSpread"

    def prescore(self, state: CycleState, workload: WorkloadInfo, cache: Cache) -> bool:
        if workload.group is None:
            return False
        state[self.name] = cache
        return True

    def score(self, state: CycleState, workload: WorkloadInfo, node: NodeInfo) -> float:
        if not node.zone:
            return -1.0
        cache: Cache = state[self.name]
        assert workload.group is not None
        return cache.zone_count(workload.group, node.zone)

    def normalize(self, state: CycleState, scores: list[float]) -> None:
        top = max(scores, default=0.0)
        for i, s in enumerate(scores):
            if s < 0:
                scores[i] = max(top, 0.0)
        default_normalize(scores, reverse=True)
