"""Score: prefer the device with the most left over after placing the workload (kube's LeastAllocated)."""

from __future__ import annotations

from ..framework import MAX_SCORE, CycleState
from ..objects import WorkloadInfo
from ..snapshot import Cache, NodeInfo


class LeastAllocated:
    """Score 0..100: the mean free fraction of memory, cpu and flash (each the device has)."""

    name = "LeastAllocated"

    def prescore(self, state: CycleState, workload: WorkloadInfo, cache: Cache) -> bool:
        return True

    def score(self, state: CycleState, workload: WorkloadInfo, node: NodeInfo) -> float:
        req = workload.requests
        alloc = node.allocatable
        total = 0.0
        dims = 0
        for allocatable, used in (
            (alloc.memory, node.req_memory + req.memory),
            (alloc.cpu_millis, node.req_cpu + req.cpu_millis),
            (alloc.flash, node.req_flash + req.flash),
        ):
            if allocatable > 0:
                dims += 1
                total += max(allocatable - used, 0) / allocatable
        return MAX_SCORE * total / dims if dims else 0.0

    def normalize(self, state: CycleState, scores: list[float]) -> None:
        return None
