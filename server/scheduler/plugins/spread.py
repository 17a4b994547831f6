"""Scores: spread workloads of one group across gateways and across a topology label (``zone``).

A group is the workloads of one namespace with the same ``fleetlet.io/deployment`` label or,
without it, the same labels. Fewer of the group already on the device's gateway (or zone)
scores higher. Devices without the zone label score like the most crowded zone: neither
preferred nor excluded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..framework import CycleState, default_normalize
from ..objects import WorkloadInfo
from ..snapshot import Cache, NodeInfo


class GatewaySpread:
    name = "GatewaySpread"

    def prescore(self, state: CycleState, workload: WorkloadInfo, cache: Cache) -> bool:
        counts = cache.gateway_counts(workload.group) if workload.group is not None else None
        if not counts or not any(counts.values()):
            return False  # none of the group placed yet: every device scores the same
        state[self.name] = counts
        return True

    def score(self, state: CycleState, workload: WorkloadInfo, nodes: Sequence[NodeInfo]) -> list[float]:
        counts: Mapping[str, int] = state[self.name]
        return [float(counts.get(n.gateway_name, 0)) for n in nodes]

    def normalize(self, state: CycleState, scores: list[float]) -> None:
        default_normalize(scores, reverse=True)


class ZoneSpread:
    name = "ZoneSpread"

    def prescore(self, state: CycleState, workload: WorkloadInfo, cache: Cache) -> bool:
        counts = cache.zone_counts(workload.group) if workload.group is not None else None
        if not counts or not any(counts.values()):
            return False
        state[self.name] = counts
        return True

    def score(self, state: CycleState, workload: WorkloadInfo, nodes: Sequence[NodeInfo]) -> list[float]:
        counts: Mapping[str, int] = state[self.name]
        return [float(counts.get(n.zone, 0)) if n.zone else -1.0 for n in nodes]

    def normalize(self, state: CycleState, scores: list[float]) -> None:
        top = max(scores, default=0.0)
        for i, s in enumerate(scores):
            if s < 0:
                scores[i] = max(top, 0.0)
        default_normalize(scores, reverse=True)
